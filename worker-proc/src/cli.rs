//! Command line: server mode (default) and the `transcribe` test/bench mode.
//!
//! ```text
//! worker-proc --model-dir DIR [--device cpu|cuda|auto] [--compute-type int8]
//!             [--threads N] [--enable-fault-injection] [--log-level warning]
//!             [--parent-pid PID] [--heartbeat-interval-ms 1000]
//! worker-proc --model-dir DIR transcribe FILE.wav [--beam-size N] [--runs N] [--json]
//!             [--vad [--vad-min-silence-ms MS] …]
//! ```
//!
//! Exit codes: 0 clean exit; 1 `transcribe` failed; 2 bad command line;
//! 3 model load failed (after `LoadFailed`); 4 protocol error (malformed
//! frame, or the parent stopped reading); 5 injected load failure;
//! 6 process set-up failed (parent already gone). An injected crash dies of
//! SIGABRT.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use ct2rs::sys::{ComputeType, Device, LogLevel};

use crate::engine::effective_threads;
use crate::engine::EngineSettings;
use crate::protocol::{self, ServerConfig};
use crate::transcribe_cmd::{self, TranscribeArgs};

/// The Whisper worker process: loads a CTranslate2 Whisper model once and
/// decodes jobs serially over framed stdin/stdout.
#[derive(Debug, Parser)]
#[command(name = "worker-proc", version, about)]
pub struct Cli {
    /// Directory of a CTranslate2 Whisper model (model.bin, config.json,
    /// vocabulary.txt, tokenizer.json, preprocessor_config.json).
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Device to run the model on.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// CTranslate2 compute type.
    #[arg(long, value_enum, default_value_t = ComputeTypeArg::Int8)]
    pub compute_type: ComputeTypeArg,
    /// Intra-op threads for the engine (0 = CTranslate2's default:
    /// OMP_NUM_THREADS, else min(4, cores)).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Honour `Job::fault` and WORKER_PROC_FAULT_ON_LOAD=exit (tests only).
    #[arg(long)]
    pub enable_fault_injection: bool,
    /// CTranslate2's log level (its logs go to stderr).
    #[arg(long, value_enum, default_value_t = LogLevelArg::Warning)]
    pub log_level: LogLevelArg,
    /// The parent's pid: the worker exits at start if its parent is not
    /// this process (closes the start-up race of PR_SET_PDEATHSIG).
    #[arg(long)]
    pub parent_pid: Option<u32>,
    /// Server mode: send a `Heartbeat` frame this often (ms) once the model
    /// is loaded, so the parent can tell a frozen worker from a busy one.
    #[arg(long, default_value_t = asr_ipc::DEFAULT_HEARTBEAT_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_interval_ms: u64,
    /// Run a subcommand instead of serving the protocol.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Transcribe a 16 kHz mono WAV file with the worker's exact pipeline and
    /// print text, segments and phase timings (median over runs).
    Transcribe(TranscribeArgs),
}

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// CPU.
    Cpu,
    /// NVIDIA GPU (needs the `cuda` feature).
    Cuda,
    /// CUDA if a GPU is visible, else CPU.
    Auto,
}

/// `--compute-type`, with CTranslate2's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ComputeTypeArg {
    /// The type the model was converted with.
    #[value(name = "default")]
    Default,
    /// The fastest type this device supports.
    #[value(name = "auto")]
    Auto,
    /// 8-bit integers.
    #[value(name = "int8")]
    Int8,
    /// 8-bit weights, float32 activations.
    #[value(name = "int8_float32")]
    Int8Float32,
    /// 8-bit weights, float16 activations.
    #[value(name = "int8_float16")]
    Int8Float16,
    /// 8-bit weights, bfloat16 activations.
    #[value(name = "int8_bfloat16")]
    Int8Bfloat16,
    /// 16-bit integers.
    #[value(name = "int16")]
    Int16,
    /// Half precision.
    #[value(name = "float16")]
    Float16,
    /// bfloat16.
    #[value(name = "bfloat16")]
    Bfloat16,
    /// Single precision.
    #[value(name = "float32")]
    Float32,
}

impl ComputeTypeArg {
    /// CTranslate2's enum.
    pub fn to_ct2(self) -> ComputeType {
        match self {
            Self::Default => ComputeType::DEFAULT,
            Self::Auto => ComputeType::AUTO,
            Self::Int8 => ComputeType::INT8,
            Self::Int8Float32 => ComputeType::INT8_FLOAT32,
            Self::Int8Float16 => ComputeType::INT8_FLOAT16,
            Self::Int8Bfloat16 => ComputeType::INT8_BFLOAT16,
            Self::Int16 => ComputeType::INT16,
            Self::Float16 => ComputeType::FLOAT16,
            Self::Bfloat16 => ComputeType::BFLOAT16,
            Self::Float32 => ComputeType::FLOAT32,
        }
    }

