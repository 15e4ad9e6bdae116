//! Committed utterances to the node and back: the job of each (class
//! realtime), terminal events in commit order, and provisional decodes of
//! the open utterance.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::task::AbortHandle;
use tracing::Span;

use super::{Pending, SessionMsg, SessionState, MIN_PARTIAL_SAMPLES};
use crate::api::{AsrError, JobClass, Transcript, TranscriptionRequest};
use crate::realtime::protocol::{ProtocolError, ServerEvent};
use crate::realtime::stable::StablePrefix;

/// Trailing silence after which no provisional decode starts.
const PARTIAL_QUIET_MS: u64 = 150;

impl SessionState {
    /// `committed`, then the utterance goes to the node (or is refused).
    pub(super) fn commit(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        item_id: String,
        audio: Vec<i16>,
        stable: StablePrefix,
        stopped_at: Instant,
    ) {
        let previous_item_id = self.previous_item.replace(item_id.clone());
        self.send(
            myself,
            ServerEvent::Committed {
                item_id: item_id.clone(),
                previous_item_id,
            },
        );
        let audio_secs = audio.len() as f64 / f64::from(asr_ipc::SAMPLE_RATE);
        let span = tracing::info_span!(
            parent: &self.span,
            "realtime.utterance",
            item_id = %item_id,
            audio_secs,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let mut p = Pending {
            seq,
            item_id,
            audio_secs,
            stopped_at,
            stable,
            span,
            task: None,
            done: None,
        };
        let waiting = self.pending.iter().filter(|p| p.done.is_none()).count();
        if waiting >= self.limits.realtime_max_pending_utterances {
            let e = AsrError::Busy {
                retry_after: Duration::from_secs(1),
                queued: waiting,
            };
            p.done = Some(failure(&p.item_id, &e));
            p.span.record("outcome", "queue_full");
            crate::metrics::realtime_utterance("queue_full", None);
        } else {
            let fault = self.fault.take();
            p.task = Some(self.submit(myself, seq, audio, false, &p.span, fault));
        }
        self.pending.push_back(p);
        self.flush_done(myself);
    }

    pub(super) fn request(&self, audio: Vec<i16>, span: &Span) -> TranscriptionRequest {
        let mut req = TranscriptionRequest::new(audio);
        req.class = JobClass::Realtime;
        req.parent_span = span.clone();
        req.options.beam_size = self.node.config().beam_size;
        req.options.language = self.config.language.clone();
        req.options.initial_prompt = self.config.prompt.clone();
        req
    }

    pub(super) fn submit(
        &self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        audio: Vec<i16>,
        partial: bool,
        span: &Span,
        fault: Option<crate::api::Fault>,
    ) -> AbortHandle {
        let mut req = self.request(audio, span);
        req.fault = fault;
        let node = self.node.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let answer = node.transcribe(req).await;
            let _ = me.cast(SessionMsg::Decoded {
                seq,
                partial,
                answer,
            });
        })
        .abort_handle()
    }

    pub(super) fn on_final(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        answer: Result<Transcript, AsrError>,
    ) {
        let Some(p) = self.pending.iter_mut().find(|p| p.seq == seq) else {
            return;
        };
        p.task = None;
        let latency = p.stopped_at.elapsed();
        p.span.record("latency_ms", latency.as_secs_f64() * 1e3);
        p.done = Some(match answer {
            Ok(t) => {
                p.span.record("outcome", "ok");
                crate::metrics::realtime_utterance("ok", Some(latency));
                vec![ServerEvent::Completed {
                    item_id: p.item_id.clone(),
                    transcript: p.stable.finish(&t.result.text),
                    audio_secs: p.audio_secs,
                    timing: (
                        t.queue_wait.as_secs_f64() * 1e3,
                        t.decode_time.as_secs_f64() * 1e3,
                    ),
                }]
            }
            Err(e) => {
                let code = e.code().name();
                tracing::warn!(parent: &p.span, error = %e, "utterance failed");
                p.span.record("outcome", code);
                crate::metrics::realtime_utterance(code, None);
                failure(&p.item_id, &e)
            }
        });
        self.flush_done(myself);
    }

    /// Sends the terminal events of finished utterances, in commit order.
    pub(super) fn flush_done(&mut self, myself: &ActorRef<SessionMsg>) {
        while self.pending.front().is_some_and(|p| p.done.is_some()) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            for ev in p.done.unwrap_or_default() {
                self.send(myself, ev);
            }
            self.span.record("utterances", p.seq as i64);
        }
    }

    /// A provisional decode of the open utterance, at most every
    /// `--realtime-partial-interval-ms`, only while nothing waits in the
    /// queue and no other decode of this session is outstanding.
    pub(super) fn maybe_partial(&mut self, myself: &ActorRef<SessionMsg>) {
        let Some(interval) = self.limits.partial_interval() else {
            return;
        };
        let Some(open) = &self.open else { return };
        if open.partial_in_flight
            || open.last_partial.elapsed() < interval
            || self.pending.iter().any(|p| p.done.is_none())
        {
            return;
        }
        // The speaker may be stopping: a provisional decode now would
        // hold the worker when the final one is wanted.
        if self
            .vad
            .as_ref()
            .is_some_and(|v| v.trailing_silence_ms() >= PARTIAL_QUIET_MS)
        {
            return;
        }
        let status = self.node.status();
        if status.queue_depth > 0 || !status.ready {
            return;
        }
        let from = (open.from.max(self.buffer_start) - self.buffer_start) as usize;
        if self.buffer.len().saturating_sub(from) < MIN_PARTIAL_SAMPLES {
            return;
        }
        let audio = self.buffer[from..].to_vec();
        let seq = open.seq;
        let span =
            tracing::info_span!(parent: &self.span, "realtime.partial", item_id = %open.item_id);
        let task = self.submit(myself, seq, audio, true, &span, None);
        if let Some(open) = self.open.as_mut() {
            open.partial_in_flight = true;
            open.last_partial = Instant::now();
        }
        self.partial_task = Some(task);
    }

    pub(super) fn on_partial(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        answer: Result<Transcript, AsrError>,
    ) {
        let Some(open) = self.open.as_mut().filter(|o| o.seq == seq) else {
            return;
        };
        open.partial_in_flight = false;
        open.last_partial = Instant::now();
        self.partial_task = None;
        // A failed provisional decode costs nothing: the final decides.
        let Ok(t) = answer else { return };
        if let Some(delta) = open.stable.provisional(&t.result.text) {
            let item_id = open.item_id.clone();
            self.send(myself, ServerEvent::Delta { item_id, delta });
        }
    }
}

/// The terminal events of a failed utterance: an `error` event (with a
/// retry hint when retrying can help), then `…transcription.failed`.
fn failure(item_id: &str, e: &AsrError) -> Vec<ServerEvent> {
    let error = ProtocolError::new(e.code(), e.to_string());
    vec![
        ServerEvent::Error {
            error: error.clone(),
            client_event_id: None,
            item_id: Some(item_id.to_string()),
            retry_after_ms: e.retry_after().map(|d| d.as_millis() as u64),
        },
        ServerEvent::Failed {
            item_id: item_id.to_string(),
            error,
        },
    ]
}
