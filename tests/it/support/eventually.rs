//! The one way tests wait: poll a condition inside an overall deadline and
//! fail naming what did not happen (and the last thing seen), instead of
//! sleeping for a guessed time. Async forms for tests on a tokio runtime,
//! blocking forms for fixtures that run outside one (starting Redis).

use std::{
    fmt::Debug,
    future::Future,
    thread,
    time::{Duration, Instant},
};

/// Pause between two checks: short next to every deadline the tests use,
/// long enough not to load the machine.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns true; panics naming `what` if that does not
/// happen `within` the given time.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_ok(within, what, || {
        let done = check();
        async move { if done.await { Ok(()) } else { Err("not yet") } }
    })
    .await;
}

/// Calls `check` until it returns `Ok`, and returns that value; panics naming
/// `what` and the last `Err` if that does not happen `within` the given time.
pub async fn eventually_ok<T, E, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    poll_until(within, check)
        .await
        .unwrap_or_else(|last| give_up(within, what, &last))
}

/// Calls `check` until it returns `Ok`; after `within`, returns the last
/// `Err` instead of panicking (for a test that has something to undo first,
/// or whose assertion says more).
pub async fn poll_until<T, E, F, Fut>(within: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Err(last) if Instant::now() < deadline => drop(last),
            done => return done,
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`eventually_ok`] for code that is not on a runtime (it blocks the thread).
pub fn eventually_ok_blocking<T, E: Debug>(
    within: Duration,
    what: &str,
    check: impl FnMut() -> Result<T, E>,
) -> T {
    poll_until_blocking(within, check).unwrap_or_else(|last| give_up(within, what, &last))
}

/// [`poll_until`] for code that is not on a runtime (it blocks the thread).
pub fn poll_until_blocking<T, E>(
    within: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Err(last) if Instant::now() < deadline => drop(last),
            done => return done,
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The failure of an `eventually`: what was awaited, for how long, and the
/// last answer seen.
fn give_up(within: Duration, what: &str, last: &dyn Debug) -> ! {
    panic!("{what}: did not happen within {within:?}; last seen: {last:?}")
}
