//! The handlers one by one: answers, status codes, headers, probes.

use super::*;

#[actix_web::test]
async fn json_transcript_with_timing_headers() {
    // A subscriber, so spans are real and the parent span can be checked.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let res = post(
        backend.clone(),
        vec![text("model", "whisper-1"), wav_field()],
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header_of(&res, "x-job-id").as_deref(), Some("17"));
    assert_eq!(header_of(&res, "x-queue-wait-ms").as_deref(), Some("12"));
    assert_eq!(header_of(&res, "x-decode-ms").as_deref(), Some("340"));
    assert_eq!(header_of(&res, "x-worker-generation").as_deref(), Some("2"));
    assert_eq!(
        header_of(&res, "x-engine-idle-us"),
        None,
        "first job: no idle time"
    );
    assert_eq!(
        json_of(res).await,
        serde_json::json!({"text": "Hello there."})
    );

    let seen = backend.seen.lock().unwrap()[0].clone();
    assert!(
        (seen.samples as i64 - 16_000).abs() <= 2,
        "decoded to {} samples",
        seen.samples
    );
    assert_eq!(seen.options.beam_size, NodeConfig::default().beam_size);
    assert_eq!(seen.fault, None);
    assert_eq!(seen.parent_span, Some("http.request"));
}

#[actix_web::test]
async fn formats_and_options_reach_the_node() {
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let res = post(
        backend.clone(),
        vec![
            wav_field(),
            text("response_format", "srt"),
            text("language", "en"),
            text("temperature", "0.4"),
            text("beam_size", "1"),
        ],
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(header_of(&res, "content-type")
        .unwrap()
        .starts_with("application/x-subrip"));
    let body = to_bytes(res.into_body()).await.unwrap();
    assert_eq!(
        &body[..],
        b"1\n00:00:00,000 --> 00:00:01,000\nHello there.\n\n"
    );
    let seen = backend.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.options.language.as_deref(), Some("en"));
    assert_eq!(seen.options.temperatures, vec![0.4, 0.6, 0.8, 1.0]);
    assert_eq!(seen.options.beam_size, 1);
}

