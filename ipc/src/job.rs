//! A whole [`Job`]: sent as a header and chunks ([`write_job`]), put back
//! together by a [`JobAssembler`].

use std::io::Write;

use crate::{
    encode, write_payload, AudioChunk, AudioChunkRef, DecodeOptions, Fault, FrameError, JobHeader,
    PcmRef, ToWorkerRef, CHUNK_SAMPLES, MAX_JOB_SAMPLES,
};

/// A whole job as the worker decodes it: the header's fields and all of
/// its audio (put together by a [`JobAssembler`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// See [`JobHeader::id`].
    pub id: u64,
    /// See [`JobHeader::traceparent`].
    pub traceparent: Option<String>,
    /// 16 kHz mono PCM; `x / 32768.0` is the sample in [-1, 1).
    pub samples: Vec<i16>,
    /// See [`JobHeader::options`].
    pub options: DecodeOptions,
    /// See [`JobHeader::fault`].
    pub fault: Option<Fault>,
    /// See [`JobHeader::stream_segments`].
    pub stream_segments: bool,
}

/// Encodes a job's header frame payload, refusing more than
/// [`MAX_JOB_SAMPLES`]. Nothing is sent when this fails, so a caller that
/// encodes the header before it records the job as sent can answer the
/// job at once and stay as if it had never seen it.
pub fn encode_job_header(header: &JobHeader) -> Result<Vec<u8>, FrameError> {
    if header.sample_count > MAX_JOB_SAMPLES {
        return Err(FrameError::TooManySamples(header.sample_count));
    }
    encode(&ToWorkerRef::Job(header))
}

/// The chunk frame payloads of a job's audio, in order; none for no audio.
/// Each is at most [`CHUNK_SAMPLES`] samples, far below [`MAX_FRAME_LEN`],
/// so encoding cannot fail for length.
pub fn encode_audio_chunks(
    job_id: u64,
    samples: &[i16],
) -> impl Iterator<Item = Result<Vec<u8>, FrameError>> + '_ {
    samples.chunks(CHUNK_SAMPLES).map(move |pcm| {
        encode(&ToWorkerRef::AudioChunk(AudioChunkRef {
            job_id,
            pcm: PcmRef(pcm),
        }))
    })
}

/// Writes a whole job (header, then its audio in chunks) to a blocking
/// stream; `header.sample_count` is set from `samples`.
pub fn write_job<W: Write>(
    w: &mut W,
    header: &JobHeader,
    samples: &[i16],
) -> Result<(), FrameError> {
    let header = JobHeader {
        sample_count: samples.len() as u64,
        ..header.clone()
    };
    write_payload(w, &encode_job_header(&header)?)?;
    for chunk in encode_audio_chunks(header.id, samples) {
        write_payload(w, &chunk?)?;
    }
    Ok(())
}

/// Why the frames of a job do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// A header announced more than [`MAX_JOB_SAMPLES`].
    #[error("job {job_id} announces {samples} samples, more than the limit of {MAX_JOB_SAMPLES}")]
    TooManySamples {
        /// The job.
        job_id: u64,
        /// What it announced.
        samples: u64,
    },
    /// A header or another frame came while a job's audio was incomplete.
    #[error("job {job_id} received {got} of its {expected} samples when another frame came")]
    Incomplete {
        /// The job whose audio was cut.
        job_id: u64,
        /// Samples received.
        got: u64,
        /// Samples announced.
        expected: u64,
    },
    /// An audio chunk came with no job waiting for audio.
    #[error("audio chunk for job {job_id} with no job waiting for audio")]
    Unexpected {
        /// The chunk's job id.
        job_id: u64,
    },
    /// An audio chunk named another job than the one receiving audio.
    #[error("audio chunk for job {got} while job {expected} receives its audio")]
    WrongJob {
        /// The job receiving audio.
        expected: u64,
        /// The chunk's job id.
        got: u64,
    },
    /// A [`crate::ToWorker::Batch`] frame that names fewer than two jobs,
    /// or one job twice, or comes while a batch is still being received.
    #[error("bad batch: {detail}")]
    BadBatch {
        /// What is wrong with it.
        detail: String,
    },
    /// A job header came inside a batch that does not name it next.
    #[error("job {got} arrived while the batch expected job {expected}")]
    NotInBatch {
        /// The id the batch names next.
        expected: u64,
        /// The header's id.
        got: u64,
    },
    /// More samples came than the header announced.
    #[error("job {job_id} got {got} samples, more than the {expected} announced")]
    TooLong {
        /// The job.
        job_id: u64,
        /// Samples received with this chunk.
        got: u64,
        /// Samples announced.
        expected: u64,
    },
}

/// Puts jobs back together from a header and its chunks (the receiving
/// side of *Audio* in the crate docs). Strict: the chunks must follow their
/// header, name its job and add up to exactly its `sample_count`.
#[derive(Debug, Default)]
pub struct JobAssembler {
    pending: Option<(Job, u64)>,
}

impl JobAssembler {
    /// A new job's header: `Ok(Some(job))` at once if it has no audio.
    pub fn header(&mut self, h: JobHeader) -> Result<Option<Job>, AssemblyError> {
        self.expect_idle()?;
        if h.sample_count > MAX_JOB_SAMPLES {
            return Err(AssemblyError::TooManySamples {
                job_id: h.id,
                samples: h.sample_count,
            });
        }
        let job = Job {
            id: h.id,
            traceparent: h.traceparent,
            samples: Vec::with_capacity(h.sample_count as usize),
            options: h.options,
            fault: h.fault,
            stream_segments: h.stream_segments,
        };
        if h.sample_count == 0 {
            return Ok(Some(job));
        }
        self.pending = Some((job, h.sample_count));
        Ok(None)
    }

    /// The next chunk: `Ok(Some(job))` when it completes its job.
    pub fn chunk(&mut self, c: AudioChunk) -> Result<Option<Job>, AssemblyError> {
        let Some((job, expected)) = self.pending.as_mut() else {
            return Err(AssemblyError::Unexpected { job_id: c.job_id });
        };
        if c.job_id != job.id {
            return Err(AssemblyError::WrongJob {
                expected: job.id,
                got: c.job_id,
            });
        }
        let got = (job.samples.len() + c.pcm.0.len()) as u64;
        if got > *expected {
            return Err(AssemblyError::TooLong {
                job_id: job.id,
                got,
                expected: *expected,
            });
        }
        job.samples.extend_from_slice(&c.pcm.0);
        if got < *expected {
            return Ok(None);
        }
        Ok(self.pending.take().map(|(job, _)| job))
    }

    /// The id of the job whose audio is being received, if any.
    pub fn receiving(&self) -> Option<u64> {
        self.pending.as_ref().map(|(j, _)| j.id)
    }

    /// `Ok` unless a job's audio is incomplete (call before acting on any
    /// frame other than a chunk, and at EOF).
    pub fn expect_idle(&self) -> Result<(), AssemblyError> {
        match &self.pending {
            None => Ok(()),
            Some((job, expected)) => Err(AssemblyError::Incomplete {
                job_id: job.id,
                got: job.samples.len() as u64,
                expected: *expected,
            }),
        }
    }
}
