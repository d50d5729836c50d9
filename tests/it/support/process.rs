//! Running a short-lived subprocess (grpcurl, redis-cli, the `health`
//! subcommand) with an upper bound on how long it may take.

use std::{
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// What a finished subprocess printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for assertions that do not care which.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A successful grpcurl call's JSON output, parsed; panics with
    /// everything it printed if the call failed.
    pub fn grpcurl_json(&self) -> serde_json::Value {
        assert!(self.status.success(), "grpcurl failed: {}", self.combined());
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("grpcurl printed no JSON ({err}): {}", self.stdout))
    }
}

/// Runs `command` to completion; kills it and panics if it takes longer than
/// `timeout` (a hung tool must fail the test, not hang the suite).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {description}: {err}"));
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => Output {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Ok(Err(err)) => panic!("wait for {description}: {err}"),
        Err(_) => {
            // The waiting thread still owns the child and reaps it once killed.
            let _ = kill(pid, Signal::SIGKILL);
            panic!("{description} did not finish within {timeout:?}")
        }
    }
}
