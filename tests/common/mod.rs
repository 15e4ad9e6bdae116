//! Shared harness for the integration tests: starts the real `whisper-node`
//! binary (which spawns the real `worker-proc` with the real model) on an
//! ephemeral port, and talks to it over HTTP.
#![allow(dead_code)]

pub mod postgres;
pub mod speech;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Repo root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real model; CI always has it (`make test` fetches it).
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("WHISPER_NODE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/tiny.en"));
    assert!(
        dir.join("model.bin").exists(),
        "model not found at {}: run `make model` (or `make test`, which fetches it)",
        dir.display()
    );
    dir
}

/// The service binary under test.
pub fn service_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_whisper-node"))
}

/// The worker binary (built by `make test` before the tests run).
pub fn worker_bin() -> PathBuf {
    let p = std::env::var_os("WHISPER_NODE_WORKER_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| service_bin().with_file_name("worker-proc"));
    assert!(
        p.exists(),
        "worker-proc not found at {}: run `make build`",
        p.display()
    );
    p
}

/// A speech fixture.
pub fn fixture(name: &str) -> PathBuf {
    let p = repo().join("tests/fixtures/speech").join(name);
    assert!(p.exists(), "fixture {} missing", p.display());
    p
}

/// Duration of a speech fixture in seconds, from `manifest.json`.
pub fn fixture_secs(name: &str) -> f64 {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/speech/manifest.json")).unwrap(),
    )
    .unwrap();
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == name)
        .and_then(|f| f["duration_s"].as_f64())
        .unwrap_or_else(|| panic!("{name} not in manifest.json"))
}

/// A running service process; SIGKILLed on drop.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// The async job store's folder, unless the test chose one: the store
    /// locks its folder, so services started in parallel need their own.
    _jobs_dir: Option<tempfile::TempDir>,
}

impl Service {
    /// Starts the service with the default test settings plus `extra` flags,
    /// and waits until it listens (the model is loaded by then).
    pub fn start(extra: &[&str]) -> Service {
        Self::start_with(extra, &[]).expect("service failed to start")
    }

