//! Hard limits on what clients can make the node hold, against the real
//! binary and model: four 3-hour silent FLACs at once (tiny files that
//! decode to 330 MiB of PCM each), and a FLAC whose header says 10 s while
//! it holds 4 hours. Every request is answered (200, or a refusal naming
//! its limit), the parent's peak RSS stays within the bound the README
//! states, and the node serves the next request.

mod common;

use common::*;

/// The bound the README states for the defaults, MiB: the decoded-audio
/// budget (384), one in-memory upload part per upload slot (32 × 1 MiB)
/// and the process's own footprint (runtime, HTTP workers, decoders:
/// under 128 MiB).
const BOUND_MIB: u64 = 384 + 32 + 128;

/// Peak resident memory of `pid` so far (`VmHWM`), MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

fn audio_fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures/audio").join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_three_hour_flacs_at_once_and_a_lying_header_stay_within_the_bound() {
    let svc = Service::start(&["--queue-capacity", "8", "--max-queue-wait-secs", "300"]);
    let base_mib = peak_rss_mib(svc.pid());
    let flac = audio_fixture("silence_3h_16k.flac");
    let posts: Vec<_> = (0..4)
        .map(|_| {
            let (base, flac) = (svc.base.clone(), flac.clone());
            tokio::spawn(async move { post(&base, flac, "silence.flac", &[], &[]).await })
        })
        .collect();
    let mut ok = 0;
    for p in posts {
        let a = p.await.unwrap();
        match a.status {
            200 => {
                ok += 1;
                assert_eq!(a.transcript(), "", "silence");
            }
            // Refusals name their limit: the decode budget (503 +
            // Retry-After) or the upload slots.
            503 | 429 => {
                let code = a.json()["error"]["code"].as_str().unwrap().to_string();
                assert!(
                    ["decode_busy", "too_many_uploads", "queue_full"].contains(&code.as_str()),
                    "{code}: {}",
                    a.text
                );
                assert!(a.headers.contains_key("retry-after"), "{}", a.text);
            }
            s => panic!("unexpected {s}: {}", a.text),
        }
    }
    assert!(ok >= 1, "the budget holds one 3-hour decode");
    let after_four = peak_rss_mib(svc.pid());
    eprintln!("parent peak RSS: {base_mib} MiB at start, {after_four} MiB after four 3-hour FLACs (bound {BOUND_MIB} MiB)");
    assert!(
        after_four <= BOUND_MIB,
        "peak {after_four} MiB over {BOUND_MIB} MiB"
    );

    // A header that says 10 s over 4 hours of audio: decoding stops at the
    // 3-hour limit with 413, inside the budget.
    let a = post(
        &svc.base,
        audio_fixture("silence_4h_16k_header_says_10s.flac"),
        "liar.flac",
        &[],
        &[],
    )
    .await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "audio_too_long");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("10800"));
    let after_liar = peak_rss_mib(svc.pid());
    eprintln!("parent peak RSS after the lying header: {after_liar} MiB");
    assert!(
        after_liar <= BOUND_MIB,
        "peak {after_liar} MiB over {BOUND_MIB} MiB"
    );

    // The node still serves.
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello", "world"]);
}
