//! Secrets and personal data stay where they belong. The Redis password
//! (from REDIS_PASSWORD or REDIS_PASSWORD_FILE) is refused when unusable with
//! a message naming the variable, and a unique canary password never shows
//! in logs (text or JSON, at debug), in anything sent to a client, in
//! `--help`, or in the process's command line. Names and emails never reach
//! the logs, and hostile ids cannot forge log lines.

use std::{fs, io::Read, net::SocketAddr, time::Duration};

use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use user_service::pb::user::v1::CreateUserRequest;

use crate::support::{
    Output, RedisServer, Service, ServiceEnv, Tweak, code_of, free_port, get_request,
    metrics::http_get, run_with_timeout, service_command, user,
};

/// How long a process may take to refuse its configuration or credentials.
const QUICK: Duration = Duration::from_secs(10);

/// `<prefix>-<32 random hex digits>`: a string no log or message can hold by chance.
fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// The ACL rule of the service's least-privilege user with `password`.
fn svc_user(password: &str) -> String {
    format!(
        "user svc on >{password} resetkeys ~user:* resetchannels -@all +getrange +strlen +set +pttl +ping +exists"
    )
}

/// Environment variables of one case.
type Vars<'a> = Vec<(&'a str, &'a str)>;

/// Runs the binary with only `vars` set and `args`.
fn run_binary(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = service_command();
    command
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", free_port()))
        .envs(vars.iter().copied())
        .args(args);
    run_with_timeout(&mut command, QUICK)
}

