//! Transcription through the whole path (HTTP → actors → worker-proc →
//! CTranslate2) on the real model, with real espeak-ng speech.

mod common;

use std::sync::LazyLock;

use common::*;

/// One service for this file; a large queue so parallel tests never see 429.
static SVC: LazyLock<Service> = LazyLock::new(|| Service::start(&["--queue-capacity", "32"]));

// tiny.en hears "quick round fox" on this synthetic voice, as faster-whisper does at
// beam 1; assert on the words it gets right at every beam size and format.
const CLIP10_WORDS: &[&str] = &["fox", "lazy dog", "speech recognition", "written text"];

#[tokio::test]
async fn wav_flac_mp3_and_ogg_uploads_come_back_with_the_spoken_words() {
    for name in [
        "clip10.wav",
        "clip10_44k_stereo.wav",
        "clip10.flac",
        "clip10.mp3",
        "clip10.ogg",
    ] {
        let a = SVC.transcribe(&fixture(name), &[]).await;
        let text = a.transcript();
        // A window may fall back to temperature sampling (random), so one key
        // word may be misheard on a lossy format: require 3 of the 4.
        let heard = CLIP10_WORDS.iter().filter(|w| text.contains(*w)).count();
        assert!(
            heard >= 3,
            "{name}: only {heard} of {CLIP10_WORDS:?} in {text:?}"
        );
        assert!(a.headers.contains_key("x-job-id"), "{name}: job id header");
    }
}

#[tokio::test]
async fn text_srt_vtt_and_verbose_json_are_well_formed() {
    let clip = fixture("clip10.wav");

    let a = SVC.transcribe(&clip, &[("response_format", "text")]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_words(&a.text, CLIP10_WORDS);

    let a = SVC.transcribe(&clip, &[("response_format", "srt")]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let srt = cues(&a.text, ',', true);
    assert!(!srt.is_empty(), "srt has cues: {}", a.text);
    assert!(
        srt.windows(2).all(|w| w[0].0 <= w[1].0),
        "srt cues in time order"
    );
    let clip_secs = fixture_secs("clip10.wav");
    assert!(
        srt.last().unwrap().1 <= clip_secs + 0.5,
        "cues end within the {clip_secs} s clip: {srt:?}"
    );
    assert_words(
        &srt.iter()
            .map(|c| c.2.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        CLIP10_WORDS,
    );

    let a = SVC.transcribe(&clip, &[("response_format", "vtt")]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a
        .text
        .strip_prefix("WEBVTT")
        .unwrap_or_else(|| panic!("vtt starts with WEBVTT: {}", a.text));
    let vtt = cues(body, '.', false);
    assert_eq!(vtt.len(), srt.len(), "same cues in srt and vtt");

    let a = SVC
        .transcribe(&clip, &[("response_format", "verbose_json")])
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["task"], "transcribe");
    assert_eq!(v["language"], "english");
    let duration = v["duration"].as_f64().unwrap();
    assert!(
        (duration - clip_secs).abs() < 0.1,
        "duration {duration} vs {clip_secs}"
    );
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty());
    let mut prev_end = 0.0;
    for s in segs {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(
            start >= prev_end - 0.01 && start <= end && end <= duration + 0.5,
            "segment times {s}"
        );
        prev_end = end;
    }
}

fn truncated_wav() -> Vec<u8> {
    let full = std::fs::read(fixture("clip10.wav")).unwrap();
    full[..30].to_vec() // inside the RIFF/fmt header
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_service_keeps_serving() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for (what, bytes, name) in [
        ("garbage", garbage, "noise.wav"),
        ("truncated wav", truncated_wav(), "cut.wav"),
        ("zero-length", vec![], "empty.wav"),
    ] {
        let a = SVC.transcribe_bytes(bytes, name, &[], &[]).await;
        assert!(
            (400..500).contains(&a.status),
            "{what}: expected 4xx, got {} {}",
            a.status,
            a.text
        );
        let err = &a.json()["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: error message in {}",
            a.text
        );
        assert!(
            err["code"].as_str().is_some(),
            "{what}: error code in {}",
            a.text
        );
    }

    // Silence is valid audio: an empty (or near-empty) transcript, not an error.
    let a = SVC.transcribe(&fixture("silence.wav"), &[]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let text = a.json()["text"].as_str().unwrap().trim().to_string();
    assert!(
        text.split_whitespace().count() <= 2,
        "silence transcribed as {text:?}"
    );

    // Missing file part and bad parameters are 400s too.
    let a = SVC
        .transcribe(&fixture("hello.wav"), &[("response_format", "yaml")])
        .await;
    assert_eq!(a.status, 400, "{}", a.text);

    // And the next real request still works.
    let text = SVC
        .transcribe(&fixture("hello.wav"), &[])
        .await
        .transcript();
    assert_words(&text, &["hello", "world"]);
    let (status, health) = SVC.get_json("/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        health["worker_restarts"], 0,
        "bad input never crashed the worker: {health}"
    );
}
