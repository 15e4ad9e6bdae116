use super::*;
use anyhow::Result;
use asr_ipc::Task;
use ct2rs::sys::WhisperOptions;

use crate::engine::Alignment;
use crate::engine::Generation;
use crate::features::FeatureConfig;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// Token ids of the toy tokenizer: "a"=0, "b"=1, " c"=2, then specials.
pub(crate) const SOT: u32 = 4;
pub(crate) const SOT_PREV: u32 = 9;
pub(crate) const NO_TS: u32 = 11;
pub(crate) const TS0: u32 = 12;

/// A toy tokenizer whose BPE really decodes: 0 → "a", 1 → "b", 2 → " c".
pub(crate) fn toy_tokenizer() -> WhisperTokenizer {
    use tokenizers::decoders::byte_level::ByteLevel;
    use tokenizers::models::bpe::BPE;
    let mut vocab: Vec<String> = ["a", "b", "Ġc"].iter().map(|s| s.to_string()).collect();
    for s in [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ] {
        vocab.push(s.to_string());
    }
    for i in 0..1501 {
        vocab.push(format!("<|{:.2}|>", i as f64 * 0.02));
    }
    // A bare space, so that " " + initial_prompt encodes.
    vocab.push("Ġ".to_string());
    let map: HashMap<String, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(
            map.into_iter().collect::<tokenizers::models::bpe::Vocab>(),
            vec![],
        )
        .build()
        .unwrap();
    let mut hf = tokenizers::Tokenizer::new(bpe);
    hf.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    hf.with_decoder(Some(ByteLevel::default()));
    WhisperTokenizer::new(vocab, hf).unwrap()
}

/// A backend that replays scripted generations and records prompts.
pub(crate) struct Script {
    pub generations: RefCell<VecDeque<Generation>>,
    pub prompts: RefCell<Vec<Vec<String>>>,
    pub temps: RefCell<Vec<f32>>,
    pub encodes: RefCell<usize>,
    /// Language detection answers, in order; then `<|en|>` at 0.9.
    pub detections: RefCell<VecDeque<(String, f32)>>,
    /// Windows of each `encode_batch` call.
    pub encode_batches: RefCell<Vec<usize>>,
    /// Windows of each `generate_batch` call.
    pub generate_batches: RefCell<Vec<usize>>,
    /// `(text tokens, num_frames)` of each `align_batch` call.
    pub align_batches: RefCell<Vec<Vec<(usize, usize)>>>,
    /// Indices of each `select` call.
    pub selects: RefCell<Vec<Vec<usize>>>,
}

impl Script {
    pub(crate) fn new(gens: Vec<Generation>) -> Self {
        Self {
            generations: RefCell::new(gens.into()),
            prompts: RefCell::new(vec![]),
            temps: RefCell::new(vec![]),
            encodes: RefCell::new(0),
            detections: RefCell::default(),
            encode_batches: RefCell::default(),
            generate_batches: RefCell::default(),
            align_batches: RefCell::default(),
            selects: RefCell::default(),
        }
    }
}

