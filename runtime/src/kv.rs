//! A key/value cache: one namespace of the store, with TTLs and metadata.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::job::{Timestamp, now};
use crate::store::{KvEntry, KvPage, Store};

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
    ) -> Self {
        Self {
            namespace: namespace.into(),
            store,
            default_ttl,
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
                String::from_utf8(bytes)
                    .map_err(|e| Error::Store(format!("value of `{key}` is not UTF-8: {e}")))
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
        self.store.kv_get(&self.namespace, key, now()).await
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
        self.store
            .kv_list(
                &self.namespace,
                &options.prefix,
                options.cursor.as_deref(),
                limit,
                now(),
            )
            .await
    }
}
