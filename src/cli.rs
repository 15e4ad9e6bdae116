//! The `whisper-node` binary's command line: the server's own flags (listen
//! address, HTTP, refusals, access) around the node's ([`NodeConfig`]) and
//! the job service's ([`JobsConfig`]). It sits with the server, above HTTP:
//! an embedding host flattens [`NodeConfig`] into its own CLI instead.

use std::net::SocketAddr;

use clap::Parser;

use crate::config::{JobsConfig, NodeConfig};

/// Command line of the `whisper-node` binary. Every flag has an environment
/// variable; flags win over the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "whisper-node", version, about)]
pub struct Cli {
    /// Address the HTTP server listens on.
    #[arg(long, env = "WHISPER_NODE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve on this inherited, already listening TCP socket (a file
    /// descriptor number, e.g. from a supervisor or systemd socket
    /// activation) instead of binding `--listen`.
    #[arg(long, env = "WHISPER_NODE_LISTEN_FD")]
    pub listen_fd: Option<i32>,

    /// HTTP worker threads (actix); 0 = one per core.
    #[arg(long, env = "WHISPER_NODE_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,

    /// Host names requests may address (the `Host` header, port ignored),
    /// comma-separated: `auto` (default) allows only loopback names
    /// (`localhost`, `*.localhost`, `127.0.0.1`, `[::1]`) when listening
    /// on a loopback address, which stops DNS rebinding against a local
    /// node, and any host otherwise; `*` allows any; `*.example.com`
    /// allows the subdomains. Others get 421 `host_not_allowed`.
    #[arg(long, env = "WHISPER_NODE_ALLOWED_HOSTS", default_value = "auto")]
    pub allowed_hosts: String,

    /// What becomes of the body of a transcription the node refuses before
    /// reading it (queue full, shutting down, client over its share) when
    /// the client sent it without `Expect: 100-continue` (which is answered
    /// without the body): `drain` (default) reads and discards the body (up
    /// to 4 MiB; no multipart parsing), then answers on a connection that
    /// stays open; `close` answers at once with `Connection: close` and
    /// discards what still arrives until the client closes (at most 1 s).
    /// Measured under a retry storm on loopback (bench/README.md, `make
    /// overload`), drain costs the node and its clients less CPU than close
    /// (no reconnection per refusal).
    #[arg(
        long,
        env = "WHISPER_NODE_REFUSED_BODY",
        value_enum,
        default_value = "drain"
    )]
    pub refused_body: crate::http::expect::RefusedBody,

    /// Per-client fairness: while other clients are active, a client (its
    /// API key, else its peer IP address) holding its share of the node's
    /// places (queue capacity + 1, divided among the active clients) is
    /// refused with 429 `client_over_share`. A lone client is never limited.
    #[arg(
        long,
        env = "WHISPER_NODE_CLIENT_FAIRNESS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub client_fairness: bool,

    /// Nice increment of the HTTP worker threads (0-19; 0 = as the
    /// process), so that under load the engine process wins the CPU from
    /// request handling.
    #[arg(long, env = "WHISPER_NODE_HTTP_NICE", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub http_nice: i32,

    /// Nice value of the worker process, all its threads (0-19; 0 = as the
    /// node): a lower priority for the engine than for the HTTP threads,
    /// so refusals and probes do not wait for the engine's time slice.
    #[arg(long, env = "WHISPER_NODE_WORKER_NICE", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub worker_nice: i32,

    /// The node's own settings.
    #[command(flatten)]
    pub node: NodeConfig,

    /// The async job service's settings.
    #[command(flatten)]
    pub jobs: JobsConfig,

    /// API keys, the per-key limit and CORS (see [`crate::http::access`]).
    #[command(flatten)]
    pub access: crate::http::access::AccessConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_flags_and_node_flags_parse_together() {
        let cli = Cli::parse_from(["x", "--listen", "0.0.0.0:9000", "--queue-capacity", "0"]);
        assert_eq!(cli.listen.port(), 9000);
        assert!(cli.node.validate().is_err());
    }
}