#[test]
fn unusable_password_settings_stop_start_up_naming_the_variable() {
    // Arrange: nothing listens on the Redis port, so only the configuration
    // can stop the process quickly.
    let canary = unique("canary");
    let secrets = tempfile::tempdir().unwrap();
    let good_file = secrets.path().join("password");
    fs::write(&good_file, format!("{canary}\n")).unwrap();
    let empty_file = secrets.path().join("empty");
    fs::write(&empty_file, "").unwrap();
    let missing = secrets.path().join("missing");
    let directory = secrets.path().to_path_buf();
    let cases: [(&str, Vars, &str); 4] = [
        (
            "both set",
            vec![
                ("REDIS_PASSWORD", &canary),
                ("REDIS_PASSWORD_FILE", good_file.to_str().unwrap()),
            ],
            "set only one",
        ),
        (
            "missing file",
            vec![("REDIS_PASSWORD_FILE", missing.to_str().unwrap())],
            "No such file",
        ),
        (
            "a directory",
            vec![("REDIS_PASSWORD_FILE", directory.to_str().unwrap())],
            "directory",
        ),
        (
            "empty file",
            vec![("REDIS_PASSWORD_FILE", empty_file.to_str().unwrap())],
            "empty",
        ),
    ];

    // Act
    let mut wrong = Vec::new();
    for (case, vars, cause) in &cases {
        let output = run_binary(vars, &[]);
        let text = output.combined();
        if output.status.success() {
            wrong.push(format!("{case}: exited 0"));
        }
        if !text.contains("REDIS_PASSWORD_FILE") || !text.contains(cause) {
            wrong.push(format!(
                "{case}: no REDIS_PASSWORD_FILE and {cause:?} in {text:?}"
            ));
        }
        if text.contains(&canary) {
            wrong.push(format!("{case}: the password is in the message"));
        }
    }

    // Assert
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn the_password_file_is_used_with_one_line_ending_dropped() {
    // Arrange
    let canary = unique("canary");
    let redis = RedisServer::builder().acl_user(&svc_user(&canary)).start();
    let secrets = tempfile::tempdir().unwrap();
    let file = |name: &str, content: String| {
        let path = secrets.path().join(name);
        fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let lf = file("lf", format!("{canary}\n"));
    let crlf = file("crlf", format!("{canary}\r\n"));
    let two_newlines = file("two", format!("{canary}\n\n"));
    let svc = |path: &str| {
        ServiceEnv::standalone(&redis)
            .env("REDIS_USERNAME", "svc")
            // Empty, as `${REDIS_PASSWORD:-}` in a compose file leaves it: the file wins.
            .env("REDIS_PASSWORD", "")
            .env("REDIS_PASSWORD_FILE", path)
    };

    // Act
    let with_lf = Service::start(svc(&lf)).await;
    let created = with_lf.client().create_user(user("from-file")).await;
    let with_crlf = Service::start(svc(&crlf)).await;
    let read = with_crlf.client().get_user(get_request("from-file")).await;
    let with_two = Service::spawn(svc(&two_newlines));
    let two_exit = with_two.wait_for_exit(QUICK).await;

    // Assert
    assert_eq!(code_of(&created), Code::Ok, "{created:?}");
    assert_eq!(code_of(&read), Code::Ok, "{read:?}");
    let two_exit = two_exit.expect("a password with a newline left in is rejected by Redis");
    assert!(!two_exit.success());
    assert!(
        with_two.stderr().to_lowercase().contains("authentication"),
        "{}",
        with_two.stderr()
    );
    for service in [&with_lf, &with_crlf, &with_two] {
        assert!(
            !service.logs().contains(&canary),
            "the password is in the logs"
        );
    }
    // The password with a newline left in was refused on purpose.
    let denials = redis.take_acl_denials();
    assert!(
        !denials.is_empty() && denials.iter().all(|d| d == "svc: auth AUTH"),
        "{denials:?}"
    );
}

/// Where `needle` shows up among `places` (name, content).
fn places_holding(needle: &str, places: &[(String, Vec<u8>)]) -> Vec<String> {
    let needle = needle.as_bytes();
    places
        .iter()
        .filter(|(_, content)| content.windows(needle.len()).any(|w| w == needle))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The status of a call that must fail.
fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    result.expect_err("the call must fail")
}

/// Everything a status carries to the client: code, message, details, metadata.
fn status_bytes(status: &Status) -> Vec<u8> {
    let mut bytes = format!(
        "{:?} {} {:?}",
        status.code(),
        status.message(),
        status.metadata()
    )
    .into_bytes();
    bytes.extend_from_slice(status.details());
    bytes
}

/// Success and failure paths of a service whose password is a canary, at
/// RUST_LOG=debug in `log_format`; then a search for the canary everywhere
/// it could leak.
async fn canary_password_never_leaks(log_format: &str) {
    // Arrange
    let canary = unique("canary");
    let redis = RedisServer::builder().acl_user(&svc_user(&canary)).start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = ServiceEnv::standalone(&redis)
        .env("REDIS_USERNAME", "svc")
        .env("REDIS_PASSWORD", &canary)
        .env("RUST_LOG", "debug")
        .env("LOG_FORMAT", log_format)
        .env("REDIS_TIMEOUT_MS", "300")
        .env("METRICS_ADDR", &metrics_addr.to_string());
    let service = Service::start(env.clone()).await;
    let mut client = service.client();
    let mut statuses: Vec<(Code, Status)> = Vec::new();

    // Act: success paths.
    client.create_user(user("canary-ok")).await.unwrap();
    client.get_user(get_request("canary-ok")).await.unwrap();
    // Act: failures answered to the client, each with the code it must have.
    let all_bad = CreateUserRequest {
        id: "bad id".into(),
        name: "\u{202E}x".into(),
        email: "x".into(),
        ttl_seconds: Some(0),
    };
    statuses.push((
        Code::AlreadyExists,
        refusal(client.create_user(user("canary-ok")).await),
    ));
    statuses.push((
        Code::NotFound,
        refusal(client.get_user(get_request("nobody")).await),
    ));
    statuses.push((
        Code::InvalidArgument,
        refusal(client.create_user(all_bad).await),
    ));
    // NOPERM: take GETRANGE away from the service's ACL user for one call.
    redis.query::<String>(&["ACL", "SETUSER", "svc", "-getrange"]);
    statuses.push((
        Code::Internal,
        refusal(client.get_user(get_request("canary-ok")).await),
    ));
    redis.query::<String>(&["ACL", "SETUSER", "svc", "+getrange"]);
    redis.stop();
    statuses.push((
        Code::Unavailable,
        refusal(client.get_user(get_request("canary-ok")).await),
    ));
    redis.cont();
    service.wait_for_health(ServingStatus::Serving).await;
    let metrics = http_get(metrics_addr, "/metrics").await;
    // Act: a wrong password that contains the canary, and a configuration error.
    let wrong_env = env
        .clone()
        .env("REDIS_PASSWORD", &format!("{canary}-wrong"))
        .env("METRICS_ADDR", "");
    let wrong = Service::spawn(wrong_env);
    let wrong_exit = wrong.wait_for_exit(QUICK).await;
    let both_set = run_binary(
        &[
            ("REDIS_PASSWORD", &canary),
            ("REDIS_PASSWORD_FILE", "/nonexistent/pw"),
        ],
        &[],
    );
    // Act: the command line, --help, and the health subcommand, with the variable set.
    let cmdline = fs::read(format!("/proc/{}/cmdline", service.pid()))
        .expect("read the service's /proc/<pid>/cmdline");
    let with_password = [
        ("REDIS_PASSWORD", canary.as_str()),
        ("REDIS_USERNAME", "svc"),
    ];
    let help = run_binary(&with_password, &["--help"]);
    let health_help = run_binary(&with_password, &["health", "--help"]);
    let health = run_binary(
        &with_password,
        &["health", "--addr", &service.addr().to_string()],
    );
    let version = run_binary(&with_password, &["--version"]);
    let exit = service.terminate().await;

    // Assert: every path ran as intended.
    for (want, status) in &statuses {
        assert_eq!(status.code(), *want, "{status:?}");
    }
    assert!(exit.success(), "{exit}");
    let wrong_exit = wrong_exit.expect("a wrong password stops start-up");
    assert!(!wrong_exit.success());
    assert!(
        wrong.stderr().to_lowercase().contains("authentication"),
        "{}",
        wrong.stderr()
    );
    assert!(!both_set.status.success());
    assert!(help.stdout.contains("REDIS_PASSWORD"), "{help:?}");
    assert!(health.status.success(), "{health:?}");
    assert!(
        service.stdout().lines().count() > 10,
        "debug logging is on:\n{}",
        service.stdout()
    );
    // Assert: the canary is nowhere.
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("service stdout".into(), service.stdout().into_bytes()),
        ("service stderr".into(), service.stderr().into_bytes()),
        ("wrong-password stdout".into(), wrong.stdout().into_bytes()),
        ("wrong-password stderr".into(), wrong.stderr().into_bytes()),
        ("both-set output".into(), both_set.combined().into_bytes()),
        ("/proc/<pid>/cmdline".into(), cmdline),
        ("--help".into(), help.combined().into_bytes()),
        ("health --help".into(), health_help.combined().into_bytes()),
        ("health".into(), health.combined().into_bytes()),
        ("--version".into(), version.combined().into_bytes()),
        ("/metrics".into(), format!("{metrics:?}").into_bytes()),
    ];
    for (want, status) in &statuses {
        places.push((
            format!("{want:?} status sent to the client"),
            status_bytes(status),
        ));
    }
    assert_eq!(
        places_holding(&canary, &places),
        Vec::<String>::new(),
        "the password leaked"
    );
    // The NOPERM call and the wrong password were refused on purpose.
    let mut denials = redis.take_acl_denials();
    denials.dedup();
    assert_eq!(denials.len(), 2, "{denials:?}");
    assert!(
        denials.contains(&"svc: command getrange".to_owned()),
        "{denials:?}"
    );
    assert!(
        denials.contains(&"svc: auth AUTH".to_owned()),
        "{denials:?}"
    );
}

#[tokio::test]
async fn canary_password_never_leaks_with_text_logs() {
    canary_password_never_leaks("text").await;
}

#[tokio::test]
async fn canary_password_never_leaks_with_json_logs() {
    canary_password_never_leaks("json").await;
}

/// Creates and reads users whose names and emails are unique markers, on
/// the paths that log (success, duplicate, invalid), and returns the logs
/// and the markers.
async fn log_a_session(log_format: &str, rust_log: &str) -> (Service, Vec<String>) {
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis)
        .env("LOG_FORMAT", log_format)
        .env("RUST_LOG", rust_log);
    let service = Service::start(env).await;
    let mut client = service.client();
    let name = unique("Zephyrine Quillfeather");
    let email = format!("{}@example.org", unique("zq"));
    let bad_name = format!("{}\u{7}", unique("Bellringer"));
    let bad_email = format!("{}@nodot", unique("bademail"));

    let person = user("logged-person").name(&name).email(&email);
    client.create_user(person.clone()).await.unwrap();
    client.get_user(get_request("logged-person")).await.unwrap();
    let duplicate = client.create_user(person).await;
    let invalid = client
        .create_user(user("logged-invalid").name(&bad_name).email(&bad_email))
        .await;
    assert_eq!(code_of(&duplicate), Code::AlreadyExists);
    assert_eq!(code_of(&invalid), Code::InvalidArgument);
    drop(redis);
    // With Redis gone, the failure paths log too.
    let _ = client
        .create_user(user("after-redis").name(&name).email(&email))
        .await;
    let exit = service.terminate().await;
    assert!(exit.success(), "{exit}");
    (service, vec![name, email, bad_name, bad_email])
}