    /// Starts the service; `Err` carries its log if it exited before it
    /// answered `/health`.
    ///
    /// The test binds the listening socket itself (port 0), so it knows the
    /// address before the service starts, and hands it over as fd 3
    /// (`--listen-fd 3`).
    pub fn start_with(
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Service, (Option<i32>, String)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let listen_fd = {
            use std::os::fd::AsRawFd;
            listener.as_raw_fd()
        };
        let mut cmd = Command::new(service_bin());
        cmd.args(["--listen-fd", "3", "--http-workers", "2"]);
        if !extra.contains(&"--model-dir") {
            cmd.arg("--model-dir").arg(model_dir());
        }
        let jobs_dir = (!extra.contains(&"--jobs-data-dir")
            && !env.iter().any(|(k, _)| *k == "WHISPER_NODE_JOBS_DATA_DIR"))
        .then(|| tempfile::tempdir().expect("a temporary jobs data dir"));
        if let Some(dir) = &jobs_dir {
            cmd.arg("--jobs-data-dir").arg(dir.path());
        }
        // One worker, unless the test asks for a pool: most tests check one
        // worker's behaviour (its pid, its crash, its queue); pools are
        // tests/workers.rs's.
        let pool_asked = extra.iter().any(|a| *a == "--workers" || *a == "--devices")
            || env
                .iter()
                .any(|(k, _)| *k == "WHISPER_NODE_WORKERS" || *k == "WHISPER_NODE_DEVICES");
        if !pool_asked {
            cmd.args(["--workers", "1"]);
        }
        // Batching off unless the test asks (tests/batching.rs): the other
        // tests count on exact queue capacities and one job per decode.
        let batching_asked = extra.contains(&"--max-batch")
            || env.iter().any(|(k, _)| *k == "WHISPER_NODE_MAX_BATCH");
        if !batching_asked {
            cmd.args(["--max-batch", "1"]);
        }
        cmd.arg("--worker-path")
            .arg(worker_bin())
            .args(["--threads", "2"])
            .args(extra)
            .env("RUST_LOG", "info,ractor=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The service dies with the test binary, whatever happens; it gets
        // the listener as fd 3 (dup2 leaves the copy open across exec).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if listen_fd == 3 {
                    // dup2 onto itself is a no-op that keeps close-on-exec
                    // (fd 3 is free once an earlier test closed its files).
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(listen_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = spawn_from_long_lived_thread(cmd).expect("spawn whisper-node");
        // The service owns the socket now; the test's copy would keep the
        // port accepting connections after the service died.
        drop(listener);
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                // Lossy and unstoppable: the service's stderr must be drained
                // for as long as it runs, whatever bytes it writes.
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    eprintln!("[svc] {line}");
                    logs.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        // Up once `/health` answers (the model is loaded by then: the
        // service serves HTTP only after its worker said hello).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if health_answers(addr) {
                return Ok(Service {
                    child,
                    base: format!("http://{addr}"),
                    logs,
                    _jobs_dir: jobs_dir,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                let log = logs.lock().unwrap().join("\n");
                return Err((status.code(), log));
            }
            assert!(
                Instant::now() < deadline,
                "service did not answer /health within 120 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the service logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Whether the service logs `needle` within 10 s (its log lines reach
    /// the test through a reader thread, a moment after they are written).
    pub async fn logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The child process handle (for signals and exit status).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// GET a path, returning status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get_json("/ready").await;
            if status == 200 {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {within:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs a file to `/v1/audio/transcriptions` with extra form fields.
    pub async fn transcribe(&self, file: &Path, fields: &[(&str, &str)]) -> Answer {
        let bytes = std::fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        self.transcribe_bytes(bytes, &name, fields, &[]).await
    }

    /// POSTs raw bytes as the `file` part.
    pub async fn transcribe_bytes(
        &self,
        bytes: Vec<u8>,
        filename: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        post(&self.base, bytes, filename, fields, headers).await
    }

    /// Starts a transcription of a fixture in the background.
    pub fn spawn_transcribe(
        &self,
        fixture_name: &str,
        headers: &[(&str, &str)],
    ) -> tokio::task::JoinHandle<Answer> {
        let base = self.base.clone();
        let bytes = std::fs::read(fixture(fixture_name)).unwrap();
        let name = fixture_name.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::spawn(async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            post(&base, bytes, &name, &[], &h).await
        })
    }

    /// Polls `/health` until `pred` holds.
    pub async fn wait_health(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, h) = self.get_json("/health").await;
            if pred(&h) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not reached within {within:?}: {h}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A 16 kHz mono 16-bit PCM WAV of `samples`.
pub fn wav_16k(samples: &[i16]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("WAV header");
    for &s in samples {
        w.write_sample(s).expect("WAV sample");
    }
    w.finalize().expect("WAV finalize");
    out.into_inner()
}

/// A multipart form: `bytes` as the `file` part named `filename`, then
/// `fields`.
pub fn upload_form(
    bytes: Vec<u8>,
    filename: &str,
    fields: &[(&str, &str)],
) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    form
}

/// POSTs raw bytes as the `file` part of a transcription request.
pub async fn post(
    base: &str,
    bytes: Vec<u8>,
    filename: &str,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Answer {
    let form = upload_form(bytes, filename, fields).text("model", "whisper-1");
    let mut req = client()
        .post(format!("{base}/v1/audio/transcriptions"))
        .multipart(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("POST transcription");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        text,
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub text: String,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `text` field of a JSON answer, lower-cased.
    pub fn transcript(&self) -> String {
        assert_eq!(
            self.status, 200,
            "expected 200, got {}: {}",
            self.status, self.text
        );
        self.json()["text"]
            .as_str()
            .expect("text field")
            .to_lowercase()
    }
}

/// A client with a generous timeout (tests never hang forever).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// Asserts that every key word appears in the transcript.
pub fn assert_words(transcript: &str, words: &[&str]) {
    let t = transcript.to_lowercase();
    let missing: Vec<_> = words
        .iter()
        .filter(|w| !t.contains(&w.to_lowercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} in transcript: {transcript:?}"
    );
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // state is the field after the parenthesised command name
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// Pids of processes whose executable is `worker-proc` and whose parent is `ppid`.
pub fn worker_children(ppid: u32) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = stat.rsplit(')').next().unwrap_or("");
        let mut f = after.split_whitespace();
        let _state = f.next();
        let parent: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if parent == ppid && stat.contains("(worker-proc)") {
            out.push(pid);
        }
    }
    out
}

/// PR_SET_PDEATHSIG fires when the thread that forked the child exits, and
/// test threads end with their test: fork every service from one thread that
/// lives as long as the test binary.
fn spawn_from_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    type Req = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<Mutex<mpsc::Sender<Req>>> = std::sync::OnceLock::new();
    let tx = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Req>();
            std::thread::spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            });
            Mutex::new(tx)
        })
        .lock()
        .unwrap()
        .clone();
    let (reply, rx) = mpsc::channel();
    tx.send((cmd, reply)).expect("spawner thread alive");
    rx.recv().expect("spawner answered")
}

/// Whether `GET /health` on `addr` answers 200 within a moment (a plain
/// blocking HTTP/1.0 exchange: usable before any runtime exists).
fn health_answers(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(300)));
    if stream
        // No Host header (HTTP/1.0): the Host check lets it through
        // whatever --allowed-hosts says.
        .write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.1 200") || head[..got].starts_with(b"HTTP/1.0 200")
}

