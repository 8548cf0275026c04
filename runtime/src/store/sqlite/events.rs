//! The event log: appending what transitions emit, and reading it back in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::rows::{id_bytes, job_id, ms, ts};
use crate::error::{Error, Result, StoreErrorKind};
use crate::event::{Event, EventKind};
use crate::job::{Job, Timestamp};
use crate::store::EventLog;
use crate::store::transition::Emitted;

/// Appends `emitted` to the event log.
pub(super) fn emit(conn: &Connection, job: &Job, emitted: Emitted, now: Timestamp) -> Result<()> {
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
                    kind: EventKind::parse(&kind).ok_or_else(|| Error::store("read events", StoreErrorKind::Corrupt, format!("unknown event kind `{kind}`")))?,
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
