//! What a claim takes: ready jobs of an unpaused queue, best first, taken fairly across tenants
//! (see [`fair`]) and within each tenant's running limit, read from the claim index.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::counts::Counts;
use super::rows::{job_columns, job_from_row, load_many};
use super::transitions::promote_due;
use crate::error::{Error, Result};
use crate::job::{Job, Timestamp};
use crate::store::{ClaimLimits, fair};

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

/// The jobs a claim of up to `limit` on `queue` takes, in order: none while the queue is paused;
/// due scheduled and retrying jobs count as ready.
pub(super) fn ready(
    conn: &Connection,
    counts: &mut Counts,
    queue: &str,
    limit: usize,
    limits: ClaimLimits,
    now: Timestamp,
) -> Result<Vec<Job>> {
    let paused: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM paused WHERE queue = ?1")?
        .query_row([queue], |r| r.get(0))
        .optional()?;
    if paused.is_some() {
        return Ok(Vec::new());
    }
    promote_due(conn, counts, Some(queue), now)?;
    choose(conn, queue, limit, limits)
}

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
    let (turns, mut next) = if tenants.len() > 1 {
        load_turns(conn, queue)?
    } else {
        (HashMap::new(), 1)
    };
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
        save_turns(conn, queue, &tenants, &groups, &turns)?;
    }
    let mut stmt = conn.prepare_cached(LOAD_ROW)?;
    let mut jobs = Vec::with_capacity(chosen.len());
    for seq in chosen {
        jobs.push(stmt.query_row([seq], job_from_row)?.into_job()?);
    }
    Ok(jobs)
}

/// The turn each tenant of `queue` last had, and the next turn to give.
fn load_turns(conn: &Connection, queue: &str) -> Result<(HashMap<String, u64>, u64)> {
    let mut turns: HashMap<String, u64> = HashMap::new();
    let mut next = 1;
    let mut stmt = conn.prepare_cached("SELECT tenant, turn FROM turns WHERE queue = ?1")?;
    let rows = stmt.query_map([queue], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (tenant, turn) = row?;
        next = next.max(turn as u64 + 1);
        turns.insert(tenant, turn as u64);
    }
    Ok((turns, next))
}

/// Stores the turns of `queue`'s tenants that changed from `before`.
fn save_turns<T>(
    conn: &Connection,
    queue: &str,
    tenants: &[String],
    groups: &[fair::Group<T>],
    before: &HashMap<String, u64>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO turns (queue, tenant, turn) VALUES (?1, ?2, ?3) \
         ON CONFLICT (queue, tenant) DO UPDATE SET turn = excluded.turn",
    )?;
    for (tenant, group) in tenants.iter().zip(groups) {
        if before.get(tenant) != Some(&group.turn) {
            stmt.execute(params![queue, tenant, group.turn as i64])?;
        }
    }
    Ok(())
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
        conn.execute_batch(super::super::schema::SCHEMA).unwrap();
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
