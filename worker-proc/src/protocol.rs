//! Server mode: the framed stdin/stdout protocol of `asr_ipc`.
//!
//! Start-up:
//! 1. `prctl(PR_SET_PDEATHSIG, SIGKILL)`, then exit if the parent is
//!    already gone (the parent sets the same in `pre_exec`; doing it here too
//!    is harmless);
//! 2. stdout is kept for frames only: it is duplicated to a private
//!    descriptor and fd 1 is pointed at stderr, so a stray print from C++ or
//!    Rust can never corrupt the protocol;
//! 3. the model is loaded once; the worker answers `Hello`, or
//!    `LoadFailed` and exits with [`EXIT_LOAD_FAILED`].
//!
//! Then, on the main thread, strictly one job at a time: take the next job,
//! decode it, answer `Progress` after each 30 s window and exactly one
//! `Done` or `Failed`. There is no thread pool and no timeout around the
//! engine: a job that hangs is the parent's to kill. A second thread only
//! reads stdin: it deserialises the frames as they come and puts each job
//! back together from its header and 16-bit PCM chunks
//! ([`asr_ipc::JobAssembler`]; a job the parent staged is ready the moment
//! the engine finishes the one before), and applies `Cancel` at once (a
//! staged job is answered `Cancelled` without decoding; the running one
//! stops before its next 30 s window). The PCM becomes `f32` (`x / 32768`,
//! as faster-whisper's `decode_audio`) just before the features.
//!
//! The jobs of a `ToWorker::Batch` are gathered by the reader
//! ([`asr_ipc::BatchAssembler`]) and run together as one step of this loop
//! ([`crate::batch_job`]), each answered by its own id; a `Cancel` of one of
//! them stops only that job ([`Cancels`]). A lone job always runs the
//! sequential pipeline.
//!
//! A third thread sends `Heartbeat` every `--heartbeat-interval-ms`, busy or
//! idle: it only sleeps and writes, so nothing the engine does can hold it
//! up, and its silence tells the parent the whole process is frozen. Every
//! frame is written whole under one lock on stdout (`write_to_parent`), so
//! heartbeats never split another frame.
//!
//! | event | effect |
//! | --- | --- |
//! | stdin EOF, `Shutdown` | exit [`EXIT_OK`] once the jobs read before it are answered |
//! | `Batch` then its jobs | decoded together, each answered by its own id |
//! | `Cancel` of a staged / the running job | `Failed` (`Cancelled`) without decoding / before its next window |
//! | malformed, truncated or oversized frame | log, exit [`EXIT_PROTOCOL`] once the jobs before it are answered (no resync) |
//! | a frame cannot be written (parent gone) | exit [`EXIT_PROTOCOL`] |
//! | invalid audio or options | `Failed` (`InvalidAudio` / `InvalidOptions`), keep serving |
//! | engine error, or a bug (panic) in a job | `Failed` (`Engine`), keep serving |
//! | audio chunks that do not fit their header, a frame inside a job's audio | log, exit [`EXIT_PROTOCOL`] (as a malformed frame) |
//! | fault `AnswerOutOfOrder` / `AnswerWrongId` (fault injection only) | the next job is decoded and answered first / the answers carry the id + 1000 |

use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use asr_ipc::{
    decode, encode, read_frame, write_payload, Assembled, BatchAssembler, Fault, FrameError,
    FromWorker, Hello, Job, JobResult, LoadFailure, Segment, ToWorker, WorkerError,
};

use crate::cancels::Cancels;

use crate::engine::{Engine, EngineSettings};
use crate::transcribe::Pipeline;
use crate::{engine_info, fault, log_error, log_info, log_warn, model};

/// Clean exit: stdin EOF or `Shutdown`.
pub const EXIT_OK: i32 = 0;
/// The model could not be loaded (after `LoadFailed` was sent).
pub const EXIT_LOAD_FAILED: i32 = 3;
/// A malformed frame arrived, or frames could not be written.
pub const EXIT_PROTOCOL: i32 = 4;
/// Process set-up failed (the parent is gone, or stdout could not be taken).
pub const EXIT_SETUP: i32 = 6;

