//! Spawning, talking to and killing the `worker-proc` child process.
//!
//! This module owns everything about the child as a process: the command
//! line ([`build_command`]), the spawn, the kill ([`ChildGuard`]), how it
//! ended ([`ProcessExit`]), and (in [`io`]) its framed stdin/stdout, its
//! stderr and the watch on its exit. What the frames *mean* is the worker
//! proxy's business ([`super::worker_proxy`]).
//!
//!
//! Three rules keep the child from ever outliving the service (seed lesson 5):
//! - `prctl(PR_SET_PDEATHSIG, SIGKILL)` in `pre_exec`, so the kernel kills the
//!   child when its parent dies, however it dies (SIGKILL included). The
//!   signal fires when the *thread* that forked the child exits, so every
//!   child is forked from one dedicated, never-ending spawner thread rather
//!   than from a runtime thread that may be retired.
//! - The child gets its own process group; killing uses `killpg`, which also
//!   reaches anything the engine may have forked.
//! - [`ChildGuard`] kills the group on `Drop`, because ractor's `post_stop`
//!   does not run when an actor panics.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

use tokio::process::{Child, Command};

use crate::config::NodeConfig;
use crate::workers::WorkerPlan;

pub mod io;

/// Builds the command line of the worker `plan` describes from the
/// configuration (pure; no spawn).
pub fn build_command(config: &NodeConfig, plan: &WorkerPlan) -> (PathBuf, Vec<String>) {
    let path = config.resolve_worker_path();
    let mut args = vec![
        "--model-dir".to_string(),
        config.model_dir.display().to_string(),
        "--device".to_string(),
        plan.device.clone(),
        "--compute-type".to_string(),
        config.compute_type.clone(),
        "--threads".to_string(),
        plan.threads.to_string(),
        // Lets the worker check at start that its parent is still this
        // process (PDEATHSIG covers the parent dying later).
        "--parent-pid".to_string(),
        std::process::id().to_string(),
        "--heartbeat-interval-ms".to_string(),
        (config.heartbeat_interval().as_millis().max(1)).to_string(),
    ];
    if config.enable_fault_injection {
        args.push("--enable-fault-injection".to_string());
    }
    (path, args)
}

struct SpawnRequest {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: tokio::sync::oneshot::Sender<std::io::Result<Child>>,
}

/// The one thread every worker is forked from. It lives as long as the
/// process, so PR_SET_PDEATHSIG only fires when the service itself dies.
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || {
                // recv() fails only if every sender is gone, which never
                // happens for a static: the thread lives until exit.
                while let Ok(mut req) = rx.recv() {
                    let _guard = req.runtime.enter();
                    let _ = req.reply.send(req.command.spawn());
                }
            })
            .expect("spawning the worker-spawner thread");
        tx
    })
}

/// Spawns the worker `plan` describes with piped stdio, its own process
/// group and a parent death signal (pinned to its GPU with
/// `CUDA_VISIBLE_DEVICES` when it has one).
pub async fn spawn_worker(
    config: &NodeConfig,
    plan: &WorkerPlan,
) -> std::io::Result<(Child, ChildGuard)> {
    let (path, args) = build_command(config, plan);
    let mut command = Command::new(&path);
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    if let Some(gpu) = plan
        .cuda_visible_devices(visible.as_deref())
        .map_err(std::io::Error::other)?
    {
        command.env("CUDA_VISIBLE_DEVICES", gpu);
    }
    command
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply, rx) = tokio::sync::oneshot::channel();
    spawner()
        .send(SpawnRequest {
            command,
            runtime: tokio::runtime::Handle::current(),
            reply,
        })
        .map_err(|_| std::io::Error::other("worker-spawner thread is gone"))?;
    let child = rx
        .await
        .map_err(|_| std::io::Error::other("worker-spawner dropped the request"))??;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("child exited at once"))?;
    let guard = ChildGuard {
        pgid: pid as libc::pid_t,
        reaped: Arc::new(AtomicBool::new(false)),
    };
    Ok((child, guard))
}

/// Kills the child's process group on drop, unless the child was already
/// reaped (its pid may then belong to someone else).
#[derive(Debug)]
pub struct ChildGuard {
    pgid: libc::pid_t,
    reaped: Arc<AtomicBool>,
}

