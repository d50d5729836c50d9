//! `ServiceError`: everything a UserService call can end in, and the one
//! mapping to `tonic::Status`. The mapping is a pure function (no metrics,
//! no logs): the caller that records a call reads [`ServiceError::failure`]
//! and [`ServiceError::log_level`] and logs and counts once, in one place.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::ValidationError,
    store::{FailureClass, FailureKind, StoreError, WatchEnd, WatchError},
};

/// The `google.rpc.ErrorInfo` domain of every error this service answers.
pub const ERROR_DOMAIN: &str = "user.v1";

/// The `google.rpc.RetryInfo` delay sent with UNAVAILABLE and
/// RESOURCE_EXHAUSTED: about one readiness check, so a client that follows
/// it retries once Redis may have changed its mind.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How a UserService call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request broke the input rules; nothing reached Redis.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// CreateUser on an id that is taken and not expired.
    #[error("user already exists")]
    AlreadyExists,
    /// GetUser on an absent or expired id.
    #[error("user not found")]
    NotFound,
    /// UpdateUser or DeleteUser with an etag that is not the stored user's.
    #[error("the user changed since the etag was read")]
    Aborted,
    /// More calls in flight than the concurrency limit.
    #[error("call refused: concurrency limit reached (MAX_CONCURRENT_CALLS)")]
    Overloaded,
    /// The caller's deadline passed before Redis answered.
    #[error("deadline exceeded while waiting for Redis")]
    DeadlineExceeded,
    /// Redis did not answer within the service's own budget.
    #[error("Redis did not answer in time")]
    RedisTimeout,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// More WatchUsers streams than WATCH_MAX_STREAMS.
    #[error("too many WatchUsers streams (WATCH_MAX_STREAMS)")]
    TooManyWatches,
    /// A WatchUsers stream could not start.
    #[error(transparent)]
    WatchRefused(#[from] WatchError),
    /// A WatchUsers stream ended.
    #[error(transparent)]
    WatchEnded(#[from] WatchEnd),
}

impl ServiceError {
    /// The store-side classification, for the Redis error metrics; `None`
    /// for outcomes that are not Redis failures (bad input, not found...).
    pub fn failure(&self) -> Option<FailureKind> {
        match self {
            Self::RedisTimeout => Some(FailureKind::Timeout),
            Self::Store(err) => Some(err.kind()),
            _ => None,
        }
    }

    /// How loudly the call recorder should log this outcome: `None` for
    /// the caller's own mistakes and ordinary answers, WARN for Redis
    /// trouble that retrying may mend, ERROR for what an operator must fix
    /// (ACL, credentials, corrupt data). A flood of one kind is the
    /// recorder's to rate-limit.
    pub fn log_level(&self) -> Option<tracing::Level> {
        match self {
            Self::Invalid(_)
            | Self::AlreadyExists
            | Self::NotFound
            | Self::Aborted
            | Self::DeadlineExceeded => None,
            Self::Overloaded | Self::RedisTimeout | Self::TooManyWatches => {
                Some(tracing::Level::WARN)
            }
            Self::WatchRefused(WatchError::NotConfigured { .. }) => Some(tracing::Level::ERROR),
            Self::WatchRefused(_) => Some(tracing::Level::WARN),
            Self::WatchEnded(WatchEnd::Gap) => Some(tracing::Level::WARN),
            Self::WatchEnded(_) => None,
            Self::Store(err) => Some(match err.kind() {
                FailureKind::NoPerm
                | FailureKind::Auth
                | FailureKind::Corrupt
                | FailureKind::Other => tracing::Level::ERROR,
                _ => tracing::Level::WARN,
            }),
        }
    }

    /// What the log line says: the error and all its causes, plus what an
    /// operator should know. Never holds a stored value or a credential.
    pub fn log_message(&self) -> String {
        let advice = match self.failure() {
            Some(FailureKind::NoPerm) => {
                " (deployment error: the Redis ACL user lacks a permission the service needs)"
            }
            Some(FailureKind::Auth) => {
                " (deployment error: Redis rejected the service's credentials)"
            }
            _ => "",
        };
        format!("{}{advice}", chain(self))
    }

    /// The `google.rpc.ErrorInfo` reason (UPPER_SNAKE_CASE).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "INVALID_REQUEST",
            Self::AlreadyExists => "USER_ALREADY_EXISTS",
            Self::NotFound => "USER_NOT_FOUND",
            Self::Aborted => "ETAG_MISMATCH",
            Self::Overloaded => "TOO_MANY_CONCURRENT_CALLS",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::RedisTimeout => FailureKind::Timeout.reason(),
            Self::Store(err) => err.kind().reason(),
            Self::TooManyWatches => "TOO_MANY_WATCH_STREAMS",
            Self::WatchRefused(WatchError::NotConfigured { .. }) => "KEYSPACE_EVENTS_DISABLED",
            Self::WatchRefused(WatchError::NotSubscribed) => "WATCH_NOT_SUBSCRIBED",
            Self::WatchRefused(WatchError::Stopped) | Self::WatchEnded(WatchEnd::Shutdown) => {
                "SHUTTING_DOWN"
            }
            Self::WatchEnded(WatchEnd::Gap) => "WATCH_INTERRUPTED",
            Self::WatchEnded(WatchEnd::Lagged) => "WATCHER_TOO_SLOW",
        }
    }
}

