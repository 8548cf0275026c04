//! The Redis store: many processes on many hosts share one Redis, or one Redis Cluster.
//!
//! Every state transition is one Lua script (the `.lua` files beside this one, loaded once and
//! called by SHA). All keys of a queue share the hash tag `{queue}`, so each script touches one
//! slot and Redis Cluster works:
//!
//! | key (`P` is the prefix, `raindrop` unless the URL says `?prefix=`) | what |
//! |---|---|
//! | `P:{q}:j:ID` (hash) | the job: fields named in `decode_job` |
//! | `P:{q}:ready` (zset) | queued jobs without a tenant by priority, then run time, then id |
//! | `P:{q}:rt:TENANT` (zset) | a tenant's queued jobs, in the same order |
//! | `P:{q}:tenants` (set) | tenants with queued jobs, for fair claiming |
//! | `P:{q}:turns`, `P:{q}:running` (hashes) | when each tenant was last served; its running jobs |
//! | `P:{q}:delayed` (zset) | scheduled and retrying jobs by run time |
//! | `P:{q}:leases` (zset) | running jobs by lease expiry: recovery, listings and counts; while any run, a keeper member scored +inf keeps it a skip list |
//! | `P:{q}:running-count` (string) | how many jobs run; differing from `leases`, a running job lost its lease entry |
//! | `P:{q}:s:STATE` (zset, lexicographic) | ids per state but running: listings and counts |
//! | `P:{q}:t:STATE` (zset) | finished jobs by finish time: retention |
//! | `P:{q}:failures` (zset) | failed attempts by time: failure rates |
//! | `P:{q}:events` (stream, capped) | lifecycle events, a stream entry per script call (a field per event) |
//! | `P:{q}:idem` (hash) | idempotency key → id |
//! | `P:{q}:paused` | present while the queue is paused |
//! | `P:queues`, `P:paused` (sets), `P:where` (hash id → queue) | what spans queues |
//! | `P:kv:{ns}:e:KEY` (hash), `P:kv:{ns}:keys`, `P:kv:{ns}:exp` (zsets) | key/value entries |
//! | `P:cron:TASK:TICK` (string, expires) | a claimed cron tick |
//! | `P:rate:{KEY}` (string, expires) | a rate-limit bucket's next arrival time |
//!
//! Workers idle on a pub/sub subscription (`P:wake`) that enqueues publish to, not on a poll.
//! When Redis goes away every operation fails with a store error that the engine retries with
//! backoff; the outage is logged once when it starts and once, with its length, when it ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::DateTime;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Script, Value};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    AfterFailure, CancelOutcome, CronTicks, DeadLetters, Enqueued, EventLog, JobFilter, JobStatus,
    JobStore, KvEntry, KvKey, KvPage, KvStore, LeaseStatus, Page, Purged, QueueControl, Recovered,
    Retention, RetentionPolicy, StateCounts, StatusCache,
};
use super::{ClaimLimits, status};
use crate::error::{Error, Result, StoreErrorKind};
use crate::event::{Event, EventKind};
use crate::job::{
    Attempt, Job, JobError, JobId, JobState, Lease, NewJob, Payload, Progress, Timestamp,
};

/// Jobs a script takes on in one call when it sweeps (recovery, promotion, retention).
const SWEEP: usize = 1000;
/// Bits of an event's seq below its stream entry's millisecond: the entry's sequence number
/// within the millisecond, then the event's place in the entry.
const SEQ_BITS: u32 = 20;
/// Bits of an event's seq that hold its place within its stream entry (`common.lua` puts at
/// most 100 events in one). The 13 bits above them number the entries of one millisecond:
/// 8,192, beyond which (a clock stepping back by seconds) later entries share a seq.
const PLACE_BITS: u32 = 7;
/// How long a claimed cron tick is remembered.
const TICK_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

macro_rules! queue_script {
    ($file:literal) => {
        Script::new(concat!(include_str!("common.lua"), include_str!($file)))
    };
}

/// The scripts, each loaded once and then called by SHA.
struct Scripts {
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    progress: Script,
    complete: Script,
    fail: Script,
    release: Script,
    cancel: Script,
    recover: Script,
    lost: Script,
    promote: Script,
    retry_dead: Script,
    purge: Script,
    purge_dead: Script,
    oldest: Script,
    kv_put: Script,
    kv_delete: Script,
    kv_list: Script,
    kv_purge: Script,
    rate: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            enqueue: queue_script!("enqueue.lua"),
            claim: queue_script!("claim.lua"),
            heartbeat: queue_script!("heartbeat.lua"),
            progress: queue_script!("progress.lua"),
            complete: queue_script!("complete.lua"),
            fail: queue_script!("fail.lua"),
            release: queue_script!("release.lua"),
            cancel: queue_script!("cancel.lua"),
            recover: queue_script!("recover.lua"),
            lost: queue_script!("lost.lua"),
            promote: queue_script!("promote.lua"),
            retry_dead: queue_script!("retry_dead.lua"),
            purge: queue_script!("purge.lua"),
            purge_dead: queue_script!("purge_dead.lua"),
            oldest: queue_script!("oldest.lua"),
            kv_put: Script::new(include_str!("kv_put.lua")),
            kv_delete: Script::new(include_str!("kv_delete.lua")),
            kv_list: Script::new(include_str!("kv_list.lua")),
            kv_purge: Script::new(include_str!("kv_purge.lua")),
            rate: Script::new(include_str!("rate.lua")),
        }
    }

    fn all(&self) -> [&Script; 20] {
        [
            &self.lost,
            &self.enqueue,
            &self.claim,
            &self.heartbeat,
            &self.progress,
            &self.complete,
            &self.fail,
            &self.release,
            &self.cancel,
            &self.recover,
            &self.promote,
            &self.retry_dead,
            &self.purge,
            &self.purge_dead,
            &self.oldest,
            &self.kv_put,
            &self.kv_delete,
            &self.kv_list,
            &self.kv_purge,
            &self.rate,
        ]
    }
}

/// A connection to one Redis or to a cluster; cheap to clone, reconnects by itself.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the store connects, parsed from `redis://…` or `redis-cluster://host:port,host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// One URL per node to start from (one unless it is a cluster).
    nodes: Vec<String>,
    cluster: bool,
    prefix: String,
}

impl RedisUrl {
    /// Parses a store URL. `?prefix=NAME` sets the key prefix (default `raindrop`).
    pub fn parse(url: &str) -> Result<Self> {
        let (url, query) = url.split_once('?').unwrap_or((url, ""));
        let mut prefix = "raindrop".to_owned();
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", value)) if !value.is_empty() && !value.contains(['{', '}']) => {
                    prefix = value.to_owned();
                }
                Some(("prefix", _)) => {
                    return Err(Error::Config(
                        "the Redis key prefix must be non-empty and free of `{` and `}`".into(),
                    ));
                }
                _ => rest.push(pair),
            }
        }
        let query = if rest.is_empty() {
            String::new()
        } else {
            format!("?{}", rest.join("&"))
        };
        if let Some(hosts) = url.strip_prefix("redis-cluster://") {
            let hosts = hosts.trim_end_matches('/');
            let (auth, hosts) = match hosts.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), hosts),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}{query}"))
                .collect();
            if nodes.is_empty() {
                return Err(Error::Config(
                    "a Redis Cluster URL names at least one node: redis-cluster://HOST:PORT,…"
                        .into(),
                ));
            }
            return Ok(Self {
                nodes,
                cluster: true,
                prefix,
            });
        }
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
        {
            return Err(Error::Config(format!(
                "`{}` is not a Redis URL",
                super::redact_url(url)
            )));
        }
        Ok(Self {
            nodes: vec![format!("{url}{query}")],
            cluster: false,
            prefix,
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL with any password hidden, for messages and logs.
    pub fn redacted(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| super::redact_url(n)).collect();
        if self.cluster {
            format!("cluster {}", nodes.join(","))
        } else {
            nodes.join(",")
        }
    }
}

/// Logs each outage once when it starts and once, with its length, when it ends.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Health {
    fn up(&self) {
        if self.down.load(Ordering::Relaxed) {
            let since = self.since.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.down.store(false, Ordering::Relaxed);
            if let Some(since) = since {
                tracing::warn!(
                    outage_ms = since.elapsed().as_millis() as u64,
                    "Redis is reachable again after {:.1?}",
                    since.elapsed()
                );
            }
        }
    }

    fn failed(&self, err: &redis::RedisError) {
        let connection = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout();
        if connection && !self.down.swap(true, Ordering::Relaxed) {
            *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::error!(error = %err, "Redis is unreachable; store operations fail and are retried until it is back");
        }
    }
}

