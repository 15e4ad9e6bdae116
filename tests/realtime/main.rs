//! `/v1/realtime`: OpenAI's Realtime transcription protocol over a
//! WebSocket, against the real binary, worker and model.
//!
//! - this file: helpers, and the protocol (streaming with server VAD,
//!   manual commits, bad input);
//! - [`backpressure`]: full queue, disconnect, session limit, worker crash;
//! - [`partials`]: provisional deltas and the final transcript.

mod backpressure;
#[path = "../common/mod.rs"]
mod common;
mod partials;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{assert_words, fixture, Service};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Mono 16-bit samples of a WAV fixture at `rate` (linear interpolation:
/// good enough for speech in a test).
pub fn pcm(name: &str, rate: u32) -> Vec<i16> {
    let mut r = hound::WavReader::open(fixture(name)).unwrap();
    let spec = r.spec();
    let ch = spec.channels as usize;
    let raw: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let mono: Vec<f64> = raw
        .chunks(ch)
        .map(|c| c.iter().map(|&s| f64::from(s)).sum::<f64>() / ch as f64)
        .collect();
    let n = (mono.len() as f64 * f64::from(rate) / f64::from(spec.sample_rate)) as usize;
    (0..n)
        .map(|i| {
            let x = i as f64 * f64::from(spec.sample_rate) / f64::from(rate);
            let (j, f) = (x as usize, x.fract());
            let a = mono[j.min(mono.len() - 1)];
            let b = mono[(j + 1).min(mono.len() - 1)];
            (a + (b - a) * f) as i16
        })
        .collect()
}

pub fn silence(secs: f64, rate: u32) -> Vec<i16> {
    vec![0; (secs * f64::from(rate)) as usize]
}

pub fn append(samples: &[i16]) -> Message {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let audio = base64::engine::general_purpose::STANDARD.encode(bytes);
    Message::text(json!({"type": "input_audio_buffer.append", "audio": audio}).to_string())
}

pub async fn connect(svc: &Service) -> Ws {
    let url = format!(
        "{}/v1/realtime?intent=transcription",
        svc.base.replace("http", "ws")
    );
    let (ws, res) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(res.status(), 101);
    ws
}

pub async fn send(ws: &mut Ws, event: Value) {
    ws.send(Message::text(event.to_string())).await.unwrap();
}

/// The next event (skipping pings), within `within`.
pub async fn next_event(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return None,
        }
    }
}

/// Events until one of type `until` arrived (included), within `within`.
pub async fn events_until(ws: &mut Ws, until: &str, within: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while let Some(e) = next_event(ws, deadline.saturating_duration_since(Instant::now())).await {
        let done = e["type"] == until;
        out.push(e);
        if done {
            return out;
        }
    }
    panic!("no {until} within {within:?}; got {out:#?}");
}

pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

pub async fn metric(svc: &Service, name: &str) -> f64 {
    let text = common::client()
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Opens a manual-commit session at 16 kHz and commits `clip`; returns the
/// `committed` event.
/// Streams `audio` in chunks of `chunk` samples (100 ms) at real-time
/// pace, then an empty `session.update` as an end marker (the session
/// handles events in order), and returns every event until the marker's
/// `session.updated` came and every speech turn was committed and answered.
pub async fn stream_realtime(
    ws: Ws,
    audio: Vec<i16>,
    chunk: usize,
    within: Duration,
) -> Vec<Value> {
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        for (i, c) in audio.chunks(chunk).enumerate() {
            tx.send(append(c)).await.unwrap();
            let due = start + Duration::from_millis(100 * (i as u64 + 1));
            tokio::time::sleep_until(due.into()).await;
        }
        let end = json!({"type": "session.update", "session": {}});
        tx.send(Message::text(end.to_string())).await.unwrap();
        tx
    });
    let count = |events: &[Value], t: &str| events.iter().filter(|e| e["type"] == t).count();
    let mut events: Vec<Value> = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => events.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => continue,
            other => panic!("stream ended ({other:?}) after {:#?}", types(&events)),
        }
        let committed = count(&events, "input_audio_buffer.committed");
        let answered = count(
            &events,
            "conversation.item.input_audio_transcription.completed",
        ) + count(
            &events,
            "conversation.item.input_audio_transcription.failed",
        );
        if count(&events, "session.updated") > 0
            && count(&events, "input_audio_buffer.speech_started") <= committed
            && answered == committed
        {
            break;
        }
    }
    let _ = sender.await;
    events
}

