//! The number of jobs per queue and state, kept in `queue_counts`: counted once when the table
//! is new, then moved by the writer batch by batch.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use crate::job::JobState;

/// How many jobs each operation moved between states, per queue. The writer adds up the
/// changes of a batch's successful operations and applies them to `queue_counts` before the
/// commit, so counting stays one row per queue and state without a write per job.
#[derive(Default)]
pub(super) struct Counts(HashMap<(String, JobState), i64>);

impl Counts {
    /// A job of `queue` moved from state `from` (none: it was added) to `to` (none: removed).
    pub(super) fn moved(&mut self, queue: &str, from: Option<JobState>, to: Option<JobState>) {
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

    /// Adds the moves of `other`, an operation that succeeded.
    pub(super) fn merge(&mut self, other: Counts) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_default() += n;
        }
    }

    /// Applies the moves to `queue_counts` and forgets them.
    pub(super) fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
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

/// Counts the jobs per queue and state once, when the counts table is new; the writer keeps
/// it up to date after that.
pub(super) fn build_counts(conn: &Connection) -> rusqlite::Result<()> {
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