impl Backend for Script {
    type Encoded = ();
    fn encode(&self, mel: &mut [f32], n_mels: usize, n_frames: usize) -> Result<()> {
        assert_eq!(mel.len(), n_mels * n_frames);
        *self.encodes.borrow_mut() += 1;
        Ok(())
    }
    fn generate(&self, _: &(), prompt: &[&str], o: &WhisperOptions) -> Result<Generation> {
        self.prompts
            .borrow_mut()
            .push(prompt.iter().map(|s| s.to_string()).collect());
        self.temps.borrow_mut().push(if o.sampling_topk == 0 {
            o.sampling_temperature
        } else {
            0.0
        });
        self.generations
            .borrow_mut()
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("script exhausted"))
    }
    fn detect_language(&self, _: &()) -> Result<Vec<(String, f32)>> {
        let next = self.detections.borrow_mut().pop_front();
        Ok(vec![next.unwrap_or_else(|| ("<|en|>".into(), 0.9))])
    }
    fn align(&self, _: &(), _: &[usize], _: &[usize], _: usize, _: i64) -> Result<Alignment> {
        Ok(Alignment::default())
    }
    fn encode_batch(&self, mel: &mut [f32], batch: usize, n_mels: usize, n: usize) -> Result<()> {
        assert_eq!(mel.len(), batch * n_mels * n);
        self.encode_batches.borrow_mut().push(batch);
        Ok(())
    }
    fn generate_batch(
        &self,
        encoded: &(),
        prompts: &[Vec<&str>],
        o: &WhisperOptions,
    ) -> Result<Vec<Generation>> {
        self.generate_batches.borrow_mut().push(prompts.len());
        prompts
            .iter()
            .map(|p| self.generate(encoded, p, o))
            .collect()
    }
    fn select(&self, _: &(), indices: &[usize]) -> Result<()> {
        self.selects.borrow_mut().push(indices.to_vec());
        Ok(())
    }
    fn detect_language_batch(&self, encoded: &()) -> Result<Vec<Vec<(String, f32)>>> {
        let n = *self.encode_batches.borrow().last().unwrap_or(&1);
        (0..n).map(|_| self.detect_language(encoded)).collect()
    }
    fn align_batch(
        &self,
        _: &(),
        _: &[usize],
        text_tokens: &[Vec<usize>],
        num_frames: &[usize],
        _: i64,
    ) -> Result<Vec<Alignment>> {
        assert_eq!(text_tokens.len(), num_frames.len());
        self.align_batches.borrow_mut().push(
            text_tokens
                .iter()
                .zip(num_frames)
                .map(|(t, &n)| (t.len(), n))
                .collect(),
        );
        Ok(vec![Alignment::default(); text_tokens.len()])
    }
}

pub(crate) fn pipeline(gens: Vec<Generation>) -> Pipeline<Script> {
    Pipeline {
        backend: Script::new(gens),
        tokenizer: toy_tokenizer(),
        extractor: FeatureExtractor::new(FeatureConfig::default()),
        multilingual: false,
        suppress_tokens: vec![],
        cancel: Arc::default(),
    }
}

pub(crate) fn gen(tokens: Vec<u32>, score: f32, no_speech: f32) -> Generation {
    Generation {
        tokens,
        score,
        no_speech_prob: no_speech,
    }
}

/// The timestamp token of `seconds`.
pub(crate) fn ts(seconds: f64) -> u32 {
    TS0 + (seconds / 0.02).round() as u32
}

#[test]
fn seek_loop_advances_by_timestamps_and_conditions_on_previous_text() {
    // 45 s of audio: window 0 ends with an unfinished segment at 20 s,
    // window 1 starts at 20 s and covers the rest.
    let samples = vec![0.01f32; 16_000 * 45];
    let gens = vec![
        gen(
            vec![ts(0.0), 0, ts(10.0), ts(10.0), 1, ts(20.0), ts(20.0), 2],
            -0.1,
            0.0,
        ),
        gen(vec![ts(0.0), 2, ts(5.0)], -0.2, 0.0),
    ];
    let mut p = pipeline(gens);
    let mut progress = vec![];
    let mut streamed: Vec<Vec<Segment>> = vec![];
    let t = p
        .transcribe(
            &samples,
            &DecodeOptions::default(),
            &mut |d, total, segs| {
                progress.push((d, total));
                streamed.push(segs.to_vec());
            },
        )
        .unwrap();
    // Each window's progress carries the segments it finished: 2, then 1.
    assert_eq!(
        streamed.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(streamed.concat(), t.segments);
    let texts: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, vec!["a", "b", " c"]);
    let times: Vec<(f32, f32)> = t.segments.iter().map(|s| (s.start, s.end)).collect();
    assert_eq!(times, vec![(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]);
    assert_eq!(t.segments[2].seek, 2000);
    assert_eq!(t.text(), "ab c");
    // The second prompt carries the first window's segments.
    let prompts = p.backend.prompts.borrow();
    assert_eq!(prompts[0], vec!["<|startoftranscript|>"]);
    assert_eq!(prompts[1][0], "<|startofprev|>");
    assert_eq!(prompts[1].last().unwrap(), "<|startoftranscript|>");
    assert_eq!(prompts[1].len(), 1 + 6 + 1);
    assert_eq!(progress.len(), 2);
    assert!((progress[0].0 - 20.0).abs() < 1e-4 && (progress[1].0 - 45.0).abs() < 1e-4);
    let phases: Vec<&str> = t.timings.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        vec!["features", "encode", "generate", "encode", "generate"]
    );
}

