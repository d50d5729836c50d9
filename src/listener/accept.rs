//! The accept loop: takes a slot under MAX_CONNECTIONS before accepting,
//! so connections past the limit wait in the kernel's backlog instead of
//! being accepted and starved; backs off when accept fails for lack of file
//! descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), which would
//! otherwise fail again at once and spin a core. With TLS, each handshake
//! runs in its own task (holding its slot) within the handshake timeout.

use std::{convert::Infallible, io, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::{Stream, wrappers::ReceiverStream};

use super::{
    ListenerLimits,
    conn::{Conn, Deadlines, Io},
};

/// First pause after a failed accept; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while accept keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one "connection limit reached" line per this interval.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The connections accepted on `listener` (through `tls` when given), each
/// wrapped in [`Conn`] with its deadlines. The loop runs in its own task and
/// stops (closing the listening socket) as soon as the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    limits: &ListenerLimits,
    tls: Option<TlsAcceptor>,
) -> impl Stream<Item = Result<Conn, Infallible>> + use<> {
    let deadlines = Deadlines {
        handshake: limits.handshake_timeout,
        idle: limits.idle_timeout,
        hard_age: limits.max_connection_age + limits.max_connection_age_grace,
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Capacity 1: accepting runs at most one connection ahead of the server.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(accept_loop(
        listener,
        slots,
        limits.max_connections,
        deadlines,
        tls,
        tx,
    ));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: usize,
    deadlines: Deadlines,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<Result<Conn, Infallible>>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut last_limit_log: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            permit = wait_for_slot(&slots, max_connections, &mut last_limit_log) => permit,
            () = tx.closed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        match accepted {
            Ok((socket, _peer)) => {
                backoff = MIN_BACKOFF;
                // Small request/response pairs: without NODELAY, Nagle adds up to 40 ms per call.
                if let Err(err) = socket.set_nodelay(true) {
                    tracing::debug!(error = %err, "cannot set TCP_NODELAY on an accepted connection");
                }
                let accepted = Instant::now();
                match &tls {
                    None => {
                        let conn = Conn::new(Io::Plain(socket), permit, deadlines, accepted);
                        if tx.send(Ok(conn)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        tokio::spawn(handshake(
                            acceptor.clone(),
                            socket,
                            permit,
                            deadlines,
                            accepted,
                            tx.clone(),
                        ));
                    }
                }
            }
            // The caller gave up between SYN and accept: nothing to wait for.
            Err(err) if is_per_connection(&err) => {
                tracing::debug!(error = %err, "accept failed for one connection");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "accept failed (out of file descriptors or memory?); pausing before the next accept");
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Completes a TLS handshake within the handshake timeout, then hands the
/// connection on; a failed or late handshake just drops it (and its slot).
async fn handshake(
    acceptor: TlsAcceptor,
    socket: TcpStream,
    permit: OwnedSemaphorePermit,
    deadlines: Deadlines,
    accepted: Instant,
    tx: mpsc::Sender<Result<Conn, Infallible>>,
) {
    let peer = socket.peer_addr().ok();
    let deadline = accepted + deadlines.handshake;
    match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            let conn = Conn::new(Io::Tls(Box::new(stream)), permit, deadlines, accepted);
            // An error means the server stopped accepting: nothing to do.
            let _ = tx.send(Ok(conn)).await;
        }
        Ok(Err(err)) => tracing::debug!(?peer, error = %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(
            ?peer,
            "TLS handshake not finished within HANDSHAKE_TIMEOUT_SECONDS"
        ),
    }
}

/// A slot under the connection limit; logs (at most once per
/// [`LIMIT_LOG_INTERVAL`]) when it has to wait for one.
async fn wait_for_slot(
    slots: &Arc<Semaphore>,
    max_connections: usize,
    last_log: &mut Option<Instant>,
) -> OwnedSemaphorePermit {
    if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
        return permit;
    }
    if last_log.is_none_or(|at| at.elapsed() >= LIMIT_LOG_INTERVAL) {
        tracing::warn!(
            max_connections,
            "MAX_CONNECTIONS reached: new connections wait in the kernel backlog until one closes"
        );
        *last_log = Some(Instant::now());
    }
    match Arc::clone(slots).acquire_owned().await {
        Ok(permit) => permit,
        // The semaphore lives in this loop and is never closed.
        Err(_closed) => std::future::pending().await,
    }
}

/// Errors of one connection that never reached us, as opposed to errors of
/// the listening socket or the process (descriptors, memory).
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ListenerLimits {
            max_connections: 2,
            ..ListenerLimits::default()
        };
        let mut incoming = Box::pin(incoming(listener, &limits, None));
        let _callers: Vec<_> = futures_connect(addr, 3).await;

        let first = incoming.next().await.unwrap().unwrap();
        let _second = incoming.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted past the limit"
        );
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(10), incoming.next()).await;

        assert!(
            matches!(third, Ok(Some(Ok(_)))),
            "the waiting connection is accepted once a slot frees"
        );
    }

    #[tokio::test]
    async fn dropping_the_stream_closes_the_listening_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = incoming(listener, &ListenerLimits::default(), None);

        drop(incoming);

        // Polling until a deadline: the loop task notices the drop on its next poll.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the port still accepts connections"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn futures_connect(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut callers = Vec::new();
        for _ in 0..n {
            // The kernel completes the handshake from its backlog.
            callers.push(TcpStream::connect(addr).await.unwrap());
        }
        callers
    }
}
