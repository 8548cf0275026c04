//! The manifest as written: every block and setting with its span, checked for syntax and types
//! but not yet for references, duplicates or wiring (see `validate` and `normalize`).

use std::net::SocketAddr;

use crate::model::{
    AlertMetric, AuthMode, BucketAction, Comparison, DebounceMode, Domain, LimitKey, Severity,
    SinkAuth, SinkFormat, UniqueBy, UniqueState, Visibility,
};
use crate::source::{Span, Spanned};
use crate::value::{ByteSize, CronSchedule, Duration};

/// The `application "name" { … }` block and everything in it.
#[derive(Debug, Clone, Default)]
pub struct Application {
    /// The application's header.
    pub header: Header,
    /// `service` blocks.
    pub services: Vec<Service>,
    /// `queue` blocks.
    pub queues: Vec<Queue>,
    /// `task` blocks.
    pub tasks: Vec<Task>,
    /// `kv_cache` (and deprecated `kv_store`) blocks.
    pub kv_caches: Vec<KvCache>,
    /// `observer` blocks.
    pub observers: Vec<Observer>,
    /// `env` blocks, top level and inside services.
    pub envs: Vec<Env>,
    /// `metrics_listen`: where non-service processes serve `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: Option<Spanned<SocketAddr>>,
    /// Blocks of kinds Raindrop has and this runtime does not run.
    pub unsupported: Vec<Unsupported>,
    /// Some block could not be read at all (unknown kind, no name): wiring that counts blocks
    /// would be guesswork, so it is neither inferred nor reported.
    pub incomplete: bool,
}

/// The kind keyword and name label of a block.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// The kind as written (`kv_store` stays `kv_store`).
    pub kind: &'static str,
    /// The label, as written.
    pub name: Spanned<String>,
    /// The whole block.
    pub span: Span,
}

impl Default for Spanned<String> {
    fn default() -> Self {
        Self::new(String::new(), Span::default())
    }
}

/// A `service` block.
#[derive(Debug, Clone, Default)]
pub struct Service {
    pub header: Header,
    pub visibility: Option<Spanned<Visibility>>,
    pub domain: Option<Spanned<Domain>>,
    pub listen: Option<Spanned<SocketAddr>>,
    pub auth: Option<Spanned<AuthMode>>,
    pub api_keys_env: Option<Spanned<String>>,
    pub rate_limit: Option<Spanned<RateLimit>>,
    pub quota: Option<Spanned<Quota>>,
    pub streams: Option<Spanned<Streams>>,
    pub max_body: Option<Spanned<ByteSize>>,
    pub queues: Option<Vec<Spanned<String>>>,
    pub status_cache: Option<Spanned<String>>,
    pub behind_proxy: Option<Spanned<bool>>,
}

/// `rate_limit { requests per burst }`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub requests: Option<Spanned<u32>>,
    pub per: Option<Spanned<Duration>>,
    pub burst: Option<Spanned<u32>>,
}

/// `streams { per_key total lifetime }`: limits on event streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Streams {
    pub per_key: Option<Spanned<u32>>,
    pub total: Option<Spanned<u32>>,
    pub lifetime: Option<Spanned<Duration>>,
}

/// `quota { max_queued max_running max_payload min_priority max_priority }`: limits for each
/// tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub max_queued: Option<Spanned<u32>>,
    pub max_running: Option<Spanned<u32>>,
    pub max_payload: Option<Spanned<ByteSize>>,
    pub min_priority: Option<Spanned<i32>>,
    pub max_priority: Option<Spanned<i32>>,
}

/// A `queue` block.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub header: Header,
    pub max_attempts: Option<Spanned<u32>>,
    pub backoff: Option<Backoff>,
    pub visibility_timeout: Option<Spanned<Duration>>,
    pub retention: Option<Retention>,
    pub max_message_size: Option<Spanned<ByteSize>>,
    pub rate_limit: Option<QueueRateLimit>,
    pub concurrency_limit: Option<ConcurrencyLimit>,
    pub max_snoozes: Option<Spanned<u32>>,
    pub unique: Option<Unique>,
    pub debounce: Option<Debounce>,
}

/// A queue's `debounce { key window mode max_wait }`; a setting written wrong is `None`, as if
/// left out.
#[derive(Debug, Clone, Default)]
pub struct Debounce {
    /// The `debounce` keyword.
    pub span: Span,
    pub key: Option<Spanned<LimitKey>>,
    pub window: Option<Spanned<Duration>>,
    pub mode: Option<Spanned<DebounceMode>>,
    pub max_wait: Option<Spanned<Duration>>,
}

