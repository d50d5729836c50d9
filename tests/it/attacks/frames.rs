//! Raw HTTP/2 for the attack tests: frames built byte by byte (a normal
//! client refuses to send a stream flood, a rapid reset or an endless
//! CONTINUATION), header blocks as HPACK literals (no table, no Huffman),
//! and a reader that records what the service sends back: GOAWAY,
//! RST_STREAM, and when the socket closed.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    time::Instant,
};

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// RST_STREAM code CANCEL.
pub const CANCEL: u32 = 0x8;

/// One frame: 9-byte header, then the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame fits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An empty SETTINGS frame (every setting at its default).
pub fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[])
}

/// HEADERS carrying `block`; `end_headers` false leaves room for CONTINUATION.
pub fn headers(stream: u32, block: &[u8], end_headers: bool, end_stream: bool) -> Vec<u8> {
    let flags = if end_headers { END_HEADERS } else { 0 } | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// CONTINUATION carrying more of a header block.
pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    frame(
        CONTINUATION,
        if end_headers { END_HEADERS } else { 0 },
        stream,
        block,
    )
}

/// RST_STREAM with `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// DATA on `stream`.
pub fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, bytes)
}

/// HPACK integer with an `n`-bit prefix; `first` holds the pattern bits.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// One "literal header field without indexing, new name", no Huffman.
pub fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// The header block of a request: pseudo-headers, then `extra`.
pub fn request_block(method: &str, path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, ":method", method.as_bytes());
    literal(&mut block, ":scheme", b"http");
    literal(&mut block, ":path", path.as_bytes());
    literal(&mut block, ":authority", b"localhost");
    for (name, value) in extra {
        literal(&mut block, name, value);
    }
    block
}

/// A gRPC call's header block for `path`.
pub fn grpc_block(path: &str) -> Vec<u8> {
    request_block(
        "POST",
        path,
        &[("content-type", b"application/grpc"), ("te", b"trailers")],
    )
}

/// What the service sent on one raw connection, with times from its start.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// When the first GOAWAY arrived, and its error code.
    pub goaway: Option<(Duration, u32)>,
    /// RST_STREAM frames received.
    pub resets: usize,
    /// HEADERS frames received (responses).
    pub responses: usize,
    /// When the socket reached EOF or failed.
    pub closed: Option<Duration>,
    /// Streams the service ended (HEADERS with END_STREAM, or RST_STREAM).
    pub ended_streams: HashSet<u32>,
    /// The service's SETTINGS_INITIAL_WINDOW_SIZE, once its SETTINGS arrived.
    pub initial_stream_window: Option<u32>,
    /// WINDOW_UPDATE increments per stream (0: the connection).
    pub window_added: HashMap<u32, u64>,
}

impl Seen {
    /// A one-line account, without the per-stream details.
    pub fn summary(&self) -> String {
        format!(
            "goaway {:?}, {} RST_STREAM, {} HEADERS, socket closed after {:?}",
            self.goaway
                .map(|(at, code)| format!("code {code:#x} after {at:?}")),
            self.resets,
            self.responses,
            self.closed
        )
    }

    /// When the service ended the connection: GOAWAY or close, whichever first.
    pub fn ended(&self) -> Option<Duration> {
        match (self.goaway.map(|g| g.0), self.closed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// An attacker's connection: the write half, and a task reading frames.
pub struct RawConn {
    pub write: OwnedWriteHalf,
    seen: Arc<Mutex<Seen>>,
}

impl RawConn {
    /// Connects; sends nothing.
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        // Before connecting, so that times measured from here are never
        // shorter than the service's own, which start at accept.
        let started = Instant::now();
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        let (read, write) = stream.into_split();
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(read_frames(read, Arc::clone(&seen), started));
        RawConn { write, seen }
    }

    /// Connects and completes the HTTP/2 handshake from the client's side.
    pub async fn handshake(addr: std::net::SocketAddr) -> Self {
        let mut conn = Self::connect(addr).await;
        let mut hello = PREFACE.to_vec();
        hello.extend(settings());
        // The server's SETTINGS comes first on its side; an ACK of it
        // sent now is processed after it.
        hello.extend(frame(SETTINGS, ACK, 0, &[]));
        conn.send(&hello).await.expect("send the preface");
        conn
    }

    /// Writes `bytes`; an error means the service closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// A copy of what was seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits up to `within` for the service to end the connection; returns
    /// what was seen then.
    pub async fn wait_ended(&self, within: Duration) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.ended().is_some() || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `within` for the socket itself to close.
    pub async fn wait_closed(&self, within: Duration) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.closed.is_some() || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn read_frames(mut read: OwnedReadHalf, seen: Arc<Mutex<Seen>>, started: Instant) {
    let mut header = [0u8; 9];
    loop {
        if read.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mut seen = seen.lock().unwrap();
        match header[3] {
            GOAWAY if seen.goaway.is_none() => {
                let code = word(4).unwrap_or_default();
                seen.goaway = Some((started.elapsed(), code));
            }
            RST_STREAM => {
                seen.resets += 1;
                seen.ended_streams.insert(stream);
            }
            HEADERS => {
                seen.responses += 1;
                if header[4] & END_STREAM != 0 {
                    seen.ended_streams.insert(stream);
                }
            }
            DATA if header[4] & END_STREAM != 0 => {
                seen.ended_streams.insert(stream);
            }
            SETTINGS if header[4] & ACK == 0 => {
                for setting in payload.chunks_exact(6) {
                    if setting[..2] == [0, 4] {
                        let value =
                            u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                        seen.initial_stream_window = Some(value);
                    }
                }
                seen.initial_stream_window.get_or_insert(65_535);
            }
            WINDOW_UPDATE => {
                let increment = u64::from(word(0).unwrap_or_default() & 0x7fff_ffff);
                *seen.window_added.entry(stream).or_default() += increment;
            }
            _ => {}
        }
    }
    seen.lock().unwrap().closed = Some(started.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_match_rfc_7541_examples() {
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn a_frame_header_is_length_type_flags_stream() {
        assert_eq!(
            frame(HEADERS, END_HEADERS, 3, b"ab"),
            [0, 0, 2, 1, 4, 0, 0, 0, 3, b'a', b'b']
        );
    }
}
