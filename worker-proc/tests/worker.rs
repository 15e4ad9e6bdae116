//! Worker-level integration tests: the real `worker-proc` binary, the real
//! model, real (espeak-ng) speech, framed IPC over pipes.
//!
//! The model directory comes from `WHISPER_NODE_TEST_MODEL_DIR`, else
//! `../models/tiny.en` next to this crate. A missing model fails the tests
//! loudly: CI always has it.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use asr_ipc::{
    read_frame, write_frame, write_job, DecodeOptions, Fault, FromWorker, Job, JobHeader, ToWorker,
    WorkerError,
};

const TIMEOUT: Duration = Duration::from_secs(120);

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("WHISPER_NODE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny.en"));
    assert!(
        dir.join("model.bin").is_file(),
        "no Whisper model at {} (set WHISPER_NODE_TEST_MODEL_DIR to a CTranslate2 Whisper model \
         directory with model.bin, config.json, vocabulary.txt, tokenizer.json and \
         preprocessor_config.json)",
        dir.display()
    );
    dir
}

/// A 16 kHz 16-bit WAV, `path` relative to this crate.
fn read_wav(path: &str) -> Vec<i16> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    let mut reader = hound::WavReader::open(&full).expect(path);
    assert_eq!(reader.spec().sample_rate, 16_000);
    reader.samples::<i16>().map(|s| s.expect("pcm")).collect()
}

/// "Hello world. This is a test of the speech worker." (espeak-ng, 16 kHz).
fn speech() -> Vec<i16> {
    read_wav("tests/data/hello.wav")
}

/// At least 65 s of distinct speech, three 30 s windows: the repository's
/// 62 s read passage (`tests/fixtures/speech/long60.wav`) then [`speech`].
/// Not one clip repeated: Whisper meets repeated audio with repetition and
/// temperature fallback, which samples, so its segments differ run to run.
fn three_windows_of_speech() -> Vec<i16> {
    let mut long = read_wav("../tests/fixtures/speech/long60.wav");
    let hello = speech();
    while long.len() < 16_000 * 65 {
        long.extend_from_slice(&hello);
    }
    long
}

/// Heartbeats received: when, and the job the worker said was running.
type Heartbeats = Arc<Mutex<Vec<(Instant, Option<u64>)>>>;

/// A running worker with a thread turning its stdout into frames
/// (heartbeats are set aside in `heartbeats`, with their arrival times).
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Result<FromWorker, String>>,
    heartbeats: Heartbeats,
}

