use super::*;
use serde_json::json;

fn ok(text: &str) -> ClientEvent {
    parse(text, &SessionConfig::default(), 1024).expect("parses")
}

fn code(text: &str) -> Code {
    parse(text, &SessionConfig::default(), 1024)
        .unwrap_err()
        .0
        .code
}

#[test]
fn ga_and_beta_session_updates_set_rate_language_prompt_and_turn_detection() {
    let ga = ok(
        r#"{"type":"session.update","event_id":"e1","session":{"type":"transcription",
        "audio":{"input":{"format":{"type":"audio/pcm","rate":16000},
        "transcription":{"model":"whisper-1","language":"English","prompt":"names"},
        "turn_detection":{"type":"server_vad","threshold":0.6,"silence_duration_ms":700}}}}}"#,
    );
    let ClientEvent::SessionUpdate {
        config,
        beta,
        event_id,
    } = ga
    else {
        panic!()
    };
    assert_eq!(
        (config.rate, beta, event_id.as_deref()),
        (16_000, false, Some("e1"))
    );
    assert_eq!(config.language.as_deref(), Some("en"));
    assert_eq!(config.prompt.as_deref(), Some("names"));
    assert_eq!(
        config.turn,
        TurnDetection::ServerVad(VadParams {
            threshold: 0.6,
            prefix_padding_ms: 300,
            silence_duration_ms: 700
        })
    );
    let beta = ok(
        r#"{"type":"transcription_session.update","session":{"input_audio_format":"pcm16",
        "input_audio_transcription":{"model":"gpt-4o-transcribe"},"turn_detection":null}}"#,
    );
    let ClientEvent::SessionUpdate { config, beta, .. } = beta else {
        panic!()
    };
    assert!(beta);
    assert_eq!((config.rate, config.turn), (24_000, TurnDetection::None));
    assert_eq!(config.model, "gpt-4o-transcribe");
}

#[test]
fn appends_decode_base64_pcm16() {
    let ClientEvent::Append { pcm, .. } =
        ok(r#"{"type":"input_audio_buffer.append","audio":"AQACAA=="}"#)
    else {
        panic!()
    };
    assert_eq!(pcm, [1, 0, 2, 0]);
}

#[test]
fn every_bad_input_has_its_own_stable_code() {
    assert_eq!(code("{not json"), Code::InvalidEvent);
    assert_eq!(code(r#"{"no":"type"}"#), Code::InvalidEvent);
    assert_eq!(code(r#"{"type":"response.create"}"#), Code::UnknownEvent);
    assert_eq!(
        code(r#"{"type":"input_audio_buffer.append"}"#),
        Code::InvalidEvent
    );
    assert_eq!(
        code(r#"{"type":"input_audio_buffer.append","audio":"@@@"}"#),
        Code::InvalidAudioChunk
    );
    assert_eq!(
        code(r#"{"type":"input_audio_buffer.append","audio":"AQAC"}"#),
        Code::InvalidAudioChunk,
        "3 bytes"
    );
    let big = format!(
        r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
        "A".repeat(4000)
    );
    assert_eq!(code(&big), Code::AppendTooLarge);
    assert_eq!(
        code(r#"{"type":"session.update","session":{"input_audio_format":"g711_ulaw"}}"#),
        Code::UnsupportedAudio
    );
    assert_eq!(
        code(
            r#"{"type":"session.update","session":{"audio":{"input":{"format":{"type":"audio/pcm","rate":8000}}}}}"#
        ),
        Code::UnsupportedAudio
    );
    assert_eq!(
        code(r#"{"type":"session.update","session":{"turn_detection":{"type":"semantic_vad"}}}"#),
        Code::InvalidParameter
    );
    assert_eq!(
        code(r#"{"type":"session.update","session":{"turn_detection":{"threshold":2}}}"#),
        Code::InvalidParameter
    );
    assert_eq!(
        code(
            r#"{"type":"session.update","session":{"input_audio_transcription":{"language":"klingon"}}}"#
        ),
        Code::InvalidParameter
    );
}

#[test]
fn the_client_event_id_comes_back_in_the_error() {
    let (e, id) = parse(
        r#"{"type":"nope","event_id":"c7"}"#,
        &SessionConfig::default(),
        10,
    )
    .unwrap_err();
    let json: Value = serde_json::from_str(
        &ServerEvent::Error {
            error: e,
            client_event_id: id,
            item_id: None,
            retry_after_ms: None,
        }
        .to_json("event_1"),
    )
    .unwrap();
    assert_eq!(json["type"], "error");
    assert_eq!(json["event_id"], "event_1");
    assert_eq!(json["error"]["code"], "unknown_event");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(json["error"]["event_id"], "c7");
    assert_eq!(json["error"]["param"], "type");
}

#[test]
fn completed_carries_item_content_index_transcript_and_duration_usage() {
    let json: Value = serde_json::from_str(
        &ServerEvent::Completed {
            item_id: "item_1".into(),
            transcript: "Hi.".into(),
            audio_secs: 1.23456,
            timing: (2.0, 30.4),
        }
        .to_json("event_9"),
    )
    .unwrap();
    assert_eq!(
        json["type"],
        "conversation.item.input_audio_transcription.completed"
    );
    assert_eq!(json["item_id"], "item_1");
    assert_eq!(json["content_index"], 0);
    assert_eq!(json["transcript"], "Hi.");
    assert_eq!(json["usage"], json!({"type": "duration", "seconds": 1.235}));
    assert_eq!(
        json["x_timing"],
        json!({"queue_wait_ms": 2.0, "decode_ms": 30.0})
    );
}
