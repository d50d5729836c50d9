//! `Service`: the built `user-service` binary, spawned with a chosen
//! environment on a free loopback port, its stdout and stderr captured to
//! files in a temp dir (printed when a test fails). For what only a process
//! shows: start-up, exit codes, signals, logs, memory. API tests use
//! [`App`](super::App), the same server in this process. Dropping a
//! `Service` kills the process (SIGKILL); a test of a graceful exit asks for
//! one with [`Service::terminate`].

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::Mutex,
    thread,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use user_service::pb::user::v1::user_service_client::UserServiceClient;

use super::{
    Certs, RedisCluster, RedisServer,
    acl::{SERVICE_PASSWORD, SERVICE_USER},
    endpoint::{ChannelTls, Endpoint},
    eventually, free_port, poll_until,
};

/// How long a service may take to report SERVING once Redis is up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a service may take to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// A `Command` for the built binary with an empty environment, so variables
/// of the machine running the tests (a stray `REDIS_URL`) change nothing.
pub fn service_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_user-service"));
    command.env_clear();
    command
}

/// The environment a [`Service`] starts with.
#[derive(Clone, Debug, Default)]
pub struct ServiceEnv {
    pub(super) vars: BTreeMap<String, String>,
    pub(super) channel_tls: Option<ChannelTls>,
}

impl ServiceEnv {
    /// Standalone mode against `redis`, logged in as the service's ACL user
    /// if the server has it (else as `default`, with no password set here).
    pub fn standalone(redis: &RedisServer) -> Self {
        let env = Self::default()
            .env("REDIS_MODE", "standalone")
            .env("REDIS_URL", &redis.url());
        match redis.service_credentials() {
            Some((user, password)) => env.login(user, password),
            None => env,
        }
    }

    /// Standalone mode against whatever listens (or not) on `port`, logged
    /// in as the service's ACL user that fixture servers have by default.
    pub fn standalone_at(port: u16) -> Self {
        Self::default()
            .env("REDIS_MODE", "standalone")
            .env("REDIS_URL", &format!("redis://127.0.0.1:{port}"))
            .login(SERVICE_USER, SERVICE_PASSWORD)
    }

    /// Cluster mode, seeded with every node of `cluster`, logged in as the
    /// service's ACL user.
    pub fn cluster(cluster: &RedisCluster) -> Self {
        Self::default()
            .env("REDIS_MODE", "cluster")
            .env("REDIS_CLUSTER_NODES", &cluster.seed_nodes())
            .login(SERVICE_USER, SERVICE_PASSWORD)
    }

    fn login(self, user: &str, password: &str) -> Self {
        self.env("REDIS_USERNAME", user)
            .env("REDIS_PASSWORD", password)
    }

    /// Removes one variable (to pass the password in a file instead, say).
    pub fn unset(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self
    }

    /// TLS on the gRPC listener with `certs.server`; the fixture's own
    /// channel (health polling, clients) trusts `certs.ca()`.
    pub fn grpc_tls(self, certs: &Certs) -> Self {
        self.env("TLS_CERT_FILE", certs.server.cert())
            .env("TLS_KEY_FILE", certs.server.key())
            .channel_trusting(certs.ca())
    }

    /// The fixture's own channel speaks TLS and trusts `ca`: for a test that
    /// sets the listener's TLS variables itself.
    pub fn channel_trusting(mut self, ca: &str) -> Self {
        self.channel_tls = Some(ChannelTls {
            ca: ca.to_owned(),
            identity: None,
        });
        self
    }

    /// Mutual TLS on the gRPC listener: as [`grpc_tls`](Self::grpc_tls),
    /// requiring client certificates signed by `certs.ca()`; the fixture's
    /// channel presents `certs.client`.
    pub fn grpc_mutual_tls(self, certs: &Certs) -> Self {
        let mut env = self.grpc_tls(certs).env("TLS_CLIENT_CA_FILE", certs.ca());
        env.channel_tls = Some(ChannelTls {
            ca: certs.ca().to_owned(),
            identity: Some(certs.client.clone()),
        });
        env
    }

