//! Waking idle workers: enqueues publish the queue's name on `P:wake`, and each store keeps one
//! subscription that wakes the workers of that queue in this process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::RedisStore;

impl RedisStore {
    /// What the workers of `queue` in this process wait on.
    pub(super) fn wake_of(&self, queue: &str) -> Arc<Notify> {
        self.wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    /// Wakes the workers of `queue` in this process, if any wait.
    pub(super) fn wake_queue(&self, queue: &str) {
        if let Some(notify) = self
            .wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
        {
            notify.notify_waiters();
        }
    }

    /// Subscribes to the wake channel until the store is dropped, resubscribing with backoff;
    /// after each (re)subscription every worker is woken once.
    pub(super) fn subscribe_wakes(&self) {
        let client = match redis::Client::open(self.shared.url.nodes[0].as_str()) {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "workers will poll: cannot subscribe to enqueue notifications");
                return;
            }
        };
        let (channel, wakes, stop) = (
            self.shared.keys.wake_channel(),
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