    /// CTranslate2's name.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// `--log-level` for CTranslate2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevelArg {
    /// Nothing.
    Off,
    /// Critical only.
    Critical,
    /// Errors.
    Error,
    /// Warnings (CTranslate2's default).
    Warning,
    /// Info.
    Info,
    /// Debug.
    Debug,
    /// Trace.
    Trace,
}

impl LogLevelArg {
    fn to_ct2(self) -> LogLevel {
        match self {
            Self::Off => LogLevel::Off,
            Self::Critical => LogLevel::Critical,
            Self::Error => LogLevel::Error,
            Self::Warning => LogLevel::Warning,
            Self::Info => LogLevel::Info,
            Self::Debug => LogLevel::Debug,
            Self::Trace => LogLevel::Trace,
        }
    }
}

/// Resolves `--device` to a CTranslate2 device and its name.
pub fn resolve_device(arg: DeviceArg) -> (Device, &'static str) {
    match arg {
        DeviceArg::Cpu => (Device::CPU, "cpu"),
        DeviceArg::Cuda => (Device::CUDA, "cuda"),
        DeviceArg::Auto => match crate::engine_info::cuda_unavailable() {
            None => (Device::CUDA, "cuda"),
            Some(why) => {
                crate::log_info!("--device auto: using the CPU ({why})");
                (Device::CPU, "cpu")
            }
        },
    }
}

/// Runs the command line and returns the exit code.
pub fn run(cli: Cli) -> i32 {
    ct2rs::sys::set_log_level(cli.log_level.to_ct2());
    let model_dir = cli.model_dir.clone();
    let (device, device_name) = resolve_device(cli.device);
    let settings = EngineSettings {
        device,
        compute_type: cli.compute_type.to_ct2(),
        threads: cli.threads,
    };
    match &cli.command {
        None => protocol::serve(&ServerConfig {
            model_dir,
            settings,
            device_name: device_name.to_string(),
            compute_type_name: cli.compute_type.name(),
            threads_effective: effective_threads(cli.threads),
            enable_fault_injection: cli.enable_fault_injection,
            parent_pid: cli.parent_pid,
            heartbeat_interval: std::time::Duration::from_millis(cli.heartbeat_interval_ms),
        }),
        Some(Command::Transcribe(args)) => transcribe_cmd::run(
            &model_dir,
            settings,
            device_name,
            &cli.compute_type.name(),
            effective_threads(cli.threads),
            args,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_server_and_transcribe_modes() {
        let cli = Cli::try_parse_from([
            "worker-proc",
            "--model-dir",
            "/m",
            "--compute-type",
            "int8_float32",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.compute_type.name(), "int8_float32");
        assert_eq!(cli.device, DeviceArg::Cpu);
        // `worker-proc --model-dir /m transcribe a.wav <extra>`.
        let transcribe = |extra: &[&str]| {
            let mut argv = vec!["worker-proc", "--model-dir", "/m", "transcribe", "a.wav"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Some(Command::Transcribe(a))) => Ok(a),
                Ok(None) => panic!("expected transcribe"),
                Err(e) => Err(e),
            }
        };
        let a = transcribe(&["--beam-size", "1", "--runs", "3", "--json"]).unwrap();
        assert_eq!((a.beam_size, a.runs, a.json), (1, 3, true));
        assert!(!a.vad);
        let a = transcribe(&["--vad", "--vad-min-silence-ms", "500"]).unwrap();
        assert!(a.vad);
        assert_eq!((a.vad_min_silence_ms, a.vad_speech_pad_ms), (500, 400));
        // VAD parameters without --vad are a mistake.
        assert!(transcribe(&["--vad-threshold", "0.3"]).is_err());
        assert!(Cli::try_parse_from(["worker-proc"]).is_err());
        assert!(Cli::try_parse_from([
            "worker-proc",
            "--model-dir",
            "/m",
            "--compute-type",
            "int4"
        ])
        .is_err());
    }

    #[test]
    fn threads_default_like_ctranslate2() {
        assert_eq!(effective_threads(3), 3);
        assert!(
            (1..=4).contains(&effective_threads(0)) || std::env::var("OMP_NUM_THREADS").is_ok()
        );
    }
}
