//! Server mode's batches: the jobs of one `ToWorker::Batch` decoded
//! together with `Pipeline::transcribe_many`, each answered by its own id
//! (its `Progress` frames, then its `Done` or `Failed`; the answers are
//! written in the batch's order once the batch is decoded).
//!
//! A lone job never comes here: it runs `Pipeline::transcribe` (see
//! [`crate::protocol`]), so a request alone gets exactly the sequential
//! pipeline's results and latency.
//!
//! Per job, as for a lone job: its fault (fault injection only) applies
//! before the batch starts (`Crash` aborts the process with the whole
//! batch in it; `AnswerWrongId` answers it under its id + 1000;
//! `AnswerOutOfOrder` does nothing in a batch, whose answers have no order
//! to break), its cancel flag stops only it, invalid audio or options fail
//! only it. A panic in the batch fails every job of it (`Engine`), and the
//! worker keeps serving.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use asr_ipc::{Fault, FrameError, FromWorker, Job, Segment, WorkerError};

use crate::cancels::Cancels;
use crate::engine::Engine;
use crate::protocol::{done_frame, panic_message, write_to_parent, SharedOut};
use crate::transcribe::BatchItem;
use crate::transcribe::{Pipeline, Transcript};
use crate::{fault, log_error, log_info, log_warn};

/// Decodes the jobs of one batch (at least two) and writes their answers.
/// Errors are write errors only.
pub fn run_batch(
    pipeline: &mut Pipeline<Engine>,
    jobs: Vec<Job>,
    idle_before: Option<Duration>,
    faults: bool,
    out: &SharedOut,
    cancels: &Cancels,
) -> Result<(), FrameError> {
    let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    let audio_secs: f64 =
        jobs.iter().map(|j| j.samples.len()).sum::<usize>() as f64 / asr_ipc::SAMPLE_RATE as f64;
    log_info!(
        "batch of {} jobs {ids:?} started: {audio_secs:.2} s of audio, beam {}",
        jobs.len(),
        jobs.first().map_or(0, |j| j.options.beam_size)
    );
    for j in &jobs {
        fault::before_job(j.fault, faults, j.id);
    }
    // The ids the answers carry (another one only to simulate a broken
    // worker, with fault injection).
    let answer_ids: Vec<u64> = jobs
        .iter()
        .map(|j| {
            if faults && j.fault == Some(Fault::AnswerWrongId) {
                log_warn!(
                    "job {}: injected wrong id, answering as job {}",
                    j.id,
                    j.id + 1000
                );
                j.id + 1000
            } else {
                j.id
            }
        })
        .collect();
    let samples: Vec<Vec<f32>> = jobs
        .iter()
        .map(|j| j.samples.iter().map(|&s| f32::from(s) / 32768.0).collect())
        .collect();
    let flags = cancels.start_batch(&ids);
    let items: Vec<BatchItem<'_>> = jobs
        .iter()
        .zip(&samples)
        .zip(&flags)
        .map(|((j, s), f)| BatchItem {
            samples: s,
            opts: &j.options,
            cancel: Some(f.as_ref()),
        })
        .collect();
    let mut write_error: Option<FrameError> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut progress = |i: usize, decoded_secs: f32, total_secs: f32, segments: &[Segment]| {
            let (Some(job), Some(&job_id)) = (jobs.get(i), answer_ids.get(i)) else {
                return;
            };
            if write_error.is_none() {
                let msg = FromWorker::Progress {
                    job_id,
                    decoded_secs,
                    total_secs,
                    segments: if job.stream_segments {
                        segments.to_vec()
                    } else {
                        Vec::new()
                    },
                };
                if let Err(e) = write_to_parent(out, &msg) {
                    write_error = Some(e);
                }
            }
        };
        // The batched decoder: the windows of every job of the batch pooled,
        // at least one window per job per engine call (more when a job asks
        // for a larger long-form batch).
        let per_call = items
            .iter()
            .map(|i| i.opts.batch_size as usize)
            .max()
            .unwrap_or(1)
            .max(items.len());
        pipeline.transcribe_many(&items, per_call, &mut progress)
    }));
    drop(items);
    if let Some(e) = write_error {
        cancels.finish_batch(&ids);
        return Err(e);
    }
    let results: Vec<Result<Transcript, WorkerError>> = match outcome {
        Ok(r) if r.len() == jobs.len() => r,
        other => {
            let what = match other {
                Ok(r) => format!(
                    "the batch decoder gave {} results for {} jobs",
                    r.len(),
                    jobs.len()
                ),
                Err(panic) => panic_message(panic.as_ref()),
            };
            log_error!("batch {ids:?}: internal error: {what}");
            jobs.iter()
                .map(|_| Err(WorkerError::Engine(format!("internal error: {what}"))))
                .collect()
        }
    };
    let mut res = Ok(());
    for (n, ((job, &job_id), result)) in jobs.iter().zip(&answer_ids).zip(results).enumerate() {
        let answer = answer(
            job,
            job_id,
            result,
            (n == 0).then_some(idle_before).flatten(),
        );
        if let Err(e) = write_to_parent(out, &answer) {
            res = Err(e);
            break;
        }
    }
    cancels.finish_batch(&ids);
    res
}

/// The answer frame of one job of a batch.
fn answer(
    job: &Job,
    job_id: u64,
    result: Result<Transcript, WorkerError>,
    idle_before: Option<Duration>,
) -> FromWorker {
    let id = job.id;
    match result {
        Ok(t) => {
            log_info!(
                "job {id} done (in a batch): {} segments, {:.2} s of audio",
                t.segments.len(),
                t.duration_secs
            );
            done_frame(job_id, t, idle_before)
        }
        Err(WorkerError::Cancelled) => {
            log_info!("job {id} (in a batch) cancelled");
            FromWorker::Failed {
                job_id,
                error: WorkerError::Cancelled,
            }
        }
        Err(error) => {
            log_warn!("job {id} (in a batch) failed: {error}");
            FromWorker::Failed { job_id, error }
        }
    }
}
