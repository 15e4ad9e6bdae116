//! The memory side of a decode: [`PcmBudget`], where a decode reserves the
//! bytes of its output before it grows, and `Output`, the 16 kHz sink that
//! collects under that budget or only counts.

use super::{f32_to_i16, MIN_GROWTH_FRAMES};

/// Where a decode reserves the memory of its output before it grows.
/// [`crate::ingest::PcmLease`] is the node's; [`Unbudgeted`] never refuses.
pub trait PcmBudget {
    /// Sets this decode's reservation to `total_bytes` (growing or
    /// shrinking it); `false`, with the reservation unchanged, when growing
    /// does not fit. Never blocks.
    fn try_resize(&mut self, total_bytes: usize) -> bool;
}

/// A [`PcmBudget`] without limit (tests, embedding hosts that bound memory
/// themselves).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unbudgeted;

impl PcmBudget for Unbudgeted {
    fn try_resize(&mut self, _total_bytes: usize) -> bool {
        true
    }
}

/// The 16 kHz side of a decode: collects `i16` under a budget, or counts.
pub(super) struct Output<'b> {
    pub(super) samples: Vec<i16>,
    /// Still collecting (false: counting only).
    pub(super) keep: bool,
    pub(super) budget: Option<&'b mut dyn PcmBudget>,
    /// Capacity is never grown past this.
    pub(super) max_frames: usize,
    /// Frames produced (kept or not).
    pub(super) frames: u64,
}

impl<'b> Output<'b> {
    /// Collects, with `prealloc` frames already reserved in `budget`.
    pub(super) fn collect(
        budget: &'b mut dyn PcmBudget,
        max_frames: usize,
        prealloc: usize,
    ) -> Self {
        Self {
            samples: Vec::with_capacity(prealloc),
            keep: true,
            budget: Some(budget),
            max_frames,
            frames: 0,
        }
    }

    pub(super) fn count() -> Self {
        Self {
            samples: Vec::new(),
            keep: false,
            budget: None,
            max_frames: 0,
            frames: 0,
        }
    }

    /// Appends 16 kHz samples (or counts them).
    pub(super) fn push(&mut self, chunk: &[f32]) {
        self.frames += chunk.len() as u64;
        if !self.keep {
            return;
        }
        let need = self.samples.len() + chunk.len();
        if need > self.samples.capacity() {
            let cap = self.samples.capacity();
            let grown = need
                .max(cap + (cap / 8).max(MIN_GROWTH_FRAMES))
                .min(self.max_frames.max(need));
            let ok = self
                .budget
                .as_mut()
                .is_some_and(|b| b.try_resize(grown * 2));
            if !ok {
                // Over budget: stop holding audio, keep counting.
                self.keep = false;
                self.samples = Vec::new();
                if let Some(b) = self.budget.as_mut() {
                    b.try_resize(0);
                }
                return;
            }
            self.samples.reserve_exact(grown - self.samples.len());
        }
        self.samples.extend(chunk.iter().map(|&s| f32_to_i16(s)));
    }

    /// The samples, with the budget shrunk to their size.
    pub(super) fn finish(mut self) -> Vec<i16> {
        self.samples.shrink_to_fit();
        if let Some(b) = self.budget.as_mut() {
            b.try_resize(self.samples.len() * 2);
        }
        std::mem::take(&mut self.samples)
    }
}
