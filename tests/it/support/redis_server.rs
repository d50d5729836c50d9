//! `RedisServer`: a real `redis-server` process on a free loopback port, in its
//! own temporary directory, with persistence off. It is killed when dropped;
//! never keep one in a `static` (statics are not dropped).
//!
//! By default a server has the service's ACL user with the deployed rules
//! (see [`acl`](super::acl)) and a `default` user with [`ADMIN_PASSWORD`] for
//! the fixtures' own inspection and fault commands; when it is dropped at the
//! end of a passing test, its `ACL LOG` must be empty.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;

use super::{
    ServerTls,
    acl::{SERVICE_PASSWORD, SERVICE_USER, service_user_line},
    free_port, poll_until_blocking,
    process::run_with_timeout,
    tools,
};

/// Password of the `default` user (every right) on servers with ACL users:
/// the fixture inspects keys and injects faults as that user while the
/// service logs in as its own.
pub const ADMIN_PASSWORD: &str = "fixture-admin-pw";

const START_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start a [`RedisServer`].
#[derive(Default)]
pub struct RedisServerBuilder {
    port: Option<u16>,
    requirepass: Option<String>,
    acl_users: Vec<String>,
    cluster_node: bool,
    data_dir: Option<PathBuf>,
    tls: Option<ServerTls>,
    keyspace_events: Option<String>,
}

impl RedisServerBuilder {
    /// Listen on this port instead of a fresh free one (to bring a server
    /// back where a service expects it).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Publish these keyspace event classes instead of the deployed `Kg$xe`
    /// (`""`: none), to test a Redis that lacks them.
    pub fn keyspace_events(mut self, classes: &str) -> Self {
        self.keyspace_events = Some(classes.to_owned());
        self
    }

    /// Protect the `default` user with this password (`--requirepass`)
    /// instead of the ACL file: the server has no service user, and the
    /// service must log in as `default`.
    pub fn requirepass(mut self, password: &str) -> Self {
        self.requirepass = Some(password.to_owned());
        self
    }

    /// Add a line such as `user svc on >pw ~user:* -@all +get` to the ACL
    /// file, besides the `default` and the service users.
    pub fn acl_user(mut self, rule: &str) -> Self {
        self.acl_users.push(rule.to_owned());
        self
    }

