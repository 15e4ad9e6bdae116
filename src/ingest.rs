//! [`Ingest`]: the one place where uploads become PCM, shared by the
//! synchronous endpoint (`/v1/audio/transcriptions`) and the async jobs
//! (`/v1/jobs`, acceptance and runner), so that one budget bounds what the
//! parent process holds however the load is split between them.
//!
//! It owns three limits:
//! - **Uploads being read** (`--max-concurrent-uploads`): a permit is taken
//!   before a body is read and kept until its decode has finished (or the
//!   request ended); without one the request is refused at once with 429
//!   `too_many_uploads` + `Retry-After`. Bodies are read under a minimum
//!   rate and a total time (see [`crate::http::form`]) and spooled to disk
//!   past [`crate::http::form::SPOOL_THRESHOLD_BYTES`].
//! - **Decodes at a time**: one per core, on tokio's blocking pool; others
//!   wait for a slot (their number is bounded by the upload permits).
//! - **Decoded PCM** (`--decode-memory-budget-mib`): every decode reserves
//!   the bytes of its 16 kHz `i16` output before it grows it, from one
//!   shared pool ([`PcmLease`]). The lease stays with the request until its
//!   answer (a queued job's PCM is still in this process), so the pool
//!   bounds all decoded audio of sync requests and of the async job being
//!   run. A decode that cannot grow never waits while holding budget (see
//!   [`crate::audio`]): it finishes counting, so an over-long stream is
//!   still a 413, and a stream that fits is decoded again once its exact
//!   size could be reserved, or refused at once with 503 `decode_busy` +
//!   `Retry-After`. Validation of async jobs only counts and needs no budget.
//!
//! # The bound
//! Peak memory of the parent ≈ baseline (≈ 30 MiB) + the PCM budget
//! (default 384 MiB) + uploads held in memory (at most
//! `max_concurrent_uploads` × 1 MiB; larger bodies live in unnamed temp
//! files in `--upload-spool-dir`) + decoder state (≈ 1 MiB per running
//! decode). Until the worker IPC carries `i16` (the worker proxy's change),
//! a request's PCM is also widened to `f32` when it is handed to the node,
//! which that PCM's lease does not count.
//!
//! The budget must hold the longest allowed audio (`--max-audio-secs` ×
//! 32,000 bytes); start-up refuses a smaller one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audio::{self, AudioError, DecodeReport, Decoded, PcmBudget, Upload};
use crate::config::NodeConfig;

/// `Retry-After` of a refusal for too many uploads.
pub const UPLOADS_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Shared ingest limits. Cheap to clone; clones share the limits.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    uploads: Arc<Semaphore>,
    max_uploads: usize,
    decode_slots: Semaphore,
    pool: Arc<BudgetPool>,
    max_audio_secs: f64,
    settings: UploadSettings,
}

/// How upload bodies are read (see [`crate::http::form`]).
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSettings {
    /// Longest time to receive a whole body.
    pub timeout: Duration,
    /// Least bytes per second, measured over every
    /// [`crate::http::form::RATE_WINDOW`]; 0 = no minimum.
    pub min_bytes_per_sec: u64,
    /// Folder of spooled bodies (`None`: the system's temp folder).
    pub spool_dir: Option<PathBuf>,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            min_bytes_per_sec: 1024,
            spool_dir: None,
        }
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A snapshot of the ingest limits, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IngestStats {
    /// Uploads being read or decoded now.
    pub uploads_in_progress: usize,
    /// Their limit.
    pub max_concurrent_uploads: usize,
    /// Bytes of decoded PCM reserved now.
    pub pcm_budget_used_bytes: usize,
    /// The budget, bytes.
    pub pcm_budget_bytes: usize,
}

/// Too many uploads are being read (429 `too_many_uploads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{limit} uploads are being read; retry later")]
pub struct UploadsBusy {
    /// The limit.
    pub limit: usize,
}

/// Held while one upload is read and decoded.
#[derive(Debug)]
pub struct UploadPermit {
    _permit: OwnedSemaphorePermit,
}

