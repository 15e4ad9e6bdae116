//! Benchmark of `/v1/realtime` (bench/realtime.sh runs it; not a test):
//! N sessions each stream a 16 kHz WAV, repeated, at real-time pace in
//! 100 ms chunks (resampled to 24 kHz, OpenAI's rate) with server VAD, and
//! report, per utterance, end of speech (`speech_stopped` received) to
//! `completed` received, against the utterance's decode time (the node's
//! `x_timing.decode_ms`): p50 and p95 of each and of their ratio, the
//! error events by code, and the server's RSS over the run.
//!
//! usage: realtime_bench BASE_URL WAV [--sessions N] [--repeat R] [--pid PID]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default, Debug)]
struct Outcome {
    /// (end of speech → completed, decode) per utterance, seconds.
    done: Vec<(f64, f64)>,
    errors: HashMap<String, usize>,
    /// Completed without a speech_stopped (a turn cut at the cap).
    other: usize,
    /// Audio streamed late (the client could not keep real-time pace).
    max_send_lag: f64,
}

fn pcm_24k(path: &str) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).expect("a 16-bit WAV");
    let spec = r.spec();
    let ch = spec.channels as usize;
    let raw: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let mono: Vec<f64> = raw
        .chunks(ch)
        .map(|c| c.iter().map(|&s| f64::from(s)).sum::<f64>() / ch as f64)
        .collect();
    let n = (mono.len() as f64 * 24_000.0 / f64::from(spec.sample_rate)) as usize;
    (0..n)
        .map(|i| {
            let x = i as f64 * f64::from(spec.sample_rate) / 24_000.0;
            let j = (x as usize).min(mono.len() - 1);
            let b = mono[(j + 1).min(mono.len() - 1)];
            (mono[j] + (b - mono[j]) * x.fract()) as i16
        })
        .collect()
}

async fn session(url: String, audio: Vec<i16>, delay: Duration) -> Outcome {
    tokio::time::sleep(delay).await;
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let (mut tx, mut rx) = ws.split();
    let update = json!({"type": "session.update", "session": {"type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"language": "en"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}});
    tx.send(Message::text(update.to_string())).await.unwrap();
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        let mut lag: f64 = 0.0;
        for (i, chunk) in audio.chunks(2_400).enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            let ev = json!({"type": "input_audio_buffer.append",
                "audio": base64::engine::general_purpose::STANDARD.encode(bytes)});
            let due = start + Duration::from_millis(100 * i as u64);
            lag = lag.max(Instant::now().saturating_duration_since(due).as_secs_f64());
            if tx.send(Message::text(ev.to_string())).await.is_err() {
                break;
            }
            tokio::time::sleep_until((start + Duration::from_millis(100 * (i as u64 + 1))).into())
                .await;
        }
        (tx, lag)
    });
    let mut out = Outcome::default();
    let mut stopped: HashMap<String, Instant> = HashMap::new();
    let mut open_items = 0i64;
    let mut quiet_since = Instant::now();
    loop {
        // Done once all audio is sent, every committed item is answered
        // and nothing came for 3 s (or after 2 minutes of silence).
        let idle = quiet_since.elapsed();
        if (sender.is_finished() && open_items <= 0 && idle > Duration::from_secs(3))
            || idle > Duration::from_secs(120)
        {
            break;
        }
        let t = match tokio::time::timeout(Duration::from_millis(250), rx.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            Ok(_) => break,
        };
        quiet_since = Instant::now();
        let e: Value = serde_json::from_str(&t).unwrap();
        let item = e["item_id"].as_str().unwrap_or("").to_string();
        match e["type"].as_str().unwrap_or("") {
            "input_audio_buffer.committed" => open_items += 1,
            "input_audio_buffer.speech_stopped" => {
                stopped.insert(item, Instant::now());
            }
            "conversation.item.input_audio_transcription.completed" => {
                open_items -= 1;
                let decode = e["x_timing"]["decode_ms"].as_f64().unwrap_or(0.0) / 1e3;
                match stopped.remove(&item) {
                    Some(t) => out.done.push((t.elapsed().as_secs_f64(), decode)),
                    None => out.other += 1,
                }
            }
            "conversation.item.input_audio_transcription.failed" => open_items -= 1,
            "error" => {
                let code = e["error"]["code"].as_str().unwrap_or("?").to_string();
                *out.errors.entry(code).or_default() += 1;
            }
            _ => {}
        }
    }
    if let Ok((_, lag)) = sender.await {
        out.max_send_lag = lag;
    }
    out
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (base, wav) = (args[1].clone(), args[2].clone());
    let (sessions, repeat, pid) = (
        flag("--sessions", 1) as usize,
        flag("--repeat", 3) as usize,
        flag("--pid", 0) as u32,
    );
    let clip = pcm_24k(&wav);
    let mut audio = vec![0i16; 24_000];
    for _ in 0..repeat {
        audio.extend(&clip);
        audio.extend(vec![0i16; 36_000]);
    }
    let url = format!(
        "{}/v1/realtime?intent=transcription",
        base.replace("http", "ws")
    );
    let rss_before = rss_kib(pid);
    let rss_max = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let rss_max = rss_max.clone();
        tokio::spawn(async move {
            loop {
                if let Some(r) = rss_kib(pid) {
                    rss_max.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            // Staggered starts, so the sessions' turns do not all line up.
            let delay = Duration::from_millis(370 * i as u64);
            tokio::spawn(session(url.clone(), audio.clone(), delay))
        })
        .collect();
    let mut all = Outcome::default();
    for t in tasks {
        let o = t.await.expect("session task");
        all.done.extend(o.done);
        all.other += o.other;
        all.max_send_lag = all.max_send_lag.max(o.max_send_lag);
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    sampler.abort();
    let mut lat: Vec<f64> = all.done.iter().map(|d| d.0).collect();
    let mut dec: Vec<f64> = all.done.iter().map(|d| d.1).collect();
    let mut ratio: Vec<f64> = all
        .done
        .iter()
        .filter(|d| d.1 > 0.0)
        .map(|d| d.0 / d.1)
        .collect();
    let audio_secs = audio.len() as f64 / 24_000.0;
    println!(
        "sessions={sessions} audio_per_session={audio_secs:.1}s wall={:.1}s completed={} other={} errors={:?} max_send_lag={:.2}s",
        started.elapsed().as_secs_f64(),
        all.done.len(),
        all.other,
        all.errors,
        all.max_send_lag
    );
    println!(
        "end_of_speech_to_completed p50={:.3}s p95={:.3}s | decode p50={:.3}s p95={:.3}s | ratio p50={:.2} p95={:.2}",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.95),
        pct(&mut dec.clone(), 0.5),
        pct(&mut dec, 0.95),
        pct(&mut ratio.clone(), 0.5),
        pct(&mut ratio, 0.95),
    );
    if pid != 0 {
        println!(
            "server_rss_kib before={} max={} after={}",
            rss_before.unwrap_or(0),
            rss_max.load(std::sync::atomic::Ordering::Relaxed),
            rss_kib(pid).unwrap_or(0)
        );
    }
}
