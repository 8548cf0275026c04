//! The checkpointer: a thread of its own that copies the WAL back into the database file, so
//! that no committing connection has to (see `schema::open_connection`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::schema::open_connection;
use crate::error::{Error, Result, StoreErrorKind};

/// Starts the checkpointer on `path`; it sets `wal_oversized` for the writer when the WAL is
/// past its limit, and stops when the returned sender is dropped.
pub(super) fn start(path: PathBuf, wal_oversized: Arc<AtomicBool>) -> Result<mpsc::Sender<()>> {
    let (stop_checkpoints, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("raindrop-sqlite-checkpoint".into())
        .spawn(move || checkpoints(&path, &stopped, &wal_oversized))
        .map_err(|e| {
            Error::store(
                "open",
                StoreErrorKind::Internal,
                format!("cannot start the SQLite checkpointer: {e}"),
            )
        })?;
    Ok(stop_checkpoints)
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The WAL's size past which the writer empties it between two batches.
const WAL_LIMIT: u64 = 64 << 20;

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] (a passive
/// checkpoint: it never waits for the writer or readers, and skips what they still use), until
/// the store is dropped. SQLite starts the WAL over only when a write begins with all of it
/// copied back, which a writer that never pauses (a bulk enqueue, a busy queue) does not
/// leave room for: the WAL then grows without end (2.6 GB while 10,000,000 jobs were queued),
/// and every read searches a larger index of it. Past [`WAL_LIMIT`] this tells the writer,
/// which empties it between two batches (`writer.rs`).
fn checkpoints(path: &Path, stop: &mpsc::Receiver<()>, wal_oversized: &AtomicBool) {
    let conn = match open_connection(path) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot open a connection to checkpoint the WAL; it will grow until restart");
            return;
        }
    };
    let wal = wal_path(path);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(path = %path.display(), error = %err, "checkpointing the WAL failed; retrying");
        }
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT) {
            wal_oversized.store(true, Ordering::Relaxed);
        }
    }
}

/// The WAL file of the database at `path`.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}