#[test]
fn low_logprob_falls_back_to_higher_temperatures() {
    let samples = vec![0.01f32; 16_000 * 3];
    let gens = vec![
        gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.1),
        gen(vec![ts(0.0), 1, ts(1.0)], -2.0, 0.1),
        gen(vec![ts(0.0), 2, ts(1.0)], -0.5, 0.1),
    ];
    let mut p = pipeline(gens);
    let t = p
        .transcribe(&samples, &DecodeOptions::default(), &mut |_, _, _| {})
        .unwrap();
    assert_eq!(*p.backend.temps.borrow(), vec![0.0, 0.2, 0.4]);
    assert_eq!(t.segments.len(), 1);
    assert_eq!(t.segments[0].text, " c");
    assert!((t.segments[0].temperature - 0.4).abs() < 1e-6);
}

#[test]
fn when_every_temperature_fails_the_best_logprob_wins() {
    let samples = vec![0.01f32; 16_000 * 3];
    let opts = DecodeOptions {
        temperatures: vec![0.0, 0.6],
        ..DecodeOptions::default()
    };
    let gens = vec![
        gen(vec![ts(0.0), 0, ts(1.0)], -1.5, 0.1),
        gen(vec![ts(0.0), 1, ts(1.0)], -4.0, 0.1),
    ];
    let mut p = pipeline(gens);
    let t = p.transcribe(&samples, &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(t.segments[0].text, "a");
    // The temperature reported is the last one tried.
    assert!((t.segments[0].temperature - 0.6).abs() < 1e-6);
}

#[test]
fn silent_windows_are_skipped() {
    let samples = vec![0.0f32; 16_000 * 5];
    // High no-speech probability and low log-probability: skip.
    let gens = vec![gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.9)];
    let mut p = pipeline(gens);
    let t = p
        .transcribe(&samples, &DecodeOptions::default(), &mut |_, _, _| {})
        .unwrap();
    assert!(t.segments.is_empty());
    // No fallback was tried for silence.
    assert_eq!(p.backend.temps.borrow().len(), 1);
}

#[test]
fn initial_prompt_and_prompt_reset() {
    let samples = vec![0.01f32; 16_000 * 40];
    let opts = DecodeOptions {
        condition_on_previous_text: false,
        initial_prompt: Some("  a  ".into()),
        ..DecodeOptions::default()
    };
    let gens = vec![
        gen(vec![ts(0.0), 0, ts(30.0)], -0.1, 0.0),
        gen(vec![ts(0.0), 1, ts(5.0)], -0.1, 0.0),
    ];
    let mut p = pipeline(gens);
    let t = p.transcribe(&samples, &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(t.segments.len(), 2);
    let prompts = p.backend.prompts.borrow();
    // The first window is primed with the initial prompt...
    assert_eq!(prompts[0][0], "<|startofprev|>");
    // ...and without conditioning the second is not.
    assert_eq!(prompts[1], vec!["<|startoftranscript|>"]);
}

#[test]
fn invalid_options_are_refused() {
    let tok = toy_tokenizer();
    let bad = |o: DecodeOptions, multi: bool| plan(&o, &tok, multi).unwrap_err();
    let d = DecodeOptions::default;
    assert!(matches!(
        bad(
            DecodeOptions {
                beam_size: 0,
                ..d()
            },
            false
        ),
        WorkerError::InvalidOptions(_)
    ));
    assert!(matches!(
        bad(
            DecodeOptions {
                language: Some("de".into()),
                ..d()
            },
            false
        ),
        WorkerError::InvalidOptions(_)
    ));
    assert!(matches!(
        bad(
            DecodeOptions {
                task: Task::Translate,
                ..d()
            },
            false
        ),
        WorkerError::InvalidOptions(_)
    ));
    assert!(matches!(
        bad(
            DecodeOptions {
                language: Some("xx".into()),
                ..d()
            },
            true
        ),
        WorkerError::InvalidOptions(_)
    ));
    assert!(matches!(
        bad(
            DecodeOptions {
                temperatures: vec![],
                ..d()
            },
            false
        ),
        WorkerError::InvalidOptions(_)
    ));
    assert!(matches!(
        bad(
            DecodeOptions {
                temperatures: vec![f32::NAN],
                ..d()
            },
            false
        ),
        WorkerError::InvalidOptions(_)
    ));
    let ok = plan(
        &DecodeOptions {
            language: Some("EN".into()),
            ..d()
        },
        &tok,
        false,
    )
    .unwrap();
    assert_eq!(
        ok.language,
        LanguagePlan::Fixed {
            code: "en".into(),
            token: None
        }
    );
    let ok = plan(&d(), &tok, true).unwrap();
    assert_eq!(ok.language, LanguagePlan::Detect);
    assert_eq!(ok.task_token, Some(7));
    assert!(matches!(
        validate_audio(&[]),
        Err(WorkerError::InvalidAudio(_))
    ));
    assert!(matches!(
        validate_audio(&[0.0, f32::INFINITY]),
        Err(WorkerError::InvalidAudio(_))
    ));
}

/// `hello.wav` (4.2 s of espeak-ng speech) between stretches of silence.
pub(crate) fn speech_between_silences() -> Vec<f32> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/speech/hello.wav");
    let hello = crate::transcribe_cmd::read_wav(&path).unwrap();
    let mut samples = vec![0.0f32; 16_000 * 3];
    samples.extend_from_slice(&hello);
    samples.extend(std::iter::repeat_n(0.0, 16_000 * 6));
    samples.extend_from_slice(&hello);
    samples.extend(std::iter::repeat_n(0.0, 16_000 * 2));
    samples
}

