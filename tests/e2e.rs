//! The seed application end to end: the real binary, over HTTP, on an SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// The seed's blocks with settings that make retries and recovery fast enough to test.
const MANIFEST: &str = r#"application "background_processor" {
  service "job_api" {
    max_body = "4KiB"
  }
  queue "job_queue" {
    max_message_size   = "2KiB"
    max_attempts       = 3
    visibility_timeout = "1s"
    backoff {
      initial = "100ms"
      max     = "400ms"
      jitter  = 0
    }
  }
  task "job_worker" {
    concurrency = 4
  }
  kv_cache "job_status" {}
  observer "job_monitor" {}
}
"#;

#[path = "support/app.rs"]
mod support;
use support::App as Process;

/// The seed application on an SQLite file in `dir`.
struct App;

impl App {
    fn start(dir: &Path) -> Process {
        Self::start_as(dir, "all")
    }

    fn start_as(dir: &Path, role: &str) -> Process {
        let store = format!("sqlite:{}", dir.join("jobs.db").display());
        Process::launch(dir, role, &store, MANIFEST)
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test]
async fn a_report_job_succeeds_with_its_result() {
    let dir = scratch();
    let app = App::start(dir.path());
    let id = app
        .submit(json!({ "type": "report", "title": "q3", "values": [4, 8, 15, 16, 23, 42] }))
        .await;
    let job = app.finished(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["kind"], "report", "a job's kind is its type");
    assert_eq!(job["result"]["sum"], 108.0);
    assert_eq!(job["result"]["mean"], 18.0);
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_notification_lands_in_the_outbox() {
    let dir = scratch();
    let app = App::start(dir.path());
    let id = app
        .submit(
            json!({ "type": "notify", "to": "ada@example.com", "subject": "hi", "body": "done" }),
        )
        .await;
    let job = app.finished(&id).await;
    let path = PathBuf::from(job["result"]["outbox"].as_str().unwrap());
    let written: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(written["to"], "ada@example.com");
}

#[tokio::test]
async fn a_failing_job_retries_with_backoff_then_dead_letters_and_a_retry_succeeds() {
    let dir = scratch();
    let app = App::start(dir.path());
    let id = app
        .submit(json!({ "type": "flaky", "fail_times": 3 }))
        .await;
    let job = app.finished(&id).await;
    assert_eq!(job["state"], "dead");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    for (n, minimum) in [(1, 100), (2, 200)] {
        let gap = time(&attempts[n]["started_at"]) - time(&attempts[n - 1]["finished_at"]);
        assert!(
            gap.num_milliseconds() >= minimum,
            "attempt {} came after {gap}",
            n + 1
        );
    }
    let (_, dead) = app.get("/v1/dead-letters").await;
    assert!(
        dead["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );

    let (status, _) = app
        .post(&format!("/v1/dead-letters/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 202);
    let job = app.finished(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["succeeded_on_run"], 4);
}

#[tokio::test]
async fn a_delayed_job_does_not_run_early() {
    let dir = scratch();
    let app = App::start(dir.path());
    let id = app
        .submit_with(json!({ "payload": { "type": "sleep", "ms": 0 }, "delay_ms": 600 }))
        .await;
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "scheduled");
    let job = app.finished(&id).await;
    let time = |k: &str| chrono::DateTime::parse_from_rfc3339(job[k].as_str().unwrap()).unwrap();
    assert!(
        (time("started_at") - time("created_at")).num_milliseconds() >= 600,
        "{job}"
    );
}

#[tokio::test]
async fn higher_priority_jobs_start_first() {
    let dir = scratch();
    let app = App::start(dir.path());
    assert_eq!(
        app.post("/v1/queues/job_queue/pause", json!({})).await.0,
        200
    );
    let low = app
        .submit_with(json!({ "payload": { "type": "sleep", "ms": 0 }, "priority": 0 }))
        .await;
    let high = app
        .submit_with(json!({ "payload": { "type": "sleep", "ms": 0 }, "priority": 10 }))
        .await;
    assert_eq!(
        app.post("/v1/queues/job_queue/resume", json!({})).await.0,
        200
    );
    let (low, high) = (app.finished(&low).await, app.finished(&high).await);
    assert!(
        high["started_at"].as_str() <= low["started_at"].as_str(),
        "high {high}\nlow {low}"
    );
}

#[tokio::test]
async fn a_timeout_fails_the_attempt_and_a_panic_is_isolated() {
    let dir = scratch();
    let app = App::start(dir.path());
    let slow = app.submit_with(json!({ "payload": { "type": "sleep", "ms": 10000 }, "timeout_ms": 200, "max_attempts": 1 })).await;
    let panicky = app
        .submit(json!({ "type": "flaky", "fail_times": 1, "panic": true }))
        .await;
    let slow = app.finished(&slow).await;
    assert_eq!(slow["state"], "dead");
    assert_eq!(slow["error"]["message"], "timed out after 200ms");
    let panicky = app.finished(&panicky).await;
    assert_eq!(
        panicky["state"], "succeeded",
        "the worker survived the panic and retried"
    );
    let first = panicky["attempts"][0]["error"]["message"].as_str().unwrap();
    assert!(
        first.starts_with("the handler panicked: flaky job panicked"),
        "{first}"
    );
}

#[tokio::test]
async fn cancel_a_queued_and_a_running_job() {
    let dir = scratch();
    let app = App::start(dir.path());
    let running = app.submit(json!({ "type": "sleep", "ms": 10000 })).await;
    app.wait_for(&running, |job| job["state"] == "running")
        .await;
    let (status, body) = app
        .post(&format!("/v1/jobs/{running}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("cancelled_running"))
    );

    app.post("/v1/queues/job_queue/pause", json!({})).await;
    let queued = app.submit(json!({ "type": "sleep", "ms": 0 })).await;
    let (status, body) = app
        .post(&format!("/v1/jobs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("cancelled")));
    app.post("/v1/queues/job_queue/resume", json!({})).await;
    assert_eq!(app.finished(&queued).await["state"], "cancelled");
    assert_eq!(app.finished(&running).await["state"], "cancelled");
    let (status, body) = app
        .post(&format!("/v1/jobs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_finished"))
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job() {
    let dir = scratch();
    let app = App::start(dir.path());
    let send = || async {
        let response = app
            .http
            .post(app.url("/v1/jobs"))
            .header("Idempotency-Key", "order-17")
            .json(&json!({ "payload": { "type": "sleep", "ms": 0 } }))
            .send()
            .await
            .unwrap();
        response.json::<Value>().await.unwrap()
    };
    let (first, second) = (send().await, send().await);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        (first["duplicate"].as_bool(), second["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
}

#[tokio::test]
async fn server_sent_events_deliver_progress_and_the_end() {
    let dir = scratch();
    let app = App::start(dir.path());
    let id = app.submit(json!({ "type": "sleep", "ms": 500 })).await;
    let mut response = app
        .http
        .get(app.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), response.chunk())
        .await
        .expect("events keep coming")
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"status"));
    assert!(names.contains(&"progress"), "{names:?}");
    assert_eq!(
        names.last(),
        Some(&"succeeded"),
        "the stream ends with the job: {names:?}"
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let dir = scratch();
    let app = App::start(dir.path());
    let (status, body) = app
        .post(
            "/v1/jobs",
            json!({ "payload": { "type": "report", "title": "t", "values": [1, "x"] } }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_failed"))
    );
    assert_eq!(body["details"]["fields"][0]["field"], "payload.values[1]");
    let (status, body) = app
        .post("/v1/jobs", json!({ "payload": {}, "prioirty": 1 }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_failed")),
        "{body}"
    );
    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_json"
    );
    let big = "x".repeat(8 * 1024);
    let (status, body) = app
        .post(
            "/v1/jobs",
            json!({ "payload": { "type": "report", "title": big, "values": [] } }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, body) = app.get("/v1/jobs/not-an-id").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_id")));
    let (status, body) = app.get("/v1/nowhere").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await.0, 200);
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/jobs/{id}/events"].is_object());
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("raindrop_jobs_started_total"),
        "worker counters are exported: {metrics}"
    );
}

#[tokio::test]
async fn kill_9_while_jobs_run_then_restart_and_every_job_finishes() {
    let dir = scratch();
    let mut app = App::start(dir.path());
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(app.submit(json!({ "type": "sleep", "ms": 400 })).await);
    }
    app.wait_for(&ids[0], |job| job["state"] == "running").await;
    app.signal("KILL");
    app.wait();
    drop(app);
    let app = App::start(dir.path());
    for id in &ids {
        let job = app.finished(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

#[tokio::test]
async fn sigterm_drains_without_losing_a_job() {
    let dir = scratch();
    let mut app = App::start(dir.path());
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(app.submit(json!({ "type": "sleep", "ms": 300 })).await);
    }
    app.wait_for(&ids[0], |job| job["state"] == "running").await;
    app.signal("TERM");
    let status = app.wait();
    assert!(status.success(), "{status}");
    drop(app);
    let app = App::start(dir.path());
    for id in &ids {
        assert_eq!(app.finished(id).await["state"], "succeeded");
    }
}

#[tokio::test]
async fn a_service_process_and_a_worker_process_share_one_store() {
    let dir = scratch();
    let service = App::start_as(dir.path(), "service");
    let id = service
        .submit(json!({ "type": "report", "title": "split", "values": [1, 2] }))
        .await;
    // No worker yet: the job waits.
    let (_, job) = service.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "queued");
    let _worker = App::start_as(dir.path(), "worker");
    let _observer = App::start_as(dir.path(), "observer");
    let job = service.finished(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["result"]["sum"], 3.0);
}

#[tokio::test]
async fn json_logs_carry_the_job_id_queue_and_attempt() {
    let dir = scratch();
    let manifest = dir.path().join("raindrop.manifest");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_background-processor"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--store"])
        .arg(format!("sqlite:{}", dir.path().join("jobs.db").display()))
        .env("RAINDROP_MANIFEST", &manifest)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut banner).unwrap();
    let base = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|a| format!("http://{a}"))
        .expect("banner names the address");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let response: Value = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .json(&json!({ "payload": { "type": "flaky", "fail_times": 1 } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = response["id"].as_str().unwrap().to_owned();
    // The failed first attempt is logged at WARN, as JSON, inside the job's span.
    let line = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a log line for the failed attempt");
        if line.contains("job attempt failed") {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let log: Value = serde_json::from_str(&line).expect("the line is JSON");
    assert_eq!(log["level"], "WARN", "{log}");
    assert_eq!(log["span"]["job.id"], id.as_str(), "{log}");
    assert_eq!(log["span"]["queue"], "job_queue", "{log}");
    assert_eq!(log["span"]["attempt"], 1, "{log}");
    assert!(log["span"].get("tenant").is_some(), "{log}");
}

#[tokio::test]
async fn a_worker_serves_metrics_health_and_readiness_on_its_operations_listener() {
    let dir = scratch();
    let worker = App::start_as(dir.path(), "worker");
    assert!(
        worker.operations.starts_with("http://127.0.0.1:"),
        "the banner names the operations listener"
    );
    let http = reqwest::Client::new();
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/metrics", "# HELP raindrop_worker_pools "),
    ] {
        let response = http
            .get(format!("{}{path}", worker.operations))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path} answered {body}");
    }
}

#[test]
fn a_process_that_cannot_bind_its_operations_listener_says_so_and_fails() {
    let dir = scratch();
    let manifest = dir.path().join("raindrop.manifest");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_background-processor"))
        .args(["--role", "observer", "--metrics-listen", &addr, "--store"])
        .arg(format!("sqlite:{}", dir.path().join("jobs.db").display()))
        .env("RAINDROP_MANIFEST", &manifest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a process that kept running would be a failure too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process kept running without its operations listener");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} for /metrics")),
        "stderr: {stderr}"
    );
    drop(taken);
}

/// The `raindrop` binary of the workspace, built beside this test's.
fn raindrop_cli() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    dir.join(format!("raindrop{}", std::env::consts::EXE_SUFFIX))
}

/// Runs `raindrop ARGS --url base` (output not a terminal: JSON), with its exit status.
fn cli(base: &str, args: &[&str]) -> (i32, Value, String) {
    let out = std::process::Command::new(raindrop_cli())
        .args(args)
        .args(["--url", base])
        .output()
        .expect("run the raindrop CLI (built by `cargo test --workspace`)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), value, stderr)
}

#[tokio::test]
async fn the_cli_submits_follows_lists_and_retries_jobs_of_a_running_application() {
    let dir = scratch();
    let app = App::start(dir.path());
    let base = app.base.clone();
    let (code, submitted, err) = cli(
        &base,
        &[
            "submit",
            "job_queue",
            r#"{"type": "report", "title": "t", "values": [1, 2]}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = submitted["id"].as_str().unwrap().to_owned();
    let job = app.finished(&id).await;
    assert_eq!(job["state"], "succeeded");
    let (code, shown, _) = cli(&base, &["jobs", "show", &id]);
    assert_eq!((code, shown["state"].as_str()), (0, Some("succeeded")));
    assert_eq!(shown["kind"], "report");
    let (code, listed, _) = cli(
        &base,
        &[
            "jobs",
            "list",
            "--queue",
            "job_queue",
            "--state",
            "succeeded",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    let (code, queues, _) = cli(&base, &["queues"]);
    assert_eq!(code, 0);
    assert_eq!(queues[0]["name"], "job_queue");
    // What `raindrop top` shows beside the queues: the worker pools of every process.
    let pools: Value = app
        .http
        .get(format!("{base}/v1/workers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pool = &pools[0];
    assert_eq!(
        (&pool["task"], &pool["queue"]),
        (&json!("job_worker"), &json!("job_queue"))
    );
    assert_eq!(pool["concurrency"], 4);

    // A dead letter, retried from the CLI.
    let (_, flaky, _) = cli(
        &base,
        &[
            "submit",
            "job_queue",
            r#"{"type": "flaky", "fail_times": 3}"#,
        ],
    );
    let flaky = flaky["id"].as_str().unwrap().to_owned();
    assert_eq!(app.finished(&flaky).await["state"], "dead");
    let (code, letters, _) = cli(&base, &["dead-letters", "list"]);
    assert_eq!(code, 0);
    assert_eq!(letters["jobs"][0]["id"], flaky.as_str());
    let (code, _, err) = cli(&base, &["jobs", "retry", &flaky]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(app.finished(&flaky).await["state"], "succeeded");

    // Exit statuses a script can use: 3 not found, 1 refused, 2 unreachable.
    let (code, _, err) = cli(
        &base,
        &["jobs", "show", "01890a5d-ac96-774b-bcce-b302099a8057"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("404 not_found"), "{err}");
    let (code, _, err) = cli(&base, &["submit", "job_queue", r#"{"type": "teleport"}"#]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("validation_failed"), "{err}");
    let (code, _, _) = cli("http://127.0.0.1:9", &["queues"]);
    assert_eq!(code, 2);
}

#[tokio::test]
async fn the_api_document_types_the_four_kinds_of_work_and_submissions_are_checked_against_it() {
    let dir = scratch();
    let app = App::start(dir.path());
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["SubmitJob"]["properties"]["payload"]["$ref"], "#/components/schemas/Work",
        "{schemas}"
    );
    let mut kinds: Vec<&str> = schemas["Work"]["oneOf"]
        .as_array()
        .expect("Work is a oneOf")
        .iter()
        .map(|v| v["properties"]["type"]["enum"][0].as_str().unwrap_or(""))
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["flaky", "notify", "report", "sleep"]);

    let (status, body) = app
        .post(
            "/v1/jobs",
            json!({ "payload": { "type": "sleep", "ms": "long" } }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_failed"))
    );
    assert_eq!(
        body["details"]["fields"][0]["field"], "payload.ms",
        "{body}"
    );
    let (_, body) = app
        .post("/v1/jobs", json!({ "payload": { "type": "teleport" } }))
        .await;
    assert_eq!(body["details"]["fields"][0]["field"], "payload.type");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"report\""),
        "{body}"
    );
}
