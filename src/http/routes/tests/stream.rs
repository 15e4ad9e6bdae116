//! `stream=true`: segments as Server-Sent Events.

use super::*;

fn segment(id: u32, text: &str) -> Segment {
    Segment {
        id,
        start: id as f32,
        end: id as f32 + 1.0,
        text: text.into(),
        ..transcript().result.segments[0].clone()
    }
}

/// The `data:` events of an SSE body, parsed.
async fn events_of(res: ServiceResponse) -> Vec<serde_json::Value> {
    let body = to_bytes(res.into_body()).await.unwrap();
    let body = std::str::from_utf8(&body).unwrap();
    assert!(body.ends_with("\n\n"), "{body:?}");
    body.split_terminator("\n\n")
        .map(|e| {
            let json = e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e:?}"));
            serde_json::from_str(json).unwrap()
        })
        .collect()
}

#[actix_web::test]
async fn stream_sends_each_segment_once_then_done() {
    let mut t = transcript();
    t.result.segments = vec![
        segment(0, " One."),
        segment(1, " Two."),
        segment(2, " Three."),
    ];
    t.result.text = " One. Two. Three.".into();
    let mut f = fake(move || Ok(t.clone()));
    // The second batch repeats segment 0, as a job retried after a worker
    // crash does; segment 2 only comes with the answer.
    f.batches = vec![
        vec![segment(0, " One.")],
        vec![segment(0, " One."), segment(1, " Two.")],
    ];
    let backend = web::Data::new(f);
    let res = post(
        backend.clone(),
        vec![
            wav_field(),
            text("stream", "true"),
            text("response_format", "text"),
        ],
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header_of(&res, "content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(
        header_of(&res, "cache-control").as_deref(),
        Some("no-cache")
    );
    let events = events_of(res).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "transcript.text.delta",
            "transcript.text.delta",
            "transcript.text.delta",
            "transcript.text.done"
        ]
    );
    let ids: Vec<u64> = events[..3]
        .iter()
        .map(|e| e["segment"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2]);
    let joined: String = events[..3]
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(joined.trim(), events[3]["text"]);
    assert_eq!(events[3]["text"], "One. Two. Three.");
    assert_eq!(events[3]["job_id"], 17);
    assert!(backend.seen.lock().unwrap()[0].streams);
}

#[actix_web::test]
async fn a_failure_after_the_first_segment_is_an_error_event() {
    let mut f = fake(|| {
        Err(AsrError::WorkerCrashed {
            detail: "signal 9".into(),
        })
    });
    f.batches = vec![vec![segment(0, " One.")]];
    let res = post(
        web::Data::new(f),
        vec![wav_field(), text("stream", "1")],
        &[],
    )
    .await;
    assert_eq!(res.status(), 200, "the stream had started");
    let events = events_of(res).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["delta"], " One.");
    assert_eq!(events[1]["type"], "error");
    assert_eq!(events[1]["error"]["status"], 500);
    assert_eq!(events[1]["error"]["code"], "worker_crashed");
}

#[actix_web::test]
async fn a_refusal_before_any_segment_keeps_its_status() {
    let backend = web::Data::new(fake(|| {
        Err(AsrError::Busy {
            retry_after: Duration::from_millis(2500),
            queued: 3,
        })
    }));
    let res = post(
        backend.clone(),
        vec![wav_field(), text("stream", "true")],
        &[],
    )
    .await;
    assert_eq!(res.status(), 429);
    assert_eq!(header_of(&res, "retry-after").as_deref(), Some("3"));
    assert_eq!(json_of(res).await["error"]["code"], "queue_full");

    // Without stream=true nothing asks for segments.
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let res = post(backend.clone(), vec![wav_field()], &[]).await;
    assert_eq!(res.status(), 200);
    assert!(!backend.seen.lock().unwrap()[0].streams);
}
