//! Scraping the service's Prometheus endpoint (`METRICS_ADDR`) with a real
//! HTTP client (hyper-util's, which tonic's channel already builds), and
//! reading series out of the text exposition format.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tonic::codegen::Bytes;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The `Content-Type` header, empty when absent.
    pub content_type: String,
    /// The response body.
    pub body: String,
}

/// `GET path` on `addr`; panics on I/O errors or a non-UTF-8 body.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpAnswer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .unwrap_or_else(|err| panic!("bad URI for {addr}{path}: {err}"));
    let response = tokio::time::timeout(IO_TIMEOUT, client.get(uri))
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr}: no answer within {IO_TIMEOUT:?}"))
        .unwrap_or_else(|err| panic!("GET {path} on {addr}: {err}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = tokio::time::timeout(IO_TIMEOUT, response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr}: body not read within {IO_TIMEOUT:?}"))
        .unwrap_or_else(|err| panic!("GET {path} on {addr}: reading the body: {err}"))
        .to_bytes();
    HttpAnswer {
        status,
        content_type,
        body: String::from_utf8(body.to_vec())
            .unwrap_or_else(|err| panic!("GET {path} on {addr}: body is not UTF-8: {err}")),
    }
}

/// Every sample of a scrape, keyed by series (`name{labels}` as printed).
pub async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let answer = http_get(addr, "/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    parse(&answer.body)
}

/// The samples of a text exposition, keyed by series.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
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
