//! Scraping the service's Prometheus endpoint (`METRICS_ADDR`) over plain
//! HTTP/1.1, and reading series out of the text exposition format.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    /// `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The header block, lines joined with `\n`.
    pub headers: String,
    pub body: String,
}

/// `GET path` on `addr`; panics on I/O errors or a malformed answer.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpAnswer {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|err| panic!("connect to metrics endpoint {addr}: {err}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .unwrap_or_else(|err| panic!("read the answer of GET {path}: {err}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header/body separator in {raw:?}"));
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    HttpAnswer {
        status_line: status_line.to_owned(),
        headers: headers.replace("\r\n", "\n"),
        body: body.to_owned(),
    }
}

/// Every sample of a scrape, keyed by series (`name{labels}` as printed).
pub fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let answer = http_get(addr, "/metrics");
    assert_eq!(answer.status_line, "HTTP/1.1 200 OK", "{answer:?}");
    answer
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// The value of `series` in `samples`; 0 when absent (counters of codes
/// not seen yet are not printed).
pub fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}
