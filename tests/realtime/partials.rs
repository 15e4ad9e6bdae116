//! Partial results: provisional deltas and the final transcript.

use super::*;
/// Partial results: while an utterance is open, stable text arrives as
/// `delta` events before `completed`, and the deltas of an item,
/// concatenated, are a prefix of its final transcript.
#[tokio::test]
async fn deltas_are_stable_text_that_the_final_transcript_starts_with() {
    let svc = Service::start(&["--realtime-partial-interval-ms", "400"]);
    let mut ws = connect(&svc).await;
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    send(
        &mut ws,
        json!({"type": "session.update", "session": {"audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 1500}}}}}),
    )
    .await;
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    let mut audio = silence(0.5, 16_000);
    audio.extend(pcm("clip10.wav", 16_000));
    audio.extend(silence(2.5, 16_000));
    let events = stream_realtime(ws, audio, 1_600, Duration::from_secs(120)).await;
    let deltas = events
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.delta")
        .count();
    assert!(deltas > 0, "no partial results: {:?}", types(&events));
    for done in events
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
    {
        let item = &done["item_id"];
        let mut stable = String::new();
        let mut seen_completed = false;
        for e in events.iter().filter(|e| &e["item_id"] == item) {
            match e["type"].as_str().unwrap() {
                "conversation.item.input_audio_transcription.delta" => {
                    assert!(!seen_completed, "a delta after completed");
                    stable.push_str(e["delta"].as_str().unwrap());
                }
                "conversation.item.input_audio_transcription.completed" => seen_completed = true,
                _ => {}
            }
        }
        let transcript = done["transcript"].as_str().unwrap();
        assert!(
            transcript.starts_with(&stable),
            "{stable:?} is not a prefix of {transcript:?}"
        );
    }
    let all: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .map(|e| e["transcript"].as_str().unwrap())
        .collect();
    assert_words(
        &all.join(" "),
        &["quick", "brown", "fox", "dog", "speech", "recognition"],
    );
}
