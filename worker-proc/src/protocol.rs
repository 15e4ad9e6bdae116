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
//! Then, on the main thread, strictly one job at a time: read a frame,
//! decode it, answer `Progress` after each 30 s window and exactly one
//! `Done` or `Failed`. There is no thread pool and no timeout around the
//! engine: a job that hangs is the parent's to kill.
//!
//! | event | effect |
//! | --- | --- |
//! | stdin EOF, `Shutdown` | exit [`EXIT_OK`] |
//! | malformed, truncated or oversized frame | log, exit [`EXIT_PROTOCOL`] (no resync) |
//! | a frame cannot be written (parent gone) | exit [`EXIT_PROTOCOL`] |
//! | invalid audio or options | `Failed` (`InvalidAudio` / `InvalidOptions`), keep serving |
//! | engine error, or a bug (panic) in a job | `Failed` (`Engine`), keep serving |

use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use asr_ipc::{
    decode, read_frame, write_frame, FrameError, FromWorker, Hello, Job, JobResult, LoadFailure,
    ToWorker, WorkerError,
};

use crate::engine::{Engine, EngineSettings};
use crate::transcribe::Pipeline;
use crate::{fault, log_error, log_info, log_warn, model};

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

/// Runs server mode and returns the process exit code.
pub fn serve(config: &ServerConfig) -> i32 {
    if let Err(e) = tie_to_parent(config.parent_pid) {
        log_error!("{e}; exiting");
        return EXIT_SETUP;
    }
    let mut out: Out = match take_stdout() {
        Ok(f) => BufWriter::with_capacity(1 << 16, f),
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
            if let Err(e) = write_frame(&mut out, &msg) {
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
    });
    if let Err(e) = write_frame(&mut out, &hello) {
        log_error!("cannot send Hello: {e}");
        return EXIT_PROTOCOL;
    }

    let stdin = io::stdin();
    let mut input = stdin.lock();
    loop {
        let payload = match read_frame(&mut input) {
            Ok(Some(p)) => p,
            Ok(None) => {
                log_info!("stdin closed, exiting");
                return EXIT_OK;
            }
            Err(e) => {
                log_error!("unreadable frame from the parent: {e}; exiting");
                return EXIT_PROTOCOL;
            }
        };
        let msg: ToWorker = match decode(&payload) {
            Ok(m) => m,
            Err(e) => {
                log_error!(
                    "malformed frame of {} bytes from the parent: {e}; exiting",
                    payload.len()
                );
                return EXIT_PROTOCOL;
            }
        };
        match msg {
            ToWorker::Shutdown => {
                log_info!("shutdown requested, exiting");
                return EXIT_OK;
            }
            ToWorker::Job(job) => {
                if let Err(e) = run_job(&mut pipeline, job, config.enable_fault_injection, &mut out)
                {
                    log_error!("cannot write to the parent: {e}; exiting");
                    return EXIT_PROTOCOL;
                }
            }
        }
    }
}

/// Decodes one job and writes its answer. Errors are write errors only.
fn run_job(
    pipeline: &mut Pipeline<Engine>,
    job: Job,
    faults: bool,
    out: &mut Out,
) -> Result<(), FrameError> {
    let job_id = job.id;
    fault::before_job(job.fault, faults, job_id);
    let audio_secs = job.samples.len() as f64 / asr_ipc::SAMPLE_RATE as f64;
    log_info!(
        "job {job_id} started: {audio_secs:.2} s of audio, beam {}{}",
        job.options.beam_size,
        job.traceparent
            .as_deref()
            .map(|t| format!(", traceparent {t}"))
            .unwrap_or_default()
    );
    let mut write_error: Option<FrameError> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut progress = |decoded_secs: f32, total_secs: f32| {
            if write_error.is_none() {
                let msg = FromWorker::Progress {
                    job_id,
                    decoded_secs,
                    total_secs,
                };
                if let Err(e) = write_frame(out, &msg) {
                    write_error = Some(e);
                }
            }
        };
        pipeline.transcribe(&job.samples, &job.options, &mut progress)
    }));
    if let Some(e) = write_error {
        return Err(e);
    }
    let answer = match outcome {
        Ok(Ok(t)) => {
            let total_ms = t.timings.total_us as f64 / 1e3;
            log_info!(
                "job {job_id} done: {} segments, {audio_secs:.2} s of audio in {total_ms:.0} ms (rtf {:.3})",
                t.segments.len(),
                total_ms / 1e3 / audio_secs.max(1e-9)
            );
            FromWorker::Done(JobResult {
                job_id,
                text: t.text(),
                segments: t.segments,
                language: t.language,
                language_probability: t.language_probability,
                duration_secs: t.duration_secs,
                timings: t.timings,
            })
        }
        Ok(Err(error)) => {
            log_warn!("job {job_id} failed: {error}");
            FromWorker::Failed { job_id, error }
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log_error!("job {job_id}: internal error: {what}");
            FromWorker::Failed {
                job_id,
                error: WorkerError::Engine(format!("internal error: {what}")),
            }
        }
    };
    write_frame(out, &answer)
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
