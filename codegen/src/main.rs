//! `raindrop`: validate, inspect, generate and graph a `raindrop.manifest`, or start a new
//! application.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod client;
mod top;

use clap::{Parser, Subcommand, ValueEnum};
use raindrop_codegen::diagnostic::JsonDiagnostic;
use raindrop_codegen::name::Name;
use raindrop_codegen::scaffold::{self, RaindropDependency};
use raindrop_codegen::{Application, Compiled, SourceFile, Style};

/// Exit status: the manifest has errors.
const EXIT_INVALID: u8 = 1;
/// Exit status: the manifest could not be read, or the command could not do its work.
const EXIT_UNREADABLE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "raindrop",
    version,
    about = "The Raindrop manifest compiler and project tool"
)]
struct Cli {
    /// When to colour output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InspectFormat {
    Text,
    Json,
    Hcl,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a manifest and report every problem (exit 0 clean, 1 errors, 2 unreadable).
    Validate {
        /// The manifest, or a directory holding `raindrop.manifest` (default: `$RAINDROP_MANIFEST`,
        /// else the nearest `raindrop.manifest` here or above).
        path: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Print the normalized application: every component, its settings and the wiring.
    Inspect {
        /// The manifest, or a directory holding `raindrop.manifest` (default: `$RAINDROP_MANIFEST`,
        /// else the nearest `raindrop.manifest` here or above).
        path: Option<PathBuf>,
        /// Print JSON instead of text (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// `text`; `json`, the model; `hcl`, a manifest with every default written out, which
        /// compiles to the same application.
        #[arg(long, value_enum, default_value_t = InspectFormat::Text)]
        format: InspectFormat,
    },
    /// Print the Rust bindings generated from the manifest.
    Generate {
        /// The manifest, or a directory holding `raindrop.manifest` (default: `$RAINDROP_MANIFEST`,
        /// else the nearest `raindrop.manifest` here or above).
        path: Option<PathBuf>,
    },
    /// Rewrite a manifest canonically, comments kept (`--check`: change nothing, exit 1 if it
    /// would change).
    Fmt {
        /// The manifest, or a directory holding `raindrop.manifest` (default: `$RAINDROP_MANIFEST`,
        /// else the nearest `raindrop.manifest` here or above).
        path: Option<PathBuf>,
        /// Only check: exit 1 (and name the file) when formatting would change it.
        #[arg(long)]
        check: bool,
    },
    /// Print a Mermaid flowchart of the application.
    Graph {
        /// The manifest, or a directory holding `raindrop.manifest` (default: `$RAINDROP_MANIFEST`,
        /// else the nearest `raindrop.manifest` here or above).
        path: Option<PathBuf>,
    },
    /// Create a new application crate in a new directory NAME.
    New {
        /// The application's name (lowercase kebab-case or snake_case).
        name: String,
        #[command(flatten)]
        dependency: DependencyArgs,
    },
    /// Create an application in an existing directory (default: the current one).
    Init {
        /// The directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The application's name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        dependency: DependencyArgs,
    },
    /// The jobs of a running application, over its job API (`--url`, key from
    /// `RAINDROP_API_KEY`): list, show, cancel, retry.
    Jobs {
        #[command(subcommand)]
        command: client::Jobs,
        #[command(flatten)]
        connection: client::Connection,
    },
    /// The queues of a running application with their counts; `pause NAME`, `resume NAME`.
    Queues {
        #[command(subcommand)]
        command: Option<client::Queues>,
        #[command(flatten)]
        connection: client::Connection,
    },
    /// The dead letters of a running application: list, retry, purge.
    DeadLetters {
        #[command(subcommand)]
        command: client::DeadLetters,
        #[command(flatten)]
        connection: client::Connection,
    },
    /// A live terminal view of a running application's queues and worker pools.
    Top {
        /// How often to read the job API, e.g. `1s`, `500ms`.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        #[command(flatten)]
        connection: client::Connection,
    },
    /// Submits a job to QUEUE of a running application; PAYLOAD is JSON.
    Submit {
        queue: String,
        payload: String,
        #[command(flatten)]
        connection: client::Connection,
    },
    /// Raindrop's words: `raindrop build validate|generate|init`.
    #[command(subcommand)]
    Build(BuildCommand),
}

#[derive(Debug, Subcommand)]
enum BuildCommand {
    /// Same as `raindrop validate`.
    Validate {
        path: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Same as `raindrop generate`.
    Generate { path: Option<PathBuf> },
    /// Same as `raindrop init`.
    Init {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        dependency: DependencyArgs,
    },
}

#[derive(Debug, clap::Args)]
struct DependencyArgs {
    /// Depend on a local checkout of the `raindrop` crate (its `runtime/` directory).
    #[arg(long, value_name = "DIR")]
    raindrop_path: Option<PathBuf>,
    /// The `raindrop` version requirement to depend on.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"), conflicts_with = "raindrop_path")]
    raindrop_version: String,
}

impl DependencyArgs {
    fn dependency(self) -> RaindropDependency {
        match self.raindrop_path {
            Some(path) => RaindropDependency::Path(path),
            None => RaindropDependency::Version(self.raindrop_version),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let style = match cli.color {
        ColorChoice::Always => Style::Colored,
        ColorChoice::Never => Style::Plain,
        ColorChoice::Auto => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            if !no_color && std::io::stderr().is_terminal() {
                Style::Colored
            } else {
                Style::Plain
            }
        }
    };
    let result = match cli.command {
        Command::Validate { path, format }
        | Command::Build(BuildCommand::Validate { path, format }) => {
            validate(path.as_deref(), format, style)
        }
        Command::Inspect { path, json, format } => {
            let format = if json { InspectFormat::Json } else { format };
            with_application(path.as_deref(), style, |_, app| match format {
                InspectFormat::Json => serde_json::to_string_pretty(app)
                    .map(|s| s + "\n")
                    .map_err(|e| e.to_string()),
                InspectFormat::Hcl => Ok(raindrop_codegen::emit::to_hcl(app)),
                InspectFormat::Text => Ok(describe(app)),
            })
        }
        Command::Generate { path } | Command::Build(BuildCommand::Generate { path }) => {
            with_application(path.as_deref(), style, |source, app| {
                Ok(raindrop_codegen::generate::application_source(
                    app,
                    &manifest_path(source),
                ))
            })
        }
        Command::Fmt { path, check } => fmt(path.as_deref(), check),
        Command::Jobs {
            command,
            connection,
        } => return client::run(&connection, client::Call::Jobs(command)),
        Command::Queues {
            command,
            connection,
        } => return client::run(&connection, client::Call::Queues(command)),
        Command::DeadLetters {
            command,
            connection,
        } => return client::run(&connection, client::Call::DeadLetters(command)),
        Command::Submit {
            queue,
            payload,
            connection,
        } => return client::run(&connection, client::Call::Submit { queue, payload }),
        Command::Top {
            interval,
            connection,
        } => return top::run(&connection.base(), interval),
        Command::Graph { path } => with_application(path.as_deref(), style, |_, app| {
            Ok(raindrop_codegen::graph::mermaid(app))
        }),
        Command::New { name, dependency } => new(&name, dependency.dependency()),
        Command::Init {
            dir,
            name,
            dependency,
        }
        | Command::Build(BuildCommand::Init {
            dir,
            name,
            dependency,
        }) => init(&dir, name, dependency.dependency()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// `raindrop fmt`: rewrites the manifest if formatting changes it, or with `check` says so and
/// exits 1. A manifest that is not HCL is an error (exit 2) and is left as it is.
fn fmt(path: Option<&Path>, check: bool) -> Result<ExitCode, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
    let found = raindrop_codegen::find_manifest(path, &cwd);
    let shown = found
        .strip_prefix(&cwd)
        .unwrap_or(&found)
        .display()
        .to_string();
    let text = std::fs::read_to_string(&found).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let formatted = raindrop_codegen::format::format(&text)
        .map_err(|e| format!("{shown} is not HCL, so it was not formatted: {e}"))?;
    if formatted == text {
        return Ok(ExitCode::SUCCESS);
    }
    if check {
        println!("{shown}: would be reformatted");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    std::fs::write(&found, formatted).map_err(|e| format!("cannot write {shown}: {e}"))?;
    println!("{shown}: formatted");
    Ok(ExitCode::SUCCESS)
}

/// The manifest's absolute path, as the generated `include_str!` names it.
fn manifest_path(source: &SourceFile) -> String {
    std::path::absolute(source.name())
        .map_or_else(|_| source.name().to_owned(), |p| p.display().to_string())
}

fn load(path: Option<&Path>) -> Result<(SourceFile, Compiled), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
    let found = raindrop_codegen::find_manifest(path, &cwd);
    // Names under the working directory are shown as the user would type them.
    let shown = found.strip_prefix(&cwd).unwrap_or(&found);
    raindrop_codegen::load(shown).map_err(|e| e.to_string())
}

fn validate(path: Option<&Path>, format: Format, style: Style) -> Result<ExitCode, String> {
    let (source, compiled) = load(path)?;
    match format {
        Format::Human => {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(compiled.render(&source, style).as_bytes());
        }
        Format::Json => {
            let diagnostics: Vec<_> = compiled
                .diagnostics
                .iter()
                .map(|d| JsonDiagnostic::new(&source, d))
                .collect();
            let errors = diagnostics
                .iter()
                .filter(|d| d.severity == raindrop_codegen::Severity::Error)
                .count();
            let report = serde_json::json!({
                "file": source.name(),
                "valid": errors == 0,
                "errors": errors,
                "warnings": diagnostics.len() - errors,
                "diagnostics": diagnostics,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
            );
        }
    }
    Ok(if compiled.has_errors() {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `produce` on a valid application and prints its output; prints diagnostics otherwise.
fn with_application(
    path: Option<&Path>,
    style: Style,
    produce: impl FnOnce(&SourceFile, &Application) -> Result<String, String>,
) -> Result<ExitCode, String> {
    let (source, compiled) = load(path)?;
    let warnings_only = !compiled.has_errors() && !compiled.diagnostics.is_empty();
    if compiled.has_errors() || warnings_only {
        eprint!("{}", compiled.render(&source, style));
    }
    let Some(app) = &compiled.application else {
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    print!("{}", produce(&source, app)?);
    Ok(ExitCode::SUCCESS)
}

/// The normalized application as indented text.
fn describe(app: &Application) -> String {
    // The JSON model is the source of truth; the text form is its YAML-like rendering.
    let value = serde_json::to_value(app).unwrap_or_default();
    let mut out = format!("application {}\n", app.name);
    let sections = [
        "services",
        "queues",
        "tasks",
        "kv_caches",
        "observers",
        "env",
        "unsupported",
    ];
    for section in sections {
        let Some(items) = value.get(section).and_then(|v| v.as_array()) else {
            continue;
        };
        for item in items {
            let name = item
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            out.push_str(&format!("  {} {name}\n", section.trim_end_matches('s')));
            if let Some(fields) = item.as_object() {
                for (key, value) in fields.iter().filter(|(k, _)| *k != "name") {
                    write_value(&mut out, key, value, 4);
                }
            }
        }
    }
    out.push_str(&format!(
        "  job status: {}\n",
        app.status_cache.as_ref().map_or(
            "kept by the store (no kv_cache named; `status_cache` on a service keeps it in one)"
                .to_owned(),
            |c| format!("kv_cache {c}")
        )
    ));
    out
}

fn write_value(out: &mut String, key: &str, value: &serde_json::Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        serde_json::Value::Object(map) => {
            out.push_str(&format!("{pad}{key}:\n"));
            for (k, v) in map {
                write_value(out, k, v, indent + 2);
            }
        }
        serde_json::Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            out.push_str(&format!("{pad}{key}:\n"));
            for item in items {
                write_value(out, "-", item, indent + 2);
            }
        }
        serde_json::Value::Array(items) => {
            let list: Vec<String> = items.iter().map(plain).collect();
            out.push_str(&format!("{pad}{key}: [{}]\n", list.join(", ")));
        }
        other => out.push_str(&format!("{pad}{key}: {}\n", plain(other))),
    }
}

fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "none".into(),
        other => other.to_string(),
    }
}

fn parse_name(raw: &str) -> Result<Name, String> {
    Name::parse(raw).map_err(|e| {
        let hint = e
            .suggestion
            .map(|s| format!(" (try `{s}`)"))
            .unwrap_or_default();
        format!("invalid application name `{raw}`: {}{hint}", e.reason)
    })
}

fn new(raw: &str, dependency: RaindropDependency) -> Result<ExitCode, String> {
    let name = parse_name(raw)?;
    let dir = PathBuf::from(raw);
    if dir.exists() {
        return Err(format!(
            "`{}` already exists; use `raindrop init {}` to add an application to it",
            dir.display(),
            dir.display()
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    write_app(&dir, &name, &dependency)
}

fn init(
    dir: &Path,
    name: Option<String>,
    dependency: RaindropDependency,
) -> Result<ExitCode, String> {
    let raw = match name {
        Some(name) => name,
        None => std::path::absolute(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                format!(
                    "cannot tell an application name from `{}`; pass --name",
                    dir.display()
                )
            })?,
    };
    let name = parse_name(&raw)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    write_app(dir, &name, &dependency)
}

fn write_app(dir: &Path, name: &Name, dependency: &RaindropDependency) -> Result<ExitCode, String> {
    let written = scaffold::write(dir, name, dependency).map_err(|e| e.to_string())?;
    for path in written {
        println!("created {}", path.display());
    }
    println!("\nnext: cd {} && cargo run", dir.display());
    Ok(ExitCode::SUCCESS)
}