/// A queue's `unique { for states by }`; a setting written wrong is `None`, as if left out.
#[derive(Debug, Clone, Default)]
pub struct Unique {
    /// The `unique` keyword.
    pub span: Span,
    /// `for`.
    pub window: Option<Spanned<Duration>>,
    pub states: Option<Spanned<Vec<UniqueState>>>,
    pub by: Option<Spanned<Vec<UniqueBy>>>,
}

/// A queue's `rate_limit { jobs per burst }` (a service's is [`RateLimit`]).
#[derive(Debug, Clone, Default)]
pub struct QueueRateLimit {
    /// The `rate_limit` keyword.
    pub span: Span,
    pub jobs: Option<Spanned<u32>>,
    pub per: Option<Spanned<Duration>>,
    pub burst: Option<Spanned<u32>>,
}

/// A queue's `concurrency_limit { max key }`.
#[derive(Debug, Clone, Default)]
pub struct ConcurrencyLimit {
    /// The `concurrency_limit` keyword.
    pub span: Span,
    pub max: Option<Spanned<u32>>,
    pub key: Option<Spanned<LimitKey>>,
}

/// `backoff { initial max multiplier jitter }`.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    pub span: Span,
    pub initial: Option<Spanned<Duration>>,
    pub max: Option<Spanned<Duration>>,
    pub multiplier: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
}

/// `retention { succeeded failed dead }`.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub succeeded: Option<Spanned<Duration>>,
    pub failed: Option<Spanned<Duration>>,
    pub dead: Option<Spanned<Duration>>,
}

/// A `task` block.
#[derive(Debug, Clone, Default)]
pub struct Task {
    pub header: Header,
    pub queue: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<u32>>,
    pub timeout: Option<Spanned<Duration>>,
    /// The schedule; `Some` with `None` inside when it was written but is invalid.
    pub cron: Option<Spanned<Option<CronSchedule>>>,
    /// `type = "cron"`; the only value Raindrop defines.
    pub cron_type: Option<Span>,
    pub max_attempts: Option<Spanned<u32>>,
    pub autoscale: Option<Autoscale>,
}

/// `autoscale { min max target_wait }`.
#[derive(Debug, Clone, Default)]
pub struct Autoscale {
    pub span: Span,
    pub min: Option<Spanned<u32>>,
    pub max: Option<Spanned<u32>>,
    pub target_wait: Option<Spanned<Duration>>,
}

/// A `kv_cache` block (or a deprecated `kv_store`).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub header: Header,
    pub ttl: Option<Spanned<Duration>>,
}

/// An `observer` block.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    pub header: Header,
    pub source: Option<Source>,
    pub queues: Option<Vec<Spanned<String>>>,
    pub alerts: Vec<Alert>,
    pub sinks: Vec<Sink>,
}

/// `sink "name" { url format secret_env auth }`.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: Spanned<String>,
    pub span: Span,
    pub url: Option<Spanned<String>>,
    pub format: Option<Spanned<SinkFormat>>,
    pub secret_env: Option<Spanned<String>>,
    pub auth: Option<Spanned<SinkAuth>>,
}

/// `source { queue | bucket, batch_size, rule { actions } }`.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub span: Span,
    pub queue: Option<Spanned<String>>,
    pub bucket: Option<Spanned<String>>,
    pub batch_size: Option<Spanned<u32>>,
    pub actions: Vec<Spanned<BucketAction>>,
}

/// `alert "name" { metric threshold window }`.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: Spanned<String>,
    pub span: Span,
    pub metric: Option<Spanned<AlertMetric>>,
    pub threshold: Option<Spanned<f64>>,
    pub window: Option<Spanned<Duration>>,
    pub comparison: Option<Spanned<Comparison>>,
    pub pending_for: Option<Spanned<Duration>>,
    pub severity: Option<Spanned<Severity>>,
}

/// An `env "NAME" { secret default }` block.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub header: Header,
    pub secret: Option<Spanned<bool>>,
    pub default: Option<Spanned<String>>,
    /// The service it was declared in, if any.
    pub service: Option<String>,
}

/// A block of a kind this runtime does not run (`bucket`, `actor`, …).
#[derive(Debug, Clone, Default)]
pub struct Unsupported {
    pub header: Header,
}
