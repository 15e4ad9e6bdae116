//! Batched long-form decoding with the scripted backend: windows, time
//! mapping, fallback of a subset, cancel, bad items among good ones.

use std::sync::atomic::{AtomicBool, Ordering};

use asr_ipc::{DecodeOptions, Segment, WorkerError};

use super::tests::{gen, pipeline, speech_between_silences, ts};
use super::{BatchItem, Transcript};
use crate::vad;

const SR: usize = 16_000;

/// One progress call: item, decoded and total seconds, segments.
type Progress = (usize, f32, f32, Vec<Segment>);

fn many(
    p: &mut super::Pipeline<super::tests::Script>,
    items: &[BatchItem<'_>],
    batch: usize,
) -> (Vec<Result<Transcript, WorkerError>>, Vec<Progress>) {
    let mut progress = Vec::new();
    let results = p.transcribe_many(items, batch, &mut |i, d, t, s| {
        progress.push((i, d, t, s.to_vec()))
    });
    (results, progress)
}

fn item<'a>(samples: &'a [f32], opts: &'a DecodeOptions) -> BatchItem<'a> {
    BatchItem {
        samples,
        opts,
        cancel: None,
    }
}

fn near(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() < 0.011
}

#[test]
fn without_vad_a_clip_is_cut_into_30_s_windows_decoded_in_one_call() {
    let samples = vec![0.01f32; SR * 70];
    let gens = vec![
        gen(vec![ts(0.0), 0, ts(2.0)], -0.1, 0.0),
        gen(vec![ts(1.0), 1, ts(3.0)], -0.1, 0.0),
        gen(vec![ts(0.5), 2, ts(4.0)], -0.1, 0.0),
    ];
    let mut p = pipeline(gens);
    let opts = DecodeOptions::default();
    let (results, progress) = many(&mut p, &[item(&samples, &opts)], 8);
    let t = results.into_iter().next().unwrap().unwrap();
    assert_eq!(*p.backend.encode_batches.borrow(), vec![3]);
    assert_eq!(*p.backend.generate_batches.borrow(), vec![3]);
    let times: Vec<(f32, f32)> = t.segments.iter().map(|s| (s.start, s.end)).collect();
    // (One segment per window: no timestamp pair, so it starts at the
    // window's start and ends at its last timestamp, as in the seek loop.)
    assert_eq!(times, vec![(0.0, 2.0), (30.0, 33.0), (60.0, 64.0)]);
    let seeks: Vec<u32> = t.segments.iter().map(|s| s.seek).collect();
    assert_eq!(seeks, vec![0, 3000, 6000]);
    assert_eq!(t.text(), "ab c");
    assert_eq!(
        t.segments.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // Every window's prompt is the bare start sequence: no previous text.
    let prompts = p.backend.prompts.borrow();
    assert!(prompts.iter().all(|p| p == &["<|startoftranscript|>"]));
    // Progress once per window, in order, ending at the clip's duration.
    let done: Vec<f32> = progress.iter().map(|p| p.1).collect();
    assert_eq!(done, vec![30.0, 60.0, 70.0]);
    let streamed: Vec<Segment> = progress.into_iter().flat_map(|p| p.3).collect();
    assert_eq!(streamed, t.segments);
    let phases: Vec<&str> = t.timings.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        vec!["features", "features", "features", "encode", "generate"]
    );
}

#[test]
fn batch_size_bounds_the_windows_per_call() {
    let samples = vec![0.01f32; SR * 100];
    let gens = (0..4)
        .map(|_| gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0))
        .collect();
    let mut p = pipeline(gens);
    let opts = DecodeOptions::default();
    let (results, progress) = many(&mut p, &[item(&samples, &opts)], 3);
    assert_eq!(results[0].as_ref().unwrap().segments.len(), 4);
    assert_eq!(*p.backend.generate_batches.borrow(), vec![3, 1]);
    assert_eq!(progress.len(), 4);
}

