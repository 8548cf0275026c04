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

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] (a passive
/// checkpoint: it never waits for the writer or readers, and skips what they still use), until
/// the store is dropped. SQLite starts the WAL over once everything in it is checkpointed.
fn checkpoints(path: &Path, stop: &mpsc::Receiver<()>) {
    let conn = match open_connection(path) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot open a connection to checkpoint the WAL; it will grow until restart");
            return;
        }
    };
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(path = %path.display(), error = %err, "checkpointing the WAL failed; retrying");
        }
    }
}
