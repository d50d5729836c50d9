//! Prometheus metrics: counters and histograms kept in fixed arrays of
//! atomics (recording a call is a few relaxed atomic adds: no lock, no
//! allocation), rendered in the text exposition format, and a tiny HTTP/1.1
//! endpoint answering `GET /metrics` on its own port (`METRICS_ADDR`). It
//! does not decide what a call's outcome is; `service`, `error` and `app`
//! report outcomes here.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tonic::Code;

use crate::store::FailureKind;

/// The process-wide metrics; the service has one registry, like one log.
pub static METRICS: Metrics = Metrics::new();

/// RPCs counted, in label order.
const METHODS: [&str; 2] = ["CreateUser", "GetUser"];

/// gRPC codes as grpc-go and go-grpc-prometheus spell them, indexed by code number.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Upper bounds of the latency buckets, in microseconds (0.5 ms to 5 s).
const BUCKETS_US: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// Latency histogram of one method.
struct Histogram {
    /// Calls per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS_US.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// Every metric the service exports.
pub struct Metrics {
    calls: [[AtomicU64; CODES.len()]; METHODS.len()],
    latency: [Histogram; METHODS.len()],
    redis_errors: [AtomicU64; FailureKind::ALL.len()],
    serving: AtomicU64,
    redis_lost: AtomicU64,
    topology_changes: AtomicU64,
    failovers: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero, health NOT_SERVING.
    pub const fn new() -> Self {
        Self {
            calls: [const { [const { AtomicU64::new(0) }; CODES.len()] }; METHODS.len()],
            latency: [const { Histogram::new() }; METHODS.len()],
            redis_errors: [const { AtomicU64::new(0) }; FailureKind::ALL.len()],
            serving: AtomicU64::new(0),
            redis_lost: AtomicU64::new(0),
            topology_changes: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        }
    }

    /// Counts one finished call of `method` (`"CreateUser"`, `"GetUser"`).
    pub fn record_call(&self, method: &str, code: Code, latency: Duration) {
        let Some(m) = METHODS.iter().position(|&name| name == method) else {
            return;
        };
        let c = usize::try_from(code as i32).map_or(CODES.len(), |c| c.min(CODES.len() - 1));
        self.calls[m][c].fetch_add(1, Relaxed);
        self.latency[m].observe(latency);
    }

