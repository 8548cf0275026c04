//! Engine throughput: enqueue N no-op jobs in batches, process them with concurrency 256 (set
//! `BENCH_CONCURRENCY`), per store; against Redis the bench leaves Redis a core (set
//! `BENCH_THREADS` for the bench's worker threads). Prints enqueue and processing rates,
//! enqueue→finish latency percentiles, peak RSS and the CPU each side used per job.
//!
//! `cargo bench -p raindrop --bench throughput` (N defaults to 100,000; set `BENCH_JOBS`).

#[path = "support/redis.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use raindrop::engine::{Engine, Roles, Settings};
use raindrop::job::Payload;
use raindrop::queue::SendOptions;
use raindrop::store::{JobFilter, Store};
use raindrop::task::{JobContext, TaskError, handler_fn};

const MANIFEST: &str = r#"application "bench" {
  queue "jobs" {}
  task "worker" {
    concurrency = CONCURRENCY
  }
  kv_cache "status" {}
}"#;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user and system) this process has used, in seconds (`/proc/self/stat`, ticks of
/// 10 ms: enough over a run of seconds).
fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15: indices 11 and 12 counting from state.
    (ticks(11) + ticks(12)) / 100.0
}

fn reset_peak_rss() {
    // Linux: writing 5 resets the peak resident set size to the current one.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn run(name: &str, store: Arc<dyn Store>, app: raindrop::manifest::Application, jobs: usize) {
    reset_peak_rss();
    let engine = Engine::builder(app)
        .store(store.clone())
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
        .expect("engine");
    let queue = engine.queue("jobs").expect("queue");

    let started = Instant::now();
    for chunk in 0..jobs.div_ceil(1000) {
        let n = 1000.min(jobs - chunk * 1000);
        let batch = (0..n)
            .map(|i| {
                (
                    Payload::from_value(&i).expect("payload"),
                    SendOptions::default(),
                )
            })
            .collect();
        queue.send_batch(batch).await.expect("enqueue");
    }
    let enqueue = started.elapsed();
    if name == "redis" {
        let url = std::env::var("BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        PEAK_QUEUED.store(
            RedisStats::read(&url).used_memory,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    let redis_url = (name == "redis")
        .then(|| std::env::var("BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()));
    let redis_before = redis_url.as_deref().map(RedisStats::read);
    callgrind("-z");
    let cpu_before = own_cpu_secs();
    let processing = Instant::now();
    let running = engine.start().await.expect("start");
    // Poll the counts: following every event would cost the engine more than it measures.
    loop {
        let counts = store.counts().await.expect("counts");
        if counts.get("jobs").map_or(0, |c| c.succeeded) as usize >= jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let process = processing.elapsed();
    let own_cpu = own_cpu_secs() - cpu_before;
    callgrind("-d");
    let redis_after = redis_url.as_deref().map(RedisStats::read);
    running.shutdown().await;

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
    println!(
        "{name:>6}: {jobs} jobs | enqueue {:>9.0} jobs/s | processed {:>9.0} jobs/s | enqueue→finish p50 {} ms, p99 {} ms | peak RSS {:.0} MiB",
        jobs as f64 / enqueue.as_secs_f64(),
        jobs as f64 / process.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        peak_rss_mib(),
    );
    println!(
        "{name:>6}: while processing, this process used {:.1} µs of CPU per job ({:.2} of {} cores)",
        own_cpu * 1e6 / jobs as f64,
        own_cpu / process.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if let (Some(before), Some(after)) = (redis_before, redis_after) {
        println!(
            " redis: while processing, {:.1} µs of Redis CPU per job ({:.1} µs in scripts, INFO commandstats), Redis {:.0}% of a core",
            (after.cpu_secs - before.cpu_secs) * 1e6 / jobs as f64,
            (after.script_usec - before.script_usec) as f64 / jobs as f64,
            (after.cpu_secs - before.cpu_secs) / process.as_secs_f64() * 100.0,
        );
    }
}

/// With `BENCH_CALLGRIND` set, runs `callgrind_control OP` (`-z` zeroes the counters, `-d` dumps
/// them): against a Redis run under `valgrind --tool=callgrind`, the dump holds the instructions
/// Redis spent processing, the same from run to run whatever else the machine is doing
/// (`scripts/redis-instructions.sh`).
fn callgrind(op: &str) {
    if std::env::var_os("BENCH_CALLGRIND").is_some() {
        let status = std::process::Command::new("callgrind_control")
            .arg(op)
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {op} failed");
    }
}

/// Redis's memory with every bench job queued, in bytes.
static PEAK_QUEUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counters from `INFO commandstats` and `INFO memory`.
struct RedisStats {
    /// Every command executed, the ones scripts run included.
    commands: u64,
    /// Script calls (EVALSHA).
    script_calls: u64,
    used_memory: u64,
    /// Time spent in scripts (EVALSHA), in microseconds.
    script_usec: u64,
    /// Redis's CPU time (user and system), in seconds.
    cpu_secs: f64,
}

impl RedisStats {
    fn read(url: &str) -> Self {
        let mut conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("redis");
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .expect("info");
        let memory: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut conn)
            .expect("info");
        let cpu: String = redis::cmd("INFO")
            .arg("cpu")
            .query(&mut conn)
            .expect("info");
        let field = |rest: &str, name: &str| -> u64 {
            rest.split(',')
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let calls = |rest: &str| field(rest, "calls=");
        let mut commands = 0;
        let mut script_calls = 0;
        let mut script_usec = 0;
        for line in stats.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            commands += calls(rest);
            if name == "evalsha" {
                script_calls += calls(rest);
                script_usec += field(rest, "usec=");
            }
        }
        let used_memory = memory
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let cpu_secs = cpu
            .lines()
            .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
            .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
            .sum();
        Self {
            commands,
            script_calls,
            used_memory,
            script_usec,
            cpu_secs,
        }
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

fn main() {
    let jobs: usize = env_number("BENCH_JOBS", 100_000);
    let stores: Vec<String> = std::env::var("BENCH_STORES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| vec!["memory".into(), "sqlite".into()]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency: usize = env_number("BENCH_CONCURRENCY", 256);
    let manifest = MANIFEST.replace("CONCURRENCY", &concurrency.to_string());
    let source = raindrop_codegen::SourceFile::new("bench.manifest", &manifest);
    let app = raindrop_codegen::compile(&source)
        .application
        .expect("manifest");
    println!(
        "{cores} cores; {jobs} no-op jobs enqueued in batches of 1,000, concurrency {concurrency}"
    );
    for store in &stores {
        let (runtime, threads) = runtime_for(store, cores);
        println!("{store:>6}: the bench process runs {threads} worker thread(s)");
        runtime.block_on(async {
            match store.as_str() {
                "memory" => run("memory", Arc::new(raindrop::store::memory::MemoryStore::new()), app.clone(), jobs).await,
                "sqlite" => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let sqlite = raindrop::store::sqlite::SqliteStore::open(&dir.path().join("bench.db")).await.expect("sqlite");
                    run("sqlite", Arc::new(sqlite), app.clone(), jobs).await;
                }
                "redis" => {
                    let url = std::env::var("BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                    let prefix = format!("rdbench-{}", std::process::id());
                    let redis = raindrop::store::redis::RedisStore::open(&format!("{url}?prefix={prefix}")).await.expect("redis");
                    let before = RedisStats::read(&url);
                    run("redis", Arc::new(redis), app.clone(), jobs).await;
                    let after = RedisStats::read(&url);
                    println!(
                        " redis: {:.1} commands per job (INFO commandstats, those scripts run included), {:.2} script calls per job; memory of the queued jobs ≈ {:.1} MiB per 100,000",
                        (after.commands - before.commands) as f64 / jobs as f64,
                        (after.script_calls - before.script_calls) as f64 / jobs as f64,
                        PEAK_QUEUED.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before.used_memory) as f64 / (1 << 20) as f64 * 100_000.0 / jobs as f64,
                    );
                    support::remove_prefix(&url, &prefix);
                }
                other => eprintln!("unknown store `{other}`"),
            }
        });
    }
}