#[test]
fn a_window_that_stops_early_is_continued_from_its_last_timestamp_pair() {
    let samples = vec![0.01f32; SR * 45];
    let gens = vec![
        // Window 0 stops at the pair <|10.00|><|10.00|>: "b" was cut.
        gen(vec![ts(0.0), 0, ts(10.0), ts(10.0), 1], -0.1, 0.0),
        gen(vec![ts(0.0), 2, ts(5.0)], -0.1, 0.0),
        // Its rest, 10..30 s, in the next call.
        gen(vec![ts(0.0), 1, ts(3.0)], -0.1, 0.0),
    ];
    let mut p = pipeline(gens);
    let opts = DecodeOptions::default();
    let (results, progress) = many(&mut p, &[item(&samples, &opts)], 4);
    let t = results.into_iter().next().unwrap().unwrap();
    let got: Vec<(&str, f32, f32, u32)> = t
        .segments
        .iter()
        .map(|s| (s.text.as_str(), s.start, s.end, s.seek))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", 0.0, 10.0, 0),
            ("b", 10.0, 13.0, 1000),
            (" c", 30.0, 35.0, 3000)
        ]
    );
    assert_eq!(*p.backend.generate_batches.borrow(), vec![2, 1]);
    let done: Vec<f32> = progress.iter().map(|p| p.1).collect();
    assert_eq!(done, vec![10.0, 30.0, 45.0]);
}

#[test]
fn text_cut_just_before_the_window_end_ends_at_the_window_end() {
    let samples = vec![0.01f32; SR * 30];
    // Less than a second left after the pair: no continuation.
    let gens = vec![gen(vec![ts(0.0), 0, ts(29.5), ts(29.5), 1], -0.1, 0.0)];
    let mut p = pipeline(gens);
    let opts = DecodeOptions::default();
    let (results, _) = many(&mut p, &[item(&samples, &opts)], 4);
    let t = results.into_iter().next().unwrap().unwrap();
    let got: Vec<(&str, f32, f32)> = t
        .segments
        .iter()
        .map(|s| (s.text.as_str(), s.start, s.end))
        .collect();
    assert_eq!(got, vec![("a", 0.0, 29.5), ("b", 29.5, 30.0)]);
    assert_eq!(*p.backend.generate_batches.borrow(), vec![1]);
}

#[test]
fn only_the_windows_that_fail_fall_back_batched_among_themselves() {
    // Four clips of one window each (the jobs of a dynamic batch): the
    // whole temperature fallback applies.
    let clips: Vec<Vec<f32>> = (0..4).map(|_| vec![0.01f32; SR * 20]).collect();
    let gens = vec![
        // Round 1 at t = 0: clips 1 and 3 fail the log-probability check.
        gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0),
        gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.0),
        gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0),
        gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.0),
        // Round 2 at t = 0.2: clip 1 passes, clip 3 fails again.
        gen(vec![ts(0.0), 2, ts(1.0)], -0.5, 0.0),
        gen(vec![ts(0.0), 1, ts(1.0)], -2.0, 0.0),
        // Round 3 at t = 0.4: clip 3 alone.
        gen(vec![ts(0.0), 2, ts(1.0)], -0.2, 0.0),
    ];
    let mut p = pipeline(gens);
    let opts = DecodeOptions::default();
    let items: Vec<BatchItem<'_>> = clips.iter().map(|c| item(c, &opts)).collect();
    let (results, progress) = many(&mut p, &items, 8);
    assert_eq!(*p.backend.generate_batches.borrow(), vec![4, 2, 1]);
    // The retried windows are not encoded again: their rows of the first
    // call's encoder output, then of the second's.
    assert_eq!(*p.backend.encode_batches.borrow(), vec![4]);
    assert_eq!(*p.backend.selects.borrow(), vec![vec![1, 3], vec![1]]);
    assert_eq!(
        *p.backend.temps.borrow(),
        vec![0.0, 0.0, 0.0, 0.0, 0.2, 0.2, 0.4]
    );
    let got: Vec<(String, f32)> = results
        .into_iter()
        .map(|r| {
            let s = &r.unwrap().segments[0];
            (s.text.clone(), s.temperature)
        })
        .collect();
    let want = [("a", 0.0), (" c", 0.2), ("a", 0.0), (" c", 0.4)];
    assert_eq!(got, want.map(|(t, temp)| (t.to_string(), temp)).to_vec());
    // Clip 2 was done first, clip 3 last.
    let order: Vec<usize> = progress.iter().map(|p| p.0).collect();
    assert_eq!(order, vec![0, 2, 1, 3]);
}

