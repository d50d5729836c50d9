//! `ServiceError`: everything a UserService call can end in, and the one
//! mapping to `tonic::Status`. The client gets a stable message; the log gets
//! the full cause chain, written once, here.

use std::error::Error as _;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::ValidationError,
    metrics::{METRICS, RedisErrorKind},
    store::StoreError,
};

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
    /// More calls in flight than the concurrency limit.
    #[error("too many concurrent calls")]
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
        match err {
            ServiceError::Invalid(invalid) => {
                let mut details = ErrorDetails::new();
                for v in &invalid.violations {
                    details.add_bad_request_violation(v.field, v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, invalid.to_string(), details)
            }
            ServiceError::AlreadyExists => Status::already_exists("user already exists"),
            ServiceError::NotFound => Status::not_found("user not found"),
            ServiceError::Overloaded => {
                tracing::warn!("call refused: concurrency limit reached");
                Status::resource_exhausted("too many concurrent calls, retry later")
            }
            ServiceError::DeadlineExceeded => {
                tracing::debug!("caller deadline passed before Redis answered");
                Status::deadline_exceeded("deadline exceeded before Redis answered")
            }
            ServiceError::RedisTimeout => {
                METRICS.record_redis_error(RedisErrorKind::Timeout);
                tracing::warn!("Redis did not answer within the call budget");
                Status::unavailable("Redis did not answer in time, retry later")
            }
            ServiceError::Store(store) => store_status(store),
        }
    }
}

fn store_status(err: StoreError) -> Status {
    METRICS.record_redis_error(RedisErrorKind::of(&err));
    match &err {
        StoreError::NotConnected | StoreError::Unavailable(_) => {
            tracing::warn!(error = %chain(&err), "Redis unavailable");
            Status::unavailable("Redis unavailable, retry later")
        }
        StoreError::NotReplicated { .. } => {
            tracing::warn!(error = %chain(&err), "create not acknowledged by enough replicas");
            Status::unavailable(err.to_string())
        }
        StoreError::Authentication(_) => {
            tracing::error!(error = %chain(&err), "deployment error: Redis rejected the service's credentials");
            Status::unavailable("Redis unavailable, retry later")
        }
        StoreError::NoPermission(_) => {
            tracing::error!(error = %chain(&err), "deployment error: the Redis ACL user lacks a permission the service needs");
            Status::internal("internal error")
        }
        StoreError::Corrupt { .. } | StoreError::Other(_) => {
            tracing::error!(error = %chain(&err), source = ?err.source().map(ToString::to_string), "unexpected Redis reply");
            Status::internal("internal error")
        }
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
                    field: "id",
                    description: "bad".into(),
                },
                FieldViolation {
                    field: "email",
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
    fn redis_outage_is_unavailable_and_noperm_internal() {
        let io: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(
            Status::from(ServiceError::Store(StoreError::from(io))).code(),
            Code::Unavailable
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