pub async fn commit_clip(ws: &mut Ws, clip: &str) -> Value {
    send(
        ws,
        json!({"type": "session.update", "session": {"audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": null}}}}),
    )
    .await;
    for chunk in pcm(clip, 16_000).chunks(1_600) {
        ws.send(append(chunk)).await.unwrap();
    }
    send(ws, json!({"type": "input_audio_buffer.commit"})).await;
    events_until(ws, "input_audio_buffer.committed", Duration::from_secs(10))
        .await
        .pop()
        .unwrap()
}

pub const FI: &str = "--enable-fault-injection";
pub const SLOW: (&str, &str) = ("x-fault-inject", "slow:4000");

/// Streams the clip at 24 kHz (OpenAI's rate) in 100 ms chunks at
/// real-time pace with server VAD: speech_started, speech_stopped,
/// committed and a completed transcript with the clip's words, in order.
#[tokio::test]
async fn a_clip_streamed_in_real_time_is_detected_committed_and_transcribed_in_order() {
    let svc = Service::start(&["--realtime-partial-interval-ms", "0"]);
    let mut ws = connect(&svc).await;
    let created = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(created["type"], "session.created");
    assert_eq!(
        created["session"]["audio"]["input"]["format"]["rate"],
        24_000
    );
    send(
        &mut ws,
        json!({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                               "prefix_padding_ms": 300, "silence_duration_ms": 800}}}}}),
    )
    .await;
    let updated = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(updated["type"], "session.updated", "{updated}");
    assert_eq!(
        updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"],
        800
    );

    let mut audio = silence(1.0, 24_000);
    audio.extend(pcm("hello.wav", 24_000));
    audio.extend(silence(2.0, 24_000));
    let events = stream_realtime(ws, audio, 2_400, Duration::from_secs(120)).await;
    let kinds = types(&events);
    assert!(!kinds.contains(&"error"), "{events:#?}");
    let first = |t: &str| {
        kinds
            .iter()
            .position(|k| *k == t)
            .unwrap_or_else(|| panic!("no {t}: {kinds:?}"))
    };
    let (started, stopped, committed, completed) = (
        first("input_audio_buffer.speech_started"),
        first("input_audio_buffer.speech_stopped"),
        first("input_audio_buffer.committed"),
        first("conversation.item.input_audio_transcription.completed"),
    );
    assert!(
        started < stopped && stopped < committed && committed < completed,
        "{kinds:?}"
    );
    let item = &events[started]["item_id"];
    for i in [stopped, committed, completed] {
        assert_eq!(&events[i]["item_id"], item, "one item: {:#?}", events[i]);
    }
    // Speech starts about 1 s in (the leading silence).
    let start_ms = events[started]["audio_start_ms"].as_u64().unwrap();
    assert!(
        (700..=1_600).contains(&start_ms),
        "audio_start_ms {start_ms}"
    );
    assert!(events[stopped]["audio_end_ms"].as_u64().unwrap() > start_ms + 2_000);
    let transcript: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .map(|e| e["transcript"].as_str().unwrap())
        .collect();
    assert_words(
        &transcript.join(" "),
        &["hello", "world", "test", "speech", "recognition"],
    );
    assert_eq!(events[completed]["usage"]["type"], "duration");
    assert!(events[completed]["x_timing"]["decode_ms"].as_f64().unwrap() > 0.0);
    // End of speech → completed is in the latency histogram.
    assert!(metric(&svc, "asr_realtime_final_latency_seconds_count").await >= 1.0);
    assert!(metric(&svc, "asr_realtime_utterances_total{outcome=\"ok\"}").await >= 1.0);
    assert!(events[completed]["usage"]["seconds"].as_f64().unwrap() > 3.0);
}

