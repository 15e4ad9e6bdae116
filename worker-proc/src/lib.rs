//! `worker-proc`: the Whisper worker child process.
//!
//! It loads a CTranslate2 Whisper model once and decodes jobs strictly one
//! at a time, speaking the framed protocol of `asr_ipc` on stdin/stdout.
//! The `transcribe` subcommand runs the same pipeline on a WAV file.
//!
//! # Layout
//! - [`cli`]: command line, device/compute-type resolution, dispatch.
//! - [`protocol`]: server mode — process hygiene, handshake, job loop.
//! - [`batch_job`]: a batch of jobs decoded together
//!   (`Pipeline::transcribe_many`), each answered by its own id;
//!   [`cancels`]: which jobs are cancelled (per job in a batch).
//! - [`fault`]: fault injection for crash, hang and start-up tests.
//! - [`model`]: model directory checks and loading.
//! - [`engine`]: the ct2rs `sys::Whisper` wrapper behind the `Backend` trait.
//! - [`engine_info`]: which CTranslate2 library runs, on what CPU backend
//!   or GPU, and whether CUDA can run here (what is missing when not).
//! - [`features`]: log-mel features (faster-whisper's `FeatureExtractor`).
//! - [`tokenizer`]: special tokens, BPE decode/encode, suppressed tokens.
//! - [`segments`]: prompt building, timestamp splitting, compression ratio.
//! - [`transcribe`]: the seek loop and temperature fallback
//!   (faster-whisper's `generate_segments`), and batched long-form decoding
//!   (`Pipeline::transcribe_many`: windows of one or several clips decoded
//!   several per engine call).
//! - [`words`]: word-level timestamps.
//! - [`vad`]: voice-activity detection (`vad_filter`): speech chunks, and
//!   the map of their timestamps back to the original timeline.
//! - [`transcribe_cmd`]: the offline `transcribe` subcommand (the worker
//!   alone on a WAV file; what `make bench` measures).
//! - [`log`]: plain-line logging to stderr.
//!
//! # Usage
//! ```text
//! worker-proc --model-dir DIR [--device cpu|cuda|auto] [--compute-type int8]
//!             [--threads N] [--enable-fault-injection] [--log-level warning]
//!             [--parent-pid PID] [--heartbeat-interval-ms 1000]
//! worker-proc --model-dir DIR [--threads N …] transcribe FILE.wav
//!             [--beam-size N] [--runs N] [--json] [--word-timestamps] [--vad] …
//! ```
//!
//! # Exit codes
//! | code | meaning |
//! | --- | --- |
//! | 0 | stdin EOF or `Shutdown` (server); success (`transcribe`) |
//! | 1 | `transcribe` failed (bad WAV, model, decode) |
//! | 2 | bad command line (clap) |
//! | 3 | model load failed, after `LoadFailed` was sent |
//! | 4 | protocol error: malformed, truncated or oversized frame, or a frame could not be written |
//! | 5 | injected load failure (`WORKER_PROC_FAULT_ON_LOAD=exit` with `--enable-fault-injection`) |
//! | 6 | set-up failed: the parent was already gone, or stdout could not be taken |
//! | SIGABRT | injected crash (`Fault::Crash`) |
//!
//! # Accuracy
//! The pipeline is a port of faster-whisper 1.x (`transcribe` →
//! `generate_segments` → `generate_with_fallback`, `FeatureExtractor`,
//! `add_word_timestamps`). With `--compute-type float32` it produces the same
//! tokens, segment times and word times as faster-whisper on the same model;
//! with int8 as well, since the default build runs the PyPI wheel's own
//! library (see [`engine_info`]).

#![warn(missing_docs)]

pub mod batch_job;
pub mod cancels;
pub mod cli;
pub mod engine;
pub mod engine_info;
pub mod fault;
pub mod features;
pub mod log;
pub mod model;
pub mod protocol;
pub mod segments;
pub mod tokenizer;
pub mod transcribe;
pub mod transcribe_cmd;
pub mod vad;
pub mod words;
