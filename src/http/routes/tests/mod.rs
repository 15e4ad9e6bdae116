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
            workers_accepting: usize::from(self.ready),
            workers: Vec::new(),
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

mod handlers;
mod real_server;
mod stream;
