//! The shared job store: one PostgreSQL database that every node of a fleet
//! uses (`--jobs-store postgres://…`), so that a job accepted by any node is
//! run by whichever node has an idle worker, and is readable from every node.
//!
//! # Status
//! This module is the store and its protocol, tested against a real
//! PostgreSQL server (`tests/jobs_postgres.rs`). Not done yet: the
//! `--jobs-store postgres://…` flag and the service side (a runner that
//! claims when the worker is idle and renews every lease/3, answering
//! polls from memory for the jobs this node runs and from [`PgStore::get`]
//! for the others), which waits for the job service's current rework.
//!
//! # Where the audio lives, and why in PostgreSQL
//! The upload is stored in the job's row (`audio bytea`), written in the
//! same `INSERT` (one transaction, committed with PostgreSQL's default
//! `synchronous_commit = on`, i.e. flushed to its WAL) as the record, before
//! the node answers `202`. One transaction means there is never a record
//! without its audio or an orphaned object to collect, and there is no
//! second system to run, secure and back up. It fits: uploads are bounded by
//! `--max-upload-bytes` (100 MiB by default, far below `bytea`'s 1 GiB),
//! PostgreSQL keeps large values out of line (TOAST), so status reads that do
//! not select `audio` never touch it, and the audio is dropped (`NULL`) as
//! soon as the job is finished. An object store would only pay off for
//! uploads of many hundreds of MiB or a very high job rate.
//!
//! # Claim and lease protocol
//! - **Claim** (a node whose worker is idle): one statement,
//!   `UPDATE … WHERE id = (SELECT id … WHERE status = 'queued' OR
//!   (status = 'running' AND lease_until < now()) ORDER BY seq
//!   FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING …`: the oldest claimable job,
//!   row-locked so two nodes claiming at once get different jobs, and never
//!   wait on each other. The row gets the claimer as `lease_owner`, a fresh
//!   `lease_token` (fencing), `lease_until = now() + lease` and
//!   `claims + 1`. Times are the database's own `now()`, so the nodes'
//!   clocks never matter.
//! - **Renew**: the running node extends `lease_until` (and records the
//!   progress) every lease/3; the update matches only its own token and a
//!   `running` status, so 0 rows means the lease was lost (it expired and
//!   another node took the job) or the job was cancelled: the node stops.
//! - **Finish / release**: the final state (or, for a transient refusal,
//!   back to `queued`) is written only under the same token, so a node that
//!   lost its lease can never overwrite the result of the node that took
//!   over.
//! - **A node that dies** (SIGKILL, power loss) renews nothing; its lease
//!   expires and the next claim takes the job over: nothing accepted is lost.
//!   A job claimed more than `max_claims` times without finishing is failed
//!   (`worker_crashed`) instead, so one input cannot take the fleet down
//!   node by node.
//!
//! # Migrations
//! Versioned: [`MIGRATIONS`] is an ordered list; `whisper_jobs_migrations`
//! records each applied version. Nodes that start together serialise on a
//! transaction-level advisory lock, so each migration runs once, inside the
//! transaction that records it. A database with a version newer than this
//! binary knows is refused (an older node must not write a newer schema).
//!
//! # Never blocking
//! Everything here is async (tokio-postgres) on the caller's runtime: no
//! call blocks a thread. Callers still never put a database round trip in
//! the decoding path or under a lock (see the service).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

use super::types::{JobError, JobId, JobSpec, JobStatus};
use crate::api::JobResult;

/// The schema, one migration per version (1-based), applied in order.
pub const MIGRATIONS: &[&str] = &[
    // 1: the jobs table.
    "CREATE TABLE whisper_jobs (
        seq            BIGSERIAL PRIMARY KEY,
        id             UUID NOT NULL UNIQUE,
        status         TEXT NOT NULL CHECK (status IN ('queued','running','done','failed','cancelled')),
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        started_at     TIMESTAMPTZ,
        finished_at    TIMESTAMPTZ,
        decoded_secs   DOUBLE PRECISION NOT NULL DEFAULT 0,
        claims         INTEGER NOT NULL DEFAULT 0,
        lease_owner    TEXT,
        lease_token    UUID,
        lease_until    TIMESTAMPTZ,
        spec           JSONB NOT NULL,
        audio          BYTEA,
        result         JSONB,
        error_code     TEXT,
        error_message  TEXT
    );
    CREATE INDEX whisper_jobs_claimable ON whisper_jobs (seq) WHERE status IN ('queued','running');
    CREATE INDEX whisper_jobs_finished ON whisper_jobs (finished_at) WHERE finished_at IS NOT NULL;",
];

