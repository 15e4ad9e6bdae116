//! Ingest under hostile input (issue 18, items 2 and 3 and "also seen"):
//! decode bombs, trickling uploads, damaged audio, foreign `Host`s, an
//! unusable job store. Runs the real binary with the real worker and model.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The peak resident memory of a process (`VmHWM`), bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

const MIB: u64 = 1024 * 1024;

/// 10 h of 48 kHz silence as FLAC, written by ffmpeg to a pipe, so its
/// STREAMINFO declares no length (≈ 5 MB): the decode bomb.
fn bomb(dir: &Path) -> PathBuf {
    let path = dir.join("bomb.flac");
    let out = std::fs::File::create(&path).unwrap();
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=48000:cl=mono",
        ])
        .args(["-t", "36000", "-c:a", "flac", "-f", "flac", "pipe:1"])
        .stdout(out)
        .status()
        .expect("ffmpeg (scripts/setup-system.sh installs it)");
    assert!(status.success());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], b"fLaC");
    // STREAMINFO's total samples (36 bits from byte 21) are 0: unknown.
    assert_eq!(bytes[21] & 0x0f, 0);
    assert_eq!(&bytes[22..26], &[0, 0, 0, 0], "the bomb declares a length");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decode_bombs_are_413_and_the_parent_stays_under_512_mib() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = std::fs::read(bomb(dir.path())).unwrap();
    let svc = Service::start(&[]);
    let base_hwm = vm_hwm(svc.pid());

    // Four at once, sync and jobs mixed.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (base, bytes) = (svc.base.clone(), bomb.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                post(&base, bytes, "bomb.flac", &[], &[]).await
            } else {
                post_job(&base, bytes, "bomb.flac", &[]).await
            }
        }));
    }
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 413, "{}", a.text);
        assert_eq!(a.json()["error"]["code"], "audio_too_long", "{}", a.text);
    }
    let hwm = vm_hwm(svc.pid());
    eprintln!(
        "decode bombs: 4 answered 413 in {:.1} s; parent VmHWM {} MiB (at start {} MiB)",
        started.elapsed().as_secs_f64(),
        hwm / MIB,
        base_hwm / MIB
    );
    assert!(hwm < 512 * MIB, "parent peaked at {} MiB", hwm / MIB);
    // Everything given back.
    let (_, health) = svc.get_json("/health").await;
    assert_eq!(health["ingest"]["pcm_budget_used_bytes"], 0, "{health}");
    assert_eq!(health["ingest"]["uploads_in_progress"], 0, "{health}");
    // And the node still transcribes.
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello", "world"]);
}

/// A raw HTTP/1.1 multipart upload that declares `declared` bytes of file,
/// sends `burst` of them at once, then one byte every `trickle` until the
/// server answers. Returns (status, body, seconds from the end of the
/// burst to the answer).
async fn trickle_upload(
    base: &str,
    declared: usize,
    burst: usize,
    trickle: Duration,
) -> (u16, String, f64) {
    let addr = base.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let boundary = "XtrickleX";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let request = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n{head}",
        head.len() + declared + tail.len()
    );
    let burst_done = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let done = burst_done.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(request.as_bytes()).await?;
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < burst {
            let n = chunk.len().min(burst - sent);
            wr.write_all(&chunk[..n]).await?;
            sent += n;
        }
        *done.lock().unwrap() = Some(Instant::now());
        loop {
            tokio::time::sleep(trickle).await;
            if wr.write_all(b"x").await.is_err() {
                return Ok::<_, std::io::Error>(());
            }
        }
    });
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let answered;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(120), rd.read(&mut tmp))
            .await
            .expect("an answer within 120 s")
            .unwrap_or(0);
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(i) = text.find("\r\n\r\n") {
            let len: usize = text[..i]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + len || n == 0 {
                answered = Instant::now();
                break;
            }
        }
        assert!(n > 0, "connection closed without an answer: {text:?}");
    }
    writer.abort();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    let from = burst_done.lock().unwrap().unwrap_or(answered);
    (status, body, answered.duration_since(from).as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_uploads_are_cut_off_capped_and_held_on_disk() {
    let svc = Service::start(&["--max-concurrent-uploads", "6"]);
    let base_hwm = vm_hwm(svc.pid());

    // Six clients send 20 MiB of a declared 60 MiB, then a byte a second.
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let base = svc.base.clone();
        slow.push(tokio::spawn(async move {
            trickle_upload(&base, 60 << 20, 20 << 20, Duration::from_secs(1)).await
        }));
    }
    // Wait until all six hold a permit.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, h) = svc.get_json("/health").await;
        if h["ingest"]["uploads_in_progress"] == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "six uploads never in progress: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Beyond the cap: refused at once, whichever endpoint, many times over.
    for i in 0..60 {
        let t = Instant::now();
        let a = if i % 2 == 0 {
            post(&svc.base, vec![0u8; 1000], "a.wav", &[], &[]).await
        } else {
            post_job(&svc.base, vec![0u8; 1000], "a.wav", &[]).await
        };
        assert_eq!(a.status, 429, "{}", a.text);
        assert_eq!(a.json()["error"]["code"], "too_many_uploads");
        assert!(a.headers.contains_key("retry-after"));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            t.elapsed()
        );
    }

    // The slow ones are cut off by the minimum rate within a window.
    for t in slow {
        let (status, body, after_burst) = t.await.unwrap();
        assert_eq!(status, 408, "{body}");
        assert!(body.contains("upload_timeout"), "{body}");
        assert!(
            after_burst < 25.0,
            "cut off {after_burst:.1} s after the burst"
        );
    }
    let hwm = vm_hwm(svc.pid());
    eprintln!(
        "trickling uploads: 6 × 20 MiB then 1 B/s cut off after {:.1} s; parent VmHWM {} MiB (at start {} MiB)",
        started.elapsed().as_secs_f64(),
        hwm / MIB,
        base_hwm / MIB
    );
    // 120 MiB arrived; it went to disk, not memory.
    assert!(hwm < 160 * MIB, "parent peaked at {} MiB", hwm / MIB);

    // 60 refusals in a few seconds: a couple of log lines, not 120.
    let refusal_lines = svc.logs().lines().filter(|l| l.contains("refused")).count();
    assert!(
        refusal_lines <= 3,
        "{refusal_lines} log lines for 60 refusals"
    );

    // A client that sends a byte a second from the start is cut off too.
    let (status, body, secs) = trickle_upload(&svc.base, 1 << 20, 0, Duration::from_secs(1)).await;
    assert_eq!(status, 408, "{body}");
    assert!(secs < 15.0, "a 1 B/s upload ran {secs:.1} s");

    // Permits came back; the node still transcribes.
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["ingest"]["uploads_in_progress"], 0, "{h}");
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello", "world"]);
}

