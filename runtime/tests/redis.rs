//! The Redis store beyond the conformance suite: memory returns to its baseline after retention,
//! cron ticks fire once across real processes, a Redis restart (append-only file on) loses no
//! acknowledged job, and an unreachable Redis is a clear error without the password.
//!
//! Skipped with a notice when no Redis answers, unless `RAINDROP_REQUIRE_REDIS=1`.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raindrop::cron::{CronConfig, CronHandler, Schedule, ScheduledEvent, cron_fn};
use raindrop::engine::{Engine, Settings};
use raindrop::job::{JobError, JobState, NewJob, Payload, now};
use raindrop::queue::SendOptions;
use raindrop::store::redis::RedisStore;
use raindrop::store::{AfterFailure, JobFilter, RetentionPolicy, Store};
use raindrop::task::{JobContext, TaskError, handler_fn};
use redis_support::{Prefix, Server};
use support::app;
use tokio_util::sync::CancellationToken;

const MANIFEST: &str = r#"application "redis" {
  queue "jobs" {
    max_attempts       = 20
    visibility_timeout = "2s"
  }
  task "worker" {
    concurrency = 64
  }
  kv_cache "status" {}
  observer "monitor" {}
}"#;

fn engine(store: &Arc<dyn Store>, work: Duration) -> Engine {
    Engine::builder(app(MANIFEST))
        .store(store.clone())
        .settings(Settings {
            observer_tick: Duration::from_millis(100),
            idle_poll: Duration::from_millis(200),
            ..Settings::default()
        })
        .task(
            "worker",
            handler_fn(move |_ctx: JobContext| async move {
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                Ok::<_, TaskError>(())
            }),
        )
        .build()
        .unwrap()
}

/// Waits until `done(counts of "jobs")`, woken by the store's events (bounded).
async fn wait_until(store: &Arc<dyn Store>, done: impl Fn(&raindrop::store::StateCounts) -> bool) {
    let notify = store.event_notify();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let notified = notify.notified();
        if let Ok(counts) = store.counts().await
            && done(&counts.get("jobs").cloned().unwrap_or_default())
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        // Other processes' progress (and a restarted Redis) do not notify: look again soon.
        let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
    }
}

/// Removes every finished job and event, as retention does once their time is up.
async fn purge_everything(store: &Arc<dyn Store>) {
    let gone = RetentionPolicy {
        succeeded: Duration::ZERO,
        failed: Duration::ZERO,
        dead: Duration::ZERO,
    };
    let later = now() + chrono::Duration::seconds(1);
    store
        .purge_expired(&BTreeMap::new(), gone, Duration::ZERO, later)
        .await
        .unwrap();
}

async fn run_jobs(store: &Arc<dyn Store>, jobs: usize) {
    let engine = engine(store, Duration::ZERO);
    let queue = engine.queue("jobs").unwrap();
    let running = engine.start().await.unwrap();
    for chunk in 0..jobs.div_ceil(1000) {
        let batch = (0..1000.min(jobs - chunk * 1000))
            .map(|i| (Payload::from_value(&i).unwrap(), SendOptions::default()))
            .collect();
        queue.send_batch(batch).await.unwrap();
    }
    wait_until(store, |c| c.succeeded as usize >= jobs).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_count_returns_to_its_baseline_after_100_000_jobs_and_retention() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let store = support::redis(prefix.store_url()).await;
    // The keys that stay for good: the set of queues, the (empty) event stream, the marker of
    // the queue's tenant indexes (set at the first upkeep) and the set of key/value namespaces.
    // Leases (`lead:`, the observer's hold on the queue's gauges) expire on their own: they are
    // not counted.
    let lasting = || {
        let mut keys = prefix.key_names();
        keys.retain(|key| !key.contains(":lead:"));
        keys
    };
    run_jobs(&store, 1).await;
    purge_everything(&store).await;
    store.recover(now()).await.unwrap();
    let baseline = lasting();
    assert!(baseline.len() <= 4, "{baseline:?} after one job");

    run_jobs(&store, 100_000).await;
    let counts = store.counts().await.unwrap()["jobs"].clone();
    assert_eq!(counts.succeeded, 100_000);
    assert!(
        prefix.key_count() > 100_000,
        "each job has its record while it is kept"
    );
    purge_everything(&store).await;
    let after = lasting();
    assert_eq!(
        after,
        baseline,
        "left: {:?}",
        after.difference(&baseline).collect::<Vec<_>>()
    );
    assert_eq!(store.counts().await.unwrap()["jobs"].succeeded, 0);
}

