//! `Certs`: test certificates made with the `openssl` CLI in a temp dir: a
//! CA, a server certificate it signed for 127.0.0.1 and localhost, a client
//! certificate it signed, a server certificate it signed for 127.0.0.1 only,
//! and an unrelated second CA. Keys are P-256 (fast to make, accepted by Redis,
//! rustls and grpcurl alike). Removed when dropped. Also `ServerTls`, the
//! TLS settings of a Redis server made from them. scripts/dev-certs.sh uses
//! the same openssl recipe for newcomers' certificates: change both together.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tempfile::TempDir;

use super::{run_with_timeout, tools};

const OPENSSL_TIMEOUT: Duration = Duration::from_secs(30);

/// A certificate and its private key, as files.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl KeyPair {
    /// The certificate's path, for environment variables and flags.
    pub fn cert(&self) -> &str {
        utf8(&self.cert)
    }

    /// The key's path.
    pub fn key(&self) -> &str {
        utf8(&self.key)
    }
}

/// The certificates of one test; see the module docs.
pub struct Certs {
    _dir: TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    /// Signed by the CA, valid for IP 127.0.0.1 and DNS localhost, usable by
    /// servers and (for Redis cluster bus and replication links) clients.
    pub server: KeyPair,
    /// Signed by the CA, for clients only.
    pub client: KeyPair,
    /// Signed by the CA for IP 127.0.0.1 only: wrong for `localhost`.
    pub ip_only: KeyPair,
    /// The other CA's own certificate and key, which the CA here rejects
    /// when a client presents them.
    pub untrusted_client: KeyPair,
}

impl Certs {
    /// Makes every certificate; panics with openssl's output on failure.
    pub fn generate() -> Self {
        tools::require_openssl();
        let dir = tempfile::Builder::new()
            .prefix("certs-")
            .tempdir()
            .expect("create a temp dir for certificates");
        let path = dir.path();
        make_ca(path, "ca");
        make_ca(path, "other-ca");
        let both = "serverAuth,clientAuth";
        let server = make_leaf(path, "server", "IP:127.0.0.1,DNS:localhost", both, 2);
        let client = make_leaf(path, "client", "DNS:user-service.test", "clientAuth", 3);
        let ip_only = make_leaf(path, "ip-only", "IP:127.0.0.1", both, 4);
        Certs {
            ca: path.join("ca.crt"),
            other_ca: path.join("other-ca.crt"),
            untrusted_client: KeyPair {
                cert: path.join("other-ca.crt"),
                key: path.join("other-ca.key"),
            },
            server,
            client,
            ip_only,
            _dir: dir,
        }
    }

    /// The CA that signed every certificate here.
    pub fn ca(&self) -> &str {
        utf8(&self.ca)
    }

    /// A CA that signed none of them.
    pub fn other_ca(&self) -> &str {
        utf8(&self.other_ca)
    }
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A self-signed CA certificate `<name>.crt` with key `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN=test-{name} -keyout {name}.key -out {name}.crt \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
}

/// A certificate `<name>.crt` signed by `ca.crt` for `san` with extended
/// key usages `eku`, and its key `<name>.key`.
fn make_leaf(dir: &Path, name: &str, san: &str, eku: &str, serial: u32) -> KeyPair {
    let extensions = format!(
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage={eku}\n\
         subjectAltName={san}\n"
    );
    fs::write(dir.join(format!("{name}.ext")), extensions).expect("write the extensions file");
    openssl(
        dir,
        &format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -subj /CN={name} -keyout {name}.key -out {name}.csr"
        ),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -set_serial {serial} -days 2 \
             -extfile {name}.ext -out {name}.crt"
        ),
    );
    KeyPair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    }
}

/// Runs `openssl` in `dir` with whitespace-separated `args` (no argument
/// here contains a space).
fn openssl(dir: &Path, args: &str) {
    let mut command = Command::new("openssl");
    command.current_dir(dir).args(args.split_whitespace());
    let output = run_with_timeout(&mut command, OPENSSL_TIMEOUT);
    assert!(
        output.status.success(),
        "openssl {args} failed: {}",
        output.combined()
    );
}

/// TLS of a Redis server started with `RedisServerBuilder::tls`: only a TLS
/// port is open. The fixture's own connections (admin queries, `redis-cli`)
/// trust `ca` and present `admin`, so they work whatever `auth_clients` says.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server's certificate (also its client certificate on cluster bus
    /// and replication links).
    pub server: KeyPair,
    /// CA the server checks client certificates against, and the fixture
    /// checks the server against.
    pub ca: PathBuf,
    /// `--tls-auth-clients`: `yes` (client certificates required), `no` or `optional`.
    pub auth_clients: &'static str,
    /// Client certificate of the fixture's own connections.
    pub admin: KeyPair,
}

impl ServerTls {
    /// `certs.server` signed by `certs.ca()`; the fixture presents `certs.client`.
    pub fn new(certs: &Certs, auth_clients: &'static str) -> Self {
        ServerTls {
            server: certs.server.clone(),
            ca: certs.ca().into(),
            auth_clients,
            admin: certs.client.clone(),
        }
    }

    /// `redis-cli` flags for a TLS connection as the fixture.
    pub fn cli_args(&self) -> Vec<&str> {
        vec![
            "--tls",
            "--cacert",
            self.ca.to_str().expect("temp paths are UTF-8"),
            "--cert",
            self.admin.cert(),
            "--key",
            self.admin.key(),
        ]
    }

    /// The same, for the redis crate (as `default`, or the `admin` user).
    pub fn certificates(&self) -> redis::TlsCertificates {
        user_service::tls::install_crypto_provider();
        let read =
            |p: &PathBuf| fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&self.admin.cert),
                client_key: read(&self.admin.key),
            }),
            root_cert: Some(read(&self.ca)),
        }
    }
}
