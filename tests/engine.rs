//! The engine the worker runs: the handshake's report of the linked
//! CTranslate2 library as `/health` shows it, and `--device cuda` on a
//! machine where CUDA cannot run.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn health_reports_the_linked_engine_library_and_backend() {
    let svc = Service::start(&[]);
    let (status, h) = svc.get_json("/health").await;
    assert_eq!(status, 200);
    let engine = &h["engine"];
    assert_eq!(engine["version"], "4.8.4", "{h}");
    let library = engine["library"].as_str().expect("engine.library");
    // `make test ENGINE=source` runs these tests on a statically linked
    // engine built from source.
    if std::env::var("WHISPER_NODE_TEST_ENGINE").as_deref() == Ok("source") {
        assert!(library.starts_with("static"), "{library}");
    } else {
        // The file the worker really mapped: the wheel's library, by the
        // name its SONAME carries.
        assert!(
            library.contains("/libctranslate2-") && library.ends_with(".so.4.8.4"),
            "{library}"
        );
        assert!(Path::new(library).is_file(), "{library} is not a file");
    }
    let backend = engine["backend"].as_str().expect("engine.backend");
    assert!(backend.starts_with("cpu, "), "{backend}");
    assert!(backend.contains("ISA "), "{backend}");
    let config = engine["system_config"]
        .as_array()
        .expect("engine.system_config");
    assert!(
        config
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("GEMM_S8 backend"))),
        "{config:?}"
    );
}

/// Without a GPU, `--device cuda` is a start-up error that names what is
/// missing; the worker is started once, not restarted in a loop.
#[tokio::test]
async fn device_cuda_without_a_gpu_fails_at_start_up_naming_what_is_missing() {
    if Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: this machine has an NVIDIA device");
        return;
    }
    let started = Instant::now();
    let result = Service::start_with(&["--device", "cuda", "--max-restarts", "5"], &[]);
    let elapsed = started.elapsed();
    let (code, log) = match result {
        Ok(_) => panic!("the node started with --device cuda on a machine without a GPU"),
        Err(e) => e,
    };
    assert_eq!(code, Some(1), "documented exit status 1; log:\n{log}");
    assert!(
        elapsed < Duration::from_secs(60),
        "took {elapsed:?} to fail"
    );
    assert!(
        log.contains("--device cuda cannot run here"),
        "no clear cause in:\n{log}"
    );
    // What is missing, by name: here, the NVIDIA driver.
    assert!(
        log.contains("libcuda.so.1"),
        "missing library not named:\n{log}"
    );
    let spawns = log.matches("worker spawned").count();
    assert_eq!(spawns, 1, "the worker was started {spawns} times:\n{log}");
}
