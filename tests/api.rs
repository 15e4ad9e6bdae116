//! OpenAI API surface and access control against the real binary and the
//! real `tiny.en` model: API keys on every `/v1` route (and the open
//! probes), CORS, `/v1/models`, translations on an English-only model, the
//! fields the node refuses, and every counter at zero from the start.
//!
//! `WHISPER_NODE_TEST_MODEL_DIR=… cargo test --release --test api`

mod common;

use common::{client, fixture, upload_form, Service};
use std::time::Duration;

const KEY: &str = "sk-test-right-key-0123456789";
const ORIGIN: &str = "https://app.example.com";

/// A service with one API key (the second line of the file; the first is a
/// comment), CORS for [`ORIGIN`] and `/metrics` open.
fn keyed_service(extra: &[&str]) -> (Service, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("# test keys\nsk-other-key\n{KEY}\n")).unwrap();
    let keys = keys.to_string_lossy().to_string();
    let mut args = vec!["--api-keys-file", keys.as_str(), "--cors-origins", ORIGIN];
    args.extend_from_slice(extra);
    (Service::start(&args), dir)
}

/// Sends `method path` with an optional bearer key and, for POSTs, a
/// multipart form holding `hello.wav`; returns status and body.
async fn call(
    svc: &Service,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let url = format!("{}{path}", svc.base);
    let mut req = match method {
        "GET" => client().get(url),
        "DELETE" => client().delete(url),
        _ => {
            let bytes = std::fs::read(fixture("hello.wav")).unwrap();
            client()
                .post(url)
                .multipart(upload_form(bytes, "hello.wav", &[("model", "whisper-1")]))
        }
    };
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_guard_every_api_route_and_the_probes_stay_open() {
    let (svc, _dir) = keyed_service(&[]);
    let routes = [
        ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v1/audio/translations"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/whisper-1"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000"),
    ];
    for (method, path) in routes {
        let (status, headers, body) = call(&svc, method, path, None).await;
        assert_eq!(status, 401, "{method} {path} without a key: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "missing_api_key", "{body}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(headers["www-authenticate"], "Bearer");

        let (status, _, body) = call(&svc, method, path, Some("sk-wrong")).await;
        assert_eq!(status, 401, "{method} {path} with a wrong key: {body}");
        assert!(body.contains("invalid_api_key"), "{body}");
        assert!(
            !body.contains("sk-wrong"),
            "the key is never echoed: {body}"
        );
    }

    // The right key passes the check: each route answers as it would
    // without keys.
    let (status, headers, body) = call(&svc, "POST", "/v1/audio/transcriptions", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-model"], "tiny.en");
    common::assert_words(
        &serde_json::from_str::<serde_json::Value>(&body).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        &["hello", "world"],
    );
    let (status, _, body) = call(&svc, "POST", "/v1/audio/translations", Some(KEY)).await;
    assert_eq!(status, 400, "tiny.en cannot translate: {body}");
    assert!(
        body.contains("model_cannot_translate") && body.contains("tiny.en"),
        "{body}"
    );
    for path in ["/v1/models", "/v1/models/whisper-1"] {
        let (status, _, body) = call(&svc, "GET", path, Some(KEY)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _, body) = call(&svc, "POST", "/v1/jobs", Some(KEY)).await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = call(
        &svc,
        "GET",
        "/v1/jobs/00000000-0000-0000-0000-000000000000",
        Some(KEY),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    for path in ["/health", "/ready", "/metrics"] {
        let (status, _, body) = call(&svc, "GET", path, None).await;
        assert_eq!(status, 200, "{path} is open: {body}");
    }
    let (_, _, metrics) = call(&svc, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("asr_auth_refusals_total{code=\"missing_api_key\"} 6"),
        "{metrics}"
    );
    assert!(!svc.logs().contains(KEY), "a key was logged");
    assert!(
        !svc.logs().contains("sk-wrong"),
        "a presented key was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_key() {
    let (svc, _dir) = keyed_service(&["--metrics-require-key"]);
    assert_eq!(call(&svc, "GET", "/metrics", None).await.0, 401);
    assert_eq!(call(&svc, "GET", "/metrics", Some(KEY)).await.0, 200);
    assert_eq!(call(&svc, "GET", "/health", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_for_allowed_origins_only() {
    let (svc, _dir) = keyed_service(&[]);
    let preflight = |origin: &'static str| {
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/audio/transcriptions", svc.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight(ORIGIN).await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase()
        .contains("authorization"));

    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.status().is_success(), "{}", other.status());
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Answers to an allowed origin carry the header, and the node's own
    // headers are exposed.
    let r = client()
        .get(format!("{}/v1/models", svc.base))
        .header("origin", ORIGIN)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-job-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_in_openais_shape() {
    let svc = Service::start(&[]);
    let (status, body) = svc.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert_eq!(m["owned_by"], "whisper-node");
            assert!(m["created"].as_u64().unwrap() > 0);
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["tiny.en", "whisper-1"]);
    let (status, one) = svc.get_json("/v1/models/tiny.en").await;
    assert_eq!((status, one["id"].as_str()), (200, Some("tiny.en")));
    let (status, missing) = svc.get_json("/v1/models/large-v3").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "model_not_found");
    assert!(missing["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tiny.en"));

    // An unknown `model` in a transcription maps to the loaded one.
    let a = svc
        .transcribe(&fixture("hello.wav"), &[("model", "gpt-4o-transcribe")])
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers["x-model"], "tiny.en");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_the_node_cannot_honour_are_clear_400s_and_chunking_is_vad() {
    let svc = Service::start(&[]);
    for fields in [
        vec![("known_speaker_names[]", "alice")],
        vec![("known_speaker_references[]", "data:audio/wav;base64,AAAA")],
        vec![("response_format", "diarized_json")],
    ] {
        let a = svc.transcribe(&fixture("hello.wav"), &fields).await;
        assert_eq!(a.status, 400, "{fields:?}: {}", a.text);
        assert_eq!(a.json()["error"]["code"], "unsupported_parameter");
    }
    let a = svc
        .transcribe(&fixture("hello.wav"), &[("chunking_strategy", "bogus")])
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json()["error"]["param"], "chunking_strategy");
    // `auto` and a server_vad object are accepted (VAD, the node's default).
    for strategy in ["auto", r#"{"type": "server_vad", "threshold": 0.5}"#] {
        let a = svc
            .transcribe(&fixture("hello.wav"), &[("chunking_strategy", strategy)])
            .await;
        assert_eq!(a.status, 200, "{strategy}: {}", a.text);
        common::assert_words(&a.transcript(), &["hello", "world"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_fill_the_queue() {
    // Queue of 4: a key may have 2 requests in progress, the other key
    // still gets in.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY}\nsk-second\n")).unwrap();
    let svc = Service::start(&[
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--queue-capacity",
        "4",
        "--max-requests-per-key",
        "2",
        "--max-queue-wait-secs",
        "30",
        "--enable-fault-injection",
    ]);
    let slow = |key: &'static str| {
        let base = svc.base.clone();
        tokio::spawn(async move {
            let bytes = std::fs::read(fixture("hello.wav")).unwrap();
            let r = client()
                .post(format!("{base}/v1/audio/transcriptions"))
                .bearer_auth(key)
                .header("x-fault-inject", "slow:3000")
                .multipart(upload_form(bytes, "hello.wav", &[]))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            (status, retry, r.text().await.unwrap_or_default())
        })
    };
    let first = [slow(KEY), slow(KEY)];
    // Both are in progress once the queue shows them.
    svc.wait_health("two jobs of the key", Duration::from_secs(20), |h| {
        h["queue_depth"].as_u64().unwrap_or(0) + h["in_flight"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let (status, retry, body) = slow(KEY).await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(retry && body.contains("key_busy"), "{body}");
    let (status, _, body) = slow("sk-second").await.unwrap();
    assert_eq!(status, 200, "another key is served: {body}");
    for h in first {
        let (status, _, body) = h.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // The slots were given back.
    let (status, _, body) = slow(KEY).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_is_exported_at_zero_before_anything_happened() {
    let svc = Service::start(&[]);
    let r = client()
        .get(format!("{}/metrics", svc.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    for needle in [
        "asr_decode_failures_total{reason=\"worker_crashed\"} 0",
        "asr_decode_failures_total{reason=\"decode_timeout\"} 0",
        "asr_jobs_total{outcome=\"ok\"} 0",
        "asr_requests_total{outcome=\"queue_full\",status=\"429\"} 0",
        "asr_busy_rejections_total 0",
        "asr_worker_restarts_total 0",
        "asr_auth_refusals_total{code=\"invalid_api_key\"} 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotwords_change_what_is_heard() {
    // Hotwords put their spelling in every window's prompt: tiny.en then
    // writes clip10's "quick brown fox" the way the hotwords spell it.
    let svc = Service::start(&[]);
    let plain = svc
        .transcribe(&fixture("clip10.wav"), &[])
        .await
        .transcript();
    assert!(
        plain.contains("brown fox") && !plain.contains("kwik"),
        "baseline changed: {plain:?}"
    );
    let biased = svc
        .transcribe(&fixture("clip10.wav"), &[("hotwords", "kwik brawn focks")])
        .await
        .transcript();
    assert!(biased.contains("kwik brawn focks"), "{biased:?}");
    let bad = svc
        .transcribe(
            &fixture("hello.wav"),
            &[("language_detection_segments", "0")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.json()["error"]["param"], "language_detection_segments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_come_one_per_token_and_leave_the_text_alone() {
    let svc = Service::start(&[]);
    let plain = svc.transcribe(&fixture("hello.wav"), &[]).await;
    let with = svc
        .transcribe(&fixture("hello.wav"), &[("include[]", "logprobs")])
        .await;
    assert_eq!(with.status, 200, "{}", with.text);
    let (plain, with) = (plain.json(), with.json());
    assert_eq!(plain["text"], with["text"], "the text is unchanged");
    assert!(plain.get("logprobs").is_none());
    let logprobs = with["logprobs"].as_array().expect("logprobs");
    // One per text token: as many as verbose_json's segments hold below
    // <|endoftext|> (50256 for English-only models).
    let verbose = svc
        .transcribe(
            &fixture("hello.wav"),
            &[("response_format", "verbose_json")],
        )
        .await
        .json();
    let text_tokens = verbose["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["tokens"].as_array().unwrap())
        .filter(|t| t.as_u64().unwrap() < 50_256)
        .count();
    assert_eq!(logprobs.len(), text_tokens, "{with}");
    let mut joined = Vec::new();
    for lp in logprobs {
        let p = lp["logprob"].as_f64().unwrap();
        assert!(p <= 0.0 && p.is_finite(), "{lp}");
        assert!(lp["token"].is_string(), "{lp}");
        joined.extend(
            lp["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8),
        );
    }
    // The tokens' bytes spell the text.
    assert_eq!(
        String::from_utf8(joined).unwrap().trim(),
        with["text"].as_str().unwrap()
    );
}

/// The live WebSocket is keyed like every `/v1` route; browsers, which
/// cannot set `Authorization` there, send the key as OpenAI's subprotocol
/// and the node answers choosing `realtime` (never echoing the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_realtime_websocket_takes_the_key_as_bearer_or_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error;
    let (svc, _dir) = keyed_service(&[]);
    let url = format!(
        "{}/v1/realtime?intent=transcription",
        svc.base.replace("http", "ws")
    );
    let upgrade = |protocol: Option<String>, bearer: Option<&str>| {
        let mut req = url.as_str().into_client_request().unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        if let Some(k) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };

    for (protocol, why) in [
        (None, "no key"),
        (
            Some("realtime, openai-insecure-api-key.sk-wrong".to_string()),
            "a wrong key",
        ),
    ] {
        match upgrade(protocol, None).await {
            Err(Error::Http(res)) => {
                assert_eq!(res.status(), 401, "{why}");
                let body: serde_json::Value =
                    serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
                assert!(
                    body["error"]["code"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("api_key")),
                    "{why}: {body}"
                );
            }
            other => panic!("{why}: expected a 401, got {other:?}"),
        }
    }

    let (mut ws, res) = upgrade(
        Some(format!("realtime, openai-insecure-api-key.{KEY}")),
        None,
    )
    .await
    .expect("the subprotocol key opens a session");
    assert_eq!(res.headers()["sec-websocket-protocol"], "realtime");
    let first = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut ws))
        .await
        .expect("an event")
        .expect("open")
        .expect("a frame");
    let first: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["type"], "session.created", "{first}");
    drop(ws);

    let (_ws, res) = upgrade(None, Some(KEY))
        .await
        .expect("a bearer key opens a session");
    assert!(res.headers().get("sec-websocket-protocol").is_none());
}
