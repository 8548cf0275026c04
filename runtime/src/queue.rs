//! Producing jobs: a handle on one queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::job::{
    DebounceMode, DebounceRule, JobId, JobState, NewJob, Payload, Timestamp, UniqueRule, now,
};
use crate::store::{Enqueued, Store};
use raindrop_codegen::model::{Debounce, LimitKey, Unique, UniqueBy, UniqueState};

/// Options for one job; unset fields take the queue's defaults.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// The job's kind (default: the queue's name).
    pub kind: Option<String>,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Not before this long from now.
    pub delay: Option<Duration>,
    /// Not before this time (wins over `delay`).
    pub at: Option<Timestamp>,
    /// Jobs with the same key on this queue are one job.
    pub idempotency_key: Option<String>,
    /// Attempts before dead-lettering (default: the queue's `max_attempts`).
    pub max_attempts: Option<u32>,
    /// Longest one attempt may take (default: the task's timeout).
    pub timeout: Option<Duration>,
    /// Who the job belongs to.
    pub tenant: Option<String>,
    /// Free-form metadata, e.g. trace context.
    pub headers: BTreeMap<String, String>,
    /// With a tenant: the most of its jobs that may wait in this queue, this one included
    /// (see [`NewJob::max_waiting`]).
    pub max_waiting: Option<u64>,
    /// This job's unique key, instead of the one the queue's `unique` rule makes: while a job of
    /// its tenant with the same key is in one of the rule's states (without a rule: waiting or
    /// running), or finished within its window, this one is that job (see [`NewJob::unique`]).
    pub unique_key: Option<String>,
    /// In a queue with a `debounce` rule, this job's key instead of the one the rule takes from
    /// the job (without a rule, sending one is an error).
    pub debounce_key: Option<String>,
}

/// A queue's producer: `send` and `send_batch`. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    name: Arc<str>,
    store: Arc<dyn Store>,
    max_attempts: u32,
    max_message_size: u64,
    wake: Arc<Notify>,
    /// Where a job's limit key comes from, in a queue with a keyed `concurrency_limit`.
    limit_key: Option<LimitKey>,
    /// The queue's `unique` rule.
    unique: Option<Unique>,
    /// The queue's `debounce` rule.
    debounce: Option<Debounce>,
}

