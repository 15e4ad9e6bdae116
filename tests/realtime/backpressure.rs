//! Backpressure and failures: a full queue, a client that leaves, the
//! session limit, a worker crash.

use super::*;
/// A full queue is an `error` event for that utterance with a retry hint
/// (never a silent drop or a hang), and the session keeps working.
#[tokio::test]
async fn a_full_queue_is_an_error_event_with_a_retry_hint() {
    let svc = Service::start(&[FI, "--queue-capacity", "1"]);
    // One upload decoding (slowly), one waiting: the queue is full.
    let a = svc.spawn_transcribe("hello.wav", &[SLOW]);
    svc.wait_health("one decoding", Duration::from_secs(10), |h| {
        h["in_flight"] == 1
    })
    .await;
    let b = svc.spawn_transcribe("hello.wav", &[SLOW]);
    svc.wait_health("one waiting", Duration::from_secs(10), |h| {
        h["queue_depth"] == 1
    })
    .await;

    let mut ws = connect(&svc).await;
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    let committed = commit_clip(&mut ws, "hello.wav").await;
    let error = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["code"], "queue_full");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(error["error"]["item_id"], committed["item_id"]);
    assert!(
        error["error"]["retry_after_ms"].as_u64().unwrap() >= 1000,
        "{error}"
    );
    let failed = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        failed["type"],
        "conversation.item.input_audio_transcription.failed"
    );
    assert_eq!(failed["item_id"], committed["item_id"]);

    // Once the queue has room, the same session transcribes again.
    assert_eq!(a.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200);
    commit_clip(&mut ws, "hello.wav").await;
    let done = events_until(
        &mut ws,
        "conversation.item.input_audio_transcription.completed",
        Duration::from_secs(60),
    )
    .await;
    assert_words(
        done.last().unwrap()["transcript"].as_str().unwrap(),
        &["hello", "world"],
    );
}

/// A client that disconnects: its session actor stops (active sessions
/// back to 0) and its queued utterance is never decoded. One session more
/// than `--realtime-max-sessions` is refused at the upgrade with 429 and
/// `Retry-After`.
#[tokio::test]
async fn a_disconnect_stops_the_session_and_its_queued_utterance_is_not_decoded() {
    let svc = Service::start(&[FI, "--realtime-max-sessions", "1"]);
    let upload = svc.spawn_transcribe("hello.wav", &[SLOW]);
    svc.wait_health("one decoding", Duration::from_secs(10), |h| {
        h["in_flight"] == 1
    })
    .await;

    let mut ws = connect(&svc).await;
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    commit_clip(&mut ws, "clip10.wav").await;
    svc.wait_health("the utterance waits", Duration::from_secs(5), |h| {
        h["queue_depth"] == 1
    })
    .await;
    assert_eq!(metric(&svc, "asr_realtime_sessions_active").await, 1.0);

    // The only session slot is taken.
    let url = format!(
        "{}/v1/realtime?intent=transcription",
        svc.base.replace("http", "ws")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
            assert_eq!(res.headers()["retry-after"], "5");
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_sessions");
        }
        other => panic!("expected a 429, got {other:?}"),
    }

    drop(ws); // the client goes away without a close frame
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&svc, "asr_realtime_sessions_active").await != 0.0 {
        assert!(Instant::now() < deadline, "the session actor did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upload.await.unwrap().status, 200);
    svc.wait_health("idle", Duration::from_secs(10), |h| {
        h["queue_depth"] == 0 && h["in_flight"] == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&svc, "asr_decode_seconds_count").await,
        1.0,
        "only the upload was decoded"
    );
    assert_eq!(
        metric(
            &svc,
            "asr_realtime_utterances_total{outcome=\"session_closed\"}"
        )
        .await,
        1.0
    );
    assert!(
        svc.logs()
            .contains("client gone, dropping job before decode"),
        "{}",
        svc.logs()
    );
}

/// The worker crashes on an utterance: it is retried once, then the
/// utterance gets an error event; the session goes on and its next
/// utterance is transcribed by the restarted worker.
#[tokio::test]
async fn a_worker_crash_mid_utterance_is_retried_once_then_an_error_event_and_the_session_survives()
{
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let svc = Service::start(&[FI]);
    let url = format!(
        "{}/v1/realtime?intent=transcription",
        svc.base.replace("http", "ws")
    );
    let mut req = url.into_client_request().unwrap();
    // Test hook: the session's first utterance crashes the worker.
    req.headers_mut()
        .insert("x-fault-inject", "crash".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    let committed = commit_clip(&mut ws, "hello.wav").await;
    let error = next_event(&mut ws, Duration::from_secs(60)).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["item_id"], committed["item_id"]);
    assert!(
        ["worker_crashed", "input_quarantined"].contains(&error["error"]["code"].as_str().unwrap()),
        "{error}"
    );
    let failed = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        failed["type"],
        "conversation.item.input_audio_transcription.failed"
    );
    svc.wait_ready(Duration::from_secs(30)).await;
    let (_, health) = svc.get_json("/health").await;
    assert_eq!(
        health["worker_restarts"], 2,
        "crashed, retried once, crashed: {health}"
    );
    commit_clip(&mut ws, "clip10.wav").await;
    let done = events_until(
        &mut ws,
        "conversation.item.input_audio_transcription.completed",
        Duration::from_secs(60),
    )
    .await;
    assert_words(
        done.last().unwrap()["transcript"].as_str().unwrap(),
        &["quick", "brown", "fox"],
    );
}

/// A client that sends but stops reading: once its events fill
/// `--realtime-send-buffer-events`, the session is closed (the actor stops)
/// instead of buffering without bound.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_a_bounded_send_buffer() {
    let svc = Service::start(&["--realtime-send-buffer-events", "8"]);
    let ws = connect(&svc).await;
    let (mut tx, rx) = ws.split(); // `rx` is never read
                                   // Every unknown event is answered with an error event (~300 bytes);
                                   // enough of them fill the socket buffers, then the session's own.
    let flood = tokio::spawn(async move {
        for _ in 0..400_000 {
            if tx.send(Message::text(r#"{"type":"x"}"#)).await.is_err() {
                break;
            }
        }
    });
    // The session ends while the client still has not read a thing.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&svc, "asr_realtime_sessions_active").await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the session was not closed: {}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        svc.logged("client is not reading its events").await,
        "closed for another reason: {}",
        svc.logs()
    );
    flood.abort();
    drop(rx);
}

/// A session that reaches `--realtime-max-session-secs` is ended with a
/// `session_expired` error event and a close, even while it streams.
#[tokio::test]
async fn a_session_past_its_maximum_length_is_closed_with_an_error_event() {
    let svc = Service::start(&["--realtime-max-session-secs", "1.5"]);
    let mut ws = connect(&svc).await;
    next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    let started = Instant::now();
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        // Busy, not idle: 100 ms of silence every 100 ms.
        while tx.send(append(&silence(0.1, 24_000))).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let e = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => break serde_json::from_str::<Value>(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no event: {other:?}"),
        }
    };
    assert_eq!(e["error"]["code"], "session_expired", "{e}");
    assert!(started.elapsed() >= Duration::from_millis(1_400));
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.next()).await;
    assert!(
        matches!(closed, Ok(Some(Ok(Message::Close(_)))) | Ok(None)),
        "{closed:?}"
    );
    sender.abort();
}
