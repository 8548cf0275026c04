//! What a claim takes: ready jobs of an unpaused queue, best first, taken fairly across tenants
//! (see [`fair`]) and within each tenant's running limit, read from the claim index.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::counts::Counts;
use super::rows::{job_columns, job_from_row, load_many};
use super::transitions::promote_due;
use crate::error::{Error, Result};
use crate::job::{Job, Timestamp};
use crate::store::{ClaimLimits, fair, rate, room};

/// The tenants ("" for jobs without one) with queued jobs in `queue`: one index seek each.
const READY_TENANTS: &str = "WITH RECURSIVE g(t) AS (
    SELECT min(coalesce(tenant, '')) FROM jobs WHERE queue = ?1 AND state = 'queued'
    UNION ALL
    SELECT (SELECT min(coalesce(tenant, '')) FROM jobs
            WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') > g.t)
    FROM g WHERE g.t IS NOT NULL
) SELECT t FROM g WHERE t IS NOT NULL";

/// The limit keys of a tenant's ready jobs ("" for jobs without a tenant), one index seek
/// each; jobs without a key are not among them (see [`UNKEYED_READY`]).
const READY_KEYS: &str = "WITH RECURSIVE g(k) AS (
    SELECT min(limit_key) FROM jobs WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2
    UNION ALL
    SELECT (SELECT min(limit_key) FROM jobs
            WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 AND limit_key > g.k)
    FROM g WHERE g.k IS NOT NULL
) SELECT k FROM g WHERE k IS NOT NULL";
/// Whether a tenant has ready jobs without a limit key.
const UNKEYED_READY: &str = "SELECT 1 FROM jobs \
     WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 AND limit_key IS NULL LIMIT 1";
/// A group's ready jobs (a tenant's, "" for jobs without one, under one limit key or none),
/// best first: priority and row, read from the claim index alone.
const READY_JOBS: &str = "SELECT priority, seq FROM jobs \
     WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 AND limit_key IS ?3 \
     ORDER BY priority DESC, run_at, seq LIMIT ?4 OFFSET ?5";
const LOAD_ROW: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE seq = ?1");
/// A group's first ready jobs, whole: a claim's answer when only one group has jobs waiting.
const READY_ROWS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 \
     AND limit_key IS ?3 ORDER BY priority DESC, run_at, seq LIMIT ?4"
);
/// Running jobs of a queue, of a tenant in it, of one of its tenant's keys.
const RUNNING: &str = "SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'running'";
const RUNNING_OF_TENANT: &str = "SELECT count(*) FROM jobs \
     WHERE queue = ?1 AND state = 'running' AND coalesce(tenant, '') = ?2";
const RUNNING_OF_KEY: &str = "SELECT count(*) FROM jobs \
     WHERE queue = ?1 AND state = 'running' AND coalesce(tenant, '') = ?2 AND limit_key = ?3";
/// Running jobs of a queue per tenant and key, read in one pass over its running jobs.
const RUNNING_PER_KEY: &str = "SELECT coalesce(tenant, ''), limit_key, count(*) FROM jobs \
     WHERE queue = ?1 AND state = 'running' AND limit_key IS NOT NULL GROUP BY 1, 2";

/// The jobs a claim of up to `limit` on `queue` takes, in order: none while the queue is paused;
/// due scheduled and retrying jobs count as ready. A rate-limited queue starts no more jobs
/// than its bucket holds, and takes one token per job.
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
    let mut limit = limit;
    if limits.running.is_some() {
        let running: i64 = conn
            .prepare_cached(RUNNING)?
            .query_row([queue], |row| row.get(0))?;
        limit = limit.min(room(limits.running, running.max(0) as u64));
    }
    let Some(rate) = limits.rate else {
        return choose(conn, queue, limit, limits);
    };
    let now_us = rate::micros_of(now);
    let tat: Option<i64> = conn
        .prepare_cached("SELECT tat FROM start_buckets WHERE queue = ?1")?
        .query_row([queue], |row| row.get(0))
        .optional()?;
    let jobs = choose(
        conn,
        queue,
        limit.min(rate::available(tat, now_us, &rate)),
        limits,
    )?;
    if !jobs.is_empty() {
        conn.prepare_cached(
            "INSERT INTO start_buckets (queue, tat) VALUES (?1, ?2) \
             ON CONFLICT (queue) DO UPDATE SET tat = excluded.tat",
        )?
        .execute(params![queue, rate::spend(tat, now_us, jobs.len(), &rate)])?;
    }
    Ok(jobs)
}

