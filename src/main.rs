//! The seed application: background job processing declared in `raindrop.manifest`.
//!
//! `cargo run` starts the job API on 127.0.0.1:8080, the `job_worker` pool, and the
//! `job_monitor` observer against an SQLite file under `.raindrop/`. Roles split them over
//! processes that share one store: `--role service`, `--role worker`, `--role observer`,
//! `--role scheduler`.

mod work;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use async_trait::async_trait;
use clap::{Parser, ValueEnum};
use raindrop::engine::{Engine, Roles, Settings, shutdown_signal};
use raindrop::event::{Event, EventKind};
use raindrop::manifest::{self, Style};
use raindrop::observer::{AlertState, ObserverHandler};
use raindrop::service::Service;
use raindrop::store::StoreUrl;
use raindrop::task::handler_fn;
use tokio_util::sync::CancellationToken;

/// Background job processing: an HTTP job API, workers and a monitor, declared in
/// raindrop.manifest.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Which components this process runs; processes with different roles against one store
    /// behave like one application.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
    /// The store: `sqlite:PATH` or `memory` (default: $RAINDROP_STORE, else
    /// sqlite:.raindrop/raindrop.db).
    #[arg(long, env = "RAINDROP_STORE")]
    store: Option<String>,
    /// Where the job API listens (default: the service block's `listen`, 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Everything in one process.
    All,
    /// The HTTP job API only.
    Service,
    /// Worker pools only.
    Worker,
    /// Monitors only: recovery, retention, metrics, alerts.
    Observer,
    /// Cron schedulers only.
    Scheduler,
}

impl Role {
    fn engine_roles(self) -> Roles {
        match self {
            Role::All => Roles::ALL,
            Role::Service => Roles::NONE,
            Role::Worker => Roles {
                workers: true,
                ..Roles::NONE
            },
            Role::Observer => Roles {
                observer: true,
                ..Roles::NONE
            },
            Role::Scheduler => Roles {
                scheduler: true,
                ..Roles::NONE
            },
        }
    }

    fn serves_http(self) -> bool {
        matches!(self, Role::All | Role::Service)
    }
}

/// `job_monitor`: logs what people on call want to know about.
struct Monitor;

#[async_trait]
impl ObserverHandler for Monitor {
    async fn on_event(&self, event: &Event) {
        if event.kind == EventKind::DeadLettered {
            tracing::warn!(job.id = %event.job, queue = %event.queue, error = event.detail.as_deref().unwrap_or(""), "job dead-lettered");
        }
    }

    async fn on_alert(&self, alert: &AlertState) {
        tracing::warn!(alert = %alert.name, queue = %alert.queue, value = alert.value, firing = alert.firing, "alert");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let path = manifest::locate(Path::new(env!("CARGO_MANIFEST_DIR")));
    let style = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Style::Colored
    } else {
        Style::Plain
    };
    let loaded = manifest::load(&path, style).map_err(|e| e.to_string())?;
    eprint!("{}", loaded.warnings);
    let app = loaded.application;
    let service_block = app.services.first().map(|s| (s.name.to_string(), s.listen));
    let url = StoreUrl::parse(args.store.as_deref()).map_err(|e| e.to_string())?;

    let engine = Engine::builder(app)
        .task("job_worker", handler_fn(work::job_worker))
        .observer("job_monitor", Monitor)
        .settings(Settings {
            roles: args.role.engine_roles(),
            ..Settings::default()
        })
        .open_url(&url)
        .await
        .map_err(|e| format!("cannot start with store {url:?}: {e}"))?;

    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });

    let running = engine.start().await.map_err(|e| e.to_string())?;
    let served = match (args.role.serves_http(), service_block) {
        (true, Some((name, listen))) => {
            let addr = args.listen.unwrap_or(listen);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let service = Service::new(engine.clone(), &name)
                .map_err(|e| e.to_string())?
                .validate("job_queue", std::sync::Arc::new(work::validate));
            println!(
                "{} serving the job API on http://{addr} (role {:?}, worker {})",
                engine.app().name,
                args.role,
                engine.worker_id()
            );
            let stopped = stop.clone();
            Some(tokio::spawn(
                service.serve(listener, async move { stopped.cancelled().await }),
            ))
        }
        _ => {
            println!(
                "{} running (role {:?}, worker {})",
                engine.app().name,
                args.role,
                engine.worker_id()
            );
            None
        }
    };
    stop.cancelled().await;
    tracing::info!("shutting down: draining requests and running jobs");
    if let Some(server) = served {
        match server.await {
            Ok(result) => result.map_err(|e| e.to_string())?,
            Err(e) => return Err(format!("the HTTP server task failed: {e}")),
        }
    }
    running.shutdown().await;
    Ok(())
}