    /// Sets one variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }
}

/// A running `user-service`; see the module docs.
pub struct Service {
    /// In a mutex so that `&self` methods can ask whether it exited.
    child: Mutex<Child>,
    endpoint: Endpoint,
    logs: TempDir,
}

impl Service {
    /// Spawns the binary and returns at once; see [`start`](Self::start).
    pub fn spawn(env: ServiceEnv) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let logs = tempfile::Builder::new()
            .prefix("user-service-")
            .tempdir()
            .expect("create a temp dir for service logs");
        let stdout = fs::File::create(logs.path().join("stdout.log")).expect("create stdout.log");
        let stderr = fs::File::create(logs.path().join("stderr.log")).expect("create stderr.log");
        let channel_tls = env.channel_tls.clone();
        let mut env = env.env("LISTEN_ADDR", &addr.to_string());
        if !env.vars.contains_key("RUST_LOG") {
            env = env.env("RUST_LOG", "info");
        }
        let child = service_command()
            .envs(env.vars)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn user-service");
        Service {
            child: Mutex::new(child),
            endpoint: Endpoint::new(addr, channel_tls),
            logs,
        }
    }

    /// Spawns the binary and waits until its health check reports SERVING.
    pub async fn start(env: ServiceEnv) -> Self {
        let service = Self::spawn(env);
        service.wait_for_health(ServingStatus::Serving).await;
        service
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr()
    }

    /// The process id of the service.
    pub fn pid(&self) -> Pid {
        let id = self.child.lock().unwrap().id();
        Pid::from_raw(i32::try_from(id).expect("pid fits in i32"))
    }

    /// A channel to the service (connects lazily), over TLS if the service
    /// was started with [`ServiceEnv::grpc_tls`].
    pub fn channel(&self) -> Channel {
        self.endpoint.channel()
    }

    /// A `user.v1.UserService` client.
    pub fn client(&self) -> UserServiceClient<Channel> {
        self.endpoint.client()
    }

    /// What `grpc.health.v1.Health/Check` answers for `service`, or the
    /// error if the call fails (not listening yet, for instance).
    pub async fn try_health_of(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        self.endpoint.try_health_of(service).await
    }

    /// The health status of the whole server (`""`); panics if it cannot be
    /// asked.
    pub async fn health(&self) -> ServingStatus {
        self.endpoint.health().await
    }

    /// Polls the health check (of `""`) until it answers `want`.
    pub async fn wait_for_health(&self, want: ServingStatus) {
        let addr = self.addr();
        let what = format!("user-service on {addr} reports {want:?}");
        let this = self;
        eventually(READY_TIMEOUT, &what, || async move {
            if let Some(status) = this.exit_status() {
                panic!("user-service on {addr} exited early with {status}");
            }
            this.try_health_of("").await.ok() == Some(want)
        })
        .await;
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal)
            .unwrap_or_else(|err| panic!("send {signal} to user-service: {err}"));
    }

    /// Sends SIGTERM and returns how the process exited; panics if it does
    /// not exit within the grace period.
    pub async fn terminate(&self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_for_exit(GRACE)
            .await
            .unwrap_or_else(|| panic!("user-service did not exit within {GRACE:?} of SIGTERM"))
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_for_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || async { self.exit_status().ok_or(()) })
            .await
            .ok()
    }

    /// What the service wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.logs.path().join("stdout.log")).unwrap_or_default()
    }

    /// What the service wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.logs.path().join("stderr.log")).unwrap_or_default()
    }

    /// Both logs, labelled, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- user-service {} stdout ---\n{}--- stderr ---\n{}--- end of logs ---",
            self.addr(),
            self.stdout(),
            self.stderr()
        )
    }

    /// How the process exited, or `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .try_wait()
            .expect("ask whether user-service exited")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SIGKILL, not SIGTERM: a graceful shutdown waits for the test's own
        // connections to close, and their tasks cannot run while this drop
        // blocks the test's runtime, so every test would wait out the grace
        // period. std does not signal a child it has already reaped.
        let _ = child.kill();
        let _ = child.wait();
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
