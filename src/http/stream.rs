//! `stream=true`: the transcript as Server-Sent Events, segment by segment
//! as the worker finishes them.
//!
//! The events follow OpenAI's streamed transcription
//! (`Content-Type: text/event-stream`, one JSON object per `data:` line):
//!
//! ```text
//! data: {"type":"transcript.text.delta","delta":" Hello there.","segment":{"id":0,"start":0.0,"end":1.9,"text":" Hello there."}}
//!
//! data: {"type":"transcript.text.done","text":"Hello there.","language":"english","duration":1.9,"usage":{"type":"duration","seconds":2}}
//!
//! ```
//!
//! - One `transcript.text.delta` per segment, in order; the deltas joined
//!   (and trimmed) are the `done` event's `text`. `segment` (an extension)
//!   carries the segment's id and times and, with
//!   `timestamp_granularities[]=word`, its `words`. A segment is sent once
//!   the 30 s window that holds it is decoded, so deltas come in bursts,
//!   one burst per window.
//! - `transcript.text.done` ends a stream that succeeded. `usage` is
//!   OpenAI's duration usage (whole seconds, rounded up); `language`,
//!   `duration`, `job_id`, `queue_wait_ms` and `decode_ms` are extensions.
//! - `{"type":"error","error":{…}}`, with the same object as an error body
//!   (see [`ApiError`]) plus its HTTP `status`, ends a stream that failed
//!   after it started.
//!
//! The status line waits until the first segment is decoded (or the job
//! ends): every refusal and every error before that (full queue, queue
//! deadline, worker down, bad audio, …) is an ordinary error answer with
//! its status code, exactly as without `stream`. Once a segment was sent the
//! status is 200, and a later failure is the `error` event.
//!
//! If the worker crashes mid-job and the job is retried, the retry's
//! segments that were already sent are not sent again. A client that
//! disconnects mid-stream cancels the job: the worker stops at its next
//! 30 s window.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Span;

use super::error::ApiError;
use super::language;
use crate::api::{AsrError, Segment, Transcript};

/// The job's answer, owned by the stream.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<Transcript, AsrError>>>>;

/// A `data:` event.
fn event(v: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(v).unwrap_or_else(|e| {
        // Plain structs of numbers and strings cannot fail to serialise.
        tracing::error!(error = %e, "event rendering failed");
        String::from("{}")
    });
    Bytes::from(format!("data: {json}\n\n"))
}

/// The `transcript.text.delta` event of one segment.
pub fn delta_event(segment: &Segment, words: bool) -> Bytes {
    // Structs, not `json!`: f32 times print as they are (`4.48`, not
    // `4.480000019073486`), as in `verbose_json`.
    #[derive(Serialize)]
    struct Word<'a> {
        word: &'a str,
        start: f32,
        end: f32,
    }
    #[derive(Serialize)]
    struct Seg<'a> {
        id: u32,
        start: f32,
        end: f32,
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        words: Option<Vec<Word<'a>>>,
    }
    #[derive(Serialize)]
    struct Delta<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        delta: &'a str,
        segment: Seg<'a>,
    }
    let words = words.then(|| {
        segment
            .words
            .iter()
            .map(|w| Word {
                word: w.word.trim(),
                start: w.start,
                end: w.end,
            })
            .collect()
    });
    event(&Delta {
        kind: "transcript.text.delta",
        delta: &segment.text,
        segment: Seg {
            id: segment.id,
            start: segment.start,
            end: segment.end,
            text: &segment.text,
            words,
        },
    })
}

/// The `transcript.text.done` event.
pub fn done_event(t: &Transcript) -> Bytes {
    #[derive(Serialize)]
    struct Usage {
        #[serde(rename = "type")]
        kind: &'static str,
        seconds: u64,
    }
    #[derive(Serialize)]
    struct Done<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        text: &'a str,
        language: &'a str,
        duration: f32,
        usage: Usage,
        job_id: u64,
        queue_wait_ms: u64,
        decode_ms: u64,
    }
    let r = &t.result;
    event(&Done {
        kind: "transcript.text.done",
        text: r.text.trim(),
        language: language::name(&r.language).unwrap_or(r.language.as_str()),
        duration: r.duration_secs,
        usage: Usage {
            kind: "duration",
            seconds: r.duration_secs.max(0.0).ceil() as u64,
        },
        job_id: t.job_id,
        queue_wait_ms: t.queue_wait.as_millis() as u64,
        decode_ms: t.decode_time.as_millis() as u64,
    })
}

/// The `error` event that ends a failed stream.
pub fn error_event(e: &ApiError) -> Bytes {
    let mut v = e.body();
    v["type"] = "error".into();
    v["error"]["status"] = e.status().as_u16().into();
    event(&v)
}

/// How the first wait of a streamed request ended.
pub(crate) enum Start {
    /// The first segments arrived: the stream starts with them.
    Segments(Vec<Segment>),
    /// The job ended before any segment was sent.
    Ended(Result<Transcript, AsrError>),
}

/// Waits for the first segments or the end of the job (or the client
/// leaving, which ends it as [`AsrError::Cancelled`]).
pub(crate) async fn start(
    req: &HttpRequest,
    answer: &mut Answer,
    segments: &mut mpsc::UnboundedReceiver<Vec<Segment>>,
) -> Start {
    tokio::select! {
        biased;
        Some(batch) = segments.recv() => Start::Segments(batch),
        a = answer.as_mut() => Start::Ended(a),
        () = super::disconnect::closed(req) => Start::Ended(Err(AsrError::Cancelled)),
    }
}

