//! Engine throughput: enqueue N no-op jobs in batches, process them with concurrency 256 (set
//! `BENCH_CONCURRENCY`), per store; against Redis the bench leaves Redis a core (set
//! `BENCH_THREADS` for the bench's worker threads). Prints enqueue and processing rates,
//! enqueue→finish latency percentiles, peak RSS and the CPU each side used per job.
//!
//! `cargo bench -p raindrop --bench throughput` (N defaults to 100,000; set `BENCH_JOBS`).
//!
//! Settings, all from the environment:
//!
//! - `BENCH_STORES`: comma-separated, of `memory`, `sqlite`, `redis` (default `memory,sqlite`);
//!   each store runs in a runtime of its own, one after the other.
//! - `BENCH_JOBS`: jobs processed and timed (default 100,000).
//! - `BENCH_CONCURRENCY`: the worker pool's concurrency (default 256).
//! - `BENCH_THREADS`: the bench's tokio worker threads (default one per core, one fewer against
//!   Redis).
//! - `BENCH_BATCH`: jobs per `send_batch` (default 1,000).
//! - `BENCH_REDIS`: the Redis to use (default `redis://127.0.0.1:6379`); the bench's keys live
//!   under a prefix of its own (`rdbench-PID`), removed at the end.
//! - `BENCH_CALLGRIND`: when set, the bench runs `callgrind_control -z` when processing starts and
//!   `-d` when it ends; `self` aims at this process (the bench itself under callgrind,
//!   `scripts/engine-instructions.sh`), any other value at every process under callgrind (Redis,
//!   `scripts/redis-instructions.sh`).
//! - `BENCH_MODE`: `backlog` (default) enqueues every job, then starts the workers. `live` starts
//!   the workers first, then `BENCH_PRODUCERS` tasks (default 4) push the jobs while they run;
//!   the processing rate is then from the first enqueue to the last success, and the CPU
//!   figures cover enqueueing and processing together.
//! - `BENCH_BACKLOG`: scale mode (with `BENCH_MODE=backlog`): enqueue this many jobs first (at
//!   least `BENCH_JOBS`, from `BENCH_PRODUCERS` tasks, progress every million on stderr), then
//!   time processing of the first `BENCH_JOBS` of them; the engine stops once that many have
//!   succeeded. Prints the peak RSS of enqueueing and of processing, and the store's size with
//!   every job queued: Redis `used_memory` and bytes per queued job, or the SQLite file (and its
//!   WAL). No enqueue→finish listing in this mode (it would read every job back). Meant to run
//!   at 10,000,000 against SQLite and Redis (Redis then needs several GiB; the memory store far
//!   more).
//!
//! Peak RSS is the process's: run one store per invocation for a store's own (memory an earlier
//! store's run freed may stay with the allocator).

#[path = "support/measure.rs"]
mod measure;
#[path = "support/redis.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raindrop::engine::{Engine, Roles, Settings};
use raindrop::job::Payload;
use raindrop::manifest::Application;
use raindrop::queue::{Queue, SendOptions};
use raindrop::store::{JobFilter, Store};
use raindrop::task::{JobContext, TaskError, handler_fn};

use measure::{RedisStats, own_cpu_secs, peak_rss_mib, reset_peak_rss};

const MANIFEST: &str = r#"application "bench" {
  queue "jobs" {}
  task "worker" {
    concurrency = CONCURRENCY
  }
  kv_cache "status" {}
}"#;

/// How the jobs reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every job enqueued, then the workers started.
    Backlog,
    /// The workers started, then the jobs pushed while they run.
    Live,
    /// A backlog of `backlog` jobs, of which the first `jobs` are processed.
    Scale { backlog: usize },
}

/// What a run does: the same for every store.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Jobs processed and timed.
    jobs: usize,
    /// Jobs per `send_batch`.
    batch: usize,
    /// Tasks enqueueing at once (live and scale modes).
    producers: usize,
}

/// The store under test, and where to read its size.
struct Target {
    name: &'static str,
    store: Arc<dyn Store>,
    /// The Redis server's URL (without the bench's prefix).
    redis: Option<String>,
    /// The SQLite database file.
    sqlite: Option<PathBuf>,
}

