//! Whether a request on a gRPC path is a gRPC request: method POST, content
//! type `application/grpc` or `application/grpc+proto`, and a `grpc-timeout`
//! (if any) as the gRPC over HTTP/2 spec writes it. Pure checks; `layer`
//! turns a refusal into the HTTP or gRPC answer.

use tonic::codegen::http::{HeaderMap, Method, header};

/// Content types served as gRPC.
const GRPC_CONTENT_TYPES: &[&str] = &["application/grpc", "application/grpc+proto"];

/// Content types of gRPC-Web, served only where that door is open
/// ([`Doors::grpc_web`]): tonic-web translates them behind this check.
const GRPC_WEB_CONTENT_TYPES: &[&str] = &[
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
];

/// Which protocols the gRPC paths serve besides gRPC itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Doors {
    /// gRPC-Web: its content types pass, and so does `OPTIONS` (the
    /// browser's CORS preflight, answered by the CORS layer behind).
    pub grpc_web: bool,
}

/// Longest `grpc-timeout` value: the spec allows at most 8 digits.
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Why a request on a gRPC path is not served as gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A method other than POST: HTTP 405.
    Method,
    /// No content type, or one that is not gRPC: HTTP 415.
    ContentType,
    /// A `grpc-timeout` that does not parse: INVALID_ARGUMENT.
    Timeout,
}

/// A path of the form `/package.Service/Method`, which tonic routes as
/// gRPC. Other paths (health probes, future HTTP doors) are not checked.
pub fn is_grpc_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    match rest.split_once('/') {
        Some((service, method)) => {
            service.contains('.') && !method.is_empty() && !method.contains('/')
        }
        None => false,
    }
}

/// The first reason, in the order a client would fix them, why this
/// request is not gRPC; `Ok` if it is.
pub fn check(method: &Method, headers: &HeaderMap, doors: Doors) -> Result<(), Refusal> {
    if doors.grpc_web && method == Method::OPTIONS {
        return Ok(());
    }
    if method != Method::POST {
        return Err(Refusal::Method);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(|ct| is_served_content_type(ct, doors)) {
        return Err(Refusal::ContentType);
    }
    // Several values are as malformed as one bad value.
    let mut timeouts = headers.get_all("grpc-timeout").iter();
    match (timeouts.next(), timeouts.next()) {
        (None, _) => Ok(()),
        (Some(value), None) if is_valid_timeout(value.as_bytes()) => Ok(()),
        _ => Err(Refusal::Timeout),
    }
}

/// `application/grpc` or `application/grpc+proto` (and the gRPC-Web types
/// when that door is open), any case, parameters (`; charset=…`) ignored.
fn is_served_content_type(value: &str, doors: Doors) -> bool {
    let media_type = value.split(';').next().unwrap_or_default().trim();
    let web: &[&str] = if doors.grpc_web {
        GRPC_WEB_CONTENT_TYPES
    } else {
        &[]
    };
    GRPC_CONTENT_TYPES
        .iter()
        .chain(web)
        .any(|t| t.eq_ignore_ascii_case(media_type))
}

/// The spec's `TimeoutValue TimeoutUnit`: 1 to 8 ASCII digits, then one of
/// `H M S m u n`.
fn is_valid_timeout(value: &[u8]) -> bool {
    let Some((unit, digits)) = value.split_last() else {
        return false;
    };
    b"HMSmun".contains(unit)
        && (1..=MAX_TIMEOUT_DIGITS).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::HeaderValue;

    use super::*;

    const GRPC: Doors = Doors { grpc_web: false };

    fn headers(content_type: Option<&str>, timeout: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        if let Some(t) = timeout {
            headers.insert("grpc-timeout", HeaderValue::from_str(t).unwrap());
        }
        headers
    }

    #[test]
    fn grpc_paths_are_service_slash_method() {
        for path in [
            "/user.v1.UserService/GetUser",
            "/grpc.health.v1.Health/Check",
            "/nope.Svc/X",
        ] {
            assert!(is_grpc_path(path), "{path}");
        }
        for path in [
            "/",
            "/healthz",
            "/user/123",
            "/v1/users:batchGet",
            "/a.b/c/d",
            "/a.b/",
            "x.y/z",
        ] {
            assert!(!is_grpc_path(path), "{path}");
        }
    }

    #[test]
    fn a_grpc_request_passes() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
            "application/grpc; charset=utf-8",
        ] {
            assert_eq!(
                check(&Method::POST, &headers(Some(ct), Some("100m")), GRPC),
                Ok(()),
                "{ct}"
            );
        }
        assert_eq!(
            check(
                &Method::POST,
                &headers(Some("application/grpc"), None),
                GRPC
            ),
            Ok(())
        );
    }

    #[test]
    fn other_methods_are_refused_first() {
        for method in [
            Method::GET,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::HEAD,
        ] {
            assert_eq!(
                check(&method, &headers(None, None), GRPC),
                Err(Refusal::Method),
                "{method}"
            );
        }
    }

    #[test]
    fn other_content_types_are_refused() {
        for ct in [
            None,
            Some("application/json"),
            Some("text/plain"),
            Some("application/grpc+json"),
            Some("application/grpcx"),
            Some("application/grpc-web"),
            Some(""),
        ] {
            assert_eq!(
                check(&Method::POST, &headers(ct, None), GRPC),
                Err(Refusal::ContentType),
                "{ct:?}"
            );
        }
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        let long = "1".repeat(99) + "S";
        for t in [
            "-1S",
            "1x",
            "S",
            "",
            "123456789S",
            "1.5S",
            " 1S",
            "1S ",
            "1s",
            &long,
        ] {
            assert_eq!(
                check(
                    &Method::POST,
                    &headers(Some("application/grpc"), Some(t)),
                    GRPC
                ),
                Err(Refusal::Timeout),
                "{t:?}"
            );
        }
        for t in ["1H", "99999999M", "0S", "5m", "7u", "1n"] {
            assert_eq!(
                check(
                    &Method::POST,
                    &headers(Some("application/grpc"), Some(t)),
                    GRPC
                ),
                Ok(()),
                "{t}"
            );
        }
    }

    #[test]
    fn two_timeouts_are_refused() {
        let mut headers = headers(Some("application/grpc"), Some("1S"));
        headers.append("grpc-timeout", HeaderValue::from_static("2S"));
        assert_eq!(check(&Method::POST, &headers, GRPC), Err(Refusal::Timeout));
    }
}

#[cfg(test)]
mod web_tests {
    use tonic::codegen::http::HeaderValue;

    use super::*;

    const WEB: Doors = Doors { grpc_web: true };

    fn with_type(ct: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        headers
    }

    #[test]
    fn grpc_web_types_and_preflight_pass_only_where_that_door_is_open() {
        for ct in ["application/grpc-web", "application/grpc-web-text+proto"] {
            assert_eq!(check(&Method::POST, &with_type(ct), WEB), Ok(()), "{ct}");
            assert_eq!(
                check(&Method::POST, &with_type(ct), Doors::default()),
                Err(Refusal::ContentType),
                "{ct}"
            );
        }
        assert_eq!(check(&Method::OPTIONS, &HeaderMap::new(), WEB), Ok(()));
        assert_eq!(
            check(&Method::OPTIONS, &HeaderMap::new(), Doors::default()),
            Err(Refusal::Method)
        );
        assert_eq!(
            check(&Method::GET, &with_type("application/grpc-web"), WEB),
            Err(Refusal::Method)
        );
        assert_eq!(
            check(&Method::POST, &with_type("application/json"), WEB),
            Err(Refusal::ContentType)
        );
    }
}
