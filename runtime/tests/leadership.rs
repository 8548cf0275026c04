//! One observer process of an application publishes the queue gauges at a time: two observer
//! processes on one SQLite file, each scraped on its own, and only the one holding the lead has
//! `raindrop_queue_jobs` and `raindrop_queue_oldest_ready_age_seconds`; killed, its lead passes
//! to the other within the lease (three observer ticks).
//!
//! The test runs itself as the child: `leadership_child` does nothing unless `RAINDROP_LEAD_DB`
//! is set, in which case it is an observer process that prints its Prometheus exposition (its
//! sample lines, each after `metric `, then `end`) for each line it reads on stdin.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use raindrop::engine::{Engine, Roles, Settings};
use raindrop::job::{NewJob, Payload, now};

mod support;
use support::{app, succeed};

const TICK: Duration = Duration::from_millis(100);

/// `seen` fires on the monitor's first measurement (a depth below a million): its series in a
/// scrape says the monitor has measured, and so has tried for the lead, at least once.
const MANIFEST: &str = r#"application "lead" {
  queue "jobs" {}
  task "worker" {}
  observer "monitor" {
    alert "seen" {
      metric     = "queue_depth"
      comparison = "below"
      threshold  = 1000000
    }
  }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_child() {
    let Ok(path) = std::env::var("RAINDROP_LEAD_DB") else {
        return;
    };
    let handle = raindrop::operations::prometheus().unwrap();
    let store = support::sqlite(path.as_ref()).await;
    let engine = Engine::builder(app(MANIFEST))
        .store(store)
        .settings(Settings {
            roles: Roles {
                workers: false,
                ..Roles::ALL
            },
            observer_tick: TICK,
            ..Settings::default()
        })
        .task("worker", succeed())
        .build()
        .unwrap();
    let _running = engine.start().await.unwrap();
    tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        // On a line of its own: the test harness may have left its own line open.
        out.write_all(b"\nready\n").unwrap();
        out.flush().unwrap();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
            let mut text = String::new();
            for sample in handle.render().lines().filter(|l| !l.starts_with('#')) {
                text.push_str(&format!("metric {sample}\n"));
            }
            text.push_str("end\n");
            out.write_all(text.as_bytes()).unwrap();
            out.flush().unwrap();
        }
    })
    .await
    .unwrap();
}

/// An observer process and the pipes to scrape it.
struct Observer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Observer {
    fn start(db: &std::path::Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "leadership_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RAINDROP_LEAD_DB", db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the observer process ended"
            );
            if line.trim_end() == "ready" {
                break;
            }
        }
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The sample lines of one scrape.
    fn scrape(&mut self) -> Vec<String> {
        self.stdin.write_all(b"scrape\n").unwrap();
        self.stdin.flush().unwrap();
        let mut samples = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the observer process ended"
            );
            let line = line.trim_end();
            if line == "end" {
                return samples;
            }
            if let Some(sample) = line.strip_prefix("metric ") {
                samples.push(sample.to_owned());
            }
        }
    }

    /// Scrapes until `done` holds for a scrape (then returns it), or panics after `within`.
    fn scrape_until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let samples = self.scrape();
            if done(&samples) {
                return samples;
            }
            assert!(
                Instant::now() < deadline,
                "{what}; last scrape: {samples:#?}"
            );
            std::thread::sleep(TICK / 4);
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_gauges(samples: &[String]) -> bool {
    samples.iter().any(|s| {
        s.starts_with("raindrop_queue_jobs{") || s.starts_with("raindrop_queue_oldest_ready_age")
    })
}

fn has_measured(samples: &[String]) -> bool {
    samples
        .iter()
        .any(|s| s.starts_with("raindrop_alert_firing{") && s.ends_with(" 1"))
}

const QUEUED: &str = r#"raindrop_queue_jobs{queue="jobs",state="queued"} 2"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_observer_process_publishes_the_queue_gauges_and_a_survivor_takes_over() {
    if std::env::var_os("RAINDROP_LEAD_DB").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lead.db");
    {
        let store = support::sqlite(&db).await;
        let jobs = (0..2)
            .map(|i| NewJob::new("jobs", "worker", Payload::from_value(&i).unwrap()))
            .collect();
        store.enqueue(jobs, now()).await.unwrap();
    }
    tokio::task::spawn_blocking(move || {
        let mut first = Observer::start(&db);
        first.scrape_until(Duration::from_secs(20), "the first observer leads", |s| {
            s.iter().any(|l| l == QUEUED)
        });

        let mut second = Observer::start(&db);
        let measured = second.scrape_until(
            Duration::from_secs(20),
            "the second observer measures",
            has_measured,
        );
        assert!(
            !has_gauges(&measured),
            "a second observer publishes no queue gauges: {measured:#?}"
        );
        // Several more of its ticks: still the first's.
        for _ in 0..5 {
            std::thread::sleep(TICK);
            let samples = second.scrape();
            assert!(!has_gauges(&samples), "{samples:#?}");
            assert!(has_gauges(&first.scrape()), "the first keeps publishing");
        }

        first.child.kill().unwrap();
        first.child.wait().unwrap();
        let killed = Instant::now();
        let took_over = second.scrape_until(
            Duration::from_secs(10),
            "the survivor takes the gauges over",
            |s| s.iter().any(|l| l == QUEUED),
        );
        // The lease is three ticks (300 ms); allow the survivor's tick and a loaded machine.
        let after = killed.elapsed();
        assert!(
            after < Duration::from_secs(3),
            "took {after:?} to take over"
        );
        assert!(
            took_over
                .iter()
                .any(|l| l.starts_with(r#"raindrop_queue_oldest_ready_age_seconds{queue="jobs"}"#)),
            "{took_over:#?}"
        );
    })
    .await
    .unwrap();
}
