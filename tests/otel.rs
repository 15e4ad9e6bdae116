//! Trace export, checked against a real OTLP receiver written by someone
//! else: the `rotel` collector (PyPI `rotel` 0.0.1a15, its `rotel-agent`
//! binary; `make setup` installs it into `.venv/otel-test`).
//!
//! rotel listens for OTLP over HTTP on a free port, drops what it receives
//! (`--exporter blackhole`) and prints every span it received in its
//! detailed debug format (`--debug-log traces --debug-log-verbosity
//! detailed`): ids, parent, name, kind, times, status and attributes, which
//! these tests parse. The service runs with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at it, exactly as a user runs it against Jaeger.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A span as rotel printed it.
#[derive(Debug, Clone, Default)]
struct SpanRec {
    service: String,
    trace_id: String,
    parent_id: String,
    id: String,
    name: String,
    kind: String,
    start_ns: u128,
    end_ns: u128,
    status_code: String,
    status_message: String,
    /// Attribute values without their type wrapper (`Str(x)` → `x`).
    attrs: BTreeMap<String, String>,
    /// Attribute types (`Str`, `Int`, `Double`, `Bool`).
    types: BTreeMap<String, String>,
}

impl SpanRec {
    fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).unwrap_or_else(|| {
            panic!(
                "span {} has no attribute {key}: {:?}",
                self.name, self.attrs
            )
        })
    }

    fn int(&self, key: &str) -> i64 {
        assert_eq!(
            self.types.get(key).map(String::as_str),
            Some("Int"),
            "{}.{key} is not an Int: {self:?}",
            self.name
        );
        self.attr(key).parse().unwrap()
    }

    fn float(&self, key: &str) -> f64 {
        self.attr(key)
            .parse()
            .unwrap_or_else(|_| panic!("{}.{key} is not a number: {self:?}", self.name))
    }

    fn is_error(&self) -> bool {
        self.status_code == "STATUS_CODE_ERROR"
    }
}

/// Parses rotel's detailed debug output (the same layout as the
/// OpenTelemetry collector's debug exporter).
fn parse_spans(out: &str) -> Vec<SpanRec> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Resource,
        SpanHeader,
        SpanAttributes,
    }
    let mut spans = Vec::new();
    let mut service = String::new();
    let mut cur: Option<SpanRec> = None;
    let mut section = Section::Other;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("ResourceSpans #") {
            spans.extend(cur.take());
            section = Section::Other;
        } else if t == "Resource attributes:" {
            section = Section::Resource;
        } else if t.starts_with("ScopeSpans #") || t.starts_with("InstrumentationScope") {
            section = Section::Other;
        } else if t.starts_with("Span #") {
            spans.extend(cur.take());
            cur = Some(SpanRec {
                service: service.clone(),
                ..Default::default()
            });
            section = Section::SpanHeader;
        } else if t == "Attributes:" && cur.is_some() {
            section = Section::SpanAttributes;
        } else if t == "Events:" || t == "Links:" || t.starts_with("SpanEvent #") {
            section = Section::Other;
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            let (ty, inner) = match v.split_once('(') {
                Some((ty, rest)) => (
                    ty.to_string(),
                    rest.strip_suffix(')').unwrap_or(rest).to_string(),
                ),
                None => (String::new(), v.to_string()),
            };
            match section {
                Section::Resource if k == "service.name" => service = inner,
                Section::SpanAttributes => {
                    if let Some(s) = cur.as_mut() {
                        s.attrs.insert(k.to_string(), inner);
                        s.types.insert(k.to_string(), ty);
                    }
                }
                _ => {}
            }
        } else if section == Section::SpanHeader {
            let (Some(s), Some((k, v))) = (cur.as_mut(), t.split_once(':')) else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim() {
                "Trace ID" => s.trace_id = v,
                "Parent ID" => s.parent_id = v,
                "ID" => s.id = v,
                "Name" => s.name = v,
                "Kind" => s.kind = v,
                "Start time" => s.start_ns = v.parse().unwrap_or(0),
                "End time" => s.end_ns = v.parse().unwrap_or(0),
                "Status code" => s.status_code = v,
                "Status message" => s.status_message = v,
                _ => {}
            }
        }
    }
    spans.extend(cur);
    spans
}

