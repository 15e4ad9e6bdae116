//! The worker pool's layout: how many `worker-proc` processes the node runs,
//! on which device each, with how many engine threads.
//!
//! # Rules
//! - `--workers N` runs N worker processes on `--device`. Without it (and
//!   without `--devices`) the CPU runs [`DEFAULT_CPU_WORKERS`] when there
//!   are at least that many threads to split (`--threads`, or the cores
//!   with 0), else one; a GPU runs one ([`default_workers`]). On
//!   the CPU they split the engine threads: `--threads T` in total gives
//!   each worker `T / N`, the remainder going one each to the first
//!   workers, and at least 1 (so `T < N` gives every worker 1 thread);
//!   `--threads 0` (CTranslate2's default) with N > 1 gives each worker
//!   `cores / N` (at least 1), so N workers never each take the default's
//!   `min(4, cores)`. One worker keeps `--threads` as given.
//! - `--devices cuda:0,cuda:1` runs one worker per listed device (`cpu`,
//!   `cuda`, or `cuda:K`, comma-separated; the same device may be listed
//!   twice for two workers on it) and overrides `--device`. `--workers`
//!   beside a list must equal its length, or start-up fails with a clear
//!   error. The CPU workers of a list split the threads as above; a GPU
//!   worker gets `--threads` as given (its CPU threads).
//! - `cuda:K` starts its worker with `CUDA_VISIBLE_DEVICES` set to GPU K
//!   (as `nvidia-smi` numbers them, or the K-th entry of the node's own
//!   `CUDA_VISIBLE_DEVICES` when that is set), so the worker sees one GPU.
//! - Worker ids are the positions `0..N`; a restarted worker keeps its id
//!   (and its device and threads); only its generation changes.

use crate::config::{ConfigError, NodeConfig};

/// The most workers one node runs.
pub const MAX_WORKERS: usize = 64;

/// Workers on the CPU when `--workers` is not given: two single-thread
/// workers decode 2.1× the short clips of one two-thread worker on 2 cores,
/// and a lone request in 0.8× the time (BENCHMARKS.md, *Dynamic batching
/// and the worker pool*).
pub const DEFAULT_CPU_WORKERS: usize = 2;

/// Workers on `device` when neither `--workers` nor `--devices` is given:
/// [`DEFAULT_CPU_WORKERS`] on the CPU with at least that many threads to
/// split (`threads`, or `cores` when it is 0), else one.
pub fn default_workers(device: &str, threads: u32, cores: usize) -> usize {
    let threads = if threads == 0 {
        cores
    } else {
        threads as usize
    };
    if device == "cpu" && threads >= DEFAULT_CPU_WORKERS {
        DEFAULT_CPU_WORKERS
    } else {
        1
    }
}

/// What one worker process runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    /// Its id: its position in the pool, stable across restarts.
    pub id: usize,
    /// `--device` of the worker: `cpu`, `cuda` or `auto`.
    pub device: String,
    /// The GPU it is pinned to (`cuda:K`), if any.
    pub cuda_index: Option<u32>,
    /// `--threads` of the worker (0 = CTranslate2's default).
    pub threads: u32,
}

impl WorkerPlan {
    /// The device as configured: `cpu`, `cuda`, `cuda:1`, `auto`.
    pub fn device_label(&self) -> String {
        match self.cuda_index {
            Some(k) => format!("{}:{k}", self.device),
            None => self.device.clone(),
        }
    }

    /// `CUDA_VISIBLE_DEVICES` for the worker, if it is pinned to a GPU:
    /// entry `cuda_index` of the node's own `visible` list when that is set,
    /// else the index itself. `Err` when the index is past the list.
    pub fn cuda_visible_devices(&self, visible: Option<&str>) -> Result<Option<String>, String> {
        let Some(k) = self.cuda_index else {
            return Ok(None);
        };
        match visible.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Some(k.to_string())),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .nth(k as usize)
                .map(|d| Some(d.to_string()))
                .ok_or_else(|| {
                    format!("cuda:{k} is not in this process's CUDA_VISIBLE_DEVICES ({list})")
                }),
        }
    }
}

