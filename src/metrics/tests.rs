use super::*;

#[test]
fn the_recorder_installs_once_and_renders_the_node_metrics() {
    let h = install().expect("no other recorder in the unit tests");
    assert!(
        std::ptr::eq(h, install().unwrap()),
        "installing twice returns the same handle"
    );
    job_dispatched(Duration::from_millis(30));
    busy_rejection();
    decode_failed("worker_crashed");
    http_request("ok", 200, Duration::from_millis(900));
    node_gauges(NodeGauges {
        worker_state: WorkerState::Busy,
        worker_generation: 2,
        in_flight: 1,
        queue_depth: 3,
        queue_capacity: 8,
        ready: true,
        workers_accepting: 1,
    });
    worker_gauges(1, WorkerState::Restarting, 3);
    let text = h.render();
    for needle in [
        "# TYPE asr_queue_wait_seconds histogram",
        "asr_queue_wait_seconds_bucket{le=\"0.05\"}",
        "asr_queue_wait_seconds_count",
        "# TYPE asr_busy_rejections_total counter",
        "asr_decode_failures_total{reason=\"worker_crashed\"}",
        "asr_requests_total{outcome=\"ok\",status=\"200\"}",
        "asr_worker_state{state=\"busy\"} 1",
        "asr_worker_state{state=\"ready\"} 0",
        "asr_queue_depth 3",
        "asr_worker_restarts_total 0",
        "asr_workers_accepting 1",
        "asr_worker_pool_state{worker=\"1\",state=\"restarting\"} 1",
        "asr_worker_pool_state{worker=\"1\",state=\"ready\"} 0",
        "asr_worker_pool_generation{worker=\"1\"} 3",
        "asr_worker_pool_restarts_total{worker=\"1\"} 0",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn every_counter_is_exported_at_zero_from_the_start() {
    let text = install().expect("no other recorder").render();
    for code in DECODE_FAILURE_REASONS {
        let line = format!("asr_decode_failures_total{{reason=\"{}\"}}", code.name());
        assert!(text.contains(&line), "{line} missing");
    }
    for needle in [
        "asr_jobs_total{outcome=\"ok\"}",
        "asr_jobs_total{outcome=\"worker_crashed\"}",
        "asr_requests_total{outcome=\"queue_full\",status=\"429\"}",
        "asr_requests_total{outcome=\"invalid_api_key\",status=\"401\"}",
        "asr_auth_refusals_total{code=\"missing_api_key\"}",
        "asr_queue_timeouts_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // Every counter of the exposition has at least one series.
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.strip_suffix(" counter"))
        {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(name) && !l.starts_with('#')),
                "counter {name} has no series"
            );
        }
    }
}

#[test]
fn every_status_has_a_bounded_label() {
    assert_eq!(status_label(429), "429");
    assert_eq!(status_label(418), "4xx");
    assert_eq!(status_label(599), "5xx");
}
