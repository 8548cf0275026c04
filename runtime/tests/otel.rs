//! With the `otel` feature: the trace of the HTTP request that submits a job continues in the
//! worker's span, and the metrics go to OpenTelemetry beside Prometheus (`cargo test -p raindrop
//! --features otel --test otel`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use raindrop::engine::Engine;
use raindrop::event::EventKind;
use raindrop::feed::EventFollower;
use raindrop::service::Service;
use raindrop::task::{JobContext, TaskError, handler_fn};
use tower::ServiceExt;
use tracing_subscriber::prelude::*;

mod support;
use support::{app, memory};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Held by each test: both run jobs, and each reads what its own jobs exported.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process's metrics recorder, recording into Prometheus and an in-memory OpenTelemetry
/// exporter; installed by whichever test comes first, before anything registers a metric.
fn meters() -> &'static (
    opentelemetry_sdk::metrics::InMemoryMetricExporter,
    opentelemetry_sdk::metrics::SdkMeterProvider,
) {
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    static METERS: std::sync::OnceLock<(InMemoryMetricExporter, SdkMeterProvider)> =
        std::sync::OnceLock::new();
    METERS.get_or_init(|| {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        assert!(raindrop::telemetry::install_metrics(&provider));
        (exporter, provider)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submitting_requests_trace_continues_in_the_worker() {
    let _alone = ONE_AT_A_TIME.lock().await;
    meters();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(raindrop::telemetry::layer(&provider))
        .init();

    let app = app(
        "application \"t\" {\n  service \"api\" {}\n  queue \"jobs\" {}\n  task \"worker\" {}\n}\n",
    );
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                tracing::info!(job = %ctx.id(), "working");
                Ok::<_, TaskError>(())
            }),
        )
        .build()
        .unwrap();
    let router = Service::new(engine.clone(), "api").unwrap().router();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();

    let request = Request::post("/v1/jobs")
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(Body::from(r#"{"payload": {"n": 1}}"#))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        if event.kind == EventKind::Succeeded {
            break;
        }
    }
    running.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let trace_of = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.span_context.trace_id().to_string())
            .unwrap_or_else(|| {
                panic!(
                    "no `{name}` span among {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    assert_eq!(
        trace_of("request"),
        TRACE_ID,
        "the request joins the caller's trace"
    );
    assert_eq!(trace_of("job"), TRACE_ID, "the worker continues it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_go_to_opentelemetry_and_prometheus_alike() {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

    let _alone = ONE_AT_A_TIME.lock().await;
    let (exporter, provider) = meters();

    let app = app("application \"t\" {\n  queue \"otel_jobs\" {}\n  task \"otel_worker\" {}\n}\n");
    let engine = Engine::builder(app)
        .store(memory())
        .task(
            "otel_worker",
            handler_fn(|ctx: JobContext| async move {
                let fail: bool = ctx.payload()?;
                if fail {
                    Err(TaskError::abort("no"))
                } else {
                    Ok(())
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let queue = engine.queue("otel_jobs").unwrap();
    queue.send(&false).await.unwrap();
    queue.send(&true).await.unwrap();
    let mut ends = 0;
    while ends < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        if matches!(event.kind, EventKind::Succeeded | EventKind::DeadLettered) {
            ends += 1;
        }
    }
    running.shutdown().await;
    provider.force_flush().unwrap();

    let exported = exporter.get_finished_metrics().unwrap();
    let last = exported.last().expect("an export");
    let metric = |name: &str| {
        last.scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no {name} exported"))
    };
    // This test's series (the other test's jobs are in the same recorder).
    let ours = |attributes: Vec<String>| attributes == ["queue=otel_jobs", "task=otel_worker"];
    let attrs = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
        let mut all: Vec<String> = it.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        all.sort();
        all
    };
    let counter = |name: &str| match metric(name).data() {
        AggregatedMetrics::U64(MetricData::Sum(sum)) => {
            assert!(sum.is_monotonic());
            let point = sum.data_points().find(|p| ours(attrs(&mut p.attributes())));
            point
                .unwrap_or_else(|| panic!("no {name} of otel_jobs"))
                .value()
        }
        other => panic!("{name} is {other:?}"),
    };
    assert_eq!(counter("raindrop_jobs_started_total"), 2);
    assert_eq!(counter("raindrop_jobs_succeeded_total"), 1);
    assert_eq!(counter("raindrop_jobs_failed_total"), 1);
    let duration = metric("raindrop_job_duration_seconds");
    assert_eq!(duration.unit(), "s");
    assert!(!duration.description().is_empty());
    match duration.data() {
        AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
            let point = histogram
                .data_points()
                .find(|p| ours(attrs(&mut p.attributes())))
                .expect("the duration of otel_jobs");
            assert_eq!(point.count(), 2);
            let bounds: Vec<f64> = point.bounds().collect();
            assert_eq!(bounds, raindrop::operations::BUCKETS);
        }
        other => panic!("the duration is {other:?}"),
    }
    // The Prometheus exposition sees the same numbers.
    let text = raindrop::operations::prometheus().unwrap().render();
    assert!(
        text.contains("raindrop_jobs_succeeded_total{queue=\"otel_jobs\",task=\"otel_worker\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "raindrop_job_duration_seconds_count{queue=\"otel_jobs\",task=\"otel_worker\"} 2"
    ));
}
