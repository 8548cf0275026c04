//! Flow control across processes: three worker processes share one store (a Redis, or one
//! SQLite file) and two queues, one with a `rate_limit`, one with a keyed `concurrency_limit`. Measured with the handlers' own
//! clocks (every process runs on this machine), the rate-limited queue never starts more jobs
//! in a second than its bucket allows, and no key ever runs more jobs at once than its limit.
//! One process is killed with SIGKILL while its jobs run and another takes its place: the
//! killed process's slots come back when its leases lapse, every job finishes and none is left
//! counted as running.
//!
//! The test runs itself as the child: `flow_child` does nothing unless `RAINDROP_FLOW_STORE` is
//! set, in which case it is one of the worker processes.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raindrop::engine::{Engine, Settings};
use raindrop::job::{JobState, Payload};
use raindrop::queue::SendOptions;
use raindrop::store::JobFilter;
use raindrop::task::{JobContext, TaskError, handler_fn};
use redis_support::Prefix;
use support::app;

/// Starts per second in the long run, and at once after a quiet spell.
const RATE: u64 = 20;
const BURST: u64 = 5;
/// Jobs of one account running at once.
const PER_ACCOUNT: usize = 2;

const MANIFEST: &str = r#"application "flow" {
  queue "calls" {
    rate_limit {
      jobs  = 20
      per   = "1s"
      burst = 5
    }
  }
  queue "accounts" {
    visibility_timeout = "1s"
    concurrency_limit {
      max = 2
      key = "payload.account"
    }
  }
  task "caller" {
    queue       = "calls"
    concurrency = 8
  }
  task "worker" {
    queue       = "accounts"
    concurrency = 8
  }
  kv_cache "status" {}
  observer "monitor" {}
}"#;

fn millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A worker process: both pools, handlers that record when they ran (ms since the epoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_child() {
    let Ok(url) = std::env::var("RAINDROP_FLOW_STORE") else {
        return;
    };
    let store = open(&url).await;
    let record = |ms: u64| {
        handler_fn(move |ctx: JobContext| async move {
            let start = millis();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let payload: serde_json::Value = ctx.payload()?;
            Ok::<_, TaskError>(serde_json::json!({
                "start": start,
                "end": millis(),
                "account": payload["account"],
            }))
        })
    };
    let engine = Engine::builder(app(MANIFEST))
        .store(store)
        .settings(Settings {
            observer_tick: Duration::from_millis(100),
            idle_poll: Duration::from_millis(50),
            ..Settings::default()
        })
        .task("caller", record(1))
        .task("worker", record(40))
        .build()
        .unwrap();
    let _running = engine.start().await.unwrap();
    println!("ready");
    std::future::pending::<()>().await;
}

/// The store at `url`: `sqlite:PATH`, else a Redis URL.
async fn open(url: &str) -> std::sync::Arc<dyn raindrop::store::Store> {
    match url.strip_prefix("sqlite:") {
        Some(path) => support::sqlite(path.as_ref()).await,
        None => support::redis(url).await,
    }
}

/// A worker process on the store at `url`, once it says it is ready.
fn spawn(url: &str) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "flow_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("RAINDROP_FLOW_STORE", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.trim_end().ends_with("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited first");
    }
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

/// One run of a job: when it ran by its handler's clock, its account, when it was claimed.
struct Run {
    start: u64,
    end: u64,
    account: String,
    claimed: u64,
}

/// The runs of the jobs of `queue`, each of which must have succeeded.
async fn runs(store: &std::sync::Arc<dyn raindrop::store::Store>, queue: &str) -> Vec<Run> {
    let filter = JobFilter {
        queues: vec![queue.into()],
        ..JobFilter::default()
    };
    let mut runs = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&filter, after, 500).await.unwrap();
        for job in &page.items {
            assert_eq!(job.state, JobState::Succeeded, "{job:?}");
            let result: serde_json::Value =
                serde_json::from_str(job.result.as_ref().unwrap().as_str()).unwrap();
            let attempt = job.attempts.last().unwrap();
            runs.push(Run {
                start: result["start"].as_u64().unwrap(),
                end: result["end"].as_u64().unwrap(),
                account: result["account"].to_string(),
                claimed: attempt.started_at.timestamp_millis() as u64,
            });
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return runs,
        }
    }
}

/// The most runs of one account that overlapped, by their handlers' clocks, per account.
fn peak_per_account(runs: &[Run]) -> BTreeMap<String, usize> {
    let mut edges: BTreeMap<&str, Vec<(u64, i32)>> = BTreeMap::new();
    for run in runs {
        let e = edges.entry(&run.account).or_default();
        e.push((run.start, 1));
        e.push((run.end, -1));
    }
    edges
        .into_iter()
        .map(|(account, mut e)| {
            // Ends before starts at the same millisecond: touching runs do not overlap.
            e.sort_unstable();
            let (mut now, mut peak) = (0i32, 0i32);
            for (_, step) in e {
                now += step;
                peak = peak.max(now);
            }
            (account.to_owned(), peak as usize)
        })
        .collect()
}

