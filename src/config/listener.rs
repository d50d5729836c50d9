//! The listener's variables (MAX_CONCURRENT_STREAMS, MAX_CONNECTIONS, the
//! timeouts, ...): raw values as clap collects them, turned into
//! [`ListenerLimits`]. The defaults are `ListenerLimits::default()`, so
//! they are written in one place.

use std::time::Duration;

use clap::Args;

use crate::listener::ListenerLimits;

fn defaults() -> ListenerLimits {
    ListenerLimits::default()
}

/// Raw listener settings as given; see docs/limits.md for each.
#[derive(Debug, Args)]
pub struct ListenerArgs {
    /// Concurrent streams per HTTP/2 connection, advertised in SETTINGS (1-1000).
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = defaults().max_concurrent_streams.to_string())]
    pub max_concurrent_streams: String,
    /// Open connections at most; further ones wait in the kernel's backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = defaults().max_connections.to_string())]
    pub max_connections: String,
    /// Seconds a new connection has to send the HTTP/2 preface (or finish TLS).
    #[arg(long, env = "HANDSHAKE_TIMEOUT_SECONDS", default_value_t = defaults().handshake_timeout.as_secs().to_string())]
    pub handshake_timeout_seconds: String,
    /// Seconds a connection may stay open with no call in flight.
    #[arg(long, env = "IDLE_TIMEOUT_SECONDS", default_value_t = defaults().idle_timeout.as_secs().to_string())]
    pub idle_timeout_seconds: String,
    /// Seconds between HTTP/2 keepalive PINGs.
    #[arg(long, env = "KEEPALIVE_INTERVAL_SECONDS", default_value_t = defaults().keepalive_interval.as_secs().to_string())]
    pub keepalive_interval_seconds: String,
    /// Seconds a keepalive PING may go unanswered before the connection is closed.
    #[arg(long, env = "KEEPALIVE_TIMEOUT_SECONDS", default_value_t = defaults().keepalive_timeout.as_secs().to_string())]
    pub keepalive_timeout_seconds: String,
    /// Seconds after which a connection gets GOAWAY.
    #[arg(long, env = "MAX_CONNECTION_AGE_SECONDS", default_value_t = defaults().max_connection_age.as_secs().to_string())]
    pub max_connection_age_seconds: String,
    /// Seconds after GOAWAY before the connection is closed.
    #[arg(long, env = "MAX_CONNECTION_AGE_GRACE_SECONDS", default_value_t = defaults().max_connection_age_grace.as_secs().to_string())]
    pub max_connection_age_grace_seconds: String,
    /// Largest header list of one request, in bytes (as HTTP/2 counts it).
    #[arg(long, env = "MAX_HEADER_LIST_BYTES", default_value_t = defaults().max_header_list_bytes.to_string())]
    pub max_header_list_bytes: String,
    /// Streams a caller may reset before the service accepted them; one more gets GOAWAY.
    #[arg(long, env = "MAX_PENDING_RESET_STREAMS", default_value_t = defaults().max_pending_reset_streams.to_string())]
    pub max_pending_reset_streams: String,
    /// Seconds a request body may take to arrive in full.
    #[arg(long, env = "REQUEST_BODY_TIMEOUT_SECONDS", default_value_t = defaults().request_body_timeout.as_secs().to_string())]
    pub request_body_timeout_seconds: String,
}

/// The variable that sets each [`ListenerLimits`] field.
fn variable(field: &str) -> &'static str {
    match field {
        "max_concurrent_streams" => "MAX_CONCURRENT_STREAMS",
        "max_connections" => "MAX_CONNECTIONS",
        "handshake_timeout" => "HANDSHAKE_TIMEOUT_SECONDS",
        "idle_timeout" => "IDLE_TIMEOUT_SECONDS",
        "keepalive_interval" => "KEEPALIVE_INTERVAL_SECONDS",
        "keepalive_timeout" => "KEEPALIVE_TIMEOUT_SECONDS",
        "max_connection_age" => "MAX_CONNECTION_AGE_SECONDS",
        "max_connection_age_grace" => "MAX_CONNECTION_AGE_GRACE_SECONDS",
        "max_header_list_bytes" => "MAX_HEADER_LIST_BYTES",
        "max_pending_reset_streams" => "MAX_PENDING_RESET_STREAMS",
        _ => "REQUEST_BODY_TIMEOUT_SECONDS",
    }
}

/// Parses `raw` as a whole number, or records why not.
fn number<T: std::str::FromStr>(var: &str, raw: &str, problems: &mut Vec<String>) -> Option<T> {
    let parsed = raw.trim().parse().ok();
    if parsed.is_none() {
        problems.push(format!("{var}: must be a whole number (got {raw:?})"));
    }
    parsed
}

