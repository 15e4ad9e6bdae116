//! The job vocabulary: ids, statuses, what a job asks for ([`JobSpec`]),
//! how it failed ([`JobError`]) and what a client sees ([`JobView`]).

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

use crate::api::{DecodeOptions, Fault, JobResult};
use crate::api::{Granularities, ResponseFormat};

/// A job id: a random (v4) UUID, written in its hyphenated lower-case form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Parses an id as a client sends it; `None` for anything that is not a
    /// UUID (such ids can never name a job).
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::try_parse(s.trim()).ok().map(Self)
    }

    /// The id as a UUID (for the PostgreSQL store's `uuid` column).
    pub fn uuid(self) -> uuid::Uuid {
        self.0
    }

    /// An id read back from a store.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a job is in its life.
///
/// `queued` → `running` → `done` | `failed`; `queued` or `running` →
/// `cancelled` (by `DELETE`). A `running` job whose decode was refused for
/// a transient reason (the node was busy or restarting) goes back to
/// `queued`, as does a job that was running when the service died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and durable; waiting for its turn.
    Queued,
    /// Handed to the node: waiting in its queue or being decoded.
    Running,
    /// Finished; the result is available.
    Done,
    /// Finished without a result; `error` says why.
    Failed,
    /// Cancelled by the client; never decoded, or its decode was abandoned.
    Cancelled,
}

impl JobStatus {
    /// The status as stored and as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`JobStatus::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will not change any more (done, failed, cancelled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Why a job failed: a stable code and a human message, the same ones the
/// synchronous endpoint would have answered (see [`crate::http::error`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Stable, machine-readable code (`decode_timeout`, `input_quarantined`…).
    pub code: String,
    /// Human message; never internal detail.
    pub message: String,
}

/// What a job asks for; stored with it, so a job re-queued after a restart
/// is decoded exactly as it would have been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Decode options (from the form, like the synchronous endpoint).
    pub options: DecodeOptions,
    /// `response_format` of the form: the default rendering of the result.
    pub response_format: ResponseFormat,
    /// What `verbose_json` carries (stored as `segment_timestamps` and
    /// `word_timestamps`).
    #[serde(flatten)]
    pub granularities: Granularities,
    /// Decoder hint of the upload (file extension or content type).
    pub file_hint: Option<String>,
    /// Seconds of audio, measured when the upload was validated.
    pub audio_secs: f64,
    /// Size of the stored upload, bytes.
    pub upload_bytes: u64,
    /// Injected worker fault (tests; honoured only with fault injection on).
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// Progress of a job, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct JobProgress {
    /// Audio seconds decoded so far (updated after each 30 s window).
    pub decoded_secs: f64,
    /// Audio seconds in the job.
    pub total_secs: f64,
}

/// A snapshot of one job, built from memory (never from the store).
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// The job's id.
    pub id: JobId,
    /// Always `"transcription.job"`.
    pub object: &'static str,
    /// Where it is.
    pub status: JobStatus,
    /// Audio seconds decoded of the total.
    pub progress: JobProgress,
    /// 1-based position among the queued async jobs, while queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// Acceptance time, Unix seconds.
    pub created_at: u64,
    /// When it was (last) handed to the node, Unix seconds.
    pub started_at: Option<u64>,
    /// When it finished, Unix seconds.
    pub finished_at: Option<u64>,
    /// When a finished job's record and result are purged, Unix seconds.
    pub expires_at: Option<u64>,
    /// The job's default rendering (`GET /v1/jobs/{id}/result`).
    pub response_format: &'static str,
    /// Why it failed (status `failed`).
    pub error: Option<JobError>,
    /// The transcript (status `done`); rendered by the HTTP layer.
    #[serde(skip)]
    pub result: Option<Arc<JobResult>>,
    /// Timestamp granularities asked for (for rendering the result).
    #[serde(skip)]
    pub granularities: Granularities,
    /// The job's default rendering, typed.
    #[serde(skip)]
    pub format: ResponseFormat,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Job records written before the spec was typed (`response_format` as
    /// a string beside two booleans) read back the same, and are written
    /// the same way.
    #[test]
    fn the_stored_spec_format_is_unchanged() {
        let stored = serde_json::json!({
            "options": DecodeOptions::default(),
            "response_format": "verbose_json",
            "segment_timestamps": false,
            "word_timestamps": true,
            "file_hint": "wav",
            "audio_secs": 1.5,
            "upload_bytes": 10,
        });
        let spec: JobSpec = serde_json::from_value(stored.clone()).expect("old record");
        assert_eq!(spec.response_format, ResponseFormat::VerboseJson);
        assert_eq!(
            spec.granularities,
            Granularities {
                segment: false,
                word: true
            }
        );
        let mut again = serde_json::to_value(&spec).unwrap();
        again.as_object_mut().unwrap().remove("fault");
        assert_eq!(again, stored);
    }

    #[test]
    fn ids_round_trip_and_garbage_is_refused() {
        let id = JobId::random();
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
        assert_eq!(id.to_string().len(), 36);
        for bad in [
            "",
            "42",
            "not-a-uuid",
            "../../etc/passwd",
            "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        ] {
            assert_eq!(JobId::parse(bad), None, "{bad}");
        }
        assert_eq!(
            serde_json::to_value(id).unwrap(),
            serde_json::Value::String(id.to_string())
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Done,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(JobStatus::Done.is_finished() && !JobStatus::Running.is_finished());
    }
}