/// The longest limit or debounce key kept as it is: a longer one is kept as `#` and its SHA-256
/// in hex (two long keys stay two keys).
pub const MAX_LIMIT_KEY: usize = 128;

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Queue {
    pub(crate) fn new(
        name: &str,
        store: Arc<dyn Store>,
        max_attempts: u32,
        max_message_size: u64,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            max_attempts,
            max_message_size,
            wake,
            limit_key: None,
            unique: None,
            debounce: None,
        }
    }

    /// The queue with its `debounce` rule.
    pub(crate) fn with_debounce(mut self, debounce: Option<Debounce>) -> Self {
        self.debounce = debounce;
        self
    }

    /// The queue with its `unique` rule.
    pub(crate) fn with_unique(mut self, unique: Option<Unique>) -> Self {
        self.unique = unique;
        self
    }

    /// The queue with its jobs counted by `key` under its concurrency limit.
    pub(crate) fn with_limit_key(mut self, key: Option<LimitKey>) -> Self {
        self.limit_key = key;
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The largest payload it accepts, in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// Enqueues `payload` as a job with default options; returns its id.
    pub async fn send<T: Serialize + ?Sized>(&self, payload: &T) -> Result<JobId> {
        Ok(self.send_with(payload, SendOptions::default()).await?.id())
    }

    /// Enqueues `payload` with `options`; a known idempotency key returns the existing job.
    pub async fn send_with<T: Serialize + ?Sized>(
        &self,
        payload: &T,
        options: SendOptions,
    ) -> Result<Enqueued> {
        let job = self.job(Payload::from_value(payload)?, options)?;
        let mut out = self.store.enqueue(vec![job], now()).await?;
        self.wake.notify_waiters();
        out.pop().ok_or_else(|| {
            Error::store(
                "enqueue",
                crate::error::StoreErrorKind::Internal,
                "no outcome for the job",
            )
        })
    }

    /// Enqueues several jobs atomically: all or none.
    pub async fn send_batch(&self, jobs: Vec<(Payload, SendOptions)>) -> Result<Vec<Enqueued>> {
        let jobs = jobs
            .into_iter()
            .map(|(payload, options)| self.job(payload, options))
            .collect::<Result<Vec<_>>>()?;
        let out = self.store.enqueue(jobs, now()).await?;
        self.wake.notify_waiters();
        Ok(out)
    }

    /// The job `payload` and `options` describe, checked against the queue's limits.
    pub fn job(&self, payload: Payload, options: SendOptions) -> Result<NewJob> {
        // Everything a job carries is stored with it and sent to its worker: all of it counts.
        let size = payload.len()
            + options.kind.as_ref().map_or(self.name.len(), String::len)
            + options.idempotency_key.as_ref().map_or(0, String::len)
            + options.unique_key.as_ref().map_or(0, String::len)
            + options.debounce_key.as_ref().map_or(0, String::len)
            + options
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size as u64 > self.max_message_size {
            return Err(Error::PayloadTooLarge {
                queue: self.name.to_string(),
                size,
                limit: self.max_message_size,
            });
        }
        // Group names join a tenant and a limit key with this character (`store::fair`).
        if options
            .tenant
            .as_deref()
            .is_some_and(|t| t.contains('\u{1f}'))
        {
            return Err(Error::Config(
                "a tenant name cannot hold the unit separator (U+001F)".into(),
            ));
        }
        // A time in the past means now: a job cannot jump the queue (or age the oldest-job
        // gauge) by claiming it was due in 1970.
        let at = now();
        let run_at = options
            .at
            .map(|run_at| run_at.max(at))
            .or_else(|| options.delay.map(|d| crate::store::after(at, d)));
        let limit_key = self
            .limit_key
            .as_ref()
            .map(|from| limit_key(from, &payload, &options.headers));
        let debounce = match (&self.debounce, options.debounce_key) {
            // A job without the key its rule names is no burst's: it is sent as it is.
            (None, Some(_)) => {
                return Err(Error::Config(format!(
                    "a debounce key for queue `{}`, which has no debounce rule",
                    self.name
                )));
            }
            (None, None) => None,
            (Some(rule), given) => given
                .or_else(|| key_value(&rule.key, &payload, &options.headers))
                .map(|key| DebounceRule {
                    key: bounded(key),
                    window: rule.window.get(),
                    mode: match rule.mode {
                        raindrop_codegen::model::DebounceMode::Trailing => DebounceMode::Trailing {
                            max_wait: rule.max_wait.map(|w| w.get()),
                        },
                        raindrop_codegen::model::DebounceMode::Leading => DebounceMode::Leading,
                    },
                }),
        };
        let kind = options.kind.unwrap_or_else(|| self.name.to_string());
        let unique = unique_rule(
            self.unique.as_ref(),
            options.unique_key,
            &kind,
            &payload,
            &options.headers,
        );
        Ok(NewJob {
            id: JobId::new(),
            queue: self.name.to_string(),
            kind,
            payload,
            priority: options.priority,
            run_at,
            max_attempts: options.max_attempts.unwrap_or(self.max_attempts).max(1),
            timeout: options.timeout,
            idempotency_key: options.idempotency_key,
            tenant: options.tenant,
            headers: options.headers,
            max_waiting: options.max_waiting,
            limit_key,
            unique,
            debounce,
        })
    }
}

