//! Transitions on one connection inside the writer's transaction, shared by the job
//! operations, claims and upkeep: recording a transition (the saved row, the moved count, the
//! events), promoting due jobs and recovering lapsed leases.

use rusqlite::{Connection, params};

use super::counts::Counts;
use super::events::emit;
use super::rows::{JOB_COLUMNS, load_many, ms, save};
use crate::error::Result;
use crate::job::{Job, JobState, Timestamp};
use crate::store::Recovered;
use crate::store::transition::{self, Emitted};

/// Writes back `job` after a transition moved it from state `from`: saves it, counts the move
/// and logs what the transition emitted.
pub(super) fn record(
    conn: &Connection,
    counts: &mut Counts,
    job: &Job,
    from: JobState,
    emitted: Emitted,
    now: Timestamp,
) -> Result<()> {
    save(conn, job)?;
    counts.moved(&job.queue, Some(from), Some(job.state));
    emit(conn, job, emitted, now)
}

/// Marks due scheduled and retrying jobs (of one queue, or all) as queued; returns how many.
pub(super) fn promote_due(
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

/// Gives back the running jobs whose lease has lapsed (or that have none): retried, or dead
/// when out of attempts, as [`transition::recover`] decides.
pub(super) fn recover(
    conn: &Connection,
    counts: &mut Counts,
    now: Timestamp,
) -> Result<Vec<Recovered>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)"
    );
    let lapsed = load_many(conn, &sql, [ms(now)])?;
    let mut recovered = Vec::with_capacity(lapsed.len());
    for mut job in lapsed {
        let emitted = transition::recover(&mut job, now);
        record(conn, counts, &job, JobState::Running, emitted, now)?;
        recovered.push(Recovered {
            id: job.id,
            queue: job.queue.clone(),
            state: job.state,
        });
    }
    Ok(recovered)
}
