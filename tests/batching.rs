//! Dynamic batching across requests (issue 13 part 2), on the real binaries
//! and model: several waiting requests decoded as one batch by the worker,
//! each answered with its own words; a worker killed or crashed mid-batch;
//! a client that leaves a forming batch. Faults are injected into the real
//! worker with `X-Fault-Inject` (`--enable-fault-injection`). Each test
//! checks in the worker's log that a batch was really formed, so none can
//! pass on the sequential path.

mod common;

use std::time::Duration;

use common::speech::speak;
use common::*;

/// Fault injection on, and the first job waits (up to 10 s) for three more
/// to form a batch of 4.
const FAULTY_BATCH_OF_4: [&str; 7] = [
    "--enable-fault-injection",
    "--max-batch",
    "4",
    "--batch-wait-ms",
    "10000",
    "--max-queue-wait-secs",
    "120",
];

/// Four short clips with words no other clip has.
const CLIPS: [(&str, &[&str]); 4] = [
    (
        "The astronomer pointed her telescope at the planet Jupiter.",
        &["telescope", "jupiter"],
    ),
    (
        "In the kitchen, the chef chopped onions and garlic for a spicy tomato soup.",
        &["onions", "garlic", "soup"],
    ),
    (
        "The football team won the championship after a penalty in the final minute.",
        &["football", "championship", "penalty"],
    ),
    (
        "At the zoo we saw elephants, giraffes, penguins and a sleepy lion.",
        &["elephants", "giraffes", "lion"],
    ),
];

/// Posts the four clips at once; `headers[i]` goes with clip `i`.
fn post_all(
    svc: &Service,
    headers: [Vec<(&'static str, &'static str)>; 4],
) -> Vec<tokio::task::JoinHandle<Answer>> {
    CLIPS
        .iter()
        .zip(headers)
        .enumerate()
        .map(|(i, ((text, _), headers))| {
            let base = svc.base.clone();
            let bytes = speak(text);
            tokio::spawn(
                async move { post(&base, bytes, &format!("clip{i}.wav"), &[], &headers).await },
            )
        })
        .collect()
}

/// Each transcript has its clip's words and none of the other clips'.
fn assert_own_words(i: usize, transcript: &str) {
    assert_words(transcript, CLIPS[i].1);
    for (j, (_, words)) in CLIPS.iter().enumerate() {
        if j == i {
            continue;
        }
        for w in *words {
            assert!(
                !transcript.contains(w),
                "clip {i}'s transcript has {w:?} of clip {j}: {transcript:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_batch_of_four_different_clips_gives_each_client_its_own_words() {
    // The first job waits (up to 10 s) until all four are in: one batch.
    let svc = Service::start(&[
        "--max-batch",
        "4",
        "--batch-wait-ms",
        "10000",
        "--max-queue-wait-secs",
        "60",
    ]);
    let answers = post_all(&svc, Default::default());
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.await.unwrap();
        assert_own_words(i, &a.transcript());
    }
    let logs = svc.logs();
    assert!(
        logs.contains("batch of 4 jobs"),
        "no batch of 4 in the worker:\n{logs}"
    );
    assert_eq!(logs.matches("job done").count(), 4);
}

#[tokio::test]
async fn a_worker_killed_mid_batch_answers_every_job_of_it_each_retried_alone() {
    let svc = Service::start(&FAULTY_BATCH_OF_4);
    let (_, h) = svc.get_json("/health").await;
    let pid = h["worker_pid"].as_u64().unwrap() as u32;
    // Clip 0's fault holds the batch in the worker for 4 s (and again when
    // it is retried, alone).
    let answers = post_all(
        &svc,
        [
            vec![("x-fault-inject", "slow:4000")],
            vec![],
            vec![],
            vec![],
        ],
    );
    svc.wait_health("the batch decoding", Duration::from_secs(60), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    assert!(svc.logged("batch of 4 jobs").await, "{}", svc.logs());
    signal(pid, libc::SIGKILL);
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.await.unwrap();
        assert_own_words(i, &a.transcript());
        assert_eq!(
            a.headers["x-worker-generation"], "1",
            "decoded after the restart"
        );
    }
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["worker_restarts"], 1, "one crash, no more: {h}");
    let logs = svc.logs();
    assert_eq!(
        logs.matches("retrying the job alone after its batch failed")
            .count(),
        4,
        "{logs}"
    );
    assert_eq!(
        logs.matches("batch of 4 jobs").count(),
        1,
        "the retries ran alone"
    );
}

#[tokio::test]
async fn a_job_that_crashes_the_worker_alone_twice_is_quarantined_and_the_others_succeed() {
    let svc = Service::start(&FAULTY_BATCH_OF_4);
    let answers = post_all(
        &svc,
        [vec![], vec![], vec![("x-fault-inject", "crash")], vec![]],
    );
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.await.unwrap();
        if i == 2 {
            assert_eq!(a.status, 422, "{}", a.text);
            assert_eq!(a.json()["error"]["code"], "input_quarantined");
        } else {
            assert_own_words(i, &a.transcript());
        }
    }
    let h = svc
        .wait_health("restarted worker ready", Duration::from_secs(60), |h| {
            h["ready"] == true && h["worker_generation"] == 3
        })
        .await;
    assert_eq!(
        h["worker_restarts"], 3,
        "the batch's crash, then the poisoned job's two alone: {h}"
    );
    let logs = svc.logs();
    assert!(logs.contains("batch of 4 jobs"), "{logs}");
    assert_eq!(logs.matches("job done").count(), 3, "{logs}");
}

#[tokio::test]
async fn a_client_that_leaves_while_its_job_waits_in_a_forming_batch_is_never_decoded() {
    let svc = Service::start(&["--max-batch", "4", "--batch-wait-ms", "4000"]);
    // A client that gives up after 1.5 s (time enough to upload and be
    // admitted), while its job waits for company.
    let form = upload_form(speak(CLIPS[0].0), "leaver.wav", &[]);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let leaver = {
        let base = svc.base.clone();
        tokio::spawn(async move {
            impatient
                .post(format!("{base}/v1/audio/transcriptions"))
                .multipart(form)
                .send()
                .await
        })
    };
    svc.wait_health("the leaver's job waiting", Duration::from_secs(10), |h| {
        h["queue_depth"] == 1
    })
    .await;
    // A second client joins the forming batch and stays.
    let stayer = post(&svc.base, speak(CLIPS[1].0), "stayer.wav", &[], &[]);
    assert!(
        leaver.await.unwrap().is_err(),
        "the impatient client timed out"
    );
    let a = stayer.await;
    assert_own_words(1, &a.transcript());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = svc.logs();
    assert!(
        logs.contains("client gone, dropping job before decode"),
        "no drop logged:\n{logs}"
    );
    assert_eq!(
        logs.matches("job done").count(),
        1,
        "the leaver's job was never decoded:\n{logs}"
    );
    assert!(
        !logs.contains("batch of"),
        "the batch held the stayer alone:\n{logs}"
    );
}
