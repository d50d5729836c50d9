//! Validated domain types: a `NewUser` or `UserId` can only be built from
//! input that passes DESIGN.md's rules, so nothing invalid reaches the store.
//! This module knows nothing of gRPC or Redis.

use std::{borrow::Cow, fmt};

/// Longest id accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email accepted, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;

/// One rule a field broke, named by the field's proto name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Proto field path (`id`, `name`, `user.email`, `update_mask`, `ids[3]`...).
    pub field: Cow<'static, str>,
    /// What is wrong, written for the caller.
    pub description: String,
}

/// Every rule a request broke; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {}", .violations.iter().map(|v| v.field.as_ref()).collect::<Vec<_>>().join(", "))]
pub struct ValidationError {
    /// The broken rules, one per bad field, in field order.
    pub violations: Vec<FieldViolation>,
}

/// Collects violations so a request reports every bad field, not only the first.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check<T>(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldViolation {
                    field: field.into(),
                    description,
                });
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

/// Longest etag accepted. Etags this service issues are 40 hex digits; a
/// longer one cannot match, and is refused rather than sent to Redis.
pub const MAX_ETAG_CHARS: usize = 64;
/// Most ids one BatchGetUsers may ask for.
pub const MAX_BATCH_IDS: usize = 100;

/// A caller's "change only this version": `None` when the request's etag is empty.
fn parse_etag(raw: &str) -> Result<Option<String>, String> {
    if raw.is_empty() {
        Ok(None)
    } else if raw.len() > MAX_ETAG_CHARS {
        Err(format!(
            "must be at most {MAX_ETAG_CHARS} characters (an etag this service answered)"
        ))
    } else {
        Ok(Some(raw.to_owned()))
    }
}

/// A validated UpdateUser: the user, the new value of each field to change,
/// and the version it may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserUpdate {
    /// The user to change.
    pub id: UserId,
    /// The new name, if the mask names it.
    pub name: Option<String>,
    /// The new email, if the mask names it.
    pub email: Option<String>,
    /// Change only if this is the stored user's etag.
    pub etag: Option<String>,
}

/// The fields of a user in an update request, as sent.
#[derive(Debug, Clone, Copy)]
pub struct UserFieldsIn<'a> {
    /// `user.id`.
    pub id: &'a str,
    /// `user.name`.
    pub name: &'a str,
    /// `user.email`.
    pub email: &'a str,
}

impl UserUpdate {
    /// Validates an update: `user` must be set with a valid id; `mask`
    /// paths are `name` and `email` (`None` or empty: both), and only the
    /// fields it names are checked and changed.
    pub fn parse(
        user: Option<UserFieldsIn<'_>>,
        mask: Option<&[String]>,
        etag: &str,
    ) -> Result<Self, ValidationError> {
        let mut violations = Violations::default();
        let (mut change_name, mut change_email) = (false, false);
        match mask {
            None | Some([]) => (change_name, change_email) = (true, true),
            Some(paths) => {
                for path in paths {
                    match path.as_str() {
                        "name" => change_name = true,
                        "email" => change_email = true,
                        other => {
                            violations.check::<()>(
                                "update_mask",
                                Err(format!(
                                    "unknown path {:?}; the paths are name and email",
                                    other.chars().take(64).collect::<String>()
                                )),
                            );
                        }
                    }
                }
            }
        }
        let etag = violations.check("etag", parse_etag(etag)).flatten();
        let Some(user) = user else {
            violations.check::<()>("user", Err("must be set (user.id names the user)".into()));
            return Err(violations.finish().expect_err("a violation was just added"));
        };
        let id = violations.check("user.id", UserId::parse(user.id));
        if change_name {
            violations.check("user.name", check_name(user.name));
        }
        if change_email {
            violations.check("user.email", check_email(user.email));
        }
        violations.finish()?;
        let id = id.ok_or_else(|| unreachable!("violations were empty but the id failed"))?;
        Ok(Self {
            id,
            name: change_name.then(|| user.name.to_owned()),
            email: change_email.then(|| user.email.to_owned()),
            etag,
        })
    }
}

/// Validates a DeleteUser: the id, and the version it may delete.
pub fn parse_delete(id: &str, etag: &str) -> Result<(UserId, Option<String>), ValidationError> {
    let mut violations = Violations::default();
    let id = violations.check("id", UserId::parse(id));
    let etag = violations.check("etag", parse_etag(etag)).flatten();
    violations.finish()?;
    let id = id.ok_or_else(|| unreachable!("violations were empty but the id failed"))?;
    Ok((id, etag))
}

