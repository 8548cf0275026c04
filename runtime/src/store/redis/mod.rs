//! The Redis store: many processes on many hosts share one Redis, or one Redis Cluster.
//!
//! Every state transition is one Lua script, atomic on one slot: all keys of a queue share the
//! queue's hash tag, so Redis Cluster works. Workers idle on a pub/sub subscription that
//! enqueues publish to, not on a poll. When Redis goes away every operation fails with a store
//! error that the engine retries with backoff; the outage is logged once when it starts and
//! once, with its length, when it ends.
//!
//! The keys (`P` is the prefix, `raindrop` unless the URL says `?prefix=`):
//!
//! | key | what |
//! |---|---|
//! | `P:{q}:j:ID` (hash) | the job: its fields are the table in `codec.rs` |
//! | `P:{q}:ready` (zset) | queued jobs without a tenant by priority, then run time, then id |
//! | `P:{q}:rt:GROUP` (zset) | a group's queued jobs, in the same order: a group is a tenant, or a tenant's limit key (`TENANT` `\x1f` `KEY`) |
//! | `P:{q}:tenants` (set) | groups with queued jobs, for fair claiming |
//! | `P:{q}:turns`, `P:{q}:running` (hashes) | when each tenant and keyed group was last served; their running jobs |
//! | `P:{q}:start-bucket` (string) | a rate-limited queue's bucket of starts: its next token's arrival in µs (in the past: the bucket is full) |
//! | `P:{q}:unique` (hash) | per tenant and unique key (length-prefixed, like `idem`), the latest job sent with it |
//! | `P:{q}:debounce` (hash) | per tenant and debounce key, the latest job of its burst |
//! | `P:{q}:turn-counter` (string) | the last turn a claim gave (so a claim reads only its groups' turns) |
//! | `P:{q}:delayed` (zset) | scheduled and retrying jobs by run time |
//! | `P:{q}:leases` (zset) | running jobs by lease expiry: recovery, listings and counts; while any run, a keeper member scored +inf keeps it a skip list |
//! | `P:{q}:running-count` (string) | how many jobs run; differing from `leases`, a running job lost its lease entry |
//! | `P:{q}:s:STATE` (zset, lexicographic) | ids per state but running: listings and counts |
//! | `P:{q}:t:STATE` (zset) | finished jobs by finish time: retention |
//! | `P:{q}:ts:STATE:TENANT` (zset, lexicographic) | a tenant's ids per state, running included: its listings and the quota of waiting jobs, which cost its own jobs, not the queue's |
//! | `P:{q}:failures` (zset) | failed attempts by time: failure rates |
//! | `P:{q}:events` (stream, capped) | lifecycle events, a stream entry per script call (a field per event) |
//! | `P:{q}:idem` (hash) | idempotency key of a tenant (`LEN:TENANT` then the key) → id |
//! | `P:{q}:paused` | present while the queue is paused |
//! | `P:queues`, `P:paused` (sets), `P:where` (hash id → queue) | what spans queues |
//! | `P:kv:{ns}:e:KEY` (hash), `P:kv:{ns}:keys`, `P:kv:{ns}:exp` (zsets), `P:kv:namespaces` (set) | key/value entries |
//! | `P:cron:TASK:TICK` (string, expires) | a claimed cron tick |
//! | `P:rate:{KEY}` (string, expires) | a rate-limit bucket's next arrival time |
//! | `P:lead:{NAME}` (hash `holder`, `until` ms; expires) | a named lease and its holder: the monitor's leadership |
//! | `P:wake` (pub/sub channel) | enqueues publish the queue's name |
//!
//! This module holds the store handle and how it is opened. Beside it:
//!
//! - `url`: the store URL (nodes, cluster or not, key prefix, lease clock), shown without its
//!   password;
//! - `conn`: the connection, its health, the helpers every command goes through, and the one
//!   place Redis errors become the crate's errors;
//! - `keys`: how each key above is named, hash tags included, and the order in which the
//!   queue scripts get a queue's keys;
//! - `codec`: the fields of a job's hash (the table of their names, which the scripts share),
//!   what the scripts answer, and times;
//! - `scripts`: the script table, built from the Lua files in `lua/`;
//! - `queues`: which queues exist, where each job lives, pausing; `wake`: waking idle workers;
//! - the operations by area: `jobs` (enqueue and the transitions, with `claim`, what a claim
//!   takes, and `completions`, which finishes jobs in batches), `listing` (listings and
//!   counts), `events`, `kv`, `upkeep` (promotion, recovery, retention, cron ticks, leases) and `rate`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::job::JobId;

