//! The checked, normalized application: every default filled in and every wire resolved.
//!
//! This is what the runtime starts from, what `raindrop inspect` prints and what code generation
//! reads. Nothing here refers back to HCL.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::name::Name;
use crate::value::{ByteSize, CronSchedule, Duration};

/// A whole application, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    /// The application's name.
    pub name: Name,
    /// HTTP job APIs.
    pub services: Vec<Service>,
    /// Durable job queues.
    pub queues: Vec<Queue>,
    /// Worker pools and scheduled tasks.
    pub tasks: Vec<Task>,
    /// Key/value caches.
    pub kv_caches: Vec<KvCache>,
    /// Monitors and queue consumers.
    pub observers: Vec<Observer>,
    /// Environment values every handler sees.
    pub env: Vec<EnvVar>,
    /// The kv_cache that holds job status, progress and results, if the manifest has one.
    pub status_cache: Option<Name>,
    /// Blocks this runtime parses but does not run.
    pub unsupported: Vec<UnsupportedBlock>,
    /// Where processes without the job API serve `/metrics`, `/healthz` and `/readyz`
    /// (`metrics_listen`; `None`: the runtime's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

impl Application {
    /// The queue called `name`.
    pub fn queue(&self, name: &Name) -> Option<&Queue> {
        self.queues.iter().find(|q| &q.name == name)
    }
}

/// A `service` block: the HTTP job API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: Name,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Raindrop's deployment visibility; informational for this runtime.
    pub visibility: Visibility,
    /// Raindrop's domain setting; informational for this runtime.
    pub domain: Option<Domain>,
    /// How requests authenticate.
    pub auth: Auth,
    /// Per-key token bucket, if any.
    pub rate_limit: Option<RateLimit>,
    /// Limits for each tenant, if any.
    pub quota: Option<Quota>,
    /// Limits on event streams (`GET /v1/jobs/{id}/events`).
    pub streams: Streams,
    /// Largest accepted request body.
    pub max_body: ByteSize,
    /// Queues whose jobs this service accepts and reports on.
    pub queues: Vec<Name>,
    /// Whether a proxy in front of the service says how clients connected
    /// (`X-Forwarded-Proto`, `X-Forwarded-For`); without it those headers are ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub behind_proxy: bool,
}

/// Raindrop's `visibility` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
    Protected,
    Application,
}

impl Visibility {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 4] = [
        ("public", Self::Public),
        ("private", Self::Private),
        ("protected", Self::Protected),
        ("application", Self::Application),
    ];
}

/// Raindrop's `domain { cname | fqdn }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    Cname(String),
    Fqdn(String),
}

/// How the service authenticates requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Auth {
    /// Every request is accepted (local development).
    None,
    /// Requests carry an API key; keys come from the named environment variable at startup.
    ApiKey {
        /// The environment variable (a secret) that holds the keys.
        keys_env: String,
    },
}

/// The manifest spelling of [`Auth`]'s mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    ApiKey,
}

impl AuthMode {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 2] = [("none", Self::None), ("api_key", Self::ApiKey)];
}

/// The environment variable that holds API keys unless `api_keys_env` says otherwise.
pub const DEFAULT_API_KEYS_ENV: &str = "RAINDROP_API_KEYS";

/// A token bucket: `requests` per `per`, bursting up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

/// How many Server-Sent Event streams may be open at once, and for how long each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Streams {
    /// Most streams one API key (without authentication: all callers together) may have open.
    pub per_key: u32,
    /// Most streams open on one service process.
    pub total: u32,
    /// A stream ends after this long with a `retry:` hint; the client reconnects.
    pub lifetime: Duration,
}

/// Limits that apply to each tenant (each API key's tenant) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// Most jobs a tenant may have waiting (queued, scheduled or retrying) in one queue.
    pub max_queued: Option<u32>,
    /// Most jobs of a tenant running at once in one queue; more wait their turn.
    pub max_running: Option<u32>,
    /// Largest payload a tenant may submit.
    pub max_payload: Option<ByteSize>,
    /// Requested priorities are raised to at least this.
    pub min_priority: Option<i32>,
    /// Requested priorities are lowered to at most this.
    pub max_priority: Option<i32>,
}