/// Turn detection off: the client commits two utterances separated by
/// silence; two items, in order, each with its own words.
#[tokio::test]
async fn manual_commits_make_one_item_each_in_order() {
    let svc = Service::start(&[]);
    let mut ws = connect(&svc).await;
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    send(
        &mut ws,
        json!({"type": "transcription_session.update", "session": {"input_audio_format": "pcm16",
               "input_audio_rate": 16000, "turn_detection": null}}),
    )
    .await;
    let updated = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        updated["type"], "transcription_session.updated",
        "{updated}"
    );
    assert_eq!(updated["session"]["turn_detection"], Value::Null);
    for (clip, rate) in [("hello.wav", 16_000), ("clip10.wav", 16_000)] {
        let mut audio = pcm(clip, rate);
        audio.extend(silence(0.5, rate));
        for chunk in audio.chunks(1_600) {
            ws.send(append(chunk)).await.unwrap();
        }
        send(&mut ws, json!({"type": "input_audio_buffer.commit"})).await;
    }
    let mut events = events_until(
        &mut ws,
        "input_audio_buffer.committed",
        Duration::from_secs(10),
    )
    .await;
    for _ in 0..3 {
        let more = events_until(
            &mut ws,
            if events
                .iter()
                .filter(|e| e["type"] == "input_audio_buffer.committed")
                .count()
                < 2
            {
                "input_audio_buffer.committed"
            } else {
                "conversation.item.input_audio_transcription.completed"
            },
            Duration::from_secs(60),
        )
        .await;
        events.extend(more);
        if events
            .iter()
            .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
            .count()
            == 2
        {
            break;
        }
    }
    let committed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "input_audio_buffer.committed")
        .collect();
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .collect();
    assert_eq!((committed.len(), completed.len()), (2, 2), "{events:#?}");
    assert!(
        !types(&events).contains(&"input_audio_buffer.speech_started"),
        "no VAD"
    );
    assert_eq!(committed[1]["previous_item_id"], committed[0]["item_id"]);
    assert_eq!(
        completed[0]["item_id"], committed[0]["item_id"],
        "in commit order"
    );
    assert_eq!(completed[1]["item_id"], committed[1]["item_id"]);
    let first = completed[0]["transcript"].as_str().unwrap();
    let second = completed[1]["transcript"].as_str().unwrap();
    assert_words(first, &["hello", "world", "test"]);
    assert_words(second, &["quick", "brown", "fox", "lazy", "dog"]);
    assert!(!first.to_lowercase().contains("fox") && !second.to_lowercase().contains("hello"));
}

/// Every bad input is an `error` event with its own code, and the session
/// goes on working; an idle session is closed with an error event.
#[tokio::test]
async fn bad_input_gets_error_events_and_the_session_keeps_working() {
    let svc = Service::start(&[
        "--realtime-max-append-bytes",
        "64000",
        "--realtime-idle-timeout-secs",
        "2",
    ]);
    let mut ws = connect(&svc).await;
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    let big = vec![0i16; 40_000]; // 80 kB of PCM > 64 kB
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "invalid_event"),
        (
            Message::text(r#"{"type":"response.create","event_id":"c1"}"#),
            "unknown_event",
        ),
        (
            Message::text(r#"{"type":"input_audio_buffer.append","audio":"%%%"}"#),
            "invalid_audio_chunk",
        ),
        (
            Message::text(r#"{"type":"input_audio_buffer.append","audio":"AQAC"}"#),
            "invalid_audio_chunk",
        ),
        (append(&big), "append_too_large"),
        (
            Message::text(
                r#"{"type":"session.update","session":{"input_audio_format":"g711_ulaw"}}"#,
            ),
            "unsupported_audio",
        ),
        (Message::binary(vec![1u8, 2, 3, 4]), "invalid_event"),
        (
            Message::text(r#"{"type":"input_audio_buffer.commit"}"#),
            "input_audio_buffer_commit_empty",
        ),
    ];
    for (msg, code) in cases {
        ws.send(msg).await.unwrap();
        let e = next_event(&mut ws, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
        assert!(e["error"]["message"].as_str().unwrap().len() > 10);
        assert!(e["error"]["type"].is_string());
    }
    // Still working: turn detection off, one utterance, commit.
    send(
        &mut ws,
        json!({"type": "session.update", "session": {"audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": null}}}}),
    )
    .await;
    assert_eq!(
        next_event(&mut ws, Duration::from_secs(5)).await.unwrap()["type"],
        "session.updated"
    );
    for chunk in pcm("hello.wav", 16_000).chunks(1_600) {
        ws.send(append(chunk)).await.unwrap();
    }
    send(&mut ws, json!({"type": "input_audio_buffer.commit"})).await;
    let events = events_until(
        &mut ws,
        "conversation.item.input_audio_transcription.completed",
        Duration::from_secs(60),
    )
    .await;
    assert_words(
        events.last().unwrap()["transcript"].as_str().unwrap(),
        &["hello", "world"],
    );
    // Idle for 2 s: an error event, then the socket closes.
    let e = next_event(&mut ws, Duration::from_secs(10))
        .await
        .expect("idle error");
    assert_eq!(e["error"]["code"], "session_idle_timeout", "{e}");
    assert!(
        next_event(&mut ws, Duration::from_secs(5)).await.is_none(),
        "closed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&svc, "asr_realtime_sessions_active").await != 0.0 {
        assert!(Instant::now() < deadline, "the session actor did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
