//! `fake-worker`: a stand-in for `worker-proc` that speaks the IPC protocol
//! (`asr_ipc`) but has no engine. It exists for the tests of the worker
//! proxy's crash and handshake paths (`fake-worker/tests/`) and answers
//! every job it serves with a `Failed` engine error, so no test can take
//! its answers for a transcript.
//!
//! It takes worker-proc's arguments and reads only `--model-dir`, a
//! directory the test prepares: `scenario` holds one behaviour per line,
//! the *n*th line for the *n*th start (the last line for any later one);
//! `spawns` counts the starts; `log` gets a line per job received
//! (`gen G job ID marker M`, the marker being the job's first sample).
//!
//! Behaviours: `exit-before-hello` (exit code 3 at once), `load-failed`
//! (`LoadFailed`, exit 1), `wrong-version` (a `Hello` of another protocol
//! version), `garbage` (bytes that are not a frame on stdout), `silent`
//! (never a `Hello`), `serve` (answer each job `Failed`),
//! `crash-on-job` (abort, SIGABRT, once a job's audio is in),
//! `crash-when-staged` (take a first job without answering, exit 3 once a
//! second one is in).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asr_ipc::{FromWorker, ToWorker, WorkerError};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// This start's number and its behaviour.
fn scenario(dir: &Path) -> (usize, String) {
    let spawns = dir.join("spawns");
    let n: usize = std::fs::read_to_string(&spawns)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(&spawns, (n + 1).to_string()).expect("writing spawns");
    let lines: Vec<String> = std::fs::read_to_string(dir.join("scenario"))
        .expect("a scenario file in --model-dir")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines.get(n).or(lines.last()).cloned().unwrap_or_default();
    (n, line)
}

type Out = Arc<Mutex<std::io::Stdout>>;

fn send(out: &Out, msg: &FromWorker) {
    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
    if asr_ipc::write_frame(&mut *o, msg).is_err() {
        std::process::exit(0); // the parent is gone
    }
}

fn hello(version: u32) -> FromWorker {
    FromWorker::Hello(asr_ipc::Hello {
        protocol_version: version,
        worker_version: "fake".into(),
        model: "fake".into(),
        multilingual: false,
        device: "cpu".into(),
        compute_type: "none".into(),
        threads: 1,
        load_ms: 1,
        pid: std::process::id(),
        engine: Default::default(),
    })
}

/// Reads stdin until EOF (the parent closed it or died), then exits.
fn wait_for_eof() -> ! {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    std::process::exit(0)
}

fn main() {
    let dir = PathBuf::from(arg("--model-dir").expect("--model-dir"));
    let interval = Duration::from_millis(
        arg("--heartbeat-interval-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(asr_ipc::DEFAULT_HEARTBEAT_INTERVAL_MS),
    );
    let (generation, behaviour) = scenario(&dir);
    eprintln!("fake-worker: start {generation}, behaviour {behaviour}");
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    match behaviour.as_str() {
        "exit-before-hello" => std::process::exit(3),
        "load-failed" => {
            send(
                &out,
                &FromWorker::LoadFailed(asr_ipc::LoadFailure {
                    model_path: dir.display().to_string(),
                    cause: "fake: no model here".into(),
                }),
            );
            std::process::exit(1);
        }
        "wrong-version" => {
            send(&out, &hello(asr_ipc::PROTOCOL_VERSION + 1));
            wait_for_eof();
        }
        "garbage" => {
            let mut o = out.lock().unwrap();
            let _ = o.write_all(b"this is not a frame\n");
            let _ = o.flush();
            drop(o);
            wait_for_eof();
        }
        "silent" => wait_for_eof(),
        "serve" | "crash-on-job" | "crash-when-staged" => {}
        other => panic!("unknown behaviour {other:?}"),
    }
    send(&out, &hello(asr_ipc::PROTOCOL_VERSION));
    let beat = out.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(interval);
        send(&beat, &FromWorker::Heartbeat { running: None });
    });
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .expect("opening the log");
    let mut stdin = std::io::stdin().lock();
    let mut assembler = asr_ipc::JobAssembler::default();
    let mut held = 0;
    loop {
        let frame = match asr_ipc::read_frame(&mut stdin) {
            Ok(Some(f)) => f,
            Ok(None) => std::process::exit(0),
            Err(e) => panic!("reading a frame: {e}"),
        };
        let job = match asr_ipc::decode::<ToWorker>(&frame).expect("a valid frame") {
            ToWorker::Job(h) => assembler.header(h).expect("a header in turn"),
            ToWorker::AudioChunk(c) => assembler.chunk(c).expect("a chunk in turn"),
            ToWorker::Cancel { .. } => None,
            // Its jobs are served one by one as they come in.
            ToWorker::Batch { .. } => None,
            ToWorker::Shutdown => std::process::exit(0),
        };
        let Some(job) = job else { continue };
        let marker = job.samples.first().copied().unwrap_or(0);
        writeln!(log, "gen {generation} job {} marker {marker}", job.id).expect("logging");
        match behaviour.as_str() {
            "crash-on-job" => std::process::abort(),
            "crash-when-staged" => {
                held += 1;
                if held == 2 {
                    std::process::exit(3);
                }
            }
            _ => send(
                &out,
                &FromWorker::Failed {
                    job_id: job.id,
                    error: WorkerError::Engine(format!(
                        "fake worker: job {} marker {marker}",
                        job.id
                    )),
                },
            ),
        }
    }
}