/// Everything server mode needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Model directory.
    pub model_dir: PathBuf,
    /// How to load the engine.
    pub settings: EngineSettings,
    /// Device name for the handshake (`cpu` / `cuda`).
    pub device_name: String,
    /// Compute type name for the handshake.
    pub compute_type_name: String,
    /// Threads in effect, for the handshake.
    pub threads_effective: u32,
    /// Honour `Job::fault` and `WORKER_PROC_FAULT_ON_LOAD`.
    pub enable_fault_injection: bool,
    /// The parent's pid, if the parent passed it: exit if it is not ours.
    pub parent_pid: Option<u32>,
    /// How often to send `Heartbeat` once the model is loaded.
    pub heartbeat_interval: Duration,
}

/// Makes the kernel SIGKILL us when the parent dies, and checks that it has
/// not died already.
fn tie_to_parent(expected: Option<u32>) -> Result<(), String> {
    // SAFETY: getppid and prctl(PR_SET_PDEATHSIG) have no memory effects.
    let before = unsafe { libc::getppid() };
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(format!(
            "prctl(PR_SET_PDEATHSIG) failed: {}",
            io::Error::last_os_error()
        ));
    }
    let after = unsafe { libc::getppid() };
    if after != before {
        return Err(format!("the parent (pid {before}) exited during start-up"));
    }
    if let Some(pid) = expected {
        if after as u32 != pid {
            return Err(format!(
                "the parent (pid {pid}) is gone; now reparented to pid {after}"
            ));
        }
    }
    Ok(())
}

