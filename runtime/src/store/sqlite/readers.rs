//! The read path: a small pool of read connections, used on tokio's blocking threads. In WAL
//! mode they read beside the writer without waiting for it.

use rusqlite::Connection;

use super::{SqliteStore, schema};
use crate::error::{Error, Result, StoreErrorKind};

/// Read connections kept open.
const READERS: usize = 4;

impl SqliteStore {
    /// Runs `f` on a read connection.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => schema::open_connection(&path)?,
            };
            let result = f(&conn);
            let mut pool = readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::store("read", StoreErrorKind::Internal, e))?
    }
}
