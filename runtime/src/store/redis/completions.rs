//! Finishing jobs in batches: completions that arrive while a batch is in flight go together in
//! the next one, so a busy worker pool costs Redis one script call (`complete.lua`) per batch,
//! not per job.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::codec::{answer_to_result, ms};
use super::conn::store_err;
use super::scripts::strings;
use super::{RedisStore, Shared};
use crate::error::{Error, Result, StoreErrorKind};
use crate::job::{JobId, Payload, Timestamp};

/// Completions sent in one script call at most.
const COMPLETION_BATCH: usize = 256;
/// Completion batches sent at once, at most.
const COMPLETIONS_IN_FLIGHT: usize = 4;

/// A job to finish, waiting for the next batch.
pub(super) struct Completion {
    queue: Arc<str>,
    id: JobId,
    token: u64,
    result: Payload,
    now: Timestamp,
    reply: oneshot::Sender<Result<()>>,
}

impl RedisStore {
    /// Finishes job `id` with `result` in the next batch of its queue.
    pub(super) async fn complete_job(
        &self,
        id: JobId,
        token: u64,
        result: Payload,
        now: Timestamp,
    ) -> Result<()> {
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
}

/// Sends the completions of `incoming` in batches until the store is dropped.
pub(super) async fn complete_batches(
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
                send(&shared, &queue, completions).await;
            }
            notify.notify_waiters();
            drop(permit);
        });
    }
}

/// Finishes `completions` of `queue` in one script call and tells each caller how it went.
async fn send(shared: &Shared, queue: &str, completions: Vec<Completion>) {
    match complete_in(shared, queue, &completions).await {
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

/// Finishes `jobs` of `queue` in one script call; one answer per job.
async fn complete_in(shared: &Shared, queue: &str, jobs: &[Completion]) -> Result<Vec<String>> {
    let mut args: Vec<String> = Vec::with_capacity(jobs.len() * 4);
    for job in jobs {
        args.push(job.id.to_string());
        args.push(job.token.to_string());
        args.push(job.result.as_str().to_owned());
        args.push(ms(job.now).to_string());
    }
    shared
        .run("complete", &shared.scripts.complete, queue, &strings(&args))
        .await
}
