//! Polling for a condition inside an overall deadline: the tests wait for
//! readiness and recovery this way instead of sleeping for a guessed time.

use std::{future::Future, time::Duration};

use tokio::time::{Instant, sleep};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `check` until it returns true; panics naming `what` if that does not
/// happen `within` the given time.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: did not happen within {within:?}"
        );
        sleep(POLL_INTERVAL).await;
    }
}
