//! `whisper-node`: parse the configuration, take the listening socket, then
//! serve (see [`whisper_node::server::run`]) until SIGINT or SIGTERM; then
//! drain, stop the worker and exit 0. A model that cannot be loaded is a
//! start-up error (exit code 1) naming the path and the cause; a job store
//! that cannot be opened is not (the node serves without async jobs and
//! says so in `/health`).

use clap::Parser;
use whisper_node::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs, OTLP trace export when OTEL_EXPORTER_OTLP_ENDPOINT is set, and
    // the Prometheus recorder; the guard flushes spans when dropped.
    let telemetry = whisper_node::telemetry::init();
    let listener = whisper_node::server::listener(&cli)?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let served = whisper_node::server::run(listener, cli, shutdown_signal()).await;
    telemetry.shutdown();
    served
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM".into(),
        _ = int.recv() => "SIGINT".into(),
    }
}
