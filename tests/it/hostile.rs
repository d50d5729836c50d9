//! Hostile input against the real binary: ids that would break a Redis key,
//! names that would deceive a reader, bodies too large or not protobuf at
//! all, methods that do not exist, and the memory of a service fed
//! oversized requests for a while. Every case answers a clear status and
//! leaves the service healthy; nothing invalid is written.

use std::{fs, time::Duration};

use prost::{Message, bytes::Bytes};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;
use user_service::{app::MAX_MESSAGE_BYTES, pb::user::v1::CreateUserRequest};

use crate::support::{
    App, Monitor, RedisServer, Service, ServiceEnv, Tweak, bad_fields, code_of, fields,
    get_request,
    raw::{self, bytes_field},
    user,
};

const CREATE: &str = "/user.v1.UserService/CreateUser";
const GET: &str = "/user.v1.UserService/GetUser";
/// Upper bound on one answer: a hostile request must be answered, not left hanging.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Ids with each character that would change a Redis key's meaning: hash
/// tags (`{}`), glob (`*`), namespace (`:`), whitespace and line breaks,
/// NUL.
const KEY_BREAKING_IDS: &[&str] = &[
    "{tag}",
    "a{b",
    "a}b",
    "user*",
    "*",
    "user:other",
    ":",
    "two words",
    " ",
    "cr\rhere",
    "lf\nhere",
    "x\nINFO forged line",
    "nul\0byte",
    "\0",
];

#[tokio::test]
async fn ids_that_would_break_a_redis_key_are_invalid_and_nothing_is_written() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let monitor = Monitor::start(&redis);

    // Act
    let mut wrong = Vec::new();
    for id in KEY_BREAKING_IDS {
        let created = client.create_user(user("valid").id(id)).await;
        let read = client.get_user(get_request(id)).await;
        if invalid_fields(&created) != Some(fields(&["id"])) {
            wrong.push(format!("CreateUser {id:?}: {created:?}"));
        }
        if invalid_fields(&read) != Some(fields(&["id"])) {
            wrong.push(format!("GetUser {id:?}: {read:?}"));
        }
    }

    // Assert
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(redis.dbsize(), 0, "nothing was written");
    assert_eq!(
        monitor.user_key_commands(),
        Vec::<String>::new(),
        "no command for a user key reached Redis"
    );
}

/// The fields an INVALID_ARGUMENT's BadRequest names; `None` for any other outcome.
fn invalid_fields<T>(result: &Result<T, Status>) -> Option<std::collections::BTreeSet<String>> {
    match result {
        Err(status) if status.code() == Code::InvalidArgument => Some(bad_fields(status)),
        _ => None,
    }
}

#[tokio::test]
async fn names_with_control_or_bidi_override_characters_are_invalid() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let refused = [
        ("NUL", "Ada\0"),
        ("ESC (terminal colours)", "\u{1b}[31mAda"),
        ("CR", "Ada\rBob"),
        ("LF", "Ada\nINFO forged line"),
        ("NEL", "Ada\u{85}"),
        ("RLO", "Ada \u{202E}gpj.exe"),
        ("RLE", "\u{202B}Ada"),
        ("PDF", "Ada\u{202C}"),
        ("RLI", "Ada\u{2067}x"),
        ("FSI", "Ada\u{2068}x"),
    ];
    // Implicit direction marks and joiners are not overrides: names in
    // mixed scripts and emoji sequences need them.
    let accepted = [
        ("RLM in a Hebrew name", "דוד\u{200F} Levi"),
        ("ZWJ emoji sequence", "Ada \u{1F469}\u{200D}\u{1F4BB}"),
    ];

    // Act
    let mut wrong = Vec::new();
    for (i, (case, name)) in refused.iter().enumerate() {
        let result = client
            .create_user(user(&format!("refused{i}")).name(name))
            .await;
        match &result {
            Err(status) if status.code() == Code::InvalidArgument => {
                let violations = status.get_details_bad_request().map(|b| b.field_violations);
                let described = violations
                    .iter()
                    .flatten()
                    .any(|v| v.field == "name" && v.description.contains("control"));
                if bad_fields(status) != fields(&["name"]) || !described {
                    wrong.push(format!("{case}: {status:?}"));
                }
            }
            other => wrong.push(format!("{case}: expected INVALID_ARGUMENT, got {other:?}")),
        }
    }
    for (i, (case, name)) in accepted.iter().enumerate() {
        let result = client
            .create_user(user(&format!("accepted{i}")).name(name))
            .await;
        if let Err(status) = result {
            wrong.push(format!("{case}: refused {status:?}"));
        }
    }

    // Assert
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(redis.keys("user:refused*"), Vec::<String>::new());
}

