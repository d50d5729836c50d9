//! The per-call recorder: a tower layer around the whole gRPC server that
//! counts every call once (go-grpc-prometheus's `grpc_server_*` series),
//! including calls that never reach a handler (unknown method, undecodable
//! body), and [`failed`], where a UserService handler reports how a call
//! failed: the Redis failure kind is counted and the error logged there,
//! through a summariser, never once per call under a flood.
//!
//! It does not decide statuses (that is `error`'s mapping) nor name the
//! service's other series (that is `metrics`).

mod summary;

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use ::metrics::{Counter, Histogram, Label, counter, histogram};
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tonic::Code;

use crate::{
    error::ServiceError,
    metrics::{HANDLED, HANDLING_SECONDS, METRICS, STARTED},
};

pub use summary::Summary;

/// gRPC codes as grpc-go and go-grpc-prometheus spell them, indexed by code number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Label value of calls to a path that no served service has: one series
/// for all of them, so that random paths cannot grow the registry.
const UNKNOWN: &str = "unknown";

/// How often the same kind of failure may be logged.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The summariser of call failures.
static FAILURES: Summary = Summary::new(LOG_EVERY);

/// Index of a code in `CODE_NAMES`; `Unknown` for a number beyond the table.
fn code_index(code: Code) -> usize {
    usize::try_from(code as i32)
        .ok()
        .filter(|&i| i < CODE_NAMES.len())
        .unwrap_or(Code::Unknown as usize)
}

/// go-grpc-prometheus's name of a gRPC code.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[code_index(code)]
}

/// The series of one method, registered once.
struct MethodSeries {
    labels: [Label; 3],
    started: Counter,
    seconds: Histogram,
    /// Handled counters by code, registered on first use so that the
    /// exposition lists only codes that happened.
    handled: [OnceLock<Counter>; CODE_NAMES.len()],
}

impl MethodSeries {
    fn new(service: String, method: String, kind: &'static str) -> Self {
        let labels = [
            Label::new("grpc_type", kind),
            Label::new("grpc_service", service),
            Label::new("grpc_method", method),
        ];
        Self {
            started: counter!(STARTED, labels.to_vec()),
            seconds: histogram!(HANDLING_SECONDS, labels.to_vec()),
            labels,
            handled: [const { OnceLock::new() }; CODE_NAMES.len()],
        }
    }

    fn handled(&self, code: Code) -> &Counter {
        self.handled[code_index(code)].get_or_init(|| {
            let mut labels = self.labels.to_vec();
            labels.push(Label::new("grpc_code", code_name(code)));
            counter!(HANDLED, labels)
        })
    }
}

/// The methods of the served services, by request path.
struct Methods {
    by_path: HashMap<String, Arc<MethodSeries>>,
    unknown: Arc<MethodSeries>,
}

impl Methods {
    /// Every method of every service in the encoded descriptor sets.
    fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut by_path = HashMap::new();
        for set in sets {
            // The sets are compiled into the binary; a broken one names no method.
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    let service_name = if package.is_empty() {
                        service.name().to_owned()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        let path = format!("/{service_name}/{}", method.name());
                        let series =
                            MethodSeries::new(service_name.clone(), method.name().to_owned(), kind);
                        by_path.insert(path, Arc::new(series));
                    }
                }
            }
        }
        let unknown = MethodSeries::new(UNKNOWN.to_owned(), UNKNOWN.to_owned(), UNKNOWN);
        Self {
            by_path,
            unknown: Arc::new(unknown),
        }
    }

    /// The series of a gRPC path (`/package.Service/Method`); `None` for
    /// paths that are not gRPC-shaped (not counted).
    fn of(&self, path: &str) -> Option<Arc<MethodSeries>> {
        if let Some(series) = self.by_path.get(path) {
            return Some(series.clone());
        }
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        Some(self.unknown.clone())
    }
}

