//! Integration tests of the `user-service` binary against real Redis
//! processes (one server, or a six-node cluster) on free loopback ports.
//! `support` holds the fixtures; every other module covers one feature.

mod support;

mod attacks;
mod auth;
mod cluster;
mod cluster_faults;
mod cluster_health;
mod dev_certs;
mod drain;
mod durable_writes;
mod faults;
mod grpcurl;
mod hostile;
mod hostile_props;
mod least_privilege;
mod lifecycle;
mod observability;
mod prometheus;
mod redis_outage;
mod redis_refusals;
mod reflection;
mod secrets;
mod standalone;
mod startup;
mod stored_values;
mod tls_grpc;
mod tls_redis;
mod traces;
mod validation;
mod watch;