impl ServiceError {
    /// The `google.rpc.ErrorInfo` metadata (AIP-193): for invalid input the
    /// bad fields, for a Redis failure its kind, so a client can branch on
    /// them without parsing the message.
    pub fn metadata(&self) -> std::collections::HashMap<String, String> {
        let mut metadata = std::collections::HashMap::new();
        match self {
            Self::Invalid(invalid) => {
                let fields: Vec<&str> = invalid
                    .violations
                    .iter()
                    .map(|v| v.field.as_ref())
                    .collect();
                metadata.insert("fields".to_owned(), fields.join(","));
            }
            Self::RedisTimeout => {
                metadata.insert(
                    "redis_failure".to_owned(),
                    FailureKind::Timeout.label().to_owned(),
                );
            }
            Self::Store(err) => {
                metadata.insert("redis_failure".to_owned(), err.kind().label().to_owned());
            }
            _ => {}
        }
        metadata
    }
}

/// The error and all its causes on one line, for logs.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let mut details = ErrorDetails::new();
        details.set_error_info(err.reason(), ERROR_DOMAIN, err.metadata());
        let (code, message) = match &err {
            ServiceError::Invalid(invalid) => {
                for v in &invalid.violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                (Code::InvalidArgument, invalid.to_string())
            }
            ServiceError::AlreadyExists => (Code::AlreadyExists, "user already exists".into()),
            ServiceError::NotFound => (Code::NotFound, "user not found".into()),
            ServiceError::Aborted => (
                Code::Aborted,
                "the user changed since the etag was read; read it again and retry".into(),
            ),
            ServiceError::Overloaded => (
                Code::ResourceExhausted,
                "too many concurrent calls, retry later".into(),
            ),
            ServiceError::DeadlineExceeded => (
                Code::DeadlineExceeded,
                "deadline exceeded before Redis answered".into(),
            ),
            ServiceError::RedisTimeout => (
                Code::Unavailable,
                "Redis did not answer in time, retry later".into(),
            ),
            ServiceError::Store(store) => store_status(store),
            ServiceError::TooManyWatches => (Code::ResourceExhausted, err.to_string()),
            ServiceError::WatchRefused(refused) => (
                match refused {
                    WatchError::NotConfigured { .. } => Code::FailedPrecondition,
                    WatchError::NotSubscribed | WatchError::Stopped => Code::Unavailable,
                },
                refused.to_string(),
            ),
            ServiceError::WatchEnded(end) => (
                match end {
                    WatchEnd::Gap | WatchEnd::Shutdown => Code::Unavailable,
                    WatchEnd::Lagged => Code::ResourceExhausted,
                },
                format!("{end}; watch again (and re-read what you need)"),
            ),
        };
        if matches!(code, Code::Unavailable | Code::ResourceExhausted) {
            details.set_retry_info(Some(RETRY_DELAY));
        }
        Status::with_error_details(code, message, details)
    }
}

