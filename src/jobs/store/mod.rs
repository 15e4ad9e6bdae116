//! The job store: one SQLite database (`jobs.sqlite3`, WAL journal,
//! `synchronous=FULL`) and one file per accepted upload (`audio/<id>`),
//! under the data directory, owned by ONE writer thread.
//!
//! # Ownership
//! A `rusqlite::Connection` is `!Sync` and every call on it blocks, so the
//! connection lives on a dedicated OS thread (`job-store`), never on a tokio
//! worker. Everyone else talks to it through a [`StoreHandle`]: an
//! unbounded channel whose `send` never blocks and never waits. The thread
//! takes whatever is waiting (up to [`MAX_BATCH`] writes), applies it in one
//! transaction, commits (an fsync of the WAL with `synchronous=FULL`), then
//! answers the writes that wanted an acknowledgement and deletes the audio
//! files of jobs whose final state is now committed.
//!
//! # Durability
//! - [`write_audio`] writes an upload to `audio/<id>.tmp`, fsyncs it,
//!   renames it to `audio/<id>` and fsyncs the directory: once it returns,
//!   the audio survives a crash. It is plain blocking I/O; callers run it on
//!   a blocking thread.
//! - [`Write::Insert`] is acknowledged only after its transaction committed.
//!   The service sends `202 Accepted` only after both.
//! - Every later write is fire-and-forget. If one is lost (the store failed,
//!   or the process died before the commit), the job is at worst found in
//!   an earlier state at restart, and run again: at-least-once, never lost.
//! - An audio file is deleted only after the job's final state committed,
//!   so a job that still needs its audio always has it.
//!
//! # Recovery ([`open`])
//! The data directory is locked (`flock` on `lock`) so two nodes can never
//! run the same jobs. Then every row is read back. Leftover `.tmp` files
//! and audio files without an unfinished job (a crash between the audio
//! write and the commit, whose client never got a `202`; or between a
//! final commit and the deletion) are removed.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::types::{JobError, JobId, JobSpec, JobStatus};
use crate::api::JobResult;

mod audio;
#[cfg(test)]
mod tests;
mod writer;

use audio::sync_dir;
pub use audio::{audio_path, open_audio, read_audio, write_audio, write_upload};
use writer::Writer;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "jobs.sqlite3";
/// Folder of the uploads inside the data directory.
pub const AUDIO_DIR: &str = "audio";
/// Lock file inside the data directory.
const LOCK_FILE: &str = "lock";
/// Most writes applied in one transaction.
pub const MAX_BATCH: usize = 512;
/// Schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER,
    decoded_secs   REAL NOT NULL DEFAULT 0,
    interruptions  INTEGER NOT NULL DEFAULT 0,
    spec           TEXT NOT NULL,
    result         TEXT,
    error_code     TEXT,
    error_message  TEXT
);
";

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    /// Its id.
    pub id: JobId,
    /// Its status when last written.
    pub status: JobStatus,
    /// Acceptance time, Unix ms.
    pub created_at_ms: u64,
    /// Last hand-over to the node, Unix ms.
    pub started_at_ms: Option<u64>,
    /// Finish time, Unix ms.
    pub finished_at_ms: Option<u64>,
    /// Audio seconds decoded when last written.
    pub decoded_secs: f64,
    /// How often the service died while the job was running.
    pub interruptions: u32,
    /// What it asks for.
    pub spec: JobSpec,
    /// The transcript (done).
    pub result: Option<JobResult>,
    /// Why it failed (failed).
    pub error: Option<JobError>,
}

