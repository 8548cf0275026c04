//! Key naming. Every key starts with the prefix `P` (`raindrop` unless the URL says
//! `?prefix=`). All keys of a queue share the hash tag `{queue}`, all keys of a key/value
//! namespace the tag `{ns}`, and a rate-limit bucket and a named lease are each a tag of their own, so each script touches
//! one slot and Redis Cluster works. What spans queues (the queue list, where each job lives)
//! has no tag and is only ever read or written by plain commands, never inside a script.
//!
//! The layout of every key is the table on the module (`mod.rs`).
//!
//! A queue script gets the queue's fixed keys as `KEYS`, in the order of [`QUEUE_KEYS`], and
//! knows each by the name there: [`lua_prelude`] declares them at the top of every queue script.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::job::JobState;

/// A queue's fixed keys in the order the queue scripts get them as `KEYS`: the name the scripts
/// know each by and the key after `P:{queue}:`. `JOB`, `TENANT_READY` and `TENANT_STATE` are
/// prefixes: a job's hash is `JOB .. id`, a tenant's ready set `TENANT_READY .. tenant`, the ids
/// of a tenant's jobs in a state `TENANT_STATE .. state .. ':' .. tenant`. `STATE.s` and
/// `FINISHED.s` are fields of two Lua tables, indexed by state name.
const QUEUE_KEYS: [(&str, &str); 27] = [
    ("READY", "ready"),
    ("DELAYED", "delayed"),
    ("LEASES", "leases"),
    ("EVENTS", "events"),
    ("IDEM", "idem"),
    ("PAUSED", "paused"),
    ("FAILURES", "failures"),
    ("JOB", "j:"),
    ("TENANTS", "tenants"),
    ("TURNS", "turns"),
    ("RUNNING", "running"),
    ("TENANT_READY", "rt:"),
    ("RUNNING_COUNT", "running-count"),
    ("STATE.queued", "s:queued"),
    ("STATE.scheduled", "s:scheduled"),
    ("STATE.succeeded", "s:succeeded"),
    ("STATE.retrying", "s:retrying"),
    ("STATE.dead", "s:dead"),
    ("STATE.cancelled", "s:cancelled"),
    ("FINISHED.succeeded", "t:succeeded"),
    ("FINISHED.dead", "t:dead"),
    ("FINISHED.cancelled", "t:cancelled"),
    ("TENANT_STATE", "ts:"),
    ("START_BUCKET", "start-bucket"),
    ("UNIQUE", "unique"),
    ("DEBOUNCE", "debounce"),
    ("TURN_COUNTER", "turn-counter"),
];

/// Where in [`QUEUE_KEYS`] the keys Rust reads directly are.
const LEASES: usize = 2;
const EVENTS: usize = 3;
const PAUSED: usize = 5;
const FAILURES: usize = 6;
const JOB: usize = 7;
const TENANT_STATE: usize = 22;

/// The Lua that names a queue script's `KEYS` as [`QUEUE_KEYS`] says.
pub(super) fn lua_prelude() -> String {
    let mut lua = String::from("local STATE, FINISHED = {}, {}\n");
    for (i, (name, _)) in QUEUE_KEYS.iter().enumerate() {
        let local = if name.contains('.') { "" } else { "local " };
        lua.push_str(&format!("{local}{name} = KEYS[{}]\n", i + 1));
    }
    lua
}

/// The fixed keys of one queue.
#[derive(Debug)]
pub(super) struct QueueKeys {
    /// In the order of [`QUEUE_KEYS`].
    all: Vec<String>,
}

impl QueueKeys {
    fn new(prefix: &str, queue: &str) -> Self {
        let base = format!("{prefix}:{{{queue}}}:");
        Self {
            all: QUEUE_KEYS
                .iter()
                .map(|(_, k)| format!("{base}{k}"))
                .collect(),
        }
    }

    /// Every fixed key, in the order the queue scripts take them.
    pub(super) fn all(&self) -> &[String] {
        &self.all
    }

    /// The running jobs by lease expiry (and the keeper member, scored +inf).
    pub(super) fn leases(&self) -> &str {
        &self.all[LEASES]
    }