/// The most jobs claimed (started, for the store) in any window of `window_ms`.
fn peak_starts(runs: &[Run], window_ms: u64) -> usize {
    let mut starts: Vec<u64> = runs.iter().map(|r| r.claimed).collect();
    starts.sort_unstable();
    let mut peak = 0;
    let mut first = 0;
    for (i, &at) in starts.iter().enumerate() {
        while at - starts[first] >= window_ms {
            first += 1;
        }
        peak = peak.max(i - first + 1);
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_redis_keep_a_queues_rate_and_a_keys_concurrency_limit() {
    if std::env::var_os("RAINDROP_FLOW_STORE").is_some() {
        return;
    }
    let Some(url) = redis_support::available() else {
        return;
    };
    let prefix = Prefix::new(&url);
    three_processes_keep_their_limits(prefix.store_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_sqlite_file_keep_a_queues_rate_and_a_keys_concurrency_limit() {
    if std::env::var_os("RAINDROP_FLOW_STORE").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("flow.db").display());
    three_processes_keep_their_limits(&url).await;
}

/// Three worker processes on the store at `url` (one killed and replaced), measured.
async fn three_processes_keep_their_limits(url: &str) {
    let store = open(url).await;
    let engine = Engine::builder(app(MANIFEST))
        .store(store.clone())
        .task("caller", support::succeed())
        .task("worker", support::succeed())
        .build()
        .unwrap();
    // 60 calls (3 s at 20/s after the burst); 120 jobs over 4 accounts, 40 ms each: at two
    // per account at once, at least 0.6 s of work, whatever the processes' concurrency.
    let calls: Vec<_> = (0..60)
        .map(|n| {
            let payload = serde_json::json!({ "n": n });
            (
                Payload::from_value(&payload).unwrap(),
                SendOptions::default(),
            )
        })
        .collect();
    engine
        .queue("calls")
        .unwrap()
        .send_batch(calls)
        .await
        .unwrap();
    let jobs: Vec<_> = (0..120)
        .map(|n| {
            let payload = serde_json::json!({ "n": n, "account": format!("acct-{}", n % 4) });
            (
                Payload::from_value(&payload).unwrap(),
                SendOptions::default(),
            )
        })
        .collect();
    engine
        .queue("accounts")
        .unwrap()
        .send_batch(jobs)
        .await
        .unwrap();
    let started = std::time::Instant::now();

    let url = url.to_owned();
    let mut children = tokio::task::spawn_blocking(move || {
        let mut children: Vec<Child> = (0..3).map(|_| spawn(&url)).collect();
        // One process dies with its jobs running; another takes its place.
        std::thread::sleep(Duration::from_millis(300));
        children[0].kill().unwrap();
        children[0].wait().unwrap();
        children[0] = spawn(&url);
        children
    })
    .await
    .unwrap();

    let done = async {
        loop {
            let counts = store.counts().await.unwrap();
            let finished = ["calls", "accounts"].iter().all(|q| {
                let c = counts.get(*q).cloned().unwrap_or_default();
                c.waiting() + c.running == 0
            });
            if finished {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("every job finishes");
    let elapsed = started.elapsed();
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let calls = runs(&store, "calls").await;
    assert_eq!(calls.len(), 60);
    let per_second = peak_starts(&calls, 1000);
    // A bucket of 5 refilled at 20/s starts at most 25 in a second by the bucket's clock
    // (Redis's; on SQLite, each claimer's, which is this machine's). A start's time here is
    // read by the claiming process before its claim runs in the store: on a loaded machine up
    // to ~100 ms earlier, in which two more tokens come.
    let allowed = (BURST + RATE * 1100 / 1000) as usize;
    assert!(
        per_second <= allowed,
        "{per_second} calls started within one second; the bucket allows {allowed}"
    );
    assert!(
        elapsed >= Duration::from_millis((60 - BURST) * 1000 / RATE),
        "60 calls at 20/s after a burst of 5 took {elapsed:?}"
    );

    let accounts = runs(&store, "accounts").await;
    assert_eq!(accounts.len(), 120);
    let peaks = peak_per_account(&accounts);
    assert_eq!(peaks.len(), 4, "{peaks:?}");
    assert!(
        peaks.values().all(|&peak| peak <= PER_ACCOUNT),
        "peak running per account: {peaks:?}"
    );
    // The killed process's slots were not leaked: with everything finished, a new job of
    // each account starts at once.
    let more: Vec<_> = (0..4)
        .map(|n| {
            let payload = serde_json::json!({ "account": format!("acct-{n}") });
            (
                Payload::from_value(&payload).unwrap(),
                SendOptions::default(),
            )
        })
        .collect();
    engine
        .queue("accounts")
        .unwrap()
        .send_batch(more)
        .await
        .unwrap();
    let limits = raindrop::store::ClaimLimits {
        running_per_key: Some(PER_ACCOUNT as u32),
        ..Default::default()
    };
    let claimed = store
        .claim_with(
            "accounts",
            "check",
            10,
            Duration::from_secs(5),
            limits,
            raindrop::job::now(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4, "every account has its slots back");
    println!(
        "calls: peak {per_second} starts in a second (allowed {allowed}); accounts: peaks {peaks:?}; {elapsed:?}"
    );
}
