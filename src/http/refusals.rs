//! Logging of capacity refusals (429 and 503: queue full, too many uploads,
//! decode budget full, backlog full, worker restarting, shutting down)
//! without flooding the logs.
//!
//! Under a flood every refused request used to log two lines of about
//! 300 bytes each (12.5 MB of logs in 30 s). Now the first refusal of a
//! [`WINDOW`] is logged as it happens; the others are only counted, and the
//! next refusal after the window closes logs one summary line with the
//! counts per code, then opens a new window. A flood therefore costs one or
//! two lines per 10 s, whatever its rate. Every refusal is still counted
//! one by one in `/metrics` (`asr_requests_total{outcome,status}`), and a
//! refusal logs at `debug` as before for whoever turns it on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often refusals are summarised at most.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Whether an answer is a capacity refusal (aggregated) rather than an
/// outcome worth its own log line.
pub fn is_refusal(status: u16) -> bool {
    status == 429 || status == 503
}

#[derive(Default)]
struct State {
    window_start: Option<Instant>,
    counts: BTreeMap<&'static str, u64>,
}

static STATE: Mutex<State> = Mutex::new(State {
    window_start: None,
    counts: BTreeMap::new(),
});

/// What [`record_at`] wants logged.
#[derive(Debug, PartialEq, Eq)]
enum Emit {
    /// Nothing: counted.
    Nothing,
    /// This refusal, in full (the first of a window).
    First,
    /// A summary of the window that just closed, then this refusal.
    Summary {
        window: Duration,
        counts: BTreeMap<&'static str, u64>,
    },
}

fn record_at(state: &mut State, code: &'static str, now: Instant) -> Emit {
    match state.window_start {
        None => {
            state.window_start = Some(now);
            Emit::First
        }
        Some(start) if now.duration_since(start) >= WINDOW => {
            let counts = std::mem::take(&mut state.counts);
            state.window_start = Some(now);
            if counts.is_empty() {
                Emit::First
            } else {
                Emit::Summary {
                    window: now.duration_since(start),
                    counts,
                }
            }
        }
        Some(_) => {
            *state.counts.entry(code).or_default() += 1;
            Emit::Nothing
        }
    }
}

/// Records one refusal answered with `status` and `code` by `route`, and
/// logs it (rate-limited, see the module doc).
pub fn refused(route: &'static str, status: u16, code: &'static str, elapsed_ms: u64) {
    tracing::debug!(route, status, code, elapsed_ms, "request refused");
    let emit = {
        let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
        record_at(&mut state, code, Instant::now())
    };
    match emit {
        Emit::Nothing => {}
        Emit::First => tracing::info!(
            route,
            status,
            code,
            "request refused (further refusals are summarised every {} s)",
            WINDOW.as_secs()
        ),
        Emit::Summary { window, counts } => {
            let total: u64 = counts.values().sum();
            let by_code = counts
                .iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            tracing::warn!(
                refused = total,
                window_secs = window.as_secs(),
                by_code = %by_code,
                "requests refused since the last summary (capacity); then {route}: {status} {code}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_one_line_per_window() {
        let mut s = State::default();
        let t0 = Instant::now();
        assert_eq!(record_at(&mut s, "queue_full", t0), Emit::First);
        for i in 1..10_000u64 {
            let at = t0 + Duration::from_micros(i * 900); // 9 s of refusals
            let code = if i % 2 == 0 {
                "queue_full"
            } else {
                "too_many_uploads"
            };
            assert_eq!(record_at(&mut s, code, at), Emit::Nothing);
        }
        match record_at(&mut s, "queue_full", t0 + WINDOW) {
            Emit::Summary { counts, window } => {
                assert_eq!(window, WINDOW);
                assert_eq!(counts["queue_full"], 4999);
                assert_eq!(counts["too_many_uploads"], 5000);
            }
            other => panic!("expected a summary, got {other:?}"),
        }
        // A new window: counted again.
        assert_eq!(
            record_at(&mut s, "queue_full", t0 + WINDOW + Duration::from_secs(1)),
            Emit::Nothing
        );
        // A quiet window ends with no summary of nothing.
        let mut q = State::default();
        assert_eq!(record_at(&mut q, "x", t0), Emit::First);
        assert_eq!(record_at(&mut q, "x", t0 + WINDOW * 3), Emit::First);
    }

    #[test]
    fn only_429_and_503_are_refusals() {
        assert!(is_refusal(429) && is_refusal(503));
        assert!(!is_refusal(200) && !is_refusal(413) && !is_refusal(500) && !is_refusal(504));
    }
}
