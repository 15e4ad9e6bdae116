//! The `transcribe` subcommand: the worker alone, on a WAV file.
//!
//! It loads the model exactly as server mode does and runs the same
//! [`Pipeline::transcribe`](crate::transcribe::Pipeline::transcribe) on a
//! 16 kHz mono WAV, `--runs` times, then prints the text, the segments and
//! the phase timings (median over runs), as text or as one JSON document
//! (`--json`). This is how the team measures the worker without the service
//! and compares it with faster-whisper.

use std::path::{Path, PathBuf};

use clap::Args;

use asr_ipc::{DecodeOptions, Task, VadOptions};
use serde::Serialize;
use serde_json::json;

use crate::engine::EngineSettings;
use crate::transcribe::Transcript;
use crate::{log_error, log_info, model};

/// Options of `transcribe`.
#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// A 16 kHz mono WAV file.
    pub file: PathBuf,
    /// Beam size at temperature 0.
    #[arg(long, default_value_t = 5)]
    pub beam_size: u32,
    /// Candidates at temperatures above 0.
    #[arg(long, default_value_t = 5)]
    pub best_of: u32,
    /// Decode the file this many times; timings are medians.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Language code (default: `en` for `.en` models, else detected).
    #[arg(long)]
    pub language: Option<String>,
    /// Translate into English instead of transcribing.
    #[arg(long)]
    pub translate: bool,
    /// Text to prime the first window with.
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Decode without timestamps.
    #[arg(long)]
    pub without_timestamps: bool,
    /// Add word-level timestamps.
    #[arg(long)]
    pub word_timestamps: bool,
    /// Do not feed previous text as a prompt.
    #[arg(long)]
    pub no_condition_on_previous_text: bool,
    /// Also write the clip's log-mel features to this file (raw
    /// little-endian f32, row-major [n_mels][n_frames]) for comparisons.
    #[arg(long)]
    pub dump_features: Option<PathBuf>,
    /// Temperatures to try, comma-separated (default 0,0.2,…,1.0).
    #[arg(long, value_delimiter = ',')]
    pub temperatures: Option<Vec<f32>>,
    /// Voice-activity detection first: decode only the speech
    /// (faster-whisper's `vad_filter=True`).
    #[arg(long)]
    pub vad: bool,
    /// VAD speech threshold.
    #[arg(long, default_value_t = 0.5, requires = "vad")]
    pub vad_threshold: f32,
    /// VAD: silence that ends a speech chunk, ms.
    #[arg(long, default_value_t = 2000, requires = "vad")]
    pub vad_min_silence_ms: u32,
    /// VAD: padding on each side of a speech chunk, ms.
    #[arg(long, default_value_t = 400, requires = "vad")]
    pub vad_speech_pad_ms: u32,
    /// VAD: longest speech chunk, seconds (default unlimited).
    #[arg(long, requires = "vad")]
    pub vad_max_speech_s: Option<f32>,
    /// Print the VAD's speech chunks (seconds) before the transcript.
    #[arg(long, requires = "vad")]
    pub vad_chunks: bool,
    /// Windows per engine call for audio over 30 s: 0 or 1 = the
    /// sequential seek loop, 2..=64 = batched long-form decoding (the
    /// node's `batch_size`).
    #[arg(long, default_value_t = 0)]
    pub batch_size: u32,
    /// Decode as for a `json` or `text` answer (the node's `text_only`):
    /// batched long-form windows without timestamp tokens.
    #[arg(long)]
    pub text_only: bool,
}

/// Reads a 16 kHz mono WAV as f32 samples in [-1, 1] (integer PCM is
/// divided by 2^(bits-1), as faster-whisper's s16 decode does).
pub fn read_wav(path: &Path) -> anyhow::Result<Vec<f32>> {
    let mut reader = hound::WavReader::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {} as WAV: {e}", path.display()))?;
    let spec = reader.spec();
    if spec.sample_rate != asr_ipc::SAMPLE_RATE || spec.channels != 1 {
        anyhow::bail!(
            "{} is {} Hz with {} channel(s); convert it first: sox IN -r 16000 -c 1 -b 16 OUT.wav",
            path.display(),
            spec.sample_rate,
            spec.channels
        );
    }
    let samples: Result<Vec<f32>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect()
        }
    };
    samples.map_err(|e| anyhow::anyhow!("cannot decode {}: {e}", path.display()))
}

/// The `--json` document (serialised directly so f32 values print short).
#[derive(Serialize)]
struct Report<'a> {
    file: String,
    model: &'a str,
    multilingual: bool,
    device: &'a str,
    compute_type: String,
    threads: u32,
    load_ms: u64,
    runs: u32,
    duration_secs: f32,
    language: &'a str,
    language_probability: f32,
    text: String,
    same_text_every_run: bool,
    segments: &'a [asr_ipc::Segment],
    timings_ms: serde_json::Value,
    rtf: f64,
    phases_last_run: &'a [asr_ipc::Phase],
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Milliseconds spent in phases called `name` during one run.
fn phase_ms(t: &Transcript, name: &str) -> f64 {
    t.timings
        .phases
        .iter()
        .filter(|p| p.name == name)
        .map(|p| p.end_unix_ns.saturating_sub(p.start_unix_ns) as f64 / 1e6)
        .fold(0.0, |a, b| a + b)
}