/// One write for the store thread.
#[derive(Debug)]
pub enum Write {
    /// A newly accepted job (its audio is already durable); acknowledged
    /// after the commit.
    Insert {
        /// The job.
        job: Box<StoredJob>,
        /// `Ok` once committed.
        ack: oneshot::Sender<Result<(), String>>,
    },
    /// The job was handed to the node.
    Running {
        /// Which.
        id: JobId,
        /// When, Unix ms.
        started_at_ms: u64,
    },
    /// The job went back to the backlog (the node was busy, restarting or
    /// shutting down).
    Requeued {
        /// Which.
        id: JobId,
    },
    /// Decode progress.
    Progress {
        /// Which.
        id: JobId,
        /// Audio seconds decoded.
        decoded_secs: f64,
    },
    /// Recovery found the job running: count the interruption, re-queue it.
    Interrupted {
        /// Which.
        id: JobId,
        /// The new count.
        interruptions: u32,
    },
    /// The job finished (done, failed or cancelled); its audio file is
    /// deleted after the commit.
    Finished {
        /// Which.
        id: JobId,
        /// Done, failed or cancelled.
        status: JobStatus,
        /// When, Unix ms.
        finished_at_ms: u64,
        /// The transcript (done).
        result: Option<Arc<JobResult>>,
        /// Why (failed).
        error: Option<JobError>,
    },
    /// Forget jobs: their rows and any audio file (deleted by a client, or
    /// past the retention time).
    Delete {
        /// Which.
        ids: Vec<JobId>,
    },
    /// Answered once everything sent before it is committed.
    Flush {
        /// Answered after the commit.
        ack: oneshot::Sender<()>,
    },
}

/// Test hooks: make the writer slow or failing (unit tests prove that
/// neither stalls decoding or polling).
#[derive(Debug, Default)]
pub struct StoreHooks {
    /// Sleep this long before each transaction, ms.
    pub delay_ms: AtomicU64,
    /// Fail every transaction.
    pub fail: AtomicBool,
    /// Transactions committed so far.
    pub commits: AtomicU64,
}

/// How the store's transactions have been going: written by the store
/// thread, read by `/health` and `/ready` (never blocks either side).
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// Transactions that failed since start.
    pub failed_transactions: AtomicU64,
    /// Whether the last transaction failed.
    pub failing: AtomicBool,
    /// The last failure, for humans.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl StoreHealth {
    fn record(&self, outcome: &Result<(), String>) {
        match outcome {
            Ok(()) => self.failing.store(false, Ordering::Release),
            Err(e) => {
                self.failed_transactions.fetch_add(1, Ordering::AcqRel);
                self.failing.store(true, Ordering::Release);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            }
        }
    }

    /// The last failure, if the last transaction failed.
    pub fn current_error(&self) -> Option<String> {
        if self.failing.load(Ordering::Acquire) {
            self.last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        } else {
            None
        }
    }
}

/// The sending side of the store thread. Cheap to clone; `send` never
/// blocks.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Write>,
    hooks: Arc<StoreHooks>,
    health: Arc<StoreHealth>,
}

impl StoreHandle {
    /// Queues a write for the store thread; never blocks. A write to a
    /// stopped store is logged and dropped.
    pub fn send(&self, w: Write) {
        if let Err(mpsc::SendError(w)) = self.tx.send(w) {
            tracing::error!(write = ?short(&w), "the job store is stopped; write dropped");
        }
    }

    /// Waits (without blocking a thread) until everything sent before is
    /// committed or failed; `false` if the store thread is gone.
    pub async fn flush(&self) -> bool {
        let (ack, done) = oneshot::channel();
        self.send(Write::Flush { ack });
        done.await.is_ok()
    }

    /// The test hooks.
    pub fn hooks(&self) -> &StoreHooks {
        &self.hooks
    }

    /// How the transactions have been going.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }
}

pub(super) fn short(w: &Write) -> String {
    match w {
        Write::Insert { job, .. } => format!("insert {}", job.id),
        Write::Running { id, .. } => format!("running {id}"),
        Write::Requeued { id } => format!("requeued {id}"),
        Write::Progress { id, .. } => format!("progress {id}"),
        Write::Interrupted { id, .. } => format!("interrupted {id}"),
        Write::Finished { id, status, .. } => format!("{} {id}", status.as_str()),
        Write::Delete { ids } => format!("delete {} jobs", ids.len()),
        Write::Flush { .. } => "flush".into(),
    }
}

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the data directory.
    #[error("the job data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// File system trouble.
    #[error("job data directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite trouble.
    #[error("job database {path}: {source}")]
    Db {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The database was written by a newer version.
    #[error("job database {0} has schema version {1}; this build knows {SCHEMA_VERSION}")]
    Schema(PathBuf, i64),
    /// The store thread could not start or died during start-up.
    #[error("the job store thread failed: {0}")]
    Thread(String),
}

/// An open store: its handle, the jobs found in it, and the thread.
pub struct Opened {
    /// Where to send writes.
    pub handle: StoreHandle,
    /// Every job in the database, in acceptance order.
    pub jobs: Vec<StoredJob>,
    /// The store thread; ends once every handle is dropped and the last
    /// writes are committed.
    pub thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("jobs", &self.jobs.len())
            .finish()
    }
}

