//! Enqueue → start across processes: how long a job waits between `send` in one process and its
//! handler starting in a worker process whose pool sat idle, against a store both share.
//!
//! `cargo bench -p raindrop --bench latency`. The bench binary starts itself again as the worker
//! process (the environment variable `RAINDROP_LATENCY_CHILD` names the store and selects that
//! role); the child prints `ready`, runs its workers, prints a `sample SEQ MICROS` line per job
//! and stops when its stdin closes. The parent sends the jobs; each payload carries its send time
//! (`SystemTime`, µs: both processes read the machine's clock) and the handler subtracts it from
//! its own start. After a warm-up of 20 jobs, two patterns per store:
//!
//! - sparse: `BENCH_SPARSE` jobs (default 200), one at a time, `BENCH_GAP_MS` apart (default 5:
//!   each sent after the previous `send` returned and a sleep of that long);
//! - steady: `BENCH_RATE` jobs per second (default 5,000) for `BENCH_SECONDS` (default 4), each
//!   send a task of its own, paced every millisecond to the number due by then (a slow `send`
//!   delays no other).
//!
//! Each prints p50, p90, p99 and max. Settings, from the environment:
//!
//! - `BENCH_STORES`: comma-separated, of `redis`, `sqlite` (default both). Redis: the one at
//!   `BENCH_REDIS` (default `redis://127.0.0.1:6379`), keys under `rdlat-PID`, removed at the
//!   end; SQLite: a file in a temporary directory, opened by both processes.
//! - `BENCH_CONCURRENCY`: the worker pool's concurrency (default 256).
//! - `BENCH_IDLE_POLL_MS`: the worker's `Settings::idle_poll` (default: the production default,
//!   250 ms). An idle pool claims again when woken or after its backoff (5 ms, doubling up to
//!   `idle_poll`). The Redis store wakes idle workers of other processes (publish on enqueue);
//!   the SQLite store cannot, so there a job sent by another process waits for the next poll.
//! - `BENCH_SPARSE`, `BENCH_GAP_MS`, `BENCH_RATE`, `BENCH_SECONDS`: the patterns above.
//!
//! Both processes and Redis share the machine's cores; the parent runs one tokio worker thread,
//! the child one per core.

#[path = "support/redis.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raindrop::engine::{Engine, Roles, Settings};
use raindrop::manifest::Application;
use raindrop::queue::Queue;
use raindrop::store::Store;
use raindrop::task::{JobContext, TaskError, handler_fn};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const MANIFEST: &str = r#"application "bench" {
  queue "jobs" {}
  task "worker" {
    concurrency = CONCURRENCY
  }
  kv_cache "status" {}
}"#;

/// Selects the worker role; its value says which store: `redis:URL` or `sqlite:PATH`.
const CHILD: &str = "RAINDROP_LATENCY_CHILD";

const WARM_UP: usize = 20;

/// A job's payload: its number and when it was sent.
#[derive(Serialize, Deserialize)]
struct Sent {
    seq: u64,
    sent_us: u64,
}

/// Microseconds since the Unix epoch on the machine's clock, which both processes read.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// The number in environment variable `name`, or `default` when unset or not a number.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn application() -> Application {
    let concurrency: usize = env_number("BENCH_CONCURRENCY", 256);
    let manifest = MANIFEST.replace("CONCURRENCY", &concurrency.to_string());
    let source = raindrop_codegen::SourceFile::new("bench.manifest", &manifest);
    raindrop_codegen::compile(&source)
        .application
        .expect("manifest")
}

