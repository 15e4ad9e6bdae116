//! Configuration: one documented struct, read from CLI flags with
//! environment-variable equivalents (`WHISPER_NODE_*`), validated once at
//! start-up.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `--batch-size` when not given: windows of long audio decoded per engine
/// call (1 = sequential). See [`NodeConfig::batch_size`].
pub const DEFAULT_BATCH_SIZE: u32 = 16;

/// Everything the actor tree needs. Embedding hosts build this directly
/// (it implements `Default`) or parse it with clap as part of their own CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeConfig {
    /// CTranslate2 Whisper model directory (config.json, model.bin,
    /// tokenizer.json, vocabulary.txt, preprocessor_config.json).
    #[arg(long, env = "WHISPER_NODE_MODEL_DIR", default_value = "models/tiny.en")]
    pub model_dir: PathBuf,

    /// Path of the `worker-proc` binary; default: next to the running
    /// executable (or its parent directory, for test binaries).
    #[arg(long, env = "WHISPER_NODE_WORKER_PATH")]
    pub worker_path: Option<PathBuf>,

    /// Device: `cpu` or `cuda` (the worker must be built with `--features cuda`).
    #[arg(long, env = "WHISPER_NODE_DEVICE", default_value = "cpu")]
    pub device: String,

    /// CTranslate2 compute type: `default`, `auto`, `int8`, `int8_float32`,
    /// `int8_float16`, `float16`, `float32`, …
    #[arg(long, env = "WHISPER_NODE_COMPUTE_TYPE", default_value = "int8")]
    pub compute_type: String,

    /// Engine threads (0 = CTranslate2's default), all workers together:
    /// N CPU workers split them (see `--workers`).
    #[arg(long, env = "WHISPER_NODE_THREADS", default_value_t = 0)]
    pub threads: u32,

    /// Worker processes, each with the model loaded, decoding side by
    /// side; the queue hands a job to any idle one. On the CPU they split
    /// `--threads` (T total: T/N each, at least 1; with 0, the cores split).
    /// Default: 2 on the CPU when there are at least 2 threads to split,
    /// else 1 (measured: BENCHMARKS.md). See [`crate::workers`].
    #[arg(long, env = "WHISPER_NODE_WORKERS")]
    pub workers: Option<usize>,

    /// One worker per listed device, comma-separated: `cpu`, `cuda` or
    /// `cuda:N` (e.g. `cuda:0,cuda:1`); overrides `--device`. With
    /// `--workers` beside it, the two must agree.
    #[arg(long, env = "WHISPER_NODE_DEVICES")]
    pub devices: Option<String>,

    /// Jobs allowed to wait for the worker; more are answered 429 at once.
    #[arg(long, env = "WHISPER_NODE_QUEUE_CAPACITY", default_value_t = 3)]
    pub queue_capacity: usize,

    /// Seconds of audio allowed to wait in the queue (0 = no limit).
    #[arg(long, env = "WHISPER_NODE_QUEUE_MAX_AUDIO_SECS", default_value_t = 0.0)]
    pub queue_max_audio_secs: f64,

    /// Longest a job may wait in the queue before it is answered 504, seconds.
    #[arg(long, env = "WHISPER_NODE_MAX_QUEUE_WAIT_SECS", default_value_t = 8.0)]
    pub max_queue_wait_secs: f64,

    /// Largest accepted upload, bytes.
    #[arg(long, env = "WHISPER_NODE_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_upload_bytes: usize,

    /// Longest accepted audio, seconds (at most 86400: the most one job can
    /// carry to the worker, `asr_ipc::MAX_JOB_SECS`).
    #[arg(long, env = "WHISPER_NODE_MAX_AUDIO_SECS", default_value_t = 3.0 * 3600.0)]
    pub max_audio_secs: f64,

    /// Memory for decoded audio (16 kHz 16-bit PCM, 32,000 bytes per
    /// second), shared by every decode and request of the process, MiB;
    /// when full, a decode is refused with 503 `decode_busy` + Retry-After.
    /// Must hold the longest allowed audio (--max-audio-secs).
    #[arg(
        long,
        env = "WHISPER_NODE_DECODE_MEMORY_BUDGET_MIB",
        default_value_t = 384
    )]
    pub decode_memory_budget_mib: usize,

    /// Uploads read (and decoded) at once, both endpoints together; more
    /// are refused at once with 429 `too_many_uploads` + Retry-After.
    #[arg(
        long,
        env = "WHISPER_NODE_MAX_CONCURRENT_UPLOADS",
        default_value_t = 32
    )]
    pub max_concurrent_uploads: usize,

    /// Longest time to receive a whole upload body, seconds (408 beyond).
    #[arg(
        long,
        env = "WHISPER_NODE_UPLOAD_TIMEOUT_SECS",
        default_value_t = 600.0
    )]
    pub upload_timeout_secs: f64,

    /// Least upload rate, bytes per second, over every 10 s window of the
    /// body (408 below it; 0 = no minimum).
    #[arg(
        long,
        env = "WHISPER_NODE_UPLOAD_MIN_BYTES_PER_SEC",
        default_value_t = 1024
    )]
    pub upload_min_bytes_per_sec: u64,

    /// Folder for upload bodies larger than 1 MiB, kept in unnamed
    /// temporary files while they are read and decoded (default: the
    /// system's temporary folder, TMPDIR).
    #[arg(long, env = "WHISPER_NODE_UPLOAD_SPOOL_DIR")]
    pub upload_spool_dir: Option<PathBuf>,

    /// Decode deadline = floor + factor × audio seconds; past it the worker is
    /// killed and restarted and the job answered 504.
    #[arg(
        long,
        env = "WHISPER_NODE_DECODE_TIMEOUT_FACTOR",
        default_value_t = 2.0
    )]
    pub decode_timeout_factor: f64,

    /// Floor of the decode deadline, seconds.
    #[arg(
        long,
        env = "WHISPER_NODE_DECODE_TIMEOUT_FLOOR_SECS",
        default_value_t = 30.0
    )]
    pub decode_timeout_floor_secs: f64,

    /// How often the worker sends a heartbeat (from a thread of its own,
    /// busy or idle), seconds.
    #[arg(
        long,
        env = "WHISPER_NODE_WORKER_HEARTBEAT_INTERVAL_SECS",
        default_value_t = 1.0
    )]
    pub worker_heartbeat_interval_secs: f64,

    /// A loaded worker silent (no heartbeat, no frame) this long is taken
    /// for hung: it is killed and restarted, and the job it held answered
    /// 504 `worker_unresponsive`. It stops being ready as soon as its
    /// heartbeat is late (three intervals). At least twice the interval.
    #[arg(
        long,
        env = "WHISPER_NODE_WORKER_HEARTBEAT_TIMEOUT_SECS",
        default_value_t = 10.0
    )]
    pub worker_heartbeat_timeout_secs: f64,

    /// Longest the worker may take to load the model, seconds.
    #[arg(long, env = "WHISPER_NODE_LOAD_TIMEOUT_SECS", default_value_t = 120.0)]
    pub load_timeout_secs: f64,

    /// Restart intensity: at most this many restarts …
    #[arg(long, env = "WHISPER_NODE_MAX_RESTARTS", default_value_t = 5)]
    pub max_restarts: u32,

    /// … within this many seconds; beyond it restarts back off exponentially.
    #[arg(long, env = "WHISPER_NODE_RESTART_WINDOW_SECS", default_value_t = 60.0)]
    pub restart_window_secs: f64,

    /// Cap of the exponential restart backoff, seconds.
    #[arg(long, env = "WHISPER_NODE_MAX_BACKOFF_SECS", default_value_t = 30.0)]
    pub max_backoff_secs: f64,

    /// How often a job whose decode crashed the worker is retried on a fresh
    /// worker; an input that crashes it more often is quarantined (422).
    #[arg(long, env = "WHISPER_NODE_MAX_CRASH_RETRIES", default_value_t = 1)]
    pub max_crash_retries: u32,

    /// Grace period for the in-flight job at shutdown, seconds.
    #[arg(long, env = "WHISPER_NODE_SHUTDOWN_GRACE_SECS", default_value_t = 30.0)]
    pub shutdown_grace_secs: f64,

    /// Stage the next job in the worker while one decodes: its audio is
    /// sent ahead, so back-to-back jobs leave the engine no idle gap. The
    /// staged job still counts as waiting (capacity, deadline, client gone).
    #[arg(
        long,
        env = "WHISPER_NODE_STAGE_NEXT_JOB",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub stage_next_job: bool,

    /// Dynamic batching: most jobs the worker decodes together as one batch
    /// (the head of the queue and the next waiting jobs of its class with
    /// compatible options, each at most 30 s of audio); 1 = off. The queue
    /// lets at least this many jobs wait (see `effective_queue_capacity`).
    /// Default [`DEFAULT_MAX_BATCH`], chosen by measurement (BENCHMARKS.md,
    /// *Dynamic batching and the worker pool*).
    #[arg(long, env = "WHISPER_NODE_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,

    /// With batching on: when fewer than --max-batch compatible jobs wait
    /// and the worker is idle, how long the queue may wait for more before
    /// it sends a smaller batch, milliseconds. 0 = never: a lone request is
    /// never delayed.
    #[arg(long, env = "WHISPER_NODE_BATCH_WAIT_MS", default_value_t = 0)]
    pub batch_wait_ms: u64,

    /// Default beam size.
    #[arg(long, env = "WHISPER_NODE_BEAM_SIZE", default_value_t = 5)]
    pub beam_size: u32,

    /// Default windows per engine call for audio longer than 30 s (a
    /// request's `batch_size` overrides it): 1 = the sequential seek loop
    /// (each window conditioned on the previous text), 2..=64 = batched
    /// long-form decoding (windows cut at speech pauses, decoded this many
    /// at a time, without conditioning on previous text). It applies to
    /// requests with voice-activity detection and no segment stream; the
    /// others default to 1. Chosen by measurement (BENCHMARKS.md, "Batched
    /// long-form").
    #[arg(long, env = "WHISPER_NODE_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: u32,

    /// Let requests inject worker faults (crash, hang, slow). Tests only.
    #[arg(
        long,
        env = "WHISPER_NODE_ENABLE_FAULT_INJECTION",
        default_value_t = false,
        hide = true
    )]
    pub enable_fault_injection: bool,

    /// Realtime (`/v1/realtime`) session limits.
    #[command(flatten)]
    pub realtime: crate::realtime::RealtimeConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            node: NodeConfig,
        }
        // The clap defaults are the single source of truth for the defaults;
        // parse an empty command line without reading the environment.
        Wrapper::parse_from(["whisper-node"]).node
    }
}

