//! The engine's metrics: queue gauges, job counters and latency histograms.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use raindrop::engine::{Engine, Settings};
use raindrop::event::EventKind;
use raindrop::feed::EventFollower;
use raindrop::task::{JobContext, TaskError, handler_fn};

mod support;
use support::{app, memory};

#[tokio::test]
async fn workers_and_monitors_publish_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();

    let app = app(r#"application "t" {
  service "api" {}
  queue "jobs" {}
  queue "limited" {
    concurrency_limit {
      max = 1
    }
  }
  task "worker" {
    queue = "jobs"
  }
  task "slow" {
    queue = "limited"
  }
  observer "monitor" {}
}"#);
    let engine = Engine::builder(app)
        .store(memory())
        .settings(Settings {
            observer_tick: Duration::from_millis(20),
            idle_poll: Duration::from_millis(20),
            grace: Duration::from_millis(100),
            ..Settings::default()
        })
        // Runs until shutdown releases it: the queue's one place stays taken.
        .task(
            "slow",
            handler_fn(|_ctx: JobContext| async move {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok::<_, TaskError>(())
            }),
        )
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                let fail: bool = ctx.payload()?;
                if fail {
                    Err(TaskError::abort("no"))
                } else {
                    Ok(())
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    // Two requests through the job API: one answered, one refused.
    let router = raindrop::service::Service::new(engine.clone(), "api")
        .unwrap()
        .router();
    for path in ["/v1/queues", "/v1/jobs/not-an-id"] {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        tower::ServiceExt::oneshot(router.clone(), request)
            .await
            .unwrap();
    }
    let limited = engine.queue("limited").unwrap();
    for _ in 0..3 {
        limited.send(&()).await.unwrap();
    }
    let queue = engine.queue("jobs").unwrap();
    let ok = queue.send(&false).await.unwrap();
    let bad = queue.send(&true).await.unwrap();
    for (id, kind) in [(ok, EventKind::Succeeded), (bad, EventKind::DeadLettered)] {
        tokio::time::timeout(
            Duration::from_secs(10),
            events.wait_for(|e| e.job == id && e.kind == kind),
        )
        .await
        .unwrap()
        .unwrap();
    }
    // Snapshots drain counters and histograms, so every snapshot is folded into one view.
    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut samples: HashMap<String, usize> = HashMap::new();
    let mut gauges: HashMap<(String, Vec<(String, String)>), f64> = HashMap::new();
    let mut fold = || {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let name = key.name().to_owned();
            match value {
                DebugValue::Counter(n) => *counters.entry(name).or_default() += n,
                DebugValue::Histogram(values) => *samples.entry(name).or_default() += values.len(),
                DebugValue::Gauge(v) => {
                    let labels = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    gauges.insert((name, labels), v.into_inner());
                }
            }
        }
        let gauge = |name: &str, labels: &[(&str, &str)]| {
            let labels = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            gauges.get(&(name.to_owned(), labels)).copied()
        };
        (
            gauge(
                "raindrop_queue_jobs",
                &[("queue", "jobs"), ("state", "dead")],
            ),
            gauge("raindrop_queue_held_by_limits", &[("queue", "limited")]),
        )
    };
    // Wait for a monitor pass after both jobs finished, so the gauges include them, and after
    // the slow queue's first job took its one place: the other two are held back.
    tokio::time::timeout(Duration::from_secs(10), async {
        while fold() != (Some(1.0), Some(2.0)) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the dead-letter gauge reaches 1 and two jobs are held");
    running.shutdown().await;
    fold();
    let counter = |name: &str| counters.get(name).copied().unwrap_or_default();
    assert_eq!(
        counter("raindrop_jobs_started_total"),
        3,
        "the slow queue started one"
    );
    assert_eq!(counter("raindrop_jobs_succeeded_total"), 1);
    assert_eq!(counter("raindrop_jobs_failed_total"), 1);
    assert_eq!(
        samples.get("raindrop_job_duration_seconds"),
        Some(&2),
        "the slow job was released, not timed"
    );
    assert_eq!(counter("raindrop_http_requests_total"), 2);
    assert_eq!(
        samples.get("raindrop_http_request_duration_seconds"),
        Some(&2)
    );
    assert!(
        gauges
            .keys()
            .any(|(name, _)| name == "raindrop_queue_oldest_ready_age_seconds")
    );
}