/// Opens (creating if needed) the store in `data_dir` on a new `job-store`
/// thread and reads every job back. Blocking: call it from a blocking
/// thread (or before the runtime serves anything).
pub fn open(data_dir: &Path) -> Result<Opened, OpenError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    let audio_dir = data_dir.join(AUDIO_DIR);
    fs::create_dir_all(&audio_dir).map_err(io(&audio_dir))?;
    sync_dir(data_dir).map_err(io(data_dir))?;
    let lock_path = data_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    // SAFETY: flock on a valid, open descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(OpenError::Locked(data_dir.to_path_buf()));
    }

    let db_path = data_dir.join(DB_FILE);
    let db = |source| OpenError::Db {
        path: db_path.clone(),
        source,
    };
    let conn = Connection::open(&db_path).map_err(db)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "the job database did not switch to WAL");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::Schema(db_path, version));
    }
    conn.execute_batch(SCHEMA).map_err(db)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db)?;
    let jobs = read_all(&conn).map_err(db)?;

    // Audio without an unfinished job, and half-written uploads, go.
    let wanted: HashSet<String> = jobs
        .iter()
        .filter(|j| !j.status.is_finished())
        .map(|j| j.id.to_string())
        .collect();
    if let Ok(entries) = fs::read_dir(&audio_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !wanted.contains(&name) {
                tracing::info!(file = %name, "removing an audio file no unfinished job needs");
                let _ = fs::remove_file(e.path());
            }
        }
    }

    let hooks = Arc::new(StoreHooks::default());
    let health = Arc::new(StoreHealth::default());
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        conn,
        audio_dir,
        hooks: hooks.clone(),
        health: health.clone(),
        _lock: lock,
    };
    let thread = std::thread::Builder::new()
        .name("job-store".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| OpenError::Thread(e.to_string()))?;
    Ok(Opened {
        handle: StoreHandle { tx, hooks, health },
        jobs,
        thread,
    })
}

fn read_all(conn: &Connection) -> rusqlite::Result<Vec<StoredJob>> {
    let mut stmt = conn.prepare(
        "SELECT id, status, created_at_ms, started_at_ms, finished_at_ms, decoded_secs,
                interruptions, spec, result, error_code, error_message
         FROM jobs ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, f64>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<String>>(9)?,
            r.get::<_, Option<String>>(10)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            status,
            created,
            started,
            finished,
            decoded,
            interruptions,
            spec,
            result,
            code,
            message,
        ) = row?;
        // A row this build cannot read is skipped (and kept), not fatal.
        let (Some(id), Some(status)) = (JobId::parse(&id), JobStatus::parse(&status)) else {
            tracing::error!(%id, %status, "skipping an unreadable job row");
            continue;
        };
        let spec: JobSpec = match serde_json::from_str(&spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%id, error = %e, "skipping a job row with an unreadable spec");
                continue;
            }
        };
        let result = match result.map(|r| serde_json::from_str::<JobResult>(&r)) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                tracing::error!(%id, error = %e, "a stored result is unreadable");
                None
            }
        };
        out.push(StoredJob {
            id,
            status,
            created_at_ms: created.max(0) as u64,
            started_at_ms: started.map(|t| t.max(0) as u64),
            finished_at_ms: finished.map(|t| t.max(0) as u64),
            decoded_secs: decoded,
            interruptions: interruptions.clamp(0, i64::from(u32::MAX)) as u32,
            spec,
            result,
            error: code.map(|code| JobError {
                code,
                message: message.unwrap_or_default(),
            }),
        });
    }
    Ok(out)
}

/// Reads one job straight from the database file (tests and tools; opens
/// its own read-only connection, so it never touches the writer).
pub fn read_job(
    data_dir: &Path,
    id: JobId,
) -> rusqlite::Result<Option<(JobStatus, Option<String>)>> {
    let conn = Connection::open_with_flags(
        data_dir.join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    conn.query_row(
        "SELECT status, result FROM jobs WHERE id = ?1",
        params![id.to_string()],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
    )
    .optional()
    .map(|o| o.and_then(|(s, r)| JobStatus::parse(&s).map(|s| (s, r))))
}