/// One entry of `--devices`.
fn parse_device(entry: &str) -> Result<(String, Option<u32>), ConfigError> {
    let bad = || {
        ConfigError(format!(
            "bad --devices entry {entry:?}: expected cpu, cuda or cuda:N (e.g. --devices cuda:0,cuda:1)"
        ))
    };
    match entry.trim() {
        "cpu" => Ok(("cpu".into(), None)),
        "cuda" => Ok(("cuda".into(), None)),
        other => {
            let k = other.strip_prefix("cuda:").ok_or_else(bad)?;
            let k: u32 = k
                .parse()
                .ok()
                .filter(|_| k.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(bad)?;
            Ok(("cuda".into(), Some(k)))
        }
    }
}

/// `total` engine threads split over `n` CPU workers (see the module docs);
/// `cores` stands in for `total` when it is 0.
pub fn split_threads(total: u32, n: usize, cores: usize) -> Vec<u32> {
    if n <= 1 {
        return vec![total; n];
    }
    if total == 0 {
        // Each worker gets its share of the cores, not the default's own
        // min(4, cores) apiece.
        return vec![(cores / n).max(1) as u32; n];
    }
    let total = total as usize;
    (0..n)
        .map(|i| (total / n + usize::from(i < total % n)).max(1) as u32)
        .collect()
}

/// The pool `config` asks for, one plan per worker, or why it cannot run.
pub fn plan(config: &NodeConfig) -> Result<Vec<WorkerPlan>, ConfigError> {
    let devices: Vec<(String, Option<u32>)> = match config.devices.as_deref() {
        Some(list) => {
            let list = list
                .split(',')
                .map(parse_device)
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(n) = config.workers {
                if n != list.len() {
                    return Err(ConfigError(format!(
                        "--workers {n} does not match --devices, which lists {} device(s): \
                         one worker runs per listed device (leave out --workers, or make them agree)",
                        list.len()
                    )));
                }
            }
            list
        }
        None => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let n = config
                .workers
                .unwrap_or_else(|| default_workers(&config.device, config.threads, cores));
            if n == 0 {
                return Err(ConfigError("--workers must be at least 1".into()));
            }
            vec![(config.device.clone(), None); n]
        }
    };
    if devices.len() > MAX_WORKERS {
        return Err(ConfigError(format!(
            "{} workers asked for; at most {MAX_WORKERS}",
            devices.len()
        )));
    }
    let cpu_workers = devices.iter().filter(|(d, _)| d == "cpu").count();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cpu_threads = split_threads(config.threads, cpu_workers, cores).into_iter();
    Ok(devices
        .into_iter()
        .enumerate()
        .map(|(id, (device, cuda_index))| WorkerPlan {
            threads: if device == "cpu" {
                cpu_threads.next().unwrap_or(config.threads)
            } else {
                config.threads
            },
            id,
            device,
            cuda_index,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(workers: Option<usize>, devices: Option<&str>, threads: u32) -> NodeConfig {
        NodeConfig {
            workers,
            devices: devices.map(String::from),
            threads,
            ..NodeConfig::default()
        }
    }

    #[test]
    fn cpu_workers_split_the_threads_at_least_one_each() {
        assert_eq!(split_threads(2, 1, 8), [2]);
        assert_eq!(split_threads(0, 1, 8), [0], "one worker keeps the default");
        assert_eq!(split_threads(2, 2, 8), [1, 1]);
        assert_eq!(split_threads(3, 2, 8), [2, 1]);
        assert_eq!(split_threads(8, 3, 8), [3, 3, 2]);
        assert_eq!(split_threads(1, 3, 8), [1, 1, 1], "at least one each");
        assert_eq!(split_threads(0, 2, 2), [1, 1], "the cores, split");
        assert_eq!(split_threads(0, 4, 2), [1, 1, 1, 1]);
        let p = plan(&config(Some(2), None, 2)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].id, p[1].id), (0, 1));
        assert!(p.iter().all(|w| w.threads == 1 && w.device == "cpu"));
        assert_eq!(plan(&config(Some(1), None, 2)).unwrap()[0].threads, 2);
    }

    #[test]
    fn without_workers_the_cpu_runs_two_when_it_has_two_threads_to_split() {
        assert_eq!(default_workers("cpu", 2, 1), 2);
        assert_eq!(default_workers("cpu", 8, 1), 2);
        assert_eq!(default_workers("cpu", 1, 16), 1, "one thread: one worker");
        assert_eq!(default_workers("cpu", 0, 2), 2, "0: the cores");
        assert_eq!(default_workers("cpu", 0, 1), 1);
        assert_eq!(default_workers("cuda", 8, 16), 1, "a GPU: one");
        let p = plan(&config(None, None, 2)).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|w| w.threads == 1));
        let p = plan(&NodeConfig {
            device: "cuda".into(),
            ..config(None, None, 2)
        })
        .unwrap();
        assert_eq!((p.len(), p[0].threads), (1, 2));
    }

    #[test]
    fn a_device_list_runs_one_worker_per_device() {
        let p = plan(&config(None, Some("cuda:0,cuda:1"), 4)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].device_label(), "cuda:1");
        assert_eq!(p[1].device, "cuda");
        assert_eq!(p[1].threads, 4, "GPU workers keep --threads");
        assert_eq!(
            p[0].cuda_visible_devices(None).unwrap().as_deref(),
            Some("0")
        );
        assert_eq!(
            p[1].cuda_visible_devices(Some("4,6")).unwrap().as_deref(),
            Some("6"),
            "an index into the node's own visible list"
        );
        assert!(p[1].cuda_visible_devices(Some("4")).is_err());
        let p = plan(&config(Some(2), Some("cpu, cuda:3"), 2)).unwrap();
        assert_eq!((p[0].threads, p[1].cuda_index), (2, Some(3)));
        assert_eq!(p[0].cuda_visible_devices(None).unwrap(), None);
    }

    #[test]
    fn bad_or_inconsistent_pools_are_refused_with_the_reason() {
        for bad in [
            "gpu:0", "cuda:", "cuda:x", "cuda:-1", "cuda:0,", "", "cuda:+1",
        ] {
            let e = plan(&config(None, Some(bad), 2)).unwrap_err().to_string();
            assert!(e.contains("bad --devices entry"), "{bad}: {e}");
        }
        let e = plan(&config(Some(3), Some("cuda:0,cuda:1"), 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--workers 3 does not match --devices"), "{e}");
        assert!(plan(&config(Some(0), None, 2)).is_err());
        assert!(plan(&config(Some(MAX_WORKERS + 1), None, 2)).is_err());
    }
}
