//! What every process serves to its operators: Prometheus metrics (`/metrics`), liveness
//! (`/healthz`) and readiness (`/readyz`). The service serves them on its API listener; every
//! other role on an operations listener of its own ([`serve`]), so a split deployment can be
//! scraped process by process.
//!
//! Every metric Raindrop publishes is described here ([`METRICS`]), with its unit, so the
//! exposition has a `# HELP` line for each, and every histogram has the same buckets
//! ([`BUCKETS`]), so `histogram_quantile` over `sum by (le)` aggregates across processes.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::Engine;

/// Where roles without the job API serve `/metrics`, `/healthz` and `/readyz` unless
/// `--metrics-listen` or the manifest's `metrics_listen` say otherwise: 127.0.0.1:9464 (the
/// port OpenTelemetry's Prometheus exporters use).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// The upper bounds (seconds) of every histogram's buckets: from half a millisecond (a job that
/// only acknowledges) to four hours (a long batch job, or a backlog that waits that long).
pub const BUCKETS: [f64; 23] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// A metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Samples in [`BUCKETS`].
    Histogram,
}

/// One metric Raindrop publishes.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit, if it has one (also the name's suffix).
    pub unit: Option<Unit>,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it counts or measures (the `# HELP` line).
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

const QT: &[&str] = &["queue", "task"];
const SECONDS: Option<Unit> = Some(Unit::Seconds);
const COUNT: Option<Unit> = Some(Unit::Count);

/// Every metric Raindrop publishes (the table in `docs::engine` lists them with the role that
/// publishes each).
pub const METRICS: &[Metric] = &[
    metric(
        "raindrop_jobs_started_total",
        Kind::Counter,
        COUNT,
        QT,
        "Job attempts started.",
    ),
    metric(
        "raindrop_jobs_succeeded_total",
        Kind::Counter,
        COUNT,
        QT,
        "Job attempts that succeeded.",
    ),
    metric(
        "raindrop_jobs_failed_total",
        Kind::Counter,
        COUNT,
        QT,
        "Job attempts that failed (an error, a panic or a timeout).",
    ),
    metric(
        "raindrop_jobs_retried_total",
        Kind::Counter,
        COUNT,
        QT,
        "Failed job attempts after which the job waits for another attempt.",
    ),
    metric(
        "raindrop_jobs_snoozed_total",
        Kind::Counter,
        COUNT,
        QT,
        "Job attempts whose handler snoozed the job: it runs again later, the attempt unspent.",
    ),
    metric(
        "raindrop_jobs_timed_out_total",
        Kind::Counter,
        COUNT,
        QT,
        "Job attempts stopped because they ran past the task's timeout.",
    ),
    metric(
        "raindrop_jobs_lease_lost_total",
        Kind::Counter,
        COUNT,
        QT,
        "Job attempts that lost their lease (the job was recovered elsewhere, or cancelled) before their outcome was recorded; the outcome is discarded.",
    ),
    metric(
        "raindrop_jobs_dead_lettered_total",
        Kind::Counter,
        COUNT,
        &["queue"],
        "Jobs moved to the dead-letter queue (out of attempts, or a failure that is not retried).",
    ),
    metric(
        "raindrop_jobs_recovered_total",
        Kind::Counter,
        COUNT,
        &["queue"],
        "Jobs taken back from a worker whose lease lapsed.",
    ),
    metric(
        "raindrop_jobs_cancelled_total",
        Kind::Counter,
        COUNT,
        &["queue"],
        "Jobs cancelled, waiting or running.",
    ),
    metric(
        "raindrop_submissions_refused_total",
        Kind::Counter,
        COUNT,
        &["reason"],
        "Job submissions the job API refused, by error code (rate_limited, quota_queued, validation_failed, ...).",
    ),
    metric(
        "raindrop_job_wait_seconds",
        Kind::Histogram,
        SECONDS,
        QT,
        "Time from a job being due to its attempt starting.",
    ),
    metric(
        "raindrop_job_duration_seconds",
        Kind::Histogram,
        SECONDS,
        QT,
        "Time from an attempt starting to its end, succeeded or failed.",
    ),
    metric(
        "raindrop_worker_busy",
        Kind::Gauge,
        COUNT,
        QT,
        "Jobs the worker pools of this process are running now.",
    ),
    metric(
        "raindrop_worker_concurrency",
        Kind::Gauge,
        COUNT,
        QT,
        "Jobs the worker pools of this process may run at once.",
    ),
    metric(
        "raindrop_worker_pools",
        Kind::Gauge,
        COUNT,
        QT,
        "Worker pools of the task running in this process.",
    ),
    metric(
        "raindrop_queue_jobs",
        Kind::Gauge,
        COUNT,
        &["queue", "state"],
        "Jobs per queue and state (published by observers).",
    ),
    metric(
        "raindrop_queue_held_by_limits",
        Kind::Gauge,
        COUNT,
        &["queue"],
        "Queued jobs a limit holds back: all while the queue is at its concurrency cap or out of rate tokens, else those of tenants and keys at their running limits (published by observers, for queues with limits).",
    ),
    metric(
        "raindrop_queue_oldest_ready_age_seconds",
        Kind::Gauge,
        SECONDS,
        &["queue"],
        "How long the oldest job ready to run has waited (published by observers).",
    ),
    metric(
        "raindrop_alert_firing",
        Kind::Gauge,
        None,
        &["alert", "queue"],
        "1 while an alert rule of the manifest fires, else 0 (published by observers).",
    ),
    metric(
        "raindrop_alert_notifications_total",
        Kind::Counter,
        COUNT,
        &["sink", "outcome"],
        "Alert firings and resolves sent to a sink of the manifest, by outcome (delivered, failed).",
    ),
    metric(
        "raindrop_cron_runs_total",
        Kind::Counter,
        COUNT,
        &["task", "outcome"],
        "Cron runs by outcome.",
    ),
    metric(
        "raindrop_http_requests_total",
        Kind::Counter,
        COUNT,
        &["route", "method", "status"],
        "Job API requests answered.",
    ),
    metric(
        "raindrop_http_request_duration_seconds",
        Kind::Histogram,
        SECONDS,
        &["route", "method"],
        "Time to answer a job API request.",
    ),
];

