//! The span of one Redis round trip, a child of the call's server span:
//! OpenTelemetry's `db.*` attributes with the command names, never a key's
//! value or an argument.

/// A client span for one round trip sending `operation` (command names,
/// space-separated for a pipeline).
pub(super) fn redis(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "redis",
        otel.name = operation,
        otel.kind = "client",
        db.system = "redis",
        db.operation = operation,
    )
}
