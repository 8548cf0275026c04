//! Event streams: reads of the store's event feed per second with 1 and with 1,000 open
//! streams under the same flow of events. Every stream of a service shares one reader of the
//! feed, so the two figures should be the same.
//!
//! `cargo bench -p raindrop --bench streams` (`BENCH_SECONDS` per run, default 5;
//! `BENCH_EVENTS` per second, default 2,000). The service runs in process on the memory store,
//! wrapped to count `events_after` calls; the streams are read by tasks of the same runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use futures_util::StreamExt;
use raindrop::engine::Engine;
use raindrop::job::{NewJob, Payload, Progress, now};
use raindrop::service::Service;
use raindrop::store::memory::MemoryStore;
use raindrop::store::{JobStore, Store};
use tower::ServiceExt;

#[path = "../tests/support/counting.rs"]
mod counting;
use counting::CountingStore;

const MANIFEST: &str = r#"application "bench" {
  service "api" {
    streams {
      per_key = 1000
      total   = 1000
    }
  }
  queue "jobs" {}
  task "worker" {}
  kv_cache "status" {}
}"#;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    streams: usize,
    reads_per_second: f64,
    events_per_second: f64,
    delivered_per_second: f64,
}

/// Opens `streams` streams, one per running job, then writes progress events on those jobs,
/// round robin, at `rate` per second for `seconds`.
async fn run(streams: usize, rate: u64, seconds: u64) -> Run {
    let source = raindrop_codegen::SourceFile::new("bench.manifest", MANIFEST);
    let app = raindrop_codegen::compile(&source)
        .application
        .expect("the bench manifest is valid");
    let store = CountingStore::new(Arc::new(MemoryStore::new()));
    let engine = Engine::builder(app)
        .store(store.clone() as Arc<dyn Store>)
        .task(
            "worker",
            raindrop::task::handler_fn(|_ctx: raindrop::task::JobContext| async {
                Ok::<_, raindrop::task::TaskError>(())
            }),
        )
        .build()
        .expect("engine");
    let router = Service::new(engine, "api").expect("service").router();
    let jobs = (0..streams)
        .map(|i| NewJob::new("jobs", "bench", Payload::from_value(&i).expect("payload")))
        .collect();
    store.enqueue(jobs, now()).await.expect("enqueue");
    let running: Vec<_> = store
        .claim("jobs", "bench", streams, Duration::from_secs(3600), now())
        .await
        .expect("claim")
        .into_iter()
        .map(|job| (job.id, job.lease_token().expect("leased")))
        .collect();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for (id, _) in &running {
        let response = router
            .clone()
            .oneshot(
                Request::get(format!("/v1/jobs/{id}/events"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body().into_data_stream();
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(chunk)) = body.next().await {
                let frames = chunk.windows(7).filter(|w| w == b"event: ").count();
                delivered.fetch_add(frames as u64, Ordering::Relaxed);
            }
        }));
    }
    // Let every stream send its status first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (reads_before, delivered_before) = (store.feed_reads(), delivered.load(Ordering::Relaxed));
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1) as usize;
    let mut interval = tokio::time::interval(tick);
    let started = Instant::now();
    let mut written = 0u64;
    let mut next = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        interval.tick().await;
        for _ in 0..per_tick {
            let (id, token) = running[next % running.len()];
            next += 1;
            let progress = Progress {
                percent: (next % 100) as u8,
                message: "working".into(),
            };
            store
                .progress(id, token, progress, now())
                .await
                .expect("progress");
            written += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last events reach the streams before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads = store.feed_reads() - reads_before;
    let got = delivered.load(Ordering::Relaxed) - delivered_before;
    for reader in readers {
        reader.abort();
    }
    Run {
        streams,
        reads_per_second: reads as f64 / elapsed,
        events_per_second: written as f64 / elapsed,
        delivered_per_second: got as f64 / elapsed,
    }
}

fn main() {
    let seconds = setting("BENCH_SECONDS", 5);
    let rate = setting("BENCH_EVENTS", 2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("event streams: {rate} events/s written for {seconds} s per run");
    println!(
        "{:>8} {:>14} {:>16} {:>18}",
        "streams", "feed reads/s", "events written/s", "events delivered/s"
    );
    for streams in [1, 1000] {
        let run = runtime.block_on(run(streams, rate, seconds));
        println!(
            "{:>8} {:>14.1} {:>16.0} {:>18.0}",
            run.streams, run.reads_per_second, run.events_per_second, run.delivered_per_second
        );
    }
}