/// The unique rule of a job of `kind` with `payload` and `headers`, under the queue's rule
/// `queue` and the sender's own key `given`: none when there is neither; the sender's key
/// wins over the one the queue's `by` makes (a SHA-256 of its parts, in hex).
fn unique_rule(
    queue: Option<&Unique>,
    given: Option<String>,
    kind: &str,
    payload: &Payload,
    headers: &BTreeMap<String, String>,
) -> Option<UniqueRule> {
    use sha2::Digest;
    if queue.is_none() && given.is_none() {
        return None;
    }
    let states = queue.map_or_else(
        || vec![UniqueState::Waiting, UniqueState::Running],
        |q| q.states.clone(),
    );
    let states = states
        .iter()
        .flat_map(|state| match state {
            UniqueState::Waiting => {
                &[JobState::Queued, JobState::Scheduled, JobState::Retrying][..]
            }
            UniqueState::Running => &[JobState::Running][..],
            UniqueState::Succeeded => &[JobState::Succeeded][..],
            UniqueState::Dead => &[JobState::Dead][..],
            UniqueState::Cancelled => &[JobState::Cancelled][..],
        })
        .copied()
        .collect();
    let key = given.unwrap_or_else(|| {
        let by = queue.map_or(&[][..], |q| &q.by[..]);
        let mut digest = sha2::Sha256::new();
        for part in by {
            // Each part tagged and length-prefixed, so no two sets of parts spell one text.
            let (tag, text): (&str, std::borrow::Cow<'_, str>) = match part {
                UniqueBy::Kind => ("k", kind.into()),
                UniqueBy::Payload => ("p", payload.as_str().into()),
                // A field or header that is not there is told from one that is empty.
                UniqueBy::PayloadField(field) => {
                    match key_value(&LimitKey::Payload(field.clone()), payload, headers) {
                        Some(value) => ("f", value.into()),
                        None => ("F", "".into()),
                    }
                }
                UniqueBy::Header(name) => match headers.get(name) {
                    Some(value) => ("h", value.as_str().into()),
                    None => ("H", "".into()),
                },
            };
            digest.update(tag.as_bytes());
            digest.update((text.len() as u64).to_le_bytes());
            digest.update(text.as_bytes());
        }
        crate::sink::hex(&digest.finalize())
    });
    Some(UniqueRule {
        key,
        states,
        window: queue.map_or(Duration::ZERO, |q| q.window.get()),
    })
}

/// The value `from` names in a job with `payload` and `headers`: a header's, or a top-level
/// payload field's (a string as it is, any other JSON value as its JSON text); `None` when it
/// is not there (or null).
fn key_value(
    from: &LimitKey,
    payload: &Payload,
    headers: &BTreeMap<String, String>,
) -> Option<String> {
    match from {
        LimitKey::Header(name) => headers.get(name).cloned(),
        LimitKey::Payload(field) => {
            match serde_json::from_str::<serde_json::Value>(payload.as_str()) {
                Ok(serde_json::Value::Object(mut fields)) => match fields.remove(field) {
                    Some(serde_json::Value::String(s)) => Some(s),
                    Some(serde_json::Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                },
                _ => None,
            }
        }
    }
}

/// `key` as stored: itself up to [`MAX_LIMIT_KEY`] bytes, else `#` and its SHA-256 in hex, so
/// long keys stay apart and cost a bounded size.
fn bounded(key: String) -> String {
    use sha2::Digest;
    if key.len() <= MAX_LIMIT_KEY {
        key
    } else {
        format!(
            "#{}",
            crate::sink::hex(&sha2::Sha256::digest(key.as_bytes()))
        )
    }
}

/// The limit key of a job with `payload` and `headers`: the value `from` names (`""` when it
/// is not there), [`bounded`].
fn limit_key(from: &LimitKey, payload: &Payload, headers: &BTreeMap<String, String>) -> String {
    bounded(key_value(from, payload, headers).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: serde_json::Value) -> Payload {
        Payload::from_value(&json).unwrap()
    }

    #[test]
    fn long_keys_that_share_a_beginning_stay_apart() {
        let from = LimitKey::Payload("path".into());
        let long = "p".repeat(MAX_LIMIT_KEY);
        let a = limit_key(
            &from,
            &payload(serde_json::json!({ "path": format!("{long}/a") })),
            &BTreeMap::new(),
        );
        let b = limit_key(
            &from,
            &payload(serde_json::json!({ "path": format!("{long}/b") })),
            &BTreeMap::new(),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 65, "a hash of a long key: {a}");
        let short = limit_key(
            &from,
            &payload(serde_json::json!({ "path": "x" })),
            &BTreeMap::new(),
        );
        assert_eq!(short, "x");
        let number = limit_key(
            &from,
            &payload(serde_json::json!({ "path": 42 })),
            &BTreeMap::new(),
        );
        assert_eq!(number, "42");
    }

    #[test]
    fn a_missing_field_is_told_from_an_empty_one_in_a_unique_key() {
        let rule = Unique {
            window: "0s".parse().unwrap(),
            states: vec![UniqueState::Waiting],
            by: vec![UniqueBy::PayloadField("account".into())],
        };
        let key = |json| {
            unique_rule(Some(&rule), None, "k", &payload(json), &BTreeMap::new())
                .unwrap()
                .key
        };
        assert_ne!(
            key(serde_json::json!({})),
            key(serde_json::json!({ "account": "" }))
        );
        assert_eq!(
            key(serde_json::json!({ "account": "a", "n": 1 })),
            key(serde_json::json!({ "account": "a", "n": 2 }))
        );
    }
}
