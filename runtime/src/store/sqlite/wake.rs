//! Waking idle workers when another process commits to the file. SQLite has no notification
//! across processes; `PRAGMA data_version` changes whenever a connection other than the one
//! asking has committed, and reading it touches only the WAL index in shared memory. A thread
//! of the store's own reads it every [`WATCH_EVERY`] and, on a change, wakes the idle workers
//! of every queue this process serves and the readers of the event feed. Without it, a worker
//! process learns of a job another process enqueued at its next poll (up to `idle_poll`,
//! 250 ms by default).
//!
//! A change may be this process's own commit: the idle workers it wakes then claim nothing,
//! at most once per period.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Notify;

use super::schema::open_connection;
use crate::error::{Error, Result, StoreErrorKind};

/// How often the watcher reads `data_version`: the longest an idle worker waits for a job
/// committed by another process, beyond the claim itself. Reading it costs a few microseconds.
pub(super) const WATCH_EVERY: Duration = Duration::from_millis(1);

/// What the watcher wakes: each served queue's idle workers, and the event feed's readers.
#[derive(Debug, Default)]
pub(super) struct Wakes {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakes {
    /// What the idle workers of `queue` in this process wait on.
    pub(super) fn of(&self, queue: &str) -> Arc<Notify> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    fn wake_all(&self) {
        for notify in self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            notify.notify_waiters();
        }
    }
}

/// Starts the watcher on `path`, waking `wakes` and `events`; it stops when the returned sender
/// is dropped. Its first reading is taken before this returns, so a commit made after the
/// store opened is never taken for the starting point.
pub(super) fn start(
    path: PathBuf,
    wakes: Arc<Wakes>,
    events: Arc<Notify>,
) -> Result<mpsc::Sender<()>> {
    let (stop_watching, stopped) = mpsc::channel::<()>();
    let unavailable = |e: String| Error::store("open", StoreErrorKind::Unavailable, e);
    let conn = open_connection(&path)
        .map_err(|e| unavailable(format!("cannot watch for other processes' commits: {e}")))?;
    let first = data_version(&conn)
        .map_err(|e| unavailable(format!("cannot read SQLite's data version: {e}")))?;
    std::thread::Builder::new()
        .name("raindrop-sqlite-wake".into())
        .spawn(move || watch(&path, &conn, first, &wakes, &events, &stopped))
        .map_err(|e| {
            Error::store(
                "open",
                StoreErrorKind::Internal,
                format!("cannot start the SQLite commit watcher: {e}"),
            )
        })?;
    Ok(stop_watching)
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

fn watch(
    path: &Path,
    conn: &Connection,
    first: i64,
    wakes: &Wakes,
    events: &Notify,
    stop: &mpsc::Receiver<()>,
) {
    let mut last = first;
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(WATCH_EVERY) {
        match data_version(conn) {
            Ok(now) => {
                failing = false;
                if now != last {
                    last = now;
                    wakes.wake_all();
                    events.notify_waiters();
                }
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(path = %path.display(), error = %err, "cannot read SQLite's data version; workers poll until it answers again");
                    failing = true;
                }
            }
        }
    }
}
