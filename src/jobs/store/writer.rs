//! The store's writer thread: the one owner of the SQLite connection. It
//! applies whatever writes are waiting in one transaction, commits, answers
//! the writes that wanted an acknowledgement, then deletes the audio of
//! jobs whose final state is committed (see the [store doc](super)).

use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::{short, StoreHealth, StoreHooks, StoredJob, Write, MAX_BATCH};
use crate::jobs::types::JobId;

/// The store thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) audio_dir: PathBuf,
    pub(super) hooks: Arc<StoreHooks>,
    pub(super) health: Arc<StoreHealth>,
    /// Held (with its `flock`) for as long as the thread runs.
    pub(super) _lock: File,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Write>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            self.apply(batch);
        }
        // Every handle is gone: checkpoint and close.
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the job database failed");
        }
        tracing::debug!("job store stopped");
    }

    /// Applies a batch in one transaction; then answers acks and deletes
    /// the audio of jobs whose final state is committed.
    fn apply(&mut self, batch: Vec<Write>) {
        let delay = self.hooks.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        let mut delete_audio = Vec::new();
        let mut pending = batch;
        let outcome = (|| -> Result<(), String> {
            if self.hooks.fail.load(Ordering::Relaxed) {
                return Err("the job store is failing (test hook)".into());
            }
            let tx = self.conn.transaction().map_err(|e| e.to_string())?;
            for w in pending.drain(..) {
                if let Write::Flush { ack } = w {
                    flushes.push(ack);
                    continue;
                }
                let what = short(&w);
                let res = apply_one(&tx, w, &mut acks, &mut delete_audio);
                if let Err(e) = res {
                    // One bad write must not lose the others.
                    tracing::error!(write = %what, error = %e, "job store write failed");
                }
            }
            tx.commit().map_err(|e| e.to_string())
        })();
        self.health.record(&outcome);
        match &outcome {
            Ok(()) => {
                self.hooks.commits.fetch_add(1, Ordering::Relaxed);
                for (ack, res) in acks {
                    let _ = ack.send(res);
                }
                for id in delete_audio {
                    let path = self.audio_dir.join(id.to_string());
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "could not delete job audio")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "job store transaction failed; its writes are lost");
                for (ack, _) in acks {
                    let _ = ack.send(Err(e.clone()));
                }
                // Writes never reached (the transaction could not start).
                for w in pending {
                    match w {
                        Write::Insert { ack, .. } => {
                            let _ = ack.send(Err(e.clone()));
                        }
                        Write::Flush { ack } => flushes.push(ack),
                        _ => {}
                    }
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

type Ack = (oneshot::Sender<Result<(), String>>, Result<(), String>);

fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    w: Write,
    acks: &mut Vec<Ack>,
    delete_audio: &mut Vec<JobId>,
) -> rusqlite::Result<()> {
    match w {
        Write::Insert { job, ack } => {
            let res = insert(tx, &job);
            let answer = res.as_ref().map(|_| ()).map_err(|e| e.to_string());
            acks.push((ack, answer));
            res
        }
        Write::Running { id, started_at_ms } => tx
            .execute(
                "UPDATE jobs SET status = 'running', started_at_ms = ?2 WHERE id = ?1 AND status IN ('queued', 'running')",
                params![id.to_string(), started_at_ms as i64],
            )
            .map(drop),
        Write::Requeued { id } => tx
            .execute(
                "UPDATE jobs SET status = 'queued', started_at_ms = NULL, decoded_secs = 0 WHERE id = ?1 AND status IN ('queued', 'running')",
                params![id.to_string()],
            )
            .map(drop),
        Write::Progress { id, decoded_secs } => tx
            .execute(
                "UPDATE jobs SET decoded_secs = ?2 WHERE id = ?1 AND status = 'running'",
                params![id.to_string(), decoded_secs],
            )
            .map(drop),
        Write::Interrupted { id, interruptions } => tx
            .execute(
                "UPDATE jobs SET status = 'queued', started_at_ms = NULL, decoded_secs = 0, interruptions = ?2 WHERE id = ?1",
                params![id.to_string(), i64::from(interruptions)],
            )
            .map(drop),
        Write::Finished {
            id,
            status,
            finished_at_ms,
            result,
            error,
        } => {
            let result = match result.map(|r| serde_json::to_string(&*r)).transpose() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%id, error = %e, "could not serialise a job result");
                    None
                }
            };
            tx.execute(
                "UPDATE jobs SET status = ?2, finished_at_ms = ?3, result = ?4, error_code = ?5, error_message = ?6,
                        decoded_secs = CASE WHEN ?2 = 'done' THEN json_extract(spec, '$.audio_secs') ELSE decoded_secs END
                 WHERE id = ?1",
                params![
                    id.to_string(),
                    status.as_str(),
                    finished_at_ms as i64,
                    result,
                    error.as_ref().map(|e| e.code.as_str()),
                    error.as_ref().map(|e| e.message.as_str()),
                ],
            )?;
            delete_audio.push(id);
            Ok(())
        }
        Write::Delete { ids } => {
            for id in ids {
                tx.execute("DELETE FROM jobs WHERE id = ?1", params![id.to_string()])?;
                delete_audio.push(id);
            }
            Ok(())
        }
        Write::Flush { ack } => {
            let _ = ack.send(());
            Ok(())
        }
    }
}

fn insert(tx: &rusqlite::Transaction<'_>, job: &StoredJob) -> rusqlite::Result<()> {
    let spec = serde_json::to_string(&job.spec)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.execute(
        "INSERT INTO jobs (id, status, created_at_ms, decoded_secs, interruptions, spec)
         VALUES (?1, ?2, ?3, 0, 0, ?4)",
        params![
            job.id.to_string(),
            job.status.as_str(),
            job.created_at_ms as i64,
            spec
        ],
    )?;
    Ok(())
}
