//! Batched long-form decoding (`batch_size` > 1) through the whole service,
//! on the real model and the ~2-minute clip of tests/longform.rs (14 spoken
//! parts with pauses and 10 s of faint noise; tests/fixtures/longform/):
//! the VAD's speech chunks are merged into windows of up to 30 s and
//! decoded several per engine call, without conditioning on previous text.
//!
//! Checked: every part's key words are heard, never twice, at times inside
//! that part of the original timeline (windows join at pauses; times are
//! the window's offset mapped back through the VAD map); segment and word
//! times are monotonic and inside the clip; no word in the noise; the same
//! clip as an async job rendered as `srt` and `vtt` has well-formed,
//! ordered cues at the segments' times; a bad `batch_size` is a 400.
//!
//! Greedy decoding (`beam_size=1`) keeps the file short on two cores.

mod common;

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One service for this file; its default is sequential, so every
/// batched decode here is the request's own `batch_size`.
static SVC: LazyLock<Service> = LazyLock::new(|| {
    Service::start(&[
        "--queue-capacity",
        "16",
        "--max-queue-wait-secs",
        "300",
        "--batch-size",
        "1",
    ])
});

struct Part {
    start: f64,
    end: f64,
    keywords: Vec<String>,
}

struct Clip {
    path: PathBuf,
    duration: f64,
    parts: Vec<Part>,
}

fn clip() -> Clip {
    let dir = repo().join("tests/fixtures/longform");
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let parts = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Part {
            start: p["start"].as_f64().unwrap(),
            end: p["end"].as_f64().unwrap(),
            keywords: p["keywords"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect(),
        })
        .collect();
    Clip {
        path: dir.join(m["file"].as_str().unwrap()),
        duration: m["duration_s"].as_f64().unwrap(),
        parts,
    }
}