/// A durable queue and the policy for its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub name: Name,
    /// Attempts before a job is dead-lettered (the first run counts).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long a claimed job stays leased without a heartbeat before it is recovered.
    pub visibility_timeout: Duration,
    pub retention: Retention,
    /// Largest accepted payload.
    pub max_message_size: ByteSize,
    /// Who pulls jobs from this queue.
    pub consumer: Option<Consumer>,
    /// At most this many jobs start per period, across every process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<QueueRateLimit>,
    /// At most this many jobs run at once, per key or for the whole queue, across every process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<ConcurrencyLimit>,
    /// Snoozes a job may take (`TaskError::snooze`) before its next snooze fails the attempt.
    #[serde(default = "default_max_snoozes")]
    pub max_snoozes: u32,
    /// A new job is the existing one while a job with the same key is in one of some states,
    /// or finished lately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Unique>,
}

/// A queue's `unique { for states by }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unique {
    /// A finished job with the key still makes a new one its duplicate for this long (`for`;
    /// default 0: only while in `states`).
    pub window: Duration,
    /// The states in which a job with the key makes a new one its duplicate (default: waiting
    /// and running).
    pub states: Vec<UniqueState>,
    /// What the key is made of (default: the kind and the whole payload); the tenant always.
    pub by: Vec<UniqueBy>,
}

/// A state of `unique { states }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniqueState {
    /// Queued, scheduled or retrying.
    Waiting,
    Running,
    Succeeded,
    /// A dead letter.
    Dead,
    Cancelled,
}

/// A part of a unique key (`unique { by }`): `"kind"`, `"payload"`, `"payload.FIELD"` (a
/// top-level field) or `"header.NAME"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", content = "name", rename_all = "snake_case")]
pub enum UniqueBy {
    Kind,
    Payload,
    PayloadField(String),
    Header(String),
}

/// The `max_snoozes` of a queue that does not set it.
pub const DEFAULT_MAX_SNOOZES: u32 = 100;

fn default_max_snoozes() -> u32 {
    DEFAULT_MAX_SNOOZES
}

/// A queue's `rate_limit { jobs per burst }`: a token bucket of starts shared by every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRateLimit {
    /// Jobs that may start per `per`.
    pub jobs: u32,
    /// The period.
    pub per: Duration,
    /// Jobs that may start at once after a quiet spell (default: `jobs`).
    pub burst: u32,
}

/// `concurrency_limit { max key }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyLimit {
    /// Most jobs running at once (per key, with a key).
    pub max: u32,
    /// What jobs are counted by; `None` counts the whole queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<LimitKey>,
}

/// Where a job's limit key comes from: `"header.NAME"` or `"payload.FIELD"` (a top-level field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", content = "name", rename_all = "snake_case")]
pub enum LimitKey {
    /// A header's value.
    Header(String),
    /// A top-level payload field: a string as it is, any other JSON value as JSON text.
    Payload(String),
}

/// Exponential backoff between attempts: `initial * multiplier^(attempt-1)`, capped at `max`,
/// each delay varied by up to `jitter` (a fraction) either way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub jitter: f64,
}

/// How long finished records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Succeeded jobs.
    pub succeeded: Duration,
    /// Cancelled jobs and failed cron runs.
    pub failed: Duration,
    /// Dead letters.
    pub dead: Duration,
}

/// The one block that pulls a queue's jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Consumer {
    /// A worker `task`.
    Task(Name),
    /// An `observer` with `source { queue }`.
    Observer(Name),
}

/// A `task` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub name: Name,
    /// Longest a single run may take before it is cancelled and fails.
    pub timeout: Duration,
    #[serde(flatten)]
    pub role: TaskRole,
}

/// What starts a task's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskRole {
    /// A pool of workers that pull jobs from a queue.
    Worker {
        queue: Name,
        /// Jobs run at once per process (the starting point with `autoscale`).
        concurrency: u32,
        /// Concurrency that follows the backlog, between `min` and `max`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        autoscale: Option<Autoscale>,
    },
    /// A schedule.
    Cron {
        schedule: CronSchedule,
        /// Attempts per tick (1: a failed run waits for the next tick).
        max_attempts: u32,
    },
}

/// `autoscale { min max target_wait }`: a worker pool's concurrency follows its backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// The pool grows while the oldest ready job has waited longer than this and every slot
    /// is busy.
    pub target_wait: Duration,
}

/// A key/value cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvCache {
    pub name: Name,
    /// Default lifetime of entries written without one; none keeps them.
    pub ttl: Option<Duration>,
}

/// An `observer` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observer {
    pub name: Name,
    #[serde(flatten)]
    pub role: ObserverRole,
}

/// Raindrop's two readings of `observer`, and the bucket observer this runtime does not run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ObserverRole {
    /// Events, metrics, recovery and dead letters of the named queues.
    Monitor {
        queues: Vec<Name>,
        alerts: Vec<Alert>,
        /// Where alerts are sent when they fire and resolve.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sinks: Vec<Sink>,
    },
    /// Consumes a queue's messages in batches.
    Consumer { queue: Name, batch_size: u32 },
    /// Reacts to object events of a bucket (parsed; not run).
    Bucket {
        bucket: Name,
        actions: Vec<BucketAction>,
    },
}

