//! Speech made on the spot with espeak-ng (installed by `make setup`, as
//! for the fixtures): clips with words chosen by the test.

use std::process::Command;

/// A WAV of `text` spoken by espeak-ng (en-us, 140 words per minute, 40 ms
/// between words, as the fixtures; 22.05 kHz mono, which the node
/// resamples).
pub fn speak(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let wav = dir.path().join("speech.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "140", "-g", "4", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng must be installed (make setup)");
    assert!(status.success(), "espeak-ng failed: {status}");
    std::fs::read(&wav).expect("espeak-ng's WAV")
}
