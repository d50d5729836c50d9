//! Fixtures for the integration tests: real `redis-server` processes (one
//! server or a six-node cluster), the server in this process (`App`, through
//! `app::run`) or as the built binary (`Service`), and small helpers for
//! requests, waiting and subprocesses. No Redis is mocked.

pub mod acl;
pub mod api;
pub mod app;
pub mod certs;
pub mod cluster;
pub mod endpoint;
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

pub use api::{
    Tweak, bad_fields, code_of, fields, get_request, seconds_until, stored_json, stored_value,
    stored_value_of, user,
};
pub use app::App;
pub use certs::{Certs, ServerTls};
pub use cluster::RedisCluster;
pub use endpoint::Endpoint;
pub use eventually::{
    eventually, eventually_ok, eventually_ok_blocking, poll_until, poll_until_blocking,
};
pub use monitor::Monitor;
pub use ports::free_port;
pub use process::{Output, run_with_timeout};
pub use redis_server::RedisServer;
pub use service::{Service, ServiceEnv, service_command};