#[actix_web::test]
async fn verbose_json_with_words() {
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let res = post(
        backend.clone(),
        vec![
            wav_field(),
            text("response_format", "verbose_json"),
            text("timestamp_granularities[]", "word"),
        ],
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let v = json_of(res).await;
    assert_eq!(v["language"], "english");
    assert_eq!(v["words"], serde_json::json!([]));
    assert!(backend.seen.lock().unwrap()[0].options.word_timestamps);
}

#[actix_web::test]
async fn missing_file_is_a_json_400() {
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let res = post(backend.clone(), vec![text("model", "whisper-1")], &[]).await;
    assert_eq!(res.status(), 400);
    let v = json_of(res).await;
    assert_eq!(v["error"]["code"], "missing_file");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(backend.seen.lock().unwrap().is_empty());
}

#[actix_web::test]
async fn oversized_upload_is_a_json_413() {
    let mut f = fake(|| Ok(transcript()));
    f.config.max_upload_bytes = 10_000;
    let res = post(web::Data::new(f), vec![wav_field()], &[]).await;
    assert_eq!(res.status(), 413);
    assert_eq!(json_of(res).await["error"]["code"], "upload_too_large");
}

#[actix_web::test]
async fn too_long_audio_is_413() {
    let mut f = fake(|| Ok(transcript()));
    f.config.max_audio_secs = 0.5;
    let res = post(web::Data::new(f), vec![wav_field()], &[]).await;
    assert_eq!(res.status(), 413);
    assert_eq!(json_of(res).await["error"]["code"], "audio_too_long");
}

#[actix_web::test]
async fn bad_audio_is_400_or_415() {
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let garbage = TestFormField::new("file", "just some text, not audio at all ".repeat(20))
        .filename("a.mp3");
    let res = post(backend.clone(), vec![garbage], &[]).await;
    assert_eq!(res.status(), 415);
    assert_eq!(json_of(res).await["error"]["code"], "unsupported_audio");

    let empty = TestFormField::new("file", Vec::<u8>::new()).filename("a.wav");
    let res = post(backend.clone(), vec![empty], &[]).await;
    assert_eq!(res.status(), 400);
    assert_eq!(json_of(res).await["error"]["code"], "empty_file");

    let mut w = wav();
    w.truncate(30);
    let res = post(
        backend.clone(),
        vec![TestFormField::new("file", w).filename("a.wav")],
        &[],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(json_of(res).await["error"]["code"], "corrupt_audio");
    assert!(backend.seen.lock().unwrap().is_empty());
}

#[actix_web::test]
async fn busy_node_is_429_with_retry_after() {
    let backend = web::Data::new(fake(|| {
        Err(AsrError::Busy {
            retry_after: Duration::from_millis(1500),
            queued: 3,
        })
    }));
    let res = post(backend.clone(), vec![wav_field()], &[]).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header_of(&res, "retry-after").as_deref(), Some("2"));
    assert_eq!(header_of(&res, QUEUE_FULL_HEADER), None);
    assert_eq!(json_of(res).await["error"]["code"], "queue_full");

    // A balancer that retries only 503 asks for it; the refusal is the same.
    let res = post(
        backend.clone(),
        vec![wav_field()],
        &[(BUSY_STATUS_HEADER, "503")],
    )
    .await;
    assert_eq!(res.status(), 503);
    assert_eq!(header_of(&res, "retry-after").as_deref(), Some("2"));
    assert_eq!(header_of(&res, QUEUE_FULL_HEADER).as_deref(), Some("true"));
    assert_eq!(json_of(res).await["error"]["code"], "queue_full");
    // Other values are ignored.
    let res = post(backend, vec![wav_field()], &[(BUSY_STATUS_HEADER, "500")]).await;
    assert_eq!(res.status(), 429);
}

#[actix_web::test]
async fn busy_status_header_leaves_other_answers_alone() {
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let res = post(backend, vec![wav_field()], &[(BUSY_STATUS_HEADER, "503")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header_of(&res, QUEUE_FULL_HEADER), None);
    let backend = web::Data::new(fake(|| {
        Err(AsrError::Unavailable {
            retry_after: Duration::from_secs(1),
            reason: "restarting".into(),
        })
    }));
    let res = post(backend, vec![wav_field()], &[(BUSY_STATUS_HEADER, "503")]).await;
    assert_eq!(res.status(), 503);
    assert_eq!(header_of(&res, QUEUE_FULL_HEADER), None, "not a full queue");
}

#[actix_web::test]
async fn crashed_worker_is_500_without_detail() {
    let backend = web::Data::new(fake(|| {
        Err(AsrError::WorkerCrashed {
            detail: "signal 6 (SIGABRT)".into(),
        })
    }));
    let res = post(backend, vec![wav_field()], &[]).await;
    assert_eq!(res.status(), 500);
    let v = json_of(res).await;
    assert_eq!(v["error"]["code"], "worker_crashed");
    assert!(!v.to_string().contains("SIGABRT"));
}

#[actix_web::test]
async fn fault_header_only_when_enabled() {
    let backend = web::Data::new(fake(|| Ok(transcript())));
    let res = post(
        backend.clone(),
        vec![wav_field()],
        &[(FAULT_HEADER, "crash")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        backend.seen.lock().unwrap()[0].fault,
        None,
        "ignored when disabled"
    );

    let mut f = fake(|| Ok(transcript()));
    f.config.enable_fault_injection = true;
    let backend = web::Data::new(f);
    for (value, fault) in [
        ("crash", Fault::Crash),
        ("Hang", Fault::Hang),
        ("slow:250", Fault::SlowMs(250)),
        ("out-of-order", Fault::AnswerOutOfOrder),
        ("wrong-id", Fault::AnswerWrongId),
    ] {
        let res = post(
            backend.clone(),
            vec![wav_field()],
            &[("X-Fault-Inject", value)],
        )
        .await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            backend.seen.lock().unwrap().last().unwrap().fault,
            Some(fault)
        );
    }
    let res = post(
        backend.clone(),
        vec![wav_field()],
        &[(FAULT_HEADER, "slow:soon")],
    )
    .await;
    assert_eq!(res.status(), 400);
}

#[actix_web::test]
async fn health_and_ready() {
    let app = atest::init_service(
        App::new()
            .app_data(web::Data::new(fake(|| Ok(transcript()))))
            .configure(configure_for::<Fake>),
    )
    .await;
    let res = atest::call_service(
        &app,
        atest::TestRequest::get().uri(HEALTH_ROUTE).to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let v = json_of(res).await;
    assert_eq!(v["status"], "ok");
    assert_eq!(v["worker_state"], "ready");
    let res = atest::call_service(
        &app,
        atest::TestRequest::get().uri(READY_ROUTE).to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(json_of(res).await["status"], "ready");

    let mut f = fake(|| Ok(transcript()));
    f.ready = false;
    let app = atest::init_service(
        App::new()
            .app_data(web::Data::new(f))
            .configure(configure_for::<Fake>),
    )
    .await;
    let res = atest::call_service(
        &app,
        atest::TestRequest::get().uri(READY_ROUTE).to_request(),
    )
    .await;
    assert_eq!(res.status(), 503);
    assert_eq!(header_of(&res, "retry-after").as_deref(), Some("1"));
    assert_eq!(json_of(res).await["status"], "not_ready");
    let res = atest::call_service(
        &app,
        atest::TestRequest::get().uri(HEALTH_ROUTE).to_request(),
    )
    .await;
    assert_eq!(res.status(), 200, "health stays 200 while not ready");
}

#[actix_web::test]
async fn ready_with_admission_flips_while_the_queue_is_full() {
    async fn ready_answer(f: Fake, uri: &str) -> (u16, Option<String>, serde_json::Value) {
        let app = atest::init_service(
            App::new()
                .app_data(web::Data::new(f))
                .configure(configure_for::<Fake>),
        )
        .await;
        let res = atest::call_service(&app, atest::TestRequest::get().uri(uri).to_request()).await;
        let status = res.status().as_u16();
        let retry = header_of(&res, "retry-after");
        (status, retry, json_of(res).await)
    }
    let with_depth = |depth| {
        let mut f = fake(|| Ok(transcript()));
        f.queue_depth = depth;
        f
    };
    // Room left: ready either way.
    for uri in ["/ready", "/ready?admission=1", "/ready?admission"] {
        let (status, _, v) = ready_answer(with_depth(2), uri).await;
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("ready")),
            "{uri}"
        );
    }
    // Full: plain /ready stays 200 (busy is still ready: work queues) ...
    let (status, _, v) = ready_answer(with_depth(3), "/ready").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ready")));
    let (status, _, _) = ready_answer(with_depth(3), "/ready?admission=0").await;
    assert_eq!(status, 200, "admission=0 is the plain check");
    // ... and the admission check says busy.
    for uri in ["/ready?admission=1", "/ready?x=y&admission=true"] {
        let (status, retry, v) = ready_answer(with_depth(3), uri).await;
        assert_eq!(status, 503, "{uri}");
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(v["status"], "busy");
        assert_eq!(v["queue_depth"], 3);
    }
    // Not ready wins over busy.
    let mut f = with_depth(3);
    f.ready = false;
    let (status, _, v) = ready_answer(f, "/ready?admission=1").await;
    assert_eq!((status, v["status"].as_str()), (503, Some("not_ready")));
}

#[actix_web::test]
async fn wrong_method_is_a_json_405() {
    let app = atest::init_service(
        App::new()
            .app_data(web::Data::new(fake(|| Ok(transcript()))))
            .configure(configure_for::<Fake>),
    )
    .await;
    let res = atest::call_service(
        &app,
        atest::TestRequest::get()
            .uri(TRANSCRIPTIONS_ROUTE)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 405);
    assert_eq!(header_of(&res, "allow").as_deref(), Some("POST"));
    assert_eq!(json_of(res).await["error"]["code"], "method_not_allowed");
}

#[actix_web::test]
async fn missing_app_data_is_a_json_500() {
    let app = atest::init_service(App::new().configure(configure_for::<Fake>)).await;
    let res = atest::call_service(
        &app,
        atest::TestRequest::get().uri(HEALTH_ROUTE).to_request(),
    )
    .await;
    assert_eq!(res.status(), 500);
    assert_eq!(json_of(res).await["error"]["code"], "internal_error");
}

#[test]
fn fault_header_parsing() {
    let mut h = HeaderMap::new();
    assert_eq!(parse_fault(&h, true), Ok(None));
    h.insert(
        header::HeaderName::from_static(FAULT_HEADER),
        HeaderValue::from_static("slow: 10"),
    );
    assert_eq!(parse_fault(&h, false), Ok(None));
    assert_eq!(parse_fault(&h, true), Ok(Some(Fault::SlowMs(10))));
    h.insert(
        header::HeaderName::from_static(FAULT_HEADER),
        HeaderValue::from_static("explode"),
    );
    assert_eq!(parse_fault(&h, true).unwrap_err().status(), 400);
}

#[test]
fn max_queue_wait_header_parsing() {
    let mut h = HeaderMap::new();
    assert_eq!(parse_max_queue_wait(&h), Ok(None));
    let name = header::HeaderName::from_static(MAX_QUEUE_WAIT_HEADER);
    h.insert(name.clone(), HeaderValue::from_static(" 250 "));
    assert_eq!(
        parse_max_queue_wait(&h),
        Ok(Some(std::time::Duration::from_millis(250)))
    );
    for bad in ["0", "-5", "1.5", "soon", ""] {
        h.insert(name.clone(), HeaderValue::from_static(bad));
        let e = parse_max_queue_wait(&h).unwrap_err();
        assert_eq!(e.status(), 400, "{bad:?}");
        assert_eq!(e.code(), "invalid_max_queue_wait");
    }
}
