//! The `raindrop` binary: exit codes, output formats and the project commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn raindrop(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raindrop"))
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .output()
        .expect("run raindrop")
}

fn ui(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ui")
        .join(path)
        .display()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh scratch directory under the target directory, removed first if a run left it.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn validate_exits_zero_for_a_valid_manifest_and_reads_the_current_directory_by_default() {
    let dir = scratch("validate-default");
    std::fs::copy(ui("valid/seed.manifest"), dir.join("raindrop.manifest")).expect("copy");
    let out = raindrop(&["validate"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("raindrop.manifest: valid"));
}

#[test]
fn validate_exits_zero_with_warnings() {
    let out = raindrop(
        &["validate", &ui("valid/deprecated_kv_store.manifest")],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("warning[deprecated-kind]"));
    assert!(text(&out.stderr).contains("valid, 1 warning"));
}

#[test]
fn validate_exits_one_with_every_error_rendered() {
    let out = raindrop(
        &[
            "validate",
            &ui("invalid/many_mistakes_reported_at_once.manifest"),
        ],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("error[").count(), 6, "{stderr}");
    assert!(
        stderr.contains("many_mistakes_reported_at_once.manifest:8:5"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `concurrency`?"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour when not a terminal");
}

#[test]
fn validate_exits_two_when_the_manifest_cannot_be_read() {
    let out = raindrop(
        &["validate", "/nonexistent/raindrop.manifest"],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read manifest `/nonexistent/raindrop.manifest`"));
}

#[test]
fn validate_json_lists_diagnostics_with_positions() {
    let out = raindrop(
        &[
            "validate",
            "--format",
            "json",
            &ui("invalid/unknown_attribute_typo.manifest"),
        ],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"], 1);
    let d = &report["diagnostics"][0];
    assert_eq!(d["code"], "unknown-attribute");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["start"]["line"], 5);
    assert_eq!(d["start"]["column"], 5);
    assert_eq!(d["end"]["column"], 15);
    assert_eq!(d["help"], "did you mean `concurrency`?");
}

#[test]
fn color_always_styles_diagnostics() {
    let out = raindrop(
        &[
            "validate",
            "--color",
            "always",
            &ui("invalid/zero_concurrency.manifest"),
        ],
        Path::new("."),
    );
    assert!(text(&out.stderr).contains('\u{1b}'));
}

#[test]
fn raindrop_build_words_reach_the_same_commands() {
    let direct = raindrop(
        &["validate", &ui("invalid/zero_concurrency.manifest")],
        Path::new("."),
    );
    let build = raindrop(
        &[
            "build",
            "validate",
            &ui("invalid/zero_concurrency.manifest"),
        ],
        Path::new("."),
    );
    assert_eq!(direct.status.code(), build.status.code());
    assert_eq!(direct.stderr, build.stderr);
    let generate = raindrop(
        &["build", "generate", &ui("valid/seed.manifest")],
        Path::new("."),
    );
    assert_eq!(generate.status.code(), Some(0));
    assert!(text(&generate.stdout).contains("pub struct Env"));
}

#[test]
fn inspect_json_prints_the_normalized_model_with_wiring() {
    let out = raindrop(
        &["inspect", "--json", &ui("valid/seed.manifest")],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(0));
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(app["name"], "background_processor");
    assert_eq!(app["tasks"][0]["queue"], "job_queue");
    assert_eq!(app["queues"][0]["consumer"]["name"], "job_worker");
    assert_eq!(app["observers"][0]["queues"][0], "job_queue");
    assert_eq!(app["status_cache"], "job_status");
    assert_eq!(app["services"][0]["listen"], "127.0.0.1:8080");
}

#[test]
fn inspect_text_shows_defaults_and_wiring() {
    let out = raindrop(&["inspect", &ui("valid/seed.manifest")], Path::new("."));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("task job_worker"), "{stdout}");
    assert!(stdout.contains("queue: job_queue"), "{stdout}");
    assert!(stdout.contains("max_attempts: 5"), "{stdout}");
    assert!(
        stdout.contains("job status: kv_cache job_status"),
        "{stdout}"
    );
}

#[test]
fn inspect_format_hcl_prints_a_manifest_that_validates_again() {
    let out = raindrop(
        &["inspect", "--format", "hcl", &ui("valid/seed.manifest")],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert_eq!(
        printed,
        std::fs::read_to_string(ui("valid/seed.inspect.hcl")).expect("snapshot")
    );
    let dir = scratch("inspect-hcl");
    std::fs::write(dir.join("raindrop.manifest"), &printed).expect("write");
    let again = raindrop(&["validate"], &dir);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let json = raindrop(&["inspect", "--format", "json"], &dir);
    let app: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(app["queues"][0]["consumer"]["name"], "job_worker");
}

#[test]
fn commands_that_need_a_valid_manifest_exit_one_on_errors() {
    for command in ["inspect", "generate", "graph"] {
        let out = raindrop(
            &[command, &ui("invalid/zero_concurrency.manifest")],
            Path::new("."),
        );
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert!(
            out.stdout.is_empty(),
            "{command} printed output for an invalid manifest"
        );
        assert!(text(&out.stderr).contains("error[out-of-range]"));
    }
}

#[test]
fn generate_prints_formatted_bindings() {
    let out = raindrop(
        &["generate", &ui("valid/kebab_and_keyword_names.manifest")],
        Path::new("."),
    );
    let code = text(&out.stdout);
    assert!(code.contains("pub job_queue: ::raindrop::Queue,"), "{code}");
    assert!(code.contains("pub r#type: ::raindrop::Queue,"), "{code}");
    assert!(code.contains("pub struct job_worker;"), "{code}");
}

#[test]
fn graph_prints_a_mermaid_flowchart_of_the_pattern() {
    let out = raindrop(&["graph", &ui("valid/seed.manifest")], Path::new("."));
    let graph = text(&out.stdout);
    assert!(graph.starts_with("flowchart LR\n"));
    for edge in [
        "client -->|HTTP /v1/jobs| service_job_api",
        "service_job_api -->|enqueue| queue_job_queue",
        "queue_job_queue -->|pull| task_job_worker",
        "task_job_worker -->|status, results| kv_job_status",
        "observer_job_monitor -->|exhausted| dlq_job_queue",
    ] {
        assert!(graph.contains(edge), "missing `{edge}` in\n{graph}");
    }
}

#[test]
fn new_creates_a_valid_application_and_refuses_to_overwrite() {
    let dir = scratch("new");
    let out = raindrop(&["new", "my-app"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let app = dir.join("my-app");
    for file in [
        "raindrop.manifest",
        "Cargo.toml",
        "src/main.rs",
        ".gitignore",
    ] {
        assert!(app.join(file).is_file(), "{file} missing");
    }
    let check = raindrop(&["validate"], &app);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    let cargo = std::fs::read_to_string(app.join("Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("name = \"my-app\""));
    let again = raindrop(&["new", "my-app"], &dir);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already exists"));
}

#[test]
fn new_refuses_an_invalid_name() {
    let dir = scratch("new-invalid");
    let out = raindrop(&["new", "My App"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("try `my-app`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("My App").exists());
}

#[test]
fn build_init_fills_an_existing_directory_once() {
    let dir = scratch("init").join("shop");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = raindrop(&["build", "init", "--raindrop-path", "../runtime"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let manifest = std::fs::read_to_string(dir.join("raindrop.manifest")).expect("manifest");
    assert!(manifest.starts_with("application \"shop\""));
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("raindrop = { path = \"../runtime\" }"));
    let again = raindrop(&["init"], &dir);
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["validate", "--help"],
        &["inspect", "--help"],
        &["generate", "--help"],
        &["graph", "--help"],
        &["new", "--help"],
        &["init", "--help"],
        &["build", "--help"],
        &["build", "validate", "--help"],
    ] {
        let out = raindrop(args, Path::new("."));
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn fmt_rewrites_a_manifest_and_check_says_whether_it_would() {
    let dir = scratch("fmt");
    let messy = "application \"demo\"{\n   queue \"jobs\" {}\n task \"worker\" {\nconcurrency=4 # enough\n}\n}\n";
    let path = dir.join("raindrop.manifest");
    std::fs::write(&path, messy).expect("write");
    let out = raindrop(&["fmt", "--check"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("raindrop.manifest: would be reformatted"));
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        messy,
        "--check writes nothing"
    );

    let out = raindrop(&["fmt"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let formatted = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        formatted,
        "application \"demo\" {\n  queue \"jobs\" {}\n  task \"worker\" {\n    concurrency = 4 # enough\n  }\n}\n"
    );
    let out = raindrop(&["fmt", "--check"], &dir);
    assert_eq!(out.status.code(), Some(0), "formatted once, it stays");

    std::fs::write(&path, "application \"demo\" {").expect("write");
    let out = raindrop(&["fmt"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not HCL"),
        "{}",
        text(&out.stderr)
    );
}
