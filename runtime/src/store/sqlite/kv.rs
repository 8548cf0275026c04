//! Key/value entries (`kv`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::{from_json, ms, opt_ts, to_json};
use crate::error::Result;
use crate::job::Timestamp;
use crate::store::{KvEntry, KvKey, KvPage, KvStore};

/// Writes `entry` under `key` of namespace `ns`, replacing what was there.
fn put_kv(conn: &Connection, ns: &str, key: &str, entry: &KvEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (ns, key, value, metadata, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata, \
         expires_at = excluded.expires_at",
    )?
    .execute(params![
        ns,
        key,
        entry.value,
        entry.metadata.as_ref().map(to_json).transpose()?,
        entry.expires_at.map(ms)
    ])?;
    Ok(())
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn kv_get(&self, namespace: &str, key: &str, now: Timestamp) -> Result<Option<KvEntry>> {
        let (ns, key) = (namespace.to_owned(), key.to_owned());
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT value, metadata, expires_at FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                )?
                .query_row(params![ns, key, ms(now)], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Option<String>>(1)?, row.get::<_, Option<i64>>(2)?))
                })
                .optional()?;
            row.map(|(value, metadata, expires_at)| {
                Ok(KvEntry { value, metadata: metadata.as_deref().map(from_json).transpose()?, expires_at: opt_ts(expires_at) })
            })
            .transpose()
        })
        .await
    }

    async fn kv_put(&self, namespace: &str, key: &str, entry: KvEntry) -> Result<()> {
        let (ns, key) = (namespace.to_owned(), key.to_owned());
        self.write(move |conn, _| put_kv(conn, &ns, &key, &entry))
            .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let (ns, key) = (namespace.to_owned(), key.to_owned());
        let deleted = self
            .execute("DELETE FROM kv WHERE ns = ?1 AND key = ?2", [ns, key])
            .await?;
        Ok(deleted > 0)
    }

    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage> {
        let (ns, prefix, cursor) = (
            namespace.to_owned(),
            prefix.to_owned(),
            cursor.map(str::to_owned),
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, metadata, expires_at FROM kv WHERE ns = ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2 \
                 AND (?3 IS NULL OR key > ?3) AND (expires_at IS NULL OR expires_at > ?4) ORDER BY key LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![ns, prefix, cursor, ms(now), (limit + 1) as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?, row.get::<_, Option<i64>>(2)?))
            })?;
            let mut keys = Vec::new();
            for row in rows {
                let (name, metadata, expires_at) = row?;
                keys.push(KvKey { name, metadata: metadata.as_deref().map(from_json).transpose()?, expires_at: opt_ts(expires_at) });
            }
            Ok(KvPage::of(keys, limit))
        })
        .await
    }
}
