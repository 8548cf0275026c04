//! The embedded default store: one SQLite file in WAL mode.
//!
//! Writes go through one writer thread that groups whatever operations are waiting into one
//! transaction (group commit); an operation refused before it writes anything leaves the others
//! be, and one that fails after writing (SQLite itself failing) fails the whole batch, every
//! caller told. Callers get their answer only after the commit. Reads use a small pool of
//! read connections. Several processes may share the file: SQLite's locking orders their
//! transactions, and a busy database is waited for, with a log line, never dropped.
//! `synchronous = NORMAL` in WAL mode keeps every committed transaction through a `kill -9`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::transition::{self, Emitted};
use super::{
    AfterFailure, CancelOutcome, CronTicks, DeadLetters, Enqueued, EventLog, JobFilter, JobStatus,
    JobStore, KvEntry, KvKey, KvPage, KvStore, LeaseStatus, Page, Purged, QueueControl, Recovered,
    Retention, RetentionPolicy, StateCounts, StatusCache,
};
use super::{ClaimLimits, fair, status};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::job::{Job, JobError, JobId, JobState, NewJob, Payload, Progress, Timestamp};

/// Operations committed together at most.
const MAX_BATCH: usize = 512;
/// Read connections kept open.
const READERS: usize = 4;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', 1);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    timeout_ms INTEGER,
    idempotency_key TEXT,
    tenant TEXT,
    headers TEXT,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    progress TEXT,
    result TEXT,
    error TEXT,
    attempts TEXT NOT NULL,
    lease_worker TEXT,
    lease_expires_at INTEGER,
    lease_token INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX IF EXISTS jobs_ready;
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (queue, state, coalesce(tenant, ''), priority DESC, run_at, seq);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, queue, state) WHERE tenant IS NOT NULL;
CREATE TABLE IF NOT EXISTS paused (queue TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    metadata TEXT,
    expires_at INTEGER,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    job BLOB NOT NULL,
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS queue_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('counts_built', 0);
CREATE TABLE IF NOT EXISTS turns (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    turn INTEGER NOT NULL,
    PRIMARY KEY (queue, tenant)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cron_ticks (
    task TEXT NOT NULL,
    tick INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (task, tick)
) WITHOUT ROWID;
"#;

/// The columns of a job, in the order `job_from_row` reads them (a macro so statements can be
/// put together at compile time with `concat!`).
macro_rules! job_columns {
    () => {
        "id, queue, kind, payload, priority, run_at, attempt, max_attempts, timeout_ms, \
         idempotency_key, tenant, headers, state, created_at, started_at, finished_at, progress, \
         result, error, attempts, lease_worker, lease_expires_at, lease_token"
    };
}
const JOB_COLUMNS: &str = job_columns!();
const LOAD_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1");
const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (",
    job_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23) ON CONFLICT (id) DO NOTHING"
);

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
type Op = Box<dyn FnOnce(&Connection, &mut Counts) -> (bool, Done) + Send>;

/// How many jobs each operation moved between states, per queue. The writer adds up the
/// changes of a batch's successful operations and applies them to `queue_counts` before the
/// commit, so counting stays one row per queue and state without a write per job.
#[derive(Default)]
struct Counts(std::collections::HashMap<(String, JobState), i64>);

impl Counts {
    /// A job of `queue` moved from state `from` (none: it was added) to `to` (none: removed).
    fn moved(&mut self, queue: &str, from: Option<JobState>, to: Option<JobState>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            *self.0.entry((queue.to_owned(), from)).or_default() -= 1;
        }
        if let Some(to) = to {
            *self.0.entry((queue.to_owned(), to)).or_default() += 1;
        }
    }

    fn merge(&mut self, other: Counts) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_default() += n;
        }
    }

    fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO queue_counts (queue, state, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((queue, state), n) in self.0.drain() {
            if n != 0 {
                stmt.execute(params![queue, state.as_str(), n])?;
            }
        }
        Ok(())
    }
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<mpsc::Sender<Op>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    status: Option<Arc<StatusCache>>,
    notify: Arc<tokio::sync::Notify>,
    /// Rate-limit buckets: per process (processes sharing the file do not share them).
    buckets: super::rate::LocalBuckets,
    /// Dropped with the store, which stops the checkpointer.
    _stop_checkpoints: mpsc::Sender<()>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn ms(ts: Timestamp) -> i64 {
    ts.timestamp_millis()
}