/// What every part of the store shares, the completion batcher included.
struct Shared {
    conn: Conn,
    url: RedisUrl,
    scripts: Scripts,
    health: Health,
    /// Keys of each queue, in the order the scripts take them.
    keys: Mutex<HashMap<String, Arc<[String]>>>,
}

/// The Redis store.
pub struct RedisStore {
    shared: Arc<Shared>,
    status: Option<StatusCache>,
    /// The queue of jobs this process enqueued or claimed, so transitions skip a lookup.
    queue_of: Mutex<HashMap<JobId, Arc<str>>>,
    notify: Arc<Notify>,
    wakes: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    completions: mpsc::UnboundedSender<Completion>,
    stop: CancellationToken,
    /// When each queue's records were last looked through for lost lease entries.
    lost_scans: Mutex<HashMap<String, Instant>>,
}

/// A job to finish, waiting for the next batch.
struct Completion {
    queue: Arc<str>,
    id: JobId,
    token: u64,
    result: Payload,
    now: Timestamp,
    reply: oneshot::Sender<Result<()>>,
}

/// How often, at most, a queue's records are looked through for lost lease entries.
const LOST_LEASE_SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Completions sent in one script call at most.
const COMPLETION_BATCH: usize = 256;
/// Completion batches sent at once, at most.
const COMPLETIONS_IN_FLIGHT: usize = 4;

/// Finishes jobs in batches: completions that arrive while a batch is in flight go together in
/// the next one, so a busy worker pool costs Redis one script call per batch, not per job.
async fn complete_batches(
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    mut incoming: mpsc::UnboundedReceiver<Completion>,
) {
    // Batches in flight at once: while one waits for its answer, Redis runs another, and
    // completions arriving meanwhile gather into the next.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(COMPLETIONS_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = incoming.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < COMPLETION_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut by_queue: HashMap<Arc<str>, Vec<Completion>> = HashMap::new();
        for completion in batch {
            by_queue
                .entry(completion.queue.clone())
                .or_default()
                .push(completion);
        }
        let (shared, notify) = (shared.clone(), notify.clone());
        tokio::spawn(async move {
            for (queue, completions) in by_queue {
                match shared.complete_in(&queue, &completions).await {
                    Ok(answers) => {
                        for (completion, answer) in completions.into_iter().zip(answers) {
                            let _ = completion
                                .reply
                                .send(answer_to_result(completion.id, &answer));
                        }
                    }
                    Err(err) => {
                        let kind = err.store_kind().unwrap_or(StoreErrorKind::Internal);
                        let message = err.to_string();
                        for completion in completions {
                            let failed = Error::store("complete", kind, message.clone());
                            let _ = completion.reply.send(Err(failed));
                        }
                    }
                }
            }
            notify.notify_waiters();
            drop(permit);
        });
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shared.url.redacted())
            .field("prefix", &self.shared.url.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Cached queue lookups kept at most; the cache is cleared when it grows past this.
const QUEUE_CACHE: usize = 200_000;

fn ms(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

fn from_ms(ms: i64) -> Result<Timestamp> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| store_err("read", format!("timestamp {ms} ms is out of range")))
}

/// A Redis failure of `op`, of the kind the error says.
fn redis_err(op: &'static str, err: RedisError) -> Error {
    Error::store(op, redis_kind(&err), err)
}

/// How a Redis error failed: unreachable, slow, refused, or a reply we cannot read.
fn redis_kind(err: &RedisError) -> StoreErrorKind {
    if err.is_timeout() {
        StoreErrorKind::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        StoreErrorKind::Unavailable
    } else if matches!(
        err.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) {
        StoreErrorKind::Corrupt
    } else {
        StoreErrorKind::Refused
    }
}

/// A value read from Redis that does not decode: a record of the wrong shape.
fn store_err(op: &'static str, err: impl std::fmt::Display) -> Error {
    Error::store(op, StoreErrorKind::Corrupt, err.to_string())
}

impl RedisStore {
    /// Connects to the Redis (or cluster) `url` names and loads the scripts. An unreachable
    /// Redis is an error naming the URL (without its password).
    pub async fn open(url: &str, status: Option<StatusCache>) -> Result<Self> {
        let url = RedisUrl::parse(url)?;
        let unreachable = |err: redis::RedisError| {
            Error::Config(format!("cannot reach Redis at {}: {err}", url.redacted()))
        };
        let connect = async {
            if url.cluster {
                let client = redis::cluster::ClusterClient::builder(url.nodes.clone())
                    .connection_timeout(Duration::from_secs(5))
                    .response_timeout(Duration::from_secs(30))
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(url.nodes[0].as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(30)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        };
        let mut conn = match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => return Err(unreachable(err)),
            Err(_) => {
                return Err(Error::Config(format!(
                    "cannot reach Redis at {}: no answer within 15 s",
                    url.redacted()
                )));
            }
        };
        let scripts = Scripts::new();
        for script in scripts.all() {
            if url.cluster {
                // Every node needs the scripts; the first call on a node loads them there.
                break;
            }
            script.load_async(&mut conn).await.map_err(unreachable)?;
        }
        let shared = Arc::new(Shared {
            conn,
            url,
            scripts,
            health: Health::default(),
            keys: Mutex::default(),
        });
        let notify = Arc::new(Notify::new());
        let (completions, incoming) = mpsc::unbounded_channel();
        tokio::spawn(complete_batches(shared.clone(), notify.clone(), incoming));
        let store = Self {
            shared,
            status,
            queue_of: Mutex::default(),
            notify,
            wakes: Arc::default(),
            completions,
            stop: CancellationToken::new(),
            lost_scans: Mutex::new(HashMap::new()),
        };
        store.subscribe_wakes();
        Ok(store)
    }

    /// The key prefix this store uses.
    pub fn prefix(&self) -> &str {
        &self.shared.url.prefix
    }
}

impl Shared {
    fn global(&self, name: &str) -> String {
        format!("{}:{name}", self.url.prefix)
    }

    fn wake_channel(&self) -> String {
        self.global("wake")
    }

    /// The fixed keys of `queue`, in the order `common.lua` takes them.
    fn keys(&self, queue: &str) -> Arc<[String]> {
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = cache.get(queue) {
            return keys.clone();
        }
        let base = format!("{}:{{{queue}}}:", self.url.prefix);
        let mut keys: Vec<String> = [
            "ready", "delayed", "leases", "events", "idem", "paused", "failures",
        ]
        .iter()
        .map(|k| format!("{base}{k}"))
        .collect();
        keys.extend(JobState::ALL.iter().map(|s| format!("{base}s:{s}")));
        keys.extend(
            [JobState::Succeeded, JobState::Dead, JobState::Cancelled]
                .iter()
                .map(|s| format!("{base}t:{s}")),
        );
        keys.push(format!("{base}j:"));
        keys.extend(
            ["tenants", "turns", "running", "rt:", "running-count"]
                .iter()
                .map(|k| format!("{base}{k}")),
        );
        let keys: Arc<[String]> = keys.into();
        cache.insert(queue.to_owned(), keys.clone());
        keys
    }

    fn job_key(&self, queue: &str, id: &str) -> String {
        format!("{}{id}", self.keys(queue)[17])
    }

    fn state_key(&self, queue: &str, state: JobState) -> String {
        let index = JobState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or_default();
        self.keys(queue)[7 + index].clone()
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    fn check<T>(&self, op: &'static str, result: RedisResult<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.health.up();
                Ok(value)
            }
            Err(err) => {
                self.health.failed(&err);
                Err(redis_err(op, err))
            }
        }
    }

    /// Finishes `jobs` of `queue` in one script call; one answer per job.
    async fn complete_in(&self, queue: &str, jobs: &[Completion]) -> Result<Vec<String>> {
        let mut args: Vec<String> = Vec::with_capacity(jobs.len() * 4);
        for job in jobs {
            args.push(job.id.to_string());
            args.push(job.token.to_string());
            args.push(job.result.as_str().to_owned());
            args.push(ms(job.now).to_string());
        }
        self.run("complete", &self.scripts.complete, queue, &strings(&args))
            .await
    }

