//! The embedded default store: one SQLite file in WAL mode.
//!
//! Writes go through one writer thread that groups whatever operations are waiting into one
//! transaction (group commit); an operation refused before it writes anything leaves the others
//! be, and one that fails after writing (SQLite itself failing) fails the whole batch, every
//! caller told. Callers get their answer only after the commit. Reads use a small pool of
//! read connections. Several processes may share the file: SQLite's locking orders their
//! transactions, and a busy database is waited for, with a log line, never dropped.
//! `synchronous = NORMAL` in WAL mode keeps every committed transaction through a `kill -9`.
//!
//! This module holds the store handle and how it is opened. Beside it:
//!
//! - `schema`: the tables and indexes, and the pragmas every connection gets;
//! - `writer`: the writer thread (group commit), and `counts`, the per-queue counts it keeps;
//! - `readers`: the pool of read connections; `checkpoint`: the thread that checkpoints the WAL;
//! - `rows`: a job as a row, and the encodings of values every table shares;
//! - the operations by area: `jobs` (and `claim`, what a claim takes), `upkeep` (promotion,
//!   recovery, cron ticks, retention), `kv` and `events`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::Connection;

use super::rate::{Decision, Limit, LocalBuckets};
use crate::error::{Error, Result, StoreErrorKind};
use crate::job::Timestamp;

mod checkpoint;
mod claim;
mod counts;
mod events;
mod jobs;
mod kv;
mod readers;
mod rows;
mod schema;
mod transitions;
mod upkeep;
mod wake;
mod writer;

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<mpsc::Sender<writer::Op>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    notify: Arc<tokio::sync::Notify>,
    /// Rate-limit buckets: per process (processes sharing the file do not share them).
    buckets: LocalBuckets,
    /// Dropped with the store, which stops the checkpointer.
    _stop_checkpoints: mpsc::Sender<()>,
    /// What wakes when another process commits.
    wakes: Arc<wake::Wakes>,
    /// Dropped with the store, which stops the commit watcher.
    _stop_watching: mpsc::Sender<()>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and its parent directory, with the
    /// default [`Durability`](crate::store::Durability) (what `kill -9` does not undo).
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, crate::store::Durability::default()).await
    }

    /// [`open`](Self::open), with its commits surviving what `durability` says.
    pub async fn open_with(path: &Path, durability: crate::store::Durability) -> Result<Self> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(parent) = opened.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::store(
                        "open",
                        StoreErrorKind::Unavailable,
                        format!("cannot create {}: {e}", parent.display()),
                    )
                })?;
            }
            let conn = schema::open_connection(&opened)?;
            // The writer's connection commits: its setting is the one that counts.
            conn.pragma_update(None, "synchronous", durability.synchronous())?;
            schema::create(&conn)?;
            counts::build_counts(&conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| Error::store("open", StoreErrorKind::Internal, e))?
        .map_err(|e| {
            Error::store(
                "open",
                StoreErrorKind::Unavailable,
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        let wal_oversized = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = writer::start(conn, path.display().to_string(), wal_oversized.clone())?;
        let stop_checkpoints = checkpoint::start(path.clone(), wal_oversized)?;
        let notify = Arc::new(tokio::sync::Notify::new());
        let wakes = Arc::new(wake::Wakes::default());
        let stop_watching = wake::start(path.clone(), wakes.clone(), notify.clone())?;
        Ok(Self {
            path,
            _stop_checkpoints: stop_checkpoints,
            writer: Mutex::new(sender),
            readers: Arc::new(Mutex::new(Vec::new())),
            notify,
            buckets: LocalBuckets::default(),
            wakes,
            _stop_watching: stop_watching,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Rate limits are kept in this process, beside the store rather than in its file.
#[async_trait]
impl super::RateLimits for SqliteStore {
    async fn take_token(&self, key: &str, limit: &Limit, now: Timestamp) -> Result<Decision> {
        Ok(self.buckets.take(key, limit, now))
    }
}

/// SQLite's errors stay in this module: the rest of the crate sees a store error of a kind.
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let kind = match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreErrorKind::Timeout,
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::NotADatabase
                | ErrorCode::PermissionDenied,
            ) => StoreErrorKind::Unavailable,
            Some(ErrorCode::DatabaseCorrupt) => StoreErrorKind::Corrupt,
            Some(_) => StoreErrorKind::Refused,
            // Not an error of the database: a column of an unexpected type, bad parameters.
            None => StoreErrorKind::Corrupt,
        };
        Error::store("sqlite", kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobStore;

    fn failure(code: std::ffi::c_int) -> Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None).into()
    }

    /// The writer's `PRAGMA synchronous` with `durability`: 1 is NORMAL, 2 FULL.
    async fn synchronous_with(durability: crate::store::Durability) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(&dir.path().join("db"), durability)
            .await
            .unwrap();
        store
            .write(|conn, _| Ok(conn.pragma_query_value(None, "synchronous", |r| r.get(0))?))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn power_durability_syncs_every_commit_and_process_durability_does_not() {
        use crate::store::Durability;
        assert_eq!(synchronous_with(Durability::Power).await, 2, "FULL");
        assert_eq!(synchronous_with(Durability::Process).await, 1, "NORMAL");
    }

    #[test]
    fn sqlite_errors_keep_their_kind_and_source() {
        use rusqlite::ffi;
        assert_eq!(
            failure(ffi::SQLITE_BUSY).store_kind(),
            Some(StoreErrorKind::Timeout)
        );
        assert_eq!(
            failure(ffi::SQLITE_CANTOPEN).store_kind(),
            Some(StoreErrorKind::Unavailable)
        );
        assert_eq!(
            failure(ffi::SQLITE_CORRUPT).store_kind(),
            Some(StoreErrorKind::Corrupt)
        );
        assert_eq!(
            failure(ffi::SQLITE_CONSTRAINT).store_kind(),
            Some(StoreErrorKind::Refused)
        );
        let err = failure(ffi::SQLITE_FULL);
        let source = std::error::Error::source(&err).expect("the store error is the source");
        assert!(source.to_string().contains("full"), "{source}");
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_its_caller_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).await.unwrap();
        let failed = store
            .write(|conn, _| -> Result<()> {
                conn.execute("INSERT INTO paused (queue) VALUES ('half-written')", [])?;
                panic!("a bug in an operation")
            })
            .await
            .unwrap_err();
        // It wrote before it panicked, so its batch is rolled back and says so.
        assert_eq!(
            failed.store_kind(),
            Some(StoreErrorKind::Refused),
            "{failed}"
        );
        let failed = store
            .write(|_, _| -> Result<()> { panic!("a bug before any write") })
            .await
            .unwrap_err();
        assert_eq!(
            failed.store_kind(),
            Some(StoreErrorKind::Internal),
            "{failed}"
        );
        store.ready().await.expect("the writer still commits");
        let paused = store
            .read(|conn| {
                Ok(conn.query_row("SELECT COUNT(*) FROM paused", [], |row| {
                    row.get::<_, i64>(0)
                })?)
            })
            .await
            .unwrap();
        assert_eq!(
            paused, 0,
            "what the panicking operation wrote was rolled back"
        );
    }
}
