//! `FailureKind`: the one classification of what can go wrong between the
//! service and Redis. The store computes it once, when an error leaves
//! redis-rs; the status mapping and the metrics both read it, neither
//! looks at a Redis error again. No I/O and no logging here.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Kinds of store failure; [`label`](Self::label) is the `kind` label of
/// `user_service_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Start-up has not reached Redis yet.
    NotConnected,
    /// No answer within the call's Redis budget or the response timeout.
    Timeout,
    /// Connection refused, reset or dropped.
    Io,
    /// CLUSTERDOWN: the cluster cannot serve the slot (mid-failover).
    ClusterDown,
    /// TRYAGAIN: a multi-key operation during resharding.
    TryAgain,
    /// MOVED still unresolved after the client's retries.
    Moved,
    /// ASK still unresolved after the client's retries.
    Ask,
    /// MASTERDOWN: a replica lost its primary.
    MasterDown,
    /// LOADING: the server is loading its dataset.
    Loading,
    /// BUSY: a script or function runs past `busy-reply-threshold`.
    Busy,
    /// READONLY: a write reached a replica (a demoted primary, stale topology).
    ReadOnly,
    /// OOM: `maxmemory` reached under the `noeviction` policy.
    OutOfMemory,
    /// NOPERM: the ACL user lacks a permission.
    NoPerm,
    /// WRONGPASS / NOAUTH after start-up.
    Auth,
    /// Fewer replicas than REDIS_WRITE_REPLICAS acknowledged a create.
    NotReplicated,
    /// A value under a user key that is not a user.
    Corrupt,
    /// Anything else.
    Other,
}

/// How a caller should see a failure: the three answers the contract has
/// for "Redis could not do it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Redis cannot serve now but may soon: retrying may help (UNAVAILABLE).
    Unavailable,
    /// Redis is full: retrying later may help (RESOURCE_EXHAUSTED).
    Exhausted,
    /// A stored value is not a user: retrying cannot help (DATA_LOSS).
    DataLoss,
    /// A fault of the deployment or of the service (INTERNAL).
    Internal,
}

impl FailureKind {
    /// Every kind, in label order (metrics keep one counter per kind).
    pub const ALL: [Self; 17] = [
        Self::NotConnected,
        Self::Timeout,
        Self::Io,
        Self::ClusterDown,
        Self::TryAgain,
        Self::Moved,
        Self::Ask,
        Self::MasterDown,
        Self::Loading,
        Self::Busy,
        Self::ReadOnly,
        Self::OutOfMemory,
        Self::NoPerm,
        Self::Auth,
        Self::NotReplicated,
        Self::Corrupt,
        Self::Other,
    ];