#[test]
fn vad_decodes_only_speech_and_restores_the_original_times() {
    let samples = speech_between_silences();
    let opts = DecodeOptions {
        vad_filter: true,
        ..DecodeOptions::default()
    };
    let chunks = vad::speech_timestamps(&samples, &opts.vad);
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    let first_len = (chunks[0].end - chunks[0].start) as f64 / 16_000.0;
    // One window over the concatenated speech: a segment in each chunk.
    let in_second = (first_len + 1.0) / 0.02;
    let gens = vec![gen(
        vec![
            ts(0.0),
            0,
            ts(2.0),
            ts(2.0),
            1,
            ts(first_len.floor()),
            ts(in_second.round() * 0.02),
            2,
            ts(in_second.round() * 0.02 + 1.0),
        ],
        -0.1,
        0.0,
    )];
    let mut p = pipeline(gens);
    let mut progress = vec![];
    let mut streamed: Vec<Segment> = vec![];
    let t = p
        .transcribe(&samples, &opts, &mut |d, total, segs| {
            progress.push((d, total));
            streamed.extend_from_slice(segs);
        })
        .unwrap();
    // Streamed segments already have their original times.
    assert_eq!(streamed, t.segments);
    // One window only: the speech is under 30 s although the clip is not.
    assert_eq!(*p.backend.encodes.borrow(), 1);
    let offset0 = chunks[0].start as f64 / 16_000.0;
    let offset1 = offset0 + (chunks[1].start - chunks[0].end) as f64 / 16_000.0;
    let near = |a: f32, b: f64| (a as f64 - b).abs() < 0.011;
    assert_eq!(t.segments.len(), 3);
    assert!(near(t.segments[0].start, offset0), "{:?}", t.segments[0]);
    assert!(near(t.segments[0].end, offset0 + 2.0));
    assert!(near(t.segments[1].end, offset0 + first_len.floor()));
    let s2 = in_second.round() * 0.02;
    assert!(
        near(t.segments[2].start, offset1 + s2),
        "{:?}",
        t.segments[2]
    );
    assert!(near(t.segments[2].end, offset1 + s2 + 1.0));
    assert!((t.duration_secs as f64 - samples.len() as f64 / 16_000.0).abs() < 1e-3);
    // Progress counts the original audio and ends at its duration.
    let (last, total) = *progress.last().unwrap();
    assert_eq!(last, total);
    assert!((total - t.duration_secs).abs() < 1e-3);
    let phases: Vec<&str> = t.timings.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(phases, vec!["vad", "features", "encode", "generate"]);
}