fn engine(store: Arc<dyn Store>, app: Application) -> Engine {
    Engine::builder(app)
        .store(store)
        .settings(Settings {
            roles: Roles {
                observer: false,
                ..Roles::ALL
            },
            idle_poll: Duration::from_millis(5),
            ..Settings::default()
        })
        .task(
            "worker",
            handler_fn(|_ctx: JobContext| async move { Ok::<_, TaskError>(()) }),
        )
        .build()
        .expect("engine")
}

/// `n` no-op jobs for one `send_batch`.
fn batch_of(n: usize) -> Vec<(Payload, SendOptions)> {
    (0..n)
        .map(|i| {
            (
                Payload::from_value(&i).expect("payload"),
                SendOptions::default(),
            )
        })
        .collect()
}

/// Enqueues `jobs` jobs in batches of `batch` from `producers` tasks, each taking the next
/// batch when its last one is in; with `progress`, says on stderr as each million is in.
async fn produce(
    queue: &Queue,
    jobs: usize,
    batch: usize,
    producers: usize,
    progress: Option<&str>,
) {
    let batches = jobs.div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let label = progress.map(str::to_owned);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers.max(1) {
        let (queue, next, done, label) = (queue.clone(), next.clone(), done.clone(), label.clone());
        tasks.spawn(async move {
            loop {
                let chunk = next.fetch_add(1, Ordering::Relaxed);
                if chunk >= batches {
                    break;
                }
                let n = batch.min(jobs - chunk * batch);
                queue.send_batch(batch_of(n)).await.expect("enqueue");
                let before = done.fetch_add(n, Ordering::Relaxed);
                if let Some(label) = &label
                    && (before + n) / 1_000_000 > before / 1_000_000
                {
                    eprintln!(
                        "{label:>6}: enqueued {} of {jobs} in {:.1} s",
                        before + n,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("producer");
    }
}

/// Waits until `jobs` jobs of the queue have succeeded, polling the counts: following every
/// event would cost the engine more than it measures.
async fn wait_for_succeeded(store: &Arc<dyn Store>, jobs: usize) {
    loop {
        let counts = store.counts().await.expect("counts");
        if counts.get("jobs").map_or(0, |c| c.succeeded) as usize >= jobs {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Enqueue→finish of every job in the store, in milliseconds: p50 and p99.
async fn enqueue_to_finish(store: &Arc<dyn Store>, jobs: usize) -> (i64, i64) {
    let mut latencies = Vec::with_capacity(jobs);
    let mut after = None;
    loop {
        let page = store
            .list(&JobFilter::default(), after, 10_000)
            .await
            .expect("list");
        latencies.extend(
            page.items
                .iter()
                .filter_map(|j| j.finished_at.map(|f| (f - j.created_at).num_milliseconds())),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    (pct(0.50), pct(0.99))
}

/// The CPU this process used per job over `elapsed`, `during` what.
fn print_own_cpu(name: &str, during: &str, own_cpu: f64, jobs: usize, elapsed: Duration) {
    println!(
        "{name:>6}: {during}, this process used {:.1} µs of CPU per job ({:.2} of {} cores)",
        own_cpu * 1e6 / jobs as f64,
        own_cpu / elapsed.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
}

/// Redis's CPU per job between `before` and `after`, `during` what.
fn print_redis_cpu(
    during: &str,
    before: &RedisStats,
    after: &RedisStats,
    jobs: usize,
    elapsed: Duration,
) {
    println!(
        " redis: {during}, {:.1} µs of Redis CPU per job ({:.1} µs in scripts, INFO commandstats), Redis {:.0}% of a core",
        (after.cpu_secs - before.cpu_secs) * 1e6 / jobs as f64,
        (after.script_usec - before.script_usec) as f64 / jobs as f64,
        (after.cpu_secs - before.cpu_secs) / elapsed.as_secs_f64() * 100.0,
    );
}

/// Backlog mode: every job enqueued, then processed. Returns Redis's memory with every job
/// queued, in bytes.
async fn run_backlog(target: &Target, app: Application, plan: Plan) -> Option<u64> {
    let (name, jobs) = (target.name, plan.jobs);
    reset_peak_rss();
    let engine = engine(target.store.clone(), app);
    let queue = engine.queue("jobs").expect("queue");

    let started = Instant::now();
    for chunk in 0..jobs.div_ceil(plan.batch) {
        let n = plan.batch.min(jobs - chunk * plan.batch);
        queue.send_batch(batch_of(n)).await.expect("enqueue");
    }
    let enqueue = started.elapsed();
    let peak_queued = target
        .redis
        .as_deref()
        .map(|url| RedisStats::read(url).used_memory);

    let redis_before = target.redis.as_deref().map(RedisStats::read);
    callgrind("-z");
    let cpu_before = own_cpu_secs();
    let processing = Instant::now();
    let running = engine.start().await.expect("start");
    wait_for_succeeded(&target.store, jobs).await;
    let process = processing.elapsed();
    let own_cpu = own_cpu_secs() - cpu_before;
    callgrind("-d");
    let redis_after = target.redis.as_deref().map(RedisStats::read);
    running.shutdown().await;

    let (p50, p99) = enqueue_to_finish(&target.store, jobs).await;
    println!(
        "{name:>6}: {jobs} jobs | enqueue {:>9.0} jobs/s | processed {:>9.0} jobs/s | enqueue→finish p50 {p50} ms, p99 {p99} ms | peak RSS {:.0} MiB",
        jobs as f64 / enqueue.as_secs_f64(),
        jobs as f64 / process.as_secs_f64(),
        peak_rss_mib(),
    );
    print_own_cpu(name, "while processing", own_cpu, jobs, process);
    if let (Some(before), Some(after)) = (redis_before, redis_after) {
        print_redis_cpu("while processing", &before, &after, jobs, process);
    }
    peak_queued
}

/// Live mode: the workers started first, then the jobs pushed while they run.
async fn run_live(target: &Target, app: Application, plan: Plan) {
    let (name, jobs) = (target.name, plan.jobs);
    reset_peak_rss();
    let engine = engine(target.store.clone(), app);
    let queue = engine.queue("jobs").expect("queue");
    let running = engine.start().await.expect("start");
    // Let the pool settle into waiting for work (and the Redis store subscribe to wakes).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let redis_before = target.redis.as_deref().map(RedisStats::read);
    callgrind("-z");
    let cpu_before = own_cpu_secs();
    let started = Instant::now();
    let producers = {
        let queue = queue.clone();
        tokio::spawn(async move {
            produce(&queue, jobs, plan.batch, plan.producers, None).await;
            started.elapsed()
        })
    };
    wait_for_succeeded(&target.store, jobs).await;
    let process = started.elapsed();
    let own_cpu = own_cpu_secs() - cpu_before;
    callgrind("-d");
    let redis_after = target.redis.as_deref().map(RedisStats::read);
    let enqueue = producers.await.expect("producers");
    running.shutdown().await;

    let (p50, p99) = enqueue_to_finish(&target.store, jobs).await;
    println!(
        "{name:>6}: live, {jobs} jobs | enqueue {:>9.0} jobs/s ({} producers, workers running) | processed {:>9.0} jobs/s (first enqueue to last success) | enqueue→finish p50 {p50} ms, p99 {p99} ms | peak RSS {:.0} MiB",
        jobs as f64 / enqueue.as_secs_f64(),
        plan.producers,
        jobs as f64 / process.as_secs_f64(),
        peak_rss_mib(),
    );
    print_own_cpu(
        name,
        "while enqueueing and processing",
        own_cpu,
        jobs,
        process,
    );
    if let (Some(before), Some(after)) = (redis_before, redis_after) {
        print_redis_cpu(
            "while enqueueing and processing",
            &before,
            &after,
            jobs,
            process,
        );
    }
}

/// The sizes of an SQLite database file and its WAL, in MiB.
fn sqlite_mib(path: &Path) -> (f64, f64) {
    let size = |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    (size(path), size(Path::new(&wal)))
}

/// Scale mode: `backlog` jobs enqueued, then the first `jobs` of them processed.
async fn run_scale(target: &Target, app: Application, plan: Plan, backlog: usize) {
    let (name, jobs) = (target.name, plan.jobs);
    reset_peak_rss();
    let engine = engine(target.store.clone(), app);
    let queue = engine.queue("jobs").expect("queue");
    let memory_before = target
        .redis
        .as_deref()
        .map(|url| RedisStats::read(url).used_memory);
    let started = Instant::now();
    produce(&queue, backlog, plan.batch, plan.producers, Some(name)).await;
    let enqueue = started.elapsed();
    let enqueue_rss = peak_rss_mib();
    let memory_queued = target
        .redis
        .as_deref()
        .map(|url| RedisStats::read(url).used_memory);
    let file_queued = target.sqlite.as_deref().map(sqlite_mib);

    reset_peak_rss();
    let redis_before = target.redis.as_deref().map(RedisStats::read);
    callgrind("-z");
    let cpu_before = own_cpu_secs();
    let processing = Instant::now();
    let running = engine.start().await.expect("start");
    wait_for_succeeded(&target.store, jobs).await;
    let process = processing.elapsed();
    let own_cpu = own_cpu_secs() - cpu_before;
    callgrind("-d");
    let redis_after = target.redis.as_deref().map(RedisStats::read);
    running.shutdown().await;
    let process_rss = peak_rss_mib();

    println!(
        "{name:>6}: {backlog} queued at {:.0} jobs/s (peak RSS {enqueue_rss:.0} MiB) | the first {jobs} processed at {:.0} jobs/s (peak RSS {process_rss:.0} MiB while processing)",
        backlog as f64 / enqueue.as_secs_f64(),
        jobs as f64 / process.as_secs_f64(),
    );
    print_own_cpu(name, "while processing", own_cpu, jobs, process);
    if let (Some((file, wal)), Some(path)) = (file_queued, target.sqlite.as_deref()) {
        let (file_after, wal_after) = sqlite_mib(path);
        println!(
            "{name:>6}: database file {file:.1} MiB (+ WAL {wal:.1} MiB) with every job queued, {file_after:.1} MiB (+ WAL {wal_after:.1} MiB) after processing"
        );
    }
    if let (Some(before), Some(queued), Some(url)) =
        (memory_before, memory_queued, target.redis.as_deref())
    {
        let after = RedisStats::read(url).used_memory;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            " redis: used_memory {:.1} MiB before enqueue, {:.1} MiB with every job queued, {:.1} MiB after processing: {:.0} B per queued job",
            mib(before),
            mib(queued),
            mib(after),
            queued.saturating_sub(before) as f64 / backlog as f64,
        );
    }
    if let (Some(before), Some(after)) = (redis_before, redis_after) {
        print_redis_cpu("while processing", &before, &after, jobs, process);
        println!(
            " redis: while processing, {:.1} commands per processed job (INFO commandstats, those scripts run included), {:.2} script calls per processed job",
            (after.commands - before.commands) as f64 / jobs as f64,
            (after.script_calls - before.script_calls) as f64 / jobs as f64,
        );
    }
}

/// With `BENCH_CALLGRIND` set, runs `callgrind_control OP` (`-z` zeroes the counters, `-d` dumps
/// them): against a Redis run under `valgrind --tool=callgrind`, the dump holds the instructions
/// Redis spent processing, the same from run to run whatever else the machine is doing
/// (`scripts/redis-instructions.sh`). `BENCH_CALLGRIND=self` aims at this process alone, the bench
/// itself run under callgrind (`scripts/engine-instructions.sh`); otherwise every process under
/// callgrind is told.
fn callgrind(op: &str) {
    if let Some(which) = std::env::var_os("BENCH_CALLGRIND") {
        let mut command = std::process::Command::new("callgrind_control");
        command.arg(op);
        if which == "self" {
            command.arg(std::process::id().to_string());
        }
        let status = command.status().expect("callgrind_control");
        assert!(status.success(), "callgrind_control {op} failed");
    }
}

/// The number in environment variable `name`, or `default` when unset or not a number.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tokio runtime for `store`'s run: `BENCH_THREADS` worker threads, else one per core, but
/// against Redis one core is left to Redis (its one thread would otherwise share both cores
/// with the workers', as it would not on a host of its own).
fn runtime_for(store: &str, cores: usize) -> (tokio::runtime::Runtime, usize) {
    let threads = env_number(
        "BENCH_THREADS",
        if store == "redis" {
            cores.saturating_sub(1).max(1)
        } else {
            cores.max(1)
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    (runtime, threads)
}

/// `n` with a comma between each group of three digits.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn main() {
    let jobs: usize = env_number("BENCH_JOBS", 100_000);
    let stores: Vec<String> = std::env::var("BENCH_STORES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| vec!["memory".into(), "sqlite".into()]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency: usize = env_number("BENCH_CONCURRENCY", 256);
    let batch: usize = env_number("BENCH_BATCH", 1000usize).max(1);
    let producers: usize = env_number("BENCH_PRODUCERS", 4usize).max(1);
    let backlog: Option<usize> = std::env::var("BENCH_BACKLOG").ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("BENCH_BACKLOG={v}: a number of jobs"))
    });
    let mode = match (std::env::var("BENCH_MODE").as_deref(), backlog) {
        (Err(_) | Ok("backlog"), None) => Mode::Backlog,
        (Err(_) | Ok("backlog"), Some(backlog)) => Mode::Scale {
            backlog: backlog.max(jobs),
        },
        (Ok("live"), None) => Mode::Live,
        (Ok("live"), Some(_)) => {
            panic!("BENCH_BACKLOG is for the backlog mode, not BENCH_MODE=live")
        }
        (Ok(other), _) => panic!("BENCH_MODE={other}: `backlog` or `live`"),
    };
    let plan = Plan {
        jobs,
        batch,
        producers,
    };
    let manifest = MANIFEST.replace("CONCURRENCY", &concurrency.to_string());
    let source = raindrop_codegen::SourceFile::new("bench.manifest", &manifest);
    let app = raindrop_codegen::compile(&source)
        .application
        .expect("manifest");
    let batches = grouped(batch);
    match mode {
        Mode::Backlog => println!(
            "{cores} cores; {jobs} no-op jobs enqueued in batches of {batches}, concurrency {concurrency}"
        ),
        Mode::Live => println!(
            "{cores} cores; live: workers started, then {jobs} no-op jobs pushed in batches of {batches} by {producers} producers, concurrency {concurrency}"
        ),
        Mode::Scale { backlog } => println!(
            "{cores} cores; {backlog} no-op jobs enqueued in batches of {batches} by {producers} producers, then the first {jobs} processed, concurrency {concurrency}"
        ),
    }
    for store in &stores {
        let (runtime, threads) = runtime_for(store, cores);
        println!("{store:>6}: the bench process runs {threads} worker thread(s)");
        runtime.block_on(async {
            let url = std::env::var("BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let prefix = format!("rdbench-{}", std::process::id());
            let dir = tempfile::tempdir().expect("tempdir");
            let target = match store.as_str() {
                "memory" => Target {
                    name: "memory",
                    store: Arc::new(raindrop::store::memory::MemoryStore::new()),
                    redis: None,
                    sqlite: None,
                },
                "sqlite" => {
                    let path = dir.path().join("bench.db");
                    let sqlite = raindrop::store::sqlite::SqliteStore::open(&path).await.expect("sqlite");
                    Target { name: "sqlite", store: Arc::new(sqlite), redis: None, sqlite: Some(path) }
                }
                "redis" => {
                    let redis = raindrop::store::redis::RedisStore::open(&format!("{url}?prefix={prefix}")).await.expect("redis");
                    Target { name: "redis", store: Arc::new(redis), redis: Some(url.clone()), sqlite: None }
                }
                other => {
                    eprintln!("unknown store `{other}`");
                    return;
                }
            };
            let before = target.redis.as_deref().map(RedisStats::read);
            let peak_queued = match mode {
                Mode::Backlog => run_backlog(&target, app.clone(), plan).await,
                Mode::Live => {
                    run_live(&target, app.clone(), plan).await;
                    None
                }
                Mode::Scale { backlog } => {
                    run_scale(&target, app.clone(), plan, backlog).await;
                    None
                }
            };
            if let (Some(before), Mode::Backlog | Mode::Live) = (before, mode) {
                let after = RedisStats::read(&url);
                let memory = peak_queued.map_or(String::new(), |peak| {
                    format!(
                        "; memory of the queued jobs ≈ {:.1} MiB per 100,000",
                        peak.saturating_sub(before.used_memory) as f64 / (1 << 20) as f64 * 100_000.0 / jobs as f64,
                    )
                });
                println!(
                    " redis: {:.1} commands per job (INFO commandstats, those scripts run included), {:.2} script calls per job{memory}",
                    (after.commands - before.commands) as f64 / jobs as f64,
                    (after.script_calls - before.script_calls) as f64 / jobs as f64,
                );
            }
            if target.redis.is_some() {
                drop(target);
                support::remove_prefix(&url, &prefix);
            }
        });
    }
}
