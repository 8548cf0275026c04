//! Trace context across the queue: the W3C `traceparent`/`tracestate` of the HTTP request that
//! submits a job travel in the job's headers, and the worker's span continues that trace.
//!
//! With the `otel` feature the spans are exported over OTLP when the standard `OTEL_*`
//! variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`); without
//! it, the incoming headers are still copied into the job so other tools can follow them.
//!
//! With the same feature and variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, or
//! `OTEL_METRICS_EXPORTER=otlp`), every metric of [`crate::operations::METRICS`] is exported
//! over OTLP as well, under the same name and labels as on `/metrics` ([`install_metrics`]).

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

/// Whether the `OTEL_*` variables ask for metrics to be exported.
#[cfg(feature = "otel")]
pub fn metrics_wanted() -> bool {
    let exporter = std::env::var("OTEL_METRICS_EXPORTER").unwrap_or_default();
    if exporter == "none" {
        return false;
    }
    exporter == "otlp"
        || std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some()
}

/// Exports metrics over OTLP while it lives; flushes them when dropped.
#[cfg(feature = "otel")]
#[derive(Debug)]
pub struct MetricsExporter {
    provider: opentelemetry_sdk::metrics::SdkMeterProvider,
}

#[cfg(feature = "otel")]
impl Drop for MetricsExporter {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("warning: flushing metrics failed: {err}");
        }
    }
}

