//! The engine end to end: workers, retries, timeouts, panics, heartbeats, cancellation,
//! shutdown, recovery, observers, alerts and cron — on real stores, waiting on the event feed.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use raindrop::cron::{CronConfig, Schedule, ScheduledEvent, cron_fn};
use raindrop::engine::{Engine, EngineBuilder, Roles, Settings};
use raindrop::event::{Event, EventKind};
use raindrop::feed::EventFollower;
use raindrop::job::{JobId, JobState, now};
use raindrop::observer::{AlertState, ObserverHandler};
use raindrop::queue::SendOptions;
use raindrop::store::{JobStatus, Store};
use raindrop::task::{JobContext, TaskError, handler_fn};
use tokio_util::sync::CancellationToken;

mod support;
use support::{app, memory, succeed};

const WAIT: Duration = Duration::from_secs(10);

const BASIC: &str = r#"application "t" {
  queue "jobs" {
    max_attempts = 3
    visibility_timeout = "300ms"
    backoff {
      initial = "100ms"
      jitter = 0
    }
  }
  task "worker" {
    concurrency = 3
    timeout = "2s"
  }
  kv_cache "status" {}
  observer "monitor" {}
}"#;

fn settings() -> Settings {
    Settings {
        grace: Duration::from_secs(5),
        idle_poll: Duration::from_millis(20),
        observer_tick: Duration::from_millis(20),
        ..Settings::default()
    }
}

fn builder(manifest: &str) -> EngineBuilder {
    let app = app(manifest);
    let store = memory();
    Engine::builder(app).store(store).settings(settings())
}

/// Waits (bounded) for the event of `job` of `kind`.
async fn wait(follower: &mut EventFollower, job: JobId, kind: EventKind) -> Event {
    tokio::time::timeout(WAIT, follower.wait_for(|e| e.job == job && e.kind == kind))
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} event for {job} within {WAIT:?}"))
        .unwrap()
}

#[tokio::test]
async fn a_job_runs_and_its_result_and_status_are_stored() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                let n: u64 = ctx.payload()?;
                ctx.progress(50, "doubling").await?;
                Ok::<_, TaskError>(serde_json::json!({ "doubled": n * 2 }))
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&21).await.unwrap();
    wait(&mut events, id, EventKind::Succeeded).await;
    let job = engine.store().get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result.unwrap().as_str(), r#"{"doubled":42}"#);
    let status: JobStatus = engine
        .kv("status")
        .unwrap()
        .get_json(&id.to_string())
        .await
        .unwrap()
        .expect("status document");
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.progress.unwrap().message, "doubling");
    running.shutdown().await;
}

