//! Handler tests against a fake backend: the whole HTTP path (multipart,
//! decode, status mapping, rendering, headers) without the actor tree.

use std::sync::Mutex;
use std::time::Duration;

use actix_multipart::test::{create_form_data_payload_and_headers_from_fields, TestFormField};
use actix_web::body::to_bytes;
use actix_web::dev::ServiceResponse;
use actix_web::{test as atest, App};

use super::*;
use crate::api::{DecodeOptions, Fault, JobResult, Segment, WorkerState};
use crate::http::form::FAULT_HEADER;

/// What the fake saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    samples: usize,
    options: DecodeOptions,
    fault: Option<Fault>,
    parent_span: Option<&'static str>,
    /// Whether the request asked for its segments as they are decoded.
    streams: bool,
}

struct Fake {
    config: NodeConfig,
    /// Built from `config` on first use (tests change `config` first).
    ingest: std::sync::OnceLock<crate::ingest::Ingest>,
    ready: bool,
    /// Jobs waiting (the queue holds 3).
    queue_depth: usize,
    answer: Box<dyn Fn() -> Result<Transcript, AsrError> + Send + Sync>,
    /// Segment batches sent to a streaming request before the answer, as
    /// the worker proxy does after each window.
    batches: Vec<Vec<Segment>>,
    seen: Mutex<Vec<Seen>>,
}

impl Backend for Fake {
    fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn ingest(&self) -> &crate::ingest::Ingest {
        self.ingest
            .get_or_init(|| crate::ingest::Ingest::new(&self.config))
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            ready: self.ready,
            worker_state: if self.ready {
                WorkerState::Ready
            } else {
                WorkerState::Restarting
            },
            worker_pid: Some(4242),
            worker_generation: 1,
            worker_restarts: 1,
            last_worker_exit: None,
            model: Some("tiny.en".into()),
            device: Some("cpu".into()),
            compute_type: Some("int8".into()),
            engine: None,
            queue_depth: self.queue_depth,
            queue_capacity: 3,
            in_flight: 0,
            uptime_secs: 12.5,
            shutting_down: false,
            jobs: Default::default(),
        }
    }

    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> impl Future<Output = Result<Transcript, AsrError>> {
        self.seen.lock().unwrap().push(Seen {
            samples: req.samples.len(),
            options: req.options,
            fault: req.fault,
            parent_span: req.parent_span.metadata().map(|m| m.name()),
            streams: req.segments.is_some(),
        });
        let mut decoding = false;
        if let Some(sink) = &req.segments {
            for batch in &self.batches {
                sink.send(batch.clone()).unwrap();
                decoding = true;
            }
        }
        let answer = (self.answer)();
        async move {
            // The answer comes after the segments, as after a real decode.
            if decoding {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            answer
        }
    }
}

fn transcript() -> Transcript {
    Transcript {
        job_id: 17,
        result: JobResult {
            job_id: 17,
            text: " Hello there.".into(),
            segments: vec![Segment {
                id: 0,
                seek: 0,
                start: 0.0,
                end: 1.0,
                text: " Hello there.".into(),
                tokens: vec![1, 2, 3],
                temperature: 0.0,
                avg_logprob: -0.2,
                compression_ratio: 1.1,
                no_speech_prob: 0.02,
                words: vec![],
            }],
            language: "en".into(),
            language_probability: 1.0,
            duration_secs: 1.0,
            timings: Default::default(),
        },
        queue_wait: Duration::from_millis(12),
        decode_time: Duration::from_millis(340),
        worker_generation: 2,
    }
}

fn fake(answer: impl Fn() -> Result<Transcript, AsrError> + Send + Sync + 'static) -> Fake {
    Fake {
        config: NodeConfig::default(),
        ingest: std::sync::OnceLock::new(),
        ready: true,
        queue_depth: 0,
        answer: Box::new(answer),
        batches: Vec::new(),
        seen: Mutex::new(Vec::new()),
    }
}

/// 1 s of a 440 Hz tone, 16-bit PCM WAV at 22.05 kHz mono.
fn wav() -> Vec<u8> {
    crate::audio::test_wav::tone(22_050, 1.0, 16_000.0)
}

fn wav_field() -> TestFormField<'static> {
    TestFormField::new("file", wav()).filename("tone.wav")
}

fn text(name: &'static str, value: &'static str) -> TestFormField<'static> {
    TestFormField::new(name, value)
}