/// Why a decode through [`Ingest`] failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// The audio was refused (the client's file, or the budget).
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The blocking task failed (a bug; logged).
    #[error("the decode task failed: {0}")]
    Internal(String),
}

impl Ingest {
    /// The limits of `config` (see [`NodeConfig`]).
    pub fn new(config: &NodeConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_uploads = config.max_concurrent_uploads.max(1);
        Self {
            inner: Arc::new(Inner {
                uploads: Arc::new(Semaphore::new(max_uploads)),
                max_uploads,
                decode_slots: Semaphore::new(cores),
                pool: Arc::new(BudgetPool {
                    limit: config.decode_memory_budget_bytes(),
                    used: AtomicUsize::new(0),
                }),
                max_audio_secs: config.max_audio_secs,
                settings: UploadSettings {
                    timeout: Duration::from_secs_f64(config.upload_timeout_secs),
                    min_bytes_per_sec: config.upload_min_bytes_per_sec,
                    spool_dir: config.upload_spool_dir.clone(),
                },
            }),
        }
    }

    /// How bodies are read.
    pub fn upload_settings(&self) -> &UploadSettings {
        &self.inner.settings
    }

    /// A permit to read (and then decode) one upload, or a refusal at once.
    pub fn try_upload(&self) -> Result<UploadPermit, UploadsBusy> {
        self.inner
            .uploads
            .clone()
            .try_acquire_owned()
            .map(|p| UploadPermit { _permit: p })
            .map_err(|_| UploadsBusy {
                limit: self.inner.max_uploads,
            })
    }

    /// Decodes an upload to 16 kHz mono `i16` on the blocking pool, in one
    /// of the decode slots, under the length limit and the PCM budget; the
    /// returned lease holds the samples' bytes until dropped.
    pub async fn decode(
        &self,
        upload: Arc<Upload>,
        hint: Option<String>,
    ) -> Result<(Decoded, PcmLease), IngestError> {
        let _slot = self
            .inner
            .decode_slots
            .acquire()
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let mut lease = PcmLease {
            pool: self.inner.pool.clone(),
            bytes: 0,
        };
        let max = self.inner.max_audio_secs;
        let span = tracing::Span::current();
        let (decoded, lease) = tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let out = audio::decode_upload(&upload, hint.as_deref(), max, &mut lease);
            (out, lease)
        })
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
        Ok((decoded?, lease))
    }

    /// Decodes an upload only to measure it (length, damage), on the
    /// blocking pool in a decode slot; needs no PCM budget.
    pub async fn measure(
        &self,
        upload: Arc<Upload>,
        hint: Option<String>,
    ) -> Result<DecodeReport, IngestError> {
        let _slot = self
            .inner
            .decode_slots
            .acquire()
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let max = self.inner.max_audio_secs;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            audio::measure_upload(&upload, hint.as_deref(), max)
        })
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?
        .map_err(IngestError::from)
    }

    /// The limits' current use.
    pub fn stats(&self) -> IngestStats {
        IngestStats {
            uploads_in_progress: self.inner.max_uploads - self.inner.uploads.available_permits(),
            max_concurrent_uploads: self.inner.max_uploads,
            pcm_budget_used_bytes: self.inner.pool.used.load(Ordering::Acquire),
            pcm_budget_bytes: self.inner.pool.limit,
        }
    }
}

/// The shared PCM pool.
#[derive(Debug)]
struct BudgetPool {
    limit: usize,
    used: AtomicUsize,
}