mod claim;
mod codec;
mod completions;
mod conn;
mod events;
mod jobs;
mod keys;
mod kv;
mod listing;
mod queues;
mod rate;
mod scripts;
mod upkeep;
mod url;
mod wake;

pub use url::{LeaseClock, RedisUrl};

/// Jobs a script takes on in one call when it sweeps (recovery, promotion, retention, purges).
const SWEEP: usize = 1000;

/// What every part of the store shares, the completion batcher included.
struct Shared {
    redis: conn::Redis,
    url: RedisUrl,
    keys: keys::Keys,
    scripts: scripts::Scripts,
}

impl Shared {
    /// The lease-clock argument of the scripts that measure leases: empty for Redis's own
    /// clock, else the caller's `now` in ms.
    fn lease_clock(&self, now: crate::job::Timestamp) -> String {
        match self.url.clock {
            LeaseClock::Redis => String::new(),
            LeaseClock::Caller => codec::ms(now).to_string(),
        }
    }

    /// Runs a queue script with the queue's keys.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::Script,
        queue: &str,
        args: &[&(dyn scripts::ArgLike + Sync)],
    ) -> Result<T> {
        let keys = self.keys.queue(queue);
        let mut invocation = script.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        for arg in args {
            arg.add_to(&mut invocation);
        }
        self.redis.invoke(op, &invocation).await
    }
}

/// The Redis store.
pub struct RedisStore {
    shared: Arc<Shared>,
    /// The queue of jobs this process enqueued or claimed, so transitions skip a lookup.
    queue_of: Mutex<HashMap<JobId, Arc<str>>>,
    notify: Arc<Notify>,
    wakes: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    completions: mpsc::UnboundedSender<completions::Completion>,
    stop: CancellationToken,
    /// When each queue's records were last looked through for lost lease entries.
    lost_scans: Mutex<HashMap<String, Instant>>,
    /// The queues whose jobs are known to be filed under their tenants' indexes.
    tenants_indexed: Mutex<std::collections::HashSet<String>>,
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

impl RedisStore {
    /// Connects to the Redis (or cluster) `url` names and loads the scripts. An unreachable
    /// Redis is an error naming the URL (without its password).
    pub async fn open(url: &str) -> Result<Self> {
        let url = RedisUrl::parse(url)?;
        let scripts = scripts::Scripts::new();
        let redis = conn::Redis::connect(&url, &scripts.all()).await?;
        let shared = Arc::new(Shared {
            redis,
            keys: keys::Keys::new(&url.prefix),
            url,
            scripts,
        });
        let notify = Arc::new(Notify::new());
        let (completions, incoming) = mpsc::unbounded_channel();
        tokio::spawn(completions::complete_batches(
            shared.clone(),
            notify.clone(),
            incoming,
        ));
        let store = Self {
            shared,
            queue_of: Mutex::default(),
            notify,
            wakes: Arc::default(),
            completions,
            stop: CancellationToken::new(),
            lost_scans: Mutex::new(HashMap::new()),
            tenants_indexed: Mutex::default(),
        };
        store.subscribe_wakes();
        Ok(store)
    }

    /// The key prefix this store uses.
    pub fn prefix(&self) -> &str {
        &self.shared.url.prefix
    }
}