/// The speech FLAC with one byte flipped every KiB past its headers.
fn bad_crc_flac() -> Vec<u8> {
    let mut b = std::fs::read(fixture("clip10.flac")).unwrap();
    for i in (8 * 1024..b.len()).step_by(1024) {
        b[i] ^= 0x55;
    }
    b
}

#[tokio::test]
async fn damaged_audio_is_422_not_an_empty_transcript() {
    let svc = Service::start(&[]);
    let a = svc
        .transcribe_bytes(bad_crc_flac(), "clip10.flac", &[], &[])
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    let e = a.json();
    assert_eq!(e["error"]["code"], "damaged_audio", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("missing"),
        "{e}"
    );
    let j = post_job(&svc.base, bad_crc_flac(), "clip10.flac", &[]).await;
    assert_eq!(j.status, 422, "{}", j.text);
    // The intact file still transcribes, with no damage headers.
    let a = svc.transcribe(&fixture("clip10.flac"), &[]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(!a.headers.contains_key("x-audio-gap-seconds"));
    assert!(!a.headers.contains_key("x-audio-skipped-packets"));
}

/// A raw GET with this `Host`; returns the status.
async fn get_with_host(base: &str, path: &str, host: &str) -> u16 {
    let mut s = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn foreign_hosts_are_421_on_a_loopback_node() {
    let svc = Service::start(&[]);
    let port = svc.base.rsplit(':').next().unwrap().to_string();
    for ok in ["127.0.0.1", "localhost", "[::1]"] {
        let host = format!("{ok}:{port}");
        assert_eq!(
            get_with_host(&svc.base, "/health", &host).await,
            200,
            "{host}"
        );
    }
    for bad in [
        "rebind.attacker.example",
        "attacker.example:8080",
        "10.1.2.3",
    ] {
        assert_eq!(get_with_host(&svc.base, "/health", bad).await, 421, "{bad}");
        assert_eq!(
            get_with_host(&svc.base, "/v1/jobs", bad).await,
            421,
            "{bad}"
        );
    }
    // An explicit list.
    let svc = Service::start(&["--allowed-hosts", "asr.example.com"]);
    assert_eq!(
        get_with_host(&svc.base, "/ready", "asr.example.com").await,
        200
    );
    assert_eq!(get_with_host(&svc.base, "/ready", "localhost").await, 421);
}

#[tokio::test]
async fn an_unusable_job_store_leaves_sync_transcription_working() {
    // A data folder under a regular file cannot be created (even by root).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let data = file.join("data");
    let svc = Service::start(&["--jobs-data-dir", data.to_str().unwrap()]);
    assert!(
        svc.logged("async job service failed to start").await,
        "the failure is logged"
    );
    let (status, ready) = svc.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["async_jobs"]["state"], "unavailable", "{ready}");
    let j = post_job(
        &svc.base,
        std::fs::read(fixture("hello.wav")).unwrap(),
        "hello.wav",
        &[],
    )
    .await;
    assert_eq!(j.status, 503, "{}", j.text);
    assert_eq!(j.json()["error"]["code"], "store_unavailable");
    assert!(j.headers.contains_key("retry-after"));
    let (status, _) = svc.get_json("/v1/jobs").await;
    assert_eq!(status, 503);
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello", "world"]);
}
