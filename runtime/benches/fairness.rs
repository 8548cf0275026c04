//! What fair claiming costs as tenants multiply: 20,000 jobs queued across T tenants (T = 1,
//! 10, 100, 1,000), then claimed in batches of 32 until none are left; prints jobs claimed per
//! second per store. Every claim looks at each waiting tenant's next job, so the cost grows with
//! T; this shows by how much.
//!
//! Then what keys at their concurrency limit cost the others: a queue with a keyed limit of one
//! running job per key, K keys (K = 0, 1, 1,000) each at its limit with five more jobs waiting,
//! and 20,000 jobs over 32 other keys, claimed 32 at a time and completed; jobs per second.
//!
//! `cargo bench -p raindrop --bench fairness` (`BENCH_STORES=memory,sqlite,redis`, default
//! memory and SQLite; `BENCH_REDIS` for another Redis).

#[path = "support/redis.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use raindrop::job::{NewJob, Payload, now};
use raindrop::store::Store;

const JOBS: usize = 20_000;
const BATCH: usize = 32;
const LEASE: Duration = Duration::from_secs(300);

/// Queues `JOBS` jobs spread evenly over `tenants` tenants (`None`: no tenant at all), claims
/// them all; returns jobs claimed per second.
async fn claim_rate(store: &Arc<dyn Store>, queue: &str, tenants: Option<usize>) -> f64 {
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| {
            let payload = Payload::from_value(&i).expect("payload");
            let mut job = NewJob::new(queue, "bench", payload);
            job.tenant = tenants.map(|t| format!("tenant-{}", i % t));
            job
        })
        .collect();
    for chunk in jobs.chunks(1000) {
        store.enqueue(chunk.to_vec(), now()).await.expect("enqueue");
    }
    let started = Instant::now();
    let mut claimed = 0;
    while claimed < JOBS {
        let batch = store
            .claim(queue, "bench", BATCH, LEASE, now())
            .await
            .expect("claim");
        assert!(!batch.is_empty(), "jobs went missing");
        claimed += batch.len();
    }
    JOBS as f64 / started.elapsed().as_secs_f64()
}

/// Claims and completes `JOBS` jobs spread over 32 keys of a queue whose keys may each run one
/// job, with `blocked` other keys at their limit and five jobs waiting behind each; returns
/// jobs per second.
async fn keyed_rate(store: &Arc<dyn Store>, queue: &str, blocked: usize) -> f64 {
    let limits = raindrop::store::ClaimLimits {
        running_per_key: Some(1),
        ..Default::default()
    };
    let job = |i: usize, key: String| {
        let mut job = NewJob::new(queue, "bench", Payload::from_value(&i).expect("payload"));
        job.limit_key = Some(key);
        job
    };
    let first: Vec<NewJob> = (0..blocked).map(|k| job(k, format!("busy-{k}"))).collect();
    for chunk in first.chunks(1000) {
        store.enqueue(chunk.to_vec(), now()).await.expect("enqueue");
    }
    let mut running = 0;
    while running < blocked {
        let batch = store
            .claim_with(queue, "busy", 1000, LEASE, limits, now())
            .await
            .expect("claim");
        assert!(!batch.is_empty(), "busy keys' first jobs went missing");
        running += batch.len();
    }
    let waiting: Vec<NewJob> = (0..blocked * 5)
        .map(|i| job(i, format!("busy-{}", i % blocked.max(1))))
        .chain((0..JOBS).map(|i| job(i, format!("free-{}", i % BATCH))))
        .collect();
    for chunk in waiting.chunks(1000) {
        store.enqueue(chunk.to_vec(), now()).await.expect("enqueue");
    }
    let started = Instant::now();
    let mut done = 0;
    while done < JOBS {
        let batch = store
            .claim_with(queue, "bench", BATCH, LEASE, limits, now())
            .await
            .expect("claim");
        assert!(!batch.is_empty(), "jobs went missing");
        for job in &batch {
            assert!(
                job.limit_key
                    .as_deref()
                    .is_some_and(|k| k.starts_with("free-"))
            );
            let token = job.lease_token().expect("token");
            store
                .complete(job.id, token, Payload::null(), now())
                .await
                .expect("complete");
        }
        done += batch.len();
    }
    JOBS as f64 / started.elapsed().as_secs_f64()
}

async fn run_keyed(name: &str, store: Arc<dyn Store>) {
    let mut line = format!("{name:>7}:");
    for (i, blocked) in [0, 1, 1000].into_iter().enumerate() {
        let rate = keyed_rate(&store, &format!("k{i}"), blocked).await;
        line.push_str(&format!(" | {blocked} keys at their limit: {rate:>8.0}/s"));
    }
    println!("{line}");
}

async fn run(name: &str, store: Arc<dyn Store>) {
    let mut line = format!("{name:>7}:");
    let cases: [(&str, Option<usize>); 5] = [
        ("no tenant", None),
        ("1", Some(1)),
        ("10", Some(10)),
        ("100", Some(100)),
        ("1,000", Some(1000)),
    ];
    for (i, (label, tenants)) in cases.into_iter().enumerate() {
        let rate = claim_rate(&store, &format!("q{i}"), tenants).await;
        line.push_str(&format!(" | {label}: {rate:>8.0}/s"));
    }
    println!("{line}");
    run_keyed(name, store).await;
}

fn main() {
    let stores: Vec<String> = std::env::var("BENCH_STORES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| vec!["memory".into(), "sqlite".into()]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{JOBS} jobs queued over T tenants, claimed {BATCH} at a time; jobs claimed per second by T"
    );
    runtime.block_on(async {
        for store in &stores {
            match store.as_str() {
                "memory" => {
                    run(
                        "memory",
                        Arc::new(raindrop::store::memory::MemoryStore::new()),
                    )
                    .await
                }
                "sqlite" => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let sqlite =
                        raindrop::store::sqlite::SqliteStore::open(&dir.path().join("fairness.db"))
                            .await
                            .expect("sqlite");
                    run("sqlite", Arc::new(sqlite)).await;
                }
                "redis" => {
                    let url = std::env::var("BENCH_REDIS")
                        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                    let prefix = format!("rdfair-{}", std::process::id());
                    let redis =
                        raindrop::store::redis::RedisStore::open(&format!("{url}?prefix={prefix}"))
                            .await
                            .expect("redis");
                    run("redis", Arc::new(redis)).await;
                    support::remove_prefix(&url, &prefix);
                }
                other => eprintln!("unknown store `{other}`"),
            }
        }
    });
}
