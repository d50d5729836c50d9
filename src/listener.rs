//! The limits of the gRPC listener and where each is enforced: HTTP/2
//! settings go to tonic's `Server` builder ([`ListenerLimits::configure`]),
//! the rest is built around the accepted sockets (`accept`: connection
//! limit, accept back-off, TLS handshakes (`tls`); `conn`: handshake, idle
//! and age deadlines) and
//! around each request (`layer`: only gRPC served as gRPC, request body
//! deadline and per-connection body budget; `shape`: the checks themselves).
//! It holds no configuration parsing: `config` fills [`ListenerLimits`].

pub mod accept;
pub mod conn;
pub mod layer;
pub mod shape;
pub mod tls;

use std::time::Duration;

use tonic::transport::Server;

pub use accept::incoming;
pub use layer::ListenerLayer;

/// Largest allowed `MAX_CONCURRENT_STREAMS`: beyond it, one connection's
/// headers and bodies alone could pass the memory bound in docs/limits.md.
pub const STREAMS_CEILING: u32 = 1000;

/// Flow-control window of one stream: what a caller may send on a stream
/// before the service has read it. 1 MiB keeps a 2 MiB message to two
/// round trips on a distant link.
pub const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;

/// Flow-control window of a connection: h2 buffers at most this much body
/// data that no call has read yet, over all of a connection's streams.
pub const CONNECTION_WINDOW_BYTES: u32 = 2 * 1024 * 1024;

/// Largest HTTP/2 frame the service accepts (the protocol's minimum and
/// h2's default, pinned here rather than left to the library).
pub const MAX_FRAME_BYTES: u32 = 16 * 1024;

/// Streams the service may reset itself (for a malformed request, say)
/// before it answers the connection with GOAWAY; hyper's default, pinned.
pub const MAX_LOCAL_RESET_STREAMS: usize = 1024;

/// Request body bytes that one connection's calls may hold at once before
/// further data fails the call with RESOURCE_EXHAUSTED. Without it, 200
/// streams each sending a 2 MiB message held 417 MB (tests/it/attacks.rs,
/// body flood); with 16 MiB, 8 messages at the 2 MiB limit still fit.
pub const BODY_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// The listener's limits; each is a configuration value (docs/limits.md
/// lists the variable, its default and what hitting it looks like).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Concurrent streams per connection, advertised in SETTINGS.
    pub max_concurrent_streams: u32,
    /// Open connections; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time a new connection has to send the HTTP/2 preface (plaintext) or
    /// finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection may stay open with no call in flight.
    pub idle_timeout: Duration,
    /// Interval between the service's HTTP/2 keepalive PINGs.
    pub keepalive_interval: Duration,
    /// Time a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Age at which a connection is sent GOAWAY (callers reconnect, which
    /// spreads them over new instances behind a balancer).
    pub max_connection_age: Duration,
    /// Time after GOAWAY for calls in flight to finish before the close.
    pub max_connection_age_grace: Duration,
    /// Largest header list (decoded, as HTTP/2 counts it) of one request.
    pub max_header_list_bytes: u32,
    /// Streams a caller may open and reset before the service accepted
    /// them; one more is answered with GOAWAY (rapid reset).
    pub max_pending_reset_streams: usize,
    /// Time a call's request body may take to arrive in full.
    pub request_body_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_concurrent_streams: 200,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(30 * 60),
            max_connection_age_grace: Duration::from_secs(30),
            max_header_list_bytes: 16 * 1024,
            max_pending_reset_streams: 20,
            request_body_timeout: Duration::from_secs(10),
        }
    }
}