/// A plain connection to the Redis at `url`, to look at (or tamper with) the store's keys.
fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// The key `name` of queue `jobs` under `prefix`.
fn queue_key(prefix: &Prefix, name: &str) -> String {
    format!("{}:{{jobs}}:{name}", prefix.name())
}

/// A running job whose lease entry is gone (a partial restore, a hand edit) is found and taken
/// back; the jobs that kept theirs run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jobs_that_lost_their_lease_entry_are_taken_back() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let store = support::redis(prefix.store_url()).await;
    let start = now();
    let jobs = (0..3)
        .map(|i| {
            let mut job = NewJob::new("jobs", "test", Payload::from_value(&i).unwrap());
            job.max_attempts = 3;
            job
        })
        .collect();
    store.enqueue(jobs, start).await.unwrap();
    let claimed = store
        .claim("jobs", "w", 3, Duration::from_secs(3600), start)
        .await
        .unwrap();
    let [lost, kept, also_kept] = [0, 1, 2].map(|i| claimed[i].id.to_string());

    let mut conn = connect(&url);
    let key = |name: &str| queue_key(&prefix, name);
    // Three leases would make a listpack, whose inserts are linear: a keeper member keeps it a
    // skip list while jobs run.
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key("leases"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(encoding, "skiplist");
    // The running count still counts the job: it and the leases disagree.
    let _: () = redis::cmd("ZREM")
        .arg(key("leases"))
        .arg(&lost)
        .query(&mut conn)
        .unwrap();
    let running = JobFilter {
        states: vec![JobState::Running],
        ..JobFilter::default()
    };
    let listed: BTreeSet<String> = store
        .list(&running, None, 10)
        .await
        .unwrap()
        .items
        .iter()
        .map(|job| job.id.to_string())
        .collect();
    assert_eq!(listed, BTreeSet::from([kept.clone(), also_kept.clone()]));

    let recovered: BTreeMap<String, JobState> = store
        .recover(start + chrono::Duration::seconds(1))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.to_string(), r.state))
        .collect();
    assert_eq!(recovered, BTreeMap::from([(lost, JobState::Queued)]));
    let counts = store.counts().await.unwrap()["jobs"].clone();
    assert_eq!((counts.running, counts.queued), (2, 1));
    let count: Option<u64> = redis::cmd("GET")
        .arg(key("running-count"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(count, Some(2));

    for id in [kept, also_kept] {
        let job = store.get(id.parse().unwrap()).await.unwrap().unwrap();
        store
            .complete(job.id, job.lease_token().unwrap(), Payload::null(), now())
            .await
            .unwrap();
    }
    let (count, leases): (Option<u64>, bool) = redis::pipe()
        .cmd("GET")
        .arg(key("running-count"))
        .cmd("EXISTS")
        .arg(key("leases"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        (count, leases),
        (None, false),
        "no running job: no count key, no leases key (nor its keeper)"
    );
}

/// Running jobs are listed and counted without the member that keeps the leases a skip list,
/// and the leases key goes when the last running job stops, whichever way each one stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leases_key_goes_with_the_last_running_job() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    // The lease lapses when `recover` is told a later time.
    let store = support::redis(&format!("{}&clock=caller", prefix.store_url())).await;
    let start = now();
    let jobs = (0..5)
        .map(|i| NewJob::new("jobs", "test", Payload::from_value(&i).unwrap()))
        .collect();
    store.enqueue(jobs, start).await.unwrap();
    let claimed = store
        .claim("jobs", "w", 5, Duration::from_secs(30), start)
        .await
        .unwrap();
    let running = JobFilter {
        states: vec![JobState::Running],
        ..JobFilter::default()
    };
    let page = store.list(&running, None, 5).await.unwrap();
    assert_eq!((page.items.len(), page.next), (5, None));
    assert_eq!(store.counts().await.unwrap()["jobs"].running, 5);

    let mut conn = connect(&url);
    let key = |name: &str| queue_key(&prefix, name);
    let [done, failed, cancelled, released, lapsed] = [0, 1, 2, 3, 4].map(|i| &claimed[i]);
    let token = |job: &raindrop::job::Job| job.lease_token().unwrap();
    store
        .complete(done.id, token(done), Payload::null(), start)
        .await
        .unwrap();
    let error = JobError::new("no");
    store
        .fail(failed.id, token(failed), error, AfterFailure::Dead, start)
        .await
        .unwrap();
    store.cancel(cancelled.id, start).await.unwrap();
    store
        .release(released.id, token(released), start)
        .await
        .unwrap();
    let left = store.list(&running, None, 5).await.unwrap();
    assert_eq!(left.items.len(), 1);
    assert_eq!(left.items[0].id, lapsed.id);
    let exists: bool = redis::cmd("EXISTS")
        .arg(key("leases"))
        .query(&mut conn)
        .unwrap();
    assert!(exists, "one job still runs");

    let recovered = store
        .recover(start + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(recovered.len(), 1);
    let (count, leases): (Option<u64>, bool) = redis::pipe()
        .cmd("GET")
        .arg(key("running-count"))
        .cmd("EXISTS")
        .arg(key("leases"))
        .query(&mut conn)
        .unwrap();
    assert_eq!((count, leases), (None, false));
    assert_eq!(store.counts().await.unwrap()["jobs"].running, 0);
}

/// The child of `three_processes_fire_each_cron_tick_once`: fires the same ticks as its
/// siblings and prints the ones it won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_child() {
    let Ok(url) = std::env::var("RAINDROP_CRON_CHILD") else {
        return;
    };
    let store = support::redis(&url).await;
    let handler: Arc<dyn CronHandler> =
        Arc::new(cron_fn(|_event: ScheduledEvent| async move { Ok(()) }));
    let config = CronConfig {
        task: "every_minute".into(),
        schedule: Schedule::parse("* * * * *").unwrap(),
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    let stop = CancellationToken::new();
    let start = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let mut tick = config.schedule.next_after(start).unwrap();
    for _ in 0..200 {
        if raindrop::cron::fire(&store, &handler, &config, tick, &stop)
            .await
            .unwrap()
        {
            println!("fired {}", tick.timestamp());
        }
        tick = config.schedule.next_after(tick).unwrap();
    }
}

#[test]
fn three_processes_fire_each_cron_tick_once() {
    if std::env::var_os("RAINDROP_CRON_CHILD").is_some() {
        return;
    }
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args(["cron_child", "--exact", "--nocapture", "--test-threads=1"])
                .env("RAINDROP_CRON_CHILD", prefix.store_url())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut fired: BTreeMap<String, u32> = BTreeMap::new();
    let mut winners = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).unwrap();
        let mine: Vec<&str> = stdout
            .lines()
            // libtest's "test cron_child ... " may share a line with the first one.
            .filter_map(|l| l.split("fired ").nth(1))
            .collect();
        winners += u32::from(!mine.is_empty());
        for tick in mine {
            *fired.entry(tick.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(fired.len(), 200, "every tick fired");
    assert!(fired.values().all(|n| *n == 1), "a tick fired twice");
    assert!(winners >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_loses_no_acknowledged_job() {
    if redis_support::available().is_none() {
        return;
    }
    // Warnings and errors of every thread, to count how the outage is logged.
    let writer = Logs::default();
    let logs = writer.0.clone();
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let port = redis_support::free_port();
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut server = Server::start(port, dir.path(), &aof);
    let store = support::redis(&format!("{}?prefix=restart", server.url())).await;
    let engine = engine(&store, Duration::from_millis(5));
    let queue = engine.queue("jobs").unwrap();
    let running = engine.start().await.unwrap();

    let acknowledged = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let producer = {
        let (acknowledged, refused, stop) = (acknowledged.clone(), refused.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let batch = (0..20)
                    .map(|i| (Payload::from_value(&i).unwrap(), SendOptions::default()))
                    .collect();
                match queue.send_batch(batch).await {
                    Ok(ids) => acknowledged.fetch_add(ids.len() as u64, Ordering::SeqCst),
                    Err(_) => refused.fetch_add(20, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_until(&store, |c| c.succeeded >= 200).await;
    server.stop();
    // Down: enqueues are refused (not acknowledged) rather than lost.
    while refused.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _server = Server::start(port, dir.path(), &aof);
    let more = acknowledged.load(Ordering::SeqCst) + 200;
    while acknowledged.load(Ordering::SeqCst) < more {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    producer.await.unwrap();
    let total = acknowledged.load(Ordering::SeqCst);
    wait_until(&store, |c| {
        c.succeeded >= total && c.running + c.waiting() == 0
    })
    .await;
    let counts = store.counts().await.unwrap()["jobs"].clone();
    assert_eq!(counts.succeeded, total, "{counts:?}");
    assert_eq!(counts.get(JobState::Dead), 0);
    running.shutdown().await;
    // The outage is logged once when it starts and once, with its length, when it ends.
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.matches("Redis is unreachable").count(), 1, "{logs}");
    assert_eq!(
        logs.matches("Redis is reachable again after").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("outage_ms="), "{logs}");
}

/// Collects log lines.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error_without_the_password() {
    let port = redis_support::free_port();
    let err = RedisStore::open(&format!("redis://:s3cret@127.0.0.1:{port}/0"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "cannot reach Redis at redis://***@127.0.0.1:{port}/0"
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_across_service_processes_sharing_redis() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let manifest = r#"application "limited" {
  service "api" {
    rate_limit {
      requests = 1
      per      = "1h"
      burst    = 10
    }
  }
  queue "jobs" {}
  task "worker" {}
}"#;
    let app = raindrop_codegen::compile(&raindrop_codegen::SourceFile::new("m", manifest))
        .application
        .unwrap();
    let keys = raindrop::service::ApiKeys::parse("acme:read:acme-key-0123456789").unwrap();
    // Two service "processes": each its own store connection, one Redis.
    let mut routers = Vec::new();
    for _ in 0..2 {
        let store = support::redis(prefix.store_url()).await;
        let engine = Engine::builder(app.clone())
            .store(store)
            .task(
                "worker",
                handler_fn(|_ctx: JobContext| async move { Ok::<_, TaskError>(()) }),
            )
            .build()
            .unwrap();
        routers.push(
            raindrop::service::Service::new(engine, "api")
                .unwrap()
                .api_keys(keys.clone())
                .router(),
        );
    }
    let mut allowed = 0;
    for i in 0..30 {
        let request = Request::get("/v1/queues")
            .header("authorization", "Bearer acme-key-0123456789")
            .body(Body::empty())
            .unwrap();
        let status = routers[i % 2]
            .clone()
            .oneshot(request)
            .await
            .unwrap()
            .status();
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 10, "one bucket of 10 across both processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_follows_a_jobs_events() {
    use raindrop::event::EventKind;
    use raindrop::feed::EventFollower;
    use raindrop::job::NewJob;

    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    // Two "processes": each its own store connection.
    let producer = support::redis(prefix.store_url()).await;
    let follower_store = support::redis(prefix.store_url()).await;
    let mut follower = EventFollower::from_now(follower_store).await.unwrap();
    let id = producer
        .enqueue(
            vec![NewJob::new("jobs", "k", Payload::from_json("{}").unwrap())],
            now(),
        )
        .await
        .unwrap()[0]
        .id();
    let job = producer
        .claim("jobs", "w", 1, Duration::from_secs(30), now())
        .await
        .unwrap()
        .remove(0);
    producer
        .complete(id, job.lease_token().unwrap(), Payload::null(), now())
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.last() != Some(&EventKind::Succeeded) {
        let event = tokio::time::timeout(Duration::from_secs(10), follower.next())
            .await
            .expect("the other process's events arrive")
            .unwrap();
        assert_eq!(event.job, id);
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        [
            EventKind::Enqueued,
            EventKind::Started,
            EventKind::Succeeded
        ]
    );
}

/// The leases of `store`'s queue "jobs" as processes with skewed clocks see them.
async fn skewed_clocks(store: Arc<dyn Store>) {
    let ahead = now() + chrono::Duration::seconds(20);
    let behind = now() - chrono::Duration::seconds(20);
    let lease = Duration::from_secs(10);
    let jobs = (0..2)
        .map(|i| NewJob::new("jobs", "test", Payload::from_value(&i).unwrap()))
        .collect();
    store.enqueue(jobs, now()).await.unwrap();
    // A worker whose clock is right takes a job for 10 s; an observer 20 s ahead looks for
    // lapsed leases and must find none.
    let right = store
        .claim("jobs", "right", 1, lease, now())
        .await
        .unwrap()
        .remove(0);
    assert!(
        store.recover(ahead).await.unwrap().is_empty(),
        "an observer whose clock runs ahead took back a live job"
    );
    // A worker 20 s behind takes the other and renews it: its lease ends 10 s from now by
    // Redis's clock, not 10 s ago.
    let late = store
        .claim("jobs", "late", 1, lease, behind)
        .await
        .unwrap()
        .remove(0);
    let expires = late.lease.as_ref().unwrap().expires_at;
    assert!(
        expires > now() + chrono::Duration::seconds(5),
        "a lease taken by a clock 20 s behind ends at {expires}"
    );
    let token = late.lease_token().unwrap();
    let renewed = store
        .heartbeat(&[(late.id, token)], lease, behind)
        .await
        .unwrap();
    assert_eq!(renewed, vec![raindrop::store::LeaseStatus::Extended]);
    assert!(
        store.recover(now()).await.unwrap().is_empty(),
        "a job renewed by a worker whose clock runs behind was taken back"
    );
    // A lease renewed for no time has ended by Redis's clock, whatever the caller's says.
    let token = right.lease_token().unwrap();
    store
        .heartbeat(&[(right.id, token)], Duration::ZERO, ahead)
        .await
        .unwrap();
    let recovered = store.recover(behind).await.unwrap();
    assert_eq!(
        recovered.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![right.id]
    );
}

/// Leases are measured by Redis's clock (`TIME` in the scripts), on one Redis and on a
/// cluster: a process whose clock is skewed 20 s either way neither takes back a live job nor
/// holds a lease longer than asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_a_skewed_clock_takes_back_no_live_lease() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    skewed_clocks(support::redis(prefix.store_url()).await).await;
    if std::env::var("RAINDROP_TEST_CLUSTER").is_ok_and(|v| v == "0") {
        return;
    }
    let cluster = redis_support::Cluster::start();
    let prefix = Prefix::on_cluster(&cluster);
    skewed_clocks(support::redis(prefix.store_url()).await).await;
}

/// This process's resident memory in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The child of `random_queue_names_leave_memory_flat`, alone in its process so that the
/// resident memory it measures is its own: 10,000 requests and 10,000 store reads, each naming
/// a queue of 4 KB that does not exist. Before a read's keys were kept per queue name, each
/// cost about 90 KB for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_queue_names_child() {
    use tower::ServiceExt;

    let Ok(url) = std::env::var("RAINDROP_QUEUE_NAMES_CHILD") else {
        return;
    };
    let store = support::redis(&url).await;
    let manifest = "application \"t\" {\n  service \"api\" {}\n  queue \"jobs\" {}\n  task \"worker\" {}\n  kv_cache \"status\" {}\n}\n";
    let engine = Engine::builder(app(manifest))
        .store(store.clone())
        .task("worker", support::succeed())
        .build()
        .unwrap();
    let router = raindrop::service::Service::new(engine, "api")
        .unwrap()
        .router();
    let name = |i: usize| format!("{i}-{}", "q".repeat(4096));
    let round = async |from: usize, to: usize| {
        for i in from..to {
            let path = match i % 3 {
                0 => "/v1/jobs",
                1 => "/v1/dead-letters",
                _ => "/dashboard/jobs",
            };
            let request = axum::http::Request::get(format!("{path}?queue={}", name(i)))
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            if path.starts_with("/v1") {
                assert_eq!(status, 404);
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["code"], "unknown_queue");
                assert!(body.to_string().len() < 512, "the name is not echoed whole");
            }
            let filter = JobFilter {
                queues: vec![name(i)],
                ..JobFilter::default()
            };
            assert!(
                store
                    .list(&filter, None, 10)
                    .await
                    .unwrap()
                    .items
                    .is_empty()
            );
        }
    };
    round(0, 1_000).await;
    let warm = rss();
    round(1_000, 11_000).await;
    let grown = rss().saturating_sub(warm);
    println!("rss after warm-up {warm} B, grown by {grown} B over 10,000 names");
    assert!(grown < 16 << 20, "resident memory grew by {grown} bytes");
}

#[test]
fn random_queue_names_leave_memory_flat() {
    if std::env::var_os("RAINDROP_QUEUE_NAMES_CHILD").is_some() {
        return;
    }
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "random_queue_names_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RAINDROP_QUEUE_NAMES_CHILD", prefix.store_url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let measured = stdout.lines().find(|l| l.contains("grown by"));
    assert!(measured.is_some(), "the child measured: {stdout}");
    eprintln!("{}", measured.unwrap_or_default());
}

/// The calls Redis counted per command since its stats were reset (`INFO commandstats`),
/// commands run by scripts included.
fn command_calls(conn: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// A tenant with three jobs in a queue of 20,000 of another tenant's: listing its jobs,
/// counting its waiting ones and a submission checked against its quota read its own jobs
/// only — before, each read every job record of the queue. On a Redis of the test's own, so
/// that its command counts are this test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenant_costs_its_own_jobs_in_a_queue_of_a_big_one() {
    if redis_support::available().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(redis_support::free_port(), dir.path(), &[]);
    let store = support::redis(&server.url()).await;
    let job = |tenant: &str, n: u32| {
        let mut job = NewJob::new("jobs", "test", Payload::from_value(&n).unwrap());
        job.tenant = Some(tenant.to_owned());
        job
    };
    for chunk in 0..20 {
        let big = (0..1000).map(|i| job("big", chunk * 1000 + i)).collect();
        store.enqueue(big, now()).await.unwrap();
    }
    let small = (0..3).map(|i| job("small", i)).collect();
    store.enqueue(small, now()).await.unwrap();

    let mut conn = connect(&server.url());
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    let mine = JobFilter {
        tenant: Some("small".into()),
        ..JobFilter::default()
    };
    assert_eq!(store.list(&mine, None, 10).await.unwrap().items.len(), 3);
    let queued = JobFilter {
        states: vec![JobState::Queued],
        ..mine.clone()
    };
    assert_eq!(store.list(&queued, None, 10).await.unwrap().items.len(), 3);
    assert_eq!(store.count_waiting("jobs", "small", 100).await.unwrap(), 3);
    let mut within = job("small", 3);
    within.max_waiting = Some(10);
    store.enqueue(vec![within], now()).await.unwrap();
    let calls = command_calls(&mut conn);
    let total: u64 = calls.values().sum();
    let records = calls.get("hgetall").copied().unwrap_or(0);
    eprintln!("commands: {total}, records read: {records} ({calls:?})");
    assert!(
        records <= 6,
        "{records} job records read for a tenant of 3 jobs"
    );
    assert!(total < 200, "{total} commands for a tenant of 3 jobs");
}

/// Every key of `prefix` with its value as `DUMP` gives it.
fn snapshot(conn: &mut redis::Connection, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(conn)
        .unwrap();
    keys.into_iter()
        .map(|key| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(conn).unwrap();
            (key, dump)
        })
        .collect()
}

/// A worker holds a job's lease when Redis is restored from a snapshot taken before it took
/// the job: the job is claimed again, and the new lease's token is not the one the first
/// worker holds, so the first worker's outcome is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_do_not_repeat_after_a_restore_from_an_older_snapshot() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let store = support::redis(prefix.store_url()).await;
    let job = NewJob::new("jobs", "test", Payload::from_value(&1).unwrap());
    let id = store.enqueue(vec![job], now()).await.unwrap()[0].id();
    let mut conn = connect(&url);
    let before = snapshot(&mut conn, prefix.name());

    let first = store
        .claim("jobs", "first", 1, Duration::from_secs(60), now())
        .await
        .unwrap()
        .remove(0);
    // The restore: every key back as it was before the claim.
    let now_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", prefix.name()))
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("DEL").arg(&now_keys).query(&mut conn).unwrap();
    for (key, dump) in &before {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .query(&mut conn)
            .unwrap();
    }
    // A fresh process (nothing remembered) claims the job again.
    let other = support::redis(prefix.store_url()).await;
    let second = other
        .claim("jobs", "second", 1, Duration::from_secs(60), now())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.id, id);
    let (old, new) = (first.lease_token().unwrap(), second.lease_token().unwrap());
    assert_ne!(old, new, "the token repeated across the restore");
    assert_eq!(
        second.lease_token(),
        other.get(id).await.unwrap().unwrap().lease_token(),
        "the claim answered the token it stored"
    );
    let refused = store
        .complete(id, old, Payload::null(), now())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, raindrop::Error::LeaseLost(_)),
        "{refused}"
    );
    other
        .complete(id, new, Payload::null(), now())
        .await
        .unwrap();
}

/// `?replicas=1`: an enqueue is acknowledged once a replica has it, and fails (saying so)
/// when no replica takes it in time. A primary and a replica of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicas_required_an_enqueue_is_acknowledged_only_once_a_replica_has_it() {
    if redis_support::available().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let primary = Server::start(redis_support::free_port(), &dir.path().join("p"), &[]);
    let port = primary.port.to_string();
    let mut replica = Server::start(
        redis_support::free_port(),
        &dir.path().join("r"),
        &["--replicaof", "127.0.0.1", &port],
    );
    // The replica's link comes up on its own; bounded, like the server's start.
    let mut on_replica = connect(&replica.url());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut on_replica)
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not sync"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("{}?replicas=1&replica_timeout_ms=2000", primary.url());
    let store = support::redis(&url).await;
    let job = NewJob::new("jobs", "test", Payload::from_value(&1).unwrap());
    let id = store.enqueue(vec![job], now()).await.unwrap()[0].id();
    let located: Option<String> = redis::cmd("HGET")
        .arg("raindrop:where")
        .arg(id.to_string())
        .query(&mut on_replica)
        .unwrap();
    assert_eq!(
        located.as_deref(),
        Some("jobs"),
        "the replica had the job when it was acknowledged"
    );
    let key = format!("raindrop:{{jobs}}:j:{id}");
    let on_replica_record: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query(&mut on_replica)
        .unwrap();
    assert!(on_replica_record);

    replica.stop();
    let url = format!("{}?replicas=1&replica_timeout_ms=200", primary.url());
    let store = support::redis(&url).await;
    let job = NewJob::new("jobs", "test", Payload::from_value(&2).unwrap());
    let err = store.enqueue(vec![job], now()).await.unwrap_err();
    assert_eq!(
        err.store_kind(),
        Some(raindrop::error::StoreErrorKind::Unavailable),
        "{err}"
    );
    assert!(err.to_string().contains("0 of 1 replicas"), "{err}");
}