fn ts(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn opt_ts(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(ts)
}

fn json_err(err: serde_json::Error) -> Error {
    Error::Store(format!("corrupt record: {err}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(json_err)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(json_err)
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Savepoints' statement journals stay in memory (a temp file per savepoint costs a write).
    // No connection checkpoints the WAL when it commits (that stalls the writer: a 33 ms p99 on
    // submissions); a thread of its own does, without blocking anyone (see `checkpoints`).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; \
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;",
    )?;
    Ok(conn)
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] (a passive
/// checkpoint: it never waits for the writer or readers, and skips what they still use), until
/// the store is dropped. SQLite starts the WAL over once everything in it is checkpointed.
fn checkpoints(path: &Path, stop: &mpsc::Receiver<()>) {
    let conn = match open_connection(path) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot open a connection to checkpoint the WAL; it will grow until restart");
            return;
        }
    };
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(path = %path.display(), error = %err, "checkpointing the WAL failed; retrying");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and its parent directory.
    pub async fn open(path: &Path, status: Option<StatusCache>) -> Result<Self> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(parent) = opened.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::Store(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            let conn = open_connection(&opened)?;
            conn.execute_batch(SCHEMA)?;
            build_counts(&conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| Error::Store(e.to_string()))?
        .map_err(|e| Error::Store(format!("cannot open {}: {e}", path.display())))?;
        let (sender, receiver) = mpsc::channel::<Op>();
        let name = path.display().to_string();
        std::thread::Builder::new()
            .name("raindrop-sqlite-writer".into())
            .spawn(move || write_loop(&conn, &receiver, &name))
            .map_err(|e| Error::Store(format!("cannot start the SQLite writer: {e}")))?;
        let (stop_checkpoints, stopped) = mpsc::channel::<()>();
        let checkpointed = path.clone();
        std::thread::Builder::new()
            .name("raindrop-sqlite-checkpoint".into())
            .spawn(move || checkpoints(&checkpointed, &stopped))
            .map_err(|e| Error::Store(format!("cannot start the SQLite checkpointer: {e}")))?;
        Ok(Self {
            path,
            _stop_checkpoints: stop_checkpoints,
            writer: Mutex::new(sender),
            readers: Arc::new(Mutex::new(Vec::new())),
            status: status.map(Arc::new),
            notify: Arc::new(tokio::sync::Notify::new()),
            buckets: super::rate::LocalBuckets::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next transaction; answers after the commit.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Counts) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op: Op = Box::new(move |conn, counts| {
            let result = f(conn, counts);
            let ok = result.is_ok();
            let done: Done = Box::new(move |commit| {
                let _ = reply.send(commit.map_err(Error::Store).and(result));
            });
            (ok, done)
        });
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(op)
            .map_err(|_| Error::Store("the SQLite writer has stopped".into()))?;
        let result = answer
            .await
            .map_err(|_| Error::Store("the SQLite writer stopped before answering".into()))?;
        // Whatever committed may have appended events.
        self.notify.notify_waiters();
        result
    }

    /// Runs `f` on a read connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&path)?,
            };
            let result = f(&conn);
            let mut pool = readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Store(e.to_string()))?
    }
}

/// Counts the jobs per queue and state once, when the counts table is new; the writer keeps
/// it up to date after that.
fn build_counts(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let built: i64 = conn.query_row(
        "SELECT value FROM meta WHERE key = 'counts_built'",
        [],
        |row| row.get(0),
    )?;
    if built == 0 {
        conn.execute_batch(
            "DELETE FROM queue_counts;
             INSERT INTO queue_counts (queue, state, n) SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state;
             UPDATE meta SET value = 1 WHERE key = 'counts_built';",
        )?;
    }
    conn.execute_batch("COMMIT")
}

/// The writer thread: takes what is waiting, commits it as one transaction, answers.
fn write_loop(conn: &Connection, receiver: &mpsc::Receiver<Op>, name: &str) {
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
    };
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        begin(conn, name);
        let mut counts = Counts::default();
        let mut done = Vec::with_capacity(batch.len());
        let mut failure = None;
        for op in batch {
            // No savepoint per operation: each validates before it writes, so one that fails
            // has (almost always) written nothing and the others commit. One that wrote and
            // then failed (SQLite itself failing) cannot be undone alone: the batch goes.
            let before = conn.total_changes();
            let mut moved = Counts::default();
            let (ok, finish) = op(conn, &mut moved);
            // SQLite ends a transaction itself on some errors (a full disk, an I/O error).
            let ended = conn.is_autocommit();
            if ok && !ended {
                counts.merge(moved);
            } else if ended || conn.total_changes() != before {
                failure.get_or_insert_with(|| {
                    "an operation failed after writing; its transaction was rolled back".into()
                });
            }
            if ended {
                // What follows must not commit statement by statement: it runs in a new
                // transaction, rolled back with the rest.
                begin(conn, name);
            }
            done.push(finish);
        }
        if let Err(err) = counts.flush(conn) {
            failure.get_or_insert(format!("updating queue counts failed: {err}"));
        }
        let commit = match failure {
            Some(failure) => Err(failure),
            None => run("COMMIT").map_err(|e| format!("commit failed: {e}")),
        };
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for finish in done {
            finish(commit.clone());
        }
    }
}

