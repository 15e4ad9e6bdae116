//! The whole service as a library call: what `whisper-node` runs.
//!
//! [`listener`] binds `--listen` (or takes the already listening socket of
//! `--listen-fd`), and [`run`] serves the node on it until a shutdown
//! future resolves:
//!
//! 1. the Host check's allowed names are parsed (`--allowed-hosts`, against
//!    the listener's real address);
//! 2. the actor tree starts and the worker loads the model (a model that
//!    cannot be loaded is an error: the binary exits 1);
//! 3. the async job service starts beside it; a job store that cannot be
//!    opened leaves the node serving synchronous transcription (job routes
//!    answer 503 `store_unavailable`, `/health` says why);
//! 4. HTTP is served on the listener (connections made while the model
//!    loads wait in the listen backlog and are answered once it is up);
//! 5. when `shutdown` resolves: drain (refuse new work with 503, answer
//!    queued jobs 503, let the in-flight job finish and its answer go out,
//!    hand unfinished async jobs back to the store), then stop HTTP.
//!
//! A test or a host binds its own listener on port 0, reads its address,
//! and hands it over:
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use clap::Parser;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?; // known before the node starts
//! let cli = whisper_node::cli::Cli::parse_from(["whisper-node", "--model-dir", "models/tiny.en"]);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(whisper_node::server::run(listener, cli, async move {
//!     let _ = stopped.await;
//!     "test".to_string()
//! }));
//! // … talk to http://{addr} …
//! let _ = stop.send(());
//! server.await??;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::TcpListener;

use std::any::Any;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt as _};
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use actix_web::{web, App};
use anyhow::Context;

use crate::cli::Cli;
use crate::http::expect::EarlyRefusal;
use crate::http::host::AllowedHosts;
use crate::http::jobs::JobsUnavailable;
use crate::jobs::Jobs;
use crate::AsrNode;

/// The listening socket `cli` asks for: the inherited descriptor of
/// `--listen-fd`, or a new socket bound to `--listen`.
pub fn listener(cli: &Cli) -> anyhow::Result<TcpListener> {
    match cli.listen_fd {
        Some(fd) => inherited_listener(fd),
        None => TcpListener::bind(cli.listen)
            .with_context(|| format!("cannot listen on {}", cli.listen)),
    }
}

/// Takes ownership of descriptor `fd`, which must be a listening TCP socket.
fn inherited_listener(fd: i32) -> anyhow::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    anyhow::ensure!(fd >= 3, "--listen-fd {fd}: descriptors 0-2 are stdio");
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("--listen-fd {fd} is not a socket"));
    }
    anyhow::ensure!(accepting != 0, "--listen-fd {fd} is not a listening socket");
    // SAFETY: the descriptor is a listening socket handed to this process
    // to own; nothing else in it uses the number. Children must not inherit it.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener
        .local_addr()
        .with_context(|| format!("--listen-fd {fd} is not a TCP socket"))?;
    Ok(listener)
}