    /// Keep data in `dir` with an append-only file synced on every write
    /// (`appendfsync always`), so that a server restarted on the same dir
    /// after SIGKILL has every write it acknowledged.
    pub fn durable_in(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Start as a cluster node, with its bus on a second free port (the
    /// default port+10000 can clash with another test's server).
    pub fn cluster_node(mut self) -> Self {
        self.cluster_node = true;
        self
    }

    /// Listen with TLS only (`--port 0 --tls-port <port>`); cluster nodes
    /// also speak TLS on their bus and replication links.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Starts the server and waits until it answers PING.
    pub fn start(self) -> RedisServer {
        tools::require_redis();
        // A free port can be taken by someone else before redis-server binds
        // it; then try another one (unless the caller asked for this port).
        let attempts = if self.port.is_some() { 1 } else { 5 };
        for _ in 0..attempts {
            let mut server = self.spawn();
            match server.wait_until_ready() {
                Ok(()) => return server,
                Err(_) if self.port.is_none() && server.log().contains("already in use") => {}
                Err(err) => {
                    let (port, log) = (server.port, server.log());
                    drop(server);
                    panic!("redis-server on port {port} did not start: {err}\n{log}")
                }
            }
        }
        panic!("redis-server found no free port in {attempts} attempts")
    }

    fn spawn(&self) -> RedisServer {
        let port = self.port.unwrap_or_else(free_port);
        let dir = tempfile::Builder::new()
            .prefix("redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // Fault tests freeze the server with `DEBUG SLEEP` (refused by default since 7.0).
            .args(["--enable-debug-command", "local"])
            // A primary waits 5 s (the default) for more replicas before a
            // diskless full sync; every replica and cluster test paid it.
            .args(["--repl-diskless-sync-delay", "0"])
            // The keyspace events WatchUsers needs, as every deploy/ topology sets them.
            .args([
                "--notify-keyspace-events",
                self.keyspace_events.as_deref().unwrap_or("Kg$xe"),
            ])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"));
        if let Some(data_dir) = &self.data_dir {
            // Later arguments win over the defaults above.
            command.arg("--dir").arg(data_dir).args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]);
        }

        let (password, service_user) = match &self.requirepass {
            Some(password) => {
                command.args(["--requirepass", password]);
                (password.clone(), false)
            }
            None => {
                let acl_file = dir.path().join("users.acl");
                let mut rules = format!("user default on >{ADMIN_PASSWORD} ~* &* +@all\n");
                rules.push_str(&service_user_line());
                rules.push('\n');
                for rule in &self.acl_users {
                    rules.push_str(rule);
                    rules.push('\n');
                }
                fs::write(&acl_file, rules).expect("write the ACL file");
                command.arg("--aclfile").arg(acl_file);
                (ADMIN_PASSWORD.to_owned(), true)
            }
        };
        // A replica (REPLICAOF, or a cluster replica) must log in to its
        // primary, whose `default` user has a password.
        command
            .args(["--masteruser", "default"])
            .args(["--masterauth", &password]);

        if self.cluster_node {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--cluster-port", &free_port().to_string()]);
        }

        if let Some(tls) = &self.tls {
            // Later arguments win: the plain port closes, the TLS port takes its number.
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.server.cert)
                .arg("--tls-key-file")
                .arg(&tls.server.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", tls.auth_clients])
                .args(["--tls-replication", "yes"]);
            if self.cluster_node {
                command.args(["--tls-cluster", "yes"]);
            }
        }

        // Errors before the log file is open (a bad argument) go to stdout.
        let early = fs::File::create(dir.path().join("stdout.log")).expect("create stdout.log");
        let child = command
            .stdin(Stdio::null())
            .stdout(early.try_clone().expect("clone file handle"))
            .stderr(early)
            .spawn()
            .expect("spawn redis-server");
        RedisServer {
            child,
            port,
            password,
            service_user,
            dir,
            tls: self.tls.clone(),
        }
    }
}

/// A running `redis-server`; see the module docs.
pub struct RedisServer {
    child: Child,
    port: u16,
    /// Password of the `default` user.
    password: String,
    /// True if the server has the service's ACL user.
    service_user: bool,
    dir: TempDir,
    tls: Option<ServerTls>,
}

impl RedisServer {
    /// A server with the service's ACL user and persistence off.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for a server with other settings.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as in `REDIS_CLUSTER_NODES`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` with TLS), without
    /// credentials (the service gets those from its own variables).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The TLS settings it was started with, if any.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// The process id of `redis-server`.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn stop(&self) {
        kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP redis-server");
    }

    /// Thaws a server frozen by [`stop`](Self::stop) (SIGCONT).
    pub fn cont(&self) {
        kill(self.pid(), Signal::SIGCONT).expect("SIGCONT redis-server");
    }

    /// A client logged in as the `default` user, for inspecting what the
    /// service stored.
    pub fn client(&self) -> redis::Client {
        self.client_as("default", &self.password)
    }

    /// A client logged in as `user` with `password`, to see what that ACL
    /// user may do.
    pub fn client_as(&self, user: &str, password: &str) -> redis::Client {
        let info =
            redis::IntoConnectionInfo::into_connection_info(self.url()).expect("valid redis URL");
        // Without CLIENT SETINFO, which Redis 7.0 answers with an error: the
        // tests count error replies to see that the service sends none.
        let settings = info
            .redis_settings()
            .clone()
            .set_username(user)
            .set_password(password)
            .set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        match &self.tls {
            Some(tls) => redis::Client::build_with_tls(info, tls.certificates()),
            None => redis::Client::open(info),
        }
        .expect("valid connection info")
    }

    /// The service user's name and password, if the server has that user.
    pub fn service_credentials(&self) -> Option<(&'static str, &'static str)> {
        self.service_user
            .then_some((SERVICE_USER, SERVICE_PASSWORD))
    }

