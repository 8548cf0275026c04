//! Trace context across the queue: the W3C `traceparent`/`tracestate` of the HTTP request that
//! submits a job travel in the job's headers, and the worker's span continues that trace.
//!
//! With the `otel` feature the spans are exported over OTLP when the standard `OTEL_*`
//! variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`); without
//! it, the incoming headers are still copied into the job so other tools can follow them.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

/// The trace context headers.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Adds the trace context of the current request to a job's headers.
#[cfg_attr(feature = "otel", allow(unused_variables))]
pub(crate) fn inject(request: &HeaderMap, job: &mut BTreeMap<String, String>) {
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = tracing::Span::current().context();
        let mut injected = std::collections::HashMap::new();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut injected);
        });
        job.extend(injected);
        if job.contains_key("traceparent") {
            return;
        }
    }
    for name in TRACE_HEADERS {
        if let Some(value) = request.get(name).and_then(|v| v.to_str().ok()) {
            job.insert(name.to_owned(), value.to_owned());
        }
    }
}

/// Makes `span` (an HTTP request's) a child of the caller's trace, if it sent one.
#[cfg_attr(not(feature = "otel"), allow(unused_variables))]
pub(crate) fn continue_request(span: &tracing::Span, request: &HeaderMap) {
    #[cfg(feature = "otel")]
    {
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http_headers::Extractor(request))
        });
        set_parent(span, context);
    }
}

/// Makes `span` (a job attempt's) a child of the trace the job was submitted in.
#[cfg_attr(not(feature = "otel"), allow(unused_variables))]
pub(crate) fn continue_job(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    #[cfg(feature = "otel")]
    if headers.contains_key("traceparent") {
        let headers: std::collections::HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&headers)
        });
        set_parent(span, context);
    }
}

#[cfg(feature = "otel")]
fn set_parent(span: &tracing::Span, context: opentelemetry::Context) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if context.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started elsewhere: nothing to do.
        let _ = span.set_parent(context);
    }
}

#[cfg(feature = "otel")]
mod opentelemetry_http_headers {
    /// Reads trace context from HTTP headers.
    pub(super) struct Extractor<'a>(pub(super) &'a axum::http::HeaderMap);

    impl opentelemetry::propagation::Extractor for Extractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
}

/// Exports spans over OTLP while it lives; flushes them when dropped.
#[cfg(feature = "otel")]
#[derive(Debug)]
pub struct Exporter {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

#[cfg(feature = "otel")]
impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("warning: flushing traces failed: {err}");
        }
    }
}

/// Whether the `OTEL_*` variables ask for traces to be exported.
#[cfg(feature = "otel")]
pub fn wanted() -> bool {
    let exporter = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    if exporter == "none" {
        return false;
    }
    exporter == "otlp"
        || std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

/// Installs the W3C propagator and `provider` as the global tracer provider; returns the layer
/// that turns tracing spans into OpenTelemetry spans.
#[cfg(feature = "otel")]
pub fn layer<S>(
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing_opentelemetry::layer().with_tracer(provider.tracer("raindrop"))
}

/// An OTLP exporter (HTTP/protobuf) configured by the `OTEL_*` variables, for `service`.
#[cfg(feature = "otel")]
pub fn otlp(
    service: &str,
) -> crate::Result<(opentelemetry_sdk::trace::SdkTracerProvider, Exporter)> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| crate::Error::Config(format!("OpenTelemetry exporter: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok((provider.clone(), Exporter { provider }))
}
