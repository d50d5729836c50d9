//! `ServiceError`: everything a UserService call can end in, and the one
//! mapping to `tonic::Status`, a pure function. The client gets a stable
//! message; the log gets the full cause chain, written once per call by
//! `calls::failed`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{domain::ValidationError, store::StoreError};

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
pub fn chain(err: &dyn std::error::Error) -> String {
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
                Status::resource_exhausted("too many concurrent calls, retry later")
            }
            ServiceError::DeadlineExceeded => {
                Status::deadline_exceeded("deadline exceeded before Redis answered")
            }
            ServiceError::RedisTimeout => {
                Status::unavailable("Redis did not answer in time, retry later")
            }
            ServiceError::Store(store) => store_status(store),
        }
    }
}

fn store_status(err: StoreError) -> Status {
    match &err {
        StoreError::NotConnected | StoreError::Unavailable(_) | StoreError::Authentication(_) => {
            Status::unavailable("Redis unavailable, retry later")
        }
        StoreError::NotReplicated { .. } => Status::unavailable(err.to_string()),
        StoreError::NoPermission(_) | StoreError::Corrupt { .. } | StoreError::Other(_) => {
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
