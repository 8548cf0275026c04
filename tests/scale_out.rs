//! Scale-out on Redis with real processes: one service process and three worker processes share
//! one Redis and run every job exactly once; a worker killed with SIGKILL loses nothing; every
//! role of a split deployment is scraped on its own and the workers' histograms add up.
//!
//! Skipped with a notice when no Redis answers, unless `RAINDROP_REQUIRE_REDIS=1` (as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

#[path = "support/app.rs"]
mod app;
#[path = "../runtime/tests/support/promtool.rs"]
mod promtool;
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

/// What `url` (a `/metrics`) answers.
async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_of_a_split_deployment_is_scraped_and_the_workers_histograms_add_up() {
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = redis_support::Prefix::new(&url);
    let dir = tempfile::tempdir().unwrap();
    let launch = |role| App::launch(dir.path(), role, prefix.store_url(), MANIFEST);
    let service = launch("service");
    let observer = launch("observer");
    let workers = [launch("worker"), launch("worker")];
    let jobs = 400;
    submit(&service, jobs, json!({ "type": "sleep", "ms": 5 })).await;
    wait_counts(&service, Duration::from_secs(120), |c| {
        c["succeeded"] == jobs
    })
    .await;

    let http = reqwest::Client::new();
    for process in [&service, &observer, &workers[0], &workers[1]] {
        for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
            let answer: Value = http
                .get(format!("{}{path}", process.operations))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["status"], status, "{path} of {}", process.operations);
        }
    }
    // The service keeps its own routes on its API listener.
    let service_text = scrape(&http, &service.url("/metrics")).await;
    assert!(service_text.contains("# TYPE raindrop_http_requests_total counter"));
    promtool::check_metrics("the service", &service_text);

    // The observer publishes the queue gauges (once it has counted the finished jobs).
    let succeeded = r#"raindrop_queue_jobs{queue="job_queue",state="succeeded"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let observer_text = loop {
        let text = scrape(&http, &format!("{}/metrics", observer.operations)).await;
        if sample(&text, succeeded) == Some(jobs as f64) {
            break text;
        }
        assert!(Instant::now() < deadline, "the observer's gauges: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(observer_text.contains("raindrop_queue_oldest_ready_age_seconds{queue=\"job_queue\"}"));
    assert!(!observer_text.contains("raindrop_jobs_started_total"));
    promtool::check_metrics("the observer", &observer_text);

    // Each worker's job-duration histogram counts the jobs it ran; together, every job.
    let series = |suffix: &str, le: Option<&str>| match le {
        Some(le) => format!(
            r#"raindrop_job_duration_seconds{suffix}{{queue="job_queue",task="job_worker",le="{le}"}}"#
        ),
        None => format!(
            r#"raindrop_job_duration_seconds{suffix}{{queue="job_queue",task="job_worker"}}"#
        ),
    };
    let mut ran = Vec::new();
    let mut inf = 0.0;
    for (n, worker) in workers.iter().enumerate() {
        let text = scrape(&http, &format!("{}/metrics", worker.operations)).await;
        promtool::check_metrics(&format!("worker {n}"), &text);
        assert!(
            !text.contains("raindrop_queue_jobs"),
            "only observers publish queue gauges"
        );
        let count = sample(&text, &series("_count", None)).unwrap();
        let bucket = sample(&text, &series("_bucket", Some("+Inf"))).unwrap();
        assert_eq!(count, bucket, "worker {n}: +Inf counts every sample");
        let started = sample(
            &text,
            r#"raindrop_jobs_started_total{queue="job_queue",task="job_worker"}"#,
        );
        assert_eq!(started, Some(count), "worker {n}: one duration per attempt");
        ran.push(count);
        inf += bucket;
    }
    assert!(
        ran.iter().all(|&n| n > 0.0),
        "both workers ran jobs: {ran:?}"
    );
    assert_eq!(
        inf, jobs as f64,
        "summed bucket counts are the jobs run: {ran:?}"
    );
}