/// Returns a private handle on the original stdout and points fd 1 at
/// stderr.
fn take_stdout() -> io::Result<File> {
    // SAFETY: plain descriptor calls; the new fd is owned by the File below.
    let fd = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

type Out = BufWriter<File>;

/// The frames' way to the parent, shared by the main and heartbeat threads.
pub(crate) type SharedOut = Mutex<Out>;

/// Writes one frame whole (encoded first, then written and flushed under the
/// lock), so frames from different threads never interleave.
pub(crate) fn write_to_parent(out: &SharedOut, msg: &FromWorker) -> Result<(), FrameError> {
    let payload = encode(msg)?;
    // A panic while holding the lock cannot leave a frame half-written
    // from our side of it: the lock is only held here.
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    write_payload(&mut *out, &payload)
}

/// Runs server mode and returns the process exit code.
pub fn serve(config: &ServerConfig) -> i32 {
    if let Err(e) = tie_to_parent(config.parent_pid) {
        log_error!("{e}; exiting");
        return EXIT_SETUP;
    }
    let out: Arc<SharedOut> = match take_stdout() {
        Ok(f) => Arc::new(Mutex::new(BufWriter::with_capacity(1 << 16, f))),
        Err(e) => {
            log_error!("cannot set up stdout for frames: {e}");
            return EXIT_SETUP;
        }
    };

    log_info!(
        "loading {} on {} ({}, {} threads)",
        config.model_dir.display(),
        config.device_name,
        config.compute_type_name,
        config.threads_effective
    );
    if let Some(code) = fault::on_load(config.enable_fault_injection) {
        log_error!("injected load failure, exiting with {code}");
        return code;
    }
    let (mut pipeline, info) = match model::load(&config.model_dir, config.settings) {
        Ok(loaded) => loaded,
        Err(e) => {
            let cause = format!("{e:#}");
            log_error!("cannot load the model: {cause}");
            let msg = FromWorker::LoadFailed(LoadFailure {
                model_path: config.model_dir.display().to_string(),
                cause,
            });
            if let Err(e) = write_to_parent(&out, &msg) {
                log_error!("cannot send LoadFailed: {e}");
            }
            return EXIT_LOAD_FAILED;
        }
    };
    log_info!(
        "model {} loaded in {} ms (multilingual: {})",
        info.name,
        info.load_ms,
        info.multilingual
    );
    // Before any other thread exists: the probe borrows stderr for a moment.
    let engine = engine_info::probe(config.settings.device);
    log_info!(
        "engine: CTranslate2 {} ({}) on {}",
        engine.version,
        engine.library,
        engine.backend
    );
    let hello = FromWorker::Hello(Hello {
        protocol_version: asr_ipc::PROTOCOL_VERSION,
        worker_version: env!("CARGO_PKG_VERSION").to_string(),
        model: info.name.clone(),
        multilingual: info.multilingual,
        device: config.device_name.clone(),
        compute_type: config.compute_type_name.clone(),
        threads: config.threads_effective,
        load_ms: info.load_ms,
        pid: std::process::id(),
        engine: asr_ipc::EngineInfo {
            version: engine.version,
            library: engine.library,
            backend: engine.backend,
            system_config: engine.system_config,
        },
    });
    if let Err(e) = write_to_parent(&out, &hello) {
        log_error!("cannot send Hello: {e}");
        return EXIT_PROTOCOL;
    }

    let cancels = Arc::new(Cancels::new(pipeline.cancel.clone()));
    if let Err(e) = spawn_heartbeat(out.clone(), cancels.clone(), config.heartbeat_interval) {
        log_error!("cannot start the heartbeat thread: {e}");
        return EXIT_SETUP;
    }
    let inbound = spawn_reader(cancels.clone());
    // The reader thread only ends after sending Eof or Broken, so a closed
    // channel means it died (a bug): treat it as broken input.
    let next = || {
        inbound
            .recv()
            .unwrap_or_else(|_| Inbound::Broken("the stdin reader stopped".into()))
    };
    // Messages taken from the reader ahead of their turn (fault injection).
    let mut ahead: std::collections::VecDeque<Inbound> = std::collections::VecDeque::new();
    // End of the previous job, for `Timings::idle_before_us`.
    let mut last_done: Option<Instant> = None;
    loop {
        let msg = ahead.pop_front().unwrap_or_else(next);
        match msg {
            Inbound::Eof => {
                log_info!("stdin closed, exiting");
                return EXIT_OK;
            }
            Inbound::Shutdown => {
                log_info!("shutdown requested, exiting");
                return EXIT_OK;
            }
            Inbound::Broken(e) => {
                log_error!("{e}; exiting");
                return EXIT_PROTOCOL;
            }
            Inbound::Job(mut job)
                if config.enable_fault_injection && job.fault == Some(Fault::AnswerOutOfOrder) =>
            {
                // A broken worker, for the parent's pairing tests: the job
                // after this one is decoded and answered first.
                log_warn!(
                    "job {}: injected out-of-order answer, answering the next job first",
                    job.id
                );
                job.fault = None;
                match next() {
                    later @ (Inbound::Job(_) | Inbound::Batch(_)) => {
                        ahead.push_back(later);
                        ahead.push_back(Inbound::Job(job));
                    }
                    other => {
                        ahead.push_back(Inbound::Job(job));
                        ahead.push_back(other);
                    }
                }
            }
            Inbound::Batch(jobs) => {
                let idle = last_done.map(|t| t.elapsed());
                let res = crate::batch_job::run_batch(
                    &mut pipeline,
                    jobs,
                    idle,
                    config.enable_fault_injection,
                    &out,
                    &cancels,
                );
                last_done = Some(Instant::now());
                if let Err(e) = res {
                    log_error!("cannot write to the parent: {e}; exiting");
                    return EXIT_PROTOCOL;
                }
            }
            Inbound::Job(job) => {
                let id = job.id;
                let idle = last_done.map(|t| t.elapsed());
                let res = if cancels.start(id) {
                    log_info!("job {id} cancelled before it started");
                    write_to_parent(
                        &out,
                        &FromWorker::Failed {
                            job_id: id,
                            error: WorkerError::Cancelled,
                        },
                    )
                } else {
                    run_job(
                        &mut pipeline,
                        job,
                        idle,
                        config.enable_fault_injection,
                        &out,
                    )
                };
                cancels.finish(id);
                last_done = Some(Instant::now());
                if let Err(e) = res {
                    log_error!("cannot write to the parent: {e}; exiting");
                    return EXIT_PROTOCOL;
                }
            }
        }
    }
}

/// What the stdin reader hands the main thread, in arrival order.
// A job is much larger than the other variants; each is moved once.
#[allow(clippy::large_enum_variant)]
enum Inbound {
    Job(Job),
    /// The jobs of one `ToWorker::Batch`, in its order (at least two).
    Batch(Vec<Job>),
    Shutdown,
    /// stdin reached EOF between frames.
    Eof,
    /// An unreadable or malformed frame; nothing after it can be trusted.
    Broken(String),
}

impl From<Assembled> for Inbound {
    fn from(a: Assembled) -> Self {
        match a {
            Assembled::Job(job) => Inbound::Job(job),
            Assembled::Batch(jobs) => Inbound::Batch(jobs),
        }
    }
}

/// Sends `Heartbeat` every `interval` on a thread of its own, until the
/// parent cannot be written to.
fn spawn_heartbeat(
    out: Arc<SharedOut>,
    cancels: Arc<Cancels>,
    interval: Duration,
) -> io::Result<()> {
    let interval = interval.max(Duration::from_millis(1));
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            let running = cancels.running();
            if let Err(e) = write_to_parent(&out, &FromWorker::Heartbeat { running }) {
                // The main thread finds out too, at its next frame.
                log_error!("cannot send a heartbeat: {e}; heartbeats stop");
                return;
            }
        })
        .map(|_| ())
}