#[test]
fn long_form_windows_fall_back_only_when_they_run_away() {
    let samples = vec![0.01f32; SR * 90];
    // The same token over and over, as a loop writes it.
    let looping: Vec<u32> = std::iter::once(ts(0.0))
        .chain(std::iter::repeat_n(0, 400))
        .collect();
    let gens = vec![
        // Round 1 at t = 0: window 0 fails the log-probability check but
        // reads like speech, window 1 runs away, window 2 passes.
        gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.0),
        gen(looping, -0.1, 0.0),
        gen(vec![ts(0.0), 2, ts(1.0)], -0.1, 0.0),
        // Round 2 at t = 0.2: window 1 alone.
        gen(vec![ts(0.0), 1, ts(1.0)], -0.2, 0.0),
    ];
    let mut p = pipeline(gens);
    let opts = DecodeOptions::default();
    let (results, _) = many(&mut p, &[item(&samples, &opts)], 8);
    let t = results.into_iter().next().unwrap().unwrap();
    assert_eq!(*p.backend.generate_batches.borrow(), vec![3, 1]);
    assert_eq!(*p.backend.temps.borrow(), vec![0.0, 0.0, 0.0, 0.2]);
    let got: Vec<(&str, f32)> = t
        .segments
        .iter()
        .map(|s| (s.text.as_str(), s.temperature))
        .collect();
    assert_eq!(got, vec![("a", 0.0), ("b", 0.2), (" c", 0.0)]);
}

#[test]
fn runaway_is_a_full_decoder_or_far_more_tokens_than_speech() {
    use super::fallback::runaway;
    // 30 s of fast speech with timestamps: about 150 tokens.
    assert!(!runaway(150, 4, 30.0));
    assert!(runaway(400, 4, 30.0), "13 tokens a second");
    assert!(runaway(444, 3, 60.0), "the decoder is full");
    assert!(!runaway(10, 4, 0.5), "a short window counts as a second");
    assert!(runaway(13, 4, 0.5));
}

#[test]
fn text_only_long_form_with_vad_decodes_without_timestamps() {
    // Long speech with VAD: untimed windows, one segment each. A short
    // clip, and a long one without VAD (its 30 s windows may cut a word,
    // which only a timed window's continuation recovers), keep timestamps.
    let speech = long_speech();
    let flat = vec![0.01f32; SR * 40];
    let short = vec![0.01f32; SR * 20];
    let with_vad = DecodeOptions {
        text_only: true,
        vad_filter: true,
        ..DecodeOptions::default()
    };
    let no_vad = DecodeOptions {
        vad_filter: false,
        ..with_vad.clone()
    };
    let mut untimed = with_vad.clone();
    untimed.without_timestamps = true;
    let chunks =
        vad::speech_timestamps(&speech, &super::batched::window_vad_options(&untimed, true));
    let windows = super::merge_chunks(&chunks, 30 * SR).len();
    assert!(windows >= 2, "{chunks:?}");
    let mut gens: Vec<_> = (0..windows).map(|_| gen(vec![0], -0.1, 0.0)).collect();
    gens.extend((0..3).map(|_| gen(vec![ts(0.0), 1, ts(1.0)], -0.1, 0.0)));
    let mut p = pipeline(gens);
    let (results, _) = many(
        &mut p,
        &[
            item(&speech, &with_vad),
            item(&flat, &no_vad),
            item(&short, &no_vad),
        ],
        16,
    );
    // The untimed windows cannot share a call with timed ones.
    assert_eq!(*p.backend.generate_batches.borrow(), vec![windows, 3]);
    let prompts = p.backend.prompts.borrow();
    let notimestamps = ["<|startoftranscript|>", "<|notimestamps|>"];
    assert!(
        prompts[..windows].iter().all(|p| p == &notimestamps),
        "{prompts:?}"
    );
    assert!(
        prompts[windows..]
            .iter()
            .all(|p| p == &["<|startoftranscript|>"]),
        "{prompts:?}"
    );
    let long = results[0].as_ref().unwrap();
    assert_eq!(long.segments.len(), windows, "a segment per window");
    assert_eq!(long.text(), "a".repeat(windows));
    assert_eq!(results[1].as_ref().unwrap().segments.len(), 2);
    assert_eq!(results[2].as_ref().unwrap().text(), "b");
}

