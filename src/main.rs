//! The `user-service` binary: parse configuration, set up logging, serve
//! until SIGTERM/SIGINT; or, with `health`, probe a running server. Exit
//! codes are decided here and nowhere else.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use user_service::{
    app,
    config::{Cli, Command, Config, HealthArgs, ProbeConfig, ServeArgs},
    probe, signal, telemetry, tls, trace,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // Usage errors exit 1 (clap's own default is 2), which is also
            // what `health` promises for bad arguments: 2 there means
            // "cannot connect".
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tls::install_crypto_provider();
    let result = match cli.command {
        Some(Command::Health(args)) => {
            runtime(1).and_then(|rt| rt.block_on(health(&args, &cli.serve.listen_addr)))
        }
        None => serve(&cli.serve),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("user-service: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One thread: tokio's single-threaded scheduler. Under load it lets every
/// call woken by one Redis reply finish before the HTTP/2 connection is
/// flushed, so responses leave in one `writev` instead of one each; the
/// work-stealing pool runs a woken task at once and flushes per response
/// (bench/RESULTS.md: 7x fewer writes and a third less CPU per call).
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_args(args)?;
    runtime(config.worker_threads)?.block_on(async {
        // Inside the runtime: the OTLP exporter's channel runs on it.
        let tracer = trace::provider(&config.trace)?;
        telemetry::init(config.log_format, &config.log_filter, &tracer)?;
        let served = serve_with(config).await;
        flush_traces(tracer).await;
        served
    })
}

/// Exports the spans still buffered. On a blocking thread: the exporter's
/// calls need this runtime to keep running meanwhile.
async fn flush_traces(tracer: opentelemetry_sdk::trace::SdkTracerProvider) {
    let flushed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::task::spawn_blocking(move || tracer.shutdown()),
    )
    .await;
    if !matches!(flushed, Ok(Ok(Ok(())))) {
        eprintln!("user-service: some spans could not be exported before exit");
    }
}

async fn serve_with(config: Config) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), threads = config.worker_threads, "listening");
    let shutdown = async {
        match signal::shutdown_signal().await {
            Ok(name) => tracing::info!(signal = name, "stop requested"),
            Err(err) => {
                tracing::error!(error = %err, "cannot install signal handlers; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    };
    app::run(config, listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn health(args: &HealthArgs, listen_addr: &str) -> anyhow::Result<ExitCode> {
    let config = ProbeConfig::from_args(args, listen_addr)?;
    let outcome = probe::check(&config).await;
    let exit = probe::ProbeExit::of(&outcome);
    match outcome {
        Ok(status) => println!("{}", status.as_str_name()),
        Err(err) => eprintln!("user-service: health: {:#}", anyhow::Error::new(err)),
    }
    Ok(ExitCode::from(exit.code()))
}