/// A limit that cannot work as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LimitError {
    /// The [`ListenerLimits`] field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ListenerLimits {
    /// Every limit that cannot work: zero counts and durations (a zero
    /// would refuse everything or disable the protection), streams above
    /// [`STREAMS_CEILING`], a header list too small for gRPC's own headers.
    pub fn problems(&self) -> Vec<LimitError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, field: &'static str, reason: &str| {
            if !ok {
                problems.push(LimitError {
                    field,
                    reason: reason.to_owned(),
                });
            }
        };
        check(
            (1..=STREAMS_CEILING).contains(&self.max_concurrent_streams),
            "max_concurrent_streams",
            &format!("must be from 1 to {STREAMS_CEILING}"),
        );
        check(
            self.max_connections >= 1,
            "max_connections",
            "must be at least 1",
        );
        check(
            self.max_header_list_bytes >= 1024,
            "max_header_list_bytes",
            "must be at least 1024 (gRPC's own headers need a few hundred bytes)",
        );
        check(
            self.max_pending_reset_streams >= 1,
            "max_pending_reset_streams",
            "must be at least 1",
        );
        for (field, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("max_connection_age", self.max_connection_age),
            ("request_body_timeout", self.request_body_timeout),
        ] {
            check(!value.is_zero(), field, "must be more than 0 seconds");
        }
        problems
    }

    /// Sets every HTTP/2 limit on tonic's builder explicitly, so that no
    /// library default decides them (tonic's default advertises no stream
    /// limit at all). Connection age here only sends GOAWAY: tonic skips
    /// the GOAWAY when a grace is also set, so `conn` closes the socket
    /// once the grace is over.
    pub fn configure<L>(&self, server: Server<L>) -> Server<L> {
        server
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_header_list_size(self.max_header_list_bytes)
            .http2_max_pending_accept_reset_streams(Some(self.max_pending_reset_streams))
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_RESET_STREAMS))
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_connection_age(self.max_connection_age)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            // Adaptive windows would grow past the bound stated above.
            .http2_adaptive_window(Some(false))
            .max_frame_size(MAX_FRAME_BYTES)
    }

    /// The most memory one connection's traffic can hold in the service
    /// by these settings (docs/limits.md derives it): header lists of
    /// every stream, body data h2 buffered but no call read yet, body
    /// data calls hold while decoding, and a fixed allowance per stream
    /// for its task, buffers and decoded message.
    pub fn per_connection_bound_bytes(&self) -> u64 {
        /// Task, h2 stream state, hyper send buffer share, and a decoded
        /// small request: measured well under this (docs/limits.md).
        const PER_STREAM_OVERHEAD: u64 = 64 * 1024;
        let streams = u64::from(self.max_concurrent_streams);
        streams * (u64::from(self.max_header_list_bytes) + PER_STREAM_OVERHEAD)
            + u64::from(CONNECTION_WINDOW_BYTES)
            + BODY_BUDGET_BYTES as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_values_and_valid() {
        let limits = ListenerLimits::default();
        assert_eq!(limits.max_concurrent_streams, 200);
        assert_eq!(limits.max_connections, 10_000);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(300));
        assert_eq!(limits.keepalive_interval, Duration::from_secs(30));
        assert_eq!(limits.keepalive_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_connection_age, Duration::from_secs(1800));
        assert_eq!(limits.max_connection_age_grace, Duration::from_secs(30));
        assert_eq!(limits.max_header_list_bytes, 16384);
        assert_eq!(limits.max_pending_reset_streams, 20);
        assert_eq!(limits.request_body_timeout, Duration::from_secs(10));
        assert_eq!(limits.problems(), Vec::new());
    }

    #[test]
    fn the_default_per_connection_bound_is_under_64_mb() {
        let bound = ListenerLimits::default().per_connection_bound_bytes();
        assert!(bound < 64_000_000, "{bound}");
    }

    #[test]
    fn zero_and_out_of_range_limits_are_each_named() {
        let limits = ListenerLimits {
            max_concurrent_streams: STREAMS_CEILING + 1,
            max_connections: 0,
            idle_timeout: Duration::ZERO,
            max_header_list_bytes: 100,
            ..ListenerLimits::default()
        };
        let fields: Vec<_> = limits.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "max_concurrent_streams",
                "max_connections",
                "max_header_list_bytes",
                "idle_timeout"
            ]
        );
    }

    #[test]
    fn zero_streams_is_refused() {
        let limits = ListenerLimits {
            max_concurrent_streams: 0,
            ..ListenerLimits::default()
        };
        assert_eq!(limits.problems()[0].field, "max_concurrent_streams");
    }
}