#[tokio::test]
async fn names_and_emails_never_reach_the_logs() {
    for log_format in ["text", "json"] {
        // Arrange, Act
        let (service, markers) = log_a_session(log_format, "info").await;

        // Assert
        let logs = format!("{}{}", service.stdout(), service.stderr());
        assert!(!logs.is_empty(), "{log_format}: no logs at all");
        let found: Vec<&String> = markers
            .iter()
            .filter(|m| logs.contains(m.as_str()))
            .collect();
        assert!(
            found.is_empty(),
            "{log_format} logs hold personal data {found:?}:\n{logs}"
        );
    }
}

/// Ids, names and emails that try to start a log line of their own, or to
/// rewrite the terminal line (ESC, CR).
const FORGERIES: &[&str] = &[
    "x\nINFO forged line",
    "x\r\nWARN forged line",
    "\u{1b}[2K\rERROR forged line",
    "x\u{85}INFO forged line",
];

#[tokio::test]
async fn hostile_ids_and_names_cannot_forge_log_lines() {
    for log_format in ["text", "json"] {
        // Arrange: debug, where each call's id is logged.
        let redis = RedisServer::start();
        let env = ServiceEnv::standalone(&redis)
            .env("LOG_FORMAT", log_format)
            .env("RUST_LOG", "debug");
        let service = Service::start(env).await;
        let mut client = service.client();

        // Act
        for forged in FORGERIES {
            let create = client
                .create_user(user(forged).name(forged).email(forged))
                .await;
            let get = client.get_user(get_request(forged)).await;
            assert_eq!(code_of(&create), Code::InvalidArgument);
            assert_eq!(code_of(&get), Code::InvalidArgument);
        }
        let exit = service.terminate().await;

        // Assert
        assert!(exit.success(), "{exit}");
        let logs = format!("{}{}", service.stdout(), service.stderr());
        assert!(
            logs.contains("forged line"),
            "{log_format}: the ids were logged (escaped), so the test saw them:\n{logs}"
        );
        let mut wrong = Vec::new();
        for line in logs.lines().filter(|line| !line.trim().is_empty()) {
            let one_record = match log_format {
                "json" => {
                    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
                }
                // tracing's text lines start with an RFC 3339 timestamp.
                _ => line.len() > 20 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T',
            };
            if !one_record || line.contains(['\r', '\u{1b}', '\u{85}']) {
                wrong.push(line.to_owned());
            }
        }
        assert!(
            wrong.is_empty(),
            "{log_format}: lines that are not one whole record: {wrong:#?}"
        );
    }
}