/// Reads and deserialises frames on a thread of its own, so a job the
/// parent staged is in memory before the engine needs it, and a
/// [`ToWorker::Cancel`] takes effect while the main thread decodes.
fn spawn_reader(cancels: Arc<Cancels>) -> mpsc::Receiver<Inbound> {
    // Unbounded: the parent stages at most one job (or batch) ahead.
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            let mut jobs = BatchAssembler::default();
            loop {
                let msg = match read_frame(&mut input) {
                    Ok(None) => match jobs.expect_idle() {
                        Ok(()) => Inbound::Eof,
                        Err(e) => Inbound::Broken(format!("stdin closed inside a job: {e}")),
                    },
                    Err(e) => Inbound::Broken(format!("unreadable frame from the parent: {e}")),
                    Ok(Some(payload)) => match decode::<ToWorker>(&payload) {
                        Ok(ToWorker::Job(header)) => {
                            let id = header.id;
                            match jobs.header(header) {
                                Ok(job) => {
                                    // Cancellable from its header on.
                                    cancels.received(id);
                                    match job {
                                        Some(done) => done.into(),
                                        None => continue,
                                    }
                                }
                                Err(e) => Inbound::Broken(format!("bad job from the parent: {e}")),
                            }
                        }
                        Ok(ToWorker::AudioChunk(chunk)) => match jobs.chunk(chunk) {
                            Ok(Some(done)) => done.into(),
                            Ok(None) => continue,
                            Err(e) => Inbound::Broken(format!("bad audio from the parent: {e}")),
                        },
                        // Nothing may come between a job's header and the
                        // end of its audio.
                        Ok(ToWorker::Cancel { job_id }) => match jobs.expect_idle() {
                            Ok(()) => {
                                cancels.cancel(job_id);
                                continue;
                            }
                            Err(e) => Inbound::Broken(format!("bad audio from the parent: {e}")),
                        },
                        Ok(ToWorker::Batch { job_ids }) => match jobs.batch(job_ids) {
                            Ok(()) => continue,
                            Err(e) => Inbound::Broken(format!("bad batch from the parent: {e}")),
                        },
                        Ok(ToWorker::Shutdown) => match jobs.expect_idle() {
                            Ok(()) => Inbound::Shutdown,
                            Err(e) => Inbound::Broken(format!("bad audio from the parent: {e}")),
                        },
                        Err(e) => Inbound::Broken(format!(
                            "malformed frame of {} bytes from the parent: {e}",
                            payload.len()
                        )),
                    },
                };
                let last = !matches!(msg, Inbound::Job(_) | Inbound::Batch(_));
                if tx.send(msg).is_err() || last {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        // Without a reader nothing can be served: report it as broken input.
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(Inbound::Broken(format!(
            "cannot start the stdin reader: {e}"
        )));
        return rx;
    }
    rx
}

/// The message of a panic caught with `catch_unwind`.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The `Done` frame of a finished job; `idle_before`: the engine's idle
/// time before it (for `Timings::idle_before_us`).
pub(crate) fn done_frame(
    job_id: u64,
    t: crate::transcribe::Transcript,
    idle_before: Option<Duration>,
) -> FromWorker {
    let text = t.text();
    let mut timings = t.timings;
    timings.idle_before_us = idle_before.map(|d| d.as_micros() as u64);
    FromWorker::Done(JobResult {
        job_id,
        text,
        segments: t.segments,
        language: t.language,
        language_probability: t.language_probability,
        duration_secs: t.duration_secs,
        timings,
    })
}

/// Decodes one job and writes its answer. Errors are write errors only.
fn run_job(
    pipeline: &mut Pipeline<Engine>,
    job: Job,
    idle_before: Option<Duration>,
    faults: bool,
    out: &SharedOut,
) -> Result<(), FrameError> {
    let Job {
        id,
        traceparent,
        samples,
        options,
        fault,
        stream_segments,
    } = job;
    fault::before_job(fault, faults, id);
    // The id the answers carry: the job's own, unless a broken worker is
    // being simulated (fault injection only).
    let job_id = if faults && fault == Some(Fault::AnswerWrongId) {
        log_warn!(
            "job {id}: injected wrong id, answering as job {}",
            id + 1000
        );
        id + 1000
    } else {
        id
    };
    // faster-whisper's decode_audio: s16 PCM / 32768 (the 16-bit copy is
    // freed at once).
    let samples: Vec<f32> = {
        let pcm = samples;
        pcm.iter().map(|&s| f32::from(s) / 32768.0).collect()
    };
    let audio_secs = samples.len() as f64 / asr_ipc::SAMPLE_RATE as f64;
    log_info!(
        "job {id} started: {audio_secs:.2} s of audio, beam {}{}",
        options.beam_size,
        traceparent
            .as_deref()
            .map(|t| format!(", traceparent {t}"))
            .unwrap_or_default()
    );
    let mut write_error: Option<FrameError> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut progress = |decoded_secs: f32, total_secs: f32, segments: &[Segment]| {
            if write_error.is_none() {
                let msg = FromWorker::Progress {
                    job_id,
                    decoded_secs,
                    total_secs,
                    segments: if stream_segments {
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
        pipeline.transcribe(&samples, &options, &mut progress)
    }));
    if let Some(e) = write_error {
        return Err(e);
    }
    let answer = match outcome {
        Ok(Ok(t)) => {
            let total_ms = t.timings.total_us as f64 / 1e3;
            log_info!(
                "job {id} done: {} segments, {audio_secs:.2} s of audio in {total_ms:.0} ms (rtf {:.3})",
                t.segments.len(),
                total_ms / 1e3 / audio_secs.max(1e-9)
            );
            done_frame(job_id, t, idle_before)
        }
        Ok(Err(WorkerError::Cancelled)) => {
            log_info!("job {id} cancelled while decoding");
            FromWorker::Failed {
                job_id,
                error: WorkerError::Cancelled,
            }
        }
        Ok(Err(error)) => {
            log_warn!("job {id} failed: {error}");
            FromWorker::Failed { job_id, error }
        }
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            log_error!("job {id}: internal error: {what}");
            FromWorker::Failed {
                job_id,
                error: WorkerError::Engine(format!("internal error: {what}")),
            }
        }
    };
    write_to_parent(out, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_check_passes_for_the_real_parent() {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() } as u32;
        assert!(tie_to_parent(Some(ppid)).is_ok());
        assert!(tie_to_parent(Some(ppid.wrapping_add(1_000_000))).is_err());
    }
}