/// A running `rotel-agent`; killed on drop.
struct Rotel {
    child: Child,
    out: Arc<Mutex<String>>,
    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Rotel {
    fn start() -> Rotel {
        let bin = otel_tools_dir().join("rotel/rotel-agent");
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let mut cmd = Command::new(&bin);
        cmd.arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args([
                "--otlp-receiver-metrics-disabled",
                "--otlp-receiver-logs-disabled",
            ])
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            .args(["--batch-timeout", "50ms"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.path().join("rotel.log"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl only; rotel dies with the test thread at the latest.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let out = Arc::new(Mutex::new(String::new()));
        // Raw bytes, not lines: rotel's last line may come without a newline.
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 * 1024];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("rotel-agent exited ({status}): {}", out.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "rotel-agent did not listen within 20 s: {}",
                out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Rotel {
            child,
            out,
            endpoint: format!("http://127.0.0.1:{http}"),
            _dir: dir,
        }
    }

    /// Every span received so far in `trace_id`.
    fn trace(&self, trace_id: &str) -> Vec<SpanRec> {
        parse_spans(&self.out.lock().unwrap())
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Waits until the received spans of `trace_id` satisfy `done`.
    async fn wait_trace(
        &self,
        trace_id: &str,
        what: &str,
        done: impl Fn(&[SpanRec]) -> bool,
    ) -> Vec<SpanRec> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.trace(trace_id);
            if done(&spans) {
                // The batch processor may still send stragglers of the same
                // trace; give it one more round.
                tokio::time::sleep(Duration::from_millis(400)).await;
                return self.trace(trace_id);
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not received within 30 s; got {:#?}\nrotel output:\n{}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
                self.out.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh W3C trace id (32 hex digits, not all zero) for one test request.
fn new_trace_id(salt: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mixed = (nanos ^ (u128::from(std::process::id()) << 64) ^ (u128::from(salt) << 96))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    format!("{:032x}", mixed | 1)
}

/// The client's span id the request claims as its parent.
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn start_traced_service(rotel: &Rotel, service_name: &str) -> Service {
    Service::start_with(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.endpoint.as_str()),
            ("OTEL_SERVICE_NAME", service_name),
            // Export within 100 ms of a span's end instead of 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .unwrap_or_else(|(code, log)| panic!("service exited ({code:?}):\n{log}"))
}

fn one<'a>(spans: &'a [SpanRec], name: &str) -> &'a SpanRec {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one {name} span, got {found:#?}");
    found[0]
}

fn children<'a>(spans: &'a [SpanRec], parent: &SpanRec) -> Vec<&'a SpanRec> {
    spans.iter().filter(|s| s.parent_id == parent.id).collect()
}

/// Every span's parent is in the trace (the server span's parent is the
/// client's), and every span ended after it started: nothing is missing or
/// left open.
fn assert_complete(spans: &[SpanRec]) {
    for s in spans {
        assert!(
            s.end_ns >= s.start_ns && s.start_ns > 0,
            "bad times: {s:#?}"
        );
        if s.name == "http.request" {
            assert_eq!(
                s.parent_id, CLIENT_SPAN_ID,
                "the incoming traceparent is the server span's parent"
            );
        } else {
            assert!(
                spans.iter().any(|p| p.id == s.parent_id),
                "parent of {} not in the trace: {s:#?}",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn a_request_is_one_trace_from_http_through_the_queue_to_each_decode_phase() {
    let rotel = Rotel::start();
    let svc = start_traced_service(&rotel, "whisper-node-otel-test");
    let trace_id = new_trace_id(1);
    let traceparent = format!("00-{trace_id}-{CLIENT_SPAN_ID}-01");

    let a = svc
        .transcribe_bytes(
            std::fs::read(fixture("hello.wav")).unwrap(),
            "hello.wav",
            &[],
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_words(&a.transcript(), &["hello", "world"]);
    let job_id: i64 = a.headers["x-job-id"].to_str().unwrap().parse().unwrap();

    let names = [
        "http.request",
        "audio.decode",
        "asr.job",
        "queue.wait",
        "worker.decode",
        "features",
        "encode",
        "generate",
    ];
    let spans = rotel
        .wait_trace(&trace_id, "the request's spans", |s| {
            names.iter().all(|n| s.iter().any(|x| x.name == *n))
        })
        .await;
    assert_complete(&spans);
    for s in &spans {
        assert_eq!(
            s.service, "whisper-node-otel-test",
            "OTEL_SERVICE_NAME is the service.name"
        );
        assert!(!s.is_error(), "no error in a successful request: {s:#?}");
    }

    // http.request: the server span, child of the client's span.
    let http = one(&spans, "http.request");
    assert_eq!(http.kind, "SPAN_KIND_SERVER");
    assert_eq!(http.attr("http.request.method"), "POST");
    assert_eq!(http.attr("http.route"), "/v1/audio/transcriptions");
    assert_eq!(http.int("http.response.status_code"), 200);
    assert_eq!(http.attr("outcome"), "ok");
    assert_eq!(http.int("job_id"), job_id);
    assert_eq!(http.attr("trace_id"), trace_id);

    // audio.decode and asr.job under it.
    let decode = one(&spans, "audio.decode");
    assert_eq!(decode.parent_id, http.id);
    let job = one(&spans, "asr.job");
    assert_eq!(job.parent_id, http.id);
    assert_eq!(job.int("job_id"), job_id);
    let secs = fixture_secs("hello.wav");
    assert!((job.float("audio_secs") - secs).abs() < 0.05, "{job:#?}");
    assert!(
        decode.end_ns <= job.start_ns,
        "the upload is decoded before the job is queued"
    );

    // queue.wait, then worker.decode, under asr.job.
    let wait = one(&spans, "queue.wait");
    assert_eq!(wait.parent_id, job.id);
    assert_eq!(wait.int("job_id"), job_id);
    assert_eq!(wait.int("queue_depth"), 0, "nothing else was queued");
    assert!(wait.float("wait_ms") >= 0.0);
    assert_eq!(wait.attr("outcome"), "dispatched");
    let work = one(&spans, "worker.decode");
    assert_eq!(work.parent_id, job.id);
    assert_eq!(work.kind, "SPAN_KIND_CLIENT");
    assert!(
        wait.end_ns <= work.start_ns,
        "queue.wait ends at dispatch, where worker.decode begins"
    );
    assert_eq!(work.int("job_id"), job_id);
    assert_eq!(work.attr("model"), "tiny.en");
    assert_eq!(work.attr("device"), "cpu");
    assert_eq!(work.attr("compute_type"), "int8");
    assert_eq!(work.int("beam_size"), 5);
    assert_eq!(work.int("worker_generation"), 0);
    assert_eq!(work.int("worker_id"), 0, "the pool's only worker");
    assert_eq!(work.attr("outcome"), "ok");
    assert_eq!(work.attr("language"), "en");
    assert!((work.float("audio_secs") - secs).abs() < 0.05);
    let rtf = work.float("rtf");
    let decode_ms = work.float("decode_ms");
    assert!(
        rtf > 0.0 && (rtf - decode_ms / 1e3 / work.float("audio_secs")).abs() < 1e-6,
        "{work:#?}"
    );

    // The worker's phases, with their own times, inside worker.decode.
    let phases = children(&spans, work);
    let phase_names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
    for name in ["features", "encode", "generate"] {
        assert!(
            phase_names.contains(&name),
            "{name} missing under worker.decode: {phase_names:?}"
        );
    }
    for p in &phases {
        assert!(
            p.start_ns >= work.start_ns && p.end_ns <= work.end_ns,
            "phase {} [{}, {}] outside worker.decode [{}, {}]",
            p.name,
            p.start_ns,
            p.end_ns,
            work.start_ns,
            work.end_ns
        );
    }
    let generate = phases.iter().find(|p| p.name == "generate").unwrap();
    assert_eq!(generate.int("window"), 0);
    assert_eq!(generate.float("temperature"), 0.0);
    let features = phases.iter().find(|p| p.name == "features").unwrap();
    let encode = phases.iter().find(|p| p.name == "encode").unwrap();
    assert!(
        features.end_ns <= encode.start_ns && encode.end_ns <= generate.start_ns,
        "phases in order"
    );

    // The node's log lines about the job name the job and the trace.
    let logs = svc.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("job done"))
        .unwrap_or_else(|| panic!("no `job done` line in:\n{logs}"));
    assert!(
        line.contains(&format!("trace_id=\"{trace_id}\""))
            && line.contains(&format!("job_id={job_id}")),
        "{line}"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_decode_leaves_an_error_span_and_the_retry_in_one_trace() {
    // The crashed job is retried once on the new worker.
    let status = killed_mid_decode(&["--max-crash-retries", "1"], 2).await;
    assert_eq!(status, 200, "retried on the restarted worker");
}

#[tokio::test]
async fn a_worker_killed_mid_decode_without_retry_leaves_a_complete_error_trace() {
    let status = killed_mid_decode(&["--max-crash-retries", "0"], 3).await;
    assert_eq!(status, 500, "the crash is the answer");
}

/// Kills the worker while it decodes a traced request; checks the trace and
/// returns the request's status.
async fn killed_mid_decode(flags: &[&str], salt: u64) -> u16 {
    let rotel = Rotel::start();
    let svc = Service::start_with(
        flags,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .unwrap_or_else(|(code, log)| panic!("service exited ({code:?}):\n{log}"));
    let (_, h) = svc.get_json("/health").await;
    let pid = h["worker_pid"].as_u64().expect("worker pid in /health") as u32;
    let trace_id = new_trace_id(salt);
    let traceparent = format!("00-{trace_id}-{CLIENT_SPAN_ID}-01");

    let request = {
        let base = svc.base.clone();
        let bytes = std::fs::read(fixture("clip10.wav")).unwrap();
        let tp = traceparent.clone();
        tokio::spawn(async move {
            let form = upload_form(bytes, "clip10.wav", &[]);
            let r = client()
                .post(format!("{base}/v1/audio/transcriptions"))
                .header("traceparent", tp)
                .multipart(form)
                .send()
                .await
                .expect("the request gets an answer");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, h) = svc.get_json("/health").await;
        if h["worker_state"] == "busy" {
            break;
        }
        assert!(Instant::now() < deadline, "worker never became busy: {h}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(pid, libc::SIGKILL);
    let (status, body) = request.await.unwrap();

    // Whether the node retried the job on a fresh worker (200) or answered
    // the crash (5xx) is the restart policy's business; either way the
    // trace must be complete and show the crash.
    let spans = rotel
        .wait_trace(&trace_id, "the crashed request's spans", |s| {
            s.iter().any(|x| x.name == "http.request")
                && s.iter().any(|x| x.name == "worker.decode" && x.is_error())
        })
        .await;
    assert_complete(&spans);
    let http = one(&spans, "http.request");
    assert_eq!(
        http.int("http.response.status_code"),
        i64::from(status),
        "{body}"
    );
    let job = one(&spans, "asr.job");
    let crashed: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "worker.decode" && s.is_error())
        .collect();
    assert_eq!(crashed.len(), 1, "{crashed:#?}");
    let crashed = crashed[0];
    assert_eq!(crashed.parent_id, job.id);
    assert_eq!(crashed.attr("outcome"), "worker_crashed");
    assert_eq!(crashed.int("worker_generation"), 0);
    assert!(crashed.status_message.contains("SIGKILL"), "{crashed:#?}");
    assert!(crashed.attr("error").contains("SIGKILL"), "{crashed:#?}");
    assert!(
        children(&spans, crashed).is_empty(),
        "the killed worker reported no phases"
    );
    assert!(spans
        .iter()
        .any(|s| s.name == "queue.wait" && s.parent_id == job.id));

    if status == 200 {
        // Retried on the restarted worker, in the same trace.
        let ok: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "worker.decode" && !s.is_error())
            .collect();
        assert_eq!(ok.len(), 1, "{spans:#?}");
        assert_eq!(ok[0].attr("outcome"), "ok");
        assert_eq!(ok[0].int("worker_generation"), 1);
        assert_eq!(ok[0].int("attempt"), 1);
        assert!(ok[0].start_ns >= crashed.end_ns);
        assert!(children(&spans, ok[0]).iter().any(|p| p.name == "generate"));
        assert_eq!(
            spans.iter().filter(|s| s.name == "queue.wait").count(),
            2,
            "queued again for the retry"
        );
        assert!(!http.is_error());
    } else {
        assert!((500..600).contains(&status), "{status}: {body}");
        assert!(
            http.is_error(),
            "a 5xx server span has an error status: {http:#?}"
        );
        assert_eq!(
            spans.iter().filter(|s| s.name == "worker.decode").count(),
            1
        );
    }
    for s in &spans {
        assert_eq!(s.service, "whisper-node", "the default service name");
    }
    status
}

#[test]
fn rotel_debug_output_is_parsed() {
    let out = "ResourceSpans #0\nResource attributes:\n     -> service.name: Str(svc)\nScopeSpans #0\n\
               InstrumentationScope s \nSpan #0\n    Trace ID       : 0af7651916cd43dd8448eb211c80319c\n\
               \x20   Parent ID      : 00f067aa0ba902b7\n    ID             : b7ad6b7169203331\n\
               \x20   Name           : http.request\n    Kind           : SPAN_KIND_SERVER\n\
               Start time: 1700000000000000000\nEnd time: 1700000001000000000\n\
               \x20   Status code    : STATUS_CODE_ERROR\n    Status message : boom: x\nAttributes:\n\
               \x20    -> job_id: Int(3)\n     -> x y: Str(a \"b\" c)\nEvents:\nSpanEvent #0\n\
               \x20    -> Name: done\n     -> Attributes::\n          -> level: Str(INFO)";
    let spans = parse_spans(out);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.service, "svc");
    assert_eq!(s.parent_id, "00f067aa0ba902b7");
    assert_eq!(s.name, "http.request");
    assert_eq!(s.end_ns - s.start_ns, 1_000_000_000);
    assert_eq!(s.status_message, "boom: x");
    assert_eq!(s.int("job_id"), 3);
    assert_eq!(s.attr("x y"), "a \"b\" c");
    assert!(
        !s.attrs.contains_key("level"),
        "event attributes are not span attributes"
    );
}
