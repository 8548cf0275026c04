//! A job as a row of `jobs`: its columns, reading and writing them, and the encodings of
//! values every table shares (times as milliseconds, ids as UUID bytes, structures as JSON).

use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::error::{Error, Result, StoreErrorKind};
use crate::job::{Job, JobId, Payload, Timestamp};

/// The columns of a job, in the order `job_from_row` reads them (a macro so statements can be
/// put together at compile time with `concat!`).
macro_rules! job_columns {
    () => {
        "id, queue, kind, payload, priority, run_at, attempt, max_attempts, timeout_ms, \
         idempotency_key, tenant, headers, limit_key, unique_key, debounce_key, state, \
         created_at, snoozes, started_at, finished_at, progress, result, error, attempts, \
         lease_worker, lease_expires_at, lease_token"
    };
}
pub(super) use job_columns;

/// The columns of a job, for statements put together at run time.
pub(super) const JOB_COLUMNS: &str = job_columns!();
const LOAD_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1");
const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (",
    job_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27) ON CONFLICT (id) DO NOTHING"
);

/// A time as stored: milliseconds since the epoch.
pub(super) fn ms(ts: Timestamp) -> i64 {
    ts.timestamp_millis()
}

/// A stored time.
pub(super) fn ts(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn opt_ts(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(ts)
}

fn json_err(err: serde_json::Error) -> Error {
    Error::store(
        "read",
        StoreErrorKind::Corrupt,
        format!("corrupt record: {err}"),
    )
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(json_err)
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(json_err)
}

/// Reads the columns of [`JOB_COLUMNS`], in order.
pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<RawJob> {
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
        limit_key: row.get(12)?,
        unique_key: row.get(13)?,
        debounce_key: row.get(14)?,
        state: row.get(15)?,
        created_at: row.get(16)?,
        snoozes: row.get(17)?,
        started_at: row.get(18)?,
        finished_at: row.get(19)?,
        progress: row.get(20)?,
        result: row.get(21)?,
        error: row.get(22)?,
        attempts: row.get(23)?,
        lease_worker: row.get(24)?,
        lease_expires_at: row.get(25)?,
        lease_token: row.get(26)?,
    })
}

/// A job row as stored, before its JSON columns are parsed.
pub(super) struct RawJob {
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
    limit_key: Option<String>,
    unique_key: Option<String>,
    debounce_key: Option<String>,
    state: String,
    created_at: i64,
    snoozes: u32,
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

/// A job id as stored: its UUID's 16 bytes.
pub(super) fn job_id(bytes: &[u8]) -> Result<JobId> {
    uuid::Uuid::from_slice(bytes)
        .map(|u| u.to_string().parse().unwrap_or_default())
        .map_err(|e| {
            Error::store(
                "read",
                StoreErrorKind::Corrupt,
                format!("corrupt job id: {e}"),
            )
        })
}

impl RawJob {
    pub(super) fn into_job(self) -> Result<Job> {
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
            limit_key: self.limit_key,
            unique_key: self.unique_key,
            debounce_key: self.debounce_key,
            snoozes: self.snoozes,
        })
    }
}

pub(super) fn id_bytes(id: JobId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

/// Job `id`, if it exists.
pub(super) fn load(conn: &Connection, id: JobId) -> Result<Option<Job>> {
    let raw = conn
        .prepare_cached(LOAD_JOB)?
        .query_row([&id_bytes(id)[..]], job_from_row)
        .optional()?;
    raw.map(RawJob::into_job).transpose()
}

/// The jobs `sql` selects; it selects [`JOB_COLUMNS`].
pub(super) fn load_many(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Job>> {
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
pub(super) fn insert(conn: &Connection, job: &Job) -> Result<bool> {
    let fixed = params![
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
        job.limit_key,
        job.unique_key,
        job.debounce_key,
        job.state.as_str(),
        ms(job.created_at),
        job.snoozes,
    ];
    let inserted = conn.prepare_cached(INSERT_JOB)?.execute(params_from_iter(
        fixed.iter().chain(&Changing::of(job)?.values()),
    ))?;
    Ok(inserted == 1)
}

/// Writes back what transitions change.
pub(super) fn save(conn: &Connection, job: &Job) -> Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET run_at = ?2, attempt = ?3, state = ?4, snoozes = ?5, started_at = ?6, \
         finished_at = ?7, progress = ?8, result = ?9, error = ?10, attempts = ?11, \
         lease_worker = ?12, lease_expires_at = ?13, lease_token = ?14 WHERE id = ?1",
    )?
    .execute(params_from_iter(
        params![
            &id_bytes(job.id)[..],
            ms(job.run_at),
            job.attempt,
            job.state.as_str(),
            job.snoozes
        ]
        .iter()
        .chain(&Changing::of(job)?.values()),
    ))?;
    Ok(())
}

/// The columns a transition may change, `started_at` to `lease_token` (the last nine of
/// [`JOB_COLUMNS`]), encoded once for [`insert`] and [`save`], which both bind them last and in
/// this order.
struct Changing<'a> {
    started_at: Option<i64>,
    finished_at: Option<i64>,
    progress: Option<String>,
    result: Option<&'a str>,
    error: Option<String>,
    attempts: String,
    lease_worker: Option<&'a str>,
    lease_expires_at: Option<i64>,
    lease_token: Option<i64>,
}

impl<'a> Changing<'a> {
    fn of(job: &'a Job) -> Result<Self> {
        let lease = job.lease.as_ref();
        Ok(Self {
            started_at: job.started_at.map(ms),
            finished_at: job.finished_at.map(ms),
            progress: job.progress.as_ref().map(to_json).transpose()?,
            result: job.result.as_ref().map(Payload::as_str),
            error: job.error.as_ref().map(to_json).transpose()?,
            attempts: to_json(&job.attempts)?,
            lease_worker: lease.map(|l| l.worker.as_str()),
            lease_expires_at: lease.map(|l| ms(l.expires_at)),
            lease_token: lease.map(|l| l.token as i64),
        })
    }

    fn values(&self) -> [&dyn ToSql; 9] {
        [
            &self.started_at,
            &self.finished_at,
            &self.progress,
            &self.result,
            &self.error,
            &self.attempts,
            &self.lease_worker,
            &self.lease_expires_at,
            &self.lease_token,
        ]
    }
}