/// One call being recorded: counted as started when made, as handled
/// exactly once, with `Canceled` if dropped unfinished (the client went away).
struct Call {
    series: Arc<MethodSeries>,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(series: Arc<MethodSeries>) -> Self {
        series.started.increment(1);
        Self {
            series,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.series.handled(code).increment(1);
            self.series
                .seconds
                .record(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// The status in a header map (`grpc-status`), if any.
fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(value.parse::<i32>().map_or(Code::Unknown, Code::from_i32))
}

/// Layer recording every gRPC call of the server it wraps.
#[derive(Clone)]
pub struct CallsLayer {
    methods: Arc<Methods>,
}

impl CallsLayer {
    /// Knows the methods of the services in `descriptor_sets` (encoded
    /// `FileDescriptorSet`s); other gRPC paths are counted as `unknown`.
    /// Build it after `metrics::install`, so that its series bind to the exporter.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        Self {
            methods: Arc::new(Methods::from_descriptor_sets(descriptor_sets)),
        }
    }
}

impl<S> tower::Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Calls {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The service [`CallsLayer`] builds.
#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Calls<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body,
{
    type Response = http::Response<RecordedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = self.methods.of(request.uri().path()).map(Call::start);
        ResponseFuture {
            inner: self.inner.call(request),
            call,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a recorded call; the status is read from its headers
    /// (a trailers-only answer) or else from its body's trailers.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
{
    type Output = Result<http::Response<RecordedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                let call = call.and_then(|call| {
                    match status_in(response.headers()) {
                        Some(code) => call.finish(code),
                        // Nothing more will come to read a status from.
                        None if response.body().is_end_stream() => call.finish(Code::Unknown),
                        None => return Some(call),
                    }
                    None
                });
                Ok(response.map(|inner| RecordedBody { inner, call }))
            }
            Err(err) => {
                if let Some(call) = call {
                    call.finish(Code::Unknown);
                }
                Err(err)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call's status from the trailers.
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| status_in(trailers).unwrap_or(Code::Unknown)),
            // The body failed, or ended without trailers: no status reached the client.
            Some(Err(_)) | None => Some(Code::Unknown),
        };
        // Take the call only when a status is known: a data frame leaves it pending.
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts and logs how a UserService call failed: the one place where a
/// failure is observed (the status mapping has no side effects). Failures
/// the caller caused (invalid, not found, already exists) are not logged;
/// the rest at most once per kind per second, with a count of the rest.
pub fn failed(method: &'static str, err: &ServiceError) {
    if matches!(err, ServiceError::Overloaded) {
        METRICS.record_refused();
    }
    if let Some(kind) = err.failure() {
        METRICS.record_redis_error(kind);
    }
    let Some(level) = err.log_level() else {
        tracing::debug!(method, reason = err.reason(), "call failed");
        return;
    };
    let reason = err.reason();
    let Some(suppressed) = FAILURES.admit(reason, Instant::now()) else {
        return;
    };
    let error = err.log_message();
    if level == tracing::Level::ERROR {
        tracing::error!(method, reason, suppressed, error, "call failed");
    } else {
        tracing::warn!(method, reason, suppressed, error, "call failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_go_grpc_prometheus_spellings() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::NotFound), "NotFound");
        assert_eq!(code_name(Code::ResourceExhausted), "ResourceExhausted");
        assert_eq!(code_name(Code::Unauthenticated), "Unauthenticated");
    }

    #[test]
    fn methods_come_from_descriptors_and_unknown_paths_share_one_series() {
        let methods = Methods::from_descriptor_sets(&[
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        let create = methods.of("/user.v1.UserService/CreateUser").unwrap();
        assert_eq!(create.labels[0].value(), "unary");
        assert_eq!(create.labels[1].value(), "user.v1.UserService");
        assert_eq!(create.labels[2].value(), "CreateUser");
        let watch = methods.of("/grpc.health.v1.Health/Watch").unwrap();
        assert_eq!(watch.labels[0].value(), "server_stream");
        for path in ["/user.v1.UserService/Nope", "/x.Y/Z"] {
            let unknown = methods.of(path).unwrap();
            assert_eq!(unknown.labels[2].value(), UNKNOWN, "{path}");
        }
        for not_grpc in ["/", "/metrics", "/a/b/c", "//x", "/x/"] {
            assert!(methods.of(not_grpc).is_none(), "{not_grpc}");
        }
    }

    #[tokio::test]
    async fn a_status_in_the_trailers_after_data_is_recorded_once() {
        use http_body_util::BodyExt as _;

        let exporter = crate::metrics::install();
        let methods = Methods::from_descriptor_sets(&[crate::pb::FILE_DESCRIPTOR_SET]);
        let series = methods.of("/user.v1.UserService/GetUser").unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<tonic::codegen::Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(tonic::codegen::Bytes::from_static(b"message"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = RecordedBody {
            inner: http_body_util::StreamBody::new(tokio_stream::iter(frames)),
            call: Some(Call::start(series)),
        };

        let collected = body.collect().await.unwrap();

        assert!(collected.trailers().is_some());
        let text = exporter.render();
        let handled = |code: &str| {
            format!(
                "grpc_server_handled_total{{grpc_type=\"unary\",grpc_service=\"user.v1.UserService\",grpc_method=\"GetUser\",grpc_code=\"{code}\"}} "
            )
        };
        assert!(text.contains(&format!("{}1\n", handled("OK"))), "{text}");
        assert!(!text.contains(&handled("Canceled")), "{text}");
    }

    #[test]
    fn status_is_read_from_grpc_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_in(&headers), Some(Code::NotFound));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(status_in(&headers), Some(Code::Unknown));
    }
}
