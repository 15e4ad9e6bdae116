//! [`BatchAssembler`]: the receiving side of *batches* (see the crate docs):
//! lone jobs as before, and the jobs named by a [`crate::ToWorker::Batch`]
//! frame gathered into one [`Assembled::Batch`].

use crate::{AssemblyError, AudioChunk, Job, JobAssembler, JobHeader};

/// What the frames received so far completed.
// One value per job or batch, moved straight to the decode loop: the size
// difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// A job sent alone.
    Job(Job),
    /// Every job of a batch, in the order the batch named them.
    Batch(Vec<Job>),
}

/// Puts lone jobs and batches back together. As strict as
/// [`JobAssembler`]: after a `Batch` frame only the named jobs may come,
/// each header in the named order, each followed by its audio.
#[derive(Debug, Default)]
pub struct BatchAssembler {
    jobs: JobAssembler,
    /// The batch being received: the ids it names, and its jobs so far.
    batch: Option<(Vec<u64>, Vec<Job>)>,
}

impl BatchAssembler {
    /// A `Batch` frame naming `job_ids`.
    pub fn batch(&mut self, job_ids: Vec<u64>) -> Result<(), AssemblyError> {
        self.expect_idle()?;
        let bad = |detail: String| Err(AssemblyError::BadBatch { detail });
        if job_ids.len() < 2 {
            return bad(format!("a batch of {} job(s)", job_ids.len()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = job_ids.iter().find(|id| !seen.insert(**id)) {
            return bad(format!("job {dup} named twice"));
        }
        let n = job_ids.len();
        self.batch = Some((job_ids, Vec::with_capacity(n)));
        Ok(())
    }

    /// A job's header: `Ok(Some(_))` if it completes a lone job or a batch.
    pub fn header(&mut self, h: JobHeader) -> Result<Option<Assembled>, AssemblyError> {
        if let Some((ids, got)) = &self.batch {
            let expected = ids[got.len()];
            if h.id != expected {
                return Err(AssemblyError::NotInBatch {
                    expected,
                    got: h.id,
                });
            }
        }
        let job = self.jobs.header(h)?;
        Ok(job.and_then(|j| self.complete(j)))
    }

    /// The next audio chunk: `Ok(Some(_))` if it completes a lone job or a
    /// batch.
    pub fn chunk(&mut self, c: AudioChunk) -> Result<Option<Assembled>, AssemblyError> {
        let job = self.jobs.chunk(c)?;
        Ok(job.and_then(|j| self.complete(j)))
    }

    /// The id of the job whose audio is being received, if any.
    pub fn receiving(&self) -> Option<u64> {
        self.jobs.receiving()
    }

    /// `Ok` unless a job's audio or a batch is incomplete (call before
    /// acting on any other frame, and at EOF).
    pub fn expect_idle(&self) -> Result<(), AssemblyError> {
        self.jobs.expect_idle()?;
        match &self.batch {
            None => Ok(()),
            Some((ids, got)) => Err(AssemblyError::BadBatch {
                detail: format!(
                    "another frame came after {} of the {} jobs of a batch",
                    got.len(),
                    ids.len()
                ),
            }),
        }
    }

    fn complete(&mut self, job: Job) -> Option<Assembled> {
        let Some((ids, got)) = self.batch.as_mut() else {
            return Some(Assembled::Job(job));
        };
        got.push(job);
        if got.len() < ids.len() {
            return None;
        }
        self.batch.take().map(|(_, jobs)| Assembled::Batch(jobs))
    }
}
