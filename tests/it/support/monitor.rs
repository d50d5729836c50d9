//! `Monitor`: a `redis-cli MONITOR` process recording every command a Redis
//! server receives, to check what the service sends (one `SET ... NX EX`,
//! nothing at all for invalid input).

use std::{
    fs,
    process::{Child, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use user_service::store::READINESS_PROBE_KEY;

use super::{RedisServer, eventually_ok_blocking};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-cli MONITOR` on one server; see the module docs.
pub struct Monitor<'a> {
    redis: &'a RedisServer,
    child: Child,
    dir: TempDir,
}

impl<'a> Monitor<'a> {
    /// Starts monitoring and waits until Redis confirms it (`OK`).
    pub fn start(redis: &'a RedisServer) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("monitor-")
            .tempdir()
            .expect("create a temp dir for MONITOR output");
        let out = fs::File::create(dir.path().join("monitor.log")).expect("create monitor.log");
        let child = redis
            .redis_cli()
            .arg("MONITOR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-cli MONITOR");
        let monitor = Monitor { redis, child, dir };
        monitor.wait_for_line("OK");
        monitor
    }

    /// Every command received since monitoring started, as MONITOR prints
    /// them (`"SET" "user:ada" "{...}" "NX" "EX" "60"`), without timestamps.
    /// Sends a marker first and waits for it, so nothing is still in flight.
    pub fn commands(&self) -> Vec<String> {
        let marker = format!("monitor-marker-{}", self.child.id());
        self.redis.cli(&["ECHO", &marker]);
        self.wait_for_line(&marker);
        self.lines()
            .into_iter()
            .skip_while(|line| line != "OK")
            .skip(1)
            .filter_map(|line| line.split_once("] ").map(|(_, cmd)| cmd.to_owned()))
            .filter(|cmd| !cmd.contains(&marker))
            // The service's readiness check (a SET ... XX that writes nothing).
            .filter(|cmd| !cmd.contains(READINESS_PROBE_KEY))
            .collect()
    }

    /// The commands that name a `user:` key.
    pub fn user_key_commands(&self) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|cmd| cmd.contains("\"user:"))
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("monitor.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn wait_for_line(&self, needle: &str) {
        let what = format!("MONITOR prints {needle:?}");
        eventually_ok_blocking(TIMEOUT, &what, || {
            let lines = self.lines();
            if lines.iter().any(|line| line.contains(needle)) {
                Ok(())
            } else {
                Err(lines)
            }
        });
    }
}

impl Drop for Monitor<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
