//! `autoscale { min max }`: a backlog that waits past the target drives a worker pool to `max`;
//! once the queue is empty and slots sit idle it returns to `min`. Time is tokio's paused clock.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use raindrop::engine::{Engine, Roles, Settings};
use raindrop::job::{NewJob, Payload};
use raindrop::task::{JobContext, TaskError, handler_fn};
use tokio::sync::Semaphore;

mod support;
use support::{app, memory};

/// The last value the pool set `raindrop_worker_concurrency` to. The debugging recorder's
/// snapshot resets a gauge to 0 once read, and the pool sets it only when it changes (never to
/// 0: `min` is at least 1), so the last non-zero reading is the current value.
struct Gauge {
    snapshotter: Snapshotter,
    last: Option<f64>,
}

impl Gauge {
    fn read(&mut self) -> Option<f64> {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if let DebugValue::Gauge(v) = value
                && key.key().name() == "raindrop_worker_concurrency"
                && v.into_inner() != 0.0
            {
                self.last = Some(v.into_inner());
            }
        }
        self.last
    }
}

#[tokio::test(start_paused = true)]
async fn a_backlog_grows_the_pool_to_max_and_an_empty_queue_returns_it_to_min() {
    let recorder = DebuggingRecorder::new();
    let mut gauge = Gauge {
        snapshotter: recorder.snapshotter(),
        last: None,
    };
    metrics::set_global_recorder(recorder).unwrap();
    let manifest = r#"application "t" {
  queue "jobs" {}
  task "worker" {
    autoscale {
      min         = 1
      max         = 4
      target_wait = "1s"
    }
  }
}"#;
    let running_now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let handler = {
        let (running_now, peak, gate) = (running_now.clone(), peak.clone(), gate.clone());
        handler_fn(move |_ctx: JobContext| {
            let (running_now, peak, gate) = (running_now.clone(), peak.clone(), gate.clone());
            async move {
                let n = running_now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                running_now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, TaskError>(())
            }
        })
    };
    let engine = Engine::builder(app(manifest))
        .store(memory())
        .settings(Settings {
            roles: Roles {
                workers: true,
                scheduler: false,
                observer: false,
            },
            idle_poll: Duration::from_millis(50),
            ..Settings::default()
        })
        .task("worker", handler)
        .build()
        .unwrap();
    // Due an hour ago (the store is told it is then): every one has waited far past the
    // target, on the wall clock the pool reads.
    let due = raindrop::job::now() - chrono::Duration::hours(1);
    let jobs = (0..20)
        .map(|i| NewJob {
            run_at: Some(due),
            ..NewJob::new("jobs", "jobs", Payload::from_value(&i).unwrap())
        })
        .collect();
    engine.store().enqueue(jobs, due).await.unwrap();
    let running = engine.start().await.unwrap();

    // 1 → 2 → 4, one step per second while every slot is busy.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(running_now.load(Ordering::SeqCst), 4);
    assert_eq!(gauge.read(), Some(4.0));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(peak.load(Ordering::SeqCst), 4, "never above max");

    // Let every job finish; the queue empties and the slots sit idle.
    gate.add_permits(20);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(running_now.load(Ordering::SeqCst), 0);
    assert_eq!(gauge.read(), Some(4.0), "shrinks only after idling 30s");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(gauge.read(), Some(1.0));
    running.shutdown().await;
}
