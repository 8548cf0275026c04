//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (`tests/browser/`) opens the overview of the running seed application with
//! jobs in several states, checks its numbers against the API, retries a dead letter by
//! clicking, sees it succeed and saves a screenshot.
//!
//! Needs Node.js and Chromium; without them it is skipped with a notice, unless
//! `RAINDROP_REQUIRE_BROWSER=1` (as in CI), which makes their absence a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

#[path = "support/app.rs"]
mod app;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use app::App;
use serde_json::json;

const MANIFEST: &str = r#"application "background_processor" {
  service "job_api" {}
  queue "job_queue" {}
  task "job_worker" {
    concurrency = 4
  }
  kv_cache "job_status" {}
  observer "job_monitor" {}
}
"#;

fn chromium() -> PathBuf {
    std::env::var_os("RAINDROP_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// Whether Node.js, Chromium and playwright-core are here (installing playwright-core with npm
/// if it is missing); a notice and `false` when not, a panic when they are required.
fn browser_ready(dir: &Path) -> bool {
    let required = std::env::var("RAINDROP_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let missing = |what: &str| {
        if required {
            panic!("RAINDROP_REQUIRE_BROWSER=1 but {what}");
        }
        eprintln!("note: skipping the browser test: {what}");
        false
    };
    if Command::new("node").arg("--version").output().is_err() {
        return missing("Node.js is not installed");
    }
    if !chromium().exists() {
        return missing(&format!(
            "no Chromium at {} (apt install chromium)",
            chromium().display()
        ));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        let installed = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return missing("`npm ci` in tests/browser failed");
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_browser_matches_the_api_and_retries_a_dead_letter() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !browser_ready(&scripts) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("jobs.db").display());
    let service = App::launch(dir.path(), "all", &store, MANIFEST);
    for n in 0..5 {
        service
            .submit(json!({ "type": "report", "title": format!("r{n}"), "values": [1, 2, n] }))
            .await;
    }
    let flaky = service
        .submit_with(json!({ "payload": { "type": "flaky", "fail_times": 1 }, "max_attempts": 1 }))
        .await;
    service
        .submit_with(json!({ "payload": { "type": "sleep", "ms": 60000 }, "priority": -1 }))
        .await;
    // Settle: five succeeded, one dead, one running (bounded; the workers are another process).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, queues) = service.get("/v1/queues").await;
        let counts = &queues[0]["counts"];
        if counts["succeeded"] == 5 && counts["dead"] == 1 && counts["running"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "did not settle: {counts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let output = Command::new("node")
        .arg(scripts.join("dashboard.mjs"))
        .arg(&service.base)
        .arg(&screenshot)
        .env("RAINDROP_CHROMIUM", chromium())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("overview matches the API"));
    assert!(stdout.contains("no page is wider than 375px"), "{stdout}");
    assert!(
        stdout.contains("dark mode follows prefers-color-scheme"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "dead letter {flaky} retried by a click and succeeded"
    )));
    let (_, job) = service.get(&format!("/v1/jobs/{flaky}")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot was saved"
    );
}