impl BudgetPool {
    /// Adds `n` bytes if they fit.
    fn try_add(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One decode's (then one request's) share of the PCM budget; given back
/// when dropped.
#[derive(Debug)]
pub struct PcmLease {
    pool: Arc<BudgetPool>,
    bytes: usize,
}

impl PcmLease {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl PcmBudget for PcmLease {
    fn try_resize(&mut self, total_bytes: usize) -> bool {
        if total_bytes <= self.bytes {
            self.pool.sub(self.bytes - total_bytes);
            self.bytes = total_bytes;
            return true;
        }
        if self.pool.try_add(total_bytes - self.bytes) {
            self.bytes = total_bytes;
            true
        } else {
            false
        }
    }
}

impl Drop for PcmLease {
    fn drop(&mut self) {
        self.pool.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(budget_mib: usize, max_audio_secs: f64, uploads: usize) -> Ingest {
        let config = NodeConfig {
            decode_memory_budget_mib: budget_mib,
            max_audio_secs,
            max_concurrent_uploads: uploads,
            ..NodeConfig::default()
        };
        Ingest::new(&config)
    }

    #[test]
    fn leases_grow_shrink_and_give_back() {
        let i = ingest(1, 10.0, 4);
        let pool = i.inner.pool.clone();
        let mut a = PcmLease {
            pool: pool.clone(),
            bytes: 0,
        };
        let mut b = PcmLease {
            pool: pool.clone(),
            bytes: 0,
        };
        assert!(a.try_resize(700 * 1024));
        assert!(!b.try_resize(400 * 1024), "over the 1 MiB pool");
        assert_eq!(b.bytes(), 0);
        assert!(b.try_resize(324 * 1024));
        assert_eq!(i.stats().pcm_budget_used_bytes, 1024 * 1024);
        assert!(a.try_resize(100));
        drop(b);
        assert_eq!(i.stats().pcm_budget_used_bytes, 100);
        drop(a);
        assert_eq!(i.stats().pcm_budget_used_bytes, 0);
    }

    #[test]
    fn upload_permits_are_capped_and_come_back() {
        let i = ingest(64, 10.0, 2);
        let a = i.try_upload().unwrap();
        let _b = i.try_upload().unwrap();
        assert_eq!(i.try_upload().unwrap_err(), UploadsBusy { limit: 2 });
        assert_eq!(i.stats().uploads_in_progress, 2);
        drop(a);
        assert!(i.try_upload().is_ok());
    }

    #[tokio::test]
    async fn decode_holds_its_samples_in_the_budget_until_dropped() {
        let i = ingest(8, 60.0, 2);
        let wav = crate::audio::test_wav::tone(44_100, 2.0, 8000.0);
        let (decoded, lease) = i
            .decode(Arc::new(Upload::from(wav)), Some("wav".into()))
            .await
            .unwrap();
        assert_eq!(decoded.samples.len(), 32_000);
        assert_eq!(lease.bytes(), 64_000);
        assert_eq!(i.stats().pcm_budget_used_bytes, 64_000);
        drop(lease);
        assert_eq!(i.stats().pcm_budget_used_bytes, 0);
    }

    #[tokio::test]
    async fn a_full_budget_refuses_audio_that_fits_the_limit_but_not_the_budget() {
        // 1 MiB pool; 40 s of audio needs 1.28 MB.
        let i = ingest(1, 60.0, 2);
        let wav = crate::audio::test_wav::tone(16_000, 40.0, 8000.0);
        let e = i
            .decode(Arc::new(Upload::from(wav.clone())), None)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            IngestError::Audio(AudioError::OverBudget {
                needed_bytes: 1_280_000
            })
        );
        assert_eq!(i.stats().pcm_budget_used_bytes, 0, "nothing left reserved");
        // Measuring needs no budget.
        let r = i.measure(Arc::new(Upload::from(wav)), None).await.unwrap();
        assert_eq!(r.frames, 640_000);
    }

    #[tokio::test]
    async fn audio_over_the_limit_is_too_long_even_when_over_budget() {
        // 1 MiB pool (≈ 32 s), limit 50 s, audio 60 s with no declared length
        // problem for the budget: the decode counts past the budget and
        // still answers 413, not 503.
        let i = ingest(1, 50.0, 2);
        let wav = crate::audio::test_wav::tone(16_000, 60.0, 8000.0);
        // Hide the declared length: the WAV reader then reads to the end.
        let mut wav = wav;
        wav[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        wav[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = i.decode(Arc::new(Upload::from(wav)), None).await;
        assert!(
            matches!(e, Err(IngestError::Audio(AudioError::TooLong { .. }))),
            "{e:?}"
        );
        assert_eq!(i.stats().pcm_budget_used_bytes, 0);
    }
}