/// Starts a write transaction, waiting out other processes' locks with backoff and one log
/// line per outage.
fn begin(conn: &Connection, name: &str) {
    let mut delay = Duration::from_millis(10);
    let mut since: Option<std::time::Instant> = None;
    loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                if let Some(since) = since {
                    tracing::warn!(
                        database = name,
                        waited_ms = since.elapsed().as_millis() as u64,
                        "SQLite store writable again"
                    );
                }
                return;
            }
            Err(err) => {
                if since.is_none() {
                    tracing::warn!(database = name, error = %err, "SQLite store cannot start a write; retrying with backoff");
                    since = Some(std::time::Instant::now());
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: row.get(0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        payload: row.get(3)?,
        priority: row.get(4)?,
        run_at: row.get(5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        timeout_ms: row.get(8)?,
        idempotency_key: row.get(9)?,
        tenant: row.get(10)?,
        headers: row.get(11)?,
        state: row.get(12)?,
        created_at: row.get(13)?,
        started_at: row.get(14)?,
        finished_at: row.get(15)?,
        progress: row.get(16)?,
        result: row.get(17)?,
        error: row.get(18)?,
        attempts: row.get(19)?,
        lease_worker: row.get(20)?,
        lease_expires_at: row.get(21)?,
        lease_token: row.get(22)?,
    })
}

/// A job row as stored, before its JSON columns are parsed.
struct RawJob {
    id: Vec<u8>,
    queue: String,
    kind: String,
    payload: String,
    priority: i32,
    run_at: i64,
    attempt: u32,
    max_attempts: u32,
    timeout_ms: Option<i64>,
    idempotency_key: Option<String>,
    tenant: Option<String>,
    headers: Option<String>,
    state: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    progress: Option<String>,
    result: Option<String>,
    error: Option<String>,
    attempts: String,
    lease_worker: Option<String>,
    lease_expires_at: Option<i64>,
    lease_token: Option<i64>,
}

fn job_id(bytes: &[u8]) -> Result<JobId> {
    uuid::Uuid::from_slice(bytes)
        .map(|u| u.to_string().parse().unwrap_or_default())
        .map_err(|e| Error::Store(format!("corrupt job id: {e}")))
}

impl RawJob {
    fn into_job(self) -> Result<Job> {
        let lease = match (self.lease_worker, self.lease_expires_at, self.lease_token) {
            (Some(worker), Some(expires_at), Some(token)) => Some(crate::job::Lease {
                worker,
                expires_at: ts(expires_at),
                token: token as u64,
            }),
            _ => None,
        };
        Ok(Job {
            id: job_id(&self.id)?,
            queue: self.queue,
            kind: self.kind,
            payload: Payload::trusted(self.payload),
            priority: self.priority,
            run_at: ts(self.run_at),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            timeout: self
                .timeout_ms
                .map(|t| Duration::from_millis(t.max(0) as u64)),
            idempotency_key: self.idempotency_key,
            tenant: self.tenant,
            headers: self
                .headers
                .as_deref()
                .map(from_json)
                .transpose()?
                .unwrap_or_default(),
            state: self.state.parse()?,
            created_at: ts(self.created_at),
            started_at: opt_ts(self.started_at),
            finished_at: opt_ts(self.finished_at),
            progress: self.progress.as_deref().map(from_json).transpose()?,
            result: self.result.map(Payload::trusted),
            error: self.error.as_deref().map(from_json).transpose()?,
            attempts: from_json(&self.attempts)?,
            lease,
        })
    }
}

fn id_bytes(id: JobId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

fn load(conn: &Connection, id: JobId) -> Result<Option<Job>> {
    let raw = conn
        .prepare_cached(LOAD_JOB)?
        .query_row([&id_bytes(id)[..]], job_from_row)
        .optional()?;
    raw.map(RawJob::into_job).transpose()
}

fn load_many(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Job>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let raws = stmt
        .query_map(params, job_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawJob::into_job).collect()
}

fn headers_json(job: &Job) -> Result<Option<String>> {
    if job.headers.is_empty() {
        Ok(None)
    } else {
        to_json(&job.headers).map(Some)
    }
}

/// Inserts `job`; false if a job with its id exists (and nothing was written).
fn insert(conn: &Connection, job: &Job) -> Result<bool> {
    let inserted = conn.prepare_cached(INSERT_JOB)?.execute(params![
        &id_bytes(job.id)[..],
        job.queue,
        job.kind,
        job.payload.as_str(),
        job.priority,
        ms(job.run_at),
        job.attempt,
        job.max_attempts,
        job.timeout.map(|t| t.as_millis() as i64),
        job.idempotency_key,
        job.tenant,
        headers_json(job)?,
        job.state.as_str(),
        ms(job.created_at),
        job.started_at.map(ms),
        job.finished_at.map(ms),
        job.progress.as_ref().map(to_json).transpose()?,
        job.result.as_ref().map(Payload::as_str),
        job.error.as_ref().map(to_json).transpose()?,
        to_json(&job.attempts)?,
        job.lease.as_ref().map(|l| l.worker.as_str()),
        job.lease.as_ref().map(|l| ms(l.expires_at)),
        job.lease.as_ref().map(|l| l.token as i64),
    ])?;
    Ok(inserted == 1)
}

/// Writes back what transitions change.
fn save(conn: &Connection, job: &Job) -> Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET run_at = ?2, attempt = ?3, state = ?4, started_at = ?5, finished_at = ?6, progress = ?7, \
         result = ?8, error = ?9, attempts = ?10, lease_worker = ?11, lease_expires_at = ?12, lease_token = ?13 \
         WHERE id = ?1",
    )?
    .execute(params![
        &id_bytes(job.id)[..],
        ms(job.run_at),
        job.attempt,
        job.state.as_str(),
        job.started_at.map(ms),
        job.finished_at.map(ms),
        job.progress.as_ref().map(to_json).transpose()?,
        job.result.as_ref().map(Payload::as_str),
        job.error.as_ref().map(to_json).transpose()?,
        to_json(&job.attempts)?,
        job.lease.as_ref().map(|l| l.worker.as_str()),
        job.lease.as_ref().map(|l| ms(l.expires_at)),
        job.lease.as_ref().map(|l| l.token as i64),
    ])?;
    Ok(())
}

/// Appends `emitted` to the event log.
fn emit(conn: &Connection, job: &Job, emitted: Emitted, now: Timestamp) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events (at, kind, job, queue, state, attempt, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (kind, detail) in emitted {
        stmt.execute(params![
            ms(now),
            kind.as_str(),
            &id_bytes(job.id)[..],
            job.queue,
            job.state.as_str(),
            job.attempt,
            detail
        ])?;
    }
    Ok(())
}