#[tokio::test]
async fn a_one_mib_name_is_invalid_and_not_stored() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let name = "n".repeat(1 << 20);

    // Act
    let result = client.create_user(user("big-name").name(&name)).await;

    // Assert
    assert_eq!(bad_fields(&result.unwrap_err()), fields(&["name"]));
    assert_eq!(redis.dbsize(), 0);
}

/// A valid-looking CreateUser whose encoding is exactly `len` bytes.
fn create_of_encoded_len(len: usize) -> CreateUserRequest {
    let mut request = user("sized");
    request.name = "n".repeat(len - 64);
    let short_by = len - request.encoded_len();
    request.name.push_str(&"n".repeat(short_by));
    assert_eq!(request.encoded_len(), len);
    request
}

#[tokio::test]
async fn a_request_one_byte_over_the_limit_is_refused_by_the_transport() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let at_limit = create_of_encoded_len(MAX_MESSAGE_BYTES);
    let over_limit = create_of_encoded_len(MAX_MESSAGE_BYTES + 1);

    // Act
    let at = tokio::time::timeout(ANSWER_WITHIN, client.create_user(at_limit)).await;
    let over = tokio::time::timeout(ANSWER_WITHIN, client.create_user(over_limit)).await;

    // Assert
    let at = at.expect("a request at the limit is answered");
    assert_eq!(
        bad_fields(at.as_ref().unwrap_err()),
        fields(&["name"]),
        "a request at the limit reaches validation"
    );
    let over = over.expect("a request over the limit is answered, not left hanging");
    let status = over.unwrap_err();
    assert!(
        [Code::OutOfRange, Code::ResourceExhausted].contains(&status.code()),
        "{status:?}"
    );
    assert!(
        status.message().contains("too large")
            && status.message().contains(&MAX_MESSAGE_BYTES.to_string()),
        "the message says the request is too large and what the limit is: {status:?}"
    );
    assert_eq!(redis.dbsize(), 0);
    assert_eq!(service.health().await, ServingStatus::Serving);
    service
        .client()
        .create_user(user("after"))
        .await
        .expect("a normal request still works");
}

#[tokio::test]
async fn strings_that_are_not_utf8_are_invalid_argument() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let not_utf8: &[u8] = &[b'a', 0xC3, 0x28, 0xFF];
    let create_bad_name = [
        bytes_field(1, b"utf8-case"),
        bytes_field(2, not_utf8),
        bytes_field(3, b"a@example.com"),
    ]
    .concat();
    let create_bad_id = [
        bytes_field(1, not_utf8),
        bytes_field(2, b"Name"),
        bytes_field(3, b"a@example.com"),
    ]
    .concat();
    let get_bad_id = bytes_field(1, not_utf8);

    // Act
    let answers = [
        (
            "CreateUser, name not UTF-8",
            raw::call(service.channel(), CREATE, create_bad_name.into()).await,
        ),
        (
            "CreateUser, id not UTF-8",
            raw::call(service.channel(), CREATE, create_bad_id.into()).await,
        ),
        (
            "GetUser, id not UTF-8",
            raw::call(service.channel(), GET, get_bad_id.into()).await,
        ),
    ];

    // Assert
    for (case, answer) in answers {
        let status = answer.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(
            status.message().contains("UTF-8"),
            "{case}: the message says what is wrong: {status:?}"
        );
    }
    assert_eq!(redis.dbsize(), 0);
    assert_eq!(service.health().await, ServingStatus::Serving);
}