fn options(args: &TranscribeArgs) -> DecodeOptions {
    let mut o = DecodeOptions {
        beam_size: args.beam_size,
        best_of: args.best_of,
        language: args.language.clone(),
        task: if args.translate {
            Task::Translate
        } else {
            Task::Transcribe
        },
        initial_prompt: args.initial_prompt.clone(),
        without_timestamps: args.without_timestamps,
        word_timestamps: args.word_timestamps,
        condition_on_previous_text: !args.no_condition_on_previous_text,
        vad_filter: args.vad,
        vad: VadOptions {
            threshold: args.vad_threshold,
            min_silence_duration_ms: args.vad_min_silence_ms,
            speech_pad_ms: args.vad_speech_pad_ms,
            max_speech_duration_s: args.vad_max_speech_s,
            ..VadOptions::default()
        },
        batch_size: args.batch_size,
        text_only: args.text_only,
        ..DecodeOptions::default()
    };
    if let Some(t) = &args.temperatures {
        o.temperatures = t.clone();
    }
    o
}

/// Runs the subcommand; returns the exit code.
pub fn run(
    model_dir: &Path,
    settings: EngineSettings,
    device_name: &str,
    compute_type_name: &str,
    threads: u32,
    args: &TranscribeArgs,
) -> i32 {
    let samples = match read_wav(&args.file) {
        Ok(s) => s,
        Err(e) => {
            log_error!("{e:#}");
            return 1;
        }
    };
    let (mut pipeline, info) = match model::load(model_dir, settings) {
        Ok(loaded) => loaded,
        Err(e) => {
            log_error!("cannot load the model: {e:#}");
            return 1;
        }
    };
    log_info!("model {} loaded in {} ms", info.name, info.load_ms);
    if let Some(path) = &args.dump_features {
        let f = pipeline.extractor.compute(&samples);
        let bytes: Vec<u8> = f.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        if let Err(e) = std::fs::write(path, bytes) {
            log_error!("cannot write {}: {e}", path.display());
            return 1;
        }
        log_info!(
            "features [{} x {}] written to {}",
            f.n_mels,
            f.n_frames,
            path.display()
        );
    }
    let opts = options(args);
    if args.vad_chunks {
        for c in crate::vad::speech_timestamps(&samples, &opts.vad) {
            let sr = asr_ipc::SAMPLE_RATE as f64;
            println!(
                "speech {:8.3} -> {:8.3}",
                c.start as f64 / sr,
                c.end as f64 / sr
            );
        }
    }
    let runs = args.runs.max(1);
    let mut results: Vec<Transcript> = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        match pipeline.transcribe(&samples, &opts, &mut |_, _, _| {}) {
            Ok(t) => results.push(t),
            Err(e) => {
                log_error!("transcription failed: {e}");
                return 1;
            }
        }
    }
    let last = &results[results.len() - 1];
    let stat = |f: &dyn Fn(&Transcript) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        median(&mut v)
    };
    let total_ms = stat(&|t| t.timings.total_us as f64 / 1e3);
    let features_ms = stat(&|t| phase_ms(t, "features"));
    let encode_ms = stat(&|t| phase_ms(t, "encode"));
    let generate_ms = stat(&|t| phase_ms(t, "generate"));
    let detect_ms = stat(&|t| phase_ms(t, "detect_language"));
    let align_ms = stat(&|t| phase_ms(t, "align"));
    let vad_ms = stat(&|t| phase_ms(t, "vad"));
    let all_total: Vec<f64> = results
        .iter()
        .map(|t| t.timings.total_us as f64 / 1e3)
        .collect();
    let consistent = results.iter().all(|t| t.text() == last.text());
    if args.json {
        let doc = Report {
            file: args.file.display().to_string(),
            model: &info.name,
            multilingual: info.multilingual,
            device: device_name,
            compute_type: compute_type_name.to_string(),
            threads,
            load_ms: info.load_ms,
            runs,
            duration_secs: last.duration_secs,
            language: &last.language,
            language_probability: last.language_probability,
            text: last.text(),
            same_text_every_run: consistent,
            segments: &last.segments,
            timings_ms: json!({
                "total_median": total_ms,
                "total_all": all_total,
                "features_median": features_ms,
                "encode_median": encode_ms,
                "generate_median": generate_ms,
                "detect_language_median": detect_ms,
                "align_median": align_ms,
                "vad_median": vad_ms,
            }),
            rtf: total_ms / 1e3 / (last.duration_secs as f64).max(1e-9),
            phases_last_run: &last.timings.phases,
        };
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for s in &last.segments {
            println!("[{:7.2} -> {:7.2}] {}", s.start, s.end, s.text.trim());
            for w in &s.words {
                println!(
                    "      {:7.2} {:7.2} {:.2} {}",
                    w.start, w.end, w.probability, w.word
                );
            }
        }
        println!();
        println!("text: {}", last.text());
        println!(
            "{} ({} multilingual={}) on {device_name} {} {} threads; load {} ms",
            args.file.display(),
            info.name,
            info.multilingual,
            compute_type_name,
            threads,
            info.load_ms
        );
        println!(
            "{:.2} s of audio, {runs} run(s), median total {total_ms:.1} ms (rtf {:.3}): features {features_ms:.1} ms, encode {encode_ms:.1} ms, generate {generate_ms:.1} ms, detect_language {detect_ms:.1} ms, align {align_ms:.1} ms, vad {vad_ms:.1} ms",
            last.duration_secs,
            total_ms / 1e3 / (last.duration_secs as f64).max(1e-9)
        );
        if !consistent {
            println!("note: the text differed between runs (sampling fallback)");
        }
    }
    0
}
