//! HTTP submission throughput and latency: the job API on SQLite next to a bare axum handler
//! that only parses the same JSON body, both on loopback, driven by the same load generator.
//!
//! `cargo bench -p raindrop --bench http` (`BENCH_SECONDS`, `BENCH_CONNECTIONS` to change).
//! The load comes from wrk, in its own process, when it is installed (`BENCH_LOAD=wrk` makes it
//! required); else, or with `BENCH_LOAD=inprocess`, from reqwest on the server's own runtime,
//! which competes with the server for the cores and swings more from run to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use raindrop::engine::{Engine, Roles, Settings};
use raindrop::service::Service;
use raindrop::task::{JobContext, TaskError, handler_fn};

const MANIFEST: &str = r#"application "bench" {
  service "api" {}
  queue "jobs" {}
  task "worker" {}
  kv_cache "status" {}
}"#;

const BODY: &str = r#"{"payload":{"type":"report","title":"q3","values":[4,8,15,16,23,42]}}"#;

/// Drives `url` with `connections` concurrent clients for `seconds`; returns requests/s and
/// latencies in microseconds.
async fn load(url: String, connections: usize, seconds: u64) -> (f64, Vec<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (url, stop) = (url.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 202);
                let _ = response.bytes().await;
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as f64 / elapsed, all)
}

/// Drives `url` with wrk (an external load generator, `BENCH_LOAD=wrk`) instead; returns
/// requests/s and wrk's p50/p99 in microseconds.
async fn wrk(url: String, connections: usize, seconds: u64) -> Summary {
    let script = std::env::temp_dir().join(format!("raindrop-wrk-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             done = function(summary, latency, requests)\n  io.write(string.format(\"RESULT %d %d %d %d\\n\", summary.requests, summary.duration, latency:percentile(50), latency:percentile(99)))\n  io.write(string.format(\"STATUS %d\\n\", summary.errors.status))\nend\n"
        ),
    )
    .expect("wrk script");
    let mut command = std::process::Command::new("wrk");
    command
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "-s",
        ])
        .arg(&script)
        .arg(&url);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("wrk thread")
        .expect("wrk (install the `wrk` package)");
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("wrk's summary")
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    let bad: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("STATUS "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(bad, 0, "non-2xx answers under wrk");
    let rate = numbers[0] as f64 / (numbers[1] as f64 / 1e6);
    (rate, numbers[2], numbers[3], numbers[0])
}

/// Requests/s, p50 and p99 in microseconds, requests.
type Summary = (f64, u64, u64, u64);

fn summary((rate, latencies): (f64, Vec<u64>)) -> Summary {
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    (rate, pct(0.5), pct(0.99), latencies.len() as u64)
}

fn report(name: &str, (rate, p50, p99, requests): Summary) {
    println!(
        "{name:>28}: {rate:>8.0} requests/s | p50 {:.2} ms | p99 {:.2} ms | {requests} requests",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
    );
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let connections: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // The bare handler: parse the same body, answer 202 with an id.
        let bare = Router::new().route(
            "/v1/jobs",
            post(|body: axum::Json<serde_json::Value>| async move {
                std::hint::black_box(&body);
                (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({ "id": uuid::Uuid::now_v7() })),
                )
            }),
        );
        let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let bare_url = format!(
            "http://{}/v1/jobs",
            bare_listener.local_addr().expect("addr")
        );
        tokio::spawn(async move { axum::serve(bare_listener, bare).await });

        let dir = tempfile::tempdir().expect("tempdir");
        let source = raindrop_codegen::SourceFile::new("bench.manifest", MANIFEST);
        let app = raindrop_codegen::compile(&source)
            .application
            .expect("manifest");
        let store = raindrop::store::sqlite::SqliteStore::open(&dir.path().join("http.db"))
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let api_url = format!("http://{}/v1/jobs", listener.local_addr().expect("addr"));
        let service = Service::new(engine, "api").expect("service");
        tokio::spawn(service.serve(listener, std::future::pending()));

        println!(
            "{connections} connections, {seconds} s each, loopback, body {} bytes",
            BODY.len()
        );
        let only_api = std::env::var_os("BENCH_ONLY_API").is_some();
        let with_wrk = match std::env::var("BENCH_LOAD").as_deref() {
            Ok("wrk") => true,
            Ok("inprocess") => false,
            _ => std::process::Command::new("wrk")
                .arg("--version")
                .output()
                .is_ok(),
        };
        println!(
            "load generator: {}",
            if with_wrk {
                "wrk (its own process)"
            } else {
                "reqwest in process (install wrk for steadier figures)"
            }
        );
        let drive = |url: String| async move {
            if with_wrk {
                wrk(url, connections, seconds).await
            } else {
                summary(load(url, connections, seconds).await)
            }
        };
        let bare = if only_api {
            f64::NAN
        } else {
            let bare = drive(bare_url).await;
            report("bare axum (parse JSON)", bare);
            bare.0
        };
        let api = drive(api_url).await;
        report("job API, SQLite (enqueue)", api);
        let rate = api.0;
        println!(
            "{:>28}: {:.0}% of the bare handler",
            "ratio",
            100.0 * rate / bare
        );
    });
}
