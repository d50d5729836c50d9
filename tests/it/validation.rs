//! Input rules: every bad field is named in a `google.rpc.BadRequest`, the
//! edges of each rule are accepted, and invalid input never reaches Redis.

use tonic::Code;
use user_service::pb::user::v1::CreateUserRequest;

use crate::support::{
    App, Monitor, RedisServer, ServiceEnv, Tweak, bad_fields, code_of, fields, get_request, user,
};

/// An email address of exactly `len` characters (at least 13) with a short
/// local part and domain labels under 63 characters.
fn email_of_len(len: usize) -> String {
    let mut local = String::from("a");
    let mut domain = String::from("example.com");
    loop {
        match len - local.len() - 1 - domain.len() {
            0 => break,
            1 => local.push('a'),
            room => domain = format!("{}.{domain}", "d".repeat((room - 1).min(50))),
        }
    }
    format!("{local}@{domain}")
}

/// Requests with exactly one bad field, and the field each must name.
fn single_bad_field_cases() -> Vec<(&'static str, CreateUserRequest, &'static str)> {
    let valid = || user("valid-id");
    vec![
        ("empty id", valid().id(""), "id"),
        ("id of 129 characters", valid().id(&"i".repeat(129)), "id"),
        ("id with a space", valid().id("has space"), "id"),
        ("id with a slash", valid().id("a/b"), "id"),
        ("id with a colon", valid().id("a:b"), "id"),
        ("id with a non-ASCII letter", valid().id("zoë"), "id"),
        ("empty name", valid().name(""), "name"),
        (
            "name of 201 characters",
            valid().name(&"n".repeat(201)),
            "name",
        ),
        ("name with BEL", valid().name("ring\u{7}"), "name"),
        ("name with a newline", valid().name("two\nlines"), "name"),
        ("name with a tab", valid().name("tab\tbed"), "name"),
        ("name with DEL", valid().name("del\u{7f}"), "name"),
        ("name with U+0085", valid().name("nel\u{85}"), "name"),
        ("name with RLO", valid().name("\u{202E}evil"), "name"),
        ("name with LRE", valid().name("a\u{202A}b"), "name"),
        ("name with LRI", valid().name("a\u{2066}b"), "name"),
        ("name with PDI", valid().name("a\u{2069}b"), "name"),
        ("empty email", valid().email(""), "email"),
        ("email without @", valid().email("example.com"), "email"),
        (
            "email with two @",
            valid().email("a@b@example.com"),
            "email",
        ),
        (
            "email without local part",
            valid().email("@example.com"),
            "email",
        ),
        (
            "email domain without a dot",
            valid().email("a@localhost"),
            "email",
        ),
        (
            "email of 255 characters",
            valid().email(&email_of_len(255)),
            "email",
        ),
        ("ttl_seconds 0", valid().ttl(0), "ttl_seconds"),
        ("ttl_seconds 86401", valid().ttl(86_401), "ttl_seconds"),
    ]
}

#[tokio::test]
async fn each_bad_field_is_named_and_nothing_reaches_redis() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let monitor = Monitor::start(&redis);

    // Act
    let mut mismatches = Vec::new();
    for (case, request, field) in single_bad_field_cases() {
        let result = client.create_user(request).await;
        let named = match &result {
            Err(status) if status.code() == Code::InvalidArgument => bad_fields(status),
            other => {
                mismatches.push(format!("{case}: expected INVALID_ARGUMENT, got {other:?}"));
                continue;
            }
        };
        if named != fields(&[field]) {
            mismatches.push(format!(
                "{case}: expected [{field}], BadRequest names {named:?}"
            ));
        }
    }

    // Assert
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
    assert_eq!(redis.dbsize(), 0, "invalid creates wrote nothing");
    assert_eq!(
        monitor.user_key_commands(),
        Vec::<String>::new(),
        "invalid creates never reach Redis"
    );
}

#[tokio::test]
async fn request_with_four_bad_fields_names_all_four() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let all_bad = CreateUserRequest {
        id: "not an id!".into(),
        name: String::new(),
        email: "nope".into(),
        ttl_seconds: Some(0),
    };

    // Act
    let status = client.create_user(all_bad).await.unwrap_err();

    // Assert
    assert_eq!(
        bad_fields(&status),
        fields(&["id", "name", "email", "ttl_seconds"])
    );
    assert_eq!(redis.dbsize(), 0);
}

#[tokio::test]
async fn get_with_a_malformed_id_is_invalid_argument_and_reaches_no_redis() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let monitor = Monitor::start(&redis);

    // Act
    let mut mismatches = Vec::new();
    for id in [
        String::new(),
        "has space".into(),
        "x".repeat(129),
        "user:x".into(),
    ] {
        let result = client.get_user(get_request(&id)).await;
        match &result {
            Err(status) if status.code() == Code::InvalidArgument => {
                if bad_fields(status) != fields(&["id"]) {
                    mismatches.push(format!("{id:?}: BadRequest {status:?}"));
                }
            }
            other => mismatches.push(format!("{id:?}: expected INVALID_ARGUMENT, got {other:?}")),
        }
    }

    // Assert
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
    let reads: Vec<String> = monitor
        .commands()
        .into_iter()
        .filter(|cmd| cmd.starts_with("\"GET\"") || cmd.starts_with("\"PTTL\""))
        .collect();
    assert_eq!(
        reads,
        Vec::<String>::new(),
        "invalid gets never reach Redis"
    );
}

#[tokio::test]
async fn values_at_the_edges_of_each_rule_are_accepted() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let cases = [
        ("id of 128 characters", user(&"i".repeat(128))),
        ("id using every allowed symbol", user("Az09_.-@+")),
        ("id of one character", user("q")),
        ("name of one character", user("short-name").name("N")),
        (
            "name of 200 non-ASCII characters",
            user("long-name").name(&"é".repeat(200)),
        ),
        (
            "name with spaces, apostrophe, emoji",
            user("nice-name").name("Zoë O'Brien 🚀"),
        ),
        (
            "email of 254 characters",
            user("long-email").email(&email_of_len(254)),
        ),
        ("ttl_seconds 1", user("ttl-min").ttl(1)),
        ("ttl_seconds 86400", user("ttl-max").ttl(86_400)),
    ];

    // Act
    let mut refused = Vec::new();
    for (case, request) in cases {
        let result = client.create_user(request).await;
        if let Err(status) = result {
            refused.push(format!("{case}: {status:?}"));
        }
    }

    // Assert
    assert!(
        refused.is_empty(),
        "valid requests refused:\n{}",
        refused.join("\n")
    );
    assert!((86_390..=86_400).contains(&redis.ttl("user:ttl-max")));
}

#[tokio::test]
async fn configured_max_ttl_bounds_ttl_seconds() {
    // Arrange
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis).env("USER_MAX_TTL_SECONDS", "120");
    let service = App::start(env).await;
    let mut client = service.client();

    // Act
    let zero = client.create_user(user("zero").ttl(0)).await;
    let above = client.create_user(user("above").ttl(121)).await;
    let at_max = client.create_user(user("at-max").ttl(120)).await;

    // Assert
    assert_eq!(bad_fields(&zero.unwrap_err()), fields(&["ttl_seconds"]));
    assert_eq!(bad_fields(&above.unwrap_err()), fields(&["ttl_seconds"]));
    assert_eq!(code_of(&at_max), Code::Ok, "{at_max:?}");
    assert_eq!(at_max.unwrap().into_inner().ttl_seconds, 120);
    assert_eq!(redis.keys("*"), ["user:at-max"]);
}