/// Sends a form through the app built around `backend`.
async fn post(
    backend: web::Data<Fake>,
    fields: Vec<TestFormField<'static>>,
    extra: &[(&str, &str)],
) -> ServiceResponse {
    let app = atest::init_service(
        App::new()
            .app_data(backend)
            .configure(configure_for::<Fake>),
    )
    .await;
    let (body, headers) = create_form_data_payload_and_headers_from_fields(fields);
    let mut req = atest::TestRequest::post().uri(TRANSCRIPTIONS_ROUTE);
    for (name, value) in headers.iter() {
        req = req.insert_header((name.clone(), value.clone()));
    }
    for (name, value) in extra {
        req = req.insert_header((*name, *value));
    }
    atest::call_service(&app, req.set_payload(body).to_request()).await
}

async fn json_of(res: ServiceResponse) -> serde_json::Value {
    serde_json::from_slice(&to_bytes(res.into_body()).await.unwrap()).unwrap()
}

fn header_of(res: &ServiceResponse, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

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

/// Starts a real server on port 0 around `backend`; returns its address.
fn serve(backend: web::Data<Fake>) -> std::net::SocketAddr {
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(backend.clone())
            .configure(configure_for::<Fake>)
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

/// Sends a raw HTTP/1.1 request (head, then body chunks, ignoring write
/// errors once the server stopped reading) and returns the response head
/// and body as text.
async fn raw(addr: std::net::SocketAddr, head: String, chunks: Vec<Vec<u8>>) -> String {
    use std::io::{Read, Write};
    web::block(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        for c in chunks {
            if s.write_all(&c).is_err() {
                break;
            }
        }
        // Read until the response's head and its Content-Length body are in
        // (the server may keep the connection open afterwards).
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !response_complete(&out) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

fn response_complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len = text[..head_end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    out.len() >= head_end + 4 + len
}

/// Content type, opening and closing of a one-file multipart body.
fn multipart_parts() -> (String, Vec<u8>, Vec<u8>) {
    let boundary = "XyZboundary42";
    let pre = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
    )
    .into_bytes();
    let post = format!("\r\n--{boundary}--\r\n").into_bytes();
    (
        format!("multipart/form-data; boundary={boundary}"),
        pre,
        post,
    )
}

#[actix_web::test]
async fn real_server_answers_413_to_declared_and_chunked_oversize() {
    let mut f = fake(|| Ok(transcript()));
    f.config.max_upload_bytes = 100_000;
    let addr = serve(web::Data::new(f));
    let (ct, pre, post) = multipart_parts();
    let file = vec![0u8; 2_000_000];

    // Declared too large: answered before the body is read.
    let len = pre.len() + file.len() + post.len();
    let head = format!(
        "POST {TRANSCRIPTIONS_ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\r\n"
    );
    let res = raw(addr, head, vec![pre.clone(), file.clone(), post.clone()]).await;
    assert!(
        res.starts_with("HTTP/1.1 413"),
        "got: {}",
        &res[..res.len().min(300)]
    );
    assert!(res.contains("upload_too_large"));

    // Chunked, no length: refused once the counted body passes the limit.
    let head = format!(
        "POST {TRANSCRIPTIONS_ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunks = vec![];
    for piece in std::iter::once(pre)
        .chain(file.chunks(16 * 1024).map(<[u8]>::to_vec))
        .chain(std::iter::once(post))
    {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(&piece);
        c.extend_from_slice(b"\r\n");
        chunks.push(c);
    }
    chunks.push(b"0\r\n\r\n".to_vec());
    let res = raw(addr, head, chunks).await;
    assert!(
        res.starts_with("HTTP/1.1 413"),
        "got: {}",
        &res[..res.len().min(300)]
    );
    assert!(res.contains("upload_too_large"));
}

#[actix_web::test]
async fn real_server_transcribes_with_reqwest() {
    let addr = serve(web::Data::new(fake(|| Ok(transcript()))));
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .text("response_format", "text")
        .part(
            "file",
            reqwest::multipart::Part::bytes(wav()).file_name("tone.wav"),
        );
    let res = reqwest::Client::new()
        .post(format!("http://{addr}{TRANSCRIPTIONS_ROUTE}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-job-id"], "17");
    assert_eq!(res.text().await.unwrap(), "Hello there.\n");
}

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
