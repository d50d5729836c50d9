//! `Load`: the `loadgen` binary driving a [`Service`](super::Service) in
//! the background with `--record`, and what it recorded: one line per call
//! (`id,method,code,start_unix_us,end_unix_us`) that the fault tests hold
//! against the moments they injected faults and against what Redis stores.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tempfile::TempDir;

use super::poll_until_blocking;

/// What to ask of `loadgen` (see `loadgen --help`).
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// `get`, `create` or `mix`.
    pub mode: &'static str,
    /// Callers calling at once.
    pub concurrency: usize,
    /// HTTP/2 connections they share.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Per-call deadline.
    pub deadline: Duration,
    /// Users created before a get/mix run.
    pub preload: u64,
    /// Codes that do not fail the run.
    pub allow: &'static str,
}

impl LoadSpec {
    /// CreateUser calls with unique ids.
    pub fn creates(duration: Duration) -> Self {
        Self {
            mode: "create",
            concurrency: 4,
            connections: 2,
            duration,
            deadline: Duration::from_secs(1),
            preload: 0,
            allow: "Unavailable,DeadlineExceeded,Cancelled",
        }
    }

    /// GetUser of `preload` users created first.
    pub fn gets(duration: Duration, preload: u64) -> Self {
        Self {
            mode: "get",
            preload,
            ..Self::creates(duration)
        }
    }

    /// Half GetUser, half CreateUser.
    pub fn mix(duration: Duration, preload: u64) -> Self {
        Self {
            mode: "mix",
            preload,
            ..Self::creates(duration)
        }
    }

    /// `callers` at once over `connections` connections.
    pub fn concurrency(mut self, callers: usize, connections: usize) -> Self {
        self.concurrency = callers;
        self.connections = connections;
        self
    }

    /// Per-call deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Codes (comma-separated) that do not fail the run.
    pub fn allow(mut self, codes: &'static str) -> Self {
        self.allow = codes;
        self
    }
}

/// A running `loadgen`.
pub struct Load {
    child: Option<Child>,
    dir: TempDir,
    limit: Duration,
}

impl Load {
    /// Starts `loadgen` against `addr`; ids are `<prefix>-<n>` (creates) and
    /// `<prefix>-p<n>` (preloaded users).
    pub fn start(addr: SocketAddr, prefix: &str, spec: &LoadSpec) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("loadgen-")
            .tempdir()
            .expect("create a temp dir for loadgen");
        let stdout = fs::File::create(dir.path().join("stdout.log")).expect("create stdout.log");
        let stderr = fs::File::create(dir.path().join("stderr.log")).expect("create stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .env_clear()
            .args(["--addr", &addr.to_string()])
            .args(["--mode", spec.mode])
            .args(["--concurrency", &spec.concurrency.to_string()])
            .args(["--connections", &spec.connections.to_string()])
            .args(["--duration", &spec.duration.as_secs_f64().to_string()])
            .args(["--deadline-ms", &spec.deadline.as_millis().to_string()])
            .args(["--preload", &spec.preload.to_string()])
            .args(["--id-prefix", prefix])
            .args(["--allow", spec.allow])
            .arg("--record")
            .arg(dir.path().join("record.csv"))
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn loadgen");
        // Preloading runs before the clock starts; allow for it and a slow machine.
        let limit = spec.duration + Duration::from_secs(60);
        Load {
            child: Some(child),
            dir,
            limit,
        }
    }

