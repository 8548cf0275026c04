//! How a job is written in Redis: the fields of its hash, what the scripts answer, and times.
//!
//! A job's hash (`P:{q}:j:ID`) has short field names: they are stored with every job and sent
//! with every record a claim answers. [`field`] is the one table of them: the Rust constant,
//! the name stored, and what the field holds. The scripts use the same table:
//! [`lua_prelude`] declares each field as a Lua local named `F_` and the constant's name
//! (`F_STATE = 's'`), written before every queue script. The entries of the key/value store
//! have their own, shorter table ([`kv_field`]), written before the key/value scripts.
//!
//! Times are milliseconds since the epoch, written as integers.

use std::collections::HashMap;
use std::time::Duration;

use chrono::DateTime;
use serde::Deserialize;

use super::conn::store_err;
use crate::error::{Error, Result};
use crate::job::{Attempt, Job, JobError, JobId, JobState, Lease, Payload, Timestamp};

/// Declares the constants of a field table and the Lua that declares the same names.
macro_rules! fields {
    ($(#[$doc:meta])* $vis:vis mod $table:ident {
        $($(#[$field_doc:meta])* $name:ident = $stored:literal,)*
    }) => {
        $(#[$doc])*
        $vis mod $table {
            $($(#[$field_doc])* pub(in super::super) const $name: &str = $stored;)*

            /// Each field as the scripts name it, and as it is stored.
            pub(in super::super) const LUA: &[(&str, &str)] =
                &[$((concat!("F_", stringify!($name)), $stored),)*];
        }
    };
}

fields! {
    /// The fields of a job's hash.
    pub(super) mod field {
        /// The state's name (`queued`, `running` …).
        STATE = "s",
        /// The number of the current (or last) attempt; 0 before the first.
        ATTEMPT = "a",
        /// The job's kind.
        KIND = "k",
        /// The payload, JSON.
        PAYLOAD = "p",
        /// The priority.
        PRIORITY = "pr",
        /// When the job is due to run.
        RUN_AT = "ra",
        /// Attempts it may take.
        MAX_ATTEMPTS = "ma",
        /// When it was enqueued.
        CREATED_AT = "ca",
        /// Its timeout in milliseconds; absent: none.
        TIMEOUT = "to",
        /// Its idempotency key; absent: none.
        IDEMPOTENCY_KEY = "ik",
        /// Its tenant; absent: none.
        TENANT = "tn",
        /// Its headers, a JSON object; absent: none.
        HEADERS = "h",
        /// When its first attempt started.
        STARTED_AT = "sa",
        /// When it finished.
        FINISHED_AT = "fa",
        /// Its progress, JSON.
        PROGRESS = "pg",
        /// Its result, JSON.
        RESULT = "r",
        /// The error of its last failed attempt, JSON.
        ERROR = "e",
        /// Its closed attempts, a JSON array of [`StoredAttempt`](super::StoredAttempt).
        ATTEMPTS = "at",
        /// The worker (a JSON string) of the open attempt, or, once the job succeeded, of the
        /// attempt that succeeded.
        WORKER = "cw",
        /// When the open attempt (or the one that succeeded) started.
        ATTEMPT_STARTED_AT = "cs",
        /// When the lease of a running job expires.
        LEASE_EXPIRES = "le",
        /// The fencing token of its latest lease; each claim adds 1.
        TOKEN = "tk",
        /// The key its queue's concurrency limit counts it under; absent: none.
        LIMIT_KEY = "lk",
        /// How often it was snoozed; absent: never.
        SNOOZES = "sn",
        /// Its unique key; absent: none.
        UNIQUE_KEY = "uk",
        /// Its debounce key; absent: none.
        DEBOUNCE_KEY = "dk",
    }
}

fields! {
    /// The fields of a key/value entry's hash (`P:kv:{ns}:e:KEY`).
    pub(super) mod kv_field {
        /// The value, bytes.
        VALUE = "v",
        /// Its metadata, JSON; empty: none.
        METADATA = "m",
        /// When it expires; empty: never.
        EXPIRES = "x",
    }
}

/// The Lua that declares the fields of `table` as locals (`local F_STATE = 's'`).
pub(super) fn lua_prelude(table: &[(&str, &str)]) -> String {
    table
        .iter()
        .map(|(name, stored)| format!("local {name} = '{stored}'\n"))
        .collect()
}

/// `at` in milliseconds since the epoch.
pub(super) fn ms(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

/// The time `ms` milliseconds after the epoch.
pub(super) fn from_ms(ms: i64) -> Result<Timestamp> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| store_err("read", format!("timestamp {ms} ms is out of range")))
}

/// Turns a transition script's answer (`ok`, `missing`, else `lost`) into the store's result.
pub(super) fn answer_to_result(id: JobId, answer: &str) -> Result<()> {
    match answer {
        "ok" => Ok(()),
        "missing" => Err(Error::NotFound(id)),
        _ => Err(Error::LeaseLost(id)),
    }
}

/// A closed attempt as the scripts write it (`closed` in `common.lua`): times in milliseconds.
#[derive(Deserialize)]
pub(super) struct StoredAttempt {
    number: u32,
    worker: String,
    started_at: i64,
    finished_at: Option<i64>,
    error: Option<JobError>,
}

/// The field `name` of a job's hash, parsed.
pub(super) fn parsed<T: std::str::FromStr>(
    fields: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    fields
        .get(name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| store_err("decode job", format!("field `{name}` = {v:?}: {e}")))
        })
        .transpose()
}

fn time(fields: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>> {
    parsed::<i64>(fields, name)?.map(from_ms).transpose()
}

fn json<T: serde::de::DeserializeOwned>(
    fields: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>> {
    fields
        .get(name)
        .map(|v| serde_json::from_str(v).map_err(|e| store_err("decode job", e)))
        .transpose()
}

/// A job of `queue` from its hash.
pub(super) fn decode_job(
    queue: &str,
    id: JobId,
    mut fields: HashMap<String, String>,
) -> Result<Job> {
    let required = |fields: &HashMap<String, String>, name: &str| -> Result<String> {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| store_err("decode job", format!("job {id} has no field `{name}`")))
    };
    let state: JobState = required(&fields, field::STATE)?.parse()?;
    let attempt = parsed::<u32>(&fields, field::ATTEMPT)?.unwrap_or(0);
    let mut attempts = closed_attempts(&fields)?;
    let open_worker: Option<String> = json(&fields, field::WORKER)?;
    if let (Some(worker), Some(started_at)) =
        (&open_worker, time(&fields, field::ATTEMPT_STARTED_AT)?)
    {
        attempts.push(Attempt {
            number: attempt,
            worker: worker.clone(),
            started_at,
            finished_at: match state {
                JobState::Succeeded => time(&fields, field::FINISHED_AT)?,
                _ => None,
            },
            error: None,
        });
    }
    let lease = match (
        state,
        open_worker,
        time(&fields, field::LEASE_EXPIRES)?,
        parsed::<u64>(&fields, field::TOKEN)?,
    ) {
        (JobState::Running, Some(worker), Some(expires_at), Some(token)) => Some(Lease {
            worker,
            expires_at,
            token,
        }),
        _ => None,
    };
    Ok(Job {
        id,
        queue: queue.to_owned(),
        kind: required(&fields, field::KIND)?,
        payload: Payload::trusted(required(&fields, field::PAYLOAD)?),
        priority: parsed(&fields, field::PRIORITY)?.unwrap_or(0),
        run_at: time(&fields, field::RUN_AT)?
            .ok_or_else(|| store_err("decode job", "no run time"))?,
        attempt,
        max_attempts: parsed(&fields, field::MAX_ATTEMPTS)?.unwrap_or(1),
        timeout: parsed::<u64>(&fields, field::TIMEOUT)?.map(Duration::from_millis),
        idempotency_key: fields.remove(field::IDEMPOTENCY_KEY),
        tenant: fields.remove(field::TENANT),
        headers: json(&fields, field::HEADERS)?.unwrap_or_default(),
        state,
        created_at: time(&fields, field::CREATED_AT)?
            .ok_or_else(|| store_err("decode job", "no creation time"))?,
        started_at: time(&fields, field::STARTED_AT)?,
        finished_at: time(&fields, field::FINISHED_AT)?,
        progress: json(&fields, field::PROGRESS)?,
        result: fields.remove(field::RESULT).map(Payload::trusted),
        error: json(&fields, field::ERROR)?,
        attempts,
        lease,
        limit_key: fields.remove(field::LIMIT_KEY),
        unique_key: fields.remove(field::UNIQUE_KEY),
        debounce_key: fields.remove(field::DEBOUNCE_KEY),
        snoozes: parsed(&fields, field::SNOOZES)?.unwrap_or(0),
    })
}

/// A job's closed attempts.
fn closed_attempts(fields: &HashMap<String, String>) -> Result<Vec<Attempt>> {
    json::<Vec<StoredAttempt>>(fields, field::ATTEMPTS)?
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            Ok(Attempt {
                number: a.number,
                worker: a.worker,
                started_at: from_ms(a.started_at)?,
                finished_at: a.finished_at.map(from_ms).transpose()?,
                error: a.error,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_has_one_name_and_the_scripts_know_it() {
        let mut stored: Vec<&str> = field::LUA.iter().map(|(_, s)| *s).collect();
        stored.sort_unstable();
        stored.dedup();
        assert_eq!(stored.len(), field::LUA.len(), "two fields share a name");
        let lua = lua_prelude(field::LUA);
        assert!(lua.starts_with("local F_STATE = 's'\nlocal F_ATTEMPT = 'a'\n"));
        assert!(lua.contains("\nlocal F_TOKEN = 'tk'\n"));
        assert_eq!(
            lua_prelude(kv_field::LUA),
            "local F_VALUE = 'v'\nlocal F_METADATA = 'm'\nlocal F_EXPIRES = 'x'\n"
        );
    }
}
