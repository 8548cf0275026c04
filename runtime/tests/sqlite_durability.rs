//! What only a store on disk can promise: a restart keeps everything.

use std::time::Duration;

use raindrop::job::{JobState, NewJob, Payload, now};
use raindrop::store::sqlite::SqliteStore;
use raindrop::store::{JobFilter, JobStore};

#[tokio::test]
async fn reopening_the_file_keeps_jobs_leases_kv_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/raindrop.db");
    let t0 = now();
    let (waiting, running, seq) = {
        let store = SqliteStore::open(&path).await.unwrap();
        let mut jobs: Vec<NewJob> = (0..10)
            .map(|i| NewJob::new("q", "k", Payload::from_value(&i).unwrap()))
            .collect();
        jobs[0].idempotency_key = Some("unique".into());
        use raindrop::store::{EventLog, JobStore, KvStore, QueueControl};
        let ids: Vec<_> = store
            .enqueue(jobs, t0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id())
            .collect();
        let claimed = store
            .claim("q", "w", 1, Duration::from_secs(60), t0)
            .await
            .unwrap();
        store.pause("other").await.unwrap();
        store
            .kv_put(
                "c",
                "k",
                raindrop::store::KvEntry {
                    value: b"v".to_vec(),
                    metadata: None,
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        (
            ids[1..].to_vec(),
            claimed[0].clone(),
            store.last_event_seq().await.unwrap(),
        )
    };
    assert!(path.exists(), "the file and its directories are created");

    use raindrop::store::{EventLog, JobStore, KvStore, QueueControl};
    let store = SqliteStore::open(&path).await.unwrap();
    let all = store.list(&JobFilter::default(), None, 100).await.unwrap();
    assert_eq!(all.items.len(), 10);
    let job = store.get(running.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(
        job.lease_token(),
        running.lease_token(),
        "the lease survives, so its holder can finish"
    );
    store
        .complete(
            running.id,
            running.lease_token().unwrap(),
            Payload::null(),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.counts().await.unwrap()["q"].queued,
        waiting.len() as u64
    );
    assert_eq!(store.paused().await.unwrap(), vec!["other".to_owned()]);
    assert_eq!(
        store.kv_get("c", "k", now()).await.unwrap().unwrap().value,
        b"v"
    );
    assert!(store.last_event_seq().await.unwrap() > seq);
    let mut dup = NewJob::new("q", "k", Payload::null());
    dup.idempotency_key = Some("unique".into());
    let out = store.enqueue(vec![dup], now()).await.unwrap();
    assert!(
        matches!(out[0], raindrop::store::Enqueued::Duplicate(_)),
        "idempotency keys survive"
    );
}

#[tokio::test]
async fn an_unopenable_path_is_a_clear_error() {
    let err = SqliteStore::open(std::path::Path::new("/proc/raindrop/cannot/raindrop.db"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("/proc/raindrop/cannot"), "{message}");
}

/// A submission whose caller stopped waiting before the writer reached it (the request timed
/// out: the client was answered 408 and will retry) is not stored afterwards, where the retry
/// would duplicate it. The writer is held up by another process's write lock on the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_whose_caller_gave_up_is_not_committed_later() {
    use raindrop::store::JobStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raindrop.db");
    let store = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let waited = NewJob::new("q", "k", Payload::from_value(&1).unwrap());
    let waited_id = waited.id;
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.enqueue(vec![waited], now()).await }
    });
    let abandoned = NewJob::new("q", "k", Payload::from_value(&2).unwrap());
    let abandoned_id = abandoned.id;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        store.enqueue(vec![abandoned], now()),
    )
    .await;
    assert!(gave_up.is_err(), "the writer was held up");
    blocker.execute_batch("ROLLBACK").unwrap();

    first.await.unwrap().unwrap();
    assert!(
        store.get(waited_id).await.unwrap().is_some(),
        "a caller that waited is answered"
    );
    assert!(
        store.get(abandoned_id).await.unwrap().is_none(),
        "the abandoned submission was stored after its caller was told it failed"
    );
}

/// A worker process sharing the file with a producer process hears of its enqueue at once,
/// not at its next poll (up to `idle_poll`, 250 ms by default): the two handles here have
/// connections of their own, as two processes would.
#[tokio::test]
async fn a_commit_by_another_process_wakes_the_queues_idle_workers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let producer = SqliteStore::open(&path).await.unwrap();
    let workers = SqliteStore::open(&path).await.unwrap();
    let wake = workers
        .queue_wake("jobs")
        .expect("an SQLite store wakes idle workers when another process commits");
    let woken = wake.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();

    producer
        .enqueue(
            vec![NewJob::new("jobs", "job", Payload::from_value(&1).unwrap())],
            now(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the other handle's enqueue woke the idle workers");
}

/// A writer that never pauses (a bulk enqueue) leaves SQLite no moment to start its WAL over:
/// without a checkpoint that waits for one, the WAL grew by every byte written (2.6 GB while
/// 10,000,000 jobs were queued). With it, the WAL stays near its 64 MiB limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_never_pauses_does_not_grow_the_wal_without_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let wal = dir.path().join("busy.db-wal");
    let payload = Payload::from_value(&"x".repeat(4096)).unwrap();
    let mut largest = 0;
    // 320 MiB of payloads, in batches of 1 MiB, without a pause.
    for _ in 0..320 {
        let batch = (0..256)
            .map(|_| NewJob::new("jobs", "job", payload.clone()))
            .collect();
        store.enqueue(batch, now()).await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    assert!(
        largest < 192 << 20,
        "the WAL reached {} MiB while 320 MiB were written",
        largest >> 20
    );
}
