//! The `user-service` binary: parse configuration, set up logging, serve
//! until SIGTERM/SIGINT; or, with `health`, probe a running server. Exit
//! codes are decided here and nowhere else.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tonic_health::pb::health_check_response::ServingStatus;
use user_service::{
    app,
    config::{Cli, Command, Config, HealthArgs, ProbeConfig, ServeArgs},
    probe, signal, telemetry, tls,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    telemetry::init(config.log_format, &config.log_filter)?;
    runtime(config.worker_threads)?.block_on(serve_with(config))
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
    let status = probe::check(&config).await?;
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