/// Validates a RefreshUser: the id and the new time to live (`policy`
/// applies, as in CreateUser).
pub fn parse_refresh(
    id: &str,
    ttl_seconds: Option<u32>,
    policy: TtlPolicy,
) -> Result<(UserId, u32), ValidationError> {
    let mut violations = Violations::default();
    let id = violations.check("id", UserId::parse(id));
    let ttl = violations.check("ttl_seconds", policy.resolve(ttl_seconds));
    violations.finish()?;
    match (id, ttl) {
        (Some(id), Some(ttl)) => Ok((id, ttl)),
        _ => unreachable!("violations were empty but a field failed"),
    }
}

/// Validates BatchGetUsers' ids: 1-[`MAX_BATCH_IDS`] of them (field
/// `ids`), each valid (field `ids[N]`, N counted from 0 in the request).
/// Returns them in request order, each once.
pub fn parse_batch_ids(ids: &[String]) -> Result<Vec<UserId>, ValidationError> {
    let mut violations = Violations::default();
    if ids.is_empty() || ids.len() > MAX_BATCH_IDS {
        // Per-id checks of an oversized batch would only add noise.
        violations.check::<()>(
            "ids",
            Err(format!(
                "must hold 1 to {MAX_BATCH_IDS} ids (got {})",
                ids.len()
            )),
        );
        return Err(ValidationError {
            violations: violations.0,
        });
    }
    let mut parsed = Vec::with_capacity(ids.len());
    for (index, raw) in ids.iter().enumerate() {
        if let Some(id) = violations.check(format!("ids[{index}]"), UserId::parse(raw))
            && !parsed.contains(&id)
        {
            parsed.push(id);
        }
    }
    violations.finish()?;
    Ok(parsed)
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

    fn fields(err: ValidationError) -> Vec<String> {
        err.violations
            .into_iter()
            .map(|v| v.field.into_owned())
            .collect()
    }

    fn some_user<'a>(id: &'a str, name: &'a str, email: &'a str) -> Option<UserFieldsIn<'a>> {
        Some(UserFieldsIn { id, name, email })
    }

    #[test]
    fn an_update_changes_the_masked_fields_only() {
        let paths = ["email".to_owned()];
        let update = UserUpdate::parse(some_user("ada", "", "a@b.co"), Some(&paths), "")
            .expect("an empty name is fine when the mask leaves it alone");
        assert_eq!(update.name, None);
        assert_eq!(update.email.as_deref(), Some("a@b.co"));
        assert_eq!(update.etag, None);
        let both = UserUpdate::parse(some_user("ada", "Ada", "a@b.co"), Some(&[]), "e1")
            .expect("an empty mask means both fields");
        assert_eq!(
            (
                both.name.as_deref(),
                both.email.as_deref(),
                both.etag.as_deref()
            ),
            (Some("Ada"), Some("a@b.co"), Some("e1"))
        );
    }

    #[test]
    fn an_update_names_each_bad_field() {
        let paths = ["name".to_owned(), "id".to_owned()];
        let err = UserUpdate::parse(some_user("a b", "", "x"), Some(&paths), "").unwrap_err();
        assert_eq!(fields(err), ["update_mask", "user.id", "user.name"]);
        let err = UserUpdate::parse(some_user("a", "N", "bad"), None, &"e".repeat(65)).unwrap_err();
        assert_eq!(fields(err), ["etag", "user.email"]);
        let err = UserUpdate::parse(None, None, "").unwrap_err();
        assert_eq!(fields(err), ["user"]);
    }

    #[test]
    fn batches_hold_1_to_100_valid_ids_answered_once_each() {
        let ids = |raw: &[&str]| raw.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let parsed = parse_batch_ids(&ids(&["b", "a", "b", "c"])).expect("valid");
        let parsed: Vec<&str> = parsed.iter().map(UserId::as_str).collect();
        assert_eq!(parsed, ["b", "a", "c"]);
        let err = parse_batch_ids(&ids(&["a", "b", "c", "no good", "d", ""])).unwrap_err();
        assert_eq!(fields(err), ["ids[3]", "ids[5]"]);
        assert_eq!(fields(parse_batch_ids(&[]).unwrap_err()), ["ids"]);
        let many = vec!["a".to_owned(); 101];
        assert_eq!(fields(parse_batch_ids(&many).unwrap_err()), ["ids"]);
        assert!(parse_batch_ids(&vec!["a".to_owned(); 100]).is_ok());
    }

    #[test]
    fn refresh_and_delete_check_id_ttl_and_etag() {
        assert_eq!(parse_refresh("a", None, POLICY).unwrap().1, 60);
        let err = parse_refresh("", Some(0), POLICY).unwrap_err();
        assert_eq!(fields(err), ["id", "ttl_seconds"]);
        assert_eq!(parse_delete("a", "").unwrap().1, None);
        assert_eq!(fields(parse_delete("a:b", "").unwrap_err()), ["id"]);
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
