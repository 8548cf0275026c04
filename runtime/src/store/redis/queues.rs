//! The queues: which exist (`P:queues`), where each job lives (`P:where`, and this process's
//! cache of it), and pausing.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;

use super::RedisStore;
use crate::error::Result;
use crate::job::JobId;
use crate::store::QueueControl;

/// Cached queue lookups kept at most; the cache is cleared when it grows past this.
const QUEUE_CACHE: usize = 200_000;

impl RedisStore {
    /// Every queue that ever had a job.
    pub(super) async fn queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = self
            .shared
            .redis
            .query(
                "list queues",
                redis::cmd("SMEMBERS").arg(self.shared.keys.queues()),
            )
            .await?;
        queues.sort();
        Ok(queues)
    }

    /// Notes that job `id` lives in `queue`.
    pub(super) fn remember(&self, id: JobId, queue: &Arc<str>) {
        let mut cache = self.queue_of.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= QUEUE_CACHE {
            cache.clear();
        }
        cache.insert(id, queue.clone());
    }

    /// Drops job `id` from the cache of where jobs live.
    pub(super) fn forget(&self, id: JobId) {
        self.queue_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// The queue of job `id`, if the job exists (or existed recently).
    pub(super) async fn locate(&self, id: JobId) -> Result<Option<Arc<str>>> {
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
            .redis
            .query(
                "locate job",
                redis::cmd("HGET")
                    .arg(self.shared.keys.locations())
                    .arg(id.to_string()),
            )
            .await?;
        Ok(queue.map(|q| {
            let q: Arc<str> = q.into();
            self.remember(id, &q);
            q
        }))
    }

    /// Forgets where the removed jobs `ids` lived.
    pub(super) async fn unlocate(&self, ids: &[String]) -> Result<()> {
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
            .redis
            .query::<()>(
                "forget removed jobs",
                redis::cmd("HDEL")
                    .arg(self.shared.keys.locations())
                    .arg(ids),
            )
            .await
    }
}

#[async_trait]
impl QueueControl for RedisStore {
    async fn pause(&self, queue: &str) -> Result<()> {
        let paused = redis::cmd("SET")
            .arg(self.shared.keys.queue(queue).paused())
            .arg(1)
            .clone();
        let listed = redis::cmd("SADD")
            .arg(self.shared.keys.paused())
            .arg(queue)
            .clone();
        self.shared
            .redis
            .many::<Value>("pause", vec![paused, listed])
            .await?;
        Ok(())
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        let paused = redis::cmd("DEL")
            .arg(self.shared.keys.queue(queue).paused())
            .clone();
        let listed = redis::cmd("SREM")
            .arg(self.shared.keys.paused())
            .arg(queue)
            .clone();
        self.shared
            .redis
            .many::<Value>("resume", vec![paused, listed])
            .await?;
        self.wake_queue(queue);
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<String>> {
        let mut paused: Vec<String> = self
            .shared
            .redis
            .query(
                "paused queues",
                redis::cmd("SMEMBERS").arg(self.shared.keys.paused()),
            )
            .await?;
        paused.sort();
        Ok(paused)
    }
}