    /// The event stream.
    pub(super) fn events(&self) -> &str {
        &self.all[EVENTS]
    }

    /// Present while the queue is paused.
    pub(super) fn paused(&self) -> &str {
        &self.all[PAUSED]
    }

    /// Failed attempts by time.
    pub(super) fn failures(&self) -> &str {
        &self.all[FAILURES]
    }

    /// The hash of job `id`.
    pub(super) fn job(&self, id: &str) -> String {
        format!("{}{id}", self.all[JOB])
    }

    /// The ids of the jobs in `state`, by id; none for running jobs, which are the members of
    /// [`leases`](Self::leases).
    pub(super) fn state(&self, state: JobState) -> Option<&str> {
        self.named("STATE.", state)
    }

    /// The ids of `tenant`'s jobs in `state`, by id (every state, running included).
    pub(super) fn tenant_state(&self, state: JobState, tenant: &str) -> String {
        format!("{}{}:{tenant}", self.all[TENANT_STATE], state.as_str())
    }

    /// The jobs that finished in `state`, by finish time; none unless `state` is a finished one.
    pub(super) fn finished(&self, state: JobState) -> Option<&str> {
        self.named("FINISHED.", state)
    }

    fn named(&self, table: &str, state: JobState) -> Option<&str> {
        QUEUE_KEYS
            .iter()
            .position(|(name, _)| {
                name.strip_prefix(table)
                    .is_some_and(|s| s == state.as_str())
            })
            .map(|i| self.all[i].as_str())
    }
}

/// The keys of one key/value namespace.
#[derive(Debug)]
pub(super) struct KvKeys {
    /// The prefix of each entry's hash (`P:kv:{ns}:e:`): the entry `KEY` is `entries .. KEY`.
    pub(super) entries: String,
    /// The namespace's keys, by name.
    pub(super) keyset: String,
    /// The namespace's keys that expire, by expiry.
    pub(super) expiry: String,
}

impl KvKeys {
    /// The hash of entry `key`.
    pub(super) fn entry(&self, key: &str) -> String {
        format!("{}{key}", self.entries)
    }
}

/// How many queues' keys a store keeps built. Applications declare a handful of queues; a
/// process that meets more (every queue ever stored, listed) builds the rest each time.
const CACHED_QUEUES: usize = 1024;