/// Serves the node on `listener` until `shutdown` resolves (with a name for
/// the log, e.g. the signal), then drains and returns. See the module docs.
pub async fn run(
    listener: TcpListener,
    cli: Cli,
    shutdown: impl Future<Output = String> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    let allowed_hosts = AllowedHosts::parse(&cli.allowed_hosts, addr)
        .map_err(anyhow::Error::msg)
        .context("--allowed-hosts")?;
    tracing::info!(allowed_hosts = ?allowed_hosts, "Host header check");
    let allowed_hosts = web::Data::new(allowed_hosts);
    let access =
        crate::http::access::Access::from_config(&cli.access, cli.node.effective_queue_capacity())?;
    let access = web::Data::new(access);
    tracing::info!(model_dir = %cli.node.model_dir.display(), %addr, "starting");
    let node = AsrNode::start(cli.node.clone())
        .await
        .context("start-up failed")?;
    let (jobs, jobs_unavailable) = start_jobs(&node, &cli).await;
    let jobs_data = jobs.as_ref().map(crate::http::jobs::app_data);
    let data = web::Data::new(node.clone());
    let early = EarlyRefusal::new(
        node.clone(),
        access.clone(),
        Some((**allowed_hosts).clone()),
        cli.client_fairness,
        cli.refused_body,
    );
    let early_data = web::Data::new(early.clone());
    let workers = if cli.http_workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        cli.http_workers
    };
    let http_nice = cli.http_nice;
    if cli.worker_nice > 0 {
        renice_workers(node.clone(), cli.worker_nice);
    }
    let app_factory = move || {
        // Runs once on each HTTP worker thread.
        lower_thread_priority(http_nice);
        let app = App::new()
            .app_data(data.clone())
            .app_data(allowed_hosts.clone())
            .app_data(access.clone())
            .app_data(early_data.clone())
            // Innermost first: the early refusal needs the client the key
            // check found; the Host check comes before both; CORS outermost
            // (it answers preflights itself).
            .wrap(from_fn(crate::http::expect::early_refusal))
            .wrap(from_fn(crate::http::auth::check))
            .wrap(from_fn(crate::http::host::check))
            .wrap(access.cors());
        let app = match (&jobs_data, &jobs_unavailable) {
            (Some(jobs), _) => app.app_data(jobs.clone()),
            (None, Some(unavailable)) => app.app_data(unavailable.clone()),
            (None, None) => app,
        };
        app.configure(crate::http::configure)
    };
    // actix-web's HttpServer, built by hand from actix-server and
    // actix-http with the same settings, for the one hook it lacks: the
    // `Expect: 100-continue` service (see `crate::http::expect`).
    let builder = actix_server::Server::build();
    let graceful = builder.graceful_shutdown_signal();
    let server = builder
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(cli.node.shutdown_grace_secs.ceil() as u64 + 5)
        .listen("whisper-node-http", listener, move || {
            let graceful = graceful.clone();
            let app = app_factory()
                .into_factory()
                .map_err(|err: actix_web::Error| err.error_response());
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = graceful.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .on_connect_ext(|io: &actix_web::rt::net::TcpStream, ext| {
                    crate::http::on_connect(io as &dyn Any, ext)
                })
                .expect(crate::http::expect::expect_service(early.clone()))
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })
        .with_context(|| format!("cannot serve on {addr}"))?
        .run();
    tracing::info!(%addr, "serving");
    let http = server.handle();
    tokio::spawn(async move {
        let reason = shutdown.await;
        tracing::info!(reason, "shutting down gracefully");
        // The job service stops taking jobs and hands back (re-queues) any
        // async job the draining node does not finish.
        let jobs_stopped = async {
            if let Some(jobs) = &jobs {
                jobs.shutdown().await;
            }
        };
        tokio::join!(node.shutdown(), jobs_stopped);
        http.stop(true).await;
    });
    server.await.context("http server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Lowers the calling thread's CPU priority by `nice` (Linux: nice is per
/// thread), so the engine wins the CPU from the HTTP side under load
/// (`--http-nice`). 0 leaves it; failures are logged once per thread.
fn lower_thread_priority(nice: i32) {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if nice == 0 || DONE.with(|d| d.replace(true)) {
        return;
    }
    // SAFETY: plain syscalls on the calling thread's own id.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, now + nice)
    };
    if rc != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "--http-nice: cannot change the HTTP thread's priority");
    }
}

/// Gives every worker process the node starts (it restarts them) the nice
/// value `nice` (`--worker-nice`): all of its threads, found in
/// `/proc/PID/task` as soon as the node publishes the worker's pid;
/// threads it creates later inherit it. A lower priority for the engine
/// than for the HTTP threads makes refusals and probes wait less for a
/// busy CPU, at the cost of the engine yielding to them (and to anything
/// else on the machine at nice 0).
fn renice_workers(node: AsrNode, nice: i32) {
    tokio::spawn(async move {
        let mut done = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let Some(pid) = node.status().worker_pid else {
                continue;
            };
            if done == Some(pid) {
                continue;
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Ok(tid) = t.file_name().to_string_lossy().parse::<libc::id_t>() {
                    // SAFETY: a plain syscall on a thread of our own child.
                    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
                        tracing::warn!(pid, tid, nice, error = %std::io::Error::last_os_error(), "--worker-nice: cannot renice the worker");
                    }
                }
            }
            tracing::info!(pid, nice, "worker reniced");
            done = Some(pid);
        }
    });
}

/// The async job service (`/v1/jobs`), or why it is unavailable: its own
/// durable store and runner beside the node; unfinished jobs of an earlier
/// run are re-queued here. A store that cannot be opened (unwritable or
/// locked folder) does not stop the node.
async fn start_jobs(
    node: &AsrNode,
    cli: &Cli,
) -> (Option<Jobs>, Option<web::Data<JobsUnavailable>>) {
    if cli.jobs.disabled {
        tracing::info!("async jobs are disabled");
        return (None, None);
    }
    match Jobs::start(node.clone(), cli.jobs.clone()).await {
        Ok(jobs) => (Some(jobs), None),
        Err(e) => {
            tracing::error!(
                error = %e,
                data_dir = %cli.jobs.data_dir.display(),
                "the async job service failed to start; serving without it (job routes answer 503 store_unavailable)"
            );
            let unavailable = JobsUnavailable {
                reason: e.to_string(),
            };
            (None, Some(web::Data::new(unavailable)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    #[test]
    fn an_inherited_listening_socket_is_taken_and_others_are_refused() {
        let bound = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = bound.local_addr().unwrap();
        let fd = bound.into_raw_fd();
        let taken = inherited_listener(fd).expect("a listening socket is taken");
        assert_eq!(taken.local_addr().unwrap(), addr);
        // SAFETY: reading the flags of a descriptor this test owns.
        let flags = unsafe { libc::fcntl(taken.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "not inherited by the worker");

        let file = std::fs::File::open("/dev/null").unwrap();
        let e = inherited_listener(file.as_raw_fd())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a socket"), "{e}");
        let connected = std::net::TcpStream::connect(addr).unwrap();
        let e = inherited_listener(connected.as_raw_fd())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a listening socket"), "{e}");
        assert!(inherited_listener(1).is_err(), "stdio is refused");
    }
}