fn put_kv(conn: &Connection, ns: &str, key: &str, entry: &KvEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (ns, key, value, metadata, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata, \
         expires_at = excluded.expires_at",
    )?
    .execute(params![
        ns,
        key,
        entry.value,
        entry.metadata.as_ref().map(to_json).transpose()?,
        entry.expires_at.map(ms)
    ])?;
    Ok(())
}

/// The tenants ("" for jobs without one) with queued jobs in `queue`: one index seek each.
const READY_TENANTS: &str = "WITH RECURSIVE g(t) AS (
    SELECT min(coalesce(tenant, '')) FROM jobs WHERE queue = ?1 AND state = 'queued'
    UNION ALL
    SELECT (SELECT min(coalesce(tenant, '')) FROM jobs
            WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') > g.t)
    FROM g WHERE g.t IS NOT NULL
) SELECT t FROM g WHERE t IS NOT NULL";

/// A tenant's ready jobs ("" for jobs without one), best first: priority and row, read from the
/// claim index alone.
const READY_JOBS: &str = "SELECT priority, seq FROM jobs \
     WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 \
     ORDER BY priority DESC, run_at, seq LIMIT ?3 OFFSET ?4";
const LOAD_ROW: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE seq = ?1");
/// A tenant's first ready jobs, whole: a claim's answer when only one tenant has jobs waiting.
const READY_ROWS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 \
     ORDER BY priority DESC, run_at, seq LIMIT ?3"
);

/// How many more jobs of `queue` `tenant` may start under `limits` (jobs without a tenant are
/// not limited).
fn room(conn: &Connection, queue: &str, tenant: &str, limits: ClaimLimits) -> Result<usize> {
    let Some(max) = limits.running_per_tenant.filter(|_| !tenant.is_empty()) else {
        return Ok(usize::MAX);
    };
    let running: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'running' AND coalesce(tenant, '') = ?2",
        )?
        .query_row(params![queue, tenant], |row| row.get(0))?;
    Ok((max as usize).saturating_sub(running.max(0) as usize))
}

/// Up to `limit` ready jobs of `queue`, in the order a claim takes them (see [`fair`]).
fn choose(conn: &Connection, queue: &str, limit: usize, limits: ClaimLimits) -> Result<Vec<Job>> {
    let tenants = conn
        .prepare_cached(READY_TENANTS)?
        .query_map([queue], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    if let [tenant] = &tenants[..] {
        // One group: no turns to take, its first jobs are the answer.
        let room = room(conn, queue, tenant, limits)?;
        return load_many(
            conn,
            READY_ROWS,
            params![queue, tenant, limit.min(room) as i64],
        );
    }
    let mut turns: HashMap<String, u64> = HashMap::new();
    let mut next = 1;
    if tenants.len() > 1 {
        let mut stmt = conn.prepare_cached("SELECT tenant, turn FROM turns WHERE queue = ?1")?;
        let rows = stmt.query_map([queue], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (tenant, turn) = row?;
            next = next.max(turn as u64 + 1);
            turns.insert(tenant, turn as u64);
        }
    }
    let fetch = fair::fetch_size(tenants.len(), limit);
    // The next `count` ready jobs of `tenant` after the first `offset`.
    let ready_jobs = |tenant: &str, count: usize, offset: usize| -> Result<Vec<(i32, i64)>> {
        Ok(conn
            .prepare_cached(READY_JOBS)?
            .query_map(params![queue, tenant, count as i64, offset as i64], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    };
    let mut groups = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        let room = room(conn, queue, tenant, limits)?;
        let count = fetch.min(room);
        let ready = if room == 0 {
            Vec::new()
        } else {
            ready_jobs(tenant, count, 0)?
        };
        groups.push(fair::Group {
            turn: turns.get(tenant).copied().unwrap_or(0),
            room,
            fetched: ready.len(),
            more: ready.len() == count && room > 0,
            ready: ready.into(),
        });
    }
    let chosen = fair::pick(&mut groups, limit, &mut next, |i, group| {
        let count = fetch.min(group.room);
        let more = ready_jobs(&tenants[i], count, group.fetched)?;
        group.fetched += more.len();
        group.more = more.len() == count;
        group.ready.extend(more);
        Ok::<_, Error>(())
    })?;
    if tenants.len() > 1 {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO turns (queue, tenant, turn) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, tenant) DO UPDATE SET turn = excluded.turn",
        )?;
        for (tenant, group) in tenants.iter().zip(&groups) {
            if turns.get(tenant) != Some(&group.turn) {
                stmt.execute(params![queue, tenant, group.turn as i64])?;
            }
        }
    }
    let mut stmt = conn.prepare_cached(LOAD_ROW)?;
    let mut jobs = Vec::with_capacity(chosen.len());
    for seq in chosen {
        jobs.push(stmt.query_row([seq], job_from_row)?.into_job()?);
    }
    Ok(jobs)
}