impl Worker {
    fn spawn(model: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker-proc"));
        cmd.arg("--model-dir")
            .arg(model)
            .args(["--threads", "2"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn worker-proc");
        let mut stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let heartbeats: Heartbeats = Arc::default();
        let beats = heartbeats.clone();
        thread::spawn(move || loop {
            match read_frame(&mut stdout) {
                Ok(Some(payload)) => {
                    let msg = asr_ipc::decode::<FromWorker>(&payload).map_err(|e| e.to_string());
                    if let Ok(FromWorker::Heartbeat { running }) = msg {
                        beats.lock().unwrap().push((Instant::now(), running));
                        continue;
                    }
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(format!("garbage on stdout: {e}")));
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            frames: rx,
            heartbeats,
        }
    }

    /// Heartbeats received so far.
    fn heartbeats(&self) -> Vec<(Instant, Option<u64>)> {
        self.heartbeats.lock().unwrap().clone()
    }

    /// Sends a whole job: its header, then its audio in chunks.
    fn send_job(&mut self, job: &Job) {
        let header = JobHeader {
            id: job.id,
            traceparent: job.traceparent.clone(),
            sample_count: job.samples.len() as u64,
            options: job.options.clone(),
            fault: job.fault,
            stream_segments: job.stream_segments,
        };
        write_job(
            self.stdin.as_mut().expect("stdin open"),
            &header,
            &job.samples,
        )
        .expect("write job");
    }

    fn next(&self) -> FromWorker {
        match self.frames.recv_timeout(TIMEOUT) {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("no frame from the worker: {e}"),
        }
    }

    fn send(&mut self, msg: &ToWorker) {
        write_frame(self.stdin.as_mut().expect("stdin open"), msg).expect("write frame");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write");
        stdin.flush().expect("flush");
    }

    fn hello(&self) -> asr_ipc::Hello {
        match self.next() {
            FromWorker::Hello(h) => h,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    /// Frames until the job's answer; returns (progress count, answer).
    /// The job did not ask for streamed segments: progress carries none.
    fn answer(&self, job_id: u64) -> (usize, FromWorker) {
        let (streamed, answer) = self.answer_streamed(job_id);
        for (i, segments) in streamed.iter().enumerate() {
            assert!(segments.is_empty(), "progress {i} carries segments");
        }
        (streamed.len(), answer)
    }

    /// Frames until the job's answer; returns the segments of each progress
    /// frame and the answer.
    fn answer_streamed(&self, job_id: u64) -> (Vec<Vec<asr_ipc::Segment>>, FromWorker) {
        let mut streamed = Vec::new();
        loop {
            match self.next() {
                FromWorker::Progress {
                    job_id: id,
                    decoded_secs,
                    total_secs,
                    segments,
                } => {
                    assert_eq!(id, job_id);
                    assert!(
                        decoded_secs <= total_secs + 1e-3,
                        "{decoded_secs} > {total_secs}"
                    );
                    streamed.push(segments);
                }
                msg @ (FromWorker::Done(_) | FromWorker::Failed { .. }) => return (streamed, msg),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "worker did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// No frame (and no byte) after the ones already read.
    fn assert_stdout_done(&self) {
        match self.frames.recv_timeout(Duration::from_secs(5)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            other => panic!("expected nothing more on stdout, got {other:?}"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn job(id: u64, samples: Vec<i16>, options: DecodeOptions) -> Job {
    Job {
        id,
        traceparent: None,
        samples,
        options,
        fault: None,
        stream_segments: false,
    }
}

#[test]
fn decodes_real_speech_keeps_serving_and_exits_on_eof() {
    let model = model_dir();
    let mut w = Worker::spawn(&model, &[], &[]);
    let hello = w.hello();
    assert_eq!(hello.protocol_version, asr_ipc::PROTOCOL_VERSION);
    assert_eq!(hello.pid, w.child.id());
    assert_eq!(hello.device, "cpu");
    assert_eq!(hello.compute_type, "int8");
    assert_eq!(hello.threads, 2);
    // The engine reports the library it really loaded and what it runs on.
    assert_eq!(hello.engine.version, "4.8.4");
    assert!(
        hello.engine.library.contains("libctranslate2")
            || hello.engine.library.starts_with("static"),
        "{:?}",
        hello.engine
    );
    assert!(
        hello.engine.backend.starts_with("cpu, "),
        "{:?}",
        hello.engine
    );
    assert!(
        hello
            .engine
            .system_config
            .iter()
            .any(|l| l.contains("Selected ISA")),
        "{:?}",
        hello.engine
    );
    assert!(!hello.model.is_empty());

    let samples = speech();
    let duration = samples.len() as f32 / 16_000.0;
    w.send_job(&job(1, samples.clone(), DecodeOptions::default()));
    let (progress, answer) = w.answer(1);
    let FromWorker::Done(result) = answer else {
        panic!("expected Done, got {answer:?}")
    };
    assert!(progress >= 1);
    let text = result.text.to_lowercase();
    for word in ["hello", "world", "test", "speech"] {
        assert!(text.contains(word), "{word:?} missing from {text:?}");
    }
    assert_eq!(result.job_id, 1);
    assert_eq!(result.language, "en");
    assert!((result.duration_secs - duration).abs() < 1e-3);
    assert!(!result.segments.is_empty());
    for s in &result.segments {
        assert!(
            s.start >= 0.0 && s.start < s.end && s.end <= duration + 0.5,
            "{s:?}"
        );
        assert!(s.avg_logprob < 0.0 && s.avg_logprob > -1.0, "{s:?}");
    }
    let names: Vec<&str> = result
        .timings
        .phases
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(&names[..3], &["features", "encode", "generate"]);
    assert!(result.timings.total_us > 0);

    // Invalid jobs fail without killing the worker.
    let de = DecodeOptions {
        language: Some("de".into()),
        ..DecodeOptions::default()
    };
    w.send_job(&job(2, samples.clone(), de));
    assert!(matches!(
        w.answer(2).1,
        FromWorker::Failed {
            job_id: 2,
            error: WorkerError::InvalidOptions(_)
        }
    ));
    w.send_job(&job(3, vec![], DecodeOptions::default()));
    assert!(matches!(
        w.answer(3).1,
        FromWorker::Failed {
            job_id: 3,
            error: WorkerError::InvalidAudio(_)
        }
    ));
    // (Non-finite samples cannot happen: the audio is 16-bit PCM.)
    let beam0 = DecodeOptions {
        beam_size: 0,
        ..DecodeOptions::default()
    };
    w.send_job(&job(5, samples.clone(), beam0));
    assert!(matches!(
        w.answer(5).1,
        FromWorker::Failed {
            job_id: 5,
            error: WorkerError::InvalidOptions(_)
        }
    ));

    // Still serving; two jobs staged back to back are answered in order.
    let greedy = DecodeOptions {
        beam_size: 1,
        ..DecodeOptions::default()
    };
    w.send_job(&job(6, samples.clone(), greedy.clone()));
    w.send_job(&job(7, samples, greedy));
    for id in [6, 7] {
        let FromWorker::Done(again) = w.answer(id).1 else {
            panic!("expected Done for job {id}")
        };
        assert_eq!(again.job_id, id);
        assert!(again.text.to_lowercase().contains("hello"));
    }

    w.close_stdin();
    let status = w.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
    w.assert_stdout_done();
}

#[test]
fn shutdown_exits_cleanly() {
    let mut w = Worker::spawn(&model_dir(), &[], &[]);
    w.hello();
    w.send(&ToWorker::Shutdown);
    assert_eq!(w.wait().code(), Some(0));
    w.assert_stdout_done();
}

#[test]
fn malformed_frame_exits_nonzero_without_writing_garbage() {
    let mut w = Worker::spawn(&model_dir(), &[], &[]);
    w.hello();
    // A well-framed payload that is not a ToWorker.
    let payload = [0xffu8; 9];
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    w.send_raw(&frame);
    let status = w.wait();
    assert_eq!(status.code(), Some(4), "{status:?}");
    w.assert_stdout_done();

    // An oversized length prefix.
    let mut w = Worker::spawn(&model_dir(), &[], &[]);
    w.hello();
    w.send_raw(&u32::MAX.to_be_bytes());
    assert_eq!(w.wait().code(), Some(4));
    w.assert_stdout_done();
}

#[test]
fn load_failure_is_reported_with_exit_code_3() {
    let mut w = Worker::spawn(std::path::Path::new("/nonexistent/tiny.en"), &[], &[]);
    match w.next() {
        FromWorker::LoadFailed(f) => {
            assert_eq!(f.model_path, "/nonexistent/tiny.en");
            assert!(f.cause.contains("does not exist"), "{}", f.cause);
        }
        other => panic!("expected LoadFailed, got {other:?}"),
    }
    assert_eq!(w.wait().code(), Some(3));

    // A model directory without preprocessor_config.json.
    let model = model_dir();
    let broken = std::env::temp_dir().join(format!("worker-proc-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&broken);
    std::fs::create_dir_all(&broken).unwrap();
    for f in [
        "model.bin",
        "config.json",
        "vocabulary.txt",
        "tokenizer.json",
    ] {
        if model.join(f).exists() {
            std::os::unix::fs::symlink(model.join(f).canonicalize().unwrap(), broken.join(f))
                .unwrap();
        }
    }
    let mut w = Worker::spawn(&broken, &[], &[]);
    match w.next() {
        FromWorker::LoadFailed(f) => {
            assert!(f.cause.contains("preprocessor_config.json"), "{}", f.cause)
        }
        other => panic!("expected LoadFailed, got {other:?}"),
    }
    assert_eq!(w.wait().code(), Some(3));
    let _ = std::fs::remove_dir_all(&broken);
}

#[test]
fn faults_are_honoured_only_when_enabled() {
    let model = model_dir();
    let samples = speech();

    // Disabled: the crash request is ignored and the job decodes.
    let mut w = Worker::spawn(&model, &[], &[]);
    w.hello();
    let mut j = Job {
        id: 1,
        traceparent: None,
        samples: samples.clone(),
        options: DecodeOptions {
            beam_size: 1,
            ..DecodeOptions::default()
        },
        fault: Some(Fault::Crash),
        stream_segments: false,
    };
    w.send_job(&j);
    assert!(matches!(w.answer(1).1, FromWorker::Done(_)));
    w.close_stdin();
    assert_eq!(w.wait().code(), Some(0));

    // Enabled: SIGABRT at the start of the job, nothing more on stdout.
    let mut w = Worker::spawn(&model, &["--enable-fault-injection"], &[]);
    w.hello();
    w.send_job(&j);
    let status = w.wait();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    w.assert_stdout_done();

    // SlowMs delays and then decodes.
    let mut w = Worker::spawn(&model, &["--enable-fault-injection"], &[]);
    w.hello();
    j.fault = Some(Fault::SlowMs(300));
    let t = Instant::now();
    w.send_job(&j);
    assert!(matches!(w.answer(1).1, FromWorker::Done(_)));
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Hang: no answer, the process stays alive until the parent kills it.
    let mut w = Worker::spawn(&model, &["--enable-fault-injection"], &[]);
    w.hello();
    j.fault = Some(Fault::Hang);
    w.send_job(&j);
    assert!(matches!(
        w.frames.recv_timeout(Duration::from_secs(2)),
        Err(mpsc::RecvTimeoutError::Timeout)
    ));
    assert!(
        w.child.try_wait().expect("try_wait").is_none(),
        "a hung worker must stay alive"
    );
    w.child.kill().expect("kill");
    assert_eq!(w.wait().signal(), Some(libc::SIGKILL));

    // Injected load failure: exit 5 before any frame.
    let mut w = Worker::spawn(
        &model,
        &["--enable-fault-injection"],
        &[("WORKER_PROC_FAULT_ON_LOAD", "exit")],
    );
    assert_eq!(w.wait().code(), Some(5));
    w.assert_stdout_done();
}

#[test]
fn stray_stdout_prints_cannot_reach_the_protocol() {
    // CTranslate2 logs at info level through spdlog; all of it must land on
    // stderr, and stdout must hold nothing but frames.
    let mut w = Worker::spawn(&model_dir(), &["--log-level", "info"], &[]);
    w.hello();
    w.send_job(&job(
        9,
        speech(),
        DecodeOptions {
            beam_size: 1,
            ..DecodeOptions::default()
        },
    ));
    assert!(matches!(w.answer(9).1, FromWorker::Done(_)));
    w.close_stdin();
    assert_eq!(w.wait().code(), Some(0));
    w.assert_stdout_done();
}

#[test]
fn suppressed_tokens_match_the_model_config() {
    // faster-whisper computes its suppress list from the tokenizer; the
    // converter stored the same list in config.json for this model.
    let model = model_dir();
    let tok = worker_proc::tokenizer::WhisperTokenizer::load(&model).expect("tokenizer");
    let ours = tok.suppressed_tokens().expect("suppressed tokens");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let mut theirs: Vec<i32> = config["suppress_ids"]
        .as_array()
        .expect("suppress_ids")
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect();
    theirs.sort_unstable();
    assert_eq!(ours, theirs);
    // Special ids come from the vocabulary.
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(tok.eot));
    assert_eq!(tok.id_to_token(tok.timestamp_begin), Some("<|0.00|>"));
}

#[test]
fn transcribe_subcommand_prints_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker-proc"))
        .arg("--model-dir")
        .arg(model_dir())
        .args(["--threads", "2", "transcribe"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/hello.wav"))
        .args(["--beam-size", "1", "--runs", "2", "--json"])
        .output()
        .expect("run transcribe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert!(doc["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("hello"));
    assert_eq!(doc["runs"], 2);
    assert_eq!(doc["timings_ms"]["total_all"].as_array().unwrap().len(), 2);
    assert!(doc["timings_ms"]["encode_median"].as_f64().unwrap() > 0.0);
    assert!(!doc["segments"].as_array().unwrap().is_empty());

    // A file that is not 16 kHz mono is refused with a hint.
    let bad = std::env::temp_dir().join(format!("worker-proc-8k-{}.wav", std::process::id()));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&bad, spec).unwrap();
    for _ in 0..800 {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_worker-proc"))
        .arg("--model-dir")
        .arg(model_dir())
        .arg("transcribe")
        .arg(&bad)
        .output()
        .expect("run transcribe");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sox"));
    let _ = std::fs::remove_file(bad);
}

#[test]
fn staged_jobs_run_in_order_and_cancel_skips_or_stops_them() {
    let model = model_dir();
    let samples = speech();
    let greedy = DecodeOptions {
        beam_size: 1,
        ..DecodeOptions::default()
    };
    let mut w = Worker::spawn(&model, &["--enable-fault-injection"], &[]);
    w.hello();
    // A cancel for a job the worker never had changes nothing.
    w.send(&ToWorker::Cancel { job_id: 99 });
    // Job 1 is held 1.5 s; 2, 3 and 4 are staged behind it, and 3 is
    // cancelled while it waits.
    w.send_job(&Job {
        id: 1,
        traceparent: None,
        samples: samples.clone(),
        options: greedy.clone(),
        fault: Some(Fault::SlowMs(1500)),
        stream_segments: false,
    });
    w.send_job(&job(2, samples.clone(), greedy.clone()));
    w.send_job(&job(3, samples.clone(), greedy.clone()));
    w.send_job(&job(4, samples.clone(), greedy.clone()));
    w.send(&ToWorker::Cancel { job_id: 3 });
    let FromWorker::Done(first) = w.answer(1).1 else {
        panic!("job 1 decodes")
    };
    assert_eq!(first.timings.idle_before_us, None, "first job after load");
    let FromWorker::Done(second) = w.answer(2).1 else {
        panic!("job 2 decodes")
    };
    assert!(second.text.to_lowercase().contains("hello"));
    assert!(
        second.timings.idle_before_us.is_some(),
        "the engine's wait before a later job is reported"
    );
    let (progress, third) = w.answer(3);
    assert!(
        matches!(
            third,
            FromWorker::Failed {
                job_id: 3,
                error: WorkerError::Cancelled
            }
        ),
        "{third:?}"
    );
    assert_eq!(progress, 0, "a cancelled staged job is not decoded");
    assert!(matches!(w.answer(4).1, FromWorker::Done(_)));

    // A running job stops at its next 30 s window: 3 windows of speech,
    // cancelled after the first.
    w.send_job(&job(5, three_windows_of_speech(), greedy));
    match w.next() {
        FromWorker::Progress { job_id: 5, .. } => {}
        other => panic!("expected progress, got {other:?}"),
    }
    w.send(&ToWorker::Cancel { job_id: 5 });
    let (more, answer) = w.answer(5);
    assert!(
        matches!(
            answer,
            FromWorker::Failed {
                job_id: 5,
                error: WorkerError::Cancelled
            }
        ),
        "{answer:?}"
    );
    assert!(more <= 1, "stopped before the last window ({more} more)");
    w.close_stdin();
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn streamed_segments_arrive_window_by_window_and_equal_the_result() {
    let model = model_dir();
    let mut w = Worker::spawn(&model, &[], &[]);
    w.hello();
    w.send_job(&Job {
        id: 1,
        traceparent: None,
        samples: three_windows_of_speech(),
        options: DecodeOptions {
            beam_size: 1,
            vad_filter: false,
            ..DecodeOptions::default()
        },
        fault: None,
        stream_segments: true,
    });
    let (streamed, answer) = w.answer_streamed(1);
    let FromWorker::Done(result) = answer else {
        panic!("expected Done, got {answer:?}")
    };
    let non_empty = streamed.iter().filter(|s| !s.is_empty()).count();
    assert!(
        non_empty >= 2,
        "segments come with the windows that finish them: {:?}",
        streamed.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(
        streamed.concat(),
        result.segments,
        "streamed segments are the result's"
    );
    let ids: Vec<u32> = streamed.concat().iter().map(|s| s.id).collect();
    assert_eq!(ids, (0..result.segments.len() as u32).collect::<Vec<_>>());
}

#[test]
fn heartbeats_come_while_the_engine_is_held_and_stop_when_the_process_is_frozen() {
    let model = model_dir();
    let mut w = Worker::spawn(
        &model,
        &["--enable-fault-injection", "--heartbeat-interval-ms", "100"],
        &[],
    );
    w.hello();
    // Idle: heartbeats with nothing running.
    thread::sleep(Duration::from_millis(450));
    let idle = w.heartbeats();
    assert!(idle.len() >= 3, "{} heartbeats in 450 ms", idle.len());
    assert!(idle.iter().all(|(_, running)| running.is_none()));

    // The main thread stuck in a job: heartbeats go on, naming the job.
    let mut j = job(
        7,
        speech(),
        DecodeOptions {
            beam_size: 1,
            ..DecodeOptions::default()
        },
    );
    j.fault = Some(Fault::Hang);
    w.send_job(&j);
    thread::sleep(Duration::from_millis(800));
    let busy: Vec<_> = w.heartbeats().split_off(idle.len());
    assert!(
        busy.len() >= 5,
        "{} heartbeats in 800 ms of a hung job",
        busy.len()
    );
    assert_eq!(busy.last().unwrap().1, Some(7));

    // The whole process stopped: silence; resumed: heartbeats again.
    let pid = w.child.id() as libc::pid_t;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    thread::sleep(Duration::from_millis(200));
    let before = w.heartbeats().len();
    thread::sleep(Duration::from_millis(700));
    assert_eq!(
        w.heartbeats().len(),
        before,
        "no heartbeat from a stopped worker"
    );
    unsafe { libc::kill(pid, libc::SIGCONT) };
    thread::sleep(Duration::from_millis(500));
    assert!(w.heartbeats().len() >= before + 2, "heartbeats resume");
    w.child.kill().expect("kill");
}

#[test]
fn injected_out_of_order_and_wrong_id_answers() {
    // The broken workers the service's pairing tests run against.
    let model = model_dir();
    let greedy = DecodeOptions {
        beam_size: 1,
        ..DecodeOptions::default()
    };
    let mut w = Worker::spawn(&model, &["--enable-fault-injection"], &[]);
    w.hello();
    let mut first = job(1, speech(), greedy.clone());
    first.fault = Some(Fault::AnswerOutOfOrder);
    w.send_job(&first);
    w.send_job(&job(2, speech(), greedy.clone()));
    // Job 2 is answered before job 1.
    let FromWorker::Done(a) = w.answer(2).1 else {
        panic!("job 2 answered first")
    };
    assert_eq!(a.job_id, 2);
    let FromWorker::Done(b) = w.answer(1).1 else {
        panic!("then job 1")
    };
    assert_eq!(b.job_id, 1);

    let mut wrong = job(3, speech(), greedy);
    wrong.fault = Some(Fault::AnswerWrongId);
    w.send_job(&wrong);
    let FromWorker::Done(c) = w.answer(1003).1 else {
        panic!("job 3 answered as 1003")
    };
    assert_eq!(c.job_id, 1003);
    w.close_stdin();
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn audio_that_does_not_fit_its_header_is_a_protocol_error() {
    let model = model_dir();
    let mut w = Worker::spawn(&model, &[], &[]);
    w.hello();
    let header = JobHeader {
        id: 1,
        traceparent: None,
        sample_count: 16_000,
        options: DecodeOptions::default(),
        fault: None,
        stream_segments: false,
    };
    w.send(&ToWorker::Job(header));
    // A chunk of another job: no resync, exit 4, nothing written.
    w.send(&ToWorker::AudioChunk(asr_ipc::AudioChunk {
        job_id: 2,
        pcm: asr_ipc::Pcm(vec![0; 100]),
    }));
    assert_eq!(w.wait().code(), Some(4));
    w.assert_stdout_done();
}
