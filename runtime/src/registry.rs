//! What the dashboard shows of processes it does not run: live worker pools and the standing of
//! alert rules, kept in the store's key/value entries so every process sharing the store sees
//! them. Worker entries expire unless their pool renews them, so a killed process drops out.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::AlertState;
use crate::error::Result;
use crate::job::Timestamp;
use crate::store::{KvEntry, Store};

/// Where worker pools announce themselves.
pub const WORKERS_NAMESPACE: &str = "__raindrop_workers";
/// Where processes say which roles they run.
pub const PROCESSES_NAMESPACE: &str = "__raindrop_processes";
/// Where monitors record their alert rules' standing.
pub const ALERTS_NAMESPACE: &str = "__raindrop_alerts";

/// A live worker pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The process's worker id.
    pub worker: String,
    /// The task it runs.
    pub task: String,
    /// The queue it pulls.
    pub queue: String,
    /// Jobs it runs at once, at most.
    pub concurrency: usize,
    /// Jobs it is running now.
    pub busy: usize,
    /// When the pool started.
    pub started_at: Timestamp,
    /// When it last said it was alive.
    pub seen_at: Timestamp,
}

/// A live process of the application (one that runs workers, schedulers or monitors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its worker id (`host-pid-random`).
    pub id: String,
    /// The roles it runs: `workers`, `scheduler`, `observer`.
    pub roles: Vec<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last said it was alive.
    pub seen_at: Timestamp,
}

/// How often a process renews its entry (which lives three times as long).
const PROCESS_EVERY: Duration = Duration::from_secs(2);

/// Keeps the process's entry alive until `stop`, then removes it.
pub(crate) async fn keep_announcing(
    store: Arc<dyn Store>,
    id: String,
    roles: Vec<&'static str>,
    stop: tokio_util::sync::CancellationToken,
) {
    let started_at = crate::job::now();
    loop {
        let info = ProcessInfo {
            id: id.clone(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            started_at,
            seen_at: crate::job::now(),
        };
        let entry = serde_json::to_vec(&info).map(|value| KvEntry {
            value,
            metadata: None,
            expires_at: Some(crate::store::after(info.seen_at, PROCESS_EVERY * 3)),
        });
        if let Ok(entry) = entry
            && let Err(err) = store.kv_put(PROCESSES_NAMESPACE, &id, entry).await
        {
            tracing::debug!(error = %err, "announcing the process failed");
        }
        tokio::select! {
            () = tokio::time::sleep(PROCESS_EVERY) => {}
            () = stop.cancelled() => break,
        }
    }
    let _ = store.kv_delete(PROCESSES_NAMESPACE, &id).await;
}

/// The processes alive at `now`.
pub async fn processes(store: &Arc<dyn Store>, now: Timestamp) -> Result<Vec<ProcessInfo>> {
    entries(store, PROCESSES_NAMESPACE, now).await
}

/// Records that `info`'s pool is alive, for `ttl`.
pub(crate) async fn announce(
    store: &Arc<dyn Store>,
    info: &WorkerInfo,
    ttl: Duration,
) -> Result<()> {
    let entry = KvEntry {
        value: serde_json::to_vec(info)?,
        metadata: None,
        expires_at: Some(crate::store::after(info.seen_at, ttl)),
    };
    store
        .kv_put(
            WORKERS_NAMESPACE,
            &format!("{}/{}", info.worker, info.task),
            entry,
        )
        .await
}

/// Takes the pool off the list (it is stopping).
pub(crate) async fn withdraw(store: &Arc<dyn Store>, worker: &str, task: &str) -> Result<()> {
    store
        .kv_delete(WORKERS_NAMESPACE, &format!("{worker}/{task}"))
        .await
        .map(drop)
}

/// Records an alert rule's standing.
pub(crate) async fn record_alert(store: &Arc<dyn Store>, state: &AlertState) -> Result<()> {
    let entry = KvEntry {
        value: serde_json::to_vec(state)?,
        metadata: None,
        expires_at: None,
    };
    let key = format!("{}/{}/{}", state.observer, state.name, state.queue);
    store.kv_put(ALERTS_NAMESPACE, &key, entry).await
}

/// Every entry of `namespace` that reads as a `T`, at most 1,000.
async fn entries<T: for<'de> Deserialize<'de>>(
    store: &Arc<dyn Store>,
    namespace: &str,
    now: Timestamp,
) -> Result<Vec<T>> {
    let page = store.kv_list(namespace, "", None, 1000, now).await?;
    let mut out = Vec::with_capacity(page.keys.len());
    for key in page.keys {
        if let Some(entry) = store.kv_get(namespace, &key.name, now).await?
            && let Ok(value) = serde_json::from_slice(&entry.value)
        {
            out.push(value);
        }
    }
    Ok(out)
}

/// The worker pools alive at `now`.
pub async fn workers(store: &Arc<dyn Store>, now: Timestamp) -> Result<Vec<WorkerInfo>> {
    entries(store, WORKERS_NAMESPACE, now).await
}

/// Every alert rule's last standing.
pub async fn alerts(store: &Arc<dyn Store>, now: Timestamp) -> Result<Vec<AlertState>> {
    entries(store, ALERTS_NAMESPACE, now).await
}