impl ChildGuard {
    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pgid as u32
    }

    /// A flag the exit watcher sets once it has reaped the child.
    pub fn reaped_flag(&self) -> Arc<AtomicBool> {
        self.reaped.clone()
    }

    /// Sends SIGKILL to the child's whole process group.
    pub fn kill(&self) {
        if !self.reaped.load(Ordering::Acquire) {
            // SAFETY: plain syscall on a pgid we created.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a child process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessExit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// Waiting on it failed.
    WaitFailed(String),
}

impl From<&std::process::ExitStatus> for ProcessExit {
    fn from(status: &std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.signal(), status.code()) {
            (Some(sig), _) => ProcessExit::Signal(sig),
            (None, code) => ProcessExit::Code(code.unwrap_or(-1)),
        }
    }
}

impl std::fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessExit::Code(c) => write!(f, "exited with code {c}"),
            ProcessExit::Signal(sig) => {
                let name = match *sig {
                    libc::SIGKILL => "SIGKILL",
                    libc::SIGABRT => "SIGABRT",
                    libc::SIGSEGV => "SIGSEGV",
                    libc::SIGTERM => "SIGTERM",
                    libc::SIGBUS => "SIGBUS",
                    libc::SIGILL => "SIGILL",
                    libc::SIGFPE => "SIGFPE",
                    _ => "signal",
                };
                write!(f, "killed by {name} ({sig})")
            }
            ProcessExit::WaitFailed(e) => write!(f, "wait failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_carries_the_model_and_engine_settings() {
        let mut c = NodeConfig {
            worker_path: Some("/opt/w/worker-proc".into()),
            model_dir: "/m/tiny".into(),
            threads: 2,
            workers: Some(1),
            ..NodeConfig::default()
        };
        let plan = &crate::workers::plan(&c).unwrap()[0];
        let (path, args) = build_command(&c, plan);
        assert_eq!(path, PathBuf::from("/opt/w/worker-proc"));
        let pid = std::process::id().to_string();
        assert_eq!(
            args,
            [
                "--model-dir",
                "/m/tiny",
                "--device",
                "cpu",
                "--compute-type",
                "int8",
                "--threads",
                "2",
                "--parent-pid",
                &pid,
                "--heartbeat-interval-ms",
                "1000"
            ]
        );
        c.enable_fault_injection = true;
        assert!(build_command(&c, plan)
            .1
            .contains(&"--enable-fault-injection".to_string()));
        // Two CPU workers split the two threads.
        c.workers = Some(2);
        let plans = crate::workers::plan(&c).unwrap();
        let args = build_command(&c, &plans[1]).1;
        let at = args.iter().position(|a| a == "--threads").unwrap();
        assert_eq!(args[at + 1], "1");
    }

    #[test]
    fn exits_are_described_by_code_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        let exit = |raw| ProcessExit::from(&std::process::ExitStatus::from_raw(raw));
        assert_eq!(exit(9), ProcessExit::Signal(9));
        assert_eq!(exit(9).to_string(), "killed by SIGKILL (9)");
        assert_eq!(exit(3 << 8), ProcessExit::Code(3));
        assert_eq!(exit(3 << 8).to_string(), "exited with code 3");
    }

    #[tokio::test]
    async fn a_spawned_child_is_in_its_own_group_and_killed_with_its_guard() {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "sleep 30"]).process_group(0);
        let (reply, rx) = tokio::sync::oneshot::channel();
        spawner()
            .send(SpawnRequest {
                command,
                runtime: tokio::runtime::Handle::current(),
                reply,
            })
            .unwrap();
        let mut child = rx.await.unwrap().unwrap();
        let pid = child.id().unwrap() as libc::pid_t;
        // SAFETY: getpgid on our child.
        assert_eq!(
            unsafe { libc::getpgid(pid) },
            pid,
            "child leads its own process group"
        );
        let guard = ChildGuard {
            pgid: pid,
            reaped: Arc::new(AtomicBool::new(false)),
        };
        drop(guard);
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
            .await
            .expect("child killed within 5 s")
            .unwrap();
        assert_eq!(
            ProcessExit::from(&status).to_string(),
            "killed by SIGKILL (9)"
        );
    }
}