/// Queued jobs of a tenant (and one of its keys), counted up to 100,000 (a larger group counts
/// as that many: what a gauge needs, at a bounded cost).
const QUEUED_OF_TENANT: &str = "SELECT count(*) FROM (SELECT 1 FROM jobs \
     WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 LIMIT 100000)";
const QUEUED_OF_KEY: &str = "SELECT count(*) FROM (SELECT 1 FROM jobs \
     WHERE queue = ?1 AND state = 'queued' AND coalesce(tenant, '') = ?2 AND limit_key = ?3 \
     LIMIT 100000)";
/// See [`JobStore::held_by_limits`](crate::store::JobStore::held_by_limits): the queue's
/// queued count from its counts row, then one running count per tenant and key with jobs
/// waiting, and a bounded count of the jobs of each at its limit.
pub(super) fn held(
    conn: &Connection,
    queue: &str,
    limits: ClaimLimits,
    now: Timestamp,
) -> Result<u64> {
    let total: u64 = conn
        .prepare_cached("SELECT n FROM queue_counts WHERE queue = ?1 AND state = 'queued'")?
        .query_row([queue], |row| row.get::<_, i64>(0))
        .optional()?
        .map_or(0, |n| n.max(0) as u64);
    if total == 0 {
        return Ok(0);
    }
    if limits.running.is_some() && room(limits.running, count(conn, RUNNING, [queue])?) == 0 {
        return Ok(total);
    }
    if let Some(rate) = limits.rate {
        let tat: Option<i64> = conn
            .prepare_cached("SELECT tat FROM start_buckets WHERE queue = ?1")?
            .query_row([queue], |row| row.get(0))
            .optional()?;
        if rate::available(tat, rate::micros_of(now), &rate) == 0 {
            return Ok(total);
        }
    }
    if limits.running_per_tenant.is_none() && limits.running_per_key.is_none() {
        return Ok(0);
    }
    let tenants = conn
        .prepare_cached(READY_TENANTS)?
        .query_map([queue], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut held = 0;
    for tenant in &tenants {
        if !tenant.is_empty()
            && limits.running_per_tenant.is_some()
            && room(
                limits.running_per_tenant,
                count(conn, RUNNING_OF_TENANT, params![queue, tenant])?,
            ) == 0
        {
            held += count(conn, QUEUED_OF_TENANT, params![queue, tenant])?;
            continue;
        }
        if limits.running_per_key.is_none() {
            continue;
        }
        let keys = conn
            .prepare_cached(READY_KEYS)?
            .query_map(params![queue, tenant], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for key in keys {
            let running = count(conn, RUNNING_OF_KEY, params![queue, tenant, key])?;
            if room(limits.running_per_key, running) == 0 {
                held += count(conn, QUEUED_OF_KEY, params![queue, tenant, key])?;
            }
        }
    }
    Ok(held)
}

/// Counts with `sql` (which binds `queue` and the rest of `params`).
fn count(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(sql)?
        .query_row(params, |row| row.get(0))?;
    Ok(n.max(0) as u64)
}

/// A group of a claim: its tenant ("" for none), where that tenant is in the claim's list of
/// tenants, and its limit key.
struct Named {
    tenant: String,
    share: usize,
    key: Option<String>,
}

/// The groups of `tenants`' ready jobs: with `keys`, each tenant's jobs without a limit key
/// (if it has any) and each of its keys; without, one group per tenant of its jobs without a
/// key (a queue without a keyed limit, whose jobs have none).
fn named_groups(
    conn: &Connection,
    queue: &str,
    tenants: &[String],
    keys: bool,
) -> Result<Vec<Named>> {
    let mut named = Vec::with_capacity(tenants.len());
    for (share, tenant) in tenants.iter().enumerate() {
        if !keys {
            named.push(Named {
                tenant: tenant.clone(),
                share,
                key: None,
            });
            continue;
        }
        let unkeyed = conn
            .prepare_cached(UNKEYED_READY)?
            .exists(params![queue, tenant])?;
        if unkeyed {
            named.push(Named {
                tenant: tenant.clone(),
                share,
                key: None,
            });
        }
        let keys = conn
            .prepare_cached(READY_KEYS)?
            .query_map(params![queue, tenant], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        named.extend(keys.into_iter().map(|key| Named {
            tenant: tenant.clone(),
            share,
            key: Some(key),
        }));
    }
    Ok(named)
}

/// Up to `limit` ready jobs of `queue`, in the order a claim takes them (see [`fair`]).
///
/// A queue without a keyed limit looks at each tenant's jobs without a key, one index seek per
/// tenant as before keys existed. If a tenant's ready jobs all have keys (sent while the queue
/// had a keyed limit that has since been removed), the claim looks again, key by key.
fn choose(conn: &Connection, queue: &str, limit: usize, limits: ClaimLimits) -> Result<Vec<Job>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let tenants = conn
        .prepare_cached(READY_TENANTS)?
        .query_map([queue], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    // The room of each tenant.
    let mut tenant_rooms = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        let room = match limits.running_per_tenant {
            Some(max) if !tenant.is_empty() => room(
                Some(max),
                count(conn, RUNNING_OF_TENANT, params![queue, tenant])?,
            ),
            _ => usize::MAX,
        };
        tenant_rooms.push(room);
    }
    let mut keys = limits.running_per_key.is_some();
    // The running jobs of each key, in one read (not one per key: keys come in thousands).
    let running_per_key: HashMap<(String, String), u64> = if keys {
        conn.prepare_cached(RUNNING_PER_KEY)?
            .query_map([queue], |row| {
                Ok((
                    (row.get(0)?, row.get(1)?),
                    row.get::<_, i64>(2)?.max(0) as u64,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
    } else {
        HashMap::new()
    };
    loop {
        let named = named_groups(conn, queue, &tenants, keys)?;
        let mut rooms = Vec::with_capacity(named.len());
        for group in &named {
            let room = match (&group.key, limits.running_per_key) {
                (Some(key), Some(max)) => room(
                    Some(max),
                    running_per_key
                        .get(&(group.tenant.clone(), key.clone()))
                        .copied()
                        .unwrap_or(0),
                ),
                _ => usize::MAX,
            };
            rooms.push(room.min(tenant_rooms[group.share]));
        }
        if let ([group], [room]) = (&named[..], &rooms[..]) {
            // One group: no turns to take, its first jobs are the answer.
            let jobs = load_many(
                conn,
                READY_ROWS,
                params![queue, group.tenant, group.key, limit.min(*room) as i64],
            )?;
            if jobs.is_empty() && *room > 0 && !keys {
                keys = true;
                continue;
            }
            return Ok(jobs);
        }
        let fetch = fair::fetch_size(named.len(), limit);
        // The next `count` ready jobs of group `group` after the first `offset`.
        let ready_jobs = |group: &Named, count: usize, offset: usize| -> Result<Vec<(i32, i64)>> {
            Ok(conn
                .prepare_cached(READY_JOBS)?
                .query_map(
                    params![queue, group.tenant, group.key, count as i64, offset as i64],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        };
        let (turns, mut next) = load_turns(conn, queue)?;
        let mut shares: Vec<fair::Share> = tenants
            .iter()
            .zip(&tenant_rooms)
            .map(|(tenant, &room)| fair::Share {
                turn: turns.get(tenant).copied().unwrap_or(0),
                room,
            })
            .collect();
        let mut groups = Vec::with_capacity(named.len());
        for (group, &room) in named.iter().zip(&rooms) {
            let share = group.share;
            let count = fetch.min(room);
            let ready = if room == 0 {
                Vec::new()
            } else {
                ready_jobs(group, count, 0)?
            };
            let turn = match &group.key {
                Some(key) => turns
                    .get(&fair::group_name(&group.tenant, Some(key)))
                    .copied()
                    .unwrap_or(0),
                None => shares[share].turn,
            };
            groups.push(fair::Group {
                share,
                turn,
                room,
                fetched: ready.len(),
                more: ready.len() == count && room > 0,
                ready: ready.into(),
            });
        }
        if !keys && groups.iter().any(|g| g.fetched == 0 && g.room > 0) {
            keys = true;
            continue;
        }
        let chosen = fair::pick(&mut groups, &mut shares, limit, &mut next, |i, group| {
            let count = fetch.min(group.room);
            let more = ready_jobs(&named[i], count, group.fetched)?;
            group.fetched += more.len();
            group.more = more.len() == count;
            group.ready.extend(more);
            Ok::<_, Error>(())
        })?;
        save_turns(conn, queue, &tenants, &shares, &named, &groups, &turns)?;
        if keys && fastrand::u8(..64) == 0 {
            forget_idle_keys(conn, queue, &named)?;
        }
        let mut stmt = conn.prepare_cached(LOAD_ROW)?;
        let mut jobs = Vec::with_capacity(chosen.len());
        for seq in chosen {
            jobs.push(stmt.query_row([seq], job_from_row)?.into_job()?);
        }
        return Ok(jobs);
    }
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

/// Removes the turns of `queue`'s keys that have no job waiting (their jobs were cancelled or
/// removed rather than claimed): every key with jobs waiting is in `named`. Claims run it now
/// and then, so such turns cannot pile up.
fn forget_idle_keys(conn: &Connection, queue: &str, named: &[Named]) -> Result<()> {
    let waiting: Vec<String> = named
        .iter()
        .filter_map(|g| {
            g.key
                .as_deref()
                .map(|key| fair::group_name(&g.tenant, Some(key)))
        })
        .collect();
    conn.prepare_cached(
        "DELETE FROM turns WHERE queue = ?1 AND instr(tenant, char(31)) > 0 \
         AND tenant NOT IN (SELECT value FROM json_each(?2))",
    )?
    .execute(params![queue, serde_json::to_string(&waiting)?])?;
    Ok(())
}

/// Stores the turns of `queue`'s tenants and keys that changed from `before`; a key whose
/// jobs all started gives its turn up (keys come and go: their turns are not kept forever).
fn save_turns<T>(
    conn: &Connection,
    queue: &str,
    tenants: &[String],
    shares: &[fair::Share],
    named: &[Named],
    groups: &[fair::Group<T>],
    before: &HashMap<String, u64>,
) -> Result<()> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO turns (queue, tenant, turn) VALUES (?1, ?2, ?3) \
         ON CONFLICT (queue, tenant) DO UPDATE SET turn = excluded.turn",
    )?;
    for (tenant, share) in tenants.iter().zip(shares) {
        if before.get(tenant) != Some(&share.turn) {
            upsert.execute(params![queue, tenant, share.turn as i64])?;
        }
    }
    for (group, state) in named.iter().zip(groups) {
        let Some(key) = &group.key else { continue };
        let name = fair::group_name(&group.tenant, Some(key));
        // (A key at its limit fetched nothing: it keeps its turn.)
        if state.fetched > 0 && state.ready.is_empty() && !state.more {
            if before.contains_key(&name) {
                conn.prepare_cached("DELETE FROM turns WHERE queue = ?1 AND tenant = ?2")?
                    .execute(params![queue, name])?;
            }
        } else if before.get(&name) != Some(&state.turn) {
            upsert.execute(params![queue, name, state.turn as i64])?;
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
        super::super::schema::create(&conn).unwrap();
        let tenants = plan(
            &conn,
            &READY_TENANTS.replace("?1", "?1 AND ?2 = ?2 AND ?3 = ?3"),
        );
        let keys = plan(&conn, &READY_KEYS.replace("?1", "?1 AND ?3 = ?3"));
        let unkeyed = plan(&conn, &UNKEYED_READY.replace("?1", "?1 AND ?3 = ?3"));
        let candidates = plan(
            &conn,
            &READY_JOBS.replace("LIMIT ?4 OFFSET ?5", "LIMIT 10 OFFSET 0"),
        );
        let rows = plan(&conn, &READY_ROWS.replace("LIMIT ?4", "LIMIT 10"));
        let running = plan(&conn, &RUNNING_OF_KEY.replace("?1", "?1 AND ?3 = ?3"));
        let per_key = plan(
            &conn,
            &RUNNING_PER_KEY.replace("?1", "?1 AND ?2 = ?2 AND ?3 = ?3"),
        );
        for plan in [
            &tenants,
            &keys,
            &unkeyed,
            &candidates,
            &rows,
            &running,
            &per_key,
        ] {
            assert!(plan.contains("jobs_claim"), "{plan}");
            assert!(!plan.contains("SCAN jobs"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    #[test]
    fn idle_keys_lose_their_turns_and_waiting_ones_keep_them() {
        let conn = Connection::open_in_memory().unwrap();
        super::super::schema::create(&conn).unwrap();
        let mut insert = conn
            .prepare("INSERT INTO turns (queue, tenant, turn) VALUES (?1, ?2, ?3)")
            .unwrap();
        for (queue, name, turn) in [
            ("q", "acme", 1),
            ("q", "acme\u{1f}busy", 2),
            ("q", "acme\u{1f}gone", 3),
            ("other", "acme\u{1f}gone", 4),
        ] {
            insert.execute(params![queue, name, turn]).unwrap();
        }
        let named = [Named {
            tenant: "acme".into(),
            share: 0,
            key: Some("busy".into()),
        }];
        forget_idle_keys(&conn, "q", &named).unwrap();
        let left: Vec<(String, String)> = conn
            .prepare("SELECT queue, tenant FROM turns ORDER BY queue, tenant")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let left: Vec<(&str, &str)> = left.iter().map(|(q, t)| (q.as_str(), t.as_str())).collect();
        assert_eq!(
            left,
            [
                ("other", "acme\u{1f}gone"),
                ("q", "acme"),
                ("q", "acme\u{1f}busy")
            ],
            "a tenant's turn and another queue's stay"
        );
    }
}
