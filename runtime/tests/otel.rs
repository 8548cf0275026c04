//! With the `otel` feature: the trace of the HTTP request that submits a job continues in the
//! worker's span (`cargo test -p raindrop --features otel --test otel`).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submitting_requests_trace_continues_in_the_worker() {
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
