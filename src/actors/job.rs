//! The job that flows through the tree: [`QueuedJob`] (id, shared audio
//! and options, deadlines, reply port, span) from the ingress through the
//! queue to the worker proxy and back on a retry, and its queue-wait span
//! ([`QueueWait`]). The actors move it; telemetry knows nothing of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::RpcReplyPort;
use tracing::{field, Span};

use crate::api::{AsrError, DecodeOptions, Fault, Transcript};

/// Where a job's answer goes.
pub type Reply = RpcReplyPort<Result<Transcript, AsrError>>;

/// The audio and options of a job, shared (not copied) between the queue,
/// the worker proxy and a possible retry.
#[derive(Debug)]
pub struct JobPayload {
    /// 16 kHz mono 16-bit PCM.
    pub samples: Vec<i16>,
    /// Decode options.
    pub options: DecodeOptions,
    /// Injected fault (tests).
    pub fault: Option<Fault>,
    /// Whether the worker sends the segments of each window as it goes.
    pub stream_segments: bool,
}

/// A job on its way through the tree.
#[derive(Debug)]
pub struct QueuedJob {
    /// Node-unique id.
    pub id: u64,
    /// Audio and options.
    pub payload: Arc<JobPayload>,
    /// Seconds of audio.
    pub audio_secs: f64,
    /// When the queue admitted it.
    pub admitted_at: Instant,
    /// When it must have been dispatched.
    pub deadline: Instant,
    /// The job's span (child of the request's span).
    pub span: tracing::Span,
    /// Where the answer goes.
    pub reply: Reply,
    /// Times this job was already in flight when the worker crashed.
    pub attempts: u32,
    /// Hash of the audio, to recognise a quarantined input.
    pub fingerprint: u64,
    /// Where decode progress goes, if anyone listens.
    pub progress: Option<crate::api::ProgressSink>,
    /// Where segments go as they are decoded, if anyone streams them.
    pub segments: Option<crate::api::SegmentSink>,
    /// Its `queue.wait` span while it waits (see [`QueueWait`]).
    pub queue_wait: Option<QueueWait>,
    /// Its priority class (the queue serves higher classes first).
    pub class: crate::api::JobClass,
    /// It must be decoded alone, never in a batch: it was in flight when
    /// the worker crashed (alone or in a batch), so it is run alone from
    /// then on and a poisoned input is told from its batch-mates.
    pub solo: bool,
}

/// Hash of a job's audio, used to recognise a quarantined input.
pub fn fingerprint(samples: &[i16]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // SAFETY: i16 has no padding or invalid bit patterns as bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            samples.as_ptr().cast::<u8>(),
            std::mem::size_of_val(samples),
        )
    };
    h.write(bytes);
    h.finish()
}

impl QueuedJob {
    /// Starts its queue wait (admission, or re-admission after a crash);
    /// `depth` is the number of jobs waiting ahead of it.
    pub fn start_queue_wait(&mut self, depth: usize) {
        self.queue_wait = Some(QueueWait::start(self, depth));
    }

    /// Ends its queue wait with `outcome` (`dispatched`, `expired`,
    /// `client_gone`, …); a `dispatched` wait is observed in
    /// `asr_queue_wait_seconds`.
    pub fn end_queue_wait(&mut self, outcome: &'static str) {
        if let Some(w) = self.queue_wait.take() {
            let waited = w.end(outcome);
            if outcome == "dispatched" {
                crate::metrics::job_dispatched(waited);
            }
        }
    }

    /// Opens the `worker.decode` span of a job handed to the worker, under the
    /// job's span: job id, attempt, audio seconds, beam size, worker id (in
    /// the pool), generation and pid, and the model, device and compute type from the worker's
    /// handshake. Outcome and real-time factor are recorded when it ends.
    pub fn decode_span(
        &self,
        worker_id: usize,
        generation: u64,
        hello: Option<&asr_ipc::Hello>,
    ) -> Span {
        let (model, device, compute_type, pid) = match hello {
            Some(h) => (
                h.model.as_str(),
                h.device.as_str(),
                h.compute_type.as_str(),
                h.pid,
            ),
            None => ("", "", "", 0),
        };
        tracing::info_span!(
            parent: &self.span,
            "worker.decode",
            otel.kind = "client",
            job_id = self.id as i64,
            attempt = i64::from(self.attempts),
            audio_secs = self.audio_secs,
            beam_size = i64::from(self.payload.options.beam_size),
            model,
            device,
            compute_type,
            worker_id = worker_id as i64,
            worker_generation = generation as i64,
            worker_pid = i64::from(pid),
            staged_ms = field::Empty,
            decode_ms = field::Empty,
            rtf = field::Empty,
            language = field::Empty,
            segments = field::Empty,
            outcome = field::Empty,
            error = field::Empty,
        )
    }
}

/// A job's time in the queue: the `queue.wait` span, open from admission to
/// dispatch (or expiry), and the instant it started.
#[derive(Debug)]
pub struct QueueWait {
    span: Span,
    since: Instant,
}

impl QueueWait {
    /// Opens `queue.wait` under the job's span; `depth` is the number of jobs
    /// waiting ahead of it.
    pub fn start(job: &QueuedJob, depth: usize) -> Self {
        let span = tracing::info_span!(
            parent: &job.span,
            "queue.wait",
            job_id = job.id as i64,
            queue_depth = depth as i64,
            attempt = i64::from(job.attempts),
            wait_ms = field::Empty,
            outcome = field::Empty,
        );
        Self {
            span,
            since: Instant::now(),
        }
    }

    /// Ends the span with `outcome` (`dispatched`, `expired`, `client_gone`,
    /// …) and returns how long the job waited.
    pub fn end(self, outcome: &'static str) -> Duration {
        let waited = self.since.elapsed();
        self.span.record("wait_ms", waited.as_secs_f64() * 1e3);
        self.span.record("outcome", outcome);
        waited
    }
}