/// `--max-batch` when not given: with 8 clients posting an 11 s clip, two
/// workers batching up to 4 jobs answer 1.1× more than without batching
/// and 2.3× more than one serial worker, at a lower p50; a lone request is
/// not delayed (`--batch-wait-ms` 0).
pub const DEFAULT_MAX_BATCH: usize = 4;

/// Largest `--max-batch` accepted.
pub const MAX_BATCH: usize = 64;

/// A finite number above zero (NaN is not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl NodeConfig {
    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        self.realtime.validate()?;
        if self.queue_capacity == 0 {
            return err("queue capacity must be at least 1");
        }
        if !positive(self.max_queue_wait_secs) {
            return err("max queue wait must be positive");
        }
        if !matches!(self.device.as_str(), "cpu" | "cuda" | "auto") {
            return err("device must be cpu, cuda or auto");
        }
        crate::workers::plan(self)?;
        if self.max_upload_bytes == 0 {
            return err("max upload bytes must be positive");
        }
        if !positive(self.decode_timeout_factor) || !positive(self.decode_timeout_floor_secs) {
            return err("decode timeout factor and floor must be positive");
        }
        if self.max_batch == 0 {
            return err("max batch must be at least 1 (1 = batching off)");
        }
        if self.max_batch > MAX_BATCH {
            return Err(ConfigError(format!(
                "max batch must be at most {MAX_BATCH}"
            )));
        }
        if self.batch_wait_ms > 10_000 {
            return err("batch wait must be at most 10000 ms");
        }
        if self.beam_size == 0 {
            return err("beam size must be at least 1");
        }
        if self.batch_size == 0 || self.batch_size > asr_ipc::MAX_BATCH_SIZE {
            return Err(ConfigError(format!(
                "batch size must be between 1 and {}",
                asr_ipc::MAX_BATCH_SIZE
            )));
        }
        if !positive(self.max_audio_secs) {
            return err("max audio seconds must be positive");
        }
        if self.max_audio_secs > asr_ipc::MAX_JOB_SECS {
            return Err(ConfigError(format!(
                "max audio seconds ({}) is more than one job can carry to the worker ({} s)",
                self.max_audio_secs,
                asr_ipc::MAX_JOB_SECS
            )));
        }
        if !positive(self.worker_heartbeat_interval_secs)
            || self.worker_heartbeat_interval_secs < 0.01
        {
            return err("worker heartbeat interval must be at least 0.01 s");
        }
        if !positive(self.worker_heartbeat_timeout_secs)
            || self.worker_heartbeat_timeout_secs < 2.0 * self.worker_heartbeat_interval_secs
        {
            return err("worker heartbeat timeout must be at least twice the heartbeat interval");
        }
        let longest = crate::audio::pcm_bytes_for(self.max_audio_secs);
        if self.decode_memory_budget_bytes() < longest {
            return Err(ConfigError(format!(
                "the decode memory budget ({} MiB) cannot hold the longest allowed audio \
                 ({} s needs {} MiB of 16 kHz PCM): raise --decode-memory-budget-mib \
                 or lower --max-audio-secs",
                self.decode_memory_budget_mib,
                self.max_audio_secs,
                longest.div_ceil(1024 * 1024)
            )));
        }
        if self.max_concurrent_uploads == 0 {
            return err("max concurrent uploads must be at least 1");
        }
        if !positive(self.upload_timeout_secs) {
            return err("upload timeout must be positive");
        }
        Ok(())
    }

    /// The decode memory budget in bytes.
    pub fn decode_memory_budget_bytes(&self) -> usize {
        self.decode_memory_budget_mib.saturating_mul(1024 * 1024)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs)
    }

    /// Jobs allowed to wait: `--queue-capacity`, but at least `--max-batch`,
    /// so that a full batch can form.
    pub fn effective_queue_capacity(&self) -> usize {
        self.queue_capacity.max(self.max_batch)
    }

    /// How long a forming batch may wait for more jobs.
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }

    /// The longest queue wait.
    pub fn max_queue_wait(&self) -> Duration {
        Duration::from_secs_f64(self.max_queue_wait_secs)
    }

    /// Decode deadline for a job of `audio_secs`.
    pub fn decode_deadline(&self, audio_secs: f64) -> Duration {
        Duration::from_secs_f64(
            self.decode_timeout_floor_secs + self.decode_timeout_factor * audio_secs,
        )
    }

    /// The worker's heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.worker_heartbeat_interval_secs)
    }

    /// Silence after which the worker is killed as hung.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.worker_heartbeat_timeout_secs)
    }

    /// Silence after which the worker's heartbeat is late and the node
    /// stops being ready: three intervals (two beats missed, and slack for
    /// scheduling), at most the timeout.
    pub fn heartbeat_late(&self) -> Duration {
        (3 * self.heartbeat_interval()).min(self.heartbeat_timeout())
    }

    /// Where to find `worker-proc`.
    pub fn resolve_worker_path(&self) -> PathBuf {
        if let Some(p) = &self.worker_path {
            return p.clone();
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
        let beside = dir.join("worker-proc");
        if beside.exists() {
            return beside;
        }
        // test binaries live in target/<profile>/deps
        dir.parent()
            .map(|p| p.join("worker-proc"))
            .unwrap_or(beside)
    }
}

