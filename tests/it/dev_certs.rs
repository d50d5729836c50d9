//! `scripts/dev-certs.sh` as a newcomer uses it: the certificates it makes,
//! used the way its printed commands say, carry a user over both TLS hops
//! (grpcurl -> service, service -> a TLS-only Redis that requires client
//! certificates); and it keeps existing certificates unless given `--force`.
//! Ports in the printed commands (6380, 50051) become the fixtures' free ports.

use std::{
    collections::BTreeMap, fs, os::unix::fs::PermissionsExt, path::Path, process::Command,
    time::Duration,
};

use crate::support::{
    Output, RedisServer, ServerTls, Service, ServiceEnv, certs::KeyPair, run_with_timeout,
    service_command, stored_value, tools,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-certs.sh");

/// Limit of one script, grpcurl or `health` run; each takes about a second.
const QUICK: Duration = Duration::from_secs(30);

/// The files the script writes.
const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

/// Runs `scripts/dev-certs.sh <args...>`.
fn dev_certs(args: &[&str]) -> Output {
    tools::require_openssl();
    run_with_timeout(Command::new(SCRIPT).args(args), QUICK)
}

/// Runs the script into a fresh temp dir; panics with its output on failure.
fn generate() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("dev-certs-")
        .tempdir()
        .expect("create a temp dir for the script's certificates");
    let output = dev_certs(&[utf8(dir.path())]);
    assert!(
        output.status.success(),
        "dev-certs.sh failed: {}",
        output.combined()
    );
    (dir, output.stdout)
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// The printed command lines that start with `program`.
fn commands<'a>(printed: &'a str, program: &str) -> Vec<&'a str> {
    let prefix = format!("{program} ");
    printed
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with(&prefix))
        .collect()
}

/// The one printed command line that starts with `program`.
fn command<'a>(printed: &'a str, program: &str) -> &'a str {
    match commands(printed, program)[..] {
        [line] => line,
        ref lines => panic!("want one `{program}` line, got {lines:?} in:\n{printed}"),
    }
}

/// The word after `flag` in a command line (the script's paths have no spaces).
fn flag_value<'a>(line: &'a str, flag: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words
        .by_ref()
        .find(|word| *word == flag)
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no `{flag} VALUE` in: {line}"))
}

/// The `NAME=value` words before `make run`.
fn make_run_vars(printed: &str) -> BTreeMap<&str, &str> {
    let line = printed
        .lines()
        .map(str::trim)
        .find(|line| line.ends_with(" make run"))
        .unwrap_or_else(|| panic!("no `... make run` line in:\n{printed}"));
    line.split_whitespace()
        .take_while(|word| *word != "make")
        .map(|word| {
            word.split_once('=')
                .unwrap_or_else(|| panic!("{word:?} is not NAME=value in: {line}"))
        })
        .collect()
}

/// Runs a printed command line with bash, as pasted into a terminal.
fn run_printed(line: &str) -> Output {
    run_with_timeout(Command::new("bash").args(["-c", line]), QUICK)
}

