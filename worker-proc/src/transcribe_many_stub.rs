//! TEMPORARY: replaced by `transcribe::batched` at merge.
//!
//! A stand-in with exactly the signature of the batched decoder
//! (`Pipeline::transcribe_many` and `BatchItem`, built in
//! `transcribe::batched` on another branch), so the whole batch path
//! (queue, IPC, worker) is built and tested now. It decodes the items one
//! after the other with [`Pipeline::transcribe`]: the same words as a lone
//! job, none of the speed-up. At merge: delete this file and its `mod` line
//! in `lib.rs`, and import `BatchItem` from `crate::transcribe` in
//! `crate::batch_job`.

use std::sync::atomic::{AtomicBool, Ordering};

use asr_ipc::{DecodeOptions, Segment, WorkerError};

use crate::engine::Backend;
use crate::transcribe::{Pipeline, Transcript};

/// One job of a batch.
pub struct BatchItem<'a> {
    /// Its 16 kHz mono samples in [-1, 1).
    pub samples: &'a [f32],
    /// Its decode options.
    pub opts: &'a DecodeOptions,
    /// Set (by another thread) to stop this item only.
    pub cancel: Option<&'a AtomicBool>,
}

impl<B: Backend> Pipeline<B> {
    /// Transcribes `items` (here: one after the other, whatever
    /// `batch_size`); `progress(item, decoded_secs, total_secs, segments)`
    /// as for [`Pipeline::transcribe`]. An item whose flag is set before it
    /// starts is answered [`WorkerError::Cancelled`] without decoding; one
    /// flagged while it decodes stops before its next window.
    pub fn transcribe_many(
        &mut self,
        items: &[BatchItem<'_>],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, f32, f32, &[Segment]),
    ) -> Vec<Result<Transcript, WorkerError>> {
        let _ = batch_size;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let cancelled = || item.cancel.is_some_and(|c| c.load(Ordering::Acquire));
            if cancelled() {
                out.push(Err(WorkerError::Cancelled));
                continue;
            }
            let flag = self.cancel.clone();
            flag.store(false, Ordering::Release);
            let mut each = |decoded: f32, total: f32, segments: &[Segment]| {
                progress(i, decoded, total, segments);
                // The pipeline checks its own flag before each window.
                if cancelled() {
                    flag.store(true, Ordering::Release);
                }
            };
            out.push(self.transcribe(item.samples, item.opts, &mut each));
            self.cancel.store(false, Ordering::Release);
        }
        out
    }
}