/// Marks due scheduled and retrying jobs (of one queue, or all) as queued; returns how many.
fn promote_due(
    conn: &Connection,
    counts: &mut Counts,
    queue: Option<&str>,
    now: Timestamp,
) -> Result<u64> {
    // Literal states let SQLite use the ready and due indexes.
    const ONE_QUEUE: [(JobState, &str); 2] = [
        (
            JobState::Scheduled,
            "UPDATE jobs SET state = 'queued' WHERE queue = ?2 AND state = 'scheduled' AND run_at <= ?1 RETURNING queue",
        ),
        (
            JobState::Retrying,
            "UPDATE jobs SET state = 'queued' WHERE queue = ?2 AND state = 'retrying' AND run_at <= ?1 RETURNING queue",
        ),
    ];
    const ALL_QUEUES: [(JobState, &str); 2] = [
        (
            JobState::Scheduled,
            "UPDATE jobs SET state = 'queued' WHERE state = 'scheduled' AND run_at <= ?1 RETURNING queue",
        ),
        (
            JobState::Retrying,
            "UPDATE jobs SET state = 'queued' WHERE state = 'retrying' AND run_at <= ?1 RETURNING queue",
        ),
    ];
    let mut promoted = 0;
    for (from, sql) in if queue.is_some() {
        ONE_QUEUE
    } else {
        ALL_QUEUES
    } {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = match queue {
            Some(queue) => stmt.query(params![ms(now), queue])?,
            None => stmt.query(params![ms(now)])?,
        };
        while let Some(row) = rows.next()? {
            counts.moved(
                &row.get::<_, String>(0)?,
                Some(from),
                Some(JobState::Queued),
            );
            promoted += 1;
        }
    }
    Ok(promoted)
}

