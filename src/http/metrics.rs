//! `GET /metrics`: the node's metrics in the Prometheus text exposition
//! format (version 0.0.4); see [`crate::metrics`] for the list.
//!
//! Needs no node in the app data. When another metrics recorder was
//! installed in the process before the node's, the metrics go to that
//! recorder and this route answers 404 with the code `metrics_unavailable`.

use crate::error_code::Code;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse, ResponseError};

use super::error::ApiError;

/// Route of the Prometheus scrape endpoint.
pub const METRICS_ROUTE: &str = "/metrics";

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Mounts `GET /metrics` (and `HEAD`; other methods get a JSON 405).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(METRICS_ROUTE)
            .route(web::get().to(metrics))
            .route(web::head().to(metrics))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn metrics() -> HttpResponse {
    match crate::metrics::install() {
        Some(handle) => HttpResponse::Ok()
            .content_type(CONTENT_TYPE)
            .body(handle.render()),
        None => ApiError::new(
            Code::MetricsUnavailable,
            "this process exports metrics through another recorder",
        )
        .error_response(),
    }
}

async fn method_not_allowed() -> HttpResponse {
    let mut res =
        ApiError::new(Code::MethodNotAllowed, "method not allowed on this route").error_response();
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use actix_web::{test as atest, App};

    use super::*;

    #[actix_web::test]
    async fn serves_the_prometheus_text_format() {
        let app = atest::init_service(App::new().configure(configure)).await;
        let res = atest::call_service(
            &app,
            atest::TestRequest::get().uri(METRICS_ROUTE).to_request(),
        )
        .await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            CONTENT_TYPE
        );
        let body = to_bytes(res.into_body()).await.unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.contains("# TYPE asr_queue_wait_seconds histogram"),
            "{text}"
        );

        let res = atest::call_service(
            &app,
            atest::TestRequest::post().uri(METRICS_ROUTE).to_request(),
        )
        .await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers().get(header::ALLOW).unwrap(), "GET, HEAD");
    }
}