impl ListenerArgs {
    /// The limits, or one line per problem ("VARIABLE: what is wrong").
    pub fn limits(&self) -> Result<ListenerLimits, Vec<String>> {
        let mut p = Vec::new();
        let secs =
            |var, raw: &str, p: &mut Vec<String>| number(var, raw, p).map(Duration::from_secs);
        // Every value is parsed before any is used, so all problems are reported at once.
        let streams = number(
            "MAX_CONCURRENT_STREAMS",
            &self.max_concurrent_streams,
            &mut p,
        );
        let connections = number("MAX_CONNECTIONS", &self.max_connections, &mut p);
        let handshake = secs(
            "HANDSHAKE_TIMEOUT_SECONDS",
            &self.handshake_timeout_seconds,
            &mut p,
        );
        let idle = secs("IDLE_TIMEOUT_SECONDS", &self.idle_timeout_seconds, &mut p);
        let ping = secs(
            "KEEPALIVE_INTERVAL_SECONDS",
            &self.keepalive_interval_seconds,
            &mut p,
        );
        let ping_timeout = secs(
            "KEEPALIVE_TIMEOUT_SECONDS",
            &self.keepalive_timeout_seconds,
            &mut p,
        );
        let age = secs(
            "MAX_CONNECTION_AGE_SECONDS",
            &self.max_connection_age_seconds,
            &mut p,
        );
        let grace = secs(
            "MAX_CONNECTION_AGE_GRACE_SECONDS",
            &self.max_connection_age_grace_seconds,
            &mut p,
        );
        let header_list = number("MAX_HEADER_LIST_BYTES", &self.max_header_list_bytes, &mut p);
        let resets = number(
            "MAX_PENDING_RESET_STREAMS",
            &self.max_pending_reset_streams,
            &mut p,
        );
        let body = secs(
            "REQUEST_BODY_TIMEOUT_SECONDS",
            &self.request_body_timeout_seconds,
            &mut p,
        );
        let (
            Some(max_concurrent_streams),
            Some(max_connections),
            Some(handshake_timeout),
            Some(idle_timeout),
            Some(keepalive_interval),
            Some(keepalive_timeout),
            Some(max_connection_age),
            Some(max_connection_age_grace),
            Some(max_header_list_bytes),
            Some(max_pending_reset_streams),
            Some(request_body_timeout),
        ) = (
            streams,
            connections,
            handshake,
            idle,
            ping,
            ping_timeout,
            age,
            grace,
            header_list,
            resets,
            body,
        )
        else {
            return Err(p);
        };
        let limits = ListenerLimits {
            max_concurrent_streams,
            max_connections,
            handshake_timeout,
            idle_timeout,
            keepalive_interval,
            keepalive_timeout,
            max_connection_age,
            max_connection_age_grace,
            max_header_list_bytes,
            max_pending_reset_streams,
            request_body_timeout,
        };
        let invalid: Vec<String> = limits
            .problems()
            .into_iter()
            .map(|problem| format!("{}: {}", variable(problem.field), problem.reason))
            .collect();
        if invalid.is_empty() {
            Ok(limits)
        } else {
            Err(invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        listener: ListenerArgs,
    }

    fn limits(args: &[&str]) -> Result<ListenerLimits, Vec<String>> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("arguments parse");
        cli.listener.limits()
    }

    #[test]
    fn no_flags_give_the_defaults() {
        assert_eq!(limits(&[]), Ok(ListenerLimits::default()));
    }

    #[test]
    fn flags_set_each_limit() {
        let got = limits(&[
            "--max-concurrent-streams=50",
            "--max-connections=7",
            "--handshake-timeout-seconds=1",
            "--idle-timeout-seconds=2",
            "--keepalive-interval-seconds=3",
            "--keepalive-timeout-seconds=4",
            "--max-connection-age-seconds=5",
            "--max-connection-age-grace-seconds=0",
            "--max-header-list-bytes=8192",
            "--max-pending-reset-streams=9",
            "--request-body-timeout-seconds=11",
        ])
        .unwrap();
        assert_eq!(
            got,
            ListenerLimits {
                max_concurrent_streams: 50,
                max_connections: 7,
                handshake_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(2),
                keepalive_interval: Duration::from_secs(3),
                keepalive_timeout: Duration::from_secs(4),
                max_connection_age: Duration::from_secs(5),
                max_connection_age_grace: Duration::ZERO,
                max_header_list_bytes: 8192,
                max_pending_reset_streams: 9,
                request_body_timeout: Duration::from_secs(11),
            }
        );
    }

    #[test]
    fn every_problem_names_its_variable() {
        let problems =
            limits(&["--max-connections=many", "--idle-timeout-seconds=-1"]).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("MAX_CONNECTIONS:"), "{problems:?}");
        assert!(
            problems[1].starts_with("IDLE_TIMEOUT_SECONDS:"),
            "{problems:?}"
        );
        let problems = limits(&[
            "--max-concurrent-streams=5000",
            "--handshake-timeout-seconds=0",
        ])
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "MAX_CONCURRENT_STREAMS: must be from 1 to 1000",
                "HANDSHAKE_TIMEOUT_SECONDS: must be more than 0 seconds"
            ]
        );
    }
}