/// The store's key names, under its prefix.
#[derive(Debug)]
pub(super) struct Keys {
    prefix: String,
    /// Keys of the queues this process runs scripts on (enqueues, claims, transitions), built
    /// once; at most [`CACHED_QUEUES`]. Reads by a queue name alone never add to it, so names a
    /// client makes up cost nothing after the request.
    queues: Mutex<HashMap<String, Arc<QueueKeys>>>,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queues: Mutex::default(),
        }
    }

    fn global(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The fixed keys of `queue`, which a script is about to run on: kept for the next time
    /// (up to [`CACHED_QUEUES`] queues).
    pub(super) fn queue(&self, queue: &str) -> Arc<QueueKeys> {
        let mut cache = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = cache.get(queue) {
            return keys.clone();
        }
        let keys = Arc::new(QueueKeys::new(&self.prefix, queue));
        if cache.len() < CACHED_QUEUES {
            cache.insert(queue.to_owned(), keys.clone());
        }
        keys
    }

    /// The fixed keys of `queue` for a read: the kept ones if a script ran on it, otherwise
    /// built for this read only.
    pub(super) fn queue_to_read(&self, queue: &str) -> Arc<QueueKeys> {
        let cache = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(queue) {
            Some(keys) => keys.clone(),
            None => Arc::new(QueueKeys::new(&self.prefix, queue)),
        }
    }

    /// How many queues' keys are kept.
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every queue that ever had a job (set).
    pub(super) fn queues(&self) -> String {
        self.global("queues")
    }

    /// The queue of each job (hash id → queue).
    pub(super) fn locations(&self) -> String {
        self.global("where")
    }

    /// The paused queues (set).
    pub(super) fn paused(&self) -> String {
        self.global("paused")
    }

    /// The channel enqueues publish a queue's name to when it has new ready jobs.
    pub(super) fn wake_channel(&self) -> String {
        self.global("wake")
    }

    /// The key/value namespaces that ever had an entry (set).
    pub(super) fn kv_namespaces(&self) -> String {
        self.global("kv:namespaces")
    }

    /// The keys of key/value namespace `namespace`.
    pub(super) fn kv(&self, namespace: &str) -> KvKeys {
        let base = format!("{}:kv:{{{namespace}}}:", self.prefix);
        KvKeys {
            entries: format!("{base}e:"),
            keyset: format!("{base}keys"),
            expiry: format!("{base}exp"),
        }
    }

    /// The marker of cron task `task`'s tick at `tick_ms`.
    pub(super) fn cron_tick(&self, task: &str, tick_ms: i64) -> String {
        self.global(&format!("cron:{task}:{tick_ms}"))
    }

    /// The named lease `name` (the monitor's leadership): a hash tag of its own.
    pub(super) fn lead(&self, name: &str) -> String {
        self.global(&format!("lead:{{{name}}}"))
    }

    /// The rate-limit bucket `key`.
    pub(super) fn rate_bucket(&self, key: &str) -> String {
        self.global(&format!("rate:{{{key}}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_rust_reads_are_where_the_table_says() {
        for (at, name) in [
            (LEASES, "LEASES"),
            (EVENTS, "EVENTS"),
            (PAUSED, "PAUSED"),
            (FAILURES, "FAILURES"),
            (JOB, "JOB"),
            (TENANT_STATE, "TENANT_STATE"),
        ] {
            assert_eq!(QUEUE_KEYS[at].0, name);
        }
        let keys = Keys::new("P").queue("q");
        assert_eq!(keys.leases(), "P:{q}:leases");
        assert_eq!(keys.job("ID"), "P:{q}:j:ID");
        assert_eq!(keys.state(JobState::Queued), Some("P:{q}:s:queued"));
        assert_eq!(keys.state(JobState::Running), None);
        assert_eq!(keys.finished(JobState::Dead), Some("P:{q}:t:dead"));
        assert_eq!(keys.finished(JobState::Retrying), None);
        assert_eq!(
            keys.tenant_state(JobState::Queued, "a:b"),
            "P:{q}:ts:queued:a:b"
        );
        // Every state but running has its set; every finished state its set by finish time.
        for state in JobState::ALL {
            assert_eq!(keys.state(state).is_some(), state != JobState::Running);
            assert_eq!(keys.finished(state).is_some(), state.is_finished());
        }
    }

    #[test]
    fn queue_names_from_reads_are_not_kept_and_scripts_keep_a_bounded_number() {
        let keys = Keys::new("P");
        keys.queue("declared");
        for i in 0..10_000 {
            let read = keys.queue_to_read(&format!("made-up-{i}"));
            assert_eq!(read.leases(), format!("P:{{made-up-{i}}}:leases"));
        }
        assert_eq!(keys.cached(), 1);
        assert!(Arc::ptr_eq(
            &keys.queue("declared"),
            &keys.queue_to_read("declared")
        ));
        for i in 0..10_000 {
            keys.queue(&format!("scripted-{i}"));
        }
        assert_eq!(keys.cached(), CACHED_QUEUES);
    }

    #[test]
    fn the_prelude_names_each_key_by_its_place() {
        let lua = lua_prelude();
        assert!(lua.starts_with("local STATE, FINISHED = {}, {}\nlocal READY = KEYS[1]\n"));
        assert!(lua.contains("\nlocal LEASES = KEYS[3]\n"));
        assert!(lua.contains("\nSTATE.queued = KEYS[14]\n"));
        assert!(lua.contains("\nFINISHED.cancelled = KEYS[22]\n"));
        assert!(lua.contains("\nlocal TENANT_STATE = KEYS[23]\n"));
        assert!(lua.contains("\nlocal START_BUCKET = KEYS[24]\n"));
        assert!(lua.contains("\nlocal UNIQUE = KEYS[25]\n"));
        assert!(lua.contains("\nlocal DEBOUNCE = KEYS[26]\n"));
        assert!(lua.ends_with("\nlocal TURN_COUNTER = KEYS[27]\n"));
    }
}
