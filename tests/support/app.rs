//! The seed binary as a test fixture: start it with a role, a store and a manifest, talk to it
//! over HTTP, signal it; it is killed when dropped.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test binary uses a part of it

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running application process; killed when dropped.
pub struct App {
    pub child: Child,
    pub base: String,
    pub operations: String,
    pub http: reqwest::Client,
}

impl App {
    /// Starts the seed binary with one role against `store`, with `manifest` written to `dir`
    /// (once). `base` is the job API of `all` and `service`, the operations listener
    /// (`/metrics`, `/healthz`, `/readyz`) of the other roles; `operations` is the latter's
    /// address for every role.
    pub fn launch(dir: &Path, role: &str, store: &str, manifest: &str) -> Self {
        let path = dir.join("raindrop.manifest");
        if !path.exists() {
            std::fs::write(&path, manifest).unwrap();
        }
        let manifest = path;
        let mut child = Command::new(env!("CARGO_BIN_EXE_background-processor"))
            .args(["--role", role, "--listen", "127.0.0.1:0", "--store", store])
            // Processes of one test (and tests run at once) each get a port of their own.
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RAINDROP_MANIFEST", &manifest)
            .env("RAINDROP_OUTBOX", dir.join("outbox"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Owned from here on, so the process is killed even if starting it fails below.
        let mut app = Self {
            child,
            base: String::new(),
            operations: String::new(),
            http: reqwest::Client::new(),
        };
        let mut lines = BufReader::new(stdout).lines();
        let banner = lines.next().expect("the app prints what it runs").unwrap();
        if let Some(address) = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            app.base = format!("http://{address}");
        }
        if let Some(address) = banner
            .split("metrics on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
        {
            app.operations = format!("http://{address}");
        }
        std::thread::spawn(move || for _ in lines {});
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn submit(&self, payload: Value) -> String {
        self.submit_with(json!({ "payload": payload })).await
    }

    pub async fn submit_with(&self, body: Value) -> String {
        let (status, body) = self.post("/v1/jobs", body).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Polls the job's status until `done` holds (bounded; the job runs in another process).
    pub async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not get there: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn finished(&self, id: &str) -> Value {
        self.wait_for(id, |job| {
            matches!(
                job["state"].as_str(),
                Some("succeeded" | "dead" | "cancelled")
            )
        })
        .await
    }

    pub fn signal(&mut self, signal: &str) {
        Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
