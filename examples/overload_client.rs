//! The load generator of `make overload` (bench/overload.py): N HTTP/1.1
//! clients uploading one clip to `/v1/audio/transcriptions`, on one tokio
//! thread, cheap enough that the 40-client retry storm costs the shared
//! 2-core machine little CPU of its own.
//!
//! ```text
//! overload_client PORT CLIP CLIENTS MODE EXPECT START_IN_MS WARM_MS SECS [SOURCE_IP]
//! ```
//! MODE: `polite` (after a 429/503 wait its Retry-After) or `retry50`
//! (retry 50 ms after a refusal). EXPECT: 1 sends `Expect: 100-continue`.
//! The clients start START_IN_MS from now; what finishes in the window
//! [start + WARM_MS, start + WARM_MS + SECS s] is reported. Prints one JSON
//! object: answers (latency ms of each 200 in the window), refused
//! latencies (ms), codes, body-not-sent count, errors, the transcripts seen,
//! and this process's CPU seconds in the window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Default)]
struct Stats {
    ok_ms: Vec<f64>,
    refused_ms: Vec<f64>,
    codes: BTreeMap<String, u64>,
    other: BTreeMap<u16, u64>,
    body_not_sent: u64,
    errors: u64,
    stale: u64,
    texts: BTreeSet<String>,
}

struct Response {
    status: u16,
    close: bool,
    retry_after: f64,
    body: Vec<u8>,
}

/// Reads one response (head, then a Content-Length body) from `s`; `buf`
/// keeps what was read past it.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Response> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad status line"))?;
            let (mut len, mut close, mut retry_after) = (0usize, false, 1.0);
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    match k.trim() {
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "connection" => close = v.trim() == "close",
                        "retry-after" => retry_after = v.trim().parse().unwrap_or(1.0),
                        _ => {}
                    }
                }
            }
            let total = end + 4 + len;
            while buf.len() < total {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            return Ok(Response {
                status,
                close,
                retry_after,
                body,
            });
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect(port: u16, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        sock.bind(std::net::SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

#[allow(clippy::too_many_arguments)]
async fn client(
    port: u16,
    head: Arc<Vec<u8>>,
    body: Arc<Vec<u8>>,
    polite: bool,
    expect: bool,
    source: Option<std::net::IpAddr>,
    window: (Instant, Instant),
    stats: Arc<Mutex<Stats>>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    while Instant::now() < window.1 {
        let reused = conn.is_some();
        if conn.is_none() {
            match connect(port, source).await {
                Ok(s) => conn = Some(s),
                Err(_) => {
                    stats.lock().unwrap().errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            buf.clear();
        }
        let s = conn.as_mut().unwrap();
        let t0 = Instant::now();
        let result: std::io::Result<(Response, bool)> = async {
            if expect {
                s.write_all(&head).await?;
                let first = read_response(s, &mut buf).await?;
                if first.status != 100 {
                    return Ok((first, false));
                }
                s.write_all(&body).await?;
            } else {
                // One write of head and body together is what most clients do.
                s.write_all(&head).await?;
                s.write_all(&body).await?;
            }
            Ok((read_response(s, &mut buf).await?, true))
        }
        .await;
        let done = Instant::now();
        let ms = (done - t0).as_secs_f64() * 1000.0;
        match result {
            Err(_) if reused => {
                // A keep-alive connection closed while idle: retry at once
                // on a new one, as HTTP clients do.
                conn = None;
                stats.lock().unwrap().stale += 1;
            }
            Err(_) => {
                conn = None;
                stats.lock().unwrap().errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok((r, sent)) => {
                if r.close || !sent {
                    conn = None;
                }
                let in_window = done >= window.0 && done <= window.1;
                let wait = record(&stats, &r, sent, ms, in_window, polite);
                if let Some(wait) = wait {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Counts one answer; returns how long to wait before the next request.
fn record(
    stats: &Mutex<Stats>,
    r: &Response,
    sent: bool,
    ms: f64,
    in_window: bool,
    polite: bool,
) -> Option<Duration> {
    let mut st = stats.lock().unwrap();
    match r.status {
        200 => {
            if in_window {
                st.ok_ms.push(ms);
            }
            if st.texts.len() < 4 {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
                    if let Some(t) = v["text"].as_str() {
                        st.texts.insert(t.trim().to_string());
                    }
                }
            }
            None
        }
        429 | 503 => {
            if in_window {
                st.refused_ms.push(ms);
                if !sent {
                    st.body_not_sent += 1;
                }
                let code = serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                *st.codes.entry(code).or_default() += 1;
            }
            Some(if polite {
                Duration::from_secs_f64(r.retry_after.max(0.0))
            } else {
                Duration::from_millis(50)
            })
        }
        other => {
            *st.other.entry(other).or_default() += 1;
            Some(Duration::from_millis(50))
        }
    }
}

fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 9 {
        eprintln!("usage: overload_client PORT CLIP CLIENTS polite|retry50 EXPECT(0|1) START_IN_MS WARM_MS SECS [SOURCE_IP]");
        std::process::exit(2);
    }
    let port: u16 = a[1].parse().expect("PORT");
    let clip = std::fs::read(&a[2]).expect("CLIP");
    let clients: usize = a[3].parse().expect("CLIENTS");
    let polite = a[4] == "polite";
    let expect = a[5] == "1";
    let start_in = Duration::from_millis(a[6].parse().expect("START_IN_MS"));
    let warm = Duration::from_millis(a[7].parse().expect("WARM_MS"));
    let secs = Duration::from_secs_f64(a[8].parse().expect("SECS"));
    let source: Option<std::net::IpAddr> = a.get(9).map(|s| s.parse().expect("SOURCE_IP"));

    let boundary = "overload-client-7c1d";
    let name = std::path::Path::new(&a[2])
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "clip.wav".into());
    let mut body = Vec::new();
    for (k, v) in [("model", "whisper-1"), ("response_format", "json")] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&clip);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if expect { "Expect: 100-continue\r\n" } else { "" }
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stats = Arc::new(Mutex::new(Stats::default()));
    let cpu = rt.block_on(async {
        let start = Instant::now() + start_in;
        let window = (start + warm, start + warm + secs);
        tokio::time::sleep_until(start.into()).await;
        let (head, body) = (Arc::new(head.into_bytes()), Arc::new(body));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                tokio::spawn(client(
                    port,
                    head.clone(),
                    body.clone(),
                    polite,
                    expect,
                    source,
                    window,
                    stats.clone(),
                ))
            })
            .collect();
        tokio::time::sleep_until(window.0.into()).await;
        let c0 = cpu_secs();
        tokio::time::sleep_until(window.1.into()).await;
        let c1 = cpu_secs();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(120), t).await;
        }
        c1 - c0
    });
    let st = stats.lock().unwrap();
    let out = serde_json::json!({
        "ok_ms": st.ok_ms,
        "refused_ms": st.refused_ms,
        "codes": st.codes,
        "other": st.other.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "body_not_sent": st.body_not_sent,
        "errors": st.errors,
        "stale": st.stale,
        "texts": st.texts,
        "cpu_s": cpu,
    });
    println!("{out}");
}