/// Key of the advisory lock that serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x0077_6869_7370_6572; // "whisper" in ASCII

/// Columns of a job as read back (never the audio).
const JOB_COLUMNS: &str = "id, status, (extract(epoch FROM created_at) * 1000)::bigint, \
     (extract(epoch FROM started_at) * 1000)::bigint, (extract(epoch FROM finished_at) * 1000)::bigint, \
     decoded_secs, claims, spec, result, error_code, error_message, lease_owner";

/// A store error: the database could not be reached or refused a statement.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// From the driver.
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A stored value this binary cannot read.
    #[error("corrupt job row: {0}")]
    Corrupt(String),
    /// The schema is newer than this binary.
    #[error("the job database has schema version {found}; this node knows up to {known}: upgrade the node")]
    SchemaTooNew {
        /// In the database.
        found: i32,
        /// In this binary.
        known: i32,
    },
}

/// A job as the database holds it (without its audio).
#[derive(Debug, Clone, PartialEq)]
pub struct PgJob {
    /// Its id.
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// Acceptance time, Unix ms.
    pub created_at_ms: u64,
    /// Last claim, Unix ms.
    pub started_at_ms: Option<u64>,
    /// Finish time, Unix ms.
    pub finished_at_ms: Option<u64>,
    /// Audio seconds decoded, as last renewed.
    pub decoded_secs: f64,
    /// Times it was claimed.
    pub claims: u32,
    /// What it asks for.
    pub spec: JobSpec,
    /// The transcript (done).
    pub result: Option<JobResult>,
    /// Why it failed (failed).
    pub error: Option<JobError>,
    /// The node holding (or last holding) its lease.
    pub lease_owner: Option<String>,
}

/// A job this node claimed: the lease it holds and what it needs to run it.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job as claimed (status `running`).
    pub job: PgJob,
    /// The upload.
    pub audio: Vec<u8>,
    /// The fencing token of this lease.
    pub token: uuid::Uuid,
}

/// The outcome of a `DELETE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgCancel {
    /// It was queued or running: now cancelled.
    Cancelled,
    /// It was finished: deleted.
    Deleted,
    /// No such job.
    NotFound,
}