#[test]
fn vad_on_silence_gives_an_empty_transcript_without_decoding() {
    let samples = vec![0.0f32; 16_000 * 40];
    let opts = DecodeOptions {
        vad_filter: true,
        ..DecodeOptions::default()
    };
    let mut p = pipeline(vec![]);
    let mut progress = vec![];
    let t = p
        .transcribe(&samples, &opts, &mut |d, total, _| {
            progress.push((d, total))
        })
        .unwrap();
    assert!(t.segments.is_empty());
    assert_eq!(t.text(), "");
    assert_eq!(t.language, "en");
    assert_eq!(*p.backend.encodes.borrow(), 0);
    assert_eq!(progress, vec![(40.0, 40.0)]);
    // Invalid VAD options are refused like any other option.
    let bad = DecodeOptions {
        vad_filter: true,
        vad: asr_ipc::VadOptions {
            threshold: 2.0,
            ..Default::default()
        },
        ..DecodeOptions::default()
    };
    assert!(matches!(
        p.transcribe(&samples, &bad, &mut |_, _, _| {}),
        Err(WorkerError::InvalidOptions(_))
    ));
}

#[test]
fn multilingual_models_detect_and_prompt_with_language_and_task() {
    let samples = vec![0.01f32; 16_000 * 2];
    let mut p = pipeline(vec![gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0)]);
    p.multilingual = true;
    let t = p
        .transcribe(&samples, &DecodeOptions::default(), &mut |_, _, _| {})
        .unwrap();
    assert_eq!(t.language, "en");
    assert!((t.language_probability - 0.9).abs() < 1e-6);
    let prompts = p.backend.prompts.borrow();
    assert_eq!(
        prompts[0],
        vec!["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
    );
    // Clip under 30 s: the detection window differs by one frame from
    // the decode window, so both are encoded (as faster-whisper does).
    assert_eq!(*p.backend.encodes.borrow(), 2);
}

#[test]
fn the_translate_task_prompts_with_the_language_and_translate_tokens() {
    let samples = vec![0.01f32; 16_000 * 2];
    let mut p = pipeline(vec![gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0)]);
    p.multilingual = true;
    let opts = DecodeOptions {
        language: Some("en".into()),
        task: Task::Translate,
        hotwords: Some(" a b ".into()),
        ..DecodeOptions::default()
    };
    p.transcribe(&samples, &opts, &mut |_, _, _| {}).unwrap();
    let prompts = p.backend.prompts.borrow();
    // faster-whisper: <|startofprev|> + " a b" (the hotwords, stripped,
    // one leading space; the toy BPE has no merges), then
    // <|startoftranscript|><|en|><|translate|>.
    assert_eq!(
        prompts[0],
        vec![
            "<|startofprev|>",
            "Ġ",
            "a",
            "Ġ",
            "b",
            "<|startoftranscript|>",
            "<|en|>",
            "<|translate|>"
        ]
    );
}

#[test]
fn language_detection_looks_past_an_unsure_first_window() {
    // 70 s: three windows. The first is unsure (music, silence), the
    // second sure: it decides.
    let samples = vec![0.01f32; 16_000 * 70];
    let gens = (0..3)
        .map(|_| gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0))
        .collect();
    let mut p = pipeline(gens);
    p.multilingual = true;
    p.backend
        .detections
        .borrow_mut()
        .extend([("<|en|>".to_string(), 0.3), ("<|en|>".to_string(), 0.8)]);
    let opts = DecodeOptions {
        language_detection_segments: 3,
        ..DecodeOptions::default()
    };
    let t = p.transcribe(&samples, &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(t.language, "en");
    assert!(
        (t.language_probability - 0.8).abs() < 1e-6,
        "{}",
        t.language_probability
    );
    assert!(
        p.backend.detections.borrow().is_empty(),
        "both windows asked"
    );

    // No window is sure: the language most often on top, with its best
    // probability; with one segment (the default) only the first counts.
    let mut p = pipeline(vec![gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0); 3]);
    p.multilingual = true;
    p.backend
        .detections
        .borrow_mut()
        .extend([("<|en|>".to_string(), 0.3), ("<|en|>".to_string(), 0.4)]);
    let t = p
        .transcribe(&samples, &DecodeOptions::default(), &mut |_, _, _| {})
        .unwrap();
    assert!((t.language_probability - 0.3).abs() < 1e-6);
    assert_eq!(p.backend.detections.borrow().len(), 1, "one window asked");

    let bad = DecodeOptions {
        language_detection_segments: 0,
        ..DecodeOptions::default()
    };
    let mut p = pipeline(vec![]);
    assert!(matches!(
        p.transcribe(&samples, &bad, &mut |_, _, _| {}),
        Err(WorkerError::InvalidOptions(_))
    ));
}
