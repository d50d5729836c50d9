//! The stored form of a user: the JSON object `{"id","name","email"}` the
//! old demo wrote, and the checks a value read back must pass before it is
//! answered as a user. Pure functions; no Redis commands here.

use serde::Serialize;
use serde_json::Value;

use crate::domain::{NewUser, UserId, check_user_fields};

/// Largest stored value read as a user, in bytes. A valid user is at most
/// about 2 KB as this service writes it (id 128, name 200 and email 254
/// characters of up to 4 bytes); a writer that escapes non-ASCII as
/// `\uXXXX` pairs (Python's `json.dumps` does by default) needs up to
/// 12 bytes per character, about 5.6 KB. Anything longer cannot be a user
/// and is never read whole.
pub const MAX_VALUE_BYTES: usize = 8192;

/// Why a stored value is not a user. It never holds the value itself (a
/// corrupt value may hold anything, personal data included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Longer than [`MAX_VALUE_BYTES`].
    #[error("the value is {bytes} bytes, more than a user can be ({MAX_VALUE_BYTES})")]
    TooLarge {
        /// Its length.
        bytes: u64,
    },
    /// The key holds a list, hash, set... rather than a string.
    #[error("the key does not hold a string")]
    NotAString,
    /// Not JSON at all.
    #[error("the value is not JSON (line {line}, column {column})")]
    NotJson {
        /// Where parsing stopped.
        line: usize,
        /// Where parsing stopped.
        column: usize,
    },
    /// JSON, but not an object (an array, a string, a number...).
    #[error("the value is JSON but not an object")]
    NotAnObject,
    /// A field is absent or not a string.
    #[error("field {0:?} is missing or not a string")]
    MissingField(&'static str),
    /// Fields that break CreateUser's input rules.
    #[error("field(s) {} break the input rules", .0.join(", "))]
    InvalidFields(Vec<String>),
    /// The id inside differs from the key's.
    #[error("the id inside differs from the key's")]
    IdMismatch,
}

/// A user as stored, fields checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFields {
    /// Id (equal to the key's).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// The JSON layout the old demo wrote and reads; field order kept for `redis-cli GET`.
#[derive(Serialize)]
struct UserJsonRef<'a> {
    id: &'a str,
    name: &'a str,
    email: &'a str,
}

/// The stored form of `user`. (serde_json fails only on non-string map
/// keys or a failing writer, neither of which can happen here.)
pub fn encode(user: &NewUser) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&UserJsonRef {
        id: user.id.as_str(),
        name: &user.name,
        email: &user.email,
    })
}

