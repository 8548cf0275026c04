//! A key/value cache: one namespace of the store, with TTLs and metadata; and the job-status
//! view, done once here above the stores.
//!
//! The stores do not keep a second copy of what a job's record already holds. In the status
//! kv_cache, the key of a job (its id) reads as the status document derived from the job's
//! record, so the document changes with the job and goes away with it; other keys in that
//! namespace are ordinary entries, and a listing merges the two in key order.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::job::{JobId, Timestamp, now};
use crate::store::{JobStatus, KvEntry, KvKey, KvPage, StatusCache, Store};

/// Most keys one `list` call returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// How long a written entry lives.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Expire this long from now.
    pub ttl: Option<Duration>,
    /// Expire at this time (wins over `ttl`).
    pub expires_at: Option<Timestamp>,
    /// JSON metadata kept beside the value.
    pub metadata: Option<serde_json::Value>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only keys starting with this.
    pub prefix: String,
    /// At most this many keys (1 to 1000; default 1000).
    pub limit: Option<usize>,
    /// Continue after the cursor of a previous page.
    pub cursor: Option<String>,
}

/// A kv_cache declared in the manifest. Cheap to clone.
#[derive(Clone)]
pub struct KvCache {
    namespace: Arc<str>,
    store: Arc<dyn Store>,
    default_ttl: Option<Duration>,
    /// Set when this is the status kv_cache: job ids read as their status documents.
    status: Option<StatusView>,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KvCache {
    pub(crate) fn new(
        namespace: &str,
        store: Arc<dyn Store>,
        default_ttl: Option<Duration>,
        status: Option<StatusCache>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            default_ttl,
            status: status.map(|cache| StatusView::new(store.clone(), cache)),
            store,
        }
    }

    /// The value's bytes; `None` when missing or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_with_metadata(key).await?.map(|e| e.value))
    }

    /// The value as text.
    pub async fn get_text(&self, key: &str) -> Result<Option<String>> {
        self.get(key)
            .await?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|e| {
                    Error::store(
                        "kv get",
                        crate::error::StoreErrorKind::Corrupt,
                        format!("value of `{key}` is not UTF-8: {e}"),
                    )
                })
            })
            .transpose()
    }

    /// The value, deserialized from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(key)
            .await?
            .map(|bytes| Ok(serde_json::from_slice(&bytes)?))
            .transpose()
    }

    /// The whole entry: value, metadata and expiry.
    pub async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        match &self.status {
            Some(view) => view.get(key, now()).await,
            None => self.store.kv_get(&self.namespace, key, now()).await,
        }
    }

    /// Writes `value` under `key`; without a TTL the cache's default applies.
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<()> {
        let expires_at = options.expires_at.or_else(|| {
            options
                .ttl
                .or(self.default_ttl)
                .map(|ttl| crate::store::after(now(), ttl))
        });
        let entry = KvEntry {
            value: value.into(),
            metadata: options.metadata,
            expires_at,
        };
        self.store.kv_put(&self.namespace, key, entry).await
    }

    /// Writes `value` as JSON.
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PutOptions,
    ) -> Result<()> {
        self.put(key, serde_json::to_vec(value)?, options).await
    }

    /// Removes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.store.kv_delete(&self.namespace, key).await
    }

    /// Live keys in key order, a page at a time.
    pub async fn list(&self, options: ListOptions) -> Result<KvPage> {
        let limit = options
            .limit
            .unwrap_or(MAX_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT);
        let (prefix, cursor) = (&options.prefix, options.cursor.as_deref());
        match &self.status {
            Some(view) => view.list(prefix, cursor, limit, now()).await,
            None => {
                self.store
                    .kv_list(&self.namespace, prefix, cursor, limit, now())
                    .await
            }
        }
    }
}

/// The status kv_cache read over a store: the key of a job (its id) reads as the job's status
/// document while the document lives; every other key is an ordinary entry of the namespace.
#[derive(Clone)]
pub struct StatusView {
    store: Arc<dyn Store>,
    cache: StatusCache,
}

