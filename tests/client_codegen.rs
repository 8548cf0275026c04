//! A client generated from the seed's OpenAPI document (openapi-python-client) has typed
//! classes for the payloads of `job_queue`. Needs the generator in a venv
//! (`RAINDROP_CODEGEN_VENV`, default `~/.cache/raindrop-ci/venv-codegen`; `.ci/run` installs
//! it); without it the test says so and passes, unless `RAINDROP_REQUIRE_CODEGEN=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[path = "support/app.rs"]
mod support;
use support::App;

const MANIFEST: &str = r#"application "background_processor" {
  service "job_api" {}
  queue "job_queue" {}
  task "job_worker" {}
  kv_cache "job_status" {}
  observer "job_monitor" {}
}
"#;

fn venv() -> PathBuf {
    std::env::var_os("RAINDROP_CODEGEN_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/raindrop-ci/venv-codegen")
        },
        PathBuf::from,
    )
}

#[tokio::test]
async fn a_client_generated_from_the_document_has_a_typed_class_for_each_kind_of_work() {
    let venv = venv();
    let generator = venv.join("bin/openapi-python-client");
    if !generator.exists() {
        let why = format!(
            "openapi-python-client is not installed at {} (python3 -m venv DIR && DIR/bin/pip install openapi-python-client==0.29.1)",
            generator.display()
        );
        assert!(
            std::env::var_os("RAINDROP_REQUIRE_CODEGEN").is_none_or(|v| v != "1"),
            "{why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = App::launch(dir.path(), "all", "memory", MANIFEST);
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let doc_path = dir.path().join("openapi.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    let out = dir.path().join("seed_client");
    let generated = Command::new(&generator)
        .args(["generate", "--meta", "none", "--path"])
        .arg(&doc_path)
        .arg("--output-path")
        .arg(&out)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&generated.stdout).into_owned()
        + &String::from_utf8_lossy(&generated.stderr);
    assert!(generated.status.success(), "{said}");
    assert!(
        !said.contains("Endpoint will not be generated") && !said.contains("Unable to process"),
        "the generator skipped part of the document:\n{said}"
    );
    // The submission's payload is a union of one class per kind of work, each with typed
    // fields.
    let script = r#"
import sys
from seed_client.models.submit_job import SubmitJob
job = SubmitJob.from_dict({"payload": {"type": "report", "title": "q3", "values": [1, 2.5]}})
print(type(job.payload).__name__, job.payload.title, job.payload.values)
sleep = SubmitJob.from_dict({"payload": {"type": "sleep", "ms": 10}})
print(type(sleep.payload).__name__, sleep.payload.ms)
from seed_client.api.jobs import submit
print(submit.sync_detailed.__name__)
"#;
    let run = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("WorkType"), "{stdout}");
    assert!(lines[0].ends_with(" q3 [1, 2.5]"), "{stdout}");
    assert!(
        lines[1].starts_with("WorkType") && lines[1].ends_with(" 10"),
        "{stdout}"
    );
    assert_ne!(lines[0].split(' ').next(), lines[1].split(' ').next());
    assert_eq!(lines[2], "sync_detailed");
}
