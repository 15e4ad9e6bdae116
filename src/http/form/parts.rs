//! Multipart plumbing: the content-type check, mapping multipart failures
//! (and deliberate trips of the body stream) to [`ApiError`]s, the `file`
//! part's decoder hint, and reading a capped text part.

use actix_multipart::{Field, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::mime::{self, Mime};
use futures::StreamExt;

use super::{FormLimits, MAX_TEXT_FIELD_BYTES, RATE_WINDOW};
use crate::error_code::Code;
use crate::http::error::ApiError;

/// Why the body stream was failed on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trip {
    None,
    Overflow,
    Slow,
    Late,
}

/// The 408 of a body that came too slowly.
pub fn upload_timeout(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::UploadTimeout, message)
}

pub(super) fn multipart_error(e: MultipartError, tripped: Trip, limits: &FormLimits) -> ApiError {
    match tripped {
        Trip::None => {}
        Trip::Overflow => return ApiError::upload_too_large(limits.max_file_bytes),
        Trip::Slow => {
            return upload_timeout(format!(
                "the upload arrived slower than {} bytes per second over {} s",
                limits.min_bytes_per_sec,
                RATE_WINDOW.as_secs()
            ))
        }
        Trip::Late => {
            return upload_timeout(format!(
                "the upload was not complete within {} s",
                limits.timeout.as_secs_f64()
            ))
        }
    }
    match e {
        // `check_content_type` has already refused these; kept for safety.
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible => ApiError::new(
            Code::InvalidContentType,
            "the request body must be multipart/form-data with a boundary",
        ),
        MultipartError::Payload(PayloadError::Overflow) => ApiError::new(
            Code::InvalidMultipart,
            "a multipart part header is too large",
        ),
        other => ApiError::new(
            Code::InvalidMultipart,
            format!("malformed multipart body: {other}"),
        ),
    }
}

/// Refuses a body that is not `multipart/form-data` with a boundary, so
/// that later multipart errors are about the body itself.
pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Mime>().ok());
    let ok = mime.is_some_and(|m| {
        m.type_() == mime::MULTIPART
            && m.subtype() == mime::FORM_DATA
            && m.get_param(mime::BOUNDARY)
                .is_some_and(|b| !b.as_str().is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidContentType,
            "the request body must be multipart/form-data with a boundary",
        ))
    }
}

/// The decoder hint of the `file` part: its file name's extension, else its
/// content type.
pub(super) fn file_hint(field: &Field) -> Option<String> {
    let ext = field
        .content_disposition()
        .and_then(|cd| cd.get_filename())
        .and_then(|name| {
            name.rsplit_once('.')
                .map(|(_, ext)| ext.to_ascii_lowercase())
        })
        .filter(|ext| {
            !ext.is_empty() && ext.len() <= 8 && ext.chars().all(|c| c.is_ascii_alphanumeric())
        });
    ext.or_else(|| {
        field
            .content_type()
            .map(|m| m.essence_str().to_string())
            .filter(|m| m != "application/octet-stream")
    })
}
pub(super) async fn read_text(
    field: &mut Field,
    name: &str,
    map_err: &impl Fn(MultipartError) -> ApiError,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(map_err)?;
        if buf.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(ApiError::new(
                Code::FieldTooLong,
                format!("the {name} field is longer than {MAX_TEXT_FIELD_BYTES} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| {
        ApiError::new(
            Code::InvalidParameter,
            format!("the {name} field is not valid UTF-8"),
        )
    })
}
