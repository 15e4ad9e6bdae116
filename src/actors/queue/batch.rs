//! Dynamic batching: which waiting jobs the worker may decode together with
//! the head of the queue.
//!
//! # Compatibility
//! A job joins the head's batch when all of these hold:
//! - both are *batchable*: at most [`BATCH_MAX_AUDIO_SECS`] of audio (one
//!   Whisper window: the jobs of a batch cost about the same, so none
//!   waits long for a much longer one), and not [`QueuedJob::solo`] (a job
//!   back after a worker crash is decoded alone);
//! - the same priority class ([`crate::api::JobClass`]): a batch never
//!   takes a job of a lower class ahead of a waiting job of a higher one;
//! - identical [`DecodeOptions`] apart from `language`, `initial_prompt`
//!   and `hotwords` (each job's own prompt and language) and `text_only`
//!   (no effect on audio of one window); the task, beam, temperatures,
//!   thresholds, timestamps, VAD and every other field must match.
//!
//! Members are taken in queue order (oldest first). A job that is not
//! compatible keeps its place, and becomes the head of a later batch.

use std::collections::VecDeque;
use std::time::Instant;

use super::QueuedJob;
use crate::api::DecodeOptions;

/// Longest audio a job may have to be batched, seconds (one window).
pub const BATCH_MAX_AUDIO_SECS: f64 = 30.0;

/// Whether `job` may be decoded in a batch at all.
pub fn batchable(job: &QueuedJob) -> bool {
    !job.solo && job.attempts == 0 && job.audio_secs <= BATCH_MAX_AUDIO_SECS
}

/// Whether two jobs' options let them be decoded together (see the module
/// docs).
pub fn compatible_options(a: &DecodeOptions, b: &DecodeOptions) -> bool {
    let strip = |o: &DecodeOptions| DecodeOptions {
        language: None,
        initial_prompt: None,
        hotwords: None,
        text_only: false,
        ..o.clone()
    };
    strip(a) == strip(b)
}

/// Whether `job` may join the batch headed by `head`.
pub fn joins(head: &QueuedJob, job: &QueuedJob) -> bool {
    batchable(head)
        && batchable(job)
        && head.class == job.class
        && compatible_options(&head.payload.options, &job.payload.options)
}

/// Why a waiting job was taken out without joining a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its client has gone: drop it, never decode it.
    ClientGone,
    /// Its queue deadline passed: answer it `QueueTimeout`.
    Expired,
}

/// Why `job` may no longer wait, if it may not.
pub fn stale(job: &QueuedJob, now: Instant) -> Option<Dropped> {
    if job.reply.is_closed() {
        Some(Dropped::ClientGone)
    } else if now >= job.deadline {
        Some(Dropped::Expired)
    } else {
        None
    }
}

/// How many waiting jobs (still waited for, not expired) could join
/// `head`'s batch now.
pub fn joinable<'a>(
    jobs: impl IntoIterator<Item = &'a QueuedJob>,
    head: &QueuedJob,
    now: Instant,
) -> usize {
    jobs.into_iter()
        .filter(|j| stale(j, now).is_none() && joins(head, j))
        .count()
}

/// Takes out of `jobs` up to `room` jobs that join `head`'s batch, in
/// queue order. Jobs found stale on the way are taken out too and returned
/// with why, to be dropped or answered; every other job keeps its place.
pub fn take_members(
    jobs: &mut VecDeque<QueuedJob>,
    head: &QueuedJob,
    room: usize,
    now: Instant,
) -> (Vec<QueuedJob>, Vec<(QueuedJob, Dropped)>) {
    let mut members = Vec::new();
    let mut dropped = Vec::new();
    if room == 0 || !batchable(head) {
        return (members, dropped);
    }
    let mut kept = VecDeque::with_capacity(jobs.len());
    while let Some(job) = jobs.pop_front() {
        if members.len() >= room {
            kept.push_back(job);
            kept.append(jobs);
            break;
        }
        if let Some(why) = stale(&job, now) {
            dropped.push((job, why));
        } else if joins(head, &job) {
            members.push(job);
        } else {
            kept.push_back(job);
        }
    }
    *jobs = kept;
    (members, dropped)
}

#[cfg(test)]
mod tests;
