//! The `X-Fault-Inject` test header.

use crate::error_code::Code;
use crate::http::error::ApiError;

/// Request header that injects a worker fault (tests only; honoured only
/// when the node runs with `enable_fault_injection`).
pub const FAULT_HEADER: &str = "x-fault-inject";

/// Reads `X-Fault-Inject: crash | hang | slow:<ms> | out-of-order |
/// wrong-id`; ignored (with a debug log) unless fault injection is enabled,
/// a 400 when enabled and malformed.
pub fn parse_fault(
    headers: &actix_web::http::header::HeaderMap,
    enabled: bool,
) -> Result<Option<crate::api::Fault>, ApiError> {
    let Some(value) = headers.get(FAULT_HEADER) else {
        return Ok(None);
    };
    if !enabled {
        tracing::debug!("ignoring the fault injection header: fault injection is disabled");
        return Ok(None);
    }
    let bad = || {
        ApiError::new(
            Code::InvalidFault,
            "X-Fault-Inject must be crash, hang, slow:<ms>, out-of-order or wrong-id",
        )
    };
    let value = value
        .to_str()
        .map_err(|_| bad())?
        .trim()
        .to_ascii_lowercase();
    match value.as_str() {
        "crash" => Ok(Some(crate::api::Fault::Crash)),
        "hang" => Ok(Some(crate::api::Fault::Hang)),
        "out-of-order" => Ok(Some(crate::api::Fault::AnswerOutOfOrder)),
        "wrong-id" => Ok(Some(crate::api::Fault::AnswerWrongId)),
        other => {
            let ms = other
                .strip_prefix("slow:")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .ok_or_else(bad)?;
            Ok(Some(crate::api::Fault::SlowMs(ms)))
        }
    }
}
