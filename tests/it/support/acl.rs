//! The service's ACL user as deployed: its rules are read from
//! `deploy/secured/users.acl`, so the fixtures' servers (and thus every
//! functional test) run the service with exactly the rules operators get.

use std::{fs, path::PathBuf};

/// The service's ACL user name, as in users.acl and deploy/secured/compose.yaml.
pub const SERVICE_USER: &str = "user-service";

/// The service user's password on fixture servers (the deployed one is a secret file).
pub const SERVICE_PASSWORD: &str = "fixture-service-pw";

/// Path of the deployed ACL rules.
pub fn users_acl_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/secured/users.acl")
}

/// The `user user-service ...` line of users.acl, without a password (the
/// file holds none: deploy/secured/redis-start.sh appends it).
pub fn deployed_rule() -> String {
    let path = users_acl_path();
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read the deployed ACL rules {}: {err}", path.display()));
    let prefix = format!("user {SERVICE_USER} ");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    let rule = lines
        .next()
        .unwrap_or_else(|| panic!("{} has no `{prefix}...` line", path.display()))
        .trim_end()
        .to_owned();
    assert!(
        lines.next().is_none(),
        "{} has more than one `{prefix}...` line",
        path.display()
    );
    assert!(
        !rule.split_whitespace().any(|word| word.starts_with('>')),
        "{} must not hold a password: {rule}",
        path.display()
    );
    rule
}

/// The deployed rule with the fixture password, as a fixture's ACL file line.
pub fn service_user_line() -> String {
    format!("{} >{SERVICE_PASSWORD}", deployed_rule())
}