/// Loads job `id`, applies `transition`, saves and emits — inside the writer's transaction.
fn apply<T>(
    conn: &Connection,
    counts: &mut Counts,
    id: JobId,
    now: Timestamp,
    transition: impl FnOnce(&mut Job) -> Result<(T, Emitted)>,
) -> Result<T> {
    let mut job = load(conn, id)?.ok_or(Error::NotFound(id))?;
    let before = job.state;
    let (value, emitted) = transition(&mut job)?;
    save(conn, &job)?;
    counts.moved(&job.queue, Some(before), Some(job.state));
    emit(conn, &job, emitted, now)?;
    Ok(value)
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>> {
        self.write(move |conn, counts| {
            let mut outcomes = Vec::with_capacity(jobs.len());
            for new in jobs {
                if let Some(key) = &new.idempotency_key {
                    let existing: Option<Vec<u8>> = conn
                        .prepare_cached(
                            "SELECT id FROM jobs WHERE queue = ?1 AND idempotency_key = ?2",
                        )?
                        .query_row(params![new.queue, key], |row| row.get(0))
                        .optional()?;
                    if let Some(existing) = existing {
                        outcomes.push(Enqueued::Duplicate(job_id(&existing)?));
                        continue;
                    }
                }
                let job = Job::from_new(new, now);
                if !insert(conn, &job)? {
                    // A producer retrying a submission with the same id.
                    outcomes.push(Enqueued::Duplicate(job.id));
                    continue;
                }
                counts.moved(&job.queue, None, Some(job.state));
                emit(conn, &job, vec![(EventKind::Enqueued, None)], now)?;
                outcomes.push(Enqueued::New(job.id));
            }
            Ok(outcomes)
        })
        .await
    }

    async fn claim_with(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<Vec<Job>> {
        let (queue, worker) = (queue.to_owned(), worker.to_owned());
        self.write(move |conn, counts| {
            let paused: Option<i64> = conn
                .prepare_cached("SELECT 1 FROM paused WHERE queue = ?1")?
                .query_row([&queue], |r| r.get(0))
                .optional()?;
            if paused.is_some() {
                return Ok(Vec::new());
            }
            promote_due(conn, counts, Some(&queue), now)?;
            let mut jobs = choose(conn, &queue, limit, limits)?;
            let expires_at = transition::after(now, lease);
            for job in &mut jobs {
                let token = fastrand::u64(1..i64::MAX as u64);
                let emitted = transition::claim(job, &worker, token, expires_at, now);
                save(conn, job)?;
                counts.moved(&job.queue, Some(JobState::Queued), Some(JobState::Running));
                emit(conn, job, emitted, now)?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn heartbeat(
        &self,
        leases: &[(JobId, u64)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LeaseStatus>> {
        let leases = leases.to_vec();
        self.write(move |conn, _| {
            let expires_at = transition::after(now, lease);
            let mut answers = Vec::with_capacity(leases.len());
            for (id, token) in leases {
                let mut job = load(conn, id)?;
                let answer = transition::heartbeat(job.as_mut(), token, expires_at);
                if answer == LeaseStatus::Extended {
                    conn.prepare_cached("UPDATE jobs SET lease_expires_at = ?2 WHERE id = ?1")?
                        .execute(params![&id_bytes(id)[..], ms(expires_at)])?;
                }
                answers.push(answer);
            }
            Ok(answers)
        })
        .await
    }

    async fn progress(
        &self,
        id: JobId,
        token: u64,
        progress: Progress,
        now: Timestamp,
    ) -> Result<()> {
        self.write(move |conn, counts| {
            apply(conn, counts, id, now, |job| {
                Ok(((), transition::progress(job, token, progress)?))
            })
        })
        .await
    }

    async fn complete(&self, id: JobId, token: u64, result: Payload, now: Timestamp) -> Result<()> {
        self.write(move |conn, counts| {
            apply(conn, counts, id, now, |job| {
                Ok(((), transition::complete(job, token, result, now)?))
            })
        })
        .await
    }

    async fn fail(
        &self,
        id: JobId,
        token: u64,
        error: JobError,
        then: AfterFailure,
        now: Timestamp,
    ) -> Result<()> {
        self.write(move |conn, counts| {
            apply(conn, counts, id, now, |job| {
                Ok(((), transition::fail(job, token, error, then, now)?))
            })
        })
        .await
    }

    async fn release(&self, id: JobId, token: u64, now: Timestamp) -> Result<()> {
        self.write(move |conn, counts| {
            apply(conn, counts, id, now, |job| {
                Ok(((), transition::release(job, token, now)?))
            })
        })
        .await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelOutcome> {
        self.write(move |conn, counts| {
            apply(conn, counts, id, now, |job| {
                Ok(transition::cancel(job, now))
            })
        })
        .await
    }

    async fn recover(&self, now: Timestamp) -> Result<Vec<Recovered>> {
        self.write(move |conn, counts| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)"
            );
            let lapsed = load_many(conn, &sql, [ms(now)])?;
            let mut recovered = Vec::with_capacity(lapsed.len());
            for mut job in lapsed {
                let emitted = transition::recover(&mut job, now);
                save(conn, &job)?;
                counts.moved(&job.queue, Some(JobState::Running), Some(job.state));
                emit(conn, &job, emitted, now)?;
                recovered.push(Recovered { id: job.id, queue: job.queue.clone(), state: job.state });
            }
            Ok(recovered)
        })
        .await
    }

    async fn promote(&self, now: Timestamp) -> Result<u64> {
        self.write(move |conn, counts| promote_due(conn, counts, None, now))
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.read(move |conn| load(conn, id)).await
    }

    async fn list(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(after) = after {
                values.push(id_bytes(after).to_vec().into());
                sql.push_str(&format!(" AND id < ?{}", values.len()));
            }
            if let Some(queue) = &filter.queue {
                values.push(queue.clone().into());
                sql.push_str(&format!(" AND queue = ?{}", values.len()));
            }
            if let Some(kind) = &filter.kind {
                values.push(kind.clone().into());
                sql.push_str(&format!(" AND kind = ?{}", values.len()));
            }
            if let Some(tenant) = &filter.tenant {
                values.push(tenant.clone().into());
                sql.push_str(&format!(" AND tenant = ?{}", values.len()));
            }
            if !filter.states.is_empty() {
                let states: Vec<String> = filter
                    .states
                    .iter()
                    .map(|s| format!("'{}'", s.as_str()))
                    .collect();
                sql.push_str(&format!(" AND state IN ({})", states.join(", ")));
            }
            values.push(((limit + 1) as i64).into());
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", values.len()));
            let mut items = load_many(conn, &sql, rusqlite::params_from_iter(values))?;
            let next = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|j| j.id)
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }

    async fn counts(&self) -> Result<BTreeMap<String, StateCounts>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            let mut counts: BTreeMap<String, StateCounts> = BTreeMap::new();
            for row in rows {
                let (queue, state, n) = row?;
                counts
                    .entry(queue)
                    .or_default()
                    .add(state.parse()?, n as u64);
            }
            Ok(counts)
        })
        .await
    }

    async fn count_waiting(&self, queue: &str, tenant: &str, _up_to: u64) -> Result<u64> {
        let (queue, tenant) = (queue.to_owned(), tenant.to_owned());
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM jobs WHERE tenant = ?1 AND queue = ?2 AND state IN ('queued', 'scheduled', 'retrying')",
                )?
                .query_row(params![tenant, queue], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn oldest_ready(&self, queue: &str, now: Timestamp) -> Result<Option<Timestamp>> {
        let queue = queue.to_owned();
        self.read(move |conn| {
            let oldest: Option<i64> = conn
                .prepare_cached(
                    "SELECT MIN(run_at) FROM jobs WHERE queue = ?1 AND state IN ('queued', 'scheduled', 'retrying') AND run_at <= ?2",
                )?
                .query_row(params![queue, ms(now)], |row| row.get(0))?;
            Ok(opt_ts(oldest))
        })
        .await
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn retry_dead(&self, id: JobId, now: Timestamp) -> Result<()> {
        self.write(move |conn, counts| {
            apply(conn, counts, id, now, |job| {
                Ok(((), transition::retry_dead(job, now)?))
            })
        })
        .await
    }

    async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        let queue = queue.map(str::to_owned);
        self.write(move |conn, counts| {
            let mut stmt = conn.prepare_cached(
                "DELETE FROM jobs WHERE state = 'dead' AND (?1 IS NULL OR queue = ?1) RETURNING queue",
            )?;
            let queues = stmt.query_map([&queue], |row| row.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            for queue in &queues {
                counts.moved(queue, Some(JobState::Dead), None);
            }
            Ok(queues.len() as u64)
        })
        .await
    }
}

#[async_trait]
impl QueueControl for SqliteStore {
    async fn pause(&self, queue: &str) -> Result<()> {
        let queue = queue.to_owned();
        self.write(move |conn, _| {
            conn.prepare_cached("INSERT OR IGNORE INTO paused (queue) VALUES (?1)")?
                .execute([queue])?;
            Ok(())
        })
        .await
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        let queue = queue.to_owned();
        self.write(move |conn, _| {
            conn.prepare_cached("DELETE FROM paused WHERE queue = ?1")?
                .execute([queue])?;
            Ok(())
        })
        .await
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT queue FROM paused ORDER BY queue")?;
            let queues = stmt
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(queues)
        })
        .await
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn kv_get(&self, namespace: &str, key: &str, now: Timestamp) -> Result<Option<KvEntry>> {
        let (ns, key) = (namespace.to_owned(), key.to_owned());
        let status = self.status.clone();
        self.read(move |conn| {
            if let Some(id) = status::job_key(status.as_deref(), &ns, &key)
                && let (Some(job), Some(cache)) = (load(conn, id)?, status.as_deref())
            {
                return Ok(JobStatus::entry(&job, cache, now));
            }
            let row = conn
                .prepare_cached(
                    "SELECT value, metadata, expires_at FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                )?
                .query_row(params![ns, key, ms(now)], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Option<String>>(1)?, row.get::<_, Option<i64>>(2)?))
                })
                .optional()?;
            row.map(|(value, metadata, expires_at)| {
                Ok(KvEntry { value, metadata: metadata.as_deref().map(from_json).transpose()?, expires_at: opt_ts(expires_at) })
            })
            .transpose()
        })
        .await
    }

    async fn kv_put(&self, namespace: &str, key: &str, entry: KvEntry) -> Result<()> {
        let (ns, key) = (namespace.to_owned(), key.to_owned());
        self.write(move |conn, _| put_kv(conn, &ns, &key, &entry))
            .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let (ns, key) = (namespace.to_owned(), key.to_owned());
        self.write(move |conn, _| {
            Ok(conn
                .prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?
                .execute([ns, key])?
                > 0)
        })
        .await
    }

    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage> {
        let (ns, prefix, cursor) = (
            namespace.to_owned(),
            prefix.to_owned(),
            cursor.map(str::to_owned),
        );
        let status = self.status.clone().filter(|c| c.namespace == namespace);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, metadata, expires_at FROM kv WHERE ns = ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2 \
                 AND (?3 IS NULL OR key > ?3) AND (expires_at IS NULL OR expires_at > ?4) ORDER BY key LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![ns, prefix, cursor, ms(now), (limit + 1) as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?, row.get::<_, Option<i64>>(2)?))
            })?;
            let mut explicit = Vec::new();
            for row in rows {
                let (name, metadata, expires_at) = row?;
                explicit.push(KvKey { name, metadata: metadata.as_deref().map(from_json).transpose()?, expires_at: opt_ts(expires_at) });
            }
            let mut derived = Vec::new();
            if let Some(cache) = status.as_deref()
                && let Some(from) = status::seek(&prefix, cursor.as_deref())
            {
                // Job ids sort like their text; read a window past `from` and stop at the
                // first id outside the prefix.
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id >= ?1 ORDER BY id LIMIT ?2");
                for job in load_many(conn, &sql, params![&id_bytes(from)[..], (limit + 2) as i64])? {
                    let name = job.id.to_string();
                    if !name.starts_with(&prefix) {
                        break;
                    }
                    if cursor.as_deref().is_some_and(|c| name.as_str() <= c) {
                        continue;
                    }
                    derived.extend(JobStatus::key(&job, cache, now));
                }
            }
            Ok(status::merge(derived, explicit, limit))
        })
        .await
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, kind, job, queue, state, attempt, detail FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after as i64, limit as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, u32>(6)?,
                    row.get::<_, Option<String>>(7)?,
                ))
            })?;
            let mut events = Vec::new();
            for row in rows {
                let (seq, at, kind, job, queue, state, attempt, detail) = row?;
                events.push(Event {
                    seq: seq as u64,
                    at: ts(at),
                    kind: EventKind::parse(&kind).ok_or_else(|| Error::Store(format!("unknown event kind `{kind}`")))?,
                    job: job_id(&job)?,
                    queue,
                    state: state.parse()?,
                    attempt,
                    detail,
                });
            }
            Ok(events)
        })
        .await
    }

    async fn last_event_seq(&self) -> Result<u64> {
        self.read(|conn| {
            let seq: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?
                .query_row([], |row| row.get(0))?;
            Ok(seq as u64)
        })
        .await
    }

    async fn count_events(
        &self,
        kind: EventKind,
        since: Timestamp,
    ) -> Result<BTreeMap<String, u64>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT queue, COUNT(*) FROM events WHERE at >= ?1 AND kind = ?2 GROUP BY queue",
            )?;
            let rows = stmt.query_map(params![ms(since), kind.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut counts = BTreeMap::new();
            for row in rows {
                let (queue, n) = row?;
                counts.insert(queue, n.max(0) as u64);
            }
            Ok(counts)
        })
        .await
    }

    fn event_notify(&self) -> Arc<tokio::sync::Notify> {
        self.notify.clone()
    }
}

