//! What the monitor and the scheduler run on the store: due jobs made ready, lapsed leases
//! recovered, cron ticks claimed once, and old records purged.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Row, params};

use super::SqliteStore;
use super::rows::ms;
use crate::error::Result;
use crate::job::Timestamp;
use crate::store::transition;
use crate::store::{CronTicks, Leadership, Purged, Retention, RetentionPolicy};

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
impl Leadership for SqliteStore {
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool> {
        let until = ms(now).saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        // In the writer: taking and renewing are one statement, so two processes never both
        // hold the lease.
        let held = self
            .execute(
                "INSERT INTO leads (name, holder, until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE leads.holder = excluded.holder OR leads.until <= ?4",
                (name.to_owned(), holder.to_owned(), until, ms(now)),
            )
            .await?;
        Ok(held == 1)
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