/// Settings of the async job service ([`crate::jobs`]): `POST /v1/jobs`
/// and friends. Embedding hosts build this directly (it implements
/// `Default`) and pass it to [`crate::jobs::JobService::start`].
#[derive(Debug, Clone, clap::Args)]
pub struct JobsConfig {
    /// Turn the async job endpoints (`/v1/jobs`) off; nothing is stored.
    #[arg(
        id = "jobs_disabled",
        long = "disable-jobs",
        env = "WHISPER_NODE_DISABLE_JOBS",
        default_value_t = false
    )]
    pub disabled: bool,

    /// Folder of the job store (SQLite database `jobs.sqlite3` and the
    /// uploads in `audio/`); created if missing. One node per folder.
    #[arg(
        id = "jobs_data_dir",
        long = "jobs-data-dir",
        env = "WHISPER_NODE_JOBS_DATA_DIR",
        default_value = "data"
    )]
    pub data_dir: PathBuf,

    /// Async jobs allowed to be queued or running at once; more are
    /// answered 429 with `Retry-After`.
    #[arg(
        id = "jobs_max_pending",
        long = "jobs-max-pending",
        env = "WHISPER_NODE_JOBS_MAX_PENDING",
        default_value_t = 100
    )]
    pub max_pending: usize,

    /// How long a finished job (result or error) stays retrievable, seconds;
    /// then its record is purged.
    #[arg(
        id = "jobs_retention_secs",
        long = "jobs-retention-secs",
        env = "WHISPER_NODE_JOBS_RETENTION_SECS",
        default_value_t = 86_400.0
    )]
    pub retention_secs: f64,

    /// Longest an async job waits for an idle worker before it is queued
    /// behind interactive requests anyway, seconds.
    #[arg(
        id = "jobs_max_defer_secs",
        long = "jobs-max-defer-secs",
        env = "WHISPER_NODE_JOBS_MAX_DEFER_SECS",
        default_value_t = 30.0
    )]
    pub max_defer_secs: f64,

    /// Where jobs live: `sqlite` (the default: the embedded store under
    /// `--jobs-data-dir`, this node's jobs only) or a `postgres://…` URL
    /// (a store shared by a fleet: any node runs and answers any job).
    #[arg(
        id = "jobs_store",
        long = "jobs-store",
        env = "WHISPER_NODE_JOBS_STORE",
        default_value = "sqlite"
    )]
    pub store: String,

    /// With a shared store: how long a node's claim on a running job lasts
    /// without renewal, seconds (renewed every third of it). A node that
    /// dies loses its jobs to another node this long after its last renewal.
    #[arg(
        id = "jobs_lease_secs",
        long = "jobs-lease-secs",
        env = "WHISPER_NODE_JOBS_LEASE_SECS",
        default_value_t = 30.0
    )]
    pub lease_secs: f64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            jobs: JobsConfig,
        }
        // As for NodeConfig: the clap defaults are the only defaults.
        Wrapper::parse_from(["whisper-node"]).jobs
    }
}

