//! Tenants sharing a queue, end to end: jobs submitted over HTTP with each tenant's API key,
//! run by the engine's worker pool on the SQLite store.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use raindrop::engine::{Engine, Settings};
use raindrop::job::JobState;
use raindrop::service::{ApiKeys, Service};
use raindrop::store::{JobFilter, Store};
use raindrop::task::{JobContext, TaskError, handler_fn};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceExt;

#[path = "support/redis.rs"]
mod redis_support;
mod support;
use support::{app, sqlite};

const FLOOD: &str = "flood-submit-read-0123456789";
const TRICKLE: &str = "trickle-submit-read-0123456789";

/// What the handler reports as each job starts: its tenant, from the payload.
type Started = mpsc::UnboundedSender<String>;

struct Fixture {
    engine: Engine,
    router: axum::Router,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

/// An engine on a fresh SQLite file whose service has `service` in its block, whose worker
/// runs `concurrency` jobs at once, each reporting to `started`; the flood's jobs then wait for
/// a permit of `gate` to end.
async fn fixture(
    service: &str,
    concurrency: u32,
    started: Started,
    gate: Arc<Semaphore>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir.path().join("jobs.db")).await;
    fixture_on(store, dir, service, concurrency, started, gate)
}

/// [`fixture`] on `store`.
fn fixture_on(
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    service: &str,
    concurrency: u32,
    started: Started,
    gate: Arc<Semaphore>,
) -> Fixture {
    let app = app(&format!(
        "application \"t\" {{\n  service \"api\" {{\n{service}\n  }}\n  \
             queue \"jobs\" {{}}\n  task \"worker\" {{\n    concurrency = {concurrency}\n  }}\n  \
             kv_cache \"status\" {{}}\n}}\n"
    ));
    let handler = handler_fn(move |ctx: JobContext| {
        let (started, gate) = (started.clone(), gate.clone());
        async move {
            let payload: Value = ctx.payload()?;
            let who = payload["who"].as_str().unwrap().to_owned();
            started.send(who.clone()).ok();
            if who == "flood" {
                gate.acquire().await.unwrap().forget();
            }
            Ok::<_, TaskError>(())
        }
    });
    // Idle pools look again every minute at most, so jobs that start sooner were woken by an
    // enqueue or by a job ending, not by polling.
    let settings = Settings {
        idle_poll: Duration::from_secs(60),
        ..Settings::default()
    };
    let engine = Engine::builder(app)
        .store(store.clone())
        .settings(settings)
        .task("worker", handler)
        .build()
        .unwrap();
    let keys = ApiKeys::parse(&format!(
        "flood:submit,read:{FLOOD}; trickle:submit,read:{TRICKLE}"
    ))
    .unwrap();
    let router = Service::new(engine.clone(), "api")
        .unwrap()
        .api_keys(keys)
        .router();
    Fixture {
        engine,
        router,
        store,
        _dir: dir,
    }
}