    /// Runs a queue script with the queue's keys.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        queue: &str,
        args: &[&(dyn ArgLike + Sync)],
    ) -> Result<T> {
        let keys = self.keys(queue);
        let mut invocation = script.prepare_invoke();
        for key in keys.iter() {
            invocation.key(key);
        }
        for arg in args {
            arg.add_to(&mut invocation);
        }
        let mut conn = self.conn();
        let result = invocation.invoke_async(&mut conn).await;
        self.check(op, result)
    }

    async fn query<T: redis::FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> Result<T> {
        let mut conn = self.conn();
        let result = cmd.query_async(&mut conn).await;
        self.check(op, result)
    }

    /// Runs `cmds` together: pipelined on one Redis; on a cluster, where a pipeline may not
    /// cross slots, each on its own, concurrently.
    async fn many<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let result = match &self.conn {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                let mut conn = self.conn();
                pipe.query_async(&mut conn).await
            }
            Conn::Cluster(_) => {
                futures_util::future::try_join_all(cmds.iter().map(|cmd| {
                    let mut conn = self.conn();
                    async move { cmd.query_async::<T>(&mut conn).await }
                }))
                .await
            }
        };
        self.check(op, result)
    }
}

impl RedisStore {
    fn remember(&self, id: JobId, queue: &Arc<str>) {
        let mut cache = self.queue_of.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= QUEUE_CACHE {
            cache.clear();
        }
        cache.insert(id, queue.clone());
    }

    fn forget(&self, id: JobId) {
        self.queue_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Every queue that ever had a job.
    async fn queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = self
            .shared
            .query(
                "list queues",
                redis::cmd("SMEMBERS").arg(self.shared.global("queues")),
            )
            .await?;
        queues.sort();
        Ok(queues)
    }

    /// The queue of job `id`, if the job exists (or existed recently).
    async fn locate(&self, id: JobId) -> Result<Option<Arc<str>>> {
        if let Some(queue) = self
            .queue_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(Some(queue.clone()));
        }
        let queue: Option<String> = self
            .shared
            .query(
                "locate job",
                redis::cmd("HGET")
                    .arg(self.shared.global("where"))
                    .arg(id.to_string()),
            )
            .await?;
        Ok(queue.map(|q| {
            let q: Arc<str> = q.into();
            self.remember(id, &q);
            q
        }))
    }

    async fn fetch(&self, queue: &str, id: JobId) -> Result<Option<Job>> {
        let fields: HashMap<String, String> = self
            .shared
            .query(
                "get job",
                redis::cmd("HGETALL").arg(self.shared.job_key(queue, &id.to_string())),
            )
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode_job(queue, id, fields).map(Some)
    }

    /// Jobs by (queue, id), in order, skipping the ones that are gone.
    async fn fetch_many(&self, ids: &[(Arc<str>, String)]) -> Result<Vec<Job>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = ids
            .iter()
            .map(|(queue, id)| {
                redis::cmd("HGETALL")
                    .arg(self.shared.job_key(queue, id))
                    .clone()
            })
            .collect();
        let all: Vec<HashMap<String, String>> = self.shared.many("get jobs", cmds).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for ((queue, id), fields) in ids.iter().zip(all) {
            if fields.is_empty() {
                continue;
            }
            let id: JobId = id.parse().map_err(|e| store_err("job id", e))?;
            jobs.push(decode_job(queue, id, fields)?);
        }
        Ok(jobs)
    }

    /// Ids from the lexicographic sets `sets` (each with its queue), merged in id order
    /// (descending unless `ascending`), strictly after `after` (or from `from` inclusive), up
    /// to about `batch` per set. Returns them and whether any set has more.
    async fn merged_ids(
        &self,
        sets: &[(Arc<str>, IdSet)],
        bound: Bound<'_>,
        ascending: bool,
        batch: usize,
    ) -> Result<(Vec<(Arc<str>, String)>, bool)> {
        let mut cmds = Vec::with_capacity(sets.len());
        for (_, set) in sets {
            let key = match set {
                IdSet::Lex(key) => key,
                IdSet::Leases(key) => {
                    // By score, short of +inf: the keeper member (`common.lua`) is no job.
                    let cmd = redis::cmd("ZRANGE")
                        .arg(key)
                        .arg("-inf")
                        .arg("(+inf")
                        .arg("BYSCORE")
                        .clone();
                    cmds.push(cmd);
                    continue;
                }
            };
            let (start, end) = match (&bound, ascending) {
                (Bound::After(id), true) => (format!("({id}"), "+".to_owned()),
                (Bound::From(id), true) => (format!("[{id}"), "+".to_owned()),
                (Bound::Start, true) => ("-".to_owned(), "+".to_owned()),
                (Bound::After(id), false) => (format!("({id}"), "-".to_owned()),
                (Bound::From(id), false) => (format!("[{id}"), "-".to_owned()),
                (Bound::Start, false) => ("+".to_owned(), "-".to_owned()),
            };
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(key).arg(start).arg(end).arg("BYLEX");
            if !ascending {
                cmd.arg("REV");
            }
            cmd.arg("LIMIT").arg(0).arg(batch);
            cmds.push(cmd);
        }
        let mut answers: Vec<Vec<String>> = self.shared.many("list ids", cmds).await?;
        for ((_, set), ids) in sets.iter().zip(&mut answers) {
            if let IdSet::Leases(_) = set {
                ids.retain(|id| bound.admits(id, ascending));
                ids.sort_unstable_by(|a, b| if ascending { a.cmp(b) } else { b.cmp(a) });
                ids.truncate(batch);
            }
        }
        // Past the last id of a set that filled its batch, that set may hold ids not read yet:
        // only ids up to the nearest such boundary are complete.
        let mut horizon: Option<String> = None;
        for ids in &answers {
            if ids.len() >= batch
                && let Some(last) = ids.last()
            {
                let nearer = match &horizon {
                    None => true,
                    Some(h) if ascending => last < h,
                    Some(h) => last > h,
                };
                if nearer {
                    horizon = Some(last.clone());
                }
            }
        }
        let mut seen = HashSet::new();
        let mut merged: Vec<(Arc<str>, String)> = Vec::new();
        for ((queue, _), ids) in sets.iter().zip(answers) {
            for id in ids {
                let within = match &horizon {
                    None => true,
                    Some(h) if ascending => id <= *h,
                    Some(h) => id >= *h,
                };
                if within && seen.insert(id.clone()) {
                    merged.push((queue.clone(), id));
                }
            }
        }
        if ascending {
            merged.sort_by(|a, b| a.1.cmp(&b.1));
        } else {
            merged.sort_by(|a, b| b.1.cmp(&a.1));
        }
        Ok((merged, horizon.is_some()))
    }

    /// Jobs passing `keep`, from the state sets of `queues` and `states`, in id order.
    async fn scan_jobs(
        &self,
        queues: &[String],
        states: &[JobState],
        start: Bound<'_>,
        ascending: bool,
        limit: usize,
        mut keep: impl FnMut(&Job) -> bool,
    ) -> Result<Vec<Job>> {
        let mut sets: Vec<(Arc<str>, IdSet)> = Vec::new();
        for queue in queues {
            let queue: Arc<str> = queue.as_str().into();
            for state in states {
                // Running jobs of an earlier layout stay in their state set until they stop.
                let lex = IdSet::Lex(self.shared.state_key(&queue, *state));
                sets.push((queue.clone(), lex));
                if *state == JobState::Running {
                    let leases = IdSet::Leases(self.shared.keys(&queue)[2].clone());
                    sets.push((queue.clone(), leases));
                }
            }
        }
        let batch = (limit + 1).clamp(1, 1000);
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let bound = cursor.as_deref().map_or(start, Bound::After);
            let (ids, more) = self.merged_ids(&sets, bound, ascending, batch).await?;
            for job in self.fetch_many(&ids).await? {
                if keep(&job) {
                    found.push(job);
                    if found.len() > limit {
                        return Ok(found);
                    }
                }
            }
            match ids.last() {
                Some((_, last)) if more => cursor = Some(last.clone()),
                _ => return Ok(found),
            }
        }
    }

    /// When the running count of `queue` and its lease entries disagree, a running job lost
    /// its lease entry (a partial restore, a hand edit): looks through the queue's records and
    /// gives each such job an expired lease, for recovery to take back. The two are compared
    /// in one script; a look through the records happens at most once a minute per queue
    /// (while processes of an earlier version, which keep no count, still run, the two
    /// disagree at every recovery).
    async fn find_lost_leases(&self, queue: &str) -> Result<()> {
        let recently = self
            .lost_scans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .is_some_and(|at| at.elapsed() < LOST_LEASE_SCAN_INTERVAL);
        if recently {
            return Ok(());
        }
        let mut cursor = "0".to_owned();
        let mut found = 0;
        loop {
            let (next, n, looked): (String, u64, u8) = self
                .shared
                .run(
                    "find lost leases",
                    &self.shared.scripts.lost,
                    queue,
                    &[&cursor],
                )
                .await?;
            if looked == 0 {
                return Ok(());
            }
            if cursor == "0" {
                self.lost_scans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(queue.to_owned(), Instant::now());
            }
            found += n;
            if next == "0" {
                break;
            }
            cursor = next;
        }
        if found > 0 {
            tracing::warn!(
                queue,
                found,
                "running jobs without a lease entry found; they are taken back as if their lease had expired"
            );
        }
        Ok(())
    }

    fn subscribe_wakes(&self) {
        let client = match redis::Client::open(self.shared.url.nodes[0].as_str()) {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "workers will poll: cannot subscribe to enqueue notifications");
                return;
            }
        };
        let (channel, wakes, stop) = (
            self.shared.wake_channel(),
            self.wakes.clone(),
            self.stop.clone(),
        );
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let pubsub = tokio::select! {
                    () = stop.cancelled() => return,
                    pubsub = subscribed => pubsub,
                };
                match pubsub {
                    Ok(mut pubsub) => {
                        backoff = Duration::from_millis(100);
                        // Jobs may have arrived while unsubscribed: wake every worker once.
                        for notify in wakes.lock().unwrap_or_else(|p| p.into_inner()).values() {
                            notify.notify_waiters();
                        }
                        let mut messages = pubsub.on_message();
                        loop {
                            let message = tokio::select! {
                                () = stop.cancelled() => return,
                                message = futures_util::StreamExt::next(&mut messages) => message,
                            };
                            let Some(message) = message else { break };
                            let queue: String = message.get_payload().unwrap_or_default();
                            if let Some(notify) =
                                wakes.lock().unwrap_or_else(|p| p.into_inner()).get(&queue)
                            {
                                notify.notify_waiters();
                            }
                        }
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "enqueue notifications unavailable; retrying");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }
}

