//! Waiting for the signals that ask the service to stop: SIGTERM (what
//! container runtimes send) and SIGINT (Ctrl-C).

use tokio::signal::unix::{SignalKind, signal};

/// Resolves with the signal's name once SIGTERM or SIGINT arrives.
///
/// # Errors
/// When a signal handler cannot be installed.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