#[test]
fn untimed_long_form_cuts_speech_at_short_pauses() {
    let opts = DecodeOptions {
        vad_filter: true,
        without_timestamps: true,
        ..DecodeOptions::default()
    };
    let untimed = super::batched::window_vad_options(&opts, true);
    assert_eq!(
        untimed.min_silence_duration_ms,
        super::batched::UNTIMED_MIN_SILENCE_MS
    );
    assert_eq!(untimed.max_speech_duration_s, Some(30.0));
    // A shorter setting is kept; one window of audio and timed decoding
    // keep the request's 2 s.
    let mut shorter = opts.clone();
    shorter.vad.min_silence_duration_ms = 100;
    assert_eq!(
        super::batched::window_vad_options(&shorter, true).min_silence_duration_ms,
        100
    );
    assert_eq!(
        super::batched::window_vad_options(&opts, false).min_silence_duration_ms,
        2000
    );
    let timed = DecodeOptions {
        without_timestamps: false,
        ..opts
    };
    assert_eq!(
        super::batched::window_vad_options(&timed, true).min_silence_duration_ms,
        2000
    );
}

#[test]
fn silent_windows_give_no_segment_and_no_fallback() {
    let samples = vec![0.01f32; SR * 50];
    let gens = vec![
        gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.9),
        gen(vec![ts(0.0), 1, ts(1.0)], -0.1, 0.0),
    ];
    let mut p = pipeline(gens);
    let opts = DecodeOptions::default();
    let (results, progress) = many(&mut p, &[item(&samples, &opts)], 8);
    let t = results.into_iter().next().unwrap().unwrap();
    assert_eq!(t.text(), "b");
    assert!(near(t.segments[0].start, 30.0));
    assert_eq!(*p.backend.generate_batches.borrow(), vec![2]);
    assert_eq!(progress.len(), 2);
    assert!(progress[0].3.is_empty());
}

/// `hello.wav` eight times between pauses of 5 s or more: about 40 s of
/// speech, so two windows after VAD.
fn long_speech() -> Vec<f32> {
    let hello = speech_between_silences();
    let mut samples = Vec::new();
    for _ in 0..4 {
        samples.extend_from_slice(&hello);
    }
    samples
}

#[test]
fn with_vad_windows_are_merged_speech_chunks_and_times_are_restored() {
    let samples = long_speech();
    let opts = DecodeOptions {
        vad_filter: true,
        ..DecodeOptions::default()
    };
    let mut capped = opts.vad.clone();
    capped.max_speech_duration_s = Some(30.0);
    let chunks = vad::speech_timestamps(&samples, &capped);
    let windows = super::merge_chunks(&chunks, 30 * SR);
    assert!(windows.len() >= 2, "{chunks:?} -> {windows:?}");
    let gens = (0..windows.len())
        .map(|_| gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0))
        .collect();
    let mut p = pipeline(gens);
    let (results, progress) = many(&mut p, &[item(&samples, &opts)], 8);
    let t = results.into_iter().next().unwrap().unwrap();
    assert_eq!(*p.backend.generate_batches.borrow(), vec![windows.len()]);
    assert_eq!(t.segments.len(), windows.len());
    // Each window starts at a chunk's start: its segment starts there in
    // the original timeline.
    let mut offset = 0usize;
    let mut starts = Vec::new();
    for c in &chunks {
        if windows.iter().any(|w| w.start == offset) {
            starts.push(c.start as f64 / SR as f64);
        }
        offset += c.end - c.start;
    }
    for (s, want) in t.segments.iter().zip(&starts) {
        assert!(near(s.start, *want), "{} vs {want}", s.start);
        assert!(near(s.end, want + 1.0), "{} vs {}", s.end, want + 1.0);
    }
    let duration = samples.len() as f32 / SR as f32;
    assert!((t.duration_secs - duration).abs() < 1e-3);
    let (_, last, total, _) = progress.last().unwrap();
    assert_eq!(last, total);
    assert!(progress.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(t.timings.phases[0].name, "vad");
}

#[test]
fn vad_on_silence_gives_an_empty_transcript() {
    let samples = vec![0.0f32; SR * 40];
    let opts = DecodeOptions {
        vad_filter: true,
        ..DecodeOptions::default()
    };
    let mut p = pipeline(vec![]);
    let (results, progress) = many(&mut p, &[item(&samples, &opts)], 8);
    let t = results.into_iter().next().unwrap().unwrap();
    assert!(t.segments.is_empty());
    assert!(p.backend.generate_batches.borrow().is_empty());
    assert_eq!(progress, vec![(0, 40.0, 40.0, vec![])]);
}