    /// Waits for `loadgen` to finish and reads its record and summary.
    pub fn finish(mut self) -> LoadReport {
        let mut child = self.child.take().expect("loadgen is running");
        let exited = poll_until_blocking(self.limit, || {
            child
                .try_wait()
                .expect("ask whether loadgen exited")
                .ok_or(())
        });
        let Ok(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "loadgen did not finish within {:?}:\n{}",
                self.limit,
                self.output()
            );
        };
        let output = self.output();
        let summary_line = fs::read_to_string(self.dir.path().join("stdout.log"))
            .unwrap_or_default()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        // The summary is printed last: its absence means loadgen did not finish its run.
        serde_json::from_str::<serde_json::Value>(&summary_line)
            .unwrap_or_else(|err| panic!("loadgen summary is not JSON ({err}):\n{output}"));
        let record = fs::read_to_string(self.dir.path().join("record.csv"))
            .unwrap_or_else(|err| panic!("read loadgen's record ({err}):\n{output}"));
        let calls = record
            .lines()
            .skip(1)
            .map(|line| CallRecord::parse(line).unwrap_or_else(|| panic!("bad record {line:?}")))
            .collect();
        LoadReport {
            status,
            calls,
            output,
        }
    }

    fn output(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- loadgen stdout ---\n{}--- loadgen stderr ---\n{}--- end ---",
            read("stdout.log"),
            read("stderr.log")
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One recorded call.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// The user id the call named.
    pub id: String,
    /// CreateUser (else GetUser).
    pub create: bool,
    /// The code's name as tonic prints it (`Ok`, `Unavailable`, ...).
    pub code: String,
    /// Wall-clock microseconds since the epoch.
    pub start_us: u64,
    /// When the answer arrived (Unix microseconds).
    pub end_us: u64,
}

impl CallRecord {
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(',');
        let id = fields.next()?.to_owned();
        let create = match fields.next()? {
            "CreateUser" => true,
            "GetUser" => false,
            _ => return None,
        };
        let code = fields.next()?.to_owned();
        let start_us = fields.next()?.parse().ok()?;
        let end_us = fields.next()?.parse().ok()?;
        Some(Self {
            id,
            create,
            code,
            start_us,
            end_us,
        })
    }

    /// Whether the call answered OK.
    pub fn ok(&self) -> bool {
        self.code == "Ok"
    }

    /// How long the caller waited for the answer.
    pub fn took(&self) -> Duration {
        Duration::from_micros(self.end_us.saturating_sub(self.start_us))
    }

    /// Started at or after `at`.
    pub fn started_after(&self, at: u64) -> bool {
        self.start_us >= at
    }
}

/// What a finished `loadgen` run did.
pub struct LoadReport {
    /// How `loadgen` exited.
    pub status: ExitStatus,
    /// Every call it recorded.
    pub calls: Vec<CallRecord>,
    /// loadgen's stdout and stderr, for failure messages.
    pub output: String,
}

impl LoadReport {
    /// Ids of the creates answered OK: what the service promised is stored.
    pub fn acknowledged_creates(&self) -> BTreeSet<String> {
        self.calls
            .iter()
            .filter(|call| call.create && call.ok())
            .map(|call| call.id.clone())
            .collect()
    }

    /// Ids of the creates answered with an error (their write may or may not have happened).
    pub fn unacknowledged_creates(&self) -> BTreeSet<String> {
        self.calls
            .iter()
            .filter(|call| call.create && !call.ok())
            .map(|call| call.id.clone())
            .collect()
    }

    /// Calls per code.
    pub fn codes(&self) -> BTreeMap<String, usize> {
        let mut codes = BTreeMap::new();
        for call in &self.calls {
            *codes.entry(call.code.clone()).or_default() += 1;
        }
        codes
    }

    /// The earliest answer at or after `at` that satisfies `pred`.
    pub fn first_end_after(&self, at: u64, pred: impl Fn(&CallRecord) -> bool) -> Option<u64> {
        self.calls
            .iter()
            .filter(|call| call.end_us >= at && pred(call))
            .map(|call| call.end_us)
            .min()
    }
}

/// Wall-clock microseconds since the epoch, the clock of the record.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// `b - a` as a duration (0 when `b` is earlier).
pub fn between(a: u64, b: u64) -> Duration {
    Duration::from_micros(b.saturating_sub(a))
}
