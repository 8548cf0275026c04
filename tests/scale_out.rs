//! Scale-out on Redis with real processes: one service process and three worker processes share
//! one Redis and run every job exactly once; a worker killed with SIGKILL loses nothing.
//!
//! Skipped with a notice when no Redis answers, unless `RAINDROP_REQUIRE_REDIS=1` (as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

#[path = "support/app.rs"]
mod app;
#[path = "../runtime/tests/support/redis.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use app::App;
use serde_json::{Value, json};

const MANIFEST: &str = r#"application "background_processor" {
  service "job_api" {
    max_body = "1MiB"
  }
  queue "job_queue" {
    max_attempts       = 5
    visibility_timeout = "1s"
  }
  task "job_worker" {
    concurrency = 32
  }
  kv_cache "job_status" {}
  observer "job_monitor" {}
}
"#;

/// The queue's counts from `GET /v1/queues`.
async fn counts(service: &App) -> Value {
    let (status, queues) = service.get("/v1/queues").await;
    assert_eq!(status, 200, "{queues}");
    queues[0]["counts"].clone()
}

/// Polls the counts until `done` holds (bounded: the work happens in other processes).
async fn wait_counts(service: &App, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let counts = counts(service).await;
        if done(&counts) {
            return counts;
        }
        assert!(Instant::now() < deadline, "stuck at {counts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits `n` jobs with `payload` in batches of 1,000; returns their ids.
async fn submit(service: &App, n: usize, payload: Value) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let jobs: Vec<Value> = (0..1000.min(n - ids.len()))
            .map(|_| json!({ "payload": payload }))
            .collect();
        let (status, body) = service
            .post("/v1/jobs/batch", json!({ "jobs": jobs }))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.extend(
            body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
    }
    ids
}

/// Every job of the queue, through the paginated listing.
async fn all_jobs(service: &App) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=500&cursor={c}"),
            None => "/v1/jobs?limit=500".to_owned(),
        };
        let (status, page) = service.get(&path).await;
        assert_eq!(status, 200, "{page}");
        jobs.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return jobs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_and_three_workers_run_50_000_jobs_exactly_once() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = redis_support::Prefix::new(&url);
    let dir = tempfile::tempdir().unwrap();
    let launch = |role| App::launch(dir.path(), role, prefix.store_url(), MANIFEST);
    let service = launch("service");
    let _observer = launch("observer");
    let _workers: Vec<App> = (0..3).map(|_| launch("worker")).collect();

    let ids = submit(&service, 50_000, json!({ "type": "sleep", "ms": 0 })).await;
    assert_eq!(ids.len(), 50_000);
    let done = wait_counts(&service, Duration::from_secs(600), |c| {
        c["succeeded"] == 50_000
    })
    .await;
    assert_eq!(done["running"], 0);
    assert_eq!(done["dead"], 0);

    let jobs = all_jobs(&service).await;
    assert_eq!(jobs.len(), 50_000);
    // Each job started exactly once: one attempt, by one worker process.
    let twice: Vec<&Value> = jobs.iter().filter(|j| j["attempt"] != 1).collect();
    assert!(twice.is_empty(), "jobs that ran more than once: {twice:?}");
    let mut workers: Vec<&str> = jobs
        .iter()
        .map(|j| j["attempts"][0]["worker"].as_str().unwrap())
        .collect();
    workers.sort_unstable();
    workers.dedup();
    assert_eq!(workers.len(), 3, "all three workers took jobs: {workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_nothing() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = redis_support::Prefix::new(&url);
    let dir = tempfile::tempdir().unwrap();
    let launch = |role| App::launch(dir.path(), role, prefix.store_url(), MANIFEST);
    let service = launch("service");
    let _observer = launch("observer");
    let mut doomed = launch("worker");
    let ids = submit(&service, 200, json!({ "type": "sleep", "ms": 200 })).await;
    wait_counts(&service, Duration::from_secs(60), |c| {
        c["running"].as_u64().unwrap() > 0
    })
    .await;
    doomed.signal("KILL");
    doomed.wait();
    let survivor = launch("worker");
    let done = wait_counts(&service, Duration::from_secs(120), |c| {
        c["succeeded"] == 200
    })
    .await;
    assert_eq!(done["running"], 0, "nothing is stuck running: {done}");
    let recovered = all_jobs(&service)
        .await
        .into_iter()
        .filter(|j| j["attempt"].as_u64().unwrap() > 1)
        .count();
    assert!(recovered > 0, "the killed worker's jobs ran again");
    drop(survivor);
    assert_eq!(ids.len(), 200);
}
