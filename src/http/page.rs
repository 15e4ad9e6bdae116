//! `GET /`: the node's web page, embedded in the binary (no build step, no
//! framework): live captions from the microphone over
//! [`/v1/realtime`](super::realtime), and a file picker that posts to
//! `/v1/audio/transcriptions` and offers the transcript as text, SRT and
//! VTT. The page is `assets/index.html`, one file with its style and
//! script inline, so it is served with a strict Content-Security-Policy.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// The page.
pub const INDEX_HTML: &str = include_str!("../../assets/index.html");

/// Route of the page.
pub const PAGE_ROUTE: &str = "/";

/// Mounts `GET /`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PAGE_ROUTE)
            .route(web::get().to(index))
            .route(web::head().to(index)),
    );
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ))
        .body(INDEX_HTML)
}