#[test]
fn the_windows_of_several_clips_share_calls_and_each_gets_its_own() {
    let a = vec![0.01f32; SR * 40];
    let b = vec![0.01f32; SR * 10];
    let opts = DecodeOptions::default();
    let gens = vec![
        gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0),
        gen(vec![ts(0.0), 1, ts(1.0)], -0.1, 0.0),
        gen(vec![ts(0.0), 2, ts(1.0)], -0.1, 0.0),
    ];
    let mut p = pipeline(gens);
    let (results, progress) = many(&mut p, &[item(&a, &opts), item(&b, &opts)], 8);
    assert_eq!(*p.backend.generate_batches.borrow(), vec![3]);
    let texts: Vec<String> = results.iter().map(|r| r.as_ref().unwrap().text()).collect();
    assert_eq!(texts, vec!["ab", "c"]);
    assert!((results[1].as_ref().unwrap().duration_secs - 10.0).abs() < 1e-3);
    let per_item: Vec<usize> = progress.iter().map(|p| p.0).collect();
    assert_eq!(per_item, vec![0, 0, 1]);
}

#[test]
fn a_bad_item_fails_alone() {
    let good = vec![0.01f32; SR * 35];
    let nan = vec![f32::NAN; SR];
    let opts = DecodeOptions::default();
    let bad_opts = DecodeOptions {
        beam_size: 0,
        ..DecodeOptions::default()
    };
    let too_big = DecodeOptions {
        batch_size: asr_ipc::MAX_BATCH_SIZE + 1,
        ..DecodeOptions::default()
    };
    let gens = (0..4)
        .map(|_| gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0))
        .collect();
    let mut p = pipeline(gens);
    let items = [
        item(&good, &opts),
        item(&[], &opts),
        item(&nan, &opts),
        item(&good, &bad_opts),
        item(&good, &too_big),
        item(&good, &opts),
    ];
    let (results, _) = many(&mut p, &items, 8);
    assert_eq!(results.len(), 6);
    assert_eq!(results[0].as_ref().unwrap().text(), "aa");
    assert!(matches!(results[1], Err(WorkerError::InvalidAudio(_))));
    assert!(matches!(results[2], Err(WorkerError::InvalidAudio(_))));
    assert!(matches!(results[3], Err(WorkerError::InvalidOptions(_))));
    assert!(matches!(&results[4], Err(WorkerError::InvalidOptions(m)) if m.contains("batch_size")));
    assert_eq!(results[5].as_ref().unwrap().text(), "aa");
    assert_eq!(*p.backend.generate_batches.borrow(), vec![4]);
}

#[test]
fn an_engine_error_fails_only_the_clips_of_that_call() {
    let a = vec![0.01f32; SR * 10];
    let opts = DecodeOptions::default();
    let prompted = DecodeOptions {
        initial_prompt: Some("a".into()),
        ..DecodeOptions::default()
    };
    // Different prompt shapes: two calls. The script has one generation,
    // so the second call fails.
    let mut p = pipeline(vec![gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0)]);
    let (results, _) = many(&mut p, &[item(&a, &opts), item(&a, &prompted)], 8);
    assert_eq!(results[0].as_ref().unwrap().text(), "a");
    assert!(matches!(results[1], Err(WorkerError::Engine(_))));
    // The initial prompt is in the prompt of every window of its clip.
    let prompts = p.backend.prompts.borrow();
    assert_eq!(prompts[1][0], "<|startofprev|>");
    assert_eq!(*p.backend.generate_batches.borrow(), vec![1, 1]);
}