/// The streamed answer: `first` segments (if any), then the rest as they
/// come, then `done` or `error`.
pub(crate) struct EventStream {
    req: HttpRequest,
    span: Span,
    started: Instant,
    words: bool,
    answer: Option<Answer>,
    segments: mpsc::UnboundedReceiver<Vec<Segment>>,
    /// Id of the next segment to send (a retried job starts again at 0).
    next_id: u32,
    pending: VecDeque<Bytes>,
}

impl EventStream {
    pub(crate) fn new(
        req: HttpRequest,
        span: Span,
        words: bool,
        answer: Answer,
        segments: mpsc::UnboundedReceiver<Vec<Segment>>,
    ) -> Self {
        Self {
            req,
            span,
            started: Instant::now(),
            words,
            answer: Some(answer),
            segments,
            next_id: 0,
            pending: VecDeque::new(),
        }
    }

    /// Queues the deltas of the segments not sent yet.
    fn push_segments(&mut self, segments: &[Segment]) {
        for s in segments {
            if s.id < self.next_id {
                continue;
            }
            self.next_id = s.id + 1;
            self.pending.push_back(delta_event(s, self.words));
        }
    }

    /// Queues the end of the stream.
    fn push_end(&mut self, answer: Result<Transcript, AsrError>) {
        self.answer = None;
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        match answer {
            Ok(t) => {
                self.span.record("job_id", t.job_id as i64);
                self.push_segments(&t.result.segments);
                self.pending.push_back(done_event(&t));
                tracing::info!(parent: &self.span, elapsed_ms, segments = self.next_id, "transcription stream finished");
            }
            Err(e) => {
                let e = ApiError::from(e);
                self.span.record("outcome", e.code());
                tracing::warn!(parent: &self.span, code = e.code(), status = e.status().as_u16(), elapsed_ms, "transcription stream failed after it started");
                self.pending.push_back(error_event(&e));
            }
        }
    }

    /// The next chunk of the body; `None` at the end or when the client left.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            let answer = self.answer.as_mut()?;
            tokio::select! {
                biased;
                Some(batch) = self.segments.recv() => self.push_segments(&batch),
                a = answer.as_mut() => self.push_end(a),
                () = super::disconnect::closed(&self.req) => {
                    // Dropping the answer closes the job's reply port; the
                    // node cancels the job.
                    self.answer = None;
                    self.span.record("outcome", "client_disconnected");
                    crate::metrics::http_request_abandoned();
                    tracing::info!(parent: &self.span, "client disconnected during the stream");
                    return None;
                }
            }
        }
    }

    /// The 200 answer that sends this stream.
    pub(crate) fn into_response(mut self, first: Option<Vec<Segment>>) -> HttpResponse {
        if let Some(batch) = first {
            self.push_segments(&batch);
        }
        let body = futures::stream::unfold(self, |mut s| async move {
            s.next()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(b), s))
        });
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            // Tells nginx-style proxies not to buffer the events.
            .insert_header(("x-accel-buffering", "no"))
            .streaming(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobResult, Word};
    use serde_json::{json, Value};
    use std::time::Duration;

    fn seg(id: u32, text: &str) -> Segment {
        Segment {
            id,
            seek: 0,
            start: id as f32,
            end: id as f32 + 1.0,
            text: text.into(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: -0.1,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            words: vec![Word {
                word: text.into(),
                start: id as f32,
                end: id as f32 + 0.5,
                probability: 0.9,
                tokens: Vec::new(),
            }],
        }
    }

    fn data(b: &Bytes) -> Value {
        let s = std::str::from_utf8(b).unwrap();
        let json = s
            .strip_prefix("data: ")
            .and_then(|s| s.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("not one SSE data event: {s:?}"));
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn events_are_openai_shaped() {
        let d = data(&delta_event(&seg(3, " Hi."), true));
        assert_eq!(d["type"], "transcript.text.delta");
        assert_eq!(d["delta"], " Hi.");
        assert_eq!(d["segment"]["id"], 3);
        assert_eq!(d["segment"]["start"], 3.0);
        let mut s = seg(0, " Hi.");
        s.end = 4.48;
        let raw = delta_event(&s, false);
        let raw = std::str::from_utf8(&raw).unwrap();
        assert!(raw.contains(r#""end":4.48,"#), "times print as f32: {raw}");
        assert_eq!(d["segment"]["words"][0]["word"], "Hi.");
        assert!(data(&delta_event(&seg(3, " Hi."), false))["segment"]
            .get("words")
            .is_none());

        let t = Transcript {
            job_id: 9,
            result: JobResult {
                job_id: 9,
                text: " Hi.".into(),
                segments: vec![seg(0, " Hi.")],
                language: "en".into(),
                language_probability: 1.0,
                duration_secs: 2.2,
                timings: Default::default(),
            },
            queue_wait: Duration::from_millis(5),
            decode_time: Duration::from_millis(300),
            worker_generation: 1,
        };
        let d = data(&done_event(&t));
        assert_eq!(d["type"], "transcript.text.done");
        assert_eq!(d["text"], "Hi.");
        assert_eq!(d["language"], "english");
        assert_eq!(d["usage"], json!({"type": "duration", "seconds": 3}));
        assert_eq!(d["job_id"], 9);

        let e = data(&error_event(&ApiError::from(AsrError::DecodeTimeout {
            limit: Duration::from_secs(30),
        })));
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["status"], 504);
        assert!(e["error"]["code"].is_string() && e["error"]["message"].is_string());
    }
}
