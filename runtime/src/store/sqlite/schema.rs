//! How the database is laid out and how every connection to it is set up: the tables and
//! indexes (created if missing, so opening an existing file changes nothing), and the pragmas.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Result;

/// The tables and indexes, run on every open.
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
    limit_key TEXT,
    snoozes INTEGER NOT NULL DEFAULT 0,
    unique_key TEXT,
    debounce_key TEXT,
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
DROP INDEX IF EXISTS jobs_idempotency;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_per_tenant ON jobs (queue, coalesce(tenant, ''), idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX IF EXISTS jobs_ready;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, queue, state) WHERE tenant IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant_listing ON jobs (tenant, id) WHERE tenant IS NOT NULL;
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
CREATE TABLE IF NOT EXISTS leads (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS start_buckets (
    queue TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Columns added since the first layout, with their definitions: added to a file that lacks
/// them (in place, without rewriting rows) before [`INDEXES`] are built.
const ADDED_COLUMNS: [(&str, &str); 4] = [
    ("limit_key", "TEXT"),
    ("snoozes", "INTEGER NOT NULL DEFAULT 0"),
    ("unique_key", "TEXT"),
    ("debounce_key", "TEXT"),
];

/// Indexes over columns of [`ADDED_COLUMNS`]. The claim index groups a queue's ready jobs by
/// tenant, then by limit key (jobs without one first), each group best first; the unique index
/// and the debounce index find the latest job of a queue and tenant with a key. It replaced
/// `jobs_claim`, which had no key: a file from before rebuilds it once, when first opened.
const INDEXES: &str = r#"
DROP INDEX IF EXISTS jobs_claim;
CREATE INDEX IF NOT EXISTS jobs_claim_by_key ON jobs (queue, state, coalesce(tenant, ''), limit_key, priority DESC, run_at, seq);
CREATE INDEX IF NOT EXISTS jobs_unique ON jobs (queue, coalesce(tenant, ''), unique_key, seq) WHERE unique_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_debounce ON jobs (queue, coalesce(tenant, ''), debounce_key, seq) WHERE debounce_key IS NOT NULL;
"#;

/// Lays out the database: [`SCHEMA`], then the columns and indexes added since.
///
/// In one write transaction: processes opening a file from before at once add its columns
/// once (the second waits for the first, then finds them).
pub(super) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let laid_out = lay_out(conn);
    conn.execute_batch(if laid_out.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    })?;
    laid_out
}

fn lay_out(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    let present = conn
        .prepare("SELECT name FROM pragma_table_info('jobs')")?
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (column, definition) in ADDED_COLUMNS {
        if !present.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE jobs ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    conn.execute_batch(INDEXES)?;
    Ok(())
}

/// How long a connection waits for another's lock before it hears the database is busy.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection to `path` with the pragmas every connection of the store uses.
pub(super) fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Savepoints' statement journals stay in memory (a temp file per savepoint costs a write).
    // No connection checkpoints the WAL when it commits (that stalls the writer: a 33 ms p99 on
    // submissions); a thread of its own does, without blocking anyone (see `checkpoint.rs`).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; \
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;",
    )?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_before_the_added_columns_gets_them_once_with_its_jobs_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = open_connection(&path).unwrap();
            // The jobs table as it was, with one job in it.
            let mut old = SCHEMA.to_owned();
            for (column, definition) in ADDED_COLUMNS {
                old = old.replace(&format!("    {column} {definition},\n"), "");
            }
            conn.execute_batch(&old).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, queue, kind, payload, priority, run_at, attempt, \
                 max_attempts, state, created_at, attempts) \
                 VALUES (x'00', 'q', 'k', 'null', 0, 0, 0, 1, 'queued', 0, '[]')",
                [],
            )
            .unwrap();
        }
        // Two processes open it at once: both succeed, the columns are added once.
        let opened: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || create(&open_connection(&path).unwrap()))
            })
            .collect();
        for open in opened {
            open.join().unwrap().unwrap();
        }
        let conn = open_connection(&path).unwrap();
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('jobs')")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (column, _) in ADDED_COLUMNS {
            assert_eq!(
                columns.iter().filter(|c| *c == column).count(),
                1,
                "{column}"
            );
        }
        let jobs: i64 = conn
            .query_row("SELECT count(*) FROM jobs WHERE snoozes = 0", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(jobs, 1);
    }
}