#[tokio::test]
async fn printed_commands_carry_a_user_over_both_tls_hops() {
    // Arrange: the Redis and the service exactly as printed, on free ports.
    tools::require_grpcurl();
    let (dir, printed) = generate();
    let redis_line = command(&printed, "redis-server");
    for flags in ["--port 0", "--tls-port 6380"] {
        assert!(
            redis_line.contains(flags),
            "{flags:?} missing: {redis_line}"
        );
    }
    let vars = make_run_vars(&printed);
    let var = |name: &str| -> &str {
        vars.get(name)
            .unwrap_or_else(|| panic!("{name} missing before `make run`: {vars:?}"))
    };
    let redis = RedisServer::builder()
        .tls(ServerTls {
            server: KeyPair {
                cert: flag_value(redis_line, "--tls-cert-file").into(),
                key: flag_value(redis_line, "--tls-key-file").into(),
            },
            ca: flag_value(redis_line, "--tls-ca-cert-file").into(),
            // redis-server's default, which the printed command keeps.
            auth_clients: "yes",
            admin: KeyPair {
                cert: var("REDIS_CLIENT_CERT_FILE").into(),
                key: var("REDIS_CLIENT_KEY_FILE").into(),
            },
        })
        .start();
    assert_eq!(var("REDIS_URL"), "rediss://localhost:6380");
    let redis_url = format!("rediss://localhost:{}", redis.port());
    let mut env = ServiceEnv::standalone(&redis).channel_trusting(var("REDIS_CA_FILE"));
    for (name, value) in &vars {
        let value = if *name == "REDIS_URL" {
            &redis_url
        } else {
            *value
        };
        env = env.env(name, value);
    }
    let service = Service::start(env).await;
    let here = format!("localhost:{}", service.addr().port());
    let calls = commands(&printed, "grpcurl");
    let health_line = command(&printed, "./target/release/user-service");

    // Act
    let replies: Vec<Output> = calls
        .iter()
        .map(|line| run_printed(&line.replace("localhost:50051", &here)))
        .collect();
    let health_args = health_line
        .replace("localhost:50051", &here)
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let health = run_with_timeout(service_command().args(&health_args), QUICK);

    // Assert
    let names: Vec<&str> = vars.keys().copied().collect();
    assert_eq!(
        names,
        [
            "REDIS_CA_FILE",
            "REDIS_CLIENT_CERT_FILE",
            "REDIS_CLIENT_KEY_FILE",
            "REDIS_URL",
            "TLS_CERT_FILE",
            "TLS_KEY_FILE"
        ]
    );
    for (name, value) in &vars {
        if *name != "REDIS_URL" {
            assert!(
                Path::new(value).starts_with(dir.path()),
                "{name}={value} is not in {}",
                dir.path().display()
            );
        }
    }
    let [created, got] = &replies[..] else {
        panic!("want a CreateUser and a GetUser grpcurl line, got {calls:?}");
    };
    assert!(calls[0].contains("-cacert"), "{}", calls[0]);
    assert!(calls[0].ends_with("/CreateUser"), "{}", calls[0]);
    assert!(calls[1].ends_with("/GetUser"), "{}", calls[1]);
    let created = created.grpcurl_json();
    assert_eq!(created["user"]["id"], "ada", "{created}");
    assert_eq!(got.grpcurl_json()["user"], created["user"]);
    let field = |name: &str| {
        created["user"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        redis.get("user:ada"),
        Some(stored_value(&field("id"), &field("name"), &field("email"))),
        "user:ada in Redis is the user grpcurl created"
    );
    assert_eq!(health_args[0], "health", "{health_line}");
    assert!(health.status.success(), "{health:?}");
    assert_eq!(health.stdout.trim(), "SERVING");
    for file in FILES {
        let mode = fs::metadata(dir.path().join(file))
            .unwrap_or_else(|err| panic!("{file}: {err}"))
            .permissions()
            .mode();
        let want = if file.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode & 0o777, want, "mode of {file}: {mode:o}");
    }
}

#[test]
fn keeps_existing_certificates_unless_forced() {
    // Arrange
    let (dir, _) = generate();
    let path = utf8(dir.path());
    let ca = || fs::read(dir.path().join("ca.pem")).expect("read ca.pem");
    let before = ca();

    // Act
    let again = dev_certs(&[path]);
    let kept = ca();
    let forced = dev_certs(&["--force", path]);

    // Assert
    assert!(!again.status.success(), "{again:?}");
    assert!(again.stderr.contains("--force"), "{again:?}");
    assert_eq!(kept, before, "ca.pem changed without --force");
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(ca(), before, "--force made no new CA");
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .expect("list the certificate dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    let mut want = FILES.map(String::from).to_vec();
    want.sort();
    assert_eq!(left, want, "only the six files, no leftovers");
}
