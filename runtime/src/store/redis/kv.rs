//! The key/value store: an entry is a hash (`P:kv:{ns}:e:KEY`, fields in `codec.rs`), listed
//! by name in one sorted set and by expiry in another.

use async_trait::async_trait;

use super::codec::{from_ms, kv_field, ms};
use super::conn::store_err;
use super::{RedisStore, SWEEP};
use crate::error::Result;
use crate::job::Timestamp;
use crate::store::{KvEntry, KvKey, KvPage, KvStore};

impl RedisStore {
    /// Removes the expired entries of every namespace; returns how many.
    pub(super) async fn purge_expired_kv(&self, now: Timestamp) -> Result<u64> {
        let namespaces: Vec<String> = self
            .shared
            .redis
            .query(
                "retention",
                redis::cmd("SMEMBERS").arg(self.shared.keys.kv_namespaces()),
            )
            .await?;
        let mut purged = 0;
        for namespace in namespaces {
            let keys = self.shared.keys.kv(&namespace);
            loop {
                let mut invocation = self.shared.scripts.kv_purge.key(&keys.keyset);
                invocation
                    .key(&keys.expiry)
                    .arg(&keys.entries)
                    .arg(ms(now))
                    .arg(SWEEP);
                let n: u64 = self.shared.redis.invoke("retention", &invocation).await?;
                purged += n;
                if n < SWEEP as u64 {
                    break;
                }
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl KvStore for RedisStore {
    async fn kv_get(&self, namespace: &str, key: &str, now: Timestamp) -> Result<Option<KvEntry>> {
        let keys = self.shared.keys.kv(namespace);
        let (value, metadata, expires): (Option<Vec<u8>>, Option<String>, Option<String>) = self
            .shared
            .redis
            .query(
                "kv get",
                redis::cmd("HMGET")
                    .arg(keys.entry(key))
                    .arg(kv_field::VALUE)
                    .arg(kv_field::METADATA)
                    .arg(kv_field::EXPIRES),
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
        let keys = self.shared.keys.kv(namespace);
        let metadata = match &entry.metadata {
            Some(m) => serde_json::to_string(m)?,
            None => String::new(),
        };
        let expires = entry
            .expires_at
            .map(|at| ms(at).to_string())
            .unwrap_or_default();
        let mut invocation = self.shared.scripts.kv_put.key(keys.entry(key));
        invocation
            .key(&keys.keyset)
            .key(&keys.expiry)
            .arg(key)
            .arg(&entry.value)
            .arg(metadata)
            .arg(expires)
            .arg(ms(crate::job::now()));
        self.shared
            .redis
            .invoke::<()>("kv put", &invocation)
            .await?;
        self.shared
            .redis
            .query::<()>(
                "kv put",
                redis::cmd("SADD")
                    .arg(self.shared.keys.kv_namespaces())
                    .arg(namespace),
            )
            .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let keys = self.shared.keys.kv(namespace);
        let mut invocation = self.shared.scripts.kv_delete.key(keys.entry(key));
        invocation.key(&keys.keyset).key(&keys.expiry).arg(key);
        let removed: u64 = self.shared.redis.invoke("kv delete", &invocation).await?;
        Ok(removed > 0)
    }

    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage> {
        let keys = self.shared.keys.kv(namespace);
        let mut invocation = self.shared.scripts.kv_list.key(&keys.keyset);
        invocation
            .key(&keys.expiry)
            .arg(&keys.entries)
            .arg(prefix)
            .arg(cursor.unwrap_or_default())
            .arg(limit)
            .arg(ms(now));
        let listed: Vec<(String, String, String)> =
            self.shared.redis.invoke("kv list", &invocation).await?;
        let keys = listed
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
        Ok(KvPage::of(keys, limit))
    }
}