/// A TCP proxy to Redis that, once armed, passes the next script call (`EVALSHA`) on to Redis
/// and then drops the connection before any reply comes back: the script ran, its caller never
/// hears.
struct LosingProxy {
    port: u16,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

/// Whether `bytes` hold a script call.
fn calls_a_script(bytes: &[u8]) -> bool {
    bytes.windows(7).any(|w| w.eq_ignore_ascii_case(b"EVALSHA"))
}

impl LosingProxy {
    async fn start(upstream: String) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let arm = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                // Set once the armed script call went to Redis: from then on nothing comes back.
                let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (arm, cutting) = (arm.clone(), cut.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(n) = client_read.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        if calls_a_script(&buf[..n]) && arm.swap(false, Ordering::SeqCst) {
                            cutting.store(true, Ordering::SeqCst);
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(n) = server_read.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 || cut.load(Ordering::SeqCst) {
                            // The reply is lost: the client's half closes with this task.
                            return;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, armed }
    }
}

/// A claim runs on Redis but its reply is lost (the connection drops): the job it took goes
/// back to the queue with its attempt unspent, so a job of one attempt is not dead-lettered
/// without having run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_reply_costs_the_job_no_attempt() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let upstream = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = LosingProxy::start(upstream).await;
    let store = support::redis(&format!(
        "redis://127.0.0.1:{}?prefix={}",
        proxy.port,
        prefix.name()
    ))
    .await;
    let mut job = NewJob::new("jobs", "test", Payload::from_value(&1).unwrap());
    job.max_attempts = 1;
    let id = store.enqueue(vec![job], now()).await.unwrap()[0].id();

