//! What the monitor and the scheduler run on the store: due jobs made ready, lapsed leases
//! recovered, cron ticks claimed once, and old records purged.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, Row, params};

use super::SqliteStore;
use super::counts::Counts;
use super::jobs::record;
use super::rows::{JOB_COLUMNS, load_many, ms};
use crate::error::Result;
use crate::job::{JobState, Timestamp};
use crate::store::transition;
use crate::store::{CronTicks, Purged, Recovered, Retention, RetentionPolicy};

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

#[async_trait]
impl CronTicks for SqliteStore {
    async fn claim_tick(&self, task: &str, tick: Timestamp, now: Timestamp) -> Result<bool> {
        let inserted = self
            .execute(
                "INSERT OR IGNORE INTO cron_ticks (task, tick, claimed_at) VALUES (?1, ?2, ?3)",
                (task.to_owned(), ms(tick), ms(now)),
            )
            .await?;
        Ok(inserted == 1)
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
