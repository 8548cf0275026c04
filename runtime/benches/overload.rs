//! Overload with rate limits on: many clients submit jobs with one API key as fast as they can,
//! far beyond the key's limit, while a probe measures `GET /healthz`. Prints how much was
//! accepted and refused (429) and the probe's latency, next to the probe alone on an idle
//! service.
//!
//! `cargo bench -p raindrop --bench overload` (`BENCH_SECONDS`, `BENCH_CONNECTIONS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raindrop::engine::{Engine, Roles, Settings};
use raindrop::service::{ApiKeys, Service};
use raindrop::task::{JobContext, TaskError, handler_fn};

const MANIFEST: &str = r#"application "bench" {
  service "api" {
    rate_limit {
      requests = 1000
      per      = "1s"
      burst    = 100
    }
  }
  queue "jobs" {}
  task "worker" {}
  kv_cache "status" {}
}"#;

const KEY: &str = "bench-key-0123456789abcdef";
const BODY: &str = r#"{"payload":{"type":"report","title":"q3","values":[4,8,15,16,23,42]}}"#;

/// `GET /healthz` one request at a time for `seconds`; latencies in microseconds, sorted.
async fn probe(url: String, seconds: u64) -> Vec<u64> {
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let sent = Instant::now();
        let response = client.get(&url).send().await.expect("probe");
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await;
        latencies.push(sent.elapsed().as_micros() as u64);
        // A probe every 5 ms, like a load balancer's, not a second load.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort_unstable();
    latencies
}

fn pct(latencies: &[u64], p: f64) -> f64 {
    latencies
        .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let connections: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = raindrop_codegen::SourceFile::new("bench.manifest", MANIFEST);
        let app = raindrop_codegen::compile(&source).application.expect("manifest");
        let store = raindrop::store::sqlite::SqliteStore::open(&dir.path().join("overload.db"))
        .await
        .expect("sqlite");
        let engine = Engine::builder(app)
            .store(Arc::new(store))
            .settings(Settings {
                roles: Roles::NONE,
                ..Settings::default()
            })
            .task(
                "worker",
                handler_fn(|_ctx: JobContext| async move { Ok::<_, TaskError>(()) }),
            )
            .build()
            .expect("engine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let keys = ApiKeys::parse(&format!("bench:submit,read:{KEY}")).expect("keys");
        let service = Service::new(engine, "api").expect("service").api_keys(keys);
        tokio::spawn(service.serve(listener, std::future::pending()));

        let idle = probe(format!("{base}/healthz"), seconds).await;

        let stop = Arc::new(AtomicBool::new(false));
        let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut clients = Vec::new();
        for _ in 0..connections {
            let (url, stop, accepted, refused) =
                (format!("{base}/v1/jobs"), stop.clone(), accepted.clone(), refused.clone());
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = client
                        .post(&url)
                        .header("authorization", format!("Bearer {KEY}"))
                        .header("content-type", "application/json")
                        .body(BODY)
                        .send()
                        .await
                        .expect("request");
                    match response.status().as_u16() {
                        202 => accepted.fetch_add(1, Ordering::Relaxed),
                        429 => {
                            assert!(response.headers().contains_key("retry-after"));
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("unexpected status {other}"),
                    };
                    let _ = response.bytes().await;
                }
            }));
        }
        let started = Instant::now();
        let loaded = probe(format!("{base}/healthz"), seconds).await;
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        for client in clients {
            client.await.expect("client");
        }
        let (accepted, refused) = (accepted.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
        println!(
            "{connections} connections submitting with one key (limit 1,000/s, burst 100), {seconds} s, loopback"
        );
        println!(
            "  submissions: {:.0} accepted/s, {:.0} refused with 429/s ({:.0}% refused)",
            accepted as f64 / elapsed,
            refused as f64 / elapsed,
            100.0 * refused as f64 / (accepted + refused).max(1) as f64
        );
        println!(
            "  /healthz idle:      p50 {:.2} ms, p99 {:.2} ms ({} probes)",
            pct(&idle, 0.5),
            pct(&idle, 0.99),
            idle.len()
        );
        println!(
            "  /healthz overload:  p50 {:.2} ms, p99 {:.2} ms ({} probes)",
            pct(&loaded, 0.5),
            pct(&loaded, 0.99),
            loaded.len()
        );
    });
}
