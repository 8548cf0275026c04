//! The checkpointer: a thread of its own that copies the WAL back into the database file, so
//! that no committing connection has to (see `schema::open_connection`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::schema::open_connection;
use crate::error::{Error, Result, StoreErrorKind};

/// Starts the checkpointer on `path`; it stops when the returned sender is dropped.
pub(super) fn start(path: PathBuf) -> Result<mpsc::Sender<()>> {
    let (stop_checkpoints, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("raindrop-sqlite-checkpoint".into())
        .spawn(move || checkpoints(&path, &stopped))
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

/// The WAL's size past which a checkpoint waits for its turn and starts the WAL over.
const WAL_LIMIT: u64 = 64 << 20;

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] (a passive
/// checkpoint: it never waits for the writer or readers, and skips what they still use), until
/// the store is dropped. SQLite starts the WAL over only when a write begins with all of it
/// copied back, which a writer that never pauses (a bulk enqueue, a busy queue) does not
/// leave room for: the WAL then grows without end (2.6 GB while 10,000,000 jobs were queued),
/// and every read searches a larger index of it. Past [`WAL_LIMIT`] the checkpoint is a
/// truncating one: it waits for the writer's current commit and the readers' snapshots (a
/// stall of the writer while the WAL is copied back, once per `WAL_LIMIT` written), then
/// empties the WAL.
fn checkpoints(path: &Path, stop: &mpsc::Receiver<()>) {
    let conn = match open_connection(path) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot open a connection to checkpoint the WAL; it will grow until restart");
            return;
        }
    };
    // A truncating checkpoint holds off new commits while it waits for readers: bound that
    // wait, and try again at the next round rather than stall the writer.
    if let Err(err) = conn.busy_timeout(Duration::from_millis(200)) {
        tracing::warn!(path = %path.display(), error = %err, "cannot bound the checkpointer's wait for locks");
    }
    let wal = wal_path(path);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let oversized = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT);
        let mode = if oversized { "TRUNCATE" } else { "PASSIVE" };
        let pragma = format!("PRAGMA wal_checkpoint({mode})");
        if let Err(err) = conn.query_row(&pragma, [], |_| Ok(())) {
            tracing::warn!(path = %path.display(), error = %err, mode, "checkpointing the WAL failed; retrying");
        } else if oversized {
            tracing::debug!(path = %path.display(), "the WAL was over its limit: checkpointed and emptied");
        }
    }
}

/// The WAL file of the database at `path`.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}
