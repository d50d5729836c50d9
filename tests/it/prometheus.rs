//! A real Prometheus server (Debian's `prometheus`) scrapes the service's
//! `METRICS_ADDR` every second; the counts of `grpc_server_handled_total`
//! are read back through Prometheus's HTTP query API, as a dashboard would.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;
use tonic::Code;

use crate::support::{
    RedisServer, Service, ServiceEnv, code_of, eventually, free_port, metrics::http_get,
    tools::require_prometheus, user,
};

/// Start-up of Prometheus, and a few scrape intervals for samples to land.
const PROMETHEUS_WITHIN: Duration = Duration::from_secs(30);

/// A `prometheus` process on a free loopback port with a generated config
/// and its own storage directory; killed by pid when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (as job `user-service`) every second.
    fn start(target: SocketAddr) -> Self {
        require_prometheus();
        let dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .expect("create a temp dir for Prometheus");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: user-service\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = fs::File::create(dir.path().join("prometheus.log")).expect("create its log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        Self { child, addr, dir }
    }

    /// Waits until Prometheus answers `/-/ready`.
    async fn wait_ready(&self) {
        eventually(PROMETHEUS_WITHIN, "Prometheus is ready", || async {
            // Connection refused until it listens: ask with a short-lived socket first.
            std::net::TcpStream::connect(self.addr).is_ok()
                && http_get(self.addr, "/-/ready").await.status == 200
        })
        .await;
    }

    /// The instant vector of `query`: each series' labels and value.
    async fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let answer = http_get(self.addr, &format!("/api/v1/query?query={}", encode(query))).await;
        assert_eq!(answer.status, 200, "{answer:?}\n{}", self.log());
        let json: serde_json::Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", answer.body));
        assert_eq!(json["status"], "success", "{json}");
        json["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("no result array: {json}"))
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .unwrap_or_else(|| panic!("no labels: {series}"))
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no value: {series}"));
                (labels, value)
            })
            .collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // By pid: std does not signal a child it has already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}--- end ---", self.log());
        }
    }
}

/// Percent-encodes every byte but ASCII letters and digits (a query parameter).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn prometheus_scrapes_the_call_counts_by_grpc_code() {
    // Arrange
    let redis = RedisServer::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = ServiceEnv::standalone(&redis).env("METRICS_ADDR", &metrics_addr.to_string());
    let service = Service::start(env).await;
    let prometheus = Prometheus::start(metrics_addr);
    prometheus.wait_ready().await;
    let mut client = service.client();

    // Act: three created, one refused as a duplicate.
    for id in ["prom-1", "prom-2", "prom-3"] {
        client.create_user(user(id)).await.unwrap();
    }
    let duplicate = client.create_user(user("prom-1")).await;
    let query = "grpc_server_handled_total{job=\"user-service\",grpc_service=\"user.v1.UserService\",grpc_method=\"CreateUser\"}";
    let by_code = || async {
        prometheus
            .query(query)
            .await
            .into_iter()
            .map(|(labels, value)| (labels["grpc_code"].clone(), value))
            .collect::<BTreeMap<String, f64>>()
    };
    eventually(
        PROMETHEUS_WITHIN,
        "Prometheus has scraped all four calls",
        || async { by_code().await.values().sum::<f64>() >= 4.0 },
    )
    .await;
    let by_code = by_code().await;
    let up = prometheus.query("up{job=\"user-service\"}").await;

    // Assert
    assert_eq!(code_of(&duplicate), Code::AlreadyExists);
    assert_eq!(
        by_code,
        BTreeMap::from([("AlreadyExists".to_owned(), 1.0), ("OK".to_owned(), 3.0)]),
        "{query}"
    );
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].1, 1.0, "the target is up: {up:?}");
    assert_eq!(
        up[0].0["instance"],
        metrics_addr.to_string(),
        "the service is the target"
    );
}