fn idle_poll() -> Duration {
    std::env::var("BENCH_IDLE_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Settings::default().idle_poll, Duration::from_millis)
}

/// Opens the store `spec` names (`redis:URL` or `sqlite:PATH`).
async fn open(spec: &str) -> Arc<dyn Store> {
    match spec.split_once(':') {
        Some(("redis", url)) => Arc::new(
            raindrop::store::redis::RedisStore::open(url)
                .await
                .expect("redis"),
        ),
        Some(("sqlite", path)) => Arc::new(
            raindrop::store::sqlite::SqliteStore::open(std::path::Path::new(path))
                .await
                .expect("sqlite"),
        ),
        _ => panic!("{CHILD}={spec}: `redis:URL` or `sqlite:PATH`"),
    }
}

/// The worker process: runs the pool until stdin closes, one `sample` line per job started.
fn child(spec: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Lines go out from a thread of their own, flushed whenever none is waiting, so a handler
    // never blocks on the pipe.
    let (lines, pending) = std::sync::mpsc::channel::<(u64, i64)>();
    let writer = std::thread::spawn(move || {
        // Not `stdout().lock()`: the main thread prints `ready` on the same stdout.
        let mut out = std::io::BufWriter::new(std::io::stdout());
        while let Ok((seq, us)) = pending.recv() {
            writeln!(out, "sample {seq} {us}").expect("stdout");
            while let Ok((seq, us)) = pending.try_recv() {
                writeln!(out, "sample {seq} {us}").expect("stdout");
            }
            out.flush().expect("stdout");
        }
    });
    runtime.block_on(async {
        let store = open(spec).await;
        let engine = Engine::builder(application())
            .store(store)
            .settings(Settings {
                roles: Roles {
                    workers: true,
                    ..Roles::NONE
                },
                idle_poll: idle_poll(),
                ..Settings::default()
            })
            .task(
                "worker",
                handler_fn(move |ctx: JobContext| {
                    let started = now_us();
                    let lines = lines.clone();
                    async move {
                        let sent: Sent = ctx.payload().map_err(TaskError::abort)?;
                        let _ = lines.send((sent.seq, started as i64 - sent.sent_us as i64));
                        Ok::<_, TaskError>(())
                    }
                }),
            )
            .build()
            .expect("engine");
        let running = engine.start().await.expect("start");
        println!("ready");
        // The parent closes stdin when it is done.
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        running.shutdown().await;
        drop(engine);
    });
    drop(runtime);
    writer.join().expect("writer");
}

/// The worker process as the parent sees it.
struct Worker {
    process: Child,
    samples: mpsc::UnboundedReceiver<i64>,
}

impl Worker {
    /// Starts the worker process on `spec` and waits for its `ready`.
    async fn start(spec: &str) -> Self {
        let mut process = Command::new(std::env::current_exe().expect("current exe"))
            .env(CHILD, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("worker process");
        let stdout = BufReader::new(process.stdout.take().expect("stdout"));
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let (sender, samples) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                } else if let Some(sample) = line.strip_prefix("sample ") {
                    let us = sample
                        .split_once(' ')
                        .and_then(|(_, us)| us.parse().ok())
                        .expect("a sample line: SEQ MICROS");
                    let _ = sender.send(us);
                }
            }
        });
        is_ready
            .await
            .expect("the worker process exited before it was ready");
        Self { process, samples }
    }

    /// The next `n` samples, in µs; fewer if they do not all come within `wait`.
    async fn samples(&mut self, n: usize, wait: Duration) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.samples.recv()).await {
                Ok(Some(us)) => got.push(us),
                Ok(None) => panic!("the worker process exited"),
                Err(_) => break,
            }
        }
        got
    }

    /// Closes the worker's stdin and waits for it to exit.
    fn stop(mut self) {
        drop(self.process.stdin.take());
        let status = self.process.wait().expect("wait");
        assert!(status.success(), "the worker process failed: {status}");
    }
}

/// p50, p90, p99 and max of `samples` (µs) in milliseconds, nearest rank.
fn summary(mut samples: Vec<i64>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] as f64 / 1000.0
    };
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        rank(0.50),
        rank(0.90),
        rank(0.99),
        rank(1.0)
    )
}

