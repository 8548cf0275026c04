//! The writer: one thread that owns the write connection and commits whatever operations are
//! waiting as one transaction (group commit). Callers hear back only after the commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::Connection;

use super::SqliteStore;
use super::counts::Counts;
use crate::error::{Error, Result, StoreErrorKind};

/// Operations committed together at most.
const MAX_BATCH: usize = 512;

/// What tells an operation's caller how the commit went.
pub(super) type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
/// An operation: runs inside the batch's transaction, says whether it succeeded, and leaves
/// what answers its caller once the batch is committed or rolled back.
pub(super) type Op = Box<dyn FnOnce(&Connection, &mut Counts) -> (bool, Done) + Send>;

/// Starts the writer thread on `conn`; `name` (the database) labels its log lines. It stops
/// when the returned sender is dropped.
pub(super) fn start(
    conn: Connection,
    name: String,
    wal_oversized: Arc<AtomicBool>,
) -> Result<mpsc::Sender<Op>> {
    let (sender, receiver) = mpsc::channel::<Op>();
    std::thread::Builder::new()
        .name("raindrop-sqlite-writer".into())
        .spawn(move || write_loop(&conn, &receiver, &name, &wal_oversized))
        .map_err(|e| {
            Error::store(
                "open",
                StoreErrorKind::Internal,
                format!("cannot start the SQLite writer: {e}"),
            )
        })?;
    Ok(sender)
}

impl SqliteStore {
    /// Runs `f` in the writer's next transaction; answers after the commit.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Counts) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_op(f, false).await
    }

    /// [`write`](Self::write), but `f` is not run at all if its caller has stopped waiting
    /// (a request timed out and its answer, say a 408, is already sent) by the time the
    /// writer reaches it: an enqueue the client was told failed is not stored later, to be
    /// duplicated by the client's retry. Once the writer has run `f`, it commits whoever waits.
    pub(super) async fn write_unless_abandoned<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Counts) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_op(f, true).await
    }

    async fn write_op<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Counts) -> Result<T> + Send + 'static,
        unless_abandoned: bool,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op: Op = Box::new(move |conn, counts| {
            if unless_abandoned && reply.is_closed() {
                return (true, Box::new(|_| {}) as Done);
            }
            // A panicking operation fails its caller, not the writer: the thread that every
            // write of this process goes through must outlive it. What it wrote is rolled back
            // with its batch (it is not `ok`, and it changed the database).
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn, counts)))
                .unwrap_or_else(|_| {
                    Err(Error::store(
                        "write",
                        StoreErrorKind::Internal,
                        "a store operation panicked; its writes are rolled back",
                    ))
                });
            let ok = result.is_ok();
            let done: Done = Box::new(move |commit| {
                let _ = reply.send(
                    commit
                        .map_err(|e| Error::store("write", StoreErrorKind::Refused, e))
                        .and(result),
                );
            });
            (ok, done)
        });
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(op)
            .map_err(|_| {
                Error::store(
                    "write",
                    StoreErrorKind::Internal,
                    "the SQLite writer has stopped",
                )
            })?;
        let result = answer.await.map_err(|_| {
            Error::store(
                "write",
                StoreErrorKind::Internal,
                "the SQLite writer stopped before answering",
            )
        })?;
        // Whatever committed may have appended events.
        self.notify.notify_waiters();
        result
    }

    /// Runs one statement in the writer's next transaction; answers how many rows it changed.
    pub(super) async fn execute(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params + Send + 'static,
    ) -> Result<usize> {
        self.write(move |conn, _| Ok(conn.prepare_cached(sql)?.execute(params)?))
            .await
    }
}

/// The writer thread: takes what is waiting, commits it as one transaction, answers; between
/// batches, empties the WAL when the checkpointer finds it over its limit (`checkpoint.rs`).
fn write_loop(
    conn: &Connection,
    receiver: &mpsc::Receiver<Op>,
    name: &str,
    wal_oversized: &AtomicBool,
) {
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
    };
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        begin(conn, name);
        let mut counts = Counts::default();
        let mut done = Vec::with_capacity(batch.len());
        let mut failure = None;
        for op in batch {
            // No savepoint per operation: each validates before it writes, so one that fails
            // has (almost always) written nothing and the others commit. One that wrote and
            // then failed (SQLite itself failing) cannot be undone alone: the batch goes.
            let before = conn.total_changes();
            let mut moved = Counts::default();
            let (ok, finish) = op(conn, &mut moved);
            // SQLite ends a transaction itself on some errors (a full disk, an I/O error).
            let ended = conn.is_autocommit();
            if ok && !ended {
                counts.merge(moved);
            } else if ended || conn.total_changes() != before {
                failure.get_or_insert_with(|| {
                    "an operation failed after writing; its transaction was rolled back".into()
                });
            }
            if ended {
                // What follows must not commit statement by statement: it runs in a new
                // transaction, rolled back with the rest.
                begin(conn, name);
            }
            done.push(finish);
        }
        if let Err(err) = counts.flush(conn) {
            failure.get_or_insert(format!("updating queue counts failed: {err}"));
        }
        let commit = match failure {
            Some(failure) => Err(failure),
            None => run("COMMIT").map_err(|e| format!("commit failed: {e}")),
        };
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for finish in done {
            finish(commit.clone());
        }
        if wal_oversized.swap(false, Ordering::Relaxed) {
            truncate_wal(conn, name);
        }
    }
}