/// An alert rule: fires when `metric` is `comparison` `threshold` (measured over `window`)
/// and has been for `for`; resolves when it no longer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub name: Name,
    pub metric: AlertMetric,
    #[serde(default)]
    pub comparison: Comparison,
    pub threshold: f64,
    pub window: Duration,
    /// How long the condition must hold before the alert fires; none: at once.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub pending_for: Option<Duration>,
    #[serde(default)]
    pub severity: Severity,
}

/// What an alert watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// Jobs waiting (queued or scheduled).
    QueueDepth,
    /// Age of the oldest waiting job, in seconds.
    OldestJobAge,
    /// Failed attempts over attempts in the window, 0 to 1.
    ErrorRate,
    /// Jobs dead-lettered in the window.
    DeadLetters,
    /// Jobs finished per second over the window.
    Throughput,
    /// Live worker pools pulling the queue, in every process sharing the store.
    WorkersAlive,
    /// Retries scheduled per second over the window.
    RetryRate,
    /// 99th percentile of the wait (due time to start) of attempts started in the window, in
    /// seconds.
    WaitP99,
}

impl AlertMetric {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 8] = [
        ("queue_depth", Self::QueueDepth),
        ("oldest_job_age", Self::OldestJobAge),
        ("error_rate", Self::ErrorRate),
        ("dead_letters", Self::DeadLetters),
        ("throughput", Self::Throughput),
        ("workers_alive", Self::WorkersAlive),
        ("retry_rate", Self::RetryRate),
        ("wait_p99", Self::WaitP99),
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(n, _)| n)
    }
}

/// How an alert compares its metric with the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Fires while the value is greater than the threshold.
    #[default]
    Above,
    /// Fires while the value is less than the threshold.
    Below,
}

impl Comparison {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 2] = [("above", Self::Above), ("below", Self::Below)];

    /// Whether `value` meets the condition against `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Above => value > threshold,
            Self::Below => value < threshold,
        }
    }

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Above => "above",
            Self::Below => "below",
        }
    }
}

/// How urgent an alert is (PagerDuty's four levels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 4] = [
        ("critical", Self::Critical),
        ("error", Self::Error),
        ("warning", Self::Warning),
        ("info", Self::Info),
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// Where a monitor sends its alerts: a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sink {
    pub name: Name,
    /// The endpoint, `http://…`.
    pub url: String,
    pub format: SinkFormat,
    /// The secret env value: a bearer token or HMAC key (`json`), the routing key
    /// (`pagerduty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// How a `json` sink uses its secret.
    #[serde(default)]
    pub auth: SinkAuth,
}

/// The body a sink sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// Raindrop's alert event as JSON.
    #[default]
    Json,
    /// A Slack-compatible `{"text": …}` message.
    Slack,
    /// A PagerDuty Events API v2 event (trigger and resolve, with a dedup key).
    Pagerduty,
}

impl SinkFormat {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 3] = [
        ("json", Self::Json),
        ("slack", Self::Slack),
        ("pagerduty", Self::Pagerduty),
    ];
}

/// How a `json` sink presents its secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkAuth {
    /// `Authorization: Bearer SECRET`.
    #[default]
    Bearer,
    /// `X-Raindrop-Signature: sha256=HEX`, the HMAC-SHA256 of the body under the secret.
    Hmac,
}

impl SinkAuth {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 2] = [("bearer", Self::Bearer), ("hmac", Self::Hmac)];
}

/// The object events a Raindrop bucket observer may react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketAction {
    PutObject,
    CopyObject,
    CompleteMultipartUpload,
    DeleteObject,
    LifecycleDeletion,
}

impl BucketAction {
    /// Every value with its manifest spelling.
    pub const ALL: [(&'static str, Self); 5] = [
        ("PutObject", Self::PutObject),
        ("CopyObject", Self::CopyObject),
        ("CompleteMultipartUpload", Self::CompleteMultipartUpload),
        ("DeleteObject", Self::DeleteObject),
        ("LifecycleDeletion", Self::LifecycleDeletion),
    ];
}

/// An `env` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// The variable's name, as in the process environment.
    pub name: String,
    /// Never logged or shown; required at startup.
    pub secret: bool,
    /// Used when the variable is not set.
    pub default: Option<String>,
}

/// A block of a kind this runtime does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedBlock {
    pub kind: String,
    pub name: String,
}