#[tokio::test]
async fn a_failing_job_retries_with_backoff_then_succeeds() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(move |_ctx: JobContext| {
                let calls = counter.clone();
                async move {
                    match calls.fetch_add(1, Ordering::SeqCst) {
                        0 | 1 => Err(TaskError::retry("flaky upstream")),
                        _ => Ok("fine"),
                    }
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    wait(&mut events, id, EventKind::Succeeded).await;
    let job = engine.store().get(id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 3);
    assert_eq!(job.attempts.len(), 3);
    assert_eq!(
        job.attempts[0].error.as_ref().unwrap().message,
        "flaky upstream"
    );
    // Backoff: 100ms after the first failure, 200ms after the second (no jitter).
    for (n, minimum) in [(1, 100), (2, 200)] {
        let gap = job.attempts[n].started_at - job.attempts[n - 1].finished_at.unwrap();
        assert!(
            gap.num_milliseconds() >= minimum,
            "gap before attempt {}: {gap}",
            n + 1
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn out_of_attempts_the_job_becomes_a_dead_letter() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|_ctx: JobContext| async move {
                Err::<(), _>(TaskError::retry("always broken"))
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    wait(&mut events, id, EventKind::DeadLettered).await;
    let job = engine.store().get(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Dead, 3));
    let dead = engine
        .store()
        .dead_letters(Some("jobs"), None, 10)
        .await
        .unwrap();
    assert_eq!(dead.items[0].id, id);
    running.shutdown().await;
}

#[tokio::test]
async fn an_abort_dead_letters_at_once_and_retry_after_waits() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                let mode: String = ctx.payload()?;
                match (mode.as_str(), ctx.attempt()) {
                    ("abort", _) => Err(TaskError::abort("invalid input")),
                    ("later", 1) => Err(TaskError::retry_after(
                        Duration::from_millis(400),
                        "rate limited",
                    )),
                    _ => Ok(()),
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let queue = engine.queue("jobs").unwrap();
    let abort = queue.send("abort").await.unwrap();
    let later = queue.send("later").await.unwrap();
    wait(&mut events, abort, EventKind::DeadLettered).await;
    assert_eq!(engine.store().get(abort).await.unwrap().unwrap().attempt, 1);
    wait(&mut events, later, EventKind::Succeeded).await;
    let job = engine.store().get(later).await.unwrap().unwrap();
    let gap = job.attempts[1].started_at - job.attempts[0].finished_at.unwrap();
    assert!(
        gap.num_milliseconds() >= 400,
        "retried after {gap}, asked for 400ms"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_snoozing_handler_runs_again_later_on_the_same_attempt() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                if ctx.job().snoozes < 2 {
                    return Err(TaskError::snooze(Duration::from_millis(150)));
                }
                Ok::<_, TaskError>(ctx.attempt())
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&()).await.unwrap();
    let first = wait(&mut events, id, EventKind::Snoozed).await;
    assert_eq!(first.detail.as_deref(), Some("for 150ms"));
    wait(&mut events, id, EventKind::Snoozed).await;
    wait(&mut events, id, EventKind::Succeeded).await;
    let job = engine.store().get(id).await.unwrap().unwrap();
    assert_eq!(job.snoozes, 2);
    assert_eq!(
        job.attempt, 1,
        "snoozes spend no attempt (the queue allows 3)"
    );
    assert_eq!(job.result.unwrap().as_str(), "1");
    let started: Vec<_> = job.attempts.iter().map(|a| a.started_at).collect();
    assert_eq!(started.len(), 1);
    let waited = started[0] - job.created_at;
    assert!(
        waited.num_milliseconds() >= 300,
        "two snoozes of 150 ms, started after {waited}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_job_that_snoozes_past_max_snoozes_fails_its_attempt() {
    let manifest = r#"application "t" {
  queue "jobs" {
    max_attempts = 1
    max_snoozes  = 2
  }
  task "worker" {}
  kv_cache "status" {}
  observer "monitor" {}
}"#;
    let engine = builder(manifest)
        .task(
            "worker",
            handler_fn(|_ctx: JobContext| async move {
                Err::<(), _>(TaskError::snooze(Duration::from_millis(10)))
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&()).await.unwrap();
    wait(&mut events, id, EventKind::DeadLettered).await;
    let job = engine.store().get(id).await.unwrap().unwrap();
    assert_eq!(
        job.snoozes, 2,
        "two snoozes, then the third failed the attempt"
    );
    assert_eq!(job.attempt, 1);
    let error = job.error.unwrap().message;
    assert!(
        error.contains("snoozed 2 times") && error.contains("max_snoozes = 2"),
        "{error}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_timeout_fails_the_attempt_and_fires_the_cancellation_token() {
    let seen: Arc<Mutex<Option<CancellationToken>>> = Arc::default();
    let slot = seen.clone();
    let manifest = BASIC.replace("timeout = \"2s\"", "timeout = \"200ms\"");
    let engine = builder(&manifest)
        .task(
            "worker",
            handler_fn(move |ctx: JobContext| {
                let slot = slot.clone();
                async move {
                    *slot.lock().unwrap() = Some(ctx.cancellation().clone());
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<_, TaskError>(())
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    let failed = wait(&mut events, id, EventKind::Failed).await;
    assert_eq!(failed.detail.as_deref(), Some("timed out after 200ms"));
    assert!(
        seen.lock().unwrap().as_ref().unwrap().is_cancelled(),
        "the handler's token fires on timeout"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_panic_fails_the_job_and_the_worker_keeps_going() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                let n: u32 = ctx.payload()?;
                if n == 0 {
                    panic!("boom at zero");
                }
                Ok::<_, TaskError>(n)
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let queue = engine.queue("jobs").unwrap();
    let bad = queue.send(&0).await.unwrap();
    let failed = wait(&mut events, bad, EventKind::Failed).await;
    assert_eq!(
        failed.detail.as_deref(),
        Some("the handler panicked: boom at zero")
    );
    let good = queue.send(&7).await.unwrap();
    wait(&mut events, good, EventKind::Succeeded).await;
    running.shutdown().await;
}

#[tokio::test]
async fn no_more_jobs_run_at_once_than_the_concurrency() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(move |_ctx: JobContext| {
                let (active, peak) = (a.clone(), p.clone());
                async move {
                    let now_active = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now_active, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, TaskError>(())
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let queue = engine.queue("jobs").unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(queue.send(&i).await.unwrap());
    }
    let running = engine.start().await.unwrap();
    let mut done = 0;
    while done < ids.len() {
        tokio::time::timeout(WAIT, events.wait_for(|e| e.kind == EventKind::Succeeded))
            .await
            .unwrap()
            .unwrap();
        done += 1;
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} jobs ran at once with concurrency 3");
    assert!(peak >= 2, "the pool ran jobs in parallel (peak {peak})");
    running.shutdown().await;
}

#[tokio::test]
async fn heartbeats_keep_a_long_job_leased() {
    // The lease is 300ms; the job takes 1s; the observer recovers lapsed leases every 20ms.
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|_ctx: JobContext| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, TaskError>(())
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(
        WAIT,
        events.wait_for(|e| {
            seen.push(e.kind);
            e.job == id && e.kind == EventKind::Succeeded
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        !seen.contains(&EventKind::Recovered),
        "the job was recovered while running: {seen:?}"
    );
    assert_eq!(engine.store().get(id).await.unwrap().unwrap().attempt, 1);
    running.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_handler() {
    let seen: Arc<Mutex<Option<CancellationToken>>> = Arc::default();
    let slot = seen.clone();
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(move |ctx: JobContext| {
                let slot = slot.clone();
                async move {
                    *slot.lock().unwrap() = Some(ctx.cancellation().clone());
                    ctx.cancellation().cancelled().await;
                    Ok::<_, TaskError>("stopped")
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    wait(&mut events, id, EventKind::Started).await;
    let outcome = engine.store().cancel(id, now()).await.unwrap();
    assert_eq!(outcome, raindrop::store::CancelOutcome::CancelledRunning);
    let token = loop {
        if let Some(token) = seen.lock().unwrap().clone() {
            break token;
        }
        tokio::task::yield_now().await;
    };
    tokio::time::timeout(WAIT, token.cancelled())
        .await
        .expect("the handler is told to stop");
    assert_eq!(
        engine.store().get(id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    running.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_running_jobs_within_the_grace_period() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|_ctx: JobContext| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, TaskError>("done")
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    wait(&mut events, id, EventKind::Started).await;
    running.shutdown().await;
    assert_eq!(
        engine.store().get(id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn after_the_grace_period_running_jobs_are_released_without_burning_an_attempt() {
    let app = app(BASIC);
    let store = memory();
    let engine = Engine::builder(app)
        .store(store)
        .settings(Settings {
            grace: Duration::from_millis(100),
            ..settings()
        })
        .task(
            "worker",
            handler_fn(|_ctx: JobContext| async move {
                std::future::pending::<()>().await;
                Ok::<_, TaskError>(())
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    wait(&mut events, id, EventKind::Started).await;
    running.shutdown().await;
    let job = engine.store().get(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Queued, 0));
}

#[tokio::test]
async fn the_observer_recovers_the_jobs_of_a_dead_worker() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move { Ok::<_, TaskError>(ctx.attempt()) }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    // A worker that claims the job and dies: it never heartbeats or reports.
    let claimed = engine
        .store()
        .claim("jobs", "dead-worker", 1, Duration::from_millis(100), now())
        .await
        .unwrap();
    assert_eq!(claimed[0].id, id);
    let running = engine.start().await.unwrap();
    wait(&mut events, id, EventKind::Recovered).await;
    wait(&mut events, id, EventKind::Succeeded).await;
    let job = engine.store().get(id).await.unwrap().unwrap();
    assert_eq!(
        job.result.unwrap().as_str(),
        "2",
        "the second attempt finished it"
    );
    running.shutdown().await;
}

struct Collect(tokio::sync::mpsc::UnboundedSender<String>);

#[async_trait]
impl ObserverHandler for Collect {
    async fn on_event(&self, event: &Event) {
        let _ = self.0.send(event.kind.as_str().to_owned());
    }

    async fn on_alert(&self, alert: &AlertState) {
        let _ = self
            .0
            .send(format!("alert {} firing={}", alert.name, alert.firing));
    }
}

#[tokio::test]
async fn observer_handlers_receive_lifecycle_events_in_order() {
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let engine = builder(BASIC)
        .task("worker", succeed())
        .observer("monitor", Collect(sender))
        .build()
        .unwrap();
    let running = engine.start().await.unwrap();
    engine.queue("jobs").unwrap().send(&1).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("succeeded") {
        kinds.push(
            tokio::time::timeout(WAIT, received.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let lifecycle: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| !k.starts_with("alert"))
        .collect();
    assert_eq!(lifecycle, vec!["enqueued", "started", "succeeded"]);
    running.shutdown().await;
}

#[tokio::test]
async fn an_alert_fires_when_the_queue_backs_up() {
    let manifest = r#"application "t" {
  queue "jobs" {}
  task "worker" {}
  observer "monitor" {
    alert "backlog" {
      metric    = "queue_depth"
      threshold = 3
    }
  }
}"#;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let app = app(manifest);
    let store = memory();
    let engine = Engine::builder(app)
        .store(store)
        .settings(Settings {
            roles: Roles {
                workers: false,
                ..Roles::ALL
            },
            ..settings()
        })
        .task("worker", succeed())
        .observer("monitor", Collect(sender))
        .build()
        .unwrap();
    for i in 0..5 {
        engine.queue("jobs").unwrap().send(&i).await.unwrap();
    }
    let running = engine.start().await.unwrap();
    tokio::time::timeout(WAIT, async {
        while received.recv().await.as_deref() != Some("alert backlog firing=true") {}
    })
    .await
    .expect("the alert handler is called");
    let firing = engine.alerts().firing();
    assert_eq!(firing.len(), 1);
    assert_eq!((firing[0].value, firing[0].threshold), (5.0, 3.0));
    // Recorded in the store, for the dashboards of other processes.
    let recorded = raindrop::registry::alerts(engine.store(), now())
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].firing && recorded[0].name == "backlog");
    running.shutdown().await;
}

#[tokio::test]
async fn a_running_worker_pool_is_listed_until_it_stops() {
    let app = app(BASIC);
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .settings(settings())
        .task("worker", succeed())
        .build()
        .unwrap();
    let running = engine.start().await.unwrap();
    // The pool announces itself from its own task: look until it has (bounded).
    let pools = tokio::time::timeout(WAIT, async {
        loop {
            let pools = raindrop::registry::workers(&store, now()).await.unwrap();
            let processes = raindrop::registry::processes(&store, now()).await.unwrap();
            if !pools.is_empty() && !processes.is_empty() {
                return pools;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the pool is listed");
    assert_eq!(pools.len(), 1);
    assert_eq!(
        (pools[0].task.as_str(), pools[0].queue.as_str()),
        ("worker", "jobs")
    );
    assert_eq!(pools[0].worker, engine.worker_id());
    let processes = raindrop::registry::processes(&store, now()).await.unwrap();
    assert_eq!(processes.len(), 1);
    assert_eq!(processes[0].id, engine.worker_id());
    assert_eq!(processes[0].roles, ["workers", "scheduler", "observer"]);
    running.shutdown().await;
    assert!(
        raindrop::registry::workers(&store, now())
            .await
            .unwrap()
            .is_empty(),
        "a stopped pool withdraws"
    );
    assert!(
        raindrop::registry::processes(&store, now())
            .await
            .unwrap()
            .is_empty(),
        "so does a stopped process"
    );
}

#[tokio::test]
async fn a_missing_handler_is_a_startup_error_naming_the_task() {
    let err = builder(BASIC).build().unwrap_err().to_string();
    assert!(err.contains("no handler for task `worker`"), "{err}");
    let err = builder(BASIC)
        .task("worker", succeed())
        .task("wroker", succeed())
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no worker task named `wroker`"), "{err}");
}

#[tokio::test]
async fn producers_check_size_dedupe_by_key_and_delay() {
    let manifest = BASIC.replace(
        "max_attempts = 3",
        "max_attempts = 3\n    max_message_size = \"64B\"",
    );
    let engine = builder(&manifest)
        .task("worker", succeed())
        .build()
        .unwrap();
    let queue = engine.queue("jobs").unwrap();
    let err = queue.send(&"x".repeat(100)).await.unwrap_err();
    assert!(
        matches!(err, raindrop::Error::PayloadTooLarge { limit: 64, .. }),
        "{err}"
    );
    let options = || SendOptions {
        idempotency_key: Some("order-1".into()),
        ..SendOptions::default()
    };
    let first = queue.send_with(&1, options()).await.unwrap();
    let second = queue.send_with(&2, options()).await.unwrap();
    assert_eq!(first.id(), second.id());
    assert!(matches!(second, raindrop::store::Enqueued::Duplicate(_)));

    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let sent = now();
    let delayed = queue
        .send_with(
            &3,
            SendOptions {
                delay: Some(Duration::from_millis(300)),
                ..SendOptions::default()
            },
        )
        .await
        .unwrap();
    let started = wait(&mut events, delayed.id(), EventKind::Started).await;
    assert!(
        (started.at - sent).num_milliseconds() >= 300,
        "a delayed job ran early"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_paused_queue_holds_its_jobs_until_resumed() {
    let engine = builder(BASIC).task("worker", succeed()).build().unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    engine.store().pause("jobs").await.unwrap();
    let running = engine.start().await.unwrap();
    let id = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        events.wait_for(|e| e.kind == EventKind::Started),
    )
    .await;
    assert!(early.is_err(), "a job started on a paused queue");
    engine.store().resume("jobs").await.unwrap();
    wait(&mut events, id, EventKind::Succeeded).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_cron_tick_fires_once_across_processes() {
    let store = memory();
    let runs = Arc::new(AtomicU32::new(0));
    let config = CronConfig {
        task: "nightly".into(),
        schedule: Schedule::parse("0 2 * * *").unwrap(),
        timeout: Duration::from_secs(5),
        max_attempts: 1,
    };
    let tick = config.schedule.next_after(now()).unwrap();
    assert_eq!(tick.format("%H:%M").to_string(), "02:00");
    let stop = CancellationToken::new();
    let mut processes = Vec::new();
    for _ in 0..3 {
        let counter = runs.clone();
        let handler: Arc<dyn raindrop::cron::CronHandler> =
            Arc::new(cron_fn(move |event: ScheduledEvent| {
                let counter = counter.clone();
                async move {
                    assert_eq!(event.cron, "0 2 * * *");
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }));
        let (store, config, stop) = (store.clone(), config.clone(), stop.clone());
        processes.push(tokio::spawn(async move {
            raindrop::cron::fire(&store, &handler, &config, tick, &stop)
                .await
                .unwrap()
        }));
    }
    let mut fired = 0;
    for process in processes {
        fired += u32::from(process.await.unwrap());
    }
    assert_eq!((fired, runs.load(Ordering::SeqCst)), (1, 1));
    let record: raindrop::cron::CronRun = serde_json::from_slice(
        &store
            .kv_get(raindrop::cron::CRON_RUNS_NAMESPACE, "nightly", now())
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(
        (record.outcome.as_str(), record.scheduled_time),
        ("succeeded", tick)
    );
}

#[tokio::test]
async fn a_failed_cron_run_waits_for_the_next_tick_unless_retries_are_allowed() {
    let store = memory();
    for (max_attempts, expected_runs, outcome) in [(1, 1, "failed"), (3, 3, "succeeded")] {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let handler: Arc<dyn raindrop::cron::CronHandler> =
            Arc::new(cron_fn(move |event: ScheduledEvent| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    if event.attempt < 3 {
                        Err(TaskError::retry_after(Duration::from_millis(10), "not yet"))
                    } else {
                        Ok(())
                    }
                }
            }));
        let task = format!("report-{max_attempts}");
        let config = CronConfig {
            task: task.clone(),
            schedule: Schedule::parse("@hourly").unwrap(),
            timeout: Duration::from_secs(5),
            max_attempts,
        };
        let tick = config.schedule.next_after(now()).unwrap();
        assert!(
            raindrop::cron::fire(&store, &handler, &config, tick, &CancellationToken::new())
                .await
                .unwrap()
        );
        assert_eq!(runs.load(Ordering::SeqCst), expected_runs);
        let record: raindrop::cron::CronRun = serde_json::from_slice(
            &store
                .kv_get(raindrop::cron::CRON_RUNS_NAMESPACE, &task, now())
                .await
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(record.outcome, outcome);
        assert_eq!(record.attempts, expected_runs);
    }
}

/// An engine on an SQLite store that refuses successes until the trigger `refuse_success` is
/// dropped through the connection returned, its one task reporting each start on the channel.
struct RefusingStore {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    refuse: rusqlite::Connection,
    engine: Engine,
    starts: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl RefusingStore {
    async fn new(manifest: &str, settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let app = app(manifest);
        let store = support::sqlite(&path).await;
        let refuse = rusqlite::Connection::open(&path).unwrap();
        refuse
            .execute_batch(
                "CREATE TRIGGER refuse_success BEFORE UPDATE OF state ON jobs \
                 WHEN NEW.state = 'succeeded' BEGIN SELECT RAISE(FAIL, 'refused by the test'); END;",
            )
            .unwrap();
        let (started, starts) = tokio::sync::mpsc::unbounded_channel();
        let engine = Engine::builder(app)
            .store(store.clone())
            .settings(settings)
            .task(
                "worker",
                handler_fn(move |_ctx: JobContext| {
                    let started = started.clone();
                    async move {
                        let _ = started.send(());
                        Ok::<_, TaskError>(())
                    }
                }),
            )
            .build()
            .unwrap();
        Self {
            _dir: dir,
            store,
            refuse,
            engine,
            starts,
        }
    }
}

/// A job's slot is free once its outcome is sent to the store, but while the store refuses
/// outcomes the pool keeps at most `concurrency` of them waiting and stops claiming; when the
/// store takes them again, every job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_stops_claiming_while_the_store_refuses_its_outcomes() {
    const SLOW_TO_RECOVER: &str = r#"application "t" {
  queue "jobs" {
    visibility_timeout = "1h"
  }
  task "worker" {
    concurrency = 3
  }
  kv_cache "status" {}
}"#;
    let RefusingStore {
        _dir,
        store,
        refuse,
        engine,
        mut starts,
    } = RefusingStore::new(
        SLOW_TO_RECOVER,
        Settings {
            roles: Roles {
                observer: false,
                ..Roles::ALL
            },
            ..settings()
        },
    )
    .await;
    let queue = engine.queue("jobs").unwrap();
    let batch = (0..30u32)
        .map(|i| {
            (
                raindrop::job::Payload::from_value(&i).unwrap(),
                SendOptions::default(),
            )
        })
        .collect();
    queue.send_batch(batch).await.unwrap();
    let running = engine.start().await.unwrap();

    // Three outcomes waiting to be recorded and three jobs done but holding their slots.
    for _ in 0..6 {
        tokio::time::timeout(WAIT, starts.recv())
            .await
            .unwrap()
            .unwrap();
    }
    let more = tokio::time::timeout(Duration::from_millis(500), starts.recv()).await;
    assert!(
        more.is_err(),
        "a seventh job started while six outcomes waited"
    );
    assert_eq!(store.counts().await.unwrap()["jobs"].queued, 24);

    let mut events = EventFollower::from_now(store.clone()).await.unwrap();
    refuse.execute_batch("DROP TRIGGER refuse_success").unwrap();
    for _ in 0..30 {
        tokio::time::timeout(WAIT, events.wait_for(|e| e.kind == EventKind::Succeeded))
            .await
            .expect("every job finishes once the store takes outcomes again")
            .unwrap();
    }
    assert_eq!(store.counts().await.unwrap()["jobs"].succeeded, 30);
    running.shutdown().await;
}

/// A job whose outcome the store is slow to take keeps its lease: it is not recovered and run
/// again while its success waits to be recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_keeps_its_lease_while_its_outcome_waits() {
    const SHORT_LEASE: &str = r#"application "t" {
  queue "jobs" {
    visibility_timeout = "300ms"
  }
  task "worker" {
    concurrency = 2
  }
  kv_cache "status" {}
  observer "monitor" {}
}"#;
    let RefusingStore {
        _dir,
        store,
        refuse,
        engine,
        mut starts,
    } = RefusingStore::new(SHORT_LEASE, settings()).await;
    let queue = engine.queue("jobs").unwrap();
    let mut events = EventFollower::from_now(store.clone()).await.unwrap();
    let running = engine.start().await.unwrap();
    let a = queue.send(&1u32).await.unwrap();
    let b = queue.send(&2u32).await.unwrap();
    for _ in 0..2 {
        tokio::time::timeout(WAIT, starts.recv())
            .await
            .unwrap()
            .unwrap();
    }

    // Five leases' time with both outcomes refused, the monitor recovering every 20 ms.
    let recovered = tokio::time::timeout(
        Duration::from_millis(1500),
        events.wait_for(|e| e.kind == EventKind::Recovered),
    )
    .await;
    assert!(
        recovered.is_err(),
        "a job was recovered while its outcome waited: {recovered:?}"
    );

    refuse.execute_batch("DROP TRIGGER refuse_success").unwrap();
    for _ in 0..2 {
        tokio::time::timeout(WAIT, events.wait_for(|e| e.kind == EventKind::Succeeded))
            .await
            .expect("both jobs finish once the store takes outcomes again")
            .unwrap();
    }
    for id in [a, b] {
        let job = store.get(id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Succeeded, 1));
    }
    assert!(starts.try_recv().is_err(), "a job ran twice");
    running.shutdown().await;
}

#[tokio::test]
async fn the_whole_lifecycle_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(BASIC);
    let store = support::sqlite(&dir.path().join("db")).await;
    let engine = Engine::builder(app)
        .store(store)
        .settings(settings())
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                let n: u32 = ctx.payload()?;
                if ctx.attempt() == 1 && n.is_multiple_of(2) {
                    return Err(TaskError::retry("first attempts of even jobs fail"));
                }
                Ok::<_, TaskError>(n)
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let queue = engine.queue("jobs").unwrap();
    let batch = (0..20)
        .map(|n| {
            (
                raindrop::job::Payload::from_value(&n).unwrap(),
                SendOptions::default(),
            )
        })
        .collect();
    let ids: Vec<JobId> = queue
        .send_batch(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id())
        .collect();
    let mut succeeded = std::collections::HashSet::new();
    while succeeded.len() < ids.len() {
        let event = tokio::time::timeout(WAIT, events.wait_for(|e| e.kind == EventKind::Succeeded))
            .await
            .unwrap()
            .unwrap();
        succeeded.insert(event.job);
    }
    let counts = engine.store().counts().await.unwrap();
    assert_eq!(counts["jobs"].succeeded, 20);
    let retried = engine.store().get(ids[0]).await.unwrap().unwrap();
    assert_eq!(retried.attempt, 2);
    running.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_past_the_calendars_end_waits_until_its_end() {
    let engine = builder(BASIC)
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                let years: u64 = ctx.payload()?;
                if years == 0 {
                    return Ok(());
                }
                let delay = Duration::from_secs(years.saturating_mul(365 * 24 * 3600));
                Err::<(), _>(TaskError::retry_after(delay, "come back much later"))
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let queue = engine.queue("jobs").unwrap();
    // A million years overflows the calendar's arithmetic; u64::MAX years overflows Duration's.
    for years in [1_000_000, u64::MAX] {
        let id = queue.send(&years).await.unwrap();
        wait(&mut events, id, EventKind::Retrying).await;
        let job = engine.store().get(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Retrying);
        assert!(
            job.run_at > now() + chrono::Duration::days(365 * 1000),
            "a delay of {years} years did not come back at once: {}",
            job.run_at
        );
    }
    // The pool is still working.
    let id = queue.send(&0).await.unwrap();
    wait(&mut events, id, EventKind::Succeeded).await;
    running.shutdown().await;
}

/// A job sent while both claims of the pool are on their way back (empty) starts as soon as
/// they are back, not at the pool's next poll: the pool listens for sends before it claims.
/// Time is paused, so a poll shows as virtual time passing before the job starts.
#[tokio::test(start_paused = true)]
async fn a_job_sent_while_the_pools_claims_are_out_starts_without_waiting_for_a_poll() {
    let store = support::counting::CountingStore::new(memory());
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let finish_first = Arc::new(tokio::sync::Notify::new());
    let finish = finish_first.clone();
    let engine = Engine::builder(app(BASIC))
        .store(store.clone())
        .settings(Settings {
            roles: Roles {
                observer: false,
                ..Roles::ALL
            },
            idle_poll: Duration::from_secs(3600),
            ..settings()
        })
        .task(
            "worker",
            handler_fn(move |ctx: JobContext| {
                let (started_tx, finish) = (started_tx.clone(), finish.clone());
                async move {
                    let n: u64 = ctx.payload()?;
                    let _ = started_tx.send((n, tokio::time::Instant::now()));
                    if n == 0 {
                        finish.notified().await;
                    }
                    Ok::<_, TaskError>(())
                }
            }),
        )
        .build()
        .unwrap();
    let queue = engine.queue("jobs").unwrap();
    queue.send(&0).await.unwrap();
    let running = engine.start().await.unwrap();
    let first = tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    assert_eq!(first.map(|(n, _)| n), Some(0));

    // One claimer's claim takes every free slot; the other claims once job 0 frees its slot.
    // Hold both claims, empty, on their way back.
    store.hold_claims(2);
    tokio::time::timeout(WAIT, store.claims_held(1))
        .await
        .expect("a claimer claimed");
    finish_first.notify_one();
    tokio::time::timeout(WAIT, store.claims_held(2))
        .await
        .expect("the other claimer claimed");

    let sent_at = tokio::time::Instant::now();
    queue.send(&1).await.unwrap();
    store.release_claims();
    let (n, started_at) = tokio::time::timeout(WAIT, started.recv())
        .await
        .expect("the job started")
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        started_at - sent_at,
        Duration::ZERO,
        "the pool slept before claiming the job it was told of"
    );
    running.shutdown().await;
}
