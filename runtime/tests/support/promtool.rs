#![allow(dead_code, unreachable_pub)] // each test binary uses a part of it
//! Prometheus's `promtool` for tests: lint a scrape, check a rules file. Skipped with a notice
//! when it is not installed, unless `RAINDROP_REQUIRE_PROMTOOL=1` (as in CI: `.ci/run` installs
//! Debian's `prometheus` package), which makes a missing promtool a failure.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether promtool answers; panics when it must and does not.
pub fn available() -> bool {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        result => {
            let why = match result {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(err) => err.to_string(),
            };
            if std::env::var("RAINDROP_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1") {
                panic!("RAINDROP_REQUIRE_PROMTOOL=1 but promtool does not run: {why}");
            }
            eprintln!(
                "note: skipping promtool checks: promtool does not run ({why}); install Debian's `prometheus` package"
            );
            false
        }
    }
}

/// `promtool check metrics` on `scrape` (what `/metrics` answered): panics with promtool's
/// findings unless it is clean. Does nothing when promtool is not available.
pub fn check_metrics(what: &str, scrape: &str) {
    if !available() {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("promtool reads the scrape");
    let out = child.wait_with_output().expect("promtool ends");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics on the scrape of {what}:\n{findings}\n--- scrape ---\n{scrape}"
    );
}

/// `promtool check rules` on `path`: panics unless it passes. Does nothing when promtool is
/// not available.
pub fn check_rules(path: &Path) {
    if !available() {
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