#[test]
fn a_cancelled_clip_is_dropped_from_later_calls() {
    let a = vec![0.01f32; SR * 90];
    let b = vec![0.01f32; SR * 60];
    let opts = DecodeOptions::default();
    let cancel_a = AtomicBool::new(false);
    let gens = (0..5)
        .map(|_| gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0))
        .collect();
    let mut p = pipeline(gens);
    let items = [
        BatchItem {
            samples: &a,
            opts: &opts,
            cancel: Some(&cancel_a),
        },
        item(&b, &opts),
    ];
    let results = p.transcribe_many(&items, 1, &mut |i, _, _, _| {
        if i == 0 {
            cancel_a.store(true, Ordering::Release);
        }
    });
    assert!(matches!(results[0], Err(WorkerError::Cancelled)));
    assert_eq!(results[1].as_ref().unwrap().segments.len(), 2);
    // a's first window, then b's two: a's other windows never ran.
    assert_eq!(*p.backend.generate_batches.borrow(), vec![1, 1, 1]);

    // Cancelled before anything: never decoded.
    let cancelled = AtomicBool::new(true);
    let mut p = pipeline(vec![]);
    let items = [BatchItem {
        samples: &a,
        opts: &opts,
        cancel: Some(&cancelled),
    }];
    let results = p.transcribe_many(&items, 8, &mut |_, _, _, _| {});
    assert!(matches!(results[0], Err(WorkerError::Cancelled)));
    assert!(p.backend.encode_batches.borrow().is_empty());
}

#[test]
fn word_timestamps_align_each_call_once_with_each_window_frames() {
    let samples = vec![0.01f32; SR * 45];
    let opts = DecodeOptions {
        word_timestamps: true,
        ..DecodeOptions::default()
    };
    let gens = vec![
        gen(vec![ts(0.0), 0, 1, ts(1.0)], -0.1, 0.0),
        gen(vec![ts(0.0), 2, ts(1.0)], -0.1, 0.0),
    ];
    let mut p = pipeline(gens);
    let (results, _) = many(&mut p, &[item(&samples, &opts)], 8);
    assert_eq!(results[0].as_ref().unwrap().segments.len(), 2);
    assert_eq!(
        *p.backend.align_batches.borrow(),
        vec![vec![(2, 3000), (1, 1500)]]
    );
}

#[test]
fn transcribe_takes_the_batched_path_only_for_long_audio() {
    let opts = DecodeOptions {
        batch_size: 8,
        ..DecodeOptions::default()
    };
    // Under one window: the seek loop, as before.
    let short = vec![0.01f32; SR * 20];
    let mut p = pipeline(vec![gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0)]);
    p.transcribe(&short, &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(*p.backend.encodes.borrow(), 1);
    assert!(p.backend.generate_batches.borrow().is_empty());
    // Longer: batched, and the pipeline's cancel flag applies.
    let long = vec![0.01f32; SR * 50];
    let gens = (0..2)
        .map(|_| gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0))
        .collect();
    let mut p = pipeline(gens);
    let mut progress = Vec::new();
    let t = p
        .transcribe(&long, &opts, &mut |d, total, _| progress.push((d, total)))
        .unwrap();
    assert_eq!(t.text(), "aa");
    assert_eq!(*p.backend.generate_batches.borrow(), vec![2]);
    assert_eq!(progress, vec![(30.0, 50.0), (50.0, 50.0)]);
    let mut p = pipeline(vec![]);
    p.cancel.store(true, Ordering::Release);
    assert!(matches!(
        p.transcribe(&long, &opts, &mut |_, _, _| {}),
        Err(WorkerError::Cancelled)
    ));
}

#[test]
fn multilingual_clips_detect_their_language_in_one_batched_call() {
    let a = vec![0.01f32; SR * 40];
    let b = vec![0.01f32; SR * 40];
    let opts = DecodeOptions::default();
    let gens = (0..4)
        .map(|_| gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0))
        .collect();
    let mut p = pipeline(gens);
    p.multilingual = true;
    p.backend
        .detections
        .borrow_mut()
        .extend([("<|en|>".to_string(), 0.95), ("<|en|>".to_string(), 0.7)]);
    let (results, _) = many(&mut p, &[item(&a, &opts), item(&b, &opts)], 8);
    let probs: Vec<f32> = results
        .iter()
        .map(|r| r.as_ref().unwrap().language_probability)
        .collect();
    assert_eq!(probs, vec![0.95, 0.7]);
    // One detection call (both first windows), then one decode call.
    assert_eq!(*p.backend.encode_batches.borrow(), vec![2, 4]);
    let prompts = p.backend.prompts.borrow();
    assert!(prompts
        .iter()
        .all(|p| p == &["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]));
}