/// Checkpoints the whole WAL and empties it, from the writer between two batches: a writer that
/// never pauses leaves SQLite no moment to start the WAL over itself, and the checkpointer,
/// another connection, would have to catch one. Waits at most 200 ms for readers still on the
/// WAL (then the next round tries again).
fn truncate_wal(conn: &Connection, name: &str) {
    let _ = conn.busy_timeout(Duration::from_millis(200));
    let checkpointed = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    let _ = conn.busy_timeout(super::schema::BUSY_TIMEOUT);
    match checkpointed {
        Ok(0) => tracing::debug!(database = name, "the WAL was over its limit: emptied"),
        Ok(_) => tracing::debug!(
            database = name,
            "the WAL is over its limit, and readers kept it"
        ),
        Err(err) => {
            tracing::warn!(database = name, error = %err, "emptying the WAL failed; retrying later")
        }
    }
}

/// Starts a write transaction, waiting out other processes' locks with backoff and one log
/// line per outage.
fn begin(conn: &Connection, name: &str) {
    let mut delay = Duration::from_millis(10);
    let mut since: Option<std::time::Instant> = None;
    loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                if let Some(since) = since {
                    tracing::warn!(
                        database = name,
                        waited_ms = since.elapsed().as_millis() as u64,
                        "SQLite store writable again"
                    );
                }
                return;
            }
            Err(err) => {
                if since.is_none() {
                    tracing::warn!(database = name, error = %err, "SQLite store cannot start a write; retrying with backoff");
                    since = Some(std::time::Instant::now());
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation that writes `key` into `kv` unless `write` is false, then fails if `fail`;
    /// its outcome goes to `outcomes` under `key`.
    fn op(
        key: &'static str,
        write: bool,
        fail: bool,
        outcomes: &mpsc::Sender<(&'static str, bool)>,
    ) -> Op {
        let outcomes = outcomes.clone();
        Box::new(move |conn: &Connection, _: &mut Counts| {
            let result = (|| -> Result<()> {
                if write {
                    conn.execute(
                        "INSERT INTO kv (ns, key, value) VALUES ('t', ?1, x'00')",
                        [key],
                    )?;
                }
                if fail {
                    return Err(Error::store("write", StoreErrorKind::Refused, "refused"));
                }
                Ok(())
            })();
            let ok = result.is_ok();
            let done: Done = Box::new(move |commit| {
                let _ = outcomes.send((key, commit.is_ok() && ok));
            });
            (ok, done)
        })
    }

    /// Runs `ops` as one batch of the writer; returns each one's outcome and the keys stored.
    fn run_batch(
        ops: impl FnOnce(&mpsc::Sender<(&'static str, bool)>) -> Vec<Op>,
    ) -> (Vec<(&'static str, bool)>, Vec<String>) {
        let conn = Connection::open_in_memory().unwrap();
        super::super::schema::create(&conn).unwrap();
        let (outcomes, answers) = mpsc::channel();
        let (sender, receiver) = mpsc::channel();
        for op in ops(&outcomes) {
            sender.send(op).unwrap();
        }
        drop(sender);
        write_loop(&conn, &receiver, "test", &AtomicBool::new(false));
        drop(outcomes);
        let stored = conn
            .prepare("SELECT key FROM kv ORDER BY key")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (answers.iter().collect(), stored)
    }

    #[test]
    fn an_operation_refused_before_writing_leaves_its_batch_alone() {
        let (outcomes, stored) = run_batch(|o| {
            vec![
                op("a", true, false, o),
                op("b", false, true, o),
                op("c", true, false, o),
            ]
        });
        assert_eq!(outcomes, [("a", true), ("b", false), ("c", true)]);
        assert_eq!(stored, ["a", "c"]);
    }

    #[test]
    fn after_sqlite_ends_the_transaction_the_rest_of_the_batch_does_not_commit_piecemeal() {
        let (outcomes, stored) = run_batch(|o| {
            let (ended, outcomes) = (o.clone(), o.clone());
            // SQLite rolling back by itself, as it does on a full disk.
            let rollback: Op = Box::new(move |conn: &Connection, _: &mut Counts| {
                conn.execute_batch("ROLLBACK").unwrap();
                let done: Done = Box::new(move |commit| {
                    let _ = ended.send(("rollback", commit.is_ok()));
                });
                (false, done)
            });
            vec![
                op("a", true, false, &outcomes),
                rollback,
                op("c", true, false, &outcomes),
            ]
        });
        assert_eq!(outcomes, [("a", false), ("rollback", false), ("c", false)]);
        assert!(stored.is_empty(), "{stored:?}");
    }

    #[test]
    fn an_operation_failing_after_writing_takes_its_batch_with_it() {
        let (outcomes, stored) = run_batch(|o| {
            vec![
                op("a", true, false, o),
                op("b", true, true, o),
                op("c", true, false, o),
            ]
        });
        assert_eq!(outcomes, [("a", false), ("b", false), ("c", false)]);
        assert!(
            stored.is_empty(),
            "nothing half-done is committed: {stored:?}"
        );
    }
}
