//! Logging set-up: tracing-subscriber writing text or JSON lines to stdout,
//! filtered by the configured RUST_LOG filter, and feeding spans to the
//! OpenTelemetry tracer (`trace`).

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// RUST_LOG is not a valid filter.
    #[error("RUST_LOG: invalid log filter {filter:?}: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// Why it did not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Installs the global subscriber; spans also go to `tracer`'s OpenTelemetry
/// layer. JSON lines carry the fields of their enclosing spans (`spans`),
/// among them the call's `trace_id` and `span_id`.
pub fn init(
    format: LogFormat,
    filter: &str,
    tracer: &SdkTracerProvider,
) -> Result<(), TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    // Colour codes only help a terminal; in files and `docker logs` they are noise.
    let ansi = std::io::stdout().is_terminal();
    let lines = match format {
        LogFormat::Text => fmt::layer().with_target(true).with_ansi(ansi).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_target(true)
            .with_ansi(false)
            .flatten_event(true)
            // Every enclosing span, so that the call's span (trace_id,
            // span_id) is there under the handler's own.
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
    };
    // RUST_LOG filters log lines only; traces get this crate's spans (the
    // call and its Redis round trips) whatever the log level, and never the
    // libraries' own (h2, hyper), which would swamp a collector.
    let traced = Targets::new().with_target(env!("CARGO_CRATE_NAME"), Level::INFO);
    tracing_subscriber::registry()
        .with(crate::trace::layer(tracer).with_filter(traced))
        .with(lines.with_filter(env_filter))
        .try_init()
        .map_err(|_| TelemetryError::AlreadySet)
}
