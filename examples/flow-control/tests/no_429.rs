//! The example end to end, as its README says to run it: 40 calls submitted at once over HTTP
//! to 32 workers, and the stand-in partner API (15 requests a second at most) never answers
//! 429, because the `calls` queue starts at most 10 jobs a second; and syncs of one account
//! never run more than two at once while another account's go by.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The example on an SQLite file in `dir`; killed when dropped.
struct Example {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Example {
    fn start(dir: &std::path::Path) -> Self {
        let store = format!("sqlite:{}", dir.join("jobs.db").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_example-flow-control"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--store", &store])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = lines
            .next()
            .expect("the example prints what it runs")
            .unwrap();
        let address = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .to_owned();
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
        }
    }

    async fn submit(&self, queue: &str, payload: Value) -> String {
        let response = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .json(&json!({ "queue": queue, "payload": payload }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, id: &str) -> Value {
        let url = format!("{}/v1/jobs/{id}", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every job of `ids` once all have finished (bounded).
    async fn finished(&self, ids: &[String]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut jobs = Vec::new();
            for id in ids {
                jobs.push(self.job(id).await);
            }
            let done = jobs.iter().all(|job| {
                matches!(
                    job["state"].as_str(),
                    Some("succeeded" | "dead" | "cancelled")
                )
            });
            if done {
                return jobs;
            }
            assert!(Instant::now() < deadline, "not all finished: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn millis(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_calls_never_hear_429_and_an_account_runs_two_syncs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let example = Example::start(dir.path());
    let mut calls = Vec::new();
    for n in 0..40 {
        calls.push(example.submit("calls", json!({ "n": n })).await);
    }
    let mut syncs = Vec::new();
    for n in 0..6 {
        syncs.push(example.submit("syncs", json!({ "account": "acme" })).await);
        if n < 2 {
            syncs.push(
                example
                    .submit("syncs", json!({ "account": "globex" }))
                    .await,
            );
        }
    }
    let started = Instant::now();
    let calls = example.finished(&calls).await;
    let elapsed = started.elapsed();
    for call in &calls {
        assert_eq!(call["state"], "succeeded", "{call}");
        assert_eq!(call["attempt"], 1, "no call was retried: {call}");
        let result = call["result"].as_str().unwrap();
        assert!(result.contains("answered 200 OK"), "{result}");
    }
    let last = calls
        .iter()
        .filter_map(|c| c["result"].as_str())
        .find(|r| r.contains("answered 40 calls"))
        .map(str::to_owned);
    assert!(
        calls
            .iter()
            .all(|c| c["result"].as_str().unwrap().ends_with("refused 0")),
        "the partner refused a call: {last:?}"
    );
    // 40 calls at 10 a second after a burst of 2: at least 3.8 s.
    assert!(elapsed >= Duration::from_millis(3_700), "{elapsed:?}");

    let syncs = example.finished(&syncs).await;
    let mut acme: Vec<(i64, i64)> = Vec::new();
    for sync in &syncs {
        assert_eq!(sync["state"], "succeeded", "{sync}");
        if sync["result"] == "synced acme" {
            let attempt = &sync["attempts"][0];
            acme.push((
                millis(&attempt["started_at"]),
                millis(&attempt["finished_at"]),
            ));
        }
    }
    assert_eq!(acme.len(), 6);
    // Started, for the store, at most two at a time: the third start comes after an end.
    let mut edges: Vec<(i64, i32)> = acme.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    edges.sort_unstable();
    let mut running = 0;
    let mut peak = 0;
    for (_, step) in edges {
        running += step;
        peak = peak.max(running);
    }
    assert!(peak <= 2, "acme ran {peak} syncs at once");
}
