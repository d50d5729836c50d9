//! One accepted connection: the socket (plain, or TLS already negotiated),
//! its slot under the connection limit, and the deadlines hyper has no
//! setting for. The socket fails (and hyper drops the connection) when the
//! HTTP/2 preface has not arrived within the handshake timeout of accepting
//! (TLS handshake included), when no call has been in flight for the idle
//! timeout, or when the connection outlives its age plus grace. Also the
//! per-connection counters that `layer` keeps up to date.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep, sleep_until},
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Length of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_BYTES: usize = 24;

/// What the request layer and the socket share about one connection.
#[derive(Debug)]
pub struct ConnState {
    /// Calls whose response has not been sent (or dropped) yet.
    open_calls: AtomicUsize,
    /// Request body bytes read by calls that have not finished reading.
    body_bytes: AtomicUsize,
    /// When the last call ended (or the connection opened).
    idle_since: Mutex<Instant>,
}

impl ConnState {
    fn new(now: Instant) -> Self {
        ConnState {
            open_calls: AtomicUsize::new(0),
            body_bytes: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
        }
    }

    /// Counts a call as in flight until the guard is dropped.
    pub fn open_call(self: &Arc<Self>) -> CallGuard {
        self.open_calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(self))
    }

    /// Adds `n` request body bytes; returns the connection's new total.
    pub fn add_body_bytes(&self, n: usize) -> usize {
        self.body_bytes.fetch_add(n, Ordering::AcqRel) + n
    }

    /// Releases `n` request body bytes counted by [`add_body_bytes`](Self::add_body_bytes).
    pub fn release_body_bytes(&self, n: usize) {
        self.body_bytes.fetch_sub(n, Ordering::AcqRel);
    }

    /// When the connection counts as idle since, or `None` while a call is open.
    fn idle_since(&self) -> Option<Instant> {
        if self.open_calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Keeps one call counted as open; see [`ConnState::open_call`].
#[derive(Debug)]
pub struct CallGuard(Arc<ConnState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        // Stamp before decrementing, so a reader that sees no open call
        // also sees this call's end time.
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.open_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What tonic puts into each request's extensions for this connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The addresses, as tonic gives them for plain TCP sockets.
    pub tcp: TcpConnectInfo,
    /// The counters shared with the socket.
    pub state: Arc<ConnState>,
}

/// The deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Time to receive the HTTP/2 preface.
    pub handshake: Duration,
    /// Time with no call in flight.
    pub idle: Duration,
    /// Age plus grace: after it the socket is closed, GOAWAY or not.
    pub hard_age: Duration,
}

/// Why a connection was closed by one of its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The preface did not arrive in time.
    Handshake,
    /// No call for the idle timeout.
    Idle,
    /// Age and grace are over.
    Age,
}

impl Expired {
    fn error(self) -> io::Error {
        let what = match self {
            Expired::Handshake => "no HTTP/2 preface within HANDSHAKE_TIMEOUT_SECONDS",
            Expired::Idle => "no call within IDLE_TIMEOUT_SECONDS",
            Expired::Age => {
                "connection older than MAX_CONNECTION_AGE_SECONDS + MAX_CONNECTION_AGE_GRACE_SECONDS"
            }
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

/// The bytes of a connection: as accepted, or decrypted by TLS.
#[derive(Debug)]
pub enum Io {
    /// Plaintext HTTP/2.
    Plain(TcpStream),
    /// HTTP/2 inside TLS (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(tcp) => tcp,
            Io::Tls(tls) => tls.get_ref().0,
        }
    }
}

/// Forwards one `AsyncRead`/`AsyncWrite` call to whichever stream `$io` holds.
macro_rules! forward {
    ($io:expr, $method:ident($($arg:expr),*)) => {
        match $io {
            Io::Plain(tcp) => Pin::new(tcp).$method($($arg),*),
            Io::Tls(tls) => Pin::new(tls.as_mut()).$method($($arg),*),
        }
    };
}

/// An accepted socket with its deadlines; see the module docs.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    info: ConnInfo,
    /// Released when the connection is dropped: the slot under MAX_CONNECTIONS.
    _permit: OwnedSemaphorePermit,
    deadlines: Deadlines,
    preface_read: usize,
    /// Set once a deadline has fired, so every later read or write fails too.
    expired: Option<Expired>,
    handshake: Pin<Box<Sleep>>,
    idle: Pin<Box<Sleep>>,
    age: Pin<Box<Sleep>>,
}

impl Conn {
    /// Wraps a connection accepted at `accepted`, holding `permit`; the
    /// deadlines count from `accepted`, so a TLS handshake uses up part of
    /// the handshake timeout.
    pub fn new(
        io: Io,
        permit: OwnedSemaphorePermit,
        deadlines: Deadlines,
        accepted: Instant,
    ) -> Self {
        let now = accepted;
        let tcp = io.tcp().connect_info();
        Conn {
            io,
            info: ConnInfo {
                tcp,
                state: Arc::new(ConnState::new(now)),
            },
            _permit: permit,
            deadlines,
            preface_read: 0,
            expired: None,
            handshake: Box::pin(sleep_until(now + deadlines.handshake)),
            idle: Box::pin(sleep_until(now + deadlines.idle)),
            age: Box::pin(sleep_until(now + deadlines.hard_age)),
        }
    }

