//! `worker-proc`: the Whisper worker child process.
//!
//! It loads a CTranslate2 Whisper model once and decodes jobs strictly one
//! at a time, speaking the framed protocol of `asr_ipc` on stdin/stdout.
//! The `transcribe` subcommand runs the same pipeline on a WAV file.
//!
//! # Layout
//! - [`cli`]: command line, device/compute-type resolution, dispatch.
//! - [`protocol`]: server mode — process hygiene, handshake, job loop.
//! - [`fault`]: fault injection for crash, hang and start-up tests.
//! - [`model`]: model directory checks and loading.
//! - [`engine`]: the ct2rs `sys::Whisper` wrapper behind the `Backend` trait.
//! - [`features`]: log-mel features (faster-whisper's `FeatureExtractor`).
//! - [`tokenizer`]: special tokens, BPE decode/encode, suppressed tokens.
//! - [`transcribe`]: the seek loop and temperature fallback
//!   (faster-whisper's `generate_segments`).
//! - [`words`]: word-level timestamps.
//! - [`bench`]: the `transcribe` subcommand.
//! - [`log`]: plain-line logging to stderr.

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod engine;
pub mod fault;
pub mod features;
pub mod log;
pub mod model;
pub mod protocol;
pub mod tokenizer;
pub mod transcribe;
pub mod words;