/// Bytes from a fixed-seed xorshift generator: arbitrary, yet the same on every run.
fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn bodies_that_are_not_protobuf_are_invalid_argument_and_harmless() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("wire type 7".into(), vec![0xFF; 16]),
        ("tag 0".into(), vec![0x00, 0x01]),
        ("truncated varint".into(), vec![0x08, 0xFF]),
        (
            "length beyond the body".into(),
            vec![0x0A, 0xFF, 0xFF, 0xFF, 0x0F, b'x'],
        ),
        ("text".into(), b"GET /user/1 HTTP/1.1\r\n\r\n".to_vec()),
    ];
    for (seed, len) in [(1, 1), (2, 7), (3, 64), (4, 1000), (5, 100_000)] {
        bodies.push((
            format!("{len} random bytes"),
            pseudo_random_bytes(seed, len),
        ));
    }

    // Act
    let mut wrong = Vec::new();
    for (case, body) in &bodies {
        for path in [CREATE, GET] {
            let answer = tokio::time::timeout(
                ANSWER_WITHIN,
                raw::call(service.channel(), path, Bytes::from(body.clone())),
            )
            .await;
            match answer {
                Ok(Err(status)) if status.code() == Code::InvalidArgument => {}
                other => wrong.push(format!("{path} {case}: {other:?}")),
            }
        }
    }

    // Assert
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(redis.dbsize(), 0);
    assert_eq!(service.ending(), None, "the server is still running");
    assert_eq!(service.health().await, ServingStatus::Serving);
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let body = Bytes::from(bytes_field(1, b"someone"));

    // Act
    let mut answers = Vec::new();
    for path in [
        "/user.v1.UserService/PurgeAllUsers",
        "/user.v1.UserService/createuser",
        "/nope.Svc/X",
        "/user.v2.UserService/GetUser",
    ] {
        answers.push((path, raw::call(service.channel(), path, body.clone()).await));
    }

    // Assert
    for (path, answer) in answers {
        assert_eq!(code_of(&answer), Code::Unimplemented, "{path}: {answer:?}");
    }
    assert_eq!(service.health().await, ServingStatus::Serving);
}

/// Resident memory of `pid` in KiB (`VmRSS` in /proc/<pid>/status).
fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/status: {err}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// Sends `rounds` requests of each kind, `IN_FLIGHT` at a time, and returns
/// every answer that was not the expected refusal.
async fn send_oversized(
    service: &Service,
    over_limit: &Bytes,
    big_name: &Bytes,
    rounds: usize,
) -> Vec<String> {
    const IN_FLIGHT: usize = 4;
    let mut unexpected = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..rounds * 2 {
        let (body, want) = if i % 2 == 0 {
            (
                over_limit.clone(),
                [Code::OutOfRange, Code::ResourceExhausted],
            )
        } else {
            (
                big_name.clone(),
                [Code::InvalidArgument, Code::InvalidArgument],
            )
        };
        let channel = service.channel();
        tasks.spawn(async move {
            let answer =
                tokio::time::timeout(ANSWER_WITHIN, raw::call(channel, CREATE, body)).await;
            match answer {
                Ok(Err(status)) if want.contains(&status.code()) => None,
                other => Some(format!("{other:?}")),
            }
        });
        if tasks.len() >= IN_FLIGHT
            && let Some(done) = tasks.join_next().await
        {
            unexpected.extend(done.expect("request task"));
        }
    }
    while let Some(done) = tasks.join_next().await {
        unexpected.extend(done.expect("request task"));
    }
    unexpected
}

#[tokio::test]
async fn memory_stays_flat_under_a_stream_of_oversized_requests() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let pid = service.pid().as_raw();
    let over_limit = Bytes::from(create_of_encoded_len(MAX_MESSAGE_BYTES + 16).encode_to_vec());
    let big_name = Bytes::from(user("big").name(&"n".repeat(1 << 20)).encode_to_vec());
    // Warm-up: the allocator and the HTTP/2 connection reach their working size.
    let warm_up = send_oversized(&service, &over_limit, &big_name, 100).await;
    assert!(warm_up.is_empty(), "{warm_up:?}");
    let before = rss_kib(pid);

    // Act
    let unexpected = send_oversized(&service, &over_limit, &big_name, 1000).await;
    let after = rss_kib(pid);

    // Assert
    eprintln!("HOSTILE-MEMORY rss before {before} KiB, after 2000 oversized requests {after} KiB");
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    // Each request carries 1-2 MiB: keeping even one buffer per request
    // would add about 3 GiB. 64 MiB leaves room for allocator arenas and
    // fragmentation on a machine shared with other tests, and still catches
    // a leak of 1/40 of the data sent.
    let growth_kib = after.saturating_sub(before);
    assert!(
        growth_kib < 64 * 1024,
        "RSS grew by {growth_kib} KiB ({before} -> {after} KiB)"
    );
    assert_eq!(service.health().await, ServingStatus::Serving);
    assert_eq!(redis.dbsize(), 0);
}
