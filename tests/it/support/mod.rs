//! Fixtures for the integration tests: real `redis-server` processes (one
//! server or a six-node cluster), the built `user-service` binary, and small
//! helpers for requests, polling and subprocesses. No Redis is mocked.

pub mod acl;
pub mod api;
pub mod certs;
pub mod cluster;
pub mod eventually;
pub mod load;
pub mod metrics;
pub mod monitor;
pub mod ports;
pub mod process;
pub mod raw;
pub mod redis_server;
pub mod replication;
pub mod service;
pub mod slots;
pub mod tools;

pub use api::{Tweak, bad_fields, code_of, fields, get_request, seconds_until, stored_json, user};
pub use certs::{Certs, ServerTls};
pub use cluster::RedisCluster;
pub use eventually::eventually;
pub use monitor::Monitor;
pub use ports::free_port;
pub use process::{Output, run_with_timeout};
pub use redis_server::RedisServer;
pub use service::{Service, ServiceEnv, service_command};