/// The shared store: a connection that reconnects after a failure.
#[derive(Clone)]
pub struct PgStore {
    url: Arc<str>,
    client: Arc<Mutex<Option<Arc<Client>>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects and brings the schema up to date (see [`MIGRATIONS`]).
    pub async fn connect(url: &str) -> Result<PgStore, PgError> {
        let store = PgStore {
            url: url.into(),
            client: Arc::new(Mutex::new(None)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The live connection, reconnecting if the last one closed. The lock is
    /// held only to swap the handle: queries run outside it, pipelined on
    /// the one connection.
    async fn client(&self) -> Result<Arc<Client>, PgError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "job database connection closed");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The schema version this binary writes.
    pub fn schema_version() -> i32 {
        MIGRATIONS.len() as i32
    }

    async fn migrate(&self) -> Result<(), PgError> {
        // A dedicated connection: a transaction needs `&mut Client`.
        let (mut client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        let conn = tokio::spawn(connection);
        let result = async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS whisper_jobs_migrations (
                    version    INTEGER PRIMARY KEY,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
            )
            .await?;
            let current: i32 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM whisper_jobs_migrations",
                    &[],
                )
                .await?
                .get(0);
            let known = Self::schema_version();
            if current > known {
                return Err(PgError::SchemaTooNew {
                    found: current,
                    known,
                });
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                let version = i as i32 + 1;
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO whisper_jobs_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
                tracing::info!(version, "job database migrated");
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        drop(client);
        let _ = conn.await;
        result
    }

    /// Stores a newly accepted job with its upload; returns once committed
    /// (durable: only then may the node answer `202`).
    pub async fn insert(&self, id: JobId, spec: &JobSpec, audio: &[u8]) -> Result<u64, PgError> {
        let spec = serde_json::to_value(spec).map_err(|e| PgError::Corrupt(e.to_string()))?;
        let row = self
            .client()
            .await?
            .query_one(
                "INSERT INTO whisper_jobs (id, status, spec, audio) VALUES ($1, 'queued', $2, $3)
                 RETURNING (extract(epoch FROM created_at) * 1000)::bigint",
                &[&id.uuid(), &spec, &audio],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Claims the oldest queued job, or a running one whose lease expired,
    /// for `owner`, for `lease`. Jobs already claimed `max_claims` times
    /// are failed on the way (see the module doc).
    pub async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        max_claims: u32,
    ) -> Result<Option<Claim>, PgError> {
        let client = self.client().await?;
        let token = uuid::Uuid::new_v4();
        let lease_ms = lease.as_millis() as f64;
        // Crash-looping jobs first: an expired lease on a job already
        // claimed max_claims times ends it instead of running it again.
        client
            .execute(
                "UPDATE whisper_jobs SET status = 'failed', finished_at = now(), audio = NULL,
                    error_code = 'worker_crashed',
                    error_message = 'the job was interrupted too many times (a node died while running it)',
                    lease_until = NULL
                 WHERE status = 'running' AND lease_until < now() AND claims >= $1",
                &[&(max_claims as i32)],
            )
            .await?;
        let sql = format!(
            "UPDATE whisper_jobs SET status = 'running', lease_owner = $1, lease_token = $2,
                lease_until = now() + $3 * interval '1 millisecond', started_at = now(),
                claims = claims + 1
             WHERE id = (
                SELECT id FROM whisper_jobs
                WHERE status = 'queued' OR (status = 'running' AND lease_until < now())
                ORDER BY seq
                FOR UPDATE SKIP LOCKED
                LIMIT 1)
             RETURNING {JOB_COLUMNS}, audio"
        );
        let Some(row) = client.query_opt(&sql, &[&owner, &token, &lease_ms]).await? else {
            return Ok(None);
        };
        let job = job_of(&row)?;
        let audio: Option<Vec<u8>> = row.get(12);
        let audio =
            audio.ok_or_else(|| PgError::Corrupt(format!("job {} has no audio", job.id)))?;
        Ok(Some(Claim { job, audio, token }))
    }

    /// Extends the lease and records the progress; `false` when the lease is
    /// no longer this node's (it expired and was taken over, or the job was
    /// cancelled or deleted): stop working on it.
    pub async fn renew(
        &self,
        id: JobId,
        token: uuid::Uuid,
        lease: Duration,
        decoded_secs: f64,
    ) -> Result<bool, PgError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE whisper_jobs SET lease_until = now() + $3 * interval '1 millisecond',
                    decoded_secs = greatest(decoded_secs, $4)
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                &[
                    &id.uuid(),
                    &token,
                    &(lease.as_millis() as f64),
                    &decoded_secs,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Writes the final state under this lease; `false` when the lease was
    /// lost (the write is dropped: the new holder's outcome stands).
    pub async fn finish(
        &self,
        id: JobId,
        token: uuid::Uuid,
        outcome: Result<&JobResult, &JobError>,
    ) -> Result<bool, PgError> {
        let client = self.client().await?;
        let n = match outcome {
            Ok(result) => {
                let total = f64::from(result.duration_secs);
                let result =
                    serde_json::to_value(result).map_err(|e| PgError::Corrupt(e.to_string()))?;
                client
                    .execute(
                        "UPDATE whisper_jobs SET status = 'done', finished_at = now(), result = $3,
                            decoded_secs = $4, audio = NULL, lease_until = NULL
                         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                        &[&id.uuid(), &token, &result, &total],
                    )
                    .await?
            }
            Err(error) => {
                client
                    .execute(
                        "UPDATE whisper_jobs SET status = 'failed', finished_at = now(),
                            error_code = $3, error_message = $4, audio = NULL, lease_until = NULL
                         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                        &[&id.uuid(), &token, &error.code, &error.message],
                    )
                    .await?
            }
        };
        Ok(n == 1)
    }

    /// Gives a claimed job back (the node was busy, restarting or shutting
    /// down): queued again at once, this claim not counted.
    pub async fn release(&self, id: JobId, token: uuid::Uuid) -> Result<bool, PgError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE whisper_jobs SET status = 'queued', lease_owner = NULL, lease_token = NULL,
                    lease_until = NULL, claims = greatest(claims - 1, 0)
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                &[&id.uuid(), &token],
            )
            .await?;
        Ok(n == 1)
    }

    /// A job, from any node.
    pub async fn get(&self, id: JobId) -> Result<Option<PgJob>, PgError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM whisper_jobs WHERE id = $1");
        match self.client().await?.query_opt(&sql, &[&id.uuid()]).await? {
            Some(row) => Ok(Some(job_of(&row)?)),
            None => Ok(None),
        }
    }

    /// Jobs newest first, optionally of one status.
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<PgJob>, PgError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM whisper_jobs WHERE ($1::text IS NULL OR status = $1)
             ORDER BY seq DESC LIMIT $2"
        );
        let status = status.map(JobStatus::as_str);
        self.client()
            .await?
            .query(&sql, &[&status, &(limit as i64)])
            .await?
            .iter()
            .map(job_of)
            .collect()
    }

