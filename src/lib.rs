//! user-service: a gRPC service that stores users with an expiry in Redis,
//! standalone or cluster. `main.rs` only wires these modules together.
//!
//! Data flows one way: request -> `domain` validation -> `store` -> Redis;
//! errors flow back through `error::ServiceError` into one `tonic::Status` mapping.

pub mod app;
pub mod calls;
pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod pb;
pub mod probe;
pub mod service;
pub mod signal;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod watch;
