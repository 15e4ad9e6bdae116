//! `whisper-node`: parse the configuration, start the actor tree (which
//! waits for the worker to load the model), then serve HTTP until SIGINT or
//! SIGTERM, and stop the tree and the worker.

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use clap::Parser;
use whisper_node::config::Cli;
use whisper_node::AsrNode;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    whisper_node::telemetry::init_logging();
    tracing::info!(model_dir = %cli.node.model_dir.display(), listen = %cli.listen, "starting");
    let node = AsrNode::start(cli.node.clone()).await.context("start-up failed")?;
    let data = web::Data::new(node.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(whisper_node::http::configure)
    })
    .workers(if cli.http_workers == 0 { num_cpus() } else { cli.http_workers })
    .bind(cli.listen)
    .with_context(|| format!("cannot listen on {}", cli.listen))?;
    for addr in server.addrs() {
        // Tests and scripts read this line to learn the port when binding :0.
        tracing::info!(%addr, "listening");
    }
    let server = server.run();
    server.await.context("http server failed")?;
    tracing::info!("http server stopped, shutting the node down");
    node.shutdown().await;
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}
