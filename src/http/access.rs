//! Who may call the node and from which web pages: the `--api-keys-file`,
//! `--metrics-require-key`, `--max-requests-per-key` and `--cors-origins`
//! settings ([`AccessConfig`]) and what they are turned into once at
//! start-up ([`Access`], shared by every HTTP worker as app data).
//!
//! The binary registers it like this (an embedding host that wants keys or
//! CORS does the same; without the app data every route is open and no
//! CORS header is sent):
//!
//! ```no_run
//! # use actix_web::{middleware::from_fn, App};
//! # fn f(config: whisper_node::http::access::AccessConfig) -> anyhow::Result<()> {
//! let access = whisper_node::http::access::Access::from_config(&config, 3)?;
//! let data = actix_web::web::Data::new(access);
//! let app = App::new()
//!     .app_data(data.clone())
//!     .wrap(from_fn(whisper_node::http::auth::check))
//!     .wrap(data.cors());
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use actix_cors::Cors;
use actix_web::middleware::Condition;
use anyhow::Context;

use super::auth::{ApiKeys, PerKeyLimit};

/// The access settings (flags with `WHISPER_NODE_*` environment
/// equivalents).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccessConfig {
    /// File of API keys, one per line (blank lines and lines starting with
    /// `#` are skipped). When set, every `/v1/…` route needs
    /// `Authorization: Bearer <key>` (401 otherwise); `/health` and
    /// `/ready` stay open. Keys are never logged: a request is logged with
    /// its key's line number (`key-3`).
    #[arg(long, env = "WHISPER_NODE_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// With `--api-keys-file`, `/metrics` needs a key too (default: open,
    /// for scrapers inside the network).
    #[arg(
        long,
        env = "WHISPER_NODE_METRICS_REQUIRE_KEY",
        default_value_t = false
    )]
    pub metrics_require_key: bool,

    /// With `--api-keys-file`, the most work-creating requests (`POST` to a
    /// `/v1/…` route: transcriptions, translations, job submissions) one key
    /// may have in progress at once (upload, decode, queue and transcription
    /// together); more are answered 429 `key_busy` + `Retry-After`.
    /// 0 = half the queue capacity (rounded up) plus one: one client cannot
    /// fill the whole queue.
    #[arg(long, env = "WHISPER_NODE_MAX_REQUESTS_PER_KEY", default_value_t = 0)]
    pub max_requests_per_key: usize,

    /// Web origins allowed to call the node from a browser
    /// (`https://app.example.com`), comma-separated; default none (no CORS
    /// headers, preflights refused). `*` allows any origin.
    #[arg(long, env = "WHISPER_NODE_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
}

/// The access policy, built once from [`AccessConfig`].
#[derive(Debug)]
pub struct Access {
    /// The keys, when keys are required.
    pub(crate) keys: Option<ApiKeys>,
    /// Whether `/metrics` needs a key.
    pub(crate) metrics_require_key: bool,
    /// Requests in progress per key.
    pub(crate) per_key: PerKeyLimit,
    /// The allowed origins (`*` = any).
    cors_origins: Vec<String>,
}

impl Access {
    /// Reads the keys file (an unreadable or empty file is an error: the
    /// node must not start open when keys were asked for) and checks the
    /// origins. `queue_capacity` sizes the default per-key limit.
    pub fn from_config(config: &AccessConfig, queue_capacity: usize) -> anyhow::Result<Self> {
        let keys = match &config.api_keys_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --api-keys-file {}", path.display()))?;
                let keys = ApiKeys::parse(&text)
                    .with_context(|| format!("--api-keys-file {}", path.display()))?;
                tracing::info!(keys = keys.len(), "API keys required on /v1 routes");
                Some(keys)
            }
            None => None,
        };
        let per_key = match config.max_requests_per_key {
            0 => queue_capacity.div_ceil(2) + 1,
            n => n,
        };
        let cors_origins = parse_origins(&config.cors_origins)?;
        Ok(Self {
            keys,
            metrics_require_key: config.metrics_require_key,
            per_key: PerKeyLimit::new(per_key),
            cors_origins,
        })
    }

    /// No keys, no CORS (what a node without the app data does).
    pub fn open() -> Self {
        Self {
            keys: None,
            metrics_require_key: false,
            per_key: PerKeyLimit::new(usize::MAX),
            cors_origins: Vec::new(),
        }
    }

    /// Whether keys are required.
    pub fn requires_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// The CORS middleware for the allowed origins; a no-op (no headers,
    /// preflights reach the routes and get 405) when there are none.
    ///
    /// Preflights from an allowed origin are answered 200 with
    /// `Access-Control-Allow-Origin`, `-Methods` (`GET, POST, DELETE,
    /// HEAD`), `-Headers` (whatever the browser asks for, `Authorization`
    /// included) and `-Max-Age` (1 h); from another origin 400 without
    /// them. Answers to allowed origins carry `Access-Control-Allow-Origin`
    /// and expose the node's `X-…` headers and `Retry-After`.
    pub fn cors(&self) -> Condition<Cors> {
        let mut cors = Cors::default()
            .allowed_methods(["GET", "POST", "DELETE", "HEAD"])
            .allow_any_header()
            .expose_headers([
                "x-job-id",
                "x-queue-wait-ms",
                "x-decode-ms",
                "x-worker-generation",
                "x-engine-idle-us",
                "x-audio-skipped-packets",
                "x-audio-gap-seconds",
                "retry-after",
                "location",
            ])
            .max_age(3600);
        if self.cors_origins.iter().any(|o| o == "*") {
            cors = cors.allow_any_origin();
        } else {
            for origin in &self.cors_origins {
                cors = cors.allowed_origin(origin);
            }
        }
        Condition::new(!self.cors_origins.is_empty(), cors)
    }
}

/// Splits and checks `--cors-origins`: each an origin (`scheme://host[:port]`,
/// no path) or `*`.
fn parse_origins(list: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for origin in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let origin = origin.trim_end_matches('/');
        if origin != "*" {
            let uri: actix_web::http::Uri = origin
                .parse()
                .with_context(|| format!("--cors-origins: {origin:?} is not an origin"))?;
            let bare = uri.scheme().is_some()
                && uri.host().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none();
            anyhow::ensure!(
                bare,
                "--cors-origins: {origin:?} is not an origin (scheme://host[:port])"
            );
        }
        out.push(origin.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert_eq!(
            parse_origins(" https://a.example , http://localhost:3000/ ").unwrap(),
            ["https://a.example", "http://localhost:3000"]
        );
        assert_eq!(parse_origins("*").unwrap(), ["*"]);
        assert!(parse_origins("").unwrap().is_empty());
        assert!(parse_origins("a.example").is_err());
        assert!(parse_origins("https://a.example/path").is_err());
    }

    #[test]
    fn an_empty_or_missing_keys_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("keys");
        std::fs::write(&empty, "# no keys\n\n").unwrap();
        for path in [empty, dir.path().join("missing")] {
            let config = AccessConfig {
                api_keys_file: Some(path),
                ..AccessConfig::default()
            };
            assert!(Access::from_config(&config, 3).is_err());
        }
    }

    #[test]
    fn the_default_per_key_limit_leaves_room_in_the_queue() {
        let access = Access::from_config(&AccessConfig::default(), 3).unwrap();
        assert_eq!(access.per_key.max(), 3);
        assert!(!access.requires_keys());
        let access = Access::from_config(&AccessConfig::default(), 8).unwrap();
        assert_eq!(access.per_key.max(), 5);
    }
}
