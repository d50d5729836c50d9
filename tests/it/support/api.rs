//! Request builders and assertions on answers of `user.v1.UserService`.

use std::{collections::BTreeSet, time::SystemTime};

use tonic::{Code, Status};
use tonic_types::StatusExt;
use user_service::pb::user::v1::{CreateUserRequest, GetUserRequest};

/// A valid CreateUser request for `id` (default TTL); change one field with
/// [`Tweak`]: `user("ada").ttl(90)`.
pub fn user(id: &str) -> CreateUserRequest {
    CreateUserRequest {
        id: id.to_owned(),
        name: format!("Name of {id}"),
        email: "someone@example.com".to_owned(),
        ttl_seconds: None,
    }
}

/// One-field changes to a CreateUser request, so a test names only the
/// field it is about.
pub trait Tweak {
    fn id(self, id: &str) -> Self;
    fn name(self, name: &str) -> Self;
    fn email(self, email: &str) -> Self;
    fn ttl(self, seconds: u32) -> Self;
}

impl Tweak for CreateUserRequest {
    fn id(self, id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..self
        }
    }

    fn name(self, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..self
        }
    }

    fn email(self, email: &str) -> Self {
        Self {
            email: email.to_owned(),
            ..self
        }
    }

    fn ttl(self, seconds: u32) -> Self {
        Self {
            ttl_seconds: Some(seconds),
            ..self
        }
    }
}

/// A GetUser request for `id`.
pub fn get_request(id: &str) -> GetUserRequest {
    GetUserRequest { id: id.to_owned() }
}

/// The JSON the service (and the old demo) stores under `user:<id>`.
pub fn stored_json(id: &str, name: &str, email: &str) -> serde_json::Value {
    serde_json::json!({ "id": id, "name": name, "email": email })
}

/// The exact text the service stores under `user:<id>` (what
/// `redis-cli GET` prints): compact JSON, fields in proto order.
pub fn stored_value(id: &str, name: &str, email: &str) -> String {
    let quote = |text: &str| serde_json::to_string(text).expect("a string serialises");
    format!(
        r#"{{"id":{},"name":{},"email":{}}}"#,
        quote(id),
        quote(name),
        quote(email)
    )
}

/// [`stored_value`] of the user `request` creates.
pub fn stored_value_of(request: &CreateUserRequest) -> String {
    stored_value(&request.id, &request.name, &request.email)
}

/// The gRPC code of a call's outcome (`Ok` for success).
pub fn code_of<T>(result: &Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The fields a `google.rpc.BadRequest` detail names; panics if the status
/// is not INVALID_ARGUMENT or carries no such detail.
pub fn bad_fields(status: &Status) -> BTreeSet<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad_request = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("INVALID_ARGUMENT without a BadRequest detail: {status:?}"));
    bad_request
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

/// A set of field names, to compare with [`bad_fields`].
pub fn fields(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// Seconds from now until `time` (negative if it has passed).
pub fn seconds_until(time: Option<prost_types::Timestamp>) -> f64 {
    let time = SystemTime::try_from(time.expect("an expire_time")).expect("a valid timestamp");
    match time.duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    }
}
