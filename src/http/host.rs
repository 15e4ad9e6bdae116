//! The `Host` check: requests must address the node by an allowed name.
//!
//! A node that listens on loopback is reachable by any web page the same
//! machine's browser opens, through DNS rebinding: a hostile name first
//! resolves to the attacker's server, then to 127.0.0.1, and the page's
//! scripts talk to the node as "same origin" (uploading audio, reading
//! jobs). The browser still sends the hostile name in `Host`, so refusing
//! names the node is not known by stops it.
//!
//! `--allowed-hosts` (see [`AllowedHosts::parse`]):
//! - `auto` (default): listening on a loopback address, only loopback names
//!   are allowed (`localhost`, `*.localhost`, `127.0.0.1` and the rest of
//!   127.0.0.0/8, `::1`); listening on any other address, any host (the
//!   node is meant to be reached from elsewhere, by names it cannot know;
//!   list them to restrict it).
//! - `*`: any host.
//! - a comma-separated list of names or IP addresses (`asr.example.com`,
//!   `10.0.0.5`, `[::1]`), and `*.example.com` for every subdomain of
//!   `example.com`. The port is ignored; names compare case-insensitively
//!   and without a trailing dot.
//!
//! A request whose `Host` (or HTTP/2 `:authority`) is not allowed is
//! answered 421 `host_not_allowed` before any handler runs. A request with
//! no host at all (HTTP/1.0) is allowed: browsers always send one.
//! Health probes must use an allowed name too (Kubernetes sends the pod IP:
//! list it, or use `auto`/`*` on a non-loopback address).
//!
//! Wrap the app with `.wrap(actix_web::middleware::from_fn(host::check))`
//! and put a `web::Data<AllowedHosts>` in its app data; without one the
//! check allows everything (embedding hosts do their own).

use crate::error_code::Code;
use std::net::{IpAddr, SocketAddr};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

use super::error::ApiError;

/// Which `Host` values are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any host.
    Any,
    /// Only these.
    List(Vec<HostPattern>),
}

/// One allowed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This name or address (lower case, IPv6 without brackets).
    Exact(String),
    /// Any strict subdomain of this name (`*.example.com` → `example.com`).
    Subdomains(String),
    /// Any loopback address (127.0.0.0/8, ::1).
    LoopbackIp,
}

impl AllowedHosts {
    /// Parses `--allowed-hosts` for a node listening on `listen`.
    pub fn parse(spec: &str, listen: SocketAddr) -> Result<AllowedHosts, String> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("auto") || spec.is_empty() {
            return Ok(if listen.ip().is_loopback() {
                AllowedHosts::loopback()
            } else {
                AllowedHosts::Any
            });
        }
        let mut list = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                return Ok(AllowedHosts::Any);
            }
            if let Some(domain) = item.strip_prefix("*.") {
                let domain = normalise(domain)
                    .filter(|d| !d.is_empty() && !d.contains('*'))
                    .ok_or_else(|| format!("bad allowed host {item:?}"))?;
                list.push(HostPattern::Subdomains(domain));
                continue;
            }
            let name = normalise(item)
                .filter(|n| !n.is_empty() && !n.contains('*') && !n.contains('/'))
                .ok_or_else(|| format!("bad allowed host {item:?}"))?;
            list.push(HostPattern::Exact(name));
        }
        if list.is_empty() {
            return Err("--allowed-hosts lists no host".into());
        }
        Ok(AllowedHosts::List(list))
    }

    /// Loopback names only.
    pub fn loopback() -> AllowedHosts {
        AllowedHosts::List(vec![
            HostPattern::Exact("localhost".into()),
            HostPattern::Subdomains("localhost".into()),
            HostPattern::LoopbackIp,
        ])
    }

    /// Whether a request with this `Host` value (port included or not) is
    /// allowed.
    pub fn allows(&self, host: &str) -> bool {
        let list = match self {
            AllowedHosts::Any => return true,
            AllowedHosts::List(list) => list,
        };
        let Some(name) = host_name(host) else {
            return false;
        };
        list.iter().any(|p| match p {
            HostPattern::Exact(n) => *n == name,
            HostPattern::Subdomains(d) => name
                .strip_suffix(d.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            HostPattern::LoopbackIp => name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        })
    }
}