    /// Jobs queued or running, fleet-wide (the backlog limit).
    pub async fn pending(&self) -> Result<u64, PgError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FROM whisper_jobs WHERE status IN ('queued','running')",
                &[],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Jobs by status, fleet-wide.
    pub async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, PgError> {
        self.client()
            .await?
            .query(
                "SELECT status, count(*) FROM whisper_jobs GROUP BY status",
                &[],
            )
            .await?
            .iter()
            .map(|row| {
                let status: String = row.get(0);
                let status = JobStatus::parse(&status)
                    .ok_or_else(|| PgError::Corrupt(format!("status {status:?}")))?;
                Ok((status, row.get::<_, i64>(1) as u64))
            })
            .collect()
    }

    /// `DELETE /v1/jobs/{id}` from any node: a queued or running job is
    /// cancelled (its runner sees it at the next renewal), a finished one
    /// deleted.
    pub async fn cancel(&self, id: JobId) -> Result<PgCancel, PgError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE whisper_jobs SET status = 'cancelled', finished_at = now(), audio = NULL,
                    lease_until = NULL
                 WHERE id = $1 AND status IN ('queued','running')",
                &[&id.uuid()],
            )
            .await?;
        if n == 1 {
            return Ok(PgCancel::Cancelled);
        }
        let n = client
            .execute("DELETE FROM whisper_jobs WHERE id = $1", &[&id.uuid()])
            .await?;
        Ok(if n == 1 {
            PgCancel::Deleted
        } else {
            PgCancel::NotFound
        })
    }

    /// Deletes the jobs finished more than `retention` ago; how many.
    pub async fn purge(&self, retention: Duration) -> Result<u64, PgError> {
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM whisper_jobs
                 WHERE finished_at < now() - $1 * interval '1 millisecond'",
                &[&(retention.as_millis() as f64)],
            )
            .await?)
    }
}

fn ms(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

fn job_of(row: &Row) -> Result<PgJob, PgError> {
    let id: uuid::Uuid = row.get(0);
    let status: String = row.get(1);
    let spec: serde_json::Value = row.get(7);
    let result: Option<serde_json::Value> = row.get(8);
    let error_code: Option<String> = row.get(9);
    let error_message: Option<String> = row.get(10);
    Ok(PgJob {
        id: JobId::from_uuid(id),
        status: JobStatus::parse(&status)
            .ok_or_else(|| PgError::Corrupt(format!("job {id}: status {status:?}")))?,
        created_at_ms: ms(row.get(2)).unwrap_or(0),
        started_at_ms: ms(row.get(3)),
        finished_at_ms: ms(row.get(4)),
        decoded_secs: row.get(5),
        claims: row.get::<_, i32>(6).max(0) as u32,
        spec: serde_json::from_value(spec)
            .map_err(|e| PgError::Corrupt(format!("job {id}: spec: {e}")))?,
        result: result
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| PgError::Corrupt(format!("job {id}: result: {e}")))?,
        error: error_code.map(|code| JobError {
            code,
            message: error_message.unwrap_or_default(),
        }),
        lease_owner: row.get(11),
    })
}
