//! The health probe's configuration: `user-service health`'s arguments
//! checked into a [`ProbeConfig`], every problem reported at once.

use std::{net::SocketAddr, time::Duration};

use crate::{
    config::{ConfigError, HealthArgs, Problems, given},
    tls::{Pem, TlsIdentity, has_certificates, identity_files, read_pem},
};

/// What `user-service health` asks, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Server to ask, as HOST:PORT.
    pub addr: String,
    /// Limit of the whole check.
    pub timeout: Duration,
    /// TLS towards the server; `None`: plaintext.
    pub tls: Option<ProbeTls>,
}

/// TLS settings of the health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTls {
    /// CA that verifies the server's certificate.
    pub ca: Pem,
    /// Name the server's certificate must carry.
    pub domain: String,
    /// Client certificate, for a listener that requires one.
    pub identity: Option<TlsIdentity>,
}

impl ProbeConfig {
    /// Validates the `health` arguments; `listen_addr` (LISTEN_ADDR) gives
    /// the address when `--addr` is absent.
    pub fn from_args(args: &HealthArgs, listen_addr: &str) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let addr = args
            .addr
            .clone()
            .unwrap_or_else(|| default_health_addr(listen_addr));
        let ca = given(&args.tls_ca).and_then(|path| {
            read_pem(
                "--tls-ca (HEALTH_TLS_CA_FILE)",
                path,
                has_certificates,
                &mut problems,
            )
        });
        let identity = identity_files(
            ("--tls-cert (HEALTH_TLS_CERT_FILE)", given(&args.tls_cert)),
            ("--tls-key (HEALTH_TLS_KEY_FILE)", given(&args.tls_key)),
            &mut problems,
        );
        let domain = args.tls_domain.clone().filter(|d| !d.is_empty());
        let tls = if given(&args.tls_ca).is_some() {
            ca.map(|ca| ProbeTls {
                ca,
                domain: domain.unwrap_or_else(|| default_tls_domain(args.addr.as_deref())),
                identity,
            })
        } else {
            // Without a CA there is no TLS; asking for its other parts
            // must not quietly probe in plaintext.
            for (flag, set) in [
                ("--tls-domain (HEALTH_TLS_DOMAIN)", domain.is_some()),
                (
                    "--tls-cert (HEALTH_TLS_CERT_FILE)",
                    given(&args.tls_cert).is_some(),
                ),
                (
                    "--tls-key (HEALTH_TLS_KEY_FILE)",
                    given(&args.tls_key).is_some(),
                ),
            ] {
                if set {
                    problems.add(flag, "needs --tls-ca, which turns TLS on");
                }
            }
            None
        };
        problems.finish(Some(ProbeConfig {
            addr,
            timeout: Duration::from_secs(args.timeout),
            tls,
        }))
    }
}

/// The name the health probe expects on the server's certificate: the host
/// of `--addr`, or `localhost` when the probe dials its own container.
fn default_tls_domain(addr: Option<&str>) -> String {
    let host = addr
        .map(|addr| addr.rsplit_once(':').map_or(addr, |(host, _port)| host))
        .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
        .filter(|host| !host.is_empty());
    host.unwrap_or("localhost").to_owned()
}

/// The address `user-service health` asks when none is given: LISTEN_ADDR's
/// port on loopback, since the unspecified address cannot be dialled.
pub fn default_health_addr(listen_addr: &str) -> String {
    match listen_addr.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        Ok(addr) => addr.to_string(),
        Err(_) => "127.0.0.1:50051".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_probe_expects_the_host_of_its_address_on_the_certificate() {
        assert_eq!(
            default_tls_domain(Some("user-service:50051")),
            "user-service"
        );
        assert_eq!(default_tls_domain(Some("127.0.0.1:50051")), "127.0.0.1");
        assert_eq!(default_tls_domain(Some("[::1]:50051")), "::1");
        assert_eq!(default_tls_domain(None), "localhost");
    }

    #[test]
    fn health_addr_dials_loopback_for_unspecified_listen_addr() {
        assert_eq!(default_health_addr("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(default_health_addr("127.0.0.2:9"), "127.0.0.2:9");
    }
}
