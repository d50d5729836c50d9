//! `App`: the server run in this process through `user_service::app::run`,
//! the seam `main` uses, on a listener bound to `127.0.0.1:0`. API tests use
//! it: no process to spawn, nothing to wait for but Redis. It gets its own
//! thread and single-threaded runtime, as the binary does by default, so a
//! test that blocks its own runtime (a synchronous Redis query) never stalls
//! the server. Its logs go to a file, printed when a test fails.
//!
//! Configuration comes from the same [`ServiceEnv`] as a spawned
//! [`Service`](super::Service), each variable passed as its command-line
//! flag, so both are configured by the binary's own parser.

use std::{
    fs,
    net::SocketAddr,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use clap::{CommandFactory, FromArgMatches};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tracing_subscriber::EnvFilter;
use user_service::{
    app,
    config::{Cli, Config},
    pb::user::v1::user_service_client::UserServiceClient,
};

use super::{Endpoint, ServiceEnv, eventually, service::READY_TIMEOUT};

/// How long the server thread may take to end once told to stop at once.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How `app::run` ended: `Ok`, or its error as text.
type Ending = Result<(), String>;

/// A server running in this process; see the module docs.
pub struct App {
    endpoint: Endpoint,
    /// Held, never sent: `app::run`'s shutdown future resolves when it is
    /// dropped, with the fixture.
    _shutdown: oneshot::Sender<()>,
    /// Ends the server thread's runtime at once, cancelling every task.
    abort: Option<oneshot::Sender<()>>,
    /// Set when `app::run` returns.
    ending: Arc<Mutex<Option<Ending>>>,
    /// Closed when the server thread has ended.
    thread_done: mpsc::Receiver<()>,
    logs: TempDir,
}

impl App {
    /// Starts the server and waits until its health check reports SERVING.
    pub async fn start(env: ServiceEnv) -> Self {
        let app = Self::spawn(env);
        app.wait_for_health(ServingStatus::Serving).await;
        app
    }

    /// Starts the server and returns at once (it may still be connecting
    /// to Redis); panics if the configuration is refused.
    pub fn spawn(env: ServiceEnv) -> Self {
        user_service::tls::install_crypto_provider();
        let config = config_from(&env);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("the listener's address");
        let logs = tempfile::Builder::new()
            .prefix("user-service-app-")
            .tempdir()
            .expect("create a temp dir for the server's log");
        let log_file = fs::File::create(logs.path().join("app.log")).expect("create app.log");
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(&config.log_filter))
            .with_writer(Mutex::new(log_file))
            .with_ansi(false)
            .finish();

        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (abort_tx, abort_rx) = oneshot::channel::<()>();
        let (done_tx, thread_done) = mpsc::channel::<()>();
        let ending = Arc::new(Mutex::new(None));
        let ending_slot = Arc::clone(&ending);
        thread::Builder::new()
            .name(format!("app-{addr}"))
            .spawn(move || {
                let _done = done_tx;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the server's runtime");
                tracing::subscriber::with_default(subscriber, || {
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .expect("hand the listener to tokio");
                        let shutdown = async move {
                            let _ = shutdown_rx.await;
                        };
                        tokio::select! {
                            ended = app::run(config, listener, shutdown) => {
                                let ended = ended.map_err(|err| format!("{err:#}"));
                                *ending_slot.lock().unwrap() = Some(ended);
                            }
                            _ = abort_rx => {}
                        }
                    });
                });
                // Dropping the runtime here cancels whatever app::run spawned.
            })
            .expect("spawn the server thread");
        App {
            endpoint: Endpoint::new(addr, env.channel_tls),
            _shutdown: shutdown_tx,
            abort: Some(abort_tx),
            ending,
            thread_done,
            logs,
        }
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr()
    }

    /// How to reach its gRPC listener.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A channel to the server (connects lazily).
    pub fn channel(&self) -> Channel {
        self.endpoint.channel()
    }

    /// A `user.v1.UserService` client.
    pub fn client(&self) -> UserServiceClient<Channel> {
        self.endpoint.client()
    }

    /// What `grpc.health.v1.Health/Check` answers for `service`.
    pub async fn try_health_of(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        self.endpoint.try_health_of(service).await
    }

    /// The health status of the whole server (`""`); panics if it cannot be
    /// asked.
    pub async fn health(&self) -> ServingStatus {
        self.endpoint.health().await
    }

    /// Polls the health check (of `""`) until it answers `want`; panics if
    /// `app::run` returns first.
    pub async fn wait_for_health(&self, want: ServingStatus) {
        let what = format!("user-service on {} reports {want:?}", self.addr());
        eventually(READY_TIMEOUT, &what, || async move {
            if let Some(ending) = self.ending() {
                panic!("app::run on {} ended early: {ending:?}", self.addr());
            }
            self.try_health_of("").await.ok() == Some(want)
        })
        .await;
    }

    /// How `app::run` ended, or `None` while it runs.
    pub fn ending(&self) -> Option<Ending> {
        self.ending.lock().unwrap().clone()
    }

    /// What the server logged so far.
    pub fn logs(&self) -> String {
        let log = fs::read_to_string(self.logs.path().join("app.log")).unwrap_or_default();
        format!(
            "--- user-service (in process) {} log ---\n{log}--- end of log ---",
            self.addr()
        )
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // At once, not gracefully: a graceful stop waits for the test's own
        // connections, whose tasks cannot run while this drop blocks them.
        if let Some(abort) = self.abort.take() {
            let _ = abort.send(());
        }
        let _ = self.thread_done.recv_timeout(STOP_TIMEOUT);
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The `Config` the binary would build from `env`: each variable becomes its
/// command-line flag (`REDIS_URL` -> `--redis-url`). The flags' environment
/// fallbacks are switched off, so the variables of the machine running the
/// tests change nothing (as `env_clear` does for a spawned binary).
fn config_from(env: &ServiceEnv) -> Config {
    let mut args = vec![
        "user-service".to_owned(),
        "--listen-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    // The listener is bound by the fixture; LISTEN_ADDR would name a second one.
    for (name, value) in env.vars.iter().filter(|(name, _)| *name != "LISTEN_ADDR") {
        let flag = match name.as_str() {
            "RUST_LOG" => "log-level".to_owned(),
            other => other.to_lowercase().replace('_', "-"),
        };
        args.push(format!("--{flag}"));
        args.push(value.clone());
    }
    let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
    let matches = command
        .try_get_matches_from(&args)
        .unwrap_or_else(|err| panic!("{args:?} are not the binary's flags: {err}"));
    let cli = Cli::from_arg_matches(&matches).expect("parsed flags fit the Cli");
    Config::from_args(&cli.serve).unwrap_or_else(|err| panic!("configuration refused: {err}"))
}