#[async_trait]
impl CronTicks for SqliteStore {
    async fn claim_tick(&self, task: &str, tick: Timestamp, now: Timestamp) -> Result<bool> {
        let task = task.to_owned();
        self.write(move |conn, _| {
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO cron_ticks (task, tick, claimed_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![task, ms(tick), ms(now)])?;
            Ok(inserted == 1)
        })
        .await
    }
}

#[async_trait]
impl Retention for SqliteStore {
    async fn purge_expired(
        &self,
        policies: &BTreeMap<String, RetentionPolicy>,
        default: RetentionPolicy,
        events: Duration,
        now: Timestamp,
    ) -> Result<Purged> {
        let policies = policies.clone();
        self.write(move |conn, counts| {
            let mut purged = Purged::default();
            let limits = |policy: &RetentionPolicy| {
                [
                    ms(transition::before(now, policy.succeeded)),
                    ms(transition::before(now, policy.dead)),
                    ms(transition::before(now, policy.failed)),
                ]
            };
            let mut removed: Vec<(String, String)> = Vec::new();
            let row = |row: &Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?));
            let condition = "((state = 'succeeded' AND finished_at <= ?1) OR (state = 'dead' AND finished_at <= ?2) \
                             OR (state = 'cancelled' AND finished_at <= ?3))";
            for (queue, policy) in &policies {
                let [s, d, c] = limits(policy);
                let sql = format!("DELETE FROM jobs WHERE queue = ?4 AND {condition} RETURNING queue, state");
                let mut stmt = conn.prepare_cached(&sql)?;
                removed.extend(stmt.query_map(params![s, d, c, queue], row)?.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            let [s, d, c] = limits(&default);
            let named: Vec<String> = policies.keys().map(|q| format!("'{}'", q.replace('\'', "''"))).collect();
            let sql = format!("DELETE FROM jobs WHERE queue NOT IN ({}) AND {condition} RETURNING queue, state", named.join(", "));
            let mut stmt = conn.prepare(&sql)?;
            removed.extend(stmt.query_map(params![s, d, c], row)?.collect::<rusqlite::Result<Vec<_>>>()?);
            for (queue, state) in &removed {
                counts.moved(queue, Some(state.parse()?), None);
            }
            purged.jobs = removed.len() as u64;
            purged.kv_entries =
                conn.prepare_cached("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1")?.execute([ms(now)])? as u64;
            let horizon = ms(transition::before(now, events));
            purged.events = conn.prepare_cached("DELETE FROM events WHERE at < ?1")?.execute([horizon])? as u64;
            conn.prepare_cached("DELETE FROM cron_ticks WHERE claimed_at < ?1")?.execute([horizon])?;
            Ok(purged)
        })
        .await
    }
}