    /// Counts one failed Redis operation.
    pub fn record_redis_error(&self, kind: FailureKind) {
        if let Some(i) = FailureKind::ALL.iter().position(|&k| k == kind) {
            self.redis_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Sets the health gauge.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(u64::from(serving), Relaxed);
    }

    /// Counts a SERVING -> NOT_SERVING change caused by Redis.
    pub fn record_redis_lost(&self) {
        self.redis_lost.fetch_add(1, Relaxed);
    }

    /// Counts a change of the cluster's slot map, and whether the set of
    /// primaries changed with it (a failover).
    pub fn record_topology_change(&self, failover: bool) {
        self.topology_changes.fetch_add(1, Relaxed);
        if failover {
            self.failovers.fetch_add(1, Relaxed);
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP user_service_calls_total UserService calls finished, by method and gRPC status code."
        )?;
        writeln!(out, "# TYPE user_service_calls_total counter")?;
        for (m, method) in METHODS.iter().enumerate() {
            for (c, code) in CODES.iter().enumerate() {
                let n = self.calls[m][c].load(Relaxed);
                // OK is always shown so that every method has a series; other codes once seen.
                if n > 0 || c == 0 {
                    writeln!(
                        out,
                        "user_service_calls_total{{method=\"{method}\",code=\"{code}\"}} {n}"
                    )?;
                }
            }
        }

        writeln!(
            out,
            "# HELP user_service_call_duration_seconds Time from a call reaching the handler to its answer."
        )?;
        writeln!(out, "# TYPE user_service_call_duration_seconds histogram")?;
        for (m, method) in METHODS.iter().enumerate() {
            let histogram = &self.latency[m];
            let mut cumulative = 0;
            for (b, bucket) in histogram.buckets.iter().enumerate() {
                cumulative += bucket.load(Relaxed);
                let le = BUCKETS_US
                    .get(b)
                    .map_or_else(|| "+Inf".to_owned(), |&us| seconds(us));
                writeln!(
                    out,
                    "user_service_call_duration_seconds_bucket{{method=\"{method}\",le=\"{le}\"}} {cumulative}"
                )?;
            }
            let sum = seconds(histogram.sum_us.load(Relaxed));
            writeln!(
                out,
                "user_service_call_duration_seconds_sum{{method=\"{method}\"}} {sum}"
            )?;
            writeln!(
                out,
                "user_service_call_duration_seconds_count{{method=\"{method}\"}} {cumulative}"
            )?;
        }

        writeln!(
            out,
            "# HELP user_service_redis_errors_total Failed Redis operations of calls, by kind."
        )?;
        writeln!(out, "# TYPE user_service_redis_errors_total counter")?;
        for (i, kind) in FailureKind::ALL.iter().enumerate() {
            writeln!(
                out,
                "user_service_redis_errors_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.redis_errors[i].load(Relaxed)
            )?;
        }

        let gauges = [
            (
                "user_service_serving",
                "gauge",
                "1 while health reports SERVING (Redis answers), else 0.",
                self.serving.load(Relaxed),
            ),
            (
                "user_service_redis_lost_total",
                "counter",
                "Times health turned NOT_SERVING because Redis stopped answering.",
                self.redis_lost.load(Relaxed),
            ),
            (
                "user_service_cluster_topology_changes_total",
                "counter",
                "Changes of the cluster slot map seen by the service (failover or resharding).",
                self.topology_changes.load(Relaxed),
            ),
            (
                "user_service_cluster_failovers_total",
                "counter",
                "Slot map changes in which the set of primaries changed (failover detected).",
                self.failovers.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in gauges {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} {kind}")?;
            writeln!(out, "{name} {value}")?;
        }
        writeln!(out, "# HELP user_service_build_info The running version.")?;
        writeln!(out, "# TYPE user_service_build_info gauge")?;
        writeln!(
            out,
            "user_service_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// Microseconds as a decimal number of seconds, exactly.
fn seconds(us: u64) -> String {
    let frac = us % 1_000_000;
    if frac == 0 {
        format!("{}", us / 1_000_000)
    } else {
        let digits = format!("{frac:06}");
        format!("{}.{}", us / 1_000_000, digits.trim_end_matches('0'))
    }
}

/// Scrapes served at once; more wait for a slot (bounds memory).
const MAX_SCRAPES: usize = 16;
/// Limit on reading a request head and writing the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Answers `GET /metrics` on `listener` until the task is dropped. Each
/// connection gets one answer and is closed (`Connection: close`), which
/// Prometheus handles; nothing here can block the gRPC server.
pub async fn serve(listener: TcpListener, metrics: &'static Metrics) {
    let slots = std::sync::Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: try again shortly.
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, metrics)).await;
            drop(permit);
        });
    }
}

/// Reads one request head and writes one response.
async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
            .await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => respond(&mut stream, "200 OK", &metrics.render(), true).await,
        ("HEAD", "/metrics") => respond(&mut stream, "200 OK", "", true).await,
        ("GET" | "HEAD", _) => respond(&mut stream, "404 Not Found", "try /metrics\n", false).await,
        _ => respond(&mut stream, "405 Method Not Allowed", "", false).await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    exposition: bool,
) -> std::io::Result<()> {
    let content_type = if exposition {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_latency_and_errors_render_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics.record_call("GetUser", Code::Ok, Duration::from_micros(700));
        metrics.record_call("GetUser", Code::NotFound, Duration::from_millis(3));
        metrics.record_call("CreateUser", Code::Unavailable, Duration::from_secs(9));
        metrics.record_call("Unknown", Code::Ok, Duration::ZERO);
        metrics.record_redis_error(FailureKind::Timeout);
        metrics.set_serving(true);

        let text = metrics.render();

        for line in [
            "user_service_calls_total{method=\"GetUser\",code=\"OK\"} 1",
            "user_service_calls_total{method=\"GetUser\",code=\"NotFound\"} 1",
            "user_service_calls_total{method=\"CreateUser\",code=\"OK\"} 0",
            "user_service_calls_total{method=\"CreateUser\",code=\"Unavailable\"} 1",
            "user_service_call_duration_seconds_bucket{method=\"GetUser\",le=\"0.0005\"} 0",
            "user_service_call_duration_seconds_bucket{method=\"GetUser\",le=\"0.001\"} 1",
            "user_service_call_duration_seconds_bucket{method=\"GetUser\",le=\"0.005\"} 2",
            "user_service_call_duration_seconds_bucket{method=\"GetUser\",le=\"+Inf\"} 2",
            "user_service_call_duration_seconds_sum{method=\"GetUser\"} 0.0037",
            "user_service_call_duration_seconds_count{method=\"GetUser\"} 2",
            "user_service_call_duration_seconds_bucket{method=\"CreateUser\",le=\"5\"} 0",
            "user_service_call_duration_seconds_bucket{method=\"CreateUser\",le=\"+Inf\"} 1",
            "user_service_redis_errors_total{kind=\"timeout\"} 1",
            "user_service_redis_errors_total{kind=\"io\"} 0",
            "user_service_serving 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("Unknown\""),
            "unknown methods are not counted"
        );
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(500), "0.0005");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(3_700), "0.0037");
    }
}
