//! Prometheus metrics: the series the service exports, recorded through the
//! `metrics` facade into `metrics-exporter-prometheus`, and the `/metrics`
//! endpoint (axum's router on hyper) on `METRICS_ADDR`. Per-call series (`grpc_server_*`) are
//! recorded by `calls`; this module names the rest and renders them all. It
//! does not decide what a call's outcome is.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use axum::{Router, http::header, response::IntoResponse, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::store::FailureKind;

/// The service's own series; a unit value so that callers anywhere
/// (health monitor, topology watch, handlers) record without plumbing.
pub static METRICS: Metrics = Metrics;

/// Name of the go-grpc-prometheus counter of calls started.
pub const STARTED: &str = "grpc_server_started_total";
/// Name of the go-grpc-prometheus counter of calls finished, by `grpc_code`.
pub const HANDLED: &str = "grpc_server_handled_total";
/// Name of the go-grpc-prometheus histogram of handling time.
pub const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

const REDIS_ERRORS: &str = "user_service_redis_errors_total";
const SERVING: &str = "user_service_serving";
const REDIS_LOST: &str = "user_service_redis_lost_total";
const TOPOLOGY_CHANGES: &str = "user_service_cluster_topology_changes_total";
const FAILOVERS: &str = "user_service_cluster_failovers_total";
const REFUSED: &str = "user_service_calls_refused_total";
const BUILD_INFO: &str = "user_service_build_info";

/// Upper bounds of the handling-time buckets in seconds (0.5 ms to 5 s):
/// a call answers in about a millisecond on loopback, and no call outlives
/// the Redis budget (seconds).
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often histogram samples are folded into buckets when nobody scrapes;
/// without it they pile up between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Connections to the metrics endpoint served at once; more wait in the
/// accept queue. Prometheus uses one per target.
const MAX_SCRAPES: usize = 16;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a metrics connection stays open (Prometheus reconnects as needed).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after a failed accept (EMFILE and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Records the service's own series (the per-call ones live in `calls`).
/// Without an installed exporter (no `METRICS_ADDR`) every call is a no-op.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics;

impl Metrics {
    /// Counts one failed Redis operation of a call.
    pub fn record_redis_error(&self, kind: FailureKind) {
        counter!(REDIS_ERRORS, "kind" => kind.label()).increment(1);
    }

    /// Counts one UserService call refused by the concurrency limit.
    pub fn record_refused(&self) {
        counter!(REFUSED).increment(1);
    }

    /// Sets the health gauge.
    pub fn set_serving(&self, serving: bool) {
        gauge!(SERVING).set(if serving { 1.0 } else { 0.0 });
    }

    /// Counts a SERVING -> NOT_SERVING change caused by Redis.
    pub fn record_redis_lost(&self) {
        counter!(REDIS_LOST).increment(1);
    }

    /// Counts a change of the cluster's slot map, and whether the set of
    /// primaries changed with it (a failover).
    pub fn record_topology_change(&self, failover: bool) {
        counter!(TOPOLOGY_CHANGES).increment(1);
        if failover {
            counter!(FAILOVERS).increment(1);
        }
    }
}

/// The exporter: where rendering reads from, and the `process_*` collector.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    /// The text exposition format (version 0.0.4), process series refreshed first.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// Installs the Prometheus recorder as the process's `metrics` recorder
/// (once: later calls, e.g. a second in-process server in tests, share it)
/// and describes every series. Call it before building the server, so that
/// the per-call handles bind to it.
pub fn install() -> Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HANDLING_SECONDS.to_owned()), &BUCKETS)
                .expect("BUCKETS is a non-empty constant")
                .build_recorder();
            let handle = recorder.handle();
            if let Err(err) = ::metrics::set_global_recorder(recorder) {
                // Another recorder came first (an embedding program): ours stays empty.
                tracing::warn!(error = %err, "a metrics recorder was already installed; /metrics shows only process series");
            }
            let process = Arc::new(metrics_process::Collector::default());
            process.describe();
            describe();
            Exporter { handle, process }
        })
        .clone()
}

/// Help texts, and every Redis-side series at its starting value so that
/// `rate()` sees the first increment.
fn describe() {
    describe_counter!(
        STARTED,
        "gRPC calls started on the server (including unknown and undecodable ones)."
    );
    describe_counter!(
        HANDLED,
        "gRPC calls finished on the server, by gRPC status code."
    );
    describe_histogram!(
        HANDLING_SECONDS,
        ::metrics::Unit::Seconds,
        "Time from a call's request headers to its final status."
    );
    describe_counter!(REDIS_ERRORS, "Failed Redis operations of calls, by kind.");
    describe_counter!(
        REFUSED,
        "UserService calls refused with RESOURCE_EXHAUSTED: no slot freed within the admission wait."
    );
    describe_gauge!(
        SERVING,
        "1 while health reports SERVING (Redis answers), else 0."
    );
    describe_counter!(
        REDIS_LOST,
        "Times health turned NOT_SERVING because Redis stopped answering."
    );
    describe_counter!(
        TOPOLOGY_CHANGES,
        "Changes of the cluster slot map seen by the service (failover or resharding)."
    );
    describe_counter!(
        FAILOVERS,
        "Slot map changes in which the set of primaries changed (failover detected)."
    );
    describe_gauge!(BUILD_INFO, "The running version.");
    for kind in FailureKind::ALL {
        counter!(REDIS_ERRORS, "kind" => kind.label()).increment(0);
    }
    for name in [REDIS_LOST, TOPOLOGY_CHANGES, FAILOVERS, REFUSED] {
        counter!(name).increment(0);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Answers `GET /metrics` on `listener` until the task is dropped; other
/// paths get 404 and other methods 405 (axum's routing). HTTP/1.1 by hyper,
/// with bounds so that idle or slow clients cannot pile up: at most
/// `MAX_SCRAPES` connections (more wait in the accept queue), each closed
/// after `CONNECTION_LIFETIME`, and request headers due within `HEADER_TIMEOUT`.
pub async fn serve(listener: TcpListener, exporter: Exporter) {
    let upkeep = exporter.handle.clone();
    let upkeep = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            ticker.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || async move {
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                exporter.render(),
            )
                .into_response()
        }),
    );
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // An error is the client's problem (reset, garbage); nothing to report.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
    }
    upkeep.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exporter_renders_the_service_series_and_process_series() {
        let exporter = install();
        METRICS.set_serving(true);
        METRICS.record_redis_error(FailureKind::Timeout);

        let text = exporter.render();

        for expected in [
            "# TYPE user_service_redis_errors_total counter",
            "user_service_redis_errors_total{kind=\"io\"} ",
            "user_service_serving 1",
            "# TYPE process_resident_memory_bytes gauge",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            text.lines().any(|l| l
                .starts_with("user_service_redis_errors_total{kind=\"timeout\"} ")
                && !l.ends_with(" 0")),
            "{text}"
        );
    }
}
