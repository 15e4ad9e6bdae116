//! Which CTranslate2 this worker runs on, and on what: the library (file and
//! version), the CPU ISA and GEMM backends it dispatched to, or the GPU; and
//! whether CUDA can be used at all, with what is missing when it cannot.
//!
//! # Where the facts come from
//! - The library: the file the dynamic loader mapped (`/proc/self/maps`),
//!   whose name carries the version (`libctranslate2-<hash>.so.4.8.4` from
//!   the PyPI wheel). A from-source build links CTranslate2 statically; its
//!   version is the one vendor/ct2rs is written against.
//! - What it runs on: CTranslate2's own report, `log_system_config()`, the
//!   lines it logs at info level (CPU vendor and ISA flags, selected ISA,
//!   MKL or not, the SGEMM / GEMM_S16 / GEMM_S8 backends, and each GPU).
//!   Its internals (`get_gemm_backend`, …) are not exported by the shared
//!   library, so the worker asks for the report and reads it: stderr is
//!   pointed at a pipe for the call (at start-up, before any other thread
//!   exists), and the lines are logged again as the worker's own.
//!
//! # CUDA
//! The prebuilt library has CUDA 12 kernels and loads the driver
//! (`libcuda.so.1`) and cuBLAS (`libcublas.so.12`, which loads
//! `libcublasLt.so.12`) at run time; it needs no cuDNN (the wheel is built
//! without it, its strings name no cuDNN library). [`cuda_unavailable`]
//! checks each with `dlopen`, in the order a user would fix them, so
//! `--device cuda` fails at start-up naming what is missing instead of
//! failing inside the engine.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::FromRawFd;

use ct2rs::sys::{self, Device, LogLevel};

/// CTranslate2 version ct2rs 0.10.3 is written against (and that
/// scripts/fetch-engine.sh pins).
pub const CT2_VERSION: &str = "4.8.4";

/// Whether this worker links the prebuilt shared library.
pub const PREBUILT: bool = cfg!(feature = "prebuilt");

/// Whether this build can run on CUDA at all: the prebuilt library always
/// can (given the run-time libraries); a from-source build only with the
/// `cuda` feature.
pub const CUDA_BUILT: bool = cfg!(any(feature = "prebuilt", feature = "cuda"));

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineReport {
    /// CTranslate2 version.
    pub version: String,
    /// The library: the mapped file's path, or how it was linked.
    pub library: String,
    /// One line on what it runs on (CPU ISA and GEMM backend, or the GPU).
    pub backend: String,
    /// CTranslate2's own report, a line each, without the log prefixes.
    pub system_config: Vec<String>,
}

mod ffi {
    extern "C" {
        // `void ctranslate2::log_system_config()`: no arguments, no result,
        // so the C calling convention is the same as C++'s on every
        // platform this builds for. Itanium mangling (GCC, Clang).
        #[link_name = "_ZN11ctranslate217log_system_configEv"]
        pub fn log_system_config();
    }
}

/// Reads what the engine is and what it runs on. `device` is the device
/// the model was loaded on. Call once, at start-up, before other threads
/// write to stderr.
pub fn probe(device: Device) -> EngineReport {
    let system_config = system_config();
    let (version, library) = library();
    let backend = backend_line(&system_config, device);
    EngineReport {
        version,
        library,
        backend,
        system_config,
    }
}

/// The loaded library's path and version.
fn library() -> (String, String) {
    let mapped = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|path| {
                    path.rsplit('/')
                        .next()
                        .is_some_and(|f| f.starts_with("libctranslate2"))
                })
                .map(str::to_string)
        });
    match mapped {
        Some(path) => {
            let version = version_from_file_name(&path).unwrap_or_else(|| CT2_VERSION.to_string());
            (version, path)
        }
        None => (
            CT2_VERSION.to_string(),
            "static (built from source with the worker)".to_string(),
        ),
    }
}

/// `…/libctranslate2-42c542ff.so.4.8.4` → `4.8.4`.
fn version_from_file_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let (_, version) = file.split_once(".so.")?;
    let ok = !version.is_empty()
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| version.to_string())
}

/// CTranslate2's `log_system_config()` lines, captured from stderr.
fn system_config() -> Vec<String> {
    let previous = sys::get_log_level();
    sys::set_log_level(LogLevel::Info);
    let captured = capture_stderr(|| {
        // SAFETY: a plain call into the engine with no arguments; it only
        // reads CPU/GPU properties and logs them.
        unsafe { ffi::log_system_config() }
    });
    sys::set_log_level(previous);
    let lines: Vec<String> = captured
        .unwrap_or_default()
        .lines()
        .map(strip_log_prefix)
        .filter(|l| !l.is_empty())
        .collect();
    for line in &lines {
        crate::log_info!("engine: {line}");
    }
    lines
}

/// `[2026-12-03 07:50:00.123] [ctranslate2] [thread 7] [info] CPU: …` →
/// `CPU: …`.
fn strip_log_prefix(line: &str) -> String {
    let mut rest = line.trim_end();
    while let Some(stripped) = rest.strip_prefix('[') {
        match stripped.find("] ") {
            Some(end) => rest = &stripped[end + 2..],
            None => break,
        }
    }
    rest.to_string()
}