/// Describes every metric to the installed recorder.
pub fn describe() {
    for m in METRICS {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(m.name, unit, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(m.name, unit, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The Prometheus exporter with Raindrop's buckets.
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use (with every metric described);
/// `None` when another metrics recorder was installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = builder().install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// Installs `recorder` (which feeds `handle`) as the process's recorder, if none is yet;
/// whether it was installed.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) fn install(
    recorder: impl metrics::Recorder + Sync + 'static,
    handle: PrometheusHandle,
) -> bool {
    let mut installed = false;
    HANDLE.get_or_init(|| {
        installed = metrics::set_global_recorder(recorder).is_ok();
        installed.then(|| {
            describe();
            handle
        })
    });
    installed
}

/// `GET /metrics` without authentication: the operations listener is for the operator's
/// network (it binds to loopback unless told otherwise).
async fn metrics_text() -> Response {
    match prometheus() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process\n",
        )
            .into_response(),
    }
}

/// The operations routes: `/metrics`, `/healthz` (the process is up) and `/readyz` (its store
/// answers; 503 with the reason when it does not).
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let engine = engine.clone();
                async move {
                    match engine.store().ready().await {
                        Ok(()) => {
                            axum::Json(serde_json::json!({ "status": "ready" })).into_response()
                        }
                        Err(err) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({
                                "code": "not_ready",
                                "message": err.to_string(),
                            })),
                        )
                            .into_response(),
                    }
                }
            }),
        )
}

/// Serves the operations routes of `engine` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}