impl std::fmt::Debug for StatusView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusView")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl StatusView {
    /// The status kv_cache `cache` over `store`.
    pub fn new(store: Arc<dyn Store>, cache: StatusCache) -> Self {
        Self { store, cache }
    }

    /// The entry under `key` at `now`: a job's status document, or an ordinary entry.
    pub async fn get(&self, key: &str, now: Timestamp) -> Result<Option<KvEntry>> {
        if let Ok(id) = key.parse::<JobId>()
            && let Some(job) = self.store.get(id).await?
        {
            return Ok(JobStatus::entry(&job, &self.cache, now));
        }
        self.store.kv_get(&self.cache.namespace, key, now).await
    }

    /// Live keys after `cursor` starting with `prefix` at `now`, documents and ordinary
    /// entries merged in key order, `limit` at most.
    pub async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage> {
        let page = self
            .store
            .kv_list(&self.cache.namespace, prefix, cursor, limit, now)
            .await?;
        let (derived, complete) = self.statuses(prefix, cursor, limit, now).await?;
        Ok(merge(derived, complete, page, limit))
    }

    /// The keys of live status documents after `cursor` that start with `prefix`, in key
    /// order: up to `limit + 1`, read a window of jobs at a time; and whether that was all.
    async fn statuses(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<(Vec<KvKey>, bool)> {
        let mut keys = Vec::new();
        // Job ids sort like their text: start at the first id that can match, stop at the
        // first outside the prefix.
        let Some(mut from) = seek(prefix, cursor) else {
            return Ok((keys, true));
        };
        let window = limit + 2;
        let mut skip = None;
        loop {
            let jobs = self.store.jobs_from(from, window).await?;
            let more = jobs.len() == window;
            for job in &jobs {
                if Some(job.id) == skip {
                    continue;
                }
                let name = job.id.to_string();
                if !name.starts_with(prefix) {
                    return Ok((keys, true));
                }
                if cursor.is_some_and(|c| name.as_str() <= c) {
                    continue;
                }
                // Expired documents are skipped: a window may hold fewer live keys than asked.
                keys.extend(JobStatus::key(job, &self.cache, now));
                if keys.len() > limit {
                    return Ok((keys, false));
                }
            }
            match jobs.last() {
                Some(last) if more => {
                    from = last.id;
                    skip = Some(last.id);
                }
                _ => return Ok((keys, true)),
            }
        }
    }
}

/// The smallest job id whose text could start with `prefix` and come after `cursor`, for
/// seeking in id order; `None` when no job id's text can match.
fn seek(prefix: &str, cursor: Option<&str>) -> Option<JobId> {
    // Hyphenated lowercase UUID text sorts like the UUID's bytes, so seeking by the padded
    // prefix finds the first candidate.
    let mut hex = String::with_capacity(32);
    for (i, c) in prefix.chars().enumerate() {
        match c {
            '-' if matches!(i, 8 | 13 | 18 | 23) => {}
            c if c.is_ascii_digit() || ('a'..='f').contains(&c) => hex.push(c),
            _ => return None,
        }
        if hex.len() > 32 {
            return None;
        }
    }
    let floor = format!("{hex:0<32}");
    let from_prefix = uuid::Uuid::try_parse(&floor).ok()?;
    let from_cursor = cursor.and_then(|c| uuid::Uuid::try_parse(c).ok());
    let start = from_cursor.map_or(from_prefix, |c| c.max(from_prefix));
    start.to_string().parse().ok()
}

/// Merges status keys (`complete` when no more follow) with a page of ordinary entries of the
/// same namespace into one page of `limit` keys.
fn merge(derived: Vec<KvKey>, complete: bool, page: KvPage, limit: usize) -> KvPage {
    // A source that has more may hold keys between its last one and the other's: keep only
    // keys up to the last key of every source that has more, so the next page misses none.
    let last = |keys: &[KvKey], complete: bool| {
        (!complete)
            .then(|| keys.last().map(|k| k.name.clone()))
            .flatten()
    };
    let bound = [
        last(&derived, complete),
        last(&page.keys, page.list_complete),
    ]
    .into_iter()
    .flatten()
    .min();
    let mut keys: Vec<KvKey> = derived.into_iter().chain(page.keys).collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys.dedup_by(|later, earlier| later.name == earlier.name);
    if let Some(bound) = &bound {
        keys.retain(|k| k.name <= *bound);
    }
    let list_complete = bound.is_none() && keys.len() <= limit;
    keys.truncate(limit);
    let cursor = if list_complete {
        None
    } else {
        keys.last().map(|k| k.name.clone())
    };
    KvPage {
        keys,
        list_complete,
        cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_by_prefix_finds_the_first_id_that_can_match() {
        let id: JobId = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        assert_eq!(
            seek("", None).unwrap().to_string(),
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(
            seek("0190a1b2-c", None).unwrap().to_string(),
            "0190a1b2-c000-0000-0000-000000000000"
        );
        assert_eq!(seek("0190", Some(&id.to_string())), Some(id));
        assert_eq!(
            seek("user:", None),
            None,
            "no job id starts with a non-hex prefix"
        );
        assert_eq!(seek("ABC", None), None, "ids are lowercase");
    }
}
