//! Validated domain types: a `NewUser` or `UserId` can only be built from
//! input that passes DESIGN.md's rules, so nothing invalid reaches the store.
//! This module knows nothing of gRPC or Redis.

use std::fmt;

/// Longest id accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email accepted, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;

/// One rule a field broke, named by the field's proto name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Proto field name (`id`, `name`, `email`, `ttl_seconds`).
    pub field: &'static str,
    /// What is wrong, written for the caller.
    pub description: String,
}

/// Every rule a request broke; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {}", .violations.iter().map(|v| v.field).collect::<Vec<_>>().join(", "))]
pub struct ValidationError {
    /// The broken rules, one per bad field, in field order.
    pub violations: Vec<FieldViolation>,
}

/// Collects violations so a request reports every bad field, not only the first.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check<T>(&mut self, field: &'static str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldViolation { field, description });
                None
            }
        }
    }

    fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { violations: self.0 })
        }
    }
}

/// A user id: 1-128 characters of `A-Z a-z 0-9 _ . - @ +`.
///
/// The alphabet keeps ids safe inside a Redis key: no `{`/`}` (which would
/// change the cluster hash slot), no `*` or `:` (glob and key-namespace
/// characters), no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    /// Checks `raw` against the id rules.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        // All allowed characters are ASCII, so the byte length is the character count.
        if raw.len() > MAX_ID_CHARS && raw.is_ascii() {
            return Err(format!("must be at most {MAX_ID_CHARS} characters"));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@' | '+')))
        {
            return Err(format!(
                "must contain only A-Z a-z 0-9 _ . - @ + (found {bad:?})"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a display name: 1-200 characters, no control or bidi-control characters.
fn check_name(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    // Bytes bound characters from above, so a huge name is refused without counting it.
    if raw.len() > MAX_NAME_CHARS * 4 || raw.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if let Some(bad) = raw.chars().find(|c| c.is_control() || is_bidi_control(*c)) {
        return Err(format!(
            "must not contain control or bidirectional-control characters (found {})",
            bad.escape_unicode()
        ));
    }
    Ok(())
}

/// Bidirectional embedding, override and isolate controls, which can make a
/// name display differently from what is stored ("Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks an email: at most 254 characters, exactly one `@`, a non-empty
/// local part and a domain holding a dot.
fn check_email(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.len() > MAX_EMAIL_CHARS * 4 || raw.chars().count() > MAX_EMAIL_CHARS {
        return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
    }
    if raw
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || is_bidi_control(c))
    {
        return Err("must not contain whitespace or control characters".into());
    }
    let Some((local, domain)) = raw.split_once('@') else {
        return Err("must contain one @".into());
    };
    if domain.contains('@') {
        return Err("must contain exactly one @".into());
    }
    if local.is_empty() {
        return Err("must have a non-empty part before the @".into());
    }
    let labels_ok = domain.split('.').all(|label| !label.is_empty());
    if !domain.contains('.') || !labels_ok {
        return Err("must have a domain with a dot after the @ (like example.com)".into());
    }
    Ok(())
}

/// Limits that come from configuration rather than from the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Expiry applied when the caller sends none, in seconds.
    pub default_seconds: u32,
    /// Largest expiry a caller may ask for, in seconds.
    pub max_seconds: u32,
}

impl TtlPolicy {
    /// Applies the policy to the caller's optional ttl.
    pub fn resolve(&self, requested: Option<u32>) -> Result<u32, String> {
        match requested {
            None => Ok(self.default_seconds),
            Some(ttl) if ttl >= 1 && ttl <= self.max_seconds => Ok(ttl),
            Some(_) => Err(format!(
                "must be between 1 and {} seconds when set",
                self.max_seconds
            )),
        }
    }
}

/// A user that passed validation, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The key part of the user.
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Seconds until the user expires.
    pub ttl_seconds: u32,
}

impl NewUser {
    /// Validates every field and reports all violations at once.
    pub fn parse(
        id: &str,
        name: &str,
        email: &str,
        ttl_seconds: Option<u32>,
        policy: TtlPolicy,
    ) -> Result<Self, ValidationError> {
        let mut violations = Violations::default();
        let id = violations.check("id", UserId::parse(id));
        violations.check("name", check_name(name));
        violations.check("email", check_email(email));
        let ttl = violations.check("ttl_seconds", policy.resolve(ttl_seconds));
        violations.finish()?;
        match (id, ttl) {
            (Some(id), Some(ttl_seconds)) => Ok(Self {
                id,
                name: name.to_owned(),
                email: email.to_owned(),
                ttl_seconds,
            }),
            // finish() returned Ok, so every check above passed.
            _ => unreachable!("violations were empty but a field failed"),
        }
    }
}

/// Validates the id of a read.
pub fn parse_lookup_id(id: &str) -> Result<UserId, ValidationError> {
    let mut violations = Violations::default();
    let parsed = violations.check("id", UserId::parse(id));
    violations.finish()?;
    parsed.ok_or_else(|| unreachable!("violations were empty but the id failed"))
}

/// Validates a WatchUsers `id_prefix`: empty (every user) or the start of
/// a valid id, so that a prefix which no id can match is told, not watched forever.
pub fn parse_id_prefix(prefix: &str) -> Result<String, ValidationError> {
    let mut violations = Violations::default();
    if !prefix.is_empty() {
        violations.check("id_prefix", UserId::parse(prefix));
    }
    violations.finish()?;
    Ok(prefix.to_owned())
}

/// Checks a user read back from storage by CreateUser's rules for `id`,
/// `name` and `email` (a value another program wrote may break them).
pub fn check_user_fields(id: &str, name: &str, email: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::default();
    violations.check("id", UserId::parse(id));
    violations.check("name", check_name(name));
    violations.check("email", check_email(email));
    violations.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_prefix_is_empty_or_the_start_of_a_valid_id() {
        assert_eq!(parse_id_prefix("").unwrap(), "");
        assert_eq!(parse_id_prefix("team-a.").unwrap(), "team-a.");
        let err = parse_id_prefix("user:*").unwrap_err();
        assert_eq!(err.violations[0].field, "id_prefix");
        assert!(parse_id_prefix(&"a".repeat(MAX_ID_CHARS + 1)).is_err());
    }

    const POLICY: TtlPolicy = TtlPolicy {
        default_seconds: 60,
        max_seconds: 86_400,
    };

    fn fields(err: ValidationError) -> Vec<&'static str> {
        err.violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn ids_accept_the_documented_alphabet() {
        for ok in ["a", "user123", "A.b-c_d@e+f", &"x".repeat(128)] {
            assert!(UserId::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn ids_refuse_everything_else() {
        let too_long = "x".repeat(129);
        for bad in [
            "", "a b", "a{b}", "a*", "a:b", "a\r\nb", "a\0b", "é", "a/b", &too_long,
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn names_refuse_controls_and_bidi_overrides() {
        assert!(check_name("Ada Lovelace").is_ok());
        assert!(check_name("Zoë 李").is_ok());
        assert!(check_name(&"é".repeat(200)).is_ok());
        for bad in [
            "",
            "a\nb",
            "a\u{7}",
            "evil\u{202E}txt",
            "x\u{2066}y",
            "\u{85}",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_name(&"é".repeat(201)).is_err());
        assert!(check_name(&"x".repeat(1 << 20)).is_err());
    }

    #[test]
    fn emails_need_one_at_a_local_part_and_a_dotted_domain() {
        assert!(check_email("user@user.com").is_ok());
        assert!(check_email("a.b+c@mail.example.org").is_ok());
        for bad in [
            "",
            "user",
            "@x.com",
            "a@b",
            "a@@b.com",
            "a@b@c.com",
            "a@.com",
            "a@b.",
            "a b@c.com",
            "a@b.com\n",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(check_email(&long).is_err());
    }

    #[test]
    fn ttl_defaults_and_bounds() {
        assert_eq!(POLICY.resolve(None), Ok(60));
        assert_eq!(POLICY.resolve(Some(1)), Ok(1));
        assert_eq!(POLICY.resolve(Some(86_400)), Ok(86_400));
        assert!(POLICY.resolve(Some(0)).is_err());
        assert!(POLICY.resolve(Some(86_401)).is_err());
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = NewUser::parse("a b", "", "nope", Some(0), POLICY).unwrap_err();
        assert_eq!(fields(err), ["id", "name", "email", "ttl_seconds"]);
    }

    #[test]
    fn the_old_demo_body_is_valid() {
        let user = NewUser::parse("user123", "user123", "user@user.com", None, POLICY).unwrap();
        assert_eq!(user.id.as_str(), "user123");
        assert_eq!(user.ttl_seconds, 60);
    }

    /// Property tests: arbitrary input never panics, what is accepted obeys
    /// DESIGN.md's rules, and a refusal names exactly the fields that break
    /// them. The oracles below restate each rule independently of the code
    /// under test.
    mod props {
        use proptest::prelude::*;

        use super::*;

        fn bidi(c: char) -> bool {
            ('\u{202A}'..='\u{202E}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c)
        }

        fn id_ok(id: &str) -> bool {
            (1..=128).contains(&id.chars().count())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-@+".contains(c))
        }

        fn name_ok(name: &str) -> bool {
            (1..=200).contains(&name.chars().count())
                && !name.chars().any(|c| c.is_control() || bidi(c))
        }

        fn email_ok(email: &str) -> bool {
            let parts: Vec<&str> = email.split('@').collect();
            (1..=254).contains(&email.chars().count())
                && !email
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || bidi(c))
                && parts.len() == 2
                && !parts[0].is_empty()
                && parts[1].contains('.')
                && parts[1].split('.').all(|label| !label.is_empty())
        }

        fn ttl_ok(ttl: Option<u32>) -> bool {
            ttl.is_none_or(|t| (1..=POLICY.max_seconds).contains(&t))
        }

        /// Ids: valid ones, near-misses with key-breaking characters, arbitrary unicode, long ones.
        fn ids() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Za-z0-9_.@+-]{1,128}",
                "[A-Za-z0-9_.@+{}*: \r\n\t\0\u{7f}é-]{0,12}",
                "[a-z]{120,140}",
                any::<String>(),
                "\\PC{0,300}",
            ]
        }

        /// Names: printable text, text with controls and bidi overrides, arbitrary, long.
        fn names() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{1,200}",
                "[a-z \u{0}-\u{1f}\u{7f}-\u{9f}\u{202a}-\u{202e}\u{2066}-\u{2069}\u{200e}\u{200f}]{0,20}",
                any::<String>(),
                "[é李x]{190,210}",
                "x{790,810}",
            ]
        }

        /// Emails: well-formed ones, near-misses built from the characters that matter, arbitrary.
        fn emails() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9.+]{1,20}@[a-z]{1,10}\\.[a-z]{2,5}",
                "[a-z@. \n\u{202e}]{0,15}",
                any::<String>(),
            ]
        }

        fn ttls() -> impl Strategy<Value = Option<u32>> {
            prop_oneof![
                Just(None),
                Just(Some(0)),
                Just(Some(1)),
                Just(Some(86_400)),
                Just(Some(86_401)),
                Just(Some(u32::MAX)),
                any::<u32>().prop_map(Some),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn validation_accepts_exactly_the_documented_input(
                id in ids(), name in names(), email in emails(), ttl in ttls()
            ) {
                let expected: Vec<&str> = [
                    ("id", id_ok(&id)),
                    ("name", name_ok(&name)),
                    ("email", email_ok(&email)),
                    ("ttl_seconds", ttl_ok(ttl)),
                ]
                .into_iter()
                .filter(|(_, ok)| !ok)
                .map(|(field, _)| field)
                .collect();

                match NewUser::parse(&id, &name, &email, ttl, POLICY) {
                    Ok(user) => {
                        prop_assert!(expected.is_empty(), "accepted, but {expected:?} break the rules");
                        prop_assert_eq!(user.id.as_str(), id.as_str());
                        prop_assert_eq!(user.ttl_seconds, ttl.unwrap_or(POLICY.default_seconds));
                    }
                    Err(err) => {
                        prop_assert!(err.violations.iter().all(|v| !v.description.is_empty()));
                        prop_assert_eq!(fields(err), expected);
                    }
                }
            }

            #[test]
            fn lookup_ids_follow_the_same_grammar(id in ids()) {
                match parse_lookup_id(&id) {
                    Ok(parsed) => {
                        prop_assert!(id_ok(&id), "accepted {id:?}");
                        prop_assert_eq!(parsed.as_str(), id.as_str());
                    }
                    Err(err) => {
                        prop_assert!(!id_ok(&id), "refused {id:?}");
                        prop_assert_eq!(fields(err), ["id"]);
                    }
                }
            }
        }
    }
}