/// Script arguments from strings.
fn strings(args: &[String]) -> Vec<&(dyn ArgLike + Sync)> {
    args.iter().map(|a| a as &(dyn ArgLike + Sync)).collect()
}

/// Where a listing starts.
#[derive(Debug, Clone, Copy)]
enum Bound<'a> {
    Start,
    After(&'a str),
    From(&'a str),
}

impl Bound<'_> {
    /// Whether `id` lies past the bound, going up (`ascending`) or down.
    fn admits(&self, id: &str, ascending: bool) -> bool {
        match (self, ascending) {
            (Bound::Start, _) => true,
            (Bound::After(b), true) => id > *b,
            (Bound::After(b), false) => id < *b,
            (Bound::From(b), true) => id >= *b,
            (Bound::From(b), false) => id <= *b,
        }
    }
}

/// A set of job ids a listing reads.
#[derive(Debug, Clone)]
enum IdSet {
    /// A sorted set whose members share one score: read in id order by range.
    Lex(String),
    /// The leases (running jobs, scored by lease expiry): read whole, then ordered. It holds
    /// no more jobs than the workers run at once.
    Leases(String),
}

/// A script argument.
trait ArgLike {
    fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>);
}

impl<T: redis::ToRedisArgs> ArgLike for T {
    fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation.arg(self);
    }
}

/// Turns a transition script's answer into the store's result.
fn answer_to_result(id: JobId, answer: &str) -> Result<()> {
    match answer {
        "ok" => Ok(()),
        "missing" => Err(Error::NotFound(id)),
        _ => Err(Error::LeaseLost(id)),
    }
}

/// A closed attempt as the scripts write it: times in milliseconds.
#[derive(Deserialize)]
struct StoredAttempt {
    number: u32,
    worker: String,
    started_at: i64,
    finished_at: Option<i64>,
    error: Option<JobError>,
}

fn field<T: std::str::FromStr>(fields: &HashMap<String, String>, name: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    fields
        .get(name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| store_err("decode job", format!("field `{name}` = {v:?}: {e}")))
        })
        .transpose()
}

fn time_field(fields: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>> {
    field::<i64>(fields, name)?.map(from_ms).transpose()
}

fn json_field<T: serde::de::DeserializeOwned>(
    fields: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>> {
    fields
        .get(name)
        .map(|v| serde_json::from_str(v).map_err(|e| store_err("decode job", e)))
        .transpose()
}

/// A job from its hash. Fields: `k` kind, `p` payload, `pr` priority, `ra` run at, `a` attempt,
/// `ma` max attempts, `to` timeout ms, `ik` idempotency key, `tn` tenant, `h` headers, `s`
/// state, `ca`/`sa`/`fa` created/started/finished at, `pg` progress, `r` result, `e` error,
/// `at` closed attempts, `cw`/`cs` the last attempt's worker and start while it is open (or, once
/// the job succeeded, of the attempt that succeeded), `le` lease expiry, `tk` fencing token.
/// Times are milliseconds since the epoch.
fn decode_job(queue: &str, id: JobId, mut fields: HashMap<String, String>) -> Result<Job> {
    let required = |fields: &HashMap<String, String>, name: &str| -> Result<String> {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| store_err("decode job", format!("job {id} has no field `{name}`")))
    };
    let state: JobState = required(&fields, "s")?.parse()?;
    let attempt = field::<u32>(&fields, "a")?.unwrap_or(0);
    let mut attempts: Vec<Attempt> = json_field::<Vec<StoredAttempt>>(&fields, "at")?
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            Ok(Attempt {
                number: a.number,
                worker: a.worker,
                started_at: from_ms(a.started_at)?,
                finished_at: a.finished_at.map(from_ms).transpose()?,
                error: a.error,
            })
        })
        .collect::<Result<_>>()?;
    let open_worker: Option<String> = json_field(&fields, "cw")?;
    if let (Some(worker), Some(started_at)) = (&open_worker, time_field(&fields, "cs")?) {
        attempts.push(Attempt {
            number: attempt,
            worker: worker.clone(),
            started_at,
            finished_at: match state {
                JobState::Succeeded => time_field(&fields, "fa")?,
                _ => None,
            },
            error: None,
        });
    }
    let lease = match (
        state,
        open_worker,
        time_field(&fields, "le")?,
        field::<u64>(&fields, "tk")?,
    ) {
        (JobState::Running, Some(worker), Some(expires_at), Some(token)) => Some(Lease {
            worker,
            expires_at,
            token,
        }),
        _ => None,
    };
    Ok(Job {
        id,
        queue: queue.to_owned(),
        kind: required(&fields, "k")?,
        payload: Payload::trusted(required(&fields, "p")?),
        priority: field(&fields, "pr")?.unwrap_or(0),
        run_at: time_field(&fields, "ra")?.ok_or_else(|| store_err("decode job", "no run time"))?,
        attempt,
        max_attempts: field(&fields, "ma")?.unwrap_or(1),
        timeout: field::<u64>(&fields, "to")?.map(Duration::from_millis),
        idempotency_key: fields.remove("ik"),
        tenant: fields.remove("tn"),
        headers: json_field(&fields, "h")?.unwrap_or_default(),
        state,
        created_at: time_field(&fields, "ca")?
            .ok_or_else(|| store_err("decode job", "no creation time"))?,
        started_at: time_field(&fields, "sa")?,
        finished_at: time_field(&fields, "fa")?,
        progress: json_field(&fields, "pg")?,
        result: fields.remove("r").map(Payload::trusted),
        error: json_field(&fields, "e")?,
        attempts,
        lease,
    })
}

/// What `claim.lua` writes to each job it takes. Its answer holds the records as they were
/// before; `apply` makes the same writes to a record read back.
struct Taken<'a> {
    /// The worker, as a JSON string.
    worker: &'a str,
    now: i64,
    expires: i64,
}

impl Taken<'_> {
    fn apply(&self, fields: &mut HashMap<String, String>) -> Result<()> {
        let attempt = field::<u32>(fields, "a")?.unwrap_or(0) + 1;
        let token = field::<u64>(fields, "tk")?.unwrap_or(0) + 1;
        let now = self.now.to_string();
        fields.insert("s".into(), "running".into());
        fields.insert("a".into(), attempt.to_string());
        fields.insert("tk".into(), token.to_string());
        fields.insert("cw".into(), self.worker.to_owned());
        fields.insert("le".into(), self.expires.to_string());
        fields.entry("sa".into()).or_insert_with(|| now.clone());
        fields.insert("cs".into(), now);
        Ok(())
    }
}