    /// The metrics label value (lower snake case, stable).
    pub fn label(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::ClusterDown => "cluster_down",
            Self::TryAgain => "try_again",
            Self::Moved => "moved",
            Self::Ask => "ask",
            Self::MasterDown => "master_down",
            Self::Loading => "loading",
            Self::Busy => "busy",
            Self::ReadOnly => "readonly",
            Self::OutOfMemory => "oom",
            Self::NoPerm => "noperm",
            Self::Auth => "auth",
            Self::NotReplicated => "not_replicated",
            Self::Corrupt => "corrupt",
            Self::Other => "other",
        }
    }

    /// The `google.rpc.ErrorInfo` reason (UPPER_SNAKE_CASE, stable).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotConnected => "REDIS_NOT_CONNECTED",
            Self::Timeout => "REDIS_TIMEOUT",
            Self::Io => "REDIS_UNREACHABLE",
            Self::ClusterDown => "REDIS_CLUSTER_DOWN",
            Self::TryAgain => "REDIS_TRY_AGAIN",
            Self::Moved => "REDIS_MOVED",
            Self::Ask => "REDIS_ASK",
            Self::MasterDown => "REDIS_MASTER_DOWN",
            Self::Loading => "REDIS_LOADING",
            Self::Busy => "REDIS_BUSY",
            Self::ReadOnly => "REDIS_READONLY",
            Self::OutOfMemory => "REDIS_OUT_OF_MEMORY",
            Self::NoPerm => "REDIS_NO_PERMISSION",
            Self::Auth => "REDIS_AUTHENTICATION",
            Self::NotReplicated => "NOT_REPLICATED",
            Self::Corrupt => "CORRUPT_USER_VALUE",
            Self::Other => "REDIS_ERROR",
        }
    }

    /// How a caller sees it.
    pub fn class(self) -> FailureClass {
        match self {
            Self::NotConnected
            | Self::Timeout
            | Self::Io
            | Self::ClusterDown
            | Self::TryAgain
            | Self::Moved
            | Self::Ask
            | Self::MasterDown
            | Self::Loading
            | Self::Busy
            | Self::ReadOnly
            | Self::Auth
            | Self::NotReplicated => FailureClass::Unavailable,
            Self::OutOfMemory => FailureClass::Exhausted,
            Self::Corrupt => FailureClass::DataLoss,
            Self::NoPerm | Self::Other => FailureClass::Internal,
        }
    }

    /// The kind of an error that redis-rs returned.
    ///
    /// OOM and BUSY are not among redis-rs's known server errors: they come
    /// back as `ErrorKind::Extension` and are told apart by their code.
    /// A failed pipeline reports its first failed command's code.
    pub fn of(err: &RedisError) -> Self {
        if is_auth_error(err) {
            return Self::Auth;
        }
        match err.kind() {
            _ if err.is_timeout() => Self::Timeout,
            ErrorKind::Server(ServerErrorKind::ClusterDown) => Self::ClusterDown,
            ErrorKind::Server(ServerErrorKind::TryAgain) => Self::TryAgain,
            ErrorKind::Server(ServerErrorKind::Moved) => Self::Moved,
            ErrorKind::Server(ServerErrorKind::Ask) => Self::Ask,
            ErrorKind::Server(ServerErrorKind::MasterDown) => Self::MasterDown,
            ErrorKind::Server(ServerErrorKind::BusyLoading) => Self::Loading,
            ErrorKind::Server(ServerErrorKind::ReadOnly) => Self::ReadOnly,
            ErrorKind::Server(ServerErrorKind::NoPerm) => Self::NoPerm,
            ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => Self::Io,
            _ if err.is_connection_dropped() || err.is_connection_refusal() => Self::Io,
            // The codes again, for an error redis-rs did not parse into a
            // known kind (a failed pipeline's later command, say).
            _ => match server_code(err).as_deref() {
                Some("OOM") => Self::OutOfMemory,
                Some("BUSY") => Self::Busy,
                Some("READONLY") => Self::ReadOnly,
                Some("LOADING") => Self::Loading,
                Some("MASTERDOWN") => Self::MasterDown,
                Some("CLUSTERDOWN") => Self::ClusterDown,
                Some("TRYAGAIN") => Self::TryAgain,
                Some("NOPERM") => Self::NoPerm,
                Some("WRONGTYPE") => Self::Corrupt,
                _ => Self::Other,
            },
        }
    }
}

/// The error code Redis answered (`OOM`, `BUSY`, ...), also from inside a
/// failed pipeline, whose `code()` redis-rs leaves empty for codes it does
/// not know.
pub(crate) fn server_code(err: &RedisError) -> Option<String> {
    if let Some(code) = err.code() {
        return Some(code.to_owned());
    }
    let errors = err.clone().into_server_errors()?;
    errors.first().map(|(_, server)| server.code().to_owned())
}

/// True for errors that mean the credentials are wrong or missing.
pub(crate) fn is_auth_error(err: &RedisError) -> bool {
    err.kind() == ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    #[test]
    fn labels_and_reasons_are_unique() {
        let labels: std::collections::HashSet<_> =
            FailureKind::ALL.iter().map(|k| k.label()).collect();
        let reasons: std::collections::HashSet<_> =
            FailureKind::ALL.iter().map(|k| k.reason()).collect();
        assert_eq!(labels.len(), FailureKind::ALL.len());
        assert_eq!(reasons.len(), FailureKind::ALL.len());
        for reason in reasons {
            assert!(
                reason.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{reason}"
            );
        }
    }

    #[test]
    fn extension_codes_redis_rs_does_not_know_are_told_apart() {
        assert_eq!(FailureKind::of(&server("OOM")), FailureKind::OutOfMemory);
        assert_eq!(FailureKind::of(&server("BUSY")), FailureKind::Busy);
        assert_eq!(FailureKind::of(&server("WRONGTYPE")), FailureKind::Corrupt);
        assert_eq!(FailureKind::of(&server("READONLY")), FailureKind::ReadOnly);
        assert_eq!(FailureKind::of(&server("WHATEVER")), FailureKind::Other);
        assert_eq!(FailureKind::OutOfMemory.class(), FailureClass::Exhausted);
        assert_eq!(FailureKind::Busy.class(), FailureClass::Unavailable);
    }

    #[test]
    fn io_failures_are_unavailable() {
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(FailureKind::of(&io), FailureKind::Io);
        assert_eq!(FailureKind::Io.class(), FailureClass::Unavailable);
    }
}