/// An OTLP metrics exporter (HTTP/protobuf, every `OTEL_METRIC_EXPORT_INTERVAL`, 60 s by
/// default) configured by the `OTEL_*` variables, for `service`.
#[cfg(feature = "otel")]
pub fn otlp_metrics(
    service: &str,
) -> crate::Result<(
    opentelemetry_sdk::metrics::SdkMeterProvider,
    MetricsExporter,
)> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
        .map_err(|e| crate::Error::Config(format!("OpenTelemetry metrics exporter: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok((provider.clone(), MetricsExporter { provider }))
}

/// Installs the process's metrics recorder so that every metric goes both to the Prometheus
/// exposition (`/metrics`) and to `provider`'s meter, with the same names, labels and bucket
/// boundaries. Returns `false` (and installs nothing) when a recorder is already installed.
#[cfg(feature = "otel")]
pub fn install_metrics(provider: &opentelemetry_sdk::metrics::SdkMeterProvider) -> bool {
    use opentelemetry::metrics::MeterProvider as _;
    let prometheus = crate::operations::builder().build_recorder();
    let handle = prometheus.handle();
    let tee = otel_metrics::Tee::new(prometheus, provider.meter("raindrop"));
    crate::operations::install(tee, handle)
}

#[cfg(feature = "otel")]
mod otel_metrics {
    //! A `metrics` recorder that records into Prometheus and OpenTelemetry at once.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };
    use metrics_exporter_prometheus::PrometheusRecorder;
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::Meter;

    pub(super) struct Tee {
        prometheus: PrometheusRecorder,
        meter: Meter,
        described: Mutex<HashMap<String, (Option<Unit>, String)>>,
        counters: Mutex<HashMap<Key, Arc<TeeCounter>>>,
        gauges: Mutex<HashMap<Key, Arc<TeeGauge>>>,
        histograms: Mutex<HashMap<Key, Arc<TeeHistogram>>>,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attributes(key: &Key) -> Vec<KeyValue> {
        key.labels()
            .map(|l| KeyValue::new(l.key().to_owned(), l.value().to_owned()))
            .collect()
    }

    /// OpenTelemetry's unit for `unit`: counts have none (a `1` would read as a ratio).
    fn unit_of(unit: Option<Unit>) -> Option<&'static str> {
        match unit? {
            Unit::Seconds => Some("s"),
            Unit::Milliseconds => Some("ms"),
            Unit::Bytes => Some("By"),
            _ => None,
        }
    }

    impl Tee {
        pub(super) fn new(prometheus: PrometheusRecorder, meter: Meter) -> Self {
            Self {
                prometheus,
                meter,
                described: Mutex::default(),
                counters: Mutex::default(),
                gauges: Mutex::default(),
                histograms: Mutex::default(),
            }
        }

        fn description(&self, name: &str) -> (Option<&'static str>, String) {
            lock(&self.described)
                .get(name)
                .map(|(unit, help)| (unit_of(*unit), help.clone()))
                .unwrap_or_default()
        }

        fn describe(&self, key: &KeyName, unit: Option<Unit>, help: &SharedString) {
            lock(&self.described).insert(key.as_str().to_owned(), (unit, help.to_string()));
        }
    }

    struct TeeCounter {
        prometheus: Counter,
        otel: opentelemetry::metrics::Counter<u64>,
        attributes: Vec<KeyValue>,
        // What `absolute` last set, so OpenTelemetry gets the difference.
        last: Mutex<u64>,
    }

    impl CounterFn for TeeCounter {
        fn increment(&self, value: u64) {
            self.prometheus.increment(value);
            *lock(&self.last) += value;
            self.otel.add(value, &self.attributes);
        }

        fn absolute(&self, value: u64) {
            self.prometheus.absolute(value);
            let mut last = lock(&self.last);
            if value > *last {
                self.otel.add(value - *last, &self.attributes);
                *last = value;
            }
        }
    }

    struct TeeGauge {
        prometheus: Gauge,
        otel: opentelemetry::metrics::Gauge<f64>,
        attributes: Vec<KeyValue>,
        value: Mutex<f64>,
    }

    impl TeeGauge {
        fn update(&self, change: impl FnOnce(f64) -> f64) {
            let mut value = lock(&self.value);
            *value = change(*value);
            self.otel.record(*value, &self.attributes);
        }
    }

    impl GaugeFn for TeeGauge {
        fn increment(&self, value: f64) {
            self.prometheus.increment(value);
            self.update(|v| v + value);
        }

        fn decrement(&self, value: f64) {
            self.prometheus.decrement(value);
            self.update(|v| v - value);
        }

        fn set(&self, value: f64) {
            self.prometheus.set(value);
            self.update(|_| value);
        }
    }

    struct TeeHistogram {
        prometheus: Histogram,
        otel: opentelemetry::metrics::Histogram<f64>,
        attributes: Vec<KeyValue>,
    }

    impl HistogramFn for TeeHistogram {
        fn record(&self, value: f64) {
            self.prometheus.record(value);
            self.otel.record(value, &self.attributes);
        }
    }

    impl Recorder for Tee {
        fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(&key, unit, &help);
            self.prometheus.describe_counter(key, unit, help);
        }

        fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(&key, unit, &help);
            self.prometheus.describe_gauge(key, unit, help);
        }

        fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(&key, unit, &help);
            self.prometheus.describe_histogram(key, unit, help);
        }

        fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
            let mut counters = lock(&self.counters);
            let tee = counters.entry(key.clone()).or_insert_with(|| {
                let (unit, help) = self.description(key.name());
                let mut otel = self
                    .meter
                    .u64_counter(key.name().to_owned())
                    .with_description(help);
                if let Some(unit) = unit {
                    otel = otel.with_unit(unit);
                }
                Arc::new(TeeCounter {
                    prometheus: self.prometheus.register_counter(key, metadata),
                    otel: otel.build(),
                    attributes: attributes(key),
                    last: Mutex::new(0),
                })
            });
            Counter::from_arc(tee.clone())
        }

        fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
            let mut gauges = lock(&self.gauges);
            let tee = gauges.entry(key.clone()).or_insert_with(|| {
                let (unit, help) = self.description(key.name());
                let mut otel = self
                    .meter
                    .f64_gauge(key.name().to_owned())
                    .with_description(help);
                if let Some(unit) = unit {
                    otel = otel.with_unit(unit);
                }
                Arc::new(TeeGauge {
                    prometheus: self.prometheus.register_gauge(key, metadata),
                    otel: otel.build(),
                    attributes: attributes(key),
                    value: Mutex::new(0.0),
                })
            });
            Gauge::from_arc(tee.clone())
        }

        fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
            let mut histograms = lock(&self.histograms);
            let tee = histograms.entry(key.clone()).or_insert_with(|| {
                let (unit, help) = self.description(key.name());
                let mut otel = self
                    .meter
                    .f64_histogram(key.name().to_owned())
                    .with_description(help)
                    .with_boundaries(crate::operations::BUCKETS.to_vec());
                if let Some(unit) = unit {
                    otel = otel.with_unit(unit);
                }
                Arc::new(TeeHistogram {
                    prometheus: self.prometheus.register_histogram(key, metadata),
                    otel: otel.build(),
                    attributes: attributes(key),
                })
            });
            Histogram::from_arc(tee.clone())
        }
    }
}