/// Sends a signal.
pub fn signal(pid: u32, sig: i32) {
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The observability test tools (rotel, prometheus_client) that
/// `scripts/setup-system.sh` installs (`make setup`); panics, saying so, when
/// they are missing. `WHISPER_NODE_OTEL_TOOLS` overrides the folder.
pub fn otel_tools_dir() -> PathBuf {
    let dir = std::env::var_os("WHISPER_NODE_OTEL_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/otel-test"));
    for needed in ["rotel/rotel-agent", "prometheus_client/parser.py"] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: run `make setup` (scripts/setup-system.sh installs rotel and prometheus_client there)",
            dir.join(needed).display()
        );
    }
    dir
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POSTs a fixture with `stream=true` and `fields`; asserts the 200 and
/// the event-stream type, and returns the response to read the events from.
pub async fn post_stream(
    base: &str,
    fixture_name: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let bytes = std::fs::read(fixture(fixture_name)).unwrap();
    let form = upload_form(bytes, fixture_name, fields).text("stream", "true");
    let r = client()
        .post(format!("{base}/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .await
        .expect("POST stream");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    r
}

/// POSTs raw bytes as the `file` part of an async job (`POST /v1/jobs`).
pub async fn post_job(
    base: &str,
    bytes: Vec<u8>,
    filename: &str,
    fields: &[(&str, &str)],
) -> Answer {
    let r = client()
        .post(format!("{base}/v1/jobs"))
        .multipart(upload_form(bytes, filename, fields))
        .send()
        .await
        .expect("POST job");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        text,
    }
}

impl Service {
    /// Submits a fixture as an async job; asserts the 202 and returns the id.
    pub async fn submit_job(&self, fixture_name: &str, fields: &[(&str, &str)]) -> String {
        let bytes = std::fs::read(fixture(fixture_name)).unwrap();
        let a = post_job(&self.base, bytes, fixture_name, fields).await;
        assert_eq!(a.status, 202, "job not accepted: {}", a.text);
        let id = a.json()["id"].as_str().expect("job id").to_string();
        assert_eq!(
            a.headers.get("location").and_then(|l| l.to_str().ok()),
            Some(format!("/v1/jobs/{id}").as_str()),
            "Location header"
        );
        id
    }

    /// Polls `GET /v1/jobs/{id}` until `pred` holds; returns the job.
    pub async fn wait_job(
        &self,
        id: &str,
        what: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, job) = self.get_json(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, 200, "GET job {id}: {job}");
            if pred(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {what} not reached within {within:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A cue time `HH:MM:SS<frac_sep>mmm` in seconds.
pub fn parse_ts(ts: &str, frac_sep: char) -> f64 {
    let (hms, ms) = ts
        .split_once(frac_sep)
        .unwrap_or_else(|| panic!("bad timestamp {ts:?}"));
    let p: Vec<f64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    assert_eq!(p.len(), 3, "HH:MM:SS in {ts:?}");
    assert_eq!(ms.len(), 3, "milliseconds in {ts:?}");
    p[0] * 3600.0 + p[1] * 60.0 + p[2] + ms.parse::<f64>().unwrap() / 1000.0
}

/// Checks the cue blocks of an `srt` (`numbered`, `,`) or `vtt` body (`.`):
/// optional number, `start --> end`, non-empty text; returns (start, end,
/// text) per cue.
pub fn cues(body: &str, frac_sep: char, numbered: bool) -> Vec<(f64, f64, String)> {
    let mut out = vec![];
    for block in body.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        let mut lines = block.lines();
        if numbered {
            let n: usize = lines.next().unwrap().trim().parse().expect("cue number");
            assert_eq!(n, out.len() + 1, "cues numbered from 1 in order");
        }
        let timing = lines.next().expect("timing line");
        let (a, b) = timing
            .split_once(" --> ")
            .unwrap_or_else(|| panic!("bad timing line {timing:?}"));
        let (start, end) = (parse_ts(a.trim(), frac_sep), parse_ts(b.trim(), frac_sep));
        assert!(start <= end, "cue starts after it ends: {timing}");
        let text = lines.collect::<Vec<_>>().join(" ");
        assert!(!text.trim().is_empty(), "cue without text: {block}");
        out.push((start, end, text));
    }
    out
}