/// Code and client-facing message of a store failure, from its class.
fn store_status(err: &StoreError) -> (Code, String) {
    match (err.kind().class(), err) {
        (_, StoreError::NotReplicated { .. }) => (Code::Unavailable, err.to_string()),
        (FailureClass::Unavailable, _) => {
            (Code::Unavailable, "Redis unavailable, retry later".into())
        }
        (FailureClass::Exhausted, _) => (
            Code::ResourceExhausted,
            "Redis is out of memory, retry later".into(),
        ),
        // Names the key, never the value (StoreError::Corrupt's Display).
        (FailureClass::DataLoss, StoreError::Corrupt { .. }) => (Code::DataLoss, err.to_string()),
        (FailureClass::DataLoss, _) => {
            (Code::DataLoss, "a stored value is not a valid user".into())
        }
        (FailureClass::Internal, _) => (Code::Internal, "internal error".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldViolation;

    #[test]
    fn invalid_lists_every_field_in_bad_request() {
        let err = ServiceError::Invalid(ValidationError {
            violations: vec![
                FieldViolation {
                    field: "id".into(),
                    description: "bad".into(),
                },
                FieldViolation {
                    field: "email".into(),
                    description: "bad".into(),
                },
            ],
        });
        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<_> = status
            .get_details_bad_request()
            .expect("BadRequest detail")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["id", "email"]);
    }

    #[test]
    fn every_error_carries_error_info_and_retryable_ones_retry_info() {
        let cases = [
            (ServiceError::NotFound, Code::NotFound, false),
            (ServiceError::Overloaded, Code::ResourceExhausted, true),
            (ServiceError::RedisTimeout, Code::Unavailable, true),
            (
                ServiceError::Store(StoreError::connection_refused()),
                Code::Unavailable,
                true,
            ),
            (
                ServiceError::Store(StoreError::server_reply("OOM")),
                Code::ResourceExhausted,
                true,
            ),
            (
                ServiceError::Store(StoreError::server_reply("READONLY")),
                Code::Unavailable,
                true,
            ),
        ];
        for (err, code, retry) in cases {
            let reason = err.reason();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{status:?}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, reason);
            if reason.starts_with("REDIS_") {
                assert!(
                    info.metadata.contains_key("redis_failure"),
                    "{:?}",
                    info.metadata
                );
            }
            assert_eq!(info.domain, ERROR_DOMAIN);
            assert_eq!(
                status.get_details_retry_info().is_some(),
                retry,
                "{status:?}"
            );
        }
    }

    #[test]
    fn out_of_memory_says_so_and_corrupt_data_names_the_key_only() {
        let status = Status::from(ServiceError::Store(StoreError::server_reply("OOM")));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().starts_with("Redis is out of memory"),
            "{status:?}"
        );
        let corrupt = StoreError::Corrupt {
            key: "user:ada".into(),
            problem: crate::store::Corruption::IdMismatch,
        };
        let status = Status::from(ServiceError::Store(corrupt));
        assert_eq!(status.code(), Code::DataLoss);
        assert_eq!(
            status.message(),
            "the value stored under user:ada is not a valid user"
        );
    }

    #[test]
    fn redis_outage_is_unavailable_and_noperm_internal() {
        assert_eq!(
            Status::from(ServiceError::Store(StoreError::connection_refused())).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(ServiceError::Store(StoreError::server_reply("NOPERM"))).code(),
            Code::Internal
        );
        assert_eq!(
            Status::from(ServiceError::Store(StoreError::NotConnected)).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(ServiceError::DeadlineExceeded).code(),
            Code::DeadlineExceeded
        );
    }
}