    /// Runs one command as the `default` user; panics if Redis refuses it.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut connection = self.connection().expect("connect to redis-server");
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
            .query(&mut connection)
            .unwrap_or_else(|err| panic!("redis {args:?} on port {}: {err}", self.port))
    }

    /// The stored value of `key` (`GET`).
    pub fn get(&self, key: &str) -> Option<String> {
        self.query(&["GET", key])
    }

    /// Seconds until `key` expires (`TTL`): -1 without expiry, -2 if absent.
    pub fn ttl(&self, key: &str) -> i64 {
        self.query(&["TTL", key])
    }

    /// Number of keys (`DBSIZE`).
    pub fn dbsize(&self) -> i64 {
        self.query(&["DBSIZE"])
    }

    /// Keys matching `pattern` (`KEYS`; fine for a test-sized database).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.query(&["KEYS", pattern])
    }

    /// Password of the `default` user.
    pub fn default_password(&self) -> &str {
        &self.password
    }

    /// A `redis-cli` command for this server, logged in as the `default`
    /// user; add the arguments (a command, `MONITOR`, `--cluster ...`).
    pub fn redis_cli(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "--user",
                "default",
                "-a",
                &self.password,
                "--no-auth-warning",
            ]);
        if let Some(tls) = &self.tls {
            command.args(tls.cli_args());
        }
        command
    }

    /// Runs `redis-cli` against this server, as an operator would, and
    /// returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = self.redis_cli();
        let output = run_with_timeout(command.args(args), IO_TIMEOUT);
        assert!(
            output.status.success(),
            "redis-cli {args:?} failed: {}",
            output.combined()
        );
        output.stdout
    }

    /// Commands and logins Redis refused because of ACL rules (`ACL LOG`),
    /// as "username: reason object" lines.
    pub fn acl_denials(&self) -> Vec<String> {
        self.try_acl_denials()
            .unwrap_or_else(|err| panic!("ACL LOG on port {}: {err}", self.port))
    }

    /// [`acl_denials`](Self::acl_denials), then `ACL LOG RESET`: for a test
    /// that provokes a denial on purpose, so that the check when the server
    /// is dropped sees only what came after.
    pub fn take_acl_denials(&self) -> Vec<String> {
        let denials = self.acl_denials();
        let _: String = self.query(&["ACL", "LOG", "RESET"]);
        denials
    }

    fn try_acl_denials(&self) -> redis::RedisResult<Vec<String>> {
        let entries: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
            .arg("LOG")
            .query(&mut self.connection()?)?;
        let text = |entry: &std::collections::HashMap<String, redis::Value>, field: &str| {
            entry
                .get(field)
                .cloned()
                .and_then(|value| redis::from_redis_value::<String>(value).ok())
                .unwrap_or_default()
        };
        Ok(entries
            .iter()
            .map(|entry| {
                format!(
                    "{}: {} {}",
                    text(entry, "username"),
                    text(entry, "reason"),
                    text(entry, "object")
                )
            })
            .collect())
    }

    /// Why the server's `ACL LOG` fails the test, if it does: it holds
    /// entries, or it cannot be read from a server that still runs.
    fn acl_log_problem(&mut self) -> Option<String> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return None;
        }
        match self.try_acl_denials() {
            Ok(denials) if denials.is_empty() => None,
            Ok(denials) => Some(format!(
                "redis-server on port {} refused commands or logins (ACL LOG); a test \
                 that provokes this must check and clear it with take_acl_denials():\n  {}",
                self.port,
                denials.join("\n  ")
            )),
            Err(err) => Some(format!(
                "cannot read ACL LOG of redis-server on port {} (left frozen?): {err}",
                self.port
            )),
        }
    }

    /// The server's log file (and anything it printed before opening it).
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.path(name)).unwrap_or_default();
        format!(
            "--- redis-server :{} log ---\n{}{}--- end of log ---",
            self.port,
            read("stdout.log"),
            read("redis.log")
        )
    }

    /// A file in the server's own temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A blocking connection as the `default` user, with I/O timeouts.
    pub(crate) fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let connection = self.client().get_connection_with_timeout(IO_TIMEOUT)?;
        connection.set_read_timeout(Some(IO_TIMEOUT))?;
        connection.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(connection)
    }

    /// Waits for a PONG; an exited server is an error at once, not after
    /// the timeout.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let polled = poll_until_blocking(START_TIMEOUT, || {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(Err(format!("redis-server exited with {status}"))),
                Err(err) => return Ok(Err(err.to_string())),
                Ok(None) => {}
            }
            match self
                .connection()
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
            {
                Ok(pong) if pong == "PONG" => Ok(Ok(())),
                Ok(other) => Err(format!("PING answered {other:?}")),
                Err(err) => Err(err.to_string()),
            }
        });
        polled.unwrap_or_else(|last_error| {
            Err(format!(
                "no PONG within {START_TIMEOUT:?} (last error: {last_error})"
            ))
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A test that already fails needs no second panic (it would abort).
        let problem = if thread::panicking() {
            None
        } else {
            self.acl_log_problem()
        };
        // SIGKILL ends a SIGSTOPped server too. std does not signal a child
        // it has already reaped, so a recycled pid is never hit.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("{}", self.log());
        }
        if let Some(problem) = problem {
            panic!("{problem}");
        }
    }
}