/// Pairs of (id, record) from a flat claim answer, each record a JSON array of the names and
/// values `HGETALL` gave, with what the claim wrote applied.
fn decode_claimed(queue: &str, value: Value, taken: &Taken<'_>) -> Result<Vec<Job>> {
    let Value::Array(items) = value else {
        return Ok(Vec::new());
    };
    let mut jobs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(id), Some(fields)) = (items.next(), items.next()) {
        let id: String = redis::from_redis_value(id).map_err(|e| store_err("claim", e))?;
        let record: String = redis::from_redis_value(fields).map_err(|e| store_err("claim", e))?;
        let flat: Vec<String> = serde_json::from_str(&record).map_err(|e| store_err("claim", e))?;
        let mut fields: HashMap<String, String> = HashMap::with_capacity(flat.len() / 2 + 8);
        let mut flat = flat.into_iter();
        while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
            fields.insert(name, value);
        }
        taken.apply(&mut fields)?;
        let id: JobId = id.parse().map_err(|e| store_err("claim", e))?;
        jobs.push(decode_job(queue, id, fields)?);
    }
    Ok(jobs)
}

/// The seq of the first event of stream entry `MS-N`: `MS << 20 | N << 7`.
fn seq_of(entry_id: &str) -> u64 {
    let (ms, n) = entry_id.split_once('-').unwrap_or((entry_id, "0"));
    let ms: u64 = ms.parse().unwrap_or(0);
    let n: u64 = n
        .parse::<u64>()
        .unwrap_or(0)
        .min((1 << (SEQ_BITS - PLACE_BITS)) - 1);
    (ms << SEQ_BITS) | (n << PLACE_BITS)
}

/// The id of the stream entry holding the event `seq`.
fn entry_of(seq: u64) -> String {
    format!(
        "{}-{}",
        seq >> SEQ_BITS,
        (seq & ((1 << SEQ_BITS) - 1)) >> PLACE_BITS
    )
}

type StreamEntries = Vec<(String, Vec<(String, String)>)>;

/// The first `limit` of `events` in seq order, and any beyond that share the last one's seq:
/// streams of different queues can hold events with the same seq, and a page that split them
/// would leave the rest behind its cursor.
fn first_page(mut events: Vec<Event>, limit: usize) -> Vec<Event> {
    events.sort_by_key(|e| e.seq);
    if events.len() > limit && limit > 0 {
        let last = events[limit - 1].seq;
        let end = events.partition_point(|e| e.seq <= last);
        events.truncate(end);
    }
    events
}

/// The events of one stream entry, in order: a field per event named by its job, its value
/// `kind state attempt at[ detail]`. An entry written by an earlier version holds one event in
/// fields `k`, `j`, `s`, `a`, `t` and `d`.
fn decode_events(queue: &str, entry_id: &str, fields: &[(String, String)]) -> Vec<Event> {
    let first = seq_of(entry_id);
    if fields.iter().any(|(name, _)| name == "k") {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let legacy = || {
            Some(Event {
                seq: first,
                at: from_ms(field("t")?.parse().ok()?).ok()?,
                kind: EventKind::parse(field("k")?)?,
                job: field("j")?.parse().ok()?,
                queue: queue.to_owned(),
                state: field("s")?.parse().ok()?,
                attempt: field("a")?.parse().ok()?,
                detail: field("d").map(str::to_owned),
            })
        };
        return legacy().into_iter().collect();
    }
    let decode = |place: u64, job: &str, value: &str| {
        let mut words = value.splitn(5, ' ');
        Some(Event {
            seq: first | place,
            kind: EventKind::parse(words.next()?)?,
            state: words.next()?.parse().ok()?,
            attempt: words.next()?.parse().ok()?,
            at: from_ms(words.next()?.parse().ok()?).ok()?,
            detail: words.next().map(str::to_owned),
            job: job.parse().ok()?,
            queue: queue.to_owned(),
        })
    };
    fields
        .iter()
        .zip(0..1 << PLACE_BITS)
        .filter_map(|((job, value), place)| decode(place, job, value))
        .collect()
}

