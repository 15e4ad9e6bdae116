//! Which jobs are cancelled ([`Cancels`]), shared by the stdin reader
//! (which applies `Cancel` frames at once) and the main thread (which
//! starts and finishes jobs).
//!
//! A lone job running is stopped through the pipeline's own flag
//! (`Pipeline::cancel`); the jobs of a batch each get a flag of their own
//! (`BatchItem::cancel`), so cancelling one job of a batch stops only that
//! job.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Which jobs are cancelled (see the module docs).
pub struct Cancels {
    state: Mutex<CancelState>,
    /// The pipeline's flag: set while the running lone job is cancelled.
    running_cancelled: Arc<AtomicBool>,
}

#[derive(Default)]
struct CancelState {
    /// Jobs read and not finished yet (only these can be cancelled, so the
    /// set below stays small).
    pending: HashSet<u64>,
    cancelled: HashSet<u64>,
    /// The job (or the first job of the batch) running, if any.
    running: Option<u64>,
    /// The flags of the jobs of the running batch.
    batch: HashMap<u64, Arc<AtomicBool>>,
}

impl Cancels {
    /// `running_cancelled` is the pipeline's flag.
    pub fn new(running_cancelled: Arc<AtomicBool>) -> Self {
        Self {
            state: Mutex::default(),
            running_cancelled,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CancelState> {
        // A panic while holding this lock cannot leave the sets invalid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader read job `id`.
    pub fn received(&self, id: u64) {
        self.lock().pending.insert(id);
    }

    /// The parent cancelled `id`: remembered if it is still to run, flagged
    /// if it is running (alone or in a batch).
    pub fn cancel(&self, id: u64) {
        let mut st = self.lock();
        if !st.pending.contains(&id) {
            return; // answered already (or never sent): nothing to do
        }
        st.cancelled.insert(id);
        if let Some(flag) = st.batch.get(&id) {
            flag.store(true, Ordering::Release);
        } else if st.running == Some(id) {
            self.running_cancelled.store(true, Ordering::Release);
        }
    }

    /// The job (or the first job of the batch) running now, if any.
    pub fn running(&self) -> Option<u64> {
        self.lock().running
    }

    /// Job `id` starts alone; true if it was cancelled already.
    pub fn start(&self, id: u64) -> bool {
        let mut st = self.lock();
        st.running = Some(id);
        let cancelled = st.cancelled.contains(&id);
        self.running_cancelled.store(cancelled, Ordering::Release);
        cancelled
    }

    /// Job `id` was answered.
    pub fn finish(&self, id: u64) {
        self.finish_batch(&[id]);
        self.running_cancelled.store(false, Ordering::Release);
    }

    /// The jobs `ids` start as one batch: a flag for each, set already for
    /// those cancelled before they started.
    pub fn start_batch(&self, ids: &[u64]) -> Vec<Arc<AtomicBool>> {
        let mut st = self.lock();
        st.running = ids.first().copied();
        self.running_cancelled.store(false, Ordering::Release);
        let flags: Vec<Arc<AtomicBool>> = ids
            .iter()
            .map(|id| Arc::new(AtomicBool::new(st.cancelled.contains(id))))
            .collect();
        st.batch = ids.iter().copied().zip(flags.iter().cloned()).collect();
        flags
    }

    /// The batch of `ids` was answered.
    pub fn finish_batch(&self, ids: &[u64]) {
        let mut st = self.lock();
        st.running = None;
        st.batch.clear();
        for id in ids {
            st.pending.remove(id);
            st.cancelled.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_one_job_of_a_batch_flags_only_that_job() {
        let pipeline = Arc::new(AtomicBool::new(false));
        let c = Cancels::new(pipeline.clone());
        for id in [1, 2, 3, 4] {
            c.received(id);
        }
        c.cancel(2); // before the batch starts
        let flags = c.start_batch(&[1, 2, 3]);
        let set = |f: &[Arc<AtomicBool>]| -> Vec<bool> {
            f.iter().map(|x| x.load(Ordering::Acquire)).collect()
        };
        assert_eq!(set(&flags), vec![false, true, false]);
        assert_eq!(c.running(), Some(1));
        c.cancel(3); // while it runs
        assert_eq!(set(&flags), vec![false, true, true]);
        assert!(
            !pipeline.load(Ordering::Acquire),
            "the lone-job flag untouched"
        );
        c.finish_batch(&[1, 2, 3]);
        assert_eq!(c.running(), None);
        c.cancel(1); // answered: nothing to do
        assert!(!c.start(4), "job 4 was not cancelled");
        c.cancel(4);
        assert!(
            pipeline.load(Ordering::Acquire),
            "a lone job uses the pipeline's flag"
        );
        c.finish(4);
        assert!(!pipeline.load(Ordering::Acquire));
    }
}
