//! Several processes on one SQLite file: a process that enqueues and processes is killed with
//! SIGKILL at random moments and restarted, several times — every enqueue it acknowledged must
//! still be there, and every job must finish; and two processes working one queue at once never
//! run the same job twice.
//!
//! The test runs itself as the child: `crash_child` does nothing unless `RAINDROP_CRASH_DB` is
//! set, in which case it is the process that gets killed.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use raindrop::engine::{Engine, Settings};
use raindrop::job::{JobState, Payload};
use raindrop::queue::SendOptions;
use raindrop::store::{JobFilter, Store};
use raindrop::task::{JobContext, TaskError, handler_fn};

mod support;
use support::app;

const MANIFEST: &str = r#"application "crash" {
  queue "jobs" {
    max_attempts = 50
    visibility_timeout = "500ms"
  }
  task "worker" {
    concurrency = 16
  }
  kv_cache "status" {}
  observer "monitor" {}
}"#;

async fn open(path: &str) -> Arc<dyn Store> {
    support::sqlite(path.as_ref()).await
}

/// The child: enqueues numbered jobs in batches and prints `ack FIRST LAST` once a batch is
/// committed, while its workers process them; in drain mode it only processes, until done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(path) = std::env::var("RAINDROP_CRASH_DB") else {
        return;
    };
    let first: u64 = std::env::var("RAINDROP_CRASH_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    let drain = std::env::var_os("RAINDROP_CRASH_DRAIN").is_some();
    let store = open(&path).await;
    // The kill test wants lapsed leases back fast; two live processes sharing the file want
    // leases longer than the write lock can keep one of them waiting.
    let lease = std::env::var("RAINDROP_CRASH_LEASE").unwrap_or_else(|_| "500ms".into());
    let manifest = MANIFEST.replace("\"500ms\"", &format!("\"{lease}\""));
    let engine = Engine::builder(app(&manifest))
        .store(store.clone())
        .settings(Settings {
            observer_tick: Duration::from_millis(50),
            idle_poll: Duration::from_millis(20),
            ..Settings::default()
        })
        .task(
            "worker",
            handler_fn(|_ctx: JobContext| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok::<_, TaskError>(())
            }),
        )
        .build()
        .unwrap();
    if std::env::var_os("RAINDROP_CRASH_GATE").is_some() {
        // Wait for the parent's go so that sibling processes start claiming together.
        println!("ready");
        // A pipe's stdout may be block-buffered: the parent must see this line now.
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    }
    let running = engine.start().await.unwrap();
    if drain {
        loop {
            let counts = store.counts().await.unwrap();
            let jobs = counts.get("jobs").cloned().unwrap_or_default();
            if jobs.waiting() + jobs.running == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.shutdown().await;
        println!("drained");
        return;
    }
    let queue = engine.queue("jobs").unwrap();
    let mut next = first;
    loop {
        let batch = (next..next + 50)
            .map(|n| (Payload::from_value(&n).unwrap(), SendOptions::default()))
            .collect();
        queue.send_batch(batch).await.unwrap();
        println!("ack {next} {}", next + 49);
        next += 50;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_kill_9_and_all_finish() {
    if std::env::var_os("RAINDROP_CRASH_DB").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db").display().to_string();
    let exe = std::env::current_exe().unwrap();
    let child = |first: u64, drain: bool| {
        let mut command = Command::new(&exe);
        command
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RAINDROP_CRASH_DB", &db)
            .env("RAINDROP_CRASH_FIRST", first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if drain {
            command.env("RAINDROP_CRASH_DRAIN", "1");
        }
        command.spawn().unwrap()
    };

    let mut acknowledged = BTreeSet::new();
    let mut next = 0;
    for round in 0..6 {
        let mut process = child(next, false);
        let stdout = BufReader::new(process.stdout.take().unwrap());
        let kill_after = Duration::from_millis(150 + fastrand::u64(0..400));
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Some(range) = line.strip_prefix("ack ") {
                    let (a, b) = range.split_once(' ').unwrap();
                    acks.push((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
                }
            }
            acks
        });
        std::thread::sleep(kill_after);
        process.kill().unwrap(); // SIGKILL
        process.wait().unwrap();
        let acks = reader.join().unwrap();
        assert!(
            !acks.is_empty() || round > 0,
            "the child acknowledged nothing in {kill_after:?}"
        );
        for (a, b) in acks {
            acknowledged.extend(a..=b);
            next = next.max(b + 1);
        }
        // The next run numbers its jobs after anything this one may have committed unseen.
        next += 10_000;
    }

    let mut drain = child(0, true);
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || drain.wait()),
    )
    .await
    .expect("the drain run finishes")
    .unwrap()
    .unwrap();
    assert!(status.success(), "the drain run failed: {status}");

    let store = open(&db).await;
    let mut stored = BTreeSet::new();
    let mut unfinished = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&JobFilter::default(), after, 1000)
            .await
            .unwrap();
        for job in &page.items {
            stored.insert(job.payload.parse::<u64>().unwrap());
            if job.state != JobState::Succeeded {
                unfinished.push((job.id, job.state));
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged jobs lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(unfinished.is_empty(), "jobs did not finish: {unfinished:?}");
    assert!(
        acknowledged.len() >= 100,
        "too few jobs to mean anything: {}",
        acknowledged.len()
    );
    eprintln!(
        "{} acknowledged, {} stored, all succeeded after 6 kills",
        acknowledged.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_file_without_running_a_job_twice() {
    if std::env::var_os("RAINDROP_CRASH_DB").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db").display().to_string();
    {
        let store = open(&db).await;
        let jobs = (0..3000u64)
            .map(|n| raindrop::job::NewJob::new("jobs", "n", Payload::from_value(&n).unwrap()))
            .collect();
        store.enqueue(jobs, raindrop::job::now()).await.unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RAINDROP_CRASH_DB", &db)
            .env("RAINDROP_CRASH_FIRST", "0")
            .env("RAINDROP_CRASH_DRAIN", "1")
            .env("RAINDROP_CRASH_GATE", "1")
            .env("RAINDROP_CRASH_LEASE", "10s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    let both = tokio::task::spawn_blocking(move || {
        // Both processes have opened the file and built their engines before either claims:
        // otherwise a process that starts slowly on a loaded machine finds the queue drained.
        let mut outputs: Vec<_> = [&mut a, &mut b]
            .into_iter()
            .map(|child| {
                let mut out = BufReader::new(child.stdout.take().unwrap());
                let mut line = String::new();
                // The harness prints `test crash_child ... ` before the child's own output.
                while !line.trim_end().ends_with("ready") {
                    line.clear();
                    assert!(
                        out.read_line(&mut line).unwrap() > 0,
                        "child exited before ready"
                    );
                }
                out
            })
            .collect();
        for child in [&mut a, &mut b] {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"go\n").unwrap();
        }
        // Drain what the children print so that neither blocks on a full pipe.
        for out in &mut outputs {
            std::io::copy(out, &mut std::io::sink()).unwrap();
        }
        (a.wait().unwrap(), b.wait().unwrap())
    });
    let (a, b) = tokio::time::timeout(Duration::from_secs(120), both)
        .await
        .expect("both processes finish")
        .unwrap();
    assert!(a.success() && b.success(), "{a} {b}");

    let store = open(&db).await;
    let mut workers = BTreeSet::new();
    let mut after = None;
    let mut seen = 0;
    loop {
        let page = store
            .list(&JobFilter::default(), after, 1000)
            .await
            .unwrap();
        for job in &page.items {
            seen += 1;
            assert_eq!(job.state, JobState::Succeeded, "{job:?}");
            assert_eq!(job.attempt, 1, "job {} ran {} times", job.id, job.attempt);
            workers.insert(job.attempts[0].worker.clone());
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, 3000);
    assert_eq!(workers.len(), 2, "both processes took jobs: {workers:?}");
}
