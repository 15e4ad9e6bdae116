//! `whisper-node`: parse the configuration, start the actor tree (which
//! waits for the worker to load the model), then serve HTTP until SIGINT or
//! SIGTERM; then drain (see [`AsrNode::shutdown`]), stop the worker and exit 0.
//! A model that cannot be loaded is a start-up error (exit code 1) naming the
//! path and the cause; a job store that cannot be opened is not (the node
//! serves without async jobs and says so in `/health`).

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use clap::Parser;
use whisper_node::config::Cli;
use whisper_node::http::host::AllowedHosts;
use whisper_node::http::jobs::JobsUnavailable;
use whisper_node::jobs::JobService;
use whisper_node::AsrNode;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs, OTLP trace export when OTEL_EXPORTER_OTLP_ENDPOINT is set, and
    // the Prometheus recorder; the guard flushes spans when dropped.
    let telemetry = whisper_node::telemetry::init();
    let allowed_hosts = AllowedHosts::parse(&cli.allowed_hosts, cli.listen)
        .map_err(anyhow::Error::msg)
        .context("--allowed-hosts")?;
    tracing::info!(allowed_hosts = ?allowed_hosts, "Host header check");
    let allowed_hosts = web::Data::new(allowed_hosts);
    tracing::info!(model_dir = %cli.node.model_dir.display(), listen = %cli.listen, "starting");
    let node = AsrNode::start(cli.node.clone())
        .await
        .context("start-up failed")?;
    // Async jobs (`/v1/jobs`): their own durable store and runner, beside
    // the node; unfinished jobs of an earlier run are re-queued here.
    // A job store that cannot be opened (unwritable or locked folder)
    // leaves the node serving synchronous transcription: the job routes
    // answer 503 `store_unavailable` and /health and /ready say why.
    let mut jobs_unavailable = None;
    let jobs = if cli.jobs.disabled {
        tracing::info!("async jobs are disabled");
        None
    } else {
        match JobService::start(node.clone(), cli.jobs.clone()).await {
            Ok(jobs) => Some(jobs),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    data_dir = %cli.jobs.data_dir.display(),
                    "the async job service failed to start; serving without it (job routes answer 503 store_unavailable)"
                );
                jobs_unavailable = Some(web::Data::new(JobsUnavailable {
                    reason: e.to_string(),
                }));
                None
            }
        }
    };
    let jobs_data = jobs.as_ref().map(whisper_node::http::jobs::app_data);
    let data = web::Data::new(node.clone());
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(data.clone())
            .app_data(allowed_hosts.clone())
            .wrap(from_fn(whisper_node::http::host::check));
        let app = match (&jobs_data, &jobs_unavailable) {
            (Some(jobs), _) => app.app_data(jobs.clone()),
            (None, Some(unavailable)) => app.app_data(unavailable.clone()),
            (None, None) => app,
        };
        app.configure(whisper_node::http::configure)
    })
    .on_connect(whisper_node::http::on_connect)
    .workers(if cli.http_workers == 0 {
        num_cpus()
    } else {
        cli.http_workers
    })
    .bind(cli.listen)
    .with_context(|| format!("cannot listen on {}", cli.listen))?;
    for addr in server.addrs() {
        // Tests and scripts read this line to learn the port when binding :0.
        tracing::info!(%addr, "listening");
    }
    let server = server
        .disable_signals()
        .shutdown_timeout(cli.node.shutdown_grace_secs.ceil() as u64 + 5)
        .run();
    let http = server.handle();
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        // Drain first: refuse new work (503), answer queued jobs 503, let
        // the in-flight one finish and its answer go out; then stop HTTP.
        tracing::info!(signal, "shutting down gracefully");
        // The job service stops taking jobs and hands back (re-queues) any
        // async job the draining node does not finish.
        let jobs_stopped = async {
            if let Some(jobs) = &jobs {
                jobs.shutdown().await;
            }
        };
        tokio::join!(node.shutdown(), jobs_stopped);
        http.stop(true).await;
    });
    server.await.context("http server failed")?;
    tracing::info!("stopped");
    telemetry.shutdown();
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