    proxy.armed.store(true, Ordering::SeqCst);
    let lost = store
        .claim("jobs", "w", 1, Duration::from_secs(60), now())
        .await;
    assert!(lost.is_err(), "the reply was lost: {lost:?}");
    let back = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (back.state, back.attempt),
        (JobState::Queued, 0),
        "the job is back, its attempt unspent"
    );
    let claimed = store
        .claim("jobs", "w", 1, Duration::from_secs(60), now())
        .await
        .unwrap()
        .remove(0);
    assert_eq!((claimed.id, claimed.attempt), (id, 1));
    store
        .complete(id, claimed.lease_token().unwrap(), Payload::null(), now())
        .await
        .unwrap();
}

/// Jobs stored by a version without tenant indexes (their `ts:` keys absent) are filed under
/// them by the observer's upkeep, once: the tenant's listing and quota see them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stored_before_tenant_indexes_are_filed_under_them() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let store = support::redis(prefix.store_url()).await;
    let jobs = (0..5)
        .map(|i| {
            let mut job = NewJob::new("jobs", "test", Payload::from_value(&i).unwrap());
            job.tenant = Some(if i < 3 { "acme" } else { "globex" }.into());
            job
        })
        .collect();
    store.enqueue(jobs, now()).await.unwrap();
    store
        .claim("jobs", "w", 1, Duration::from_secs(60), now())
        .await
        .unwrap();
    // As an older version left them: no tenant indexes, no marker.
    let mut conn = connect(&url);
    let indexes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{jobs}}:ts:*", prefix.name()))
        .query(&mut conn)
        .unwrap();
    assert!(!indexes.is_empty());
    let _: () = redis::cmd("DEL").arg(&indexes).query(&mut conn).unwrap();
    let upgraded = support::redis(prefix.store_url()).await;
    let acme = JobFilter {
        tenant: Some("acme".into()),
        ..JobFilter::default()
    };
    assert!(
        upgraded
            .list(&acme, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    upgraded.recover(now()).await.unwrap();
    assert_eq!(upgraded.list(&acme, None, 10).await.unwrap().items.len(), 3);
    let counts = upgraded.tenant_counts("jobs", "acme").await.unwrap();
    assert_eq!((counts.queued, counts.running), (2, 1));
    assert_eq!(
        upgraded.count_waiting("jobs", "globex", 10).await.unwrap(),
        2
    );
}

/// A running job whose record was removed by hand takes its key's running count with it once
/// its lease lapses and the counts are set right: the key is not left at its limit for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_keyed_job_removed_by_hand_does_not_hold_its_key_forever() {
    use raindrop::store::ClaimLimits;
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    // Leases by this test's clock, which it moves past them.
    let store = support::redis(&format!("{}&clock=caller", prefix.store_url())).await;
    let limits = ClaimLimits {
        running_per_key: Some(1),
        ..ClaimLimits::default()
    };
    let keyed = |n: u32| {
        let mut job = NewJob::new("jobs", "test", Payload::from_value(&n).unwrap());
        job.tenant = Some("acme".into());
        job.limit_key = Some("k".into());
        job
    };
    let start = now();
    store.enqueue(vec![keyed(1)], start).await.unwrap();
    let claimed = store
        .claim_with("jobs", "w", 1, Duration::from_secs(60), limits, start)
        .await
        .unwrap();
    let mut conn = connect(&url);
    let _: () = redis::cmd("DEL")
        .arg(queue_key(&prefix, &format!("j:{}", claimed[0].id)))
        .query(&mut conn)
        .unwrap();
    store.enqueue(vec![keyed(2)], start).await.unwrap();
    let later = start + chrono::Duration::seconds(120);
    // The lapsed lease of a job that is gone is dropped; the next pass sets the counts right.
    for _ in 0..2 {
        store.recover(later).await.unwrap();
    }
    let next = store
        .claim_with("jobs", "w", 1, Duration::from_secs(60), limits, later)
        .await
        .unwrap();
    assert_eq!(next.len(), 1, "the key has its place back");
}

