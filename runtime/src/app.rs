//! The application binary: flags, the manifest, the engine and the job API, started by
//! `#[raindrop::main]`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use raindrop_codegen::{SourceFile, Style};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineBuilder, Roles, Settings, shutdown_signal};
use crate::service::Service;
use crate::store::StoreUrl;

/// An application built from raindrop.manifest: the HTTP job API, worker pools, schedulers and
/// monitors it declares.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Which components this process runs; processes with different roles against one store
    /// behave like one application.
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// The store: `sqlite:PATH`, `redis://HOST:PORT/DB`, `redis-cluster://HOST:PORT,HOST:PORT`
    /// (Redis URLs take `?prefix=NAME`) or `memory` (default: $RAINDROP_STORE, else
    /// sqlite:.raindrop/raindrop.db).
    #[arg(long, env = "RAINDROP_STORE")]
    pub store: Option<String>,
    /// Where the job API listens (default: the service block's `listen`, 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where this process serves `/metrics`, `/healthz` and `/readyz` for operators (default:
    /// the manifest's `metrics_listen`, else 127.0.0.1:9464 for roles without the job API;
    /// processes serving the job API serve them there, and here only when this is given).
    #[arg(long, env = "RAINDROP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines for people (`text`) or for log pipelines (`json`: one object per line, with
    /// the job id, queue, kind, tenant and attempt of the job being run).
    #[arg(long, value_enum, env = "RAINDROP_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// A process's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
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

/// What the macros hand over: the manifest they compiled against and the generated glue.
#[derive(Debug, Clone, Copy)]
pub struct Launch {
    /// The manifest's path when the crate was compiled.
    pub manifest_path: &'static str,
    /// Its text then (used unless `RAINDROP_MANIFEST` names another file).
    pub manifest_text: &'static str,
    /// Registers every handler.
    pub bind: fn(EngineBuilder) -> EngineBuilder,
    /// Binds the generated `Env` once, so a missing secret stops startup with its name.
    pub check: fn(&Engine) -> crate::Result<()>,
    /// Applies `#[service]` configuration to a service block's API.
    pub configure: fn(&Engine, &str, Service) -> Service,
}

/// Runs the application; the process's exit code.
pub fn main(launch: Launch) -> ExitCode {
    let args = Args::parse();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Live until the process ends, so traces and metrics are flushed then.
    let _exporter = logs(args.log_format, terminal);
    let _metrics_exporter = otel_metrics();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(
        args,
        launch,
        if terminal {
            Style::Colored
        } else {
            Style::Plain
        },
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the log subscriber (and, with the `otel` feature and `OTEL_*` asking for it, the
/// OTLP trace exporter, which flushes when the returned guard drops).
fn logs(format: LogFormat, terminal: bool) -> Option<Box<dyn std::any::Any>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.with_ansi(terminal).boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(lines);
    #[cfg(feature = "otel")]
    if crate::telemetry::wanted() {
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "raindrop".into());
        match crate::telemetry::otlp(&service) {
            Ok((provider, exporter)) => {
                registry.with(crate::telemetry::layer(&provider)).init();
                return Some(Box::new(exporter));
            }
            Err(err) => eprintln!("warning: traces are not exported: {err}"),
        }
    }
    registry.init();
    None
}

/// With the `otel` feature and `OTEL_*` asking for it, installs the metrics recorder that also
/// exports over OTLP (flushing when the returned guard drops).
fn otel_metrics() -> Option<Box<dyn std::any::Any>> {
    #[cfg(feature = "otel")]
    if crate::telemetry::metrics_wanted() {
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "raindrop".into());
        match crate::telemetry::otlp_metrics(&service) {
            Ok((provider, exporter)) => {
                if !crate::telemetry::install_metrics(&provider) {
                    eprintln!("warning: metrics are not exported: a recorder is installed");
                }
                return Some(Box::new(exporter));
            }
            Err(err) => eprintln!("warning: metrics are not exported: {err}"),
        }
    }
    None
}

/// The manifest in force: `$RAINDROP_MANIFEST` if set, else the one compiled in.
fn manifest(launch: &Launch) -> Result<SourceFile, String> {
    match crate::manifest::overridden() {
        Some(path) => raindrop_codegen::read(&path).map_err(|e| e.to_string()),
        None => Ok(SourceFile::new(launch.manifest_path, launch.manifest_text)),
    }
}

async fn run(args: Args, launch: Launch, style: Style) -> Result<(), String> {
    // Install the metrics recorder before anything registers a metric: handles registered
    // earlier would record into nothing.
    if crate::service::prometheus().is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will answer 503");
    }
    let source = manifest(&launch)?;
    let compiled = raindrop_codegen::compile(&source);
    if !compiled.diagnostics.is_empty() {
        eprint!("{}", compiled.render(&source, style));
    }
    let app = compiled
        .application
        .ok_or_else(|| format!("{} has errors", source.name()))?;
    let service_block = app.services.first().map(|s| (s.name.to_string(), s.listen));
    // The operations listener: asked for, or needed because no job API serves these routes.
    let serves_api = args.role.serves_http() && service_block.is_some();
    let operations = args.metrics_listen.or_else(|| {
        (!serves_api).then(|| {
            app.metrics_listen
                .unwrap_or(crate::operations::DEFAULT_LISTEN)
        })
    });
    let url = StoreUrl::parse(args.store.as_deref()).map_err(|e| e.to_string())?;
    let engine = (launch.bind)(Engine::builder(app))
        .settings(Settings {
            roles: args.role.engine_roles(),
            ..Settings::default()
        })
        .open_url(&url)
        .await
        .map_err(|e| format!("cannot start with store {url:?}: {e}"))?;
    (launch.check)(&engine).map_err(|e| e.to_string())?;

    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });

    // Bound before the engine starts, so a taken port stops the process before it takes work.
    let operations = match operations {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            format!(
                "cannot listen on {addr} for /metrics: {e} (set --metrics-listen or metrics_listen)"
            )
        })?),
        None => None,
    };
    let operations_addr = match &operations {
        Some(listener) => Some(listener.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let operations = operations.map(|listener| {
        let stopped = stop.clone();
        tokio::spawn(crate::operations::serve(
            listener,
            engine.clone(),
            async move { stopped.cancelled().await },
        ))
    });
    let ops_note = operations_addr
        .map(|addr| format!("; metrics on http://{addr}/metrics"))
        .unwrap_or_default();

    let running = engine.start().await.map_err(|e| e.to_string())?;
    let server = match (args.role.serves_http(), service_block) {
        (true, Some((name, listen))) => {
            let addr = args.listen.unwrap_or(listen);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let service = Service::new(engine.clone(), &name).map_err(|e| e.to_string())?;
            let service = (launch.configure)(&engine, &name, service);
            println!(
                "{} serving the job API on http://{addr} (role {:?}, worker {}){ops_note}",
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
                "{} running (role {:?}, worker {}){ops_note}",
                engine.app().name,
                args.role,
                engine.worker_id()
            );
            None
        }
    };
    stop.cancelled().await;
    tracing::info!("shutting down: draining requests and running jobs");
    if let Some(server) = server {
        server
            .await
            .map_err(|e| format!("the HTTP server task failed: {e}"))?
            .map_err(|e| e.to_string())?;
    }
    running.shutdown().await;
    if let Some(operations) = operations {
        operations
            .await
            .map_err(|e| format!("the operations server task failed: {e}"))?
            .map_err(|e| format!("the operations server failed: {e}"))?;
    }
    Ok(())
}