#[async_trait]
impl JobStore for RedisStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = ms(now);
        let mut by_queue: BTreeMap<String, Vec<(usize, NewJob)>> = BTreeMap::new();
        let count = jobs.len();
        for (i, job) in jobs.into_iter().enumerate() {
            by_queue
                .entry(job.queue.clone())
                .or_default()
                .push((i, job));
        }
        // Record where each job lives first: a job is never findable before this.
        let mut wher = redis::cmd("HSET");
        wher.arg(self.shared.global("where"));
        for (queue, jobs) in &by_queue {
            for (_, job) in jobs {
                wher.arg(job.id.to_string()).arg(queue);
            }
        }
        let mut queues = redis::cmd("SADD");
        queues.arg(self.shared.global("queues"));
        for queue in by_queue.keys() {
            queues.arg(queue);
        }
        self.shared
            .many::<Value>("enqueue", vec![wher, queues])
            .await?;

        let mut outcomes = vec![None; count];
        let mut unused = Vec::new();
        let channel = self.shared.wake_channel();
        for (queue, jobs) in &by_queue {
            let mut args: Vec<String> = Vec::with_capacity(3 + jobs.len() * 10);
            args.push(now_ms.to_string());
            args.push(channel.clone());
            args.push(queue.clone());
            for (_, job) in jobs {
                args.push(job.id.to_string());
                args.push(job.kind.clone());
                args.push(job.payload.as_str().to_owned());
                args.push(job.priority.to_string());
                args.push(job.run_at.map_or(now_ms, ms).to_string());
                args.push(job.max_attempts.max(1).to_string());
                args.push(
                    job.timeout
                        .map(|t| t.as_millis().to_string())
                        .unwrap_or_default(),
                );
                args.push(job.idempotency_key.clone().unwrap_or_default());
                args.push(job.tenant.clone().unwrap_or_default());
                args.push(if job.headers.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&job.headers)?
                });
            }
            let answer: Vec<(u8, String)> = self
                .shared
                .run(
                    "enqueue",
                    &self.shared.scripts.enqueue,
                    queue,
                    &strings(&args),
                )
                .await?;
            let queue_name: Arc<str> = queue.as_str().into();
            for ((i, job), (added, id)) in jobs.iter().zip(answer) {
                let existing: JobId = id.parse().map_err(|e| store_err("enqueue", e))?;
                outcomes[*i] = Some(if added == 1 {
                    self.remember(existing, &queue_name);
                    Enqueued::New(existing)
                } else {
                    if existing != job.id {
                        unused.push(job.id.to_string());
                    }
                    Enqueued::Duplicate(existing)
                });
            }
        }
        if !unused.is_empty() {
            self.shared
                .query::<()>(
                    "enqueue",
                    redis::cmd("HDEL")
                        .arg(self.shared.global("where"))
                        .arg(&unused),
                )
                .await?;
        }
        self.notify.notify_waiters();
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| store_err("enqueue", "a job got no answer")))
            .collect()
    }

    async fn claim_with(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let worker = serde_json::to_string(worker)?;
        let expires = ms(super::after(now, lease));
        let max_running = limits.running_per_tenant.unwrap_or(0);
        let value: Value = self
            .shared
            .run(
                "claim",
                &self.shared.scripts.claim,
                queue,
                &[&ms(now), &worker, &limit, &expires, &max_running],
            )
            .await?;
        let taken = Taken {
            worker: &worker,
            now: ms(now),
            expires,
        };
        let jobs = decode_claimed(queue, value, &taken)?;
        if !jobs.is_empty() {
            let name: Arc<str> = queue.into();
            for job in &jobs {
                self.remember(job.id, &name);
            }
            self.notify.notify_waiters();
        }
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        leases: &[(JobId, u64)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LeaseStatus>> {
        let expires = ms(super::after(now, lease));
        let mut answers = vec![LeaseStatus::Lost; leases.len()];
        let mut by_queue: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
        for (i, (id, _)) in leases.iter().enumerate() {
            if let Some(queue) = self.locate(*id).await? {
                by_queue.entry(queue).or_default().push(i);
            }
        }
        for (queue, indices) in by_queue {
            let mut args: Vec<String> = vec![expires.to_string()];
            for &i in &indices {
                args.push(leases[i].0.to_string());
                args.push(leases[i].1.to_string());
            }
            let statuses: Vec<u8> = self
                .shared
                .run(
                    "heartbeat",
                    &self.shared.scripts.heartbeat,
                    &queue,
                    &strings(&args),
                )
                .await?;
            for (i, status) in indices.into_iter().zip(statuses) {
                answers[i] = match status {
                    1 => LeaseStatus::Extended,
                    2 => LeaseStatus::Cancelled,
                    _ => LeaseStatus::Lost,
                };
            }
        }
        Ok(answers)
    }

    async fn progress(
        &self,
        id: JobId,
        token: u64,
        progress: Progress,
        now: Timestamp,
    ) -> Result<()> {
        let queue = self.locate(id).await?.ok_or(Error::NotFound(id))?;
        let detail = format!("{}% {}", progress.percent, progress.message);
        let answer: String = self
            .shared
            .run(
                "progress",
                &self.shared.scripts.progress,
                &queue,
                &[
                    &id.to_string(),
                    &token,
                    &serde_json::to_string(&progress)?,
                    &detail,
                    &ms(now),
                ],
            )
            .await?;
        self.notify.notify_waiters();
        answer_to_result(id, &answer)
    }

    async fn complete(&self, id: JobId, token: u64, result: Payload, now: Timestamp) -> Result<()> {
        let queue = self.locate(id).await?.ok_or(Error::NotFound(id))?;
        let (reply, answer) = oneshot::channel();
        self.completions
            .send(Completion {
                queue,
                id,
                token,
                result,
                now,
                reply,
            })
            .map_err(|_| store_err("complete", "the store is shutting down"))?;
        let answer = answer
            .await
            .unwrap_or_else(|_| Err(store_err("complete", "the store is shutting down")));
        self.forget(id);
        answer
    }

    async fn fail(
        &self,
        id: JobId,
        token: u64,
        error: JobError,
        then: AfterFailure,
        now: Timestamp,
    ) -> Result<()> {
        let queue = self.locate(id).await?.ok_or(Error::NotFound(id))?;
        let (retry_at, detail) = match then {
            AfterFailure::Retry { at } => (ms(at).to_string(), at.to_rfc3339()),
            AfterFailure::Dead => (String::new(), String::new()),
        };
        let answer: String = self
            .shared
            .run(
                "fail",
                &self.shared.scripts.fail,
                &queue,
                &[
                    &id.to_string(),
                    &token,
                    &serde_json::to_string(&error)?,
                    &error.message,
                    &retry_at,
                    &detail,
                    &ms(now),
                ],
            )
            .await?;
        self.notify.notify_waiters();
        answer_to_result(id, &answer)
    }

    async fn release(&self, id: JobId, token: u64, now: Timestamp) -> Result<()> {
        let queue = self.locate(id).await?.ok_or(Error::NotFound(id))?;
        let answer: String = self
            .shared
            .run(
                "release",
                &self.shared.scripts.release,
                &queue,
                &[&id.to_string(), &token, &ms(now)],
            )
            .await?;
        self.notify.notify_waiters();
        if let Some(notify) = self
            .wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&*queue)
        {
            notify.notify_waiters();
        }
        answer_to_result(id, &answer)
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelOutcome> {
        let queue = self.locate(id).await?.ok_or(Error::NotFound(id))?;
        let error = serde_json::to_string(&JobError::new("cancelled"))?;
        let answer: String = self
            .shared
            .run(
                "cancel",
                &self.shared.scripts.cancel,
                &queue,
                &[&id.to_string(), &error, &ms(now)],
            )
            .await?;
        self.notify.notify_waiters();
        match answer.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "cancelled_running" => Ok(CancelOutcome::CancelledRunning),
            "missing" => Err(Error::NotFound(id)),
            state => Ok(CancelOutcome::AlreadyFinished(state.parse()?)),
        }
    }

    async fn recover(&self, now: Timestamp) -> Result<Vec<Recovered>> {
        let error = serde_json::to_string(&JobError::new(
            "the worker's lease expired before the job finished",
        ))?;
        let mut recovered = Vec::new();
        for queue in self.queues().await? {
            self.find_lost_leases(&queue).await?;
            loop {
                let answer: Vec<(String, String)> = self
                    .shared
                    .run(
                        "recover",
                        &self.shared.scripts.recover,
                        &queue,
                        &[&ms(now), &SWEEP, &error],
                    )
                    .await?;
                let done = answer.len() < SWEEP;
                for (id, state) in answer {
                    recovered.push(Recovered {
                        id: id.parse().map_err(|e| store_err("recover", e))?,
                        queue: queue.clone(),
                        state: state.parse()?,
                    });
                }
                if done {
                    break;
                }
            }
        }
        if !recovered.is_empty() {
            self.notify.notify_waiters();
        }
        Ok(recovered)
    }

    async fn promote(&self, now: Timestamp) -> Result<u64> {
        let mut total = 0;
        for queue in self.queues().await? {
            loop {
                let n: u64 = self
                    .shared
                    .run(
                        "promote",
                        &self.shared.scripts.promote,
                        &queue,
                        &[&ms(now), &SWEEP],
                    )
                    .await?;
                total += n;
                if n < SWEEP as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        match self.locate(id).await? {
            Some(queue) => self.fetch(&queue, id).await,
            None => Ok(None),
        }
    }

    async fn jobs_from(&self, from: JobId, limit: usize) -> Result<Vec<Job>> {
        let from = from.to_string();
        let queues = self.queues().await?;
        let bound = Bound::From(&from);
        // A scan reads one job past `limit`, for paging.
        let mut jobs = self
            .scan_jobs(&queues, &JobState::ALL, bound, true, limit, |_| true)
            .await?;
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn list(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let queues = match &filter.queue {
            Some(queue) => vec![queue.clone()],
            None => self.queues().await?,
        };
        let states = if filter.states.is_empty() {
            JobState::ALL.to_vec()
        } else {
            filter.states.clone()
        };
        let after = after.map(|a| a.to_string());
        let bound = after.as_deref().map_or(Bound::Start, Bound::After);
        let mut items = self
            .scan_jobs(&queues, &states, bound, false, limit, |job| {
                filter.matches(job)
            })
            .await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|job| job.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn counts(&self) -> Result<BTreeMap<String, StateCounts>> {
        let queues = self.queues().await?;
        let cmds = queues
            .iter()
            .flat_map(|queue| {
                JobState::ALL.map(|state| {
                    match state {
                        // Short of +inf: the keeper member (`common.lua`) is no job.
                        JobState::Running => redis::cmd("ZCOUNT")
                            .arg(&self.shared.keys(queue)[2])
                            .arg("-inf")
                            .arg("(+inf")
                            .clone(),
                        _ => redis::cmd("ZCARD")
                            .arg(self.shared.state_key(queue, state))
                            .clone(),
                    }
                })
            })
            .collect();
        let all: Vec<u64> = self.shared.many("counts", cmds).await?;
        Ok(queues
            .into_iter()
            .zip(all.chunks(JobState::ALL.len()))
            .map(|(queue, numbers)| {
                let mut counts = StateCounts::default();
                for (state, n) in JobState::ALL.into_iter().zip(numbers) {
                    counts.add(state, *n);
                }
                (queue, counts)
            })
            .collect())
    }

    async fn oldest_ready(&self, queue: &str, now: Timestamp) -> Result<Option<Timestamp>> {
        let oldest: Option<i64> = self
            .shared
            .run(
                "oldest ready",
                &self.shared.scripts.oldest,
                queue,
                &[&ms(now)],
            )
            .await?;
        oldest.map(from_ms).transpose()
    }

    fn queue_wake(&self, queue: &str) -> Option<Arc<Notify>> {
        Some(
            self.wakes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(queue.to_owned())
                .or_default()
                .clone(),
        )
    }
}

#[async_trait]
impl DeadLetters for RedisStore {
    async fn retry_dead(&self, id: JobId, now: Timestamp) -> Result<()> {
        let queue = self.locate(id).await?.ok_or(Error::NotFound(id))?;
        let answer: String = self
            .shared
            .run(
                "retry dead letter",
                &self.shared.scripts.retry_dead,
                &queue,
                &[&id.to_string(), &ms(now)],
            )
            .await?;
        self.notify.notify_waiters();
        match answer.as_str() {
            "ok" => Ok(()),
            "missing" => Err(Error::NotFound(id)),
            state => Err(Error::WrongState {
                id,
                state: state.parse()?,
            }),
        }
    }

    async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        let queues = match queue {
            Some(queue) => vec![queue.to_owned()],
            None => self.queues().await?,
        };
        let mut total = 0;
        for queue in queues {
            loop {
                let ids: Vec<String> = self
                    .shared
                    .run(
                        "purge dead letters",
                        &self.shared.scripts.purge_dead,
                        &queue,
                        &[&SWEEP],
                    )
                    .await?;
                total += ids.len() as u64;
                self.unlocate(&ids).await?;
                if ids.len() < SWEEP {
                    break;
                }
            }
        }
        Ok(total)
    }
}

impl RedisStore {
    /// Forgets where the removed jobs `ids` lived.
    async fn unlocate(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        {
            let mut cache = self.queue_of.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                if let Ok(id) = id.parse() {
                    cache.remove(&id);
                }
            }
        }
        self.shared
            .query::<()>(
                "forget removed jobs",
                redis::cmd("HDEL").arg(self.shared.global("where")).arg(ids),
            )
            .await
    }

    fn kv_keys(&self, namespace: &str) -> [String; 3] {
        let base = format!("{}:kv:{{{namespace}}}:", self.shared.url.prefix);
        [
            format!("{base}e:"),
            format!("{base}keys"),
            format!("{base}exp"),
        ]
    }

    fn is_status(&self, namespace: &str) -> Option<&StatusCache> {
        self.status.as_ref().filter(|c| c.namespace == namespace)
    }
}

#[async_trait]
impl QueueControl for RedisStore {
    async fn pause(&self, queue: &str) -> Result<()> {
        let paused = redis::cmd("SET")
            .arg(&self.shared.keys(queue)[5])
            .arg(1)
            .clone();
        let listed = redis::cmd("SADD")
            .arg(self.shared.global("paused"))
            .arg(queue)
            .clone();
        self.shared
            .many::<Value>("pause", vec![paused, listed])
            .await?;
        Ok(())
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        let paused = redis::cmd("DEL").arg(&self.shared.keys(queue)[5]).clone();
        let listed = redis::cmd("SREM")
            .arg(self.shared.global("paused"))
            .arg(queue)
            .clone();
        self.shared
            .many::<Value>("resume", vec![paused, listed])
            .await?;
        if let Some(notify) = self
            .wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
        {
            notify.notify_waiters();
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<String>> {
        let mut paused: Vec<String> = self
            .shared
            .query(
                "paused queues",
                redis::cmd("SMEMBERS").arg(self.shared.global("paused")),
            )
            .await?;
        paused.sort();
        Ok(paused)
    }
}

#[async_trait]
impl KvStore for RedisStore {
    async fn kv_get(&self, namespace: &str, key: &str, now: Timestamp) -> Result<Option<KvEntry>> {
        if let Some(id) = status::job_key(self.status.as_ref(), namespace, key)
            && let Some(cache) = &self.status
            && let Some(job) = self.get(id).await?
        {
            return Ok(JobStatus::entry(&job, cache, now));
        }
        let [entries, _, _] = self.kv_keys(namespace);
        let (value, metadata, expires): (Option<Vec<u8>>, Option<String>, Option<String>) = self
            .shared
            .query(
                "kv get",
                redis::cmd("HMGET")
                    .arg(format!("{entries}{key}"))
                    .arg("v")
                    .arg("m")
                    .arg("x"),
            )
            .await?;
        let Some(value) = value else { return Ok(None) };
        let expires_at = match expires.as_deref() {
            None | Some("") => None,
            Some(x) => Some(from_ms(x.parse().map_err(|e| store_err("kv get", e))?)?),
        };
        if expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        Ok(Some(KvEntry {
            value,
            metadata: match metadata.as_deref() {
                None | Some("") => None,
                Some(m) => Some(serde_json::from_str(m)?),
            },
            expires_at,
        }))
    }

    async fn kv_put(&self, namespace: &str, key: &str, entry: KvEntry) -> Result<()> {
        let [entries, keyset, expiry] = self.kv_keys(namespace);
        let metadata = match &entry.metadata {
            Some(m) => serde_json::to_string(m)?,
            None => String::new(),
        };
        let expires = entry
            .expires_at
            .map(|at| ms(at).to_string())
            .unwrap_or_default();
        let mut invocation = self.shared.scripts.kv_put.key(format!("{entries}{key}"));
        invocation
            .key(&keyset)
            .key(&expiry)
            .arg(key)
            .arg(&entry.value)
            .arg(metadata)
            .arg(expires)
            .arg(ms(crate::job::now()));
        let mut conn = self.shared.conn();
        let result: RedisResult<()> = invocation.invoke_async(&mut conn).await;
        self.shared.check("kv put", result)?;
        self.shared
            .query::<()>(
                "kv put",
                redis::cmd("SADD")
                    .arg(self.shared.global("kv:namespaces"))
                    .arg(namespace),
            )
            .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let [entries, keyset, expiry] = self.kv_keys(namespace);
        let mut invocation = self.shared.scripts.kv_delete.key(format!("{entries}{key}"));
        invocation.key(&keyset).key(&expiry).arg(key);
        let mut conn = self.shared.conn();
        let result: RedisResult<u64> = invocation.invoke_async(&mut conn).await;
        Ok(self.shared.check("kv delete", result)? > 0)
    }

    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage> {
        let [entries, keyset, expiry] = self.kv_keys(namespace);
        let mut invocation = self.shared.scripts.kv_list.key(&keyset);
        invocation
            .key(&expiry)
            .arg(&entries)
            .arg(prefix)
            .arg(cursor.unwrap_or_default())
            .arg(limit)
            .arg(ms(now));
        let mut conn = self.shared.conn();
        let result: RedisResult<Vec<(String, String, String)>> =
            invocation.invoke_async(&mut conn).await;
        let explicit = self
            .shared
            .check("kv list", result)?
            .into_iter()
            .map(|(name, expires, metadata)| {
                Ok(KvKey {
                    name,
                    expires_at: match expires.as_str() {
                        "" => None,
                        x => Some(from_ms(x.parse().map_err(|e| store_err("kv list", e))?)?),
                    },
                    metadata: match metadata.as_str() {
                        "" => None,
                        m => Some(serde_json::from_str(m)?),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut derived = Vec::new();
        if let Some(cache) = self.is_status(namespace)
            && let Some(from) = status::seek(prefix, cursor)
        {
            let from = from.to_string();
            let jobs = self
                .scan_jobs(
                    &self.queues().await?,
                    &JobState::ALL,
                    Bound::From(&from),
                    true,
                    limit,
                    |job| {
                        let name = job.id.to_string();
                        name.starts_with(prefix)
                            && cursor.is_none_or(|c| name.as_str() > c)
                            && JobStatus::key(job, cache, now).is_some()
                    },
                )
                .await?;
            derived = jobs
                .iter()
                .filter_map(|job| JobStatus::key(job, cache, now))
                .collect();
        }
        Ok(status::merge(derived, explicit, limit))
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let queues = self.queues().await?;
        if queues.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // Streams of different queues are merged by entry id, which is Redis's clock. Events
        // of the current millisecond may still be joined by others with the same id in another
        // stream, so read only up to a millisecond that has passed.
        let (secs, micros): (u64, u64) = self.shared.query("time", &redis::cmd("TIME")).await?;
        let upto = secs * 1000 + micros / 1000;
        tokio::time::sleep(Duration::from_millis(2)).await;
        // The entry holding event `after` may hold later events too.
        let start = if after == 0 {
            "-".to_owned()
        } else {
            entry_of(after)
        };
        let cmds = queues
            .iter()
            .map(|queue| {
                redis::cmd("XRANGE")
                    .arg(&self.shared.keys(queue)[3])
                    .arg(&start)
                    .arg(upto)
                    .arg("COUNT")
                    .arg(limit)
                    .clone()
            })
            .collect();
        let streams: Vec<StreamEntries> = self.shared.many("read events", cmds).await?;
        // A stream read to its limit may have later events unread: none past its last entry
        // can be returned yet.
        let mut horizon = u64::MAX;
        for entries in &streams {
            if entries.len() >= limit
                && let Some((id, _)) = entries.last()
            {
                horizon = horizon.min(seq_of(id) | ((1 << PLACE_BITS) - 1));
            }
        }
        let events: Vec<Event> = queues
            .iter()
            .zip(&streams)
            .flat_map(|(queue, entries)| {
                entries
                    .iter()
                    .flat_map(move |(id, fields)| decode_events(queue, id, fields))
            })
            .filter(|e| e.seq > after && e.seq <= horizon)
            .collect();
        Ok(first_page(events, limit))
    }

    async fn last_event_seq(&self) -> Result<u64> {
        let queues = self.queues().await?;
        if queues.is_empty() {
            return Ok(0);
        }
        let cmds = queues
            .iter()
            .map(|queue| {
                redis::cmd("XREVRANGE")
                    .arg(&self.shared.keys(queue)[3])
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .clone()
            })
            .collect();
        let streams: Vec<StreamEntries> = self.shared.many("last event", cmds).await?;
        Ok(queues
            .iter()
            .zip(&streams)
            .filter_map(|(queue, entries)| {
                let (id, fields) = entries.first()?;
                decode_events(queue, id, fields).last().map(|e| e.seq)
            })
            .max()
            .unwrap_or(0))
    }

    async fn count_events(
        &self,
        kind: EventKind,
        since: Timestamp,
    ) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for queue in self.queues().await? {
            let keys = self.shared.keys(&queue);
            // The kinds a dashboard asks for have an index by time; others scan the stream.
            let indexed = match kind {
                EventKind::Succeeded => Some(&keys[14]),
                EventKind::DeadLettered => Some(&keys[15]),
                EventKind::Cancelled => Some(&keys[16]),
                EventKind::Failed => Some(&keys[6]),
                _ => None,
            };
            let n: u64 = match indexed {
                Some(key) => {
                    self.shared
                        .query(
                            "count events",
                            redis::cmd("ZCOUNT").arg(key).arg(ms(since)).arg("+inf"),
                        )
                        .await?
                }
                None => {
                    let mut n = 0;
                    let mut end = "+".to_owned();
                    'scan: loop {
                        let entries: StreamEntries = self
                            .shared
                            .query(
                                "count events",
                                redis::cmd("XREVRANGE")
                                    .arg(&keys[3])
                                    .arg(&end)
                                    .arg("-")
                                    .arg("COUNT")
                                    .arg(1000),
                            )
                            .await?;
                        for (id, fields) in &entries {
                            let events = decode_events(&queue, id, fields);
                            if !events.is_empty() && events.iter().all(|event| event.at < since) {
                                break 'scan;
                            }
                            n += events
                                .iter()
                                .filter(|event| event.kind == kind && event.at >= since)
                                .count() as u64;
                        }
                        match entries.last() {
                            Some((id, _)) if entries.len() == 1000 => end = format!("({id}"),
                            _ => break,
                        }
                    }
                    n
                }
            };
            if n > 0 {
                counts.insert(queue, n);
            }
        }
        Ok(counts)
    }

    fn event_notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

#[async_trait]
impl CronTicks for RedisStore {
    async fn claim_tick(&self, task: &str, tick: Timestamp, now: Timestamp) -> Result<bool> {
        let claimed: Option<String> = self
            .shared
            .query(
                "claim cron tick",
                redis::cmd("SET")
                    .arg(self.shared.global(&format!("cron:{task}:{}", ms(tick))))
                    .arg(ms(now))
                    .arg("NX")
                    .arg("PX")
                    .arg(TICK_MEMORY.as_millis() as u64),
            )
            .await?;
        Ok(claimed.is_some())
    }
}

#[async_trait]
impl Retention for RedisStore {
    async fn purge_expired(
        &self,
        policies: &BTreeMap<String, RetentionPolicy>,
        default: RetentionPolicy,
        events: Duration,
        now: Timestamp,
    ) -> Result<Purged> {
        let mut purged = Purged::default();
        let horizon = ms(super::before(now, events));
        for queue in self.queues().await? {
            let policy = policies.get(&queue).unwrap_or(&default);
            loop {
                let mut answer: Vec<String> = self
                    .shared
                    .run(
                        "retention",
                        &self.shared.scripts.purge,
                        &queue,
                        &[
                            &ms(now),
                            &(policy.succeeded.as_millis() as u64),
                            &(policy.failed.as_millis() as u64),
                            &(policy.dead.as_millis() as u64),
                            &SWEEP,
                            &horizon,
                        ],
                    )
                    .await?;
                let events_removed: u64 = answer.pop().and_then(|n| n.parse().ok()).unwrap_or(0);
                purged.events += events_removed;
                purged.jobs += answer.len() as u64;
                self.unlocate(&answer).await?;
                if answer.len() < SWEEP && events_removed < SWEEP as u64 {
                    break;
                }
            }
        }
        let namespaces: Vec<String> = self
            .shared
            .query(
                "retention",
                redis::cmd("SMEMBERS").arg(self.shared.global("kv:namespaces")),
            )
            .await?;
        for namespace in namespaces {
            let [entries, keyset, expiry] = self.kv_keys(&namespace);
            loop {
                let mut invocation = self.shared.scripts.kv_purge.key(&keyset);
                invocation
                    .key(&expiry)
                    .arg(&entries)
                    .arg(ms(now))
                    .arg(SWEEP);
                let mut conn = self.shared.conn();
                let result: RedisResult<u64> = invocation.invoke_async(&mut conn).await;
                let n = self.shared.check("retention", result)?;
                purged.kv_entries += n;
                if n < SWEEP as u64 {
                    break;
                }
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl super::RateLimits for RedisStore {
    async fn take_token(
        &self,
        key: &str,
        limit: &super::rate::Limit,
        now: Timestamp,
    ) -> Result<super::rate::Decision> {
        let bucket = self.shared.global(&format!("rate:{{{key}}}"));
        let mut invocation = self.shared.scripts.rate.key(bucket);
        invocation
            .arg(super::rate::micros_of(now))
            .arg(limit.interval_us())
            .arg(limit.burst.max(1));
        let mut conn = self.shared.conn();
        let result: RedisResult<(u8, u64, u64, u64)> = invocation.invoke_async(&mut conn).await;
        let (allowed, remaining, retry_after, reset) = self.shared.check("rate limit", result)?;
        Ok(super::rate::Decision {
            allowed: allowed == 1,
            limit: limit.burst,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Duration::from_micros(reset),
            retry_after: Duration::from_micros(retry_after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_errors_say_whether_redis_is_down_or_refused() {
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(
            redis_err("claim", refused).store_kind(),
            Some(StoreErrorKind::Unavailable)
        );
        let slow: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
        assert_eq!(
            redis_err("claim", slow).store_kind(),
            Some(StoreErrorKind::Timeout)
        );
        let garbled: RedisError = (redis::ErrorKind::UnexpectedReturnType, "not a list").into();
        assert_eq!(
            redis_err("claim", garbled).store_kind(),
            Some(StoreErrorKind::Corrupt)
        );
        let script: RedisError = (
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "script failed",
        )
            .into();
        assert_eq!(
            redis_err("claim", script).store_kind(),
            Some(StoreErrorKind::Refused)
        );
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_entry_holds_events_in_order_each_with_its_own_seq() {
        let a = "0190c0de-0000-7000-8000-000000000001";
        let b = "0190c0de-0000-7000-8000-000000000002";
        let fields = pairs(&[
            (a, "started running 1 1700000000000"),
            (b, "failed retrying 2 1700000000001 it broke: badly, twice"),
        ]);
        let events = decode_events("q", "1700000000005-3", &fields);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventKind::Started);
        assert_eq!(events[0].job.to_string(), a);
        assert_eq!(events[0].detail, None);
        assert_eq!(events[1].state, JobState::Retrying);
        assert_eq!(events[1].attempt, 2);
        assert_eq!(events[1].at, from_ms(1_700_000_000_001).unwrap());
        assert_eq!(events[1].detail.as_deref(), Some("it broke: badly, twice"));
        assert_eq!(events[1].seq, events[0].seq + 1);
        // Both events are found again from their entry id.
        assert_eq!(entry_of(events[0].seq), "1700000000005-3");
        assert_eq!(entry_of(events[1].seq), "1700000000005-3");
        // A later entry, even of the same millisecond, comes after every event of this one.
        assert!(seq_of("1700000000005-4") > events[1].seq);
    }

    #[test]
    fn a_page_never_splits_events_that_share_a_seq() {
        let fields = |job: &str| pairs(&[(job, "started running 1 1700000000000")]);
        let a = "0190c0de-0000-7000-8000-00000000000a";
        let b = "0190c0de-0000-7000-8000-00000000000b";
        // The first entries of one millisecond in two queues' streams: equal seqs.
        let mut events = decode_events("qa", "1700000000000-0", &fields(a));
        events.extend(decode_events("qb", "1700000000000-0", &fields(b)));
        events.extend(decode_events("qa", "1700000000000-1", &fields(a)));
        assert_eq!(events[0].seq, events[1].seq);
        let page = first_page(events.clone(), 1);
        assert_eq!(page.len(), 2, "both events of the shared seq");
        assert!(page.iter().any(|e| e.queue == "qa") && page.iter().any(|e| e.queue == "qb"));
        assert_eq!(first_page(events, 3).len(), 3);
    }

    #[test]
    fn entries_of_the_earlier_layout_still_read() {
        let fields = pairs(&[
            ("k", "dead_lettered"),
            ("j", "0190c0de-0000-7000-8000-000000000001"),
            ("s", "dead"),
            ("a", "3"),
            ("t", "1700000000000"),
            ("d", "out of attempts"),
        ]);
        let events = decode_events("q", "1700000000000-0", &fields);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::DeadLettered);
        assert_eq!(events[0].attempt, 3);
        assert_eq!(events[0].detail.as_deref(), Some("out of attempts"));
        assert_eq!(events[0].seq, seq_of("1700000000000-0"));
    }
}