/// Runs `f` with fd 2 pointed at a pipe and returns what it wrote.
/// The pipe is drained after `f` returns, so `f` must write less than the
/// pipe's buffer (64 KiB on Linux); anything past that is lost, never
/// blocking: the write end is non-blocking.
fn capture_stderr(f: impl FnOnce()) -> Option<String> {
    let mut fds = [0; 2];
    // SAFETY: plain descriptor calls on descriptors this function owns;
    // fd 2 is restored before returning.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return None;
        }
        let [read_fd, write_fd] = fds;
        libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK);
        let saved = libc::dup(libc::STDERR_FILENO);
        if saved < 0 || libc::dup2(write_fd, libc::STDERR_FILENO) < 0 {
            libc::close(read_fd);
            libc::close(write_fd);
            if saved >= 0 {
                libc::close(saved);
            }
            return None;
        }
        f();
        libc::dup2(saved, libc::STDERR_FILENO);
        libc::close(saved);
        libc::close(write_fd);
        let mut reader = std::fs::File::from_raw_fd(read_fd);
        let mut out = String::new();
        reader.read_to_string(&mut out).ok()?;
        Some(out)
    }
}

/// One line on what the engine runs on, from its report.
fn backend_line(config: &[String], device: Device) -> String {
    let find = |prefix: &str| {
        config
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(prefix).map(str::trim))
    };
    if device == Device::CUDA {
        let gpus: Vec<&str> = config
            .iter()
            .filter_map(|l| l.trim_start().strip_prefix("GPU #").map(str::trim))
            .collect();
        if !gpus.is_empty() {
            return format!("cuda: GPU #{}", gpus.join(", GPU #"));
        }
        return "cuda".to_string();
    }
    let mut parts = vec!["cpu".to_string()];
    if let Some(cpu) = find("CPU:") {
        parts.push(cpu.split(" (").next().unwrap_or(cpu).to_string());
    }
    if let Some(isa) = find("- Selected ISA:") {
        parts.push(format!("ISA {isa}"));
    }
    if let Some(sgemm) = find("- SGEMM backend:") {
        parts.push(format!(
            "SGEMM {}",
            sgemm.split(" (").next().unwrap_or(sgemm)
        ));
    }
    if let Some(s8) = find("- GEMM_S8 backend:") {
        parts.push(format!("GEMM_S8 {}", s8.split(" (").next().unwrap_or(s8)));
    }
    parts.join(", ")
}

/// Why `--device cuda` cannot work here, naming what is missing; `None`
/// when the driver, cuBLAS and at least one GPU are there.
pub fn cuda_unavailable() -> Option<String> {
    if !CUDA_BUILT {
        return Some(
            "this worker-proc was built from source without the `cuda` feature; \
             use --device cpu, or the default prebuilt engine"
                .to_string(),
        );
    }
    if !can_dlopen("libcuda.so.1") {
        return Some(
            "no NVIDIA driver: libcuda.so.1 cannot be loaded (install the NVIDIA driver; \
             in a container, run it with the GPU exposed)"
                .to_string(),
        );
    }
    if PREBUILT && !can_dlopen("libcublas.so.12") {
        return Some(
            "cuBLAS for CUDA 12 is missing: libcublas.so.12 cannot be loaded \
             (`make cuda-libs` installs NVIDIA's pip package nvidia-cublas-cu12 beside \
             the engine; or put it on LD_LIBRARY_PATH)"
                .to_string(),
        );
    }
    if sys::get_device_count(Device::CUDA) <= 0 {
        return Some(
            "the NVIDIA driver is loaded but reports no CUDA GPU \
             (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
                .to_string(),
        );
    }
    None
}

/// Whether the dynamic loader finds and loads `name` (searching as the
/// engine will: this binary's RUNPATH holds the engine's folder).
fn can_dlopen(name: &str) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    // SAFETY: dlopen/dlclose with a valid C string; the handle is closed
    // at once (the library stays loaded if the engine holds it too).
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_soname_file() {
        assert_eq!(
            version_from_file_name("/x/engine/lib/libctranslate2-42c542ff.so.4.8.4").as_deref(),
            Some("4.8.4")
        );
        assert_eq!(version_from_file_name("/x/libctranslate2.so"), None);
        assert_eq!(version_from_file_name("/x/libctranslate2.so.4.x"), None);
    }

    #[test]
    fn log_prefixes_are_stripped() {
        assert_eq!(
            strip_log_prefix(
                "[2026-12-03 07:50:00.123] [ctranslate2] [thread 7] [info] CPU: X (SSE4.1=true)"
            ),
            "CPU: X (SSE4.1=true)"
        );
        assert_eq!(
            strip_log_prefix("[info]  - Selected ISA: AVX2"),
            " - Selected ISA: AVX2"
        );
        assert_eq!(strip_log_prefix("plain"), "plain");
    }

    #[test]
    fn cpu_backend_line_names_isa_and_gemm_backends() {
        let config: Vec<String> = [
            "CPU: AuthenticAMD (SSE4.1=true, AVX=true, AVX2=true, AVX512=false)",
            " - Selected ISA: AVX2",
            " - Use Intel MKL: false",
            " - SGEMM backend: DNNL (packed: false)",
            " - GEMM_S16 backend: none (packed: false)",
            " - GEMM_S8 backend: DNNL (packed: false, u8s8 preferred: true)",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            backend_line(&config, Device::CPU),
            "cpu, AuthenticAMD, ISA AVX2, SGEMM DNNL, GEMM_S8 DNNL"
        );
    }

    /// The real engine's report, through the real capture: the library is
    /// the one this test binary was linked with.
    #[test]
    fn probe_reads_the_linked_engine() {
        let report = probe(Device::CPU);
        assert_eq!(report.version, CT2_VERSION);
        assert!(
            report.system_config.iter().any(|l| l.starts_with("CPU:")),
            "no CPU line in {:?}",
            report.system_config
        );
        assert!(report.backend.starts_with("cpu, "), "{}", report.backend);
        assert!(report.backend.contains("ISA "), "{}", report.backend);
        if PREBUILT {
            assert!(
                report.library.contains("libctranslate2") && report.library.ends_with(".so.4.8.4"),
                "{}",
                report.library
            );
        }
    }
}
