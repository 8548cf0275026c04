//! `raindrop new` / `raindrop init`: the files of a new application crate.

use std::io;
use std::path::{Path, PathBuf};

use crate::name::Name;

/// The `src/main.rs` of a new application (compiled by the runtime's ui tests, so it builds).
pub const MAIN: &str = r#"//! A Raindrop application: `raindrop.manifest` declares it, the functions below handle its jobs.
//! Run it with `cargo run`, then submit a job:
//! `curl -X POST localhost:8080/v1/jobs -d '{"payload": {"name": "Ada"}}'`

use raindrop::prelude::*;
use serde::Deserialize;

raindrop::app!();

#[derive(Debug, Deserialize)]
struct Greeting {
    name: String,
}

/// Pulls jobs from the `jobs` queue; what it returns becomes the job's result.
#[raindrop::task]
async fn worker(job: Job<Greeting>, ctx: JobContext) -> Result<String, TaskError> {
    ctx.progress(50, "greeting").await?;
    Ok(format!("Hello, {}!", job.payload.name))
}

#[raindrop::main]
fn main() {}
"#;

/// The manifest of a new application called `name`.
pub fn manifest(name: &Name) -> String {
    format!(
        r#"application "{name}" {{
  service "api" {{}}
  queue "jobs" {{}}
  task "worker" {{}}
  kv_cache "job-status" {{}}
  observer "monitor" {{}}
}}
"#
    )
}

/// Where the new crate gets the `raindrop` dependency from.
#[derive(Debug, Clone)]
pub enum RaindropDependency {
    /// A registry version requirement, e.g. `0.1`.
    Version(String),
    /// A local checkout of the `runtime/` crate.
    Path(PathBuf),
}

/// The files of a new application named `name`, as (relative path, contents).
pub fn files(name: &Name, dependency: &RaindropDependency) -> Vec<(&'static str, String)> {
    let dep = match dependency {
        RaindropDependency::Version(v) => format!("raindrop = \"{v}\""),
        RaindropDependency::Path(p) => format!("raindrop = {{ path = \"{}\" }}", p.display()),
    };
    let manifest = manifest(name);
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
{dep}
serde = {{ version = "1", features = ["derive"] }}
"#
    );
    let main = MAIN.to_owned();
    let gitignore = "/target\n/.raindrop\n".to_owned();
    vec![
        ("raindrop.manifest", manifest),
        ("Cargo.toml", cargo),
        ("src/main.rs", main),
        (".gitignore", gitignore),
    ]
}

/// Writes the files of a new application into `dir`, refusing to overwrite a manifest or a
/// `Cargo.toml` that is already there.
pub fn write(dir: &Path, name: &Name, dependency: &RaindropDependency) -> io::Result<Vec<PathBuf>> {
    let files = files(name, dependency);
    for (path, _) in &files {
        let target = dir.join(path);
        if target.exists() && *path != ".gitignore" {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists; not overwriting it", target.display()),
            ));
        }
    }
    let mut written = Vec::new();
    for (path, contents) in files {
        let target = dir.join(path);
        if target.exists() {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, contents)?;
        written.push(target);
    }
    Ok(written)
}