impl JobsConfig {
    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        if self.max_pending == 0 {
            return err("jobs max pending must be at least 1");
        }
        if !self.retention_secs.is_finite() || self.retention_secs <= 0.0 {
            return err("jobs retention must be a positive number of seconds");
        }
        if !self.max_defer_secs.is_finite() || self.max_defer_secs < 0.0 {
            return err("jobs max defer must be zero or more seconds");
        }
        if !self.lease_secs.is_finite() || self.lease_secs < 1.0 {
            return err("jobs lease must be at least 1 second");
        }
        if self.store != "sqlite"
            && !self.store.starts_with("postgres://")
            && !self.store.starts_with("postgresql://")
        {
            return err("jobs store must be `sqlite` or a postgres:// URL");
        }
        if self.data_dir.as_os_str().is_empty() {
            return err("jobs data directory must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node's flags as a host's CLI flattens them.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeConfig,
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = NodeConfig::default();
        assert_eq!(c.queue_capacity, 3);
        assert_eq!(c.max_queue_wait(), Duration::from_secs(8));
        assert_eq!(c.device, "cpu");
        c.validate().unwrap();
    }

    #[test]
    fn flags_override_defaults_and_bad_values_are_refused() {
        let cli = Cli::parse_from(["x", "--queue-capacity", "0"]);
        assert!(cli.node.validate().is_err());
    }

    #[test]
    fn audio_limits_the_ipc_cannot_carry_are_refused() {
        // The default (3 h) is far within what the protocol carries.
        let mut c = NodeConfig::default();
        assert_eq!(c.max_audio_secs, 10_800.0);
        c.validate().unwrap();
        // 24 h of 16 kHz 16-bit PCM is 2.6 GiB: the decode budget must hold it.
        c.decode_memory_budget_mib = 3 * 1024;
        c.max_audio_secs = asr_ipc::MAX_JOB_SECS;
        c.validate().unwrap();
        c.max_audio_secs = asr_ipc::MAX_JOB_SECS + 1.0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("more than one job can carry"), "{e}");
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            c.max_audio_secs = bad;
            assert!(c.validate().is_err(), "{bad}");
        }
        let cli = Cli::parse_from(["x", "--max-audio-secs", "90000"]);
        assert!(cli.node.validate().is_err());
    }

    #[test]
    fn heartbeat_settings_are_checked_and_derived() {
        let c = NodeConfig::default();
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(1));
        assert_eq!(c.heartbeat_timeout(), Duration::from_secs(10));
        assert_eq!(c.heartbeat_late(), Duration::from_secs(3));
        let cli = Cli::parse_from([
            "x",
            "--worker-heartbeat-interval-secs",
            "2",
            "--worker-heartbeat-timeout-secs",
            "5",
        ]);
        cli.node.validate().unwrap();
        assert_eq!(cli.node.heartbeat_late(), Duration::from_secs(5), "capped");
        for (interval, timeout) in [(1.0, 1.5), (0.0, 10.0), (1.0, f64::NAN), (0.001, 1.0)] {
            let c = NodeConfig {
                worker_heartbeat_interval_secs: interval,
                worker_heartbeat_timeout_secs: timeout,
                ..NodeConfig::default()
            };
            assert!(c.validate().is_err(), "{interval} / {timeout}");
        }
    }

    #[test]
    fn a_decode_budget_smaller_than_the_longest_audio_is_refused() {
        let mut c = NodeConfig::default();
        assert_eq!(c.decode_memory_budget_mib, 384);
        c.decode_memory_budget_mib = 300; // 3 h needs 330 MiB
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--decode-memory-budget-mib"), "{e}");
        c.max_audio_secs = 3600.0;
        c.validate().unwrap();
    }

    #[test]
    fn decode_deadline_grows_with_audio_length() {
        let c = NodeConfig::default();
        assert!(c.decode_deadline(600.0) > c.decode_deadline(10.0));
        assert!(c.decode_deadline(0.0) >= Duration::from_secs(30));
    }

    #[test]
    fn batching_flags_are_checked_and_the_queue_holds_a_full_batch() {
        let c = NodeConfig::default();
        assert_eq!(
            (c.max_batch, c.batch_wait()),
            (DEFAULT_MAX_BATCH, Duration::ZERO),
            "on, never waits"
        );
        assert_eq!(c.effective_queue_capacity(), 4, "a full batch can wait");
        let cli = Cli::parse_from(["x", "--max-batch", "8", "--batch-wait-ms", "20"]);
        cli.node.validate().unwrap();
        assert_eq!(cli.node.effective_queue_capacity(), 8);
        assert_eq!(cli.node.batch_wait(), Duration::from_millis(20));
        for (max_batch, wait_ms) in [(0, 0), (MAX_BATCH + 1, 0), (4, 10_001)] {
            let c = NodeConfig {
                max_batch,
                batch_wait_ms: wait_ms,
                ..NodeConfig::default()
            };
            assert!(c.validate().is_err(), "{max_batch} / {wait_ms}");
        }
    }
}