/// Checks a value read under the key of `id`: at most [`MAX_VALUE_BYTES`]
/// (`len` is its full length, `prefix` what was read of it), a JSON
/// object whose `id`, `name` and `email` are strings valid by CreateUser's
/// rules, and whose id is the key's. Extra fields are allowed (a newer
/// writer may add some).
pub fn decode(id: &UserId, len: u64, prefix: &[u8]) -> Result<UserFields, Corruption> {
    let too_large = usize::try_from(len).map_or(true, |len| len > MAX_VALUE_BYTES);
    if too_large || prefix.len() > MAX_VALUE_BYTES {
        return Err(Corruption::TooLarge {
            bytes: len.max(prefix.len() as u64),
        });
    }
    // Into a map, not a struct: serde accepts a JSON array for a struct
    // (`["id","name","email"]`), which is not the stored layout.
    let value: Value = serde_json::from_slice(prefix).map_err(|err| Corruption::NotJson {
        line: err.line(),
        column: err.column(),
    })?;
    let Value::Object(object) = value else {
        return Err(Corruption::NotAnObject);
    };
    let field = |name: &'static str| -> Result<String, Corruption> {
        match object.get(name) {
            Some(Value::String(text)) => Ok(text.clone()),
            _ => Err(Corruption::MissingField(name)),
        }
    };
    let fields = UserFields {
        id: field("id")?,
        name: field("name")?,
        email: field("email")?,
    };
    if let Err(invalid) = check_user_fields(&fields.id, &fields.name, &fields.email) {
        return Err(Corruption::InvalidFields(
            invalid
                .violations
                .into_iter()
                .map(|v| v.field.into_owned())
                .collect(),
        ));
    }
    if fields.id != id.as_str() {
        return Err(Corruption::IdMismatch);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TtlPolicy;
    use serde_json::Map;

    /// A JSON object of string fields.
    fn object(pairs: &[(&str, &str)]) -> Vec<u8> {
        let map: Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        serde_json::to_vec(&Value::Object(map)).expect("a map of strings serialises")
    }

    fn id(raw: &str) -> UserId {
        UserId::parse(raw).expect("valid id")
    }

    fn read(raw: &str, bytes: &[u8]) -> Result<UserFields, Corruption> {
        decode(&id(raw), bytes.len() as u64, bytes)
    }

    #[test]
    fn what_create_writes_reads_back() {
        let policy = TtlPolicy {
            default_seconds: 60,
            max_seconds: 60,
        };
        let user = NewUser::parse("ada", "Ada \"L\" 🚀", "ada@example.com", None, policy)
            .expect("valid user");
        let bytes = encode(&user).expect("encodes");
        assert_eq!(
            read("ada", &bytes),
            Ok(UserFields {
                id: "ada".into(),
                name: "Ada \"L\" 🚀".into(),
                email: "ada@example.com".into(),
            })
        );
    }

    #[test]
    fn the_old_demos_layout_and_extra_fields_are_accepted() {
        let demo = br#"{"id": "user123", "name": "user123", "email": "user@user.com"}"#;
        assert!(read("user123", demo).is_ok());
        let extra = br#"{"id":"u","name":"N","email":"a@b.c","etag":"x"}"#;
        assert!(read("u", extra).is_ok());
        // Python's json.dumps escapes non-ASCII; the longest such user fits.
        let name = "\\ud83d\\ude80".repeat(200);
        let email = format!("{}@example.com", "\\u00e9".repeat(240));
        let escaped = format!(
            r#"{{"id": "{}", "name": "{name}", "email": "{email}"}}"#,
            "a".repeat(128)
        );
        assert!(escaped.len() <= MAX_VALUE_BYTES, "{}", escaped.len());
        assert!(read(&"a".repeat(128), escaped.as_bytes()).is_ok());
    }

    #[test]
    fn each_corrupt_shape_is_named_without_the_value() {
        let secret = "secret-personal-data";
        let cases: Vec<(Vec<u8>, Corruption)> = vec![
            (
                object(&[("id", "other"), ("name", secret), ("email", "a@b.c")]),
                Corruption::IdMismatch,
            ),
            (
                object(&[("id", "u"), ("name", "nul\0name"), ("email", "a@b.c")]),
                Corruption::InvalidFields(vec!["name".into()]),
            ),
            (
                object(&[("id", "u"), ("name", "bidi\u{202e}"), ("email", "a@b.c")]),
                Corruption::InvalidFields(vec!["name".into()]),
            ),
            (
                br#"["u", "secret-personal-data", "a@b.c"]"#.to_vec(),
                Corruption::NotAnObject,
            ),
            (
                b"secret-personal-data".to_vec(),
                Corruption::NotJson { line: 1, column: 1 },
            ),
            (
                br#"{"id":"u","name":"N"}"#.to_vec(),
                Corruption::MissingField("email"),
            ),
            (
                br#"{"id":"u","name":7,"email":"a@b.c"}"#.to_vec(),
                Corruption::MissingField("name"),
            ),
        ];
        for (bytes, want) in cases {
            let got = read("u", &bytes);
            assert_eq!(got, Err(want), "{}", String::from_utf8_lossy(&bytes));
            let text = got.unwrap_err().to_string();
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn a_value_longer_than_the_bound_is_refused_by_its_length() {
        let prefix = vec![b'x'; MAX_VALUE_BYTES];
        assert_eq!(
            decode(&id("u"), 20_000_000, &prefix),
            Err(Corruption::TooLarge { bytes: 20_000_000 })
        );
        // The length read in the same round trip may be stale; the prefix counts too.
        let longer = vec![b'x'; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            decode(&id("u"), 10, &longer),
            Err(Corruption::TooLarge { .. })
        ));
    }
}
