//! What browsers and phones record, through the whole path on the real
//! model: WebM/Opus (every browser's `MediaRecorder`), Ogg/Opus and M4A
//! (AAC), made by ffmpeg from the espeak-ng clip (scripts/make-fixtures.sh);
//! and a codec the node does not decode, refused 415 by name.

mod common;

use common::*;

/// The words tiny.en hears right in clip10 (see tests/transcribe.rs).
const CLIP10_WORDS: &[&str] = &["fox", "lazy dog", "speech recognition", "written text"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webm_opus_ogg_opus_and_m4a_uploads_come_back_with_the_spoken_words() {
    let svc = Service::start(&["--queue-capacity", "8"]);
    for name in ["clip10.webm", "clip10.opus", "clip10.m4a"] {
        let a = svc.transcribe(&fixture(name), &[]).await;
        assert_eq!(a.status, 200, "{name}: {}", a.text);
        let text = a.transcript();
        let heard = CLIP10_WORDS.iter().filter(|w| text.contains(*w)).count();
        assert!(
            heard >= 3,
            "{name}: only {heard} of {CLIP10_WORDS:?} in {text:?}"
        );
    }
    // A codec outside the list: 415 naming it.
    let ac3 = repo().join("tests/fixtures/audio/tone440_48k_mono_ac3.mka");
    let a = svc.transcribe(&ac3, &[]).await;
    assert_eq!(a.status, 415, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "unsupported_audio");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("AC-3"));
}