    /// Checks the deadlines, registering `cx` with each pending timer;
    /// `Some` once one of them has passed.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        if self.expired.is_none() {
            self.expired = self.check(cx);
            if let Some(expired) = self.expired {
                tracing::debug!(peer = ?self.info.tcp.remote_addr(), ?expired, "closing connection");
            }
        }
        self.expired
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        if self.preface_read < PREFACE_BYTES && self.handshake.as_mut().poll(cx).is_ready() {
            return Some(Expired::Handshake);
        }
        if self.age.as_mut().poll(cx).is_ready() {
            return Some(Expired::Age);
        }
        // The timer is re-armed from the last call's end whenever it fires
        // while calls were in flight or ended since it was set.
        while self.idle.as_mut().poll(cx).is_ready() {
            match self.info.state.idle_since() {
                Some(since) if since + self.deadlines.idle <= Instant::now() => {
                    return Some(Expired::Idle);
                }
                Some(since) => self.idle.as_mut().reset(since + self.deadlines.idle),
                None => self
                    .idle
                    .as_mut()
                    .reset(Instant::now() + self.deadlines.idle),
            }
        }
        None
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(expired) = this.poll_deadlines(cx) {
            return Poll::Ready(Err(expired.error()));
        }
        let before = buf.filled().len();
        let result = forward!(&mut this.io, poll_read(cx, buf));
        if this.preface_read < PREFACE_BYTES {
            this.preface_read += buf.filled().len() - before;
        }
        result
    }
}

impl AsyncWrite for Conn {
    // Deadlines are checked on writes too: a caller that stops reading
    // blocks hyper's writes, and then hyper stops reading as well.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(expired) = this.poll_deadlines(cx) {
            return Poll::Ready(Err(expired.error()));
        }
        forward!(&mut this.io, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(expired) = this.poll_deadlines(cx) {
            return Poll::Ready(Err(expired.error()));
        }
        forward!(&mut this.io, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(expired) = this.poll_deadlines(cx) {
            return Poll::Ready(Err(expired.error()));
        }
        forward!(&mut this.io, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(&mut self.get_mut().io, poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
        sync::Semaphore,
    };

    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    /// A connected pair: the service's wrapped end and the caller's socket.
    async fn pair(deadlines: Deadlines) -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let caller = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        (
            Conn::new(Io::Plain(accepted), permit, deadlines, Instant::now()),
            caller,
        )
    }

    async fn read_error(conn: &mut Conn) -> io::Error {
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => panic!("EOF instead of a deadline"),
                Ok(_) => continue,
                Err(err) => return err,
            }
        }
    }

    #[tokio::test]
    async fn half_a_preface_fails_at_the_handshake_deadline() {
        let (mut conn, mut caller) = pair(Deadlines {
            handshake: Duration::from_millis(200),
            idle: LONG,
            hard_age: LONG,
        })
        .await;
        caller.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();

        let err = read_error(&mut conn).await;

        assert!(
            err.to_string().contains("HANDSHAKE_TIMEOUT_SECONDS"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_full_preface_disarms_the_handshake_deadline() {
        let (mut conn, mut caller) = pair(Deadlines {
            handshake: Duration::from_millis(200),
            idle: Duration::from_millis(300),
            hard_age: LONG,
        })
        .await;
        caller
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();

        let err = read_error(&mut conn).await;

        assert!(err.to_string().contains("IDLE_TIMEOUT_SECONDS"), "{err}");
    }

    #[tokio::test]
    async fn an_open_call_holds_off_the_idle_deadline_until_it_ends() {
        let (mut conn, _caller) = pair(Deadlines {
            handshake: LONG,
            idle: Duration::from_millis(300),
            hard_age: LONG,
        })
        .await;
        conn.preface_read = PREFACE_BYTES;
        let call = conn.info.state.open_call();
        let started = Instant::now();
        let dropper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            drop(call);
        });

        let err = read_error(&mut conn).await;

        dropper.await.unwrap();
        assert!(err.to_string().contains("IDLE_TIMEOUT_SECONDS"), "{err}");
        // Timers never fire early: the close comes no sooner than the call's
        // end plus the idle timeout.
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn writes_fail_after_age_and_grace() {
        let (mut conn, _caller) = pair(Deadlines {
            handshake: LONG,
            idle: LONG,
            hard_age: Duration::from_millis(200),
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let err = conn.write_all(b"x").await.unwrap_err();

        assert!(err.to_string().contains("MAX_CONNECTION_AGE"), "{err}");
    }
}