/// Sends `n` jobs one at a time, `gap` apart, numbered from `first`.
async fn one_at_a_time(queue: &Queue, first: u64, n: usize, gap: Duration) {
    for seq in first..first + n as u64 {
        let sent = Sent {
            seq,
            sent_us: now_us(),
        };
        queue.send(&sent).await.expect("send");
        tokio::time::sleep(gap).await;
    }
}

/// Sends `rate` jobs per second for `seconds`, numbered from `first`, each send a task of its
/// own; returns how many were sent and over how long.
async fn steady(queue: &Queue, first: u64, rate: u64, seconds: f64) -> (u64, Duration) {
    let total = (rate as f64 * seconds) as u64;
    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        for seq in first + sent..first + due {
            let queue = queue.clone();
            sends.spawn(async move {
                let sent = Sent {
                    seq,
                    sent_us: now_us(),
                };
                queue.send(&sent).await.expect("send");
            });
        }
        sent = due;
        while sends.try_join_next().is_some() {}
    }
    let elapsed = started.elapsed();
    while let Some(result) = sends.join_next().await {
        result.expect("send");
    }
    (sent, elapsed)
}

/// Both patterns against the store `spec` names.
async fn run(name: &str, spec: &str) {
    // The parent opens the store first, so an SQLite file exists with its schema when the
    // worker process opens it.
    let store = open(spec).await;
    let engine = Engine::builder(application())
        .store(store)
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
    let queue = engine.queue("jobs").expect("queue");
    let mut worker = Worker::start(spec).await;
    let wait = Duration::from_secs(60);

    one_at_a_time(&queue, 0, WARM_UP, Duration::from_millis(5)).await;
    let warmed = worker.samples(WARM_UP, wait).await.len();
    assert_eq!(warmed, WARM_UP, "warm-up jobs lost");

    let sparse: usize = env_number("BENCH_SPARSE", 200);
    let gap: u64 = env_number("BENCH_GAP_MS", 5);
    one_at_a_time(&queue, 1_000_000, sparse, Duration::from_millis(gap)).await;
    let samples = worker.samples(sparse, wait).await;
    println!(
        "{name:>6}: sparse, {sparse} jobs one at a time {gap} ms apart: enqueue→start {}{}",
        summary(samples.clone()),
        missing(sparse, samples.len()),
    );

    let rate: u64 = env_number("BENCH_RATE", 5000);
    let seconds: f64 = env_number("BENCH_SECONDS", 4.0);
    let (sent, elapsed) = steady(&queue, 2_000_000, rate, seconds).await;
    let samples = worker.samples(sent as usize, wait).await;
    println!(
        "{name:>6}: steady, {sent} jobs at {rate}/s (sent at {:.0}/s over {:.1} s): enqueue→start {}{}",
        sent as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        summary(samples.clone()),
        missing(sent as usize, samples.len()),
    );
    worker.stop();
}

/// A note when fewer than `expected` samples came back.
fn missing(expected: usize, got: usize) -> String {
    if got < expected {
        format!(
            " ({} of {expected} never started within 60 s)",
            expected - got
        )
    } else {
        String::new()
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let stores: Vec<String> = std::env::var("BENCH_STORES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| vec!["redis".into(), "sqlite".into()]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{cores} cores; enqueue→start from this process to an idle worker process (idle_poll {} ms, concurrency {}), send time in the payload (µs)",
        idle_poll().as_millis(),
        env_number("BENCH_CONCURRENCY", 256usize),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for store in &stores {
        runtime.block_on(async {
            match store.as_str() {
                "redis" => {
                    let url = std::env::var("BENCH_REDIS")
                        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                    let prefix = format!("rdlat-{}", std::process::id());
                    run("redis", &format!("redis:{url}?prefix={prefix}")).await;
                    support::remove_prefix(&url, &prefix);
                }
                "sqlite" => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let path = dir.path().join("latency.db");
                    run("sqlite", &format!("sqlite:{}", path.display())).await;
                }
                other => eprintln!("unknown store `{other}`"),
            }
        });
    }
}
