//! Serving: the tonic server with UserService, health and reflection on one
//! port (plaintext, or TLS when configured); health following the store's
//! readiness; and graceful shutdown. Connecting to Redis is the store's
//! job. Tests and `main` both enter through [`run`].

use std::future::Future;

use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};
use tonic::{service::interceptor::InterceptedService, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    calls::CallsLayer,
    config::Config,
    listener::{self, ListenerLayer},
    metrics,
    pb::{self, user::v1::user_service_server::UserServiceServer},
    service::{self, UserApi},
    store::{ConnectError, UserStore},
    trace,
};

/// Largest request or response message accepted. Large enough that a
/// 1 MiB name reaches validation (INVALID_ARGUMENT, the caller learns which
/// field), small enough to bound memory per call.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Name of the user service in health checks (readiness, like `""`).
pub const USER_SERVICE_NAME: &str = "user.v1.UserService";
/// Health name of liveness: SERVING while the process serves, whatever
/// Redis does, so a liveness probe never restarts an instance for an outage
/// it cannot mend.
pub const LIVENESS_NAME: &str = "liveness";

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Redis refused what retrying cannot fix (credentials, configuration).
    #[error(transparent)]
    Redis(#[from] ConnectError),
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The listener's TLS settings were refused by rustls.
    #[error(
        "cannot set up TLS on the gRPC listener (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE): {0}"
    )]
    Tls(#[source] listener::tls::TlsSetupError),
    /// Reflection could not be built from the embedded descriptors.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics listener could not be bound.
    #[error("cannot listen on METRICS_ADDR {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// Serves on `listener` until `shutdown` resolves; then readiness turns
/// NOT_SERVING while calls are still answered for the drain period, and
/// after it the listener closes and in-flight calls get the grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let metrics_server = match config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Metrics { addr, source })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics at /metrics");
            Some(tokio::spawn(metrics::serve(listener, metrics::install())))
        }
        None => None,
    };
    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    reporter
        .set_service_status(LIVENESS_NAME, ServingStatus::Serving)
        .await;
    // After `metrics::install`, so that the per-call series bind to the exporter.
    let calls = CallsLayer::new(&[
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]);

    let store = UserStore::start(config.redis.clone());
    let follower = tokio::spawn(follow_readiness(store.readiness(), reporter.clone()));

    let api = UserApi::new(
        store.clone(),
        config.ttl,
        config.redis.timeout,
        config.max_concurrent_calls,
    )
    .with_max_watch_streams(config.watch_max_streams);
    let user_service = InterceptedService::new(
        UserServiceServer::new(api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        service::stamp_arrival,
    );
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let limits = &config.listener;
    let tls = match &config.tls {
        Some(tls) => {
            let acceptor = listener::tls::acceptor(tls).map_err(AppError::Tls)?;
            tracing::info!(
                client_certificates = tls.client_ca.is_some(),
                "gRPC listener speaks TLS"
            );
            Some(acceptor)
        }
        None => None,
    };
    let incoming = listener::incoming(listener, limits, tls);
    let server = limits
        .configure(Server::builder())
        // Outermost, so that calls the listener refuses (a malformed
        // grpc-timeout) and those that never reach a handler are counted too.
        .layer(calls)
        // A server span per call, parented on the caller's traceparent.
        .layer(trace::TraceLayer)
        .layer(ListenerLayer::new(limits.request_body_timeout))
        // No Server::timeout: every UserService call is bounded by its own
        // budget (service.rs), health and reflection answer at once, and
        // the server-wide timer cost a tokio Sleep per call for callers
        // that send no grpc-timeout (bench/RESULTS.md).
        .add_service(user_service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);

    let result = tokio::select! {
        result = &mut server => result.map_err(AppError::from),
        fatal = store.fatal() => Err(AppError::Redis(fatal)),
        () = shutdown => {
            tracing::info!(drain = ?config.shutdown_drain, grace = ?config.shutdown_grace, "stop requested: readiness NOT_SERVING; still answering while balancers notice");
            follower.abort();
            set_health(&reporter, ServingStatus::NotServing).await;
            // The drain: the listener keeps accepting and answering, so a
            // balancer that has not yet seen NOT_SERVING loses no call.
            let drained = tokio::select! {
                result = &mut server => Some(result.map_err(AppError::from)),
                fatal = store.fatal() => Some(Err(AppError::Redis(fatal))),
                () = tokio::time::sleep(config.shutdown_drain) => None,
            };
            match drained {
                Some(ended) => ended,
                None => {
                    tracing::info!(grace = ?config.shutdown_grace, "drain over: no new connections, GOAWAY sent, finishing in-flight calls");
                    // Watch streams never finish by themselves: end them now
                    // (UNAVAILABLE) rather than let them hold the grace period.
                    store.stop_watches();
                    let _ = stop_tx.send(());
                    match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                        Ok(result) => result.map_err(AppError::from),
                        Err(_) => {
                            tracing::warn!("grace period over; dropping calls still in flight");
                            Ok(())
                        }
                    }
                }
            }
        }
    };
    follower.abort();
    store.stop_background();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    result
}

/// Reflection over our proto, health, and google.rpc error details (so
/// grpcurl can print the BadRequest detail of an INVALID_ARGUMENT).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Sets the overall and UserService health status together.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    metrics::METRICS.set_serving(status == ServingStatus::Serving);
    reporter.set_service_status("", status).await;
    reporter.set_service_status(USER_SERVICE_NAME, status).await;
}

/// Keeps health in step with the store's readiness until aborted.
async fn follow_readiness(mut ready: watch::Receiver<bool>, reporter: HealthReporter) {
    loop {
        let serving = *ready.borrow_and_update();
        set_health(
            &reporter,
            if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            },
        )
        .await;
        if ready.changed().await.is_err() {
            return;
        }
    }
}