#[async_trait]
impl super::RateLimits for SqliteStore {
    async fn take_token(
        &self,
        key: &str,
        limit: &super::rate::Limit,
        now: Timestamp,
    ) -> Result<super::rate::Decision> {
        Ok(self.buckets.take(key, limit, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params!["q", "t", 10], |row| row.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn claiming_seeks_the_claim_index_and_never_scans_the_jobs() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let tenants = plan(
            &conn,
            &READY_TENANTS.replace("?1", "?1 AND ?2 = ?2 AND ?3 = ?3"),
        );
        let candidates = plan(&conn, &READY_JOBS.replace("OFFSET ?4", "OFFSET 0"));
        let rows = plan(&conn, READY_ROWS);
        for plan in [&tenants, &candidates, &rows] {
            assert!(plan.contains("jobs_claim"), "{plan}");
            assert!(!plan.contains("SCAN jobs"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    /// An operation that writes `key` into `kv` unless `write` is false, then fails if `fail`;
    /// its outcome goes to `outcomes` under `key`.
    fn op(
        key: &'static str,
        write: bool,
        fail: bool,
        outcomes: &mpsc::Sender<(&'static str, bool)>,
    ) -> Op {
        let outcomes = outcomes.clone();
        Box::new(move |conn: &Connection, _: &mut Counts| {
            let result = (|| -> Result<()> {
                if write {
                    conn.execute(
                        "INSERT INTO kv (ns, key, value) VALUES ('t', ?1, x'00')",
                        [key],
                    )?;
                }
                if fail {
                    return Err(Error::Store("refused".into()));
                }
                Ok(())
            })();
            let ok = result.is_ok();
            let done: Done = Box::new(move |commit| {
                let _ = outcomes.send((key, commit.is_ok() && ok));
            });
            (ok, done)
        })
    }

    /// Runs `ops` as one batch of the writer; returns each one's outcome and the keys stored.
    fn run_batch(
        ops: impl FnOnce(&mpsc::Sender<(&'static str, bool)>) -> Vec<Op>,
    ) -> (Vec<(&'static str, bool)>, Vec<String>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let (outcomes, answers) = mpsc::channel();
        let (sender, receiver) = mpsc::channel();
        for op in ops(&outcomes) {
            sender.send(op).unwrap();
        }
        drop(sender);
        write_loop(&conn, &receiver, "test");
        drop(outcomes);
        let stored = conn
            .prepare("SELECT key FROM kv ORDER BY key")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (answers.iter().collect(), stored)
    }

    #[test]
    fn an_operation_refused_before_writing_leaves_its_batch_alone() {
        let (outcomes, stored) = run_batch(|o| {
            vec![
                op("a", true, false, o),
                op("b", false, true, o),
                op("c", true, false, o),
            ]
        });
        assert_eq!(outcomes, [("a", true), ("b", false), ("c", true)]);
        assert_eq!(stored, ["a", "c"]);
    }

    #[test]
    fn after_sqlite_ends_the_transaction_the_rest_of_the_batch_does_not_commit_piecemeal() {
        let (outcomes, stored) = run_batch(|o| {
            let (ended, outcomes) = (o.clone(), o.clone());
            // SQLite rolling back by itself, as it does on a full disk.
            let rollback: Op = Box::new(move |conn: &Connection, _: &mut Counts| {
                conn.execute_batch("ROLLBACK").unwrap();
                let done: Done = Box::new(move |commit| {
                    let _ = ended.send(("rollback", commit.is_ok()));
                });
                (false, done)
            });
            vec![
                op("a", true, false, &outcomes),
                rollback,
                op("c", true, false, &outcomes),
            ]
        });
        assert_eq!(outcomes, [("a", false), ("rollback", false), ("c", false)]);
        assert!(stored.is_empty(), "{stored:?}");
    }

    #[test]
    fn an_operation_failing_after_writing_takes_its_batch_with_it() {
        let (outcomes, stored) = run_batch(|o| {
            vec![
                op("a", true, false, o),
                op("b", true, true, o),
                op("c", true, false, o),
            ]
        });
        assert_eq!(outcomes, [("a", false), ("b", false), ("c", false)]);
        assert!(
            stored.is_empty(),
            "nothing half-done is committed: {stored:?}"
        );
    }
}