/// Submits `count` jobs for `who` with `key`, in batches.
async fn submit(router: &axum::Router, key: &str, who: &str, count: usize) {
    let jobs: Vec<Value> = (0..count)
        .map(|n| json!({ "payload": { "who": who, "n": n } }))
        .collect();
    for batch in jobs.chunks(1000) {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/jobs/batch")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(json!({ "jobs": batch }).to_string()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
}

async fn count(store: &Arc<dyn Store>, tenant: &str, state: JobState) -> usize {
    let filter = JobFilter {
        queues: vec!["jobs".into()],
        states: vec![state],
        kind: None,
        tenant: Some(tenant.into()),
    };
    let mut total = 0;
    let mut after = None;
    loop {
        let page = store.list(&filter, after, 500).await.unwrap();
        total += page.items.len();
        match page.next {
            Some(next) => after = Some(next),
            None => return total,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_flood_does_not_hold_up_another_tenants_jobs() {
    let (started, mut starts) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let f = fixture("", 8, started, gate).await;
    // The worst case: the flood is all waiting before the other tenant submits anything.
    submit(&f.router, FLOOD, "flood", 10_000).await;
    submit(&f.router, TRICKLE, "trickle", 100).await;

    let clock = Instant::now();
    let running = f.engine.start().await.unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order = 0;
    while seen.get("trickle").copied().unwrap_or(0) < 100 {
        let who = tokio::time::timeout(Duration::from_secs(60), starts.recv())
            .await
            .expect("jobs keep starting")
            .unwrap();
        *seen.entry(who).or_default() += 1;
        order += 1;
    }
    let elapsed = clock.elapsed();
    running.shutdown().await;
    let flood = seen.get("flood").copied().unwrap_or(0);
    println!(
        "the trickle's 100 jobs all started after {order} starts ({flood} of the flood's), {elapsed:?}"
    );
    // Turns alternate: 100 of the flood's beside the trickle's 100, give or take a claim batch
    // (the pool's concurrency).
    assert!(
        flood <= 100 + 8,
        "{flood} of the flood's jobs started first"
    );
    assert!(count(&f.store, "flood", JobState::Queued).await >= 9_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_runs_more_than_its_quota_at_once() {
    let (started, mut starts) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let f = fixture(
        "    quota {\n      max_running = 2\n    }",
        8,
        started,
        gate.clone(),
    )
    .await;
    submit(&f.router, FLOOD, "flood", 6).await;
    submit(&f.router, TRICKLE, "trickle", 2).await;
    let running = f.engine.start().await.unwrap();

    // Eight free slots, but the flood's tenant gets two: four jobs start, then nothing.
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(starts.recv().await.unwrap());
    }
    first.sort();
    assert_eq!(first, ["flood", "flood", "trickle", "trickle"]);
    assert_eq!(count(&f.store, "flood", JobState::Running).await, 2);
    assert_eq!(count(&f.store, "flood", JobState::Queued).await, 4);

    // Let the pool back off: its empty claims have it sleeping longer and longer (towards
    // `idle_poll`). Not a synchronisation: the state to test is "idle for a while".
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each job that ends lets exactly one more of the flood's start, at once: the pool is woken
    // by the job ending, not by its next poll.
    for remaining in (0..4).rev() {
        gate.add_permits(1);
        let next = tokio::time::timeout(Duration::from_millis(1000), starts.recv())
            .await
            .expect("a job ending wakes the pool for the tenant's next job");
        assert_eq!(next.unwrap(), "flood");
        assert_eq!(count(&f.store, "flood", JobState::Running).await, 2);
        assert_eq!(count(&f.store, "flood", JobState::Queued).await, remaining);
    }
    gate.add_permits(2);
    running.shutdown().await;
    assert_eq!(count(&f.store, "flood", JobState::Succeeded).await, 6);
    assert_eq!(count(&f.store, "trickle", JobState::Succeeded).await, 2);
}

/// 32 submissions at once from a tenant one job short of its quota: exactly one is admitted,
/// the rest hear 429 `quota_queued` (the store checks the quota in the step that adds the job,
/// so concurrent submissions cannot all pass a count taken before it). No worker runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_submissions_at_quota_minus_one_admit_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = sqlite(&dir.path().join("jobs.db")).await;
    at_quota_minus_one(file, dir).await;
    if let Some(url) = redis_support::available() {
        let prefix = redis_support::Prefix::new(&url);
        at_quota_minus_one(
            support::redis(prefix.store_url()).await,
            tempfile::tempdir().unwrap(),
        )
        .await;
    }
}

async fn at_quota_minus_one(store: Arc<dyn Store>, dir: tempfile::TempDir) {
    let (started, _starts) = mpsc::unbounded_channel();
    let f = fixture_on(
        store,
        dir,
        "    quota {\n      max_queued = 10\n    }",
        1,
        started,
        Arc::new(Semaphore::new(0)),
    );
    submit(&f.router, FLOOD, "flood", 9).await;
    let submitters: Vec<_> = (0..32)
        .map(|n| {
            let router = f.router.clone();
            tokio::spawn(async move {
                let request = Request::builder()
                    .method(Method::POST)
                    .uri("/v1/jobs")
                    .header("authorization", format!("Bearer {FLOOD}"))
                    .header("content-type", "application/json")
                    .body(Body::from(
                        json!({ "payload": { "who": "flood", "n": 100 + n } }).to_string(),
                    ))
                    .unwrap();
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap();
                (status, body)
            })
        })
        .collect();
    let mut admitted = 0;
    for submitter in submitters {
        let (status, body) = submitter.await.unwrap();
        match status {
            StatusCode::ACCEPTED => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["code"], "quota_queued", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(admitted, 1, "exactly the quota is admitted");
    assert_eq!(count(&f.store, "flood", JobState::Queued).await, 10);
    // The other tenant has its own quota.
    submit(&f.router, TRICKLE, "trickle", 10).await;
}