/// Lower case, no trailing dot, IPv6 without brackets.
fn normalise(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = match name.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?.to_string(),
        None => name,
    };
    Some(name)
}

/// The host name of a `Host` value, without its port.
fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let host = if let Some(rest) = value.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        &value[..end + 2]
    } else {
        match value.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => value,
        }
    };
    normalise(host)
}

/// The middleware (see the module doc).
pub async fn check<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok().map(str::to_string))
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    let allowed = match (req.app_data::<web::Data<AllowedHosts>>(), &host) {
        (Some(hosts), Some(h)) => hosts.allows(h),
        _ => true,
    };
    if allowed {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let shown: String = host
        .unwrap_or_default()
        .chars()
        .take(80)
        .filter(|c| !c.is_control())
        .collect();
    tracing::warn!(host = %shown, path = %req.path(), "request for a host that is not allowed refused");
    let e = ApiError::new(
        Code::HostNotAllowed,
        format!("this server does not answer for host {shown:?} (see --allowed-hosts)"),
    );
    Ok(req.into_response(e.error_response()).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn auto_on_loopback_allows_loopback_names_only() {
        let h = AllowedHosts::parse("auto", addr("127.0.0.1:8080")).unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "api.localhost:1",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "xlocalhost",
            "10.0.0.1",
            "",
            "[::1",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        let v6 = AllowedHosts::parse("auto", addr("[::1]:80")).unwrap();
        assert_eq!(v6, AllowedHosts::loopback());
    }

    #[test]
    fn auto_elsewhere_allows_any_and_lists_restrict() {
        assert_eq!(
            AllowedHosts::parse("auto", addr("0.0.0.0:8080")).unwrap(),
            AllowedHosts::Any
        );
        assert_eq!(
            AllowedHosts::parse("a.com, *", addr("127.0.0.1:1")).unwrap(),
            AllowedHosts::Any
        );
        let h = AllowedHosts::parse(
            "asr.example.com, *.corp.example, 10.0.0.5, [::1]",
            addr("0.0.0.0:1"),
        )
        .unwrap();
        for ok in [
            "asr.example.com",
            "ASR.example.com:443",
            "a.corp.example",
            "a.b.corp.example:8",
            "10.0.0.5:8080",
            "[::1]:9",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "corp.example",
            "xcorp.example",
            "example.com",
            "localhost",
            "10.0.0.6",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        assert!(AllowedHosts::parse(" , ", addr("0.0.0.0:1")).is_err());
        assert!(AllowedHosts::parse("*.", addr("0.0.0.0:1")).is_err());
        assert!(AllowedHosts::parse("a/b", addr("0.0.0.0:1")).is_err());
    }

    #[actix_web::test]
    async fn the_middleware_answers_421_for_other_hosts() {
        use actix_web::{test, App, HttpResponse};
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(AllowedHosts::loopback()))
                .wrap(actix_web::middleware::from_fn(check))
                .route("/x", web::get().to(HttpResponse::Ok)),
        )
        .await;
        let ok = test::TestRequest::get()
            .uri("/x")
            .insert_header((header::HOST, "localhost:8080"))
            .to_request();
        assert_eq!(test::call_service(&app, ok).await.status(), 200);
        let bad = test::TestRequest::get()
            .uri("/x")
            .insert_header((header::HOST, "rebind.evil.example:8080"))
            .to_request();
        let res = test::call_service(&app, bad).await;
        assert_eq!(res.status(), 421);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["error"]["code"], "host_not_allowed");
    }
}