/// One tenant's thousands of keys at their limit make a claim look at a sample of the queue's
/// groups, not all of them; another tenant's job is still found within a few claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_keys_at_their_limit_do_not_hide_another_tenants_job() {
    use raindrop::store::ClaimLimits;
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    let store = support::redis(prefix.store_url()).await;
    let limits = ClaimLimits {
        running_per_key: Some(1),
        ..ClaimLimits::default()
    };
    let job = |tenant: &str, key: String| {
        let mut job = NewJob::new("jobs", "test", Payload::null());
        job.tenant = Some(tenant.into());
        job.limit_key = Some(key);
        job
    };
    let keys = 5_000;
    let first: Vec<NewJob> = (0..keys).map(|k| job("flood", format!("k{k}"))).collect();
    for chunk in first.chunks(1000) {
        store.enqueue(chunk.to_vec(), now()).await.unwrap();
    }
    let mut running = 0;
    while running < keys {
        let claimed = store
            .claim_with("jobs", "w", 1000, Duration::from_secs(600), limits, now())
            .await
            .unwrap();
        assert!(!claimed.is_empty());
        running += claimed.len();
    }
    // Every key now runs one job and has one waiting: at its limit.
    let second: Vec<NewJob> = (0..keys).map(|k| job("flood", format!("k{k}"))).collect();
    for chunk in second.chunks(1000) {
        store.enqueue(chunk.to_vec(), now()).await.unwrap();
    }
    let theirs = store
        .enqueue(vec![job("other", "x".into())], now())
        .await
        .unwrap()[0]
        .id();
    let mut found = false;
    for _ in 0..20 {
        let claimed = store
            .claim_with("jobs", "w", 10, Duration::from_secs(600), limits, now())
            .await
            .unwrap();
        assert!(
            claimed.iter().all(|j| j.id == theirs),
            "the flood's keys are at their limit"
        );
        if !claimed.is_empty() {
            found = true;
            break;
        }
    }
    assert!(found, "the other tenant's job was found");
}
