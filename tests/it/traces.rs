//! Distributed traces against a real OTLP/gRPC receiver (a tonic server
//! built from the official opentelemetry-proto definitions): a call made
//! with a known W3C `traceparent` produces a server span parented on it,
//! with the `rpc.*` attributes and status, and a child span per Redis round
//! trip with `db.*` attributes and no value; the call's JSON log lines carry
//! its trace id. Prints the span tree as `SPAN-TREE` lines (`--nocapture`).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{Request, Response, Status, metadata::MetadataValue, transport::Server};

use crate::support::{RedisServer, Service, ServiceEnv, eventually, get_request, user};

/// Bound for what takes a second or two on an idle machine.
const SOON: Duration = Duration::from_secs(20);
/// The caller's trace and span, as a W3C traceparent carries them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
/// A second trace, for a call that answers NOT_FOUND.
const MISSING_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const MISSING_PARENT_ID: &str = "b7ad6b7169203331";

/// Spans received, each with its resource's `service.name`.
#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| string_attr(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Received {
    fn of_trace(&self, trace_id: &str) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span)| hex(&span.trace_id) == trace_id)
            .map(|(_, span)| span.clone())
            .collect()
    }

    fn services(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(service, _)| service.clone())
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// One line per span: indented under its parent, with its attributes.
fn tree(spans: &[Span]) -> String {
    fn walk(spans: &[Span], parent: &[u8], depth: usize, out: &mut String) {
        for span in spans.iter().filter(|span| span.parent_span_id == parent) {
            let attributes: Vec<String> = span
                .attributes
                .iter()
                .map(|kv| {
                    format!(
                        "{}={:?}",
                        kv.key,
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    )
                })
                .collect();
            out.push_str(&format!(
                "SPAN-TREE {}{} [{:?}] span={} parent={} status={:?} {}\n",
                "  ".repeat(depth),
                span.name,
                SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                hex(&span.span_id),
                hex(&span.parent_span_id),
                span.status.as_ref().map(|s| StatusCode::try_from(s.code)),
                attributes.join(" "),
            ));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    let ids: Vec<&Vec<u8>> = spans.iter().map(|span| &span.span_id).collect();
    // Roots: spans whose parent is not among them (the caller's span).
    let mut roots: Vec<Vec<u8>> = spans
        .iter()
        .map(|span| span.parent_span_id.clone())
        .filter(|parent| !ids.contains(&parent))
        .collect();
    roots.dedup();
    for root in roots {
        out.push_str(&format!("SPAN-TREE (caller span {})\n", hex(&root)));
        walk(spans, &root, 1, &mut out);
    }
    out
}

#[tokio::test]
async fn a_call_with_a_traceparent_exports_its_server_span_and_redis_spans_to_otlp() {
    // Arrange: the receiver, and the service exporting to it in JSON logs.
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let receiver_addr = listener.local_addr().expect("receiver address");
    let (stop_receiver, stopped) = oneshot::channel::<()>();
    let receiver = tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://{receiver_addr}"),
        )
        .env("OTEL_SERVICE_NAME", "user-service-under-test")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,user_service=debug");
    let service = Service::start(env).await;
    let mut client = service.client();
    client.create_user(user("traced")).await.expect("create");

    // Act: a GetUser and a NOT_FOUND, each with its own traceparent.
    let mut found = Request::new(get_request("traced"));
    found.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{PARENT_ID}-01")).expect("metadata"),
    );
    found
        .metadata_mut()
        .insert("tracestate", MetadataValue::from_static("vendor=opaque"));
    client.get_user(found).await.expect("GetUser");
    let mut missing = Request::new(get_request("absent"));
    missing.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{MISSING_TRACE_ID}-{MISSING_PARENT_ID}-01"))
            .expect("metadata"),
    );
    let not_found = client.get_user(missing).await;
    // SIGTERM flushes what the batch exporter still holds.
    service.signal(Signal::SIGTERM);
    let exit = service
        .wait_for_exit(SOON)
        .await
        .expect("the service exits");
    eventually(SOON, "both traces reach the receiver", || async {
        received.of_trace(TRACE_ID).len() >= 2 && !received.of_trace(MISSING_TRACE_ID).is_empty()
    })
    .await;
    let _ = stop_receiver.send(());
    let _ = receiver.await;

    // Assert
    assert!(exit.success(), "exit {exit}");
    assert_eq!(
        not_found.map(|_| ()).unwrap_err().code(),
        tonic::Code::NotFound
    );
    let spans = received.of_trace(TRACE_ID);
    println!("{}", tree(&spans));
    println!("{}", tree(&received.of_trace(MISSING_TRACE_ID)));
    assert!(
        received
            .services()
            .iter()
            .all(|name| name == "user-service-under-test"),
        "service.name: {:?}",
        received.services()
    );
    let server: Vec<&Span> = spans
        .iter()
        .filter(|span| span.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "one server span:\n{}", tree(&spans));
    let server = server[0];
    assert_eq!(server.name, "user.v1.UserService/GetUser");
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT_ID,
        "parented on the caller"
    );
    assert_eq!(server.trace_state, "vendor=opaque", "tracestate kept");
    assert_eq!(
        string_attr(&server.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string_attr(&server.attributes, "rpc.service").as_deref(),
        Some("user.v1.UserService")
    );
    assert_eq!(
        string_attr(&server.attributes, "rpc.method").as_deref(),
        Some("GetUser")
    );
    assert_eq!(
        int_attr(&server.attributes, "rpc.grpc.status_code"),
        Some(0)
    );
    let redis_spans: Vec<&Span> = spans
        .iter()
        .filter(|span| span.kind == SpanKind::Client as i32)
        .collect();
    assert!(!redis_spans.is_empty(), "no Redis span:\n{}", tree(&spans));
    let stored = user("traced");
    for span in &redis_spans {
        assert_eq!(
            span.parent_span_id, server.span_id,
            "child of the server span"
        );
        assert_eq!(
            string_attr(&span.attributes, "db.system").as_deref(),
            Some("redis")
        );
        assert_eq!(
            string_attr(&span.attributes, "db.operation").as_deref(),
            Some("GETRANGE STRLEN PTTL")
        );
        let values = format!("{:?}", span.attributes);
        assert!(
            !values.contains(&stored.name) && !values.contains(&stored.email),
            "a span carries the user's data: {values}"
        );
    }
    let missing_spans = received.of_trace(MISSING_TRACE_ID);
    let missing_server = missing_spans
        .iter()
        .find(|span| span.kind == SpanKind::Server as i32)
        .expect("the NOT_FOUND call's server span");
    assert_eq!(hex(&missing_server.parent_span_id), MISSING_PARENT_ID);
    assert_eq!(
        int_attr(&missing_server.attributes, "rpc.grpc.status_code"),
        Some(5)
    );
    assert_ne!(
        missing_server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "NOT_FOUND is the caller's answer, not a server error"
    );
    let logged_with_trace_id = service.stdout().lines().any(|line| {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        json["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|span| span["trace_id"] == TRACE_ID && span["span_id"].is_string())
        })
    });
    assert!(
        logged_with_trace_id,
        "no JSON log line carries the caller's trace id:\n{}",
        service.stdout()
    );
}
