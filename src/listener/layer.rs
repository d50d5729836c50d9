//! The tower layer in front of tonic's router: refuses requests on gRPC
//! paths that are not gRPC (HTTP 405 / 415, INVALID_ARGUMENT for a
//! malformed `grpc-timeout`), bounds how long a request body may take and
//! how many body bytes one connection's calls may hold, and counts each
//! call as open on its connection (for the idle timeout) until its response
//! body is done.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Frame, SizeHint};
use tokio::time::{Sleep, sleep};
use tonic::{
    Status,
    body::Body,
    codegen::{
        Bytes,
        http::{self, HeaderValue, Request, Response, StatusCode, header},
    },
    transport::server::TlsConnectInfo,
};
use tower::{Layer, Service};

use super::{
    BODY_BUDGET_BYTES,
    conn::{CallGuard, ConnInfo, ConnState},
    shape::{self, Doors, Refusal},
};

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLayer {
    body_timeout: Duration,
    body_budget: usize,
    doors: Doors,
}

impl ListenerLayer {
    /// A layer giving each request body `body_timeout` to arrive in full.
    pub fn new(body_timeout: Duration) -> Self {
        ListenerLayer {
            body_timeout,
            body_budget: BODY_BUDGET_BYTES,
            doors: Doors::default(),
        }
    }

    /// Lets gRPC-Web requests (and their CORS preflight) through to the
    /// layers behind: for a server that also serves tonic-web, whose
    /// translation then sits behind this layer.
    pub fn with_grpc_web(mut self) -> Self {
        self.doors.grpc_web = true;
        self
    }
}

impl<S> Layer<S> for ListenerLayer {
    type Service = ListenerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ListenerService {
            inner,
            layer: *self,
        }
    }
}

/// The service [`ListenerLayer`] builds.
#[derive(Debug, Clone)]
pub struct ListenerService<S> {
    inner: S,
    layer: ListenerLayer,
}

/// The response future of [`ListenerService`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>>;

impl<S> Service<Request<Body>> for ListenerService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if shape::is_grpc_path(request.uri().path())
            && let Err(refusal) =
                shape::check(request.method(), request.headers(), self.layer.doors)
        {
            tracing::debug!(path = request.uri().path(), ?refusal, "not a gRPC request");
            return Box::pin(std::future::ready(Ok(refuse(&refusal))));
        }
        let state = conn_state(request.extensions());
        // So that tonic's `Request::remote_addr` keeps working.
        if let Some(tcp) = find_info(request.extensions()).map(|info| info.tcp.clone()) {
            request.extensions_mut().insert(tcp);
        }
        let guard = state.as_ref().map(ConnState::open_call);
        let layer = self.layer;
        let request = request.map(|body| Body::new(TimedBody::new(body, layer, state)));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(GuardedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// The connection's info, whether the socket speaks TLS or not.
fn find_info(extensions: &http::Extensions) -> Option<&ConnInfo> {
    extensions.get::<ConnInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<ConnInfo>>()
            .map(TlsConnectInfo::get_ref)
    })
}

fn conn_state(extensions: &http::Extensions) -> Option<Arc<ConnState>> {
    find_info(extensions).map(|info| Arc::clone(&info.state))
}

/// The answer to a request on a gRPC path that is not gRPC.
fn refuse(refusal: &Refusal) -> Response<Body> {
    let (status, message) = match refusal {
        Refusal::Timeout => {
            return Status::invalid_argument(
                "malformed grpc-timeout header: expected 1-8 digits and a unit (H, M, S, m, u, n)",
            )
            .into_http();
        }
        Refusal::Method => (
            StatusCode::METHOD_NOT_ALLOWED,
            "gRPC methods are called with POST",
        ),
        Refusal::ContentType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "gRPC requests need content-type application/grpc or application/grpc+proto",
        ),
    };
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(Body::new(http_body_full(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if *refusal == Refusal::Method {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// A body of one chunk.
fn http_body_full(text: String) -> FullBody {
    FullBody(Some(Bytes::from(text)))
}

/// A body holding one chunk of bytes.
struct FullBody(Option<Bytes>);

impl http_body::Body for FullBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// A request body that fails with DEADLINE_EXCEEDED if it has not ended
/// within the body timeout, and with RESOURCE_EXHAUSTED if its connection's
/// calls together hold more body bytes than the budget.
struct TimedBody {
    inner: Body,
    /// `None` once the body has ended.
    deadline: Option<Pin<Box<Sleep>>>,
    state: Option<Arc<ConnState>>,
    budget: usize,
    /// Bytes this body added to its connection's count.
    counted: usize,
}

impl TimedBody {
    fn new(inner: Body, layer: ListenerLayer, state: Option<Arc<ConnState>>) -> Self {
        TimedBody {
            inner,
            deadline: Some(Box::pin(sleep(layer.body_timeout))),
            state,
            budget: layer.body_budget,
            counted: 0,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(state)) = (frame.data_ref(), &this.state) {
                    this.counted += data.len();
                    if state.add_body_bytes(data.len()) > this.budget {
                        return Poll::Ready(Some(Err(Status::resource_exhausted(
                            "this connection's calls hold too many request bytes; retry on another connection or send less at once",
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.deadline = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                this.deadline = None;
                Poll::Ready(Some(Err(Status::deadline_exceeded(
                    "the request body did not arrive within REQUEST_BODY_TIMEOUT_SECONDS",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.release_body_bytes(self.counted);
        }
    }
}

/// A response body that keeps its call counted as open until it is done.
struct GuardedBody {
    inner: Body,
    _guard: Option<CallGuard>,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