/// Words as the key words are spelled: lower case, letters only.
fn norm(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

const GREEDY: (&str, &str) = ("beam_size", "1");
const BATCHED: (&str, &str) = ("batch_size", "8");

fn times(x: &Value) -> (f64, f64) {
    (x["start"].as_f64().unwrap(), x["end"].as_f64().unwrap())
}

#[tokio::test]
async fn batched_two_minute_clip_keeps_every_part_at_its_own_time() {
    let clip = clip();
    let a = SVC
        .transcribe(
            &clip.path,
            &[
                ("response_format", "verbose_json"),
                ("timestamp_granularities[]", "segment"),
                ("timestamp_granularities[]", "word"),
                GREEDY,
                BATCHED,
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    let duration = v["duration"].as_f64().unwrap();
    assert!(
        (duration - clip.duration).abs() < 0.1,
        "duration {duration}"
    );

    // Segments: several windows' worth, in order, inside the clip.
    let segs = v["segments"].as_array().expect("segments");
    assert!(segs.len() >= 5, "a 2-minute clip has many segments: {v}");
    let mut prev = (0.0, 0.0);
    for s in segs {
        let (start, end) = times(s);
        assert!(
            start >= prev.0 && start <= end && end <= duration + 0.01,
            "segment times out of order or outside the clip: {s}"
        );
        prev = (start, end);
    }
    // Words after VAD come from several windows (seek = each window's
    // start), so the clip really was decoded as a batch of windows.
    let mut seeks: Vec<u64> = segs.iter().map(|s| s["seek"].as_u64().unwrap()).collect();
    seeks.dedup();
    assert!(seeks.len() >= 3, "windows: {seeks:?}");

    // Words: in order, each inside a segment.
    let words = v["words"].as_array().expect("words");
    assert!(words.len() > 150, "about 200 words spoken: {}", words.len());
    let mut seg = 0;
    let mut prev_word_start = 0.0;
    for w in words {
        let (start, end) = times(w);
        assert!(
            start >= prev_word_start && start <= end,
            "word times out of order: {w}"
        );
        prev_word_start = start;
        while seg < segs.len() && times(&segs[seg]).1 < end - 1e-3 {
            seg += 1;
        }
        assert!(seg < segs.len(), "word {w} after the last segment");
        let (s0, s1) = times(&segs[seg]);
        assert!(
            s0 <= start + 1e-3 && end <= s1 + 1e-3,
            "word {w} outside its segment {}",
            segs[seg]
        );
    }

    // Every part's key words at that part's time (±1 s), never twice; up
    // to one in ten may be misheard as long as every part keeps one (the
    // rule of tests/longform.rs).
    let timed: Vec<(String, f64, f64)> = words
        .iter()
        .map(|w| {
            let (s, e) = times(w);
            (norm(w["word"].as_str().unwrap()), s, e)
        })
        .collect();
    let text = v["text"].as_str().unwrap().to_lowercase();
    let mut problems = Vec::new();
    let (mut total, mut missing) = (0, Vec::new());
    for (i, part) in clip.parts.iter().enumerate() {
        let mut heard = 0;
        for k in &part.keywords {
            total += 1;
            let hits: Vec<_> = timed.iter().filter(|(w, _, _)| w == k).collect();
            match hits.as_slice() {
                [] => missing.push(format!("part {}: {k:?}", i + 1)),
                [(_, s, e)] => {
                    heard += 1;
                    if *s < part.start - 1.0 || *e > part.end + 1.0 {
                        problems.push(format!(
                            "part {} ({:.2}-{:.2} s): {k:?} at {s:.2}-{e:.2} s",
                            i + 1,
                            part.start,
                            part.end
                        ));
                    }
                }
                more => problems.push(format!("part {}: {k:?} heard {} times", i + 1, more.len())),
            }
        }
        if heard == 0 {
            problems.push(format!("part {}: none of {:?} heard", i + 1, part.keywords));
        }
    }
    if missing.len() * 10 > total {
        problems.push(format!(
            "{} of {total} key words missing: {missing:?}",
            missing.len()
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}\ntranscript: {text}");
    let noise = clip
        .parts
        .windows(2)
        .map(|p| (p[0].end, p[1].start))
        .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
        .unwrap();
    let in_noise: Vec<_> = timed
        .iter()
        .filter(|(_, s, e)| (s + e) / 2.0 > noise.0 + 0.5 && (s + e) / 2.0 < noise.1 - 0.5)
        .collect();
    assert!(in_noise.is_empty(), "words in the noise: {in_noise:?}");
}

fn check_cues(cues: &[(f64, f64, String)], clip: &Clip) {
    assert!(cues.len() >= 5, "many cues: {cues:?}");
    assert!(
        cues.windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].0 <= w[0].1),
        "cues in time order: {cues:?}"
    );
    assert!(cues.last().unwrap().1 <= clip.duration + 0.01);
    let first = &clip.parts[0];
    let last = &clip.parts[clip.parts.len() - 1];
    let text = cues
        .iter()
        .map(|c| c.2.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    assert_words(&text, &[&first.keywords[0], &last.keywords[0]]);
    assert!(cues[0].0 <= first.end, "first cue at the start: {cues:?}");
    assert!(
        cues.last().unwrap().1 >= last.start,
        "last cue at the end: {cues:?}"
    );
}

#[tokio::test]
async fn batched_job_rendered_as_srt_and_vtt() {
    let clip = clip();
    let bytes = std::fs::read(&clip.path).unwrap();
    let a = post_job(
        &SVC.base,
        bytes,
        "longform120.ogg",
        &[("response_format", "srt"), GREEDY, ("batch_size", "4")],
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().expect("job id").to_string();
    let last = std::sync::Mutex::new(0.0f64);
    SVC.wait_job(&id, "done", Duration::from_secs(300), |j| {
        assert!(j["status"] != "failed" && j["status"] != "cancelled", "{j}");
        let p = &j["progress"];
        let (done, total) = (
            p["decoded_secs"].as_f64().unwrap_or(0.0),
            p["total_secs"].as_f64().unwrap_or(0.0),
        );
        let mut last = last.lock().unwrap();
        assert!(done >= *last && done <= total + 1e-3, "progress {p}");
        *last = done;
        j["status"] == "done"
    })
    .await;
    assert!((*last.lock().unwrap() - clip.duration).abs() < 0.1);

    let get = |query: &'static str| {
        let url = format!("{}/v1/jobs/{id}{query}", SVC.base);
        async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "GET {query}");
            r.text().await.unwrap()
        }
    };
    let srt = get("/result").await;
    let srt_cues = cues(&srt, ',', true);
    check_cues(&srt_cues, &clip);
    let vtt = get("?format=vtt").await;
    let body = vtt
        .strip_prefix("WEBVTT\n\n")
        .unwrap_or_else(|| panic!("vtt starts with a WEBVTT line: {vtt}"));
    let vtt_cues = cues(body, '.', false);
    check_cues(&vtt_cues, &clip);
    let v: Value = serde_json::from_str(&get("?format=verbose_json").await).unwrap();
    let segs = v["segments"].as_array().expect("segments");
    assert_eq!(srt_cues.len(), segs.len());
    assert_eq!(vtt_cues.len(), segs.len());
    for ((s, c), d) in segs.iter().zip(&srt_cues).zip(&vtt_cues) {
        let (start, end) = times(s);
        for (a, b) in [(start, c.0), (end, c.1), (start, d.0), (end, d.1)] {
            assert!((a - b).abs() < 0.0015, "cue {c:?} / {d:?} vs segment {s}");
        }
    }
}

#[tokio::test]
async fn a_bad_batch_size_is_a_400() {
    for bad in ["0", "65", "many"] {
        let a = SVC
            .transcribe(&fixture("hello.wav"), &[("batch_size", bad)])
            .await;
        assert_eq!(a.status, 400, "batch_size={bad}: {}", a.text);
        assert!(a.text.contains("batch_size"), "{}", a.text);
    }
}
