//! The seed application's work: what `job_worker` does with each kind of job.

use std::path::PathBuf;
use std::time::Duration;

use raindrop::service::{FieldError, validate_as};
use raindrop::task::{Job, JobContext, TaskError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A job submitted to `job_queue`: `{"type": "report", ...}` and so on. Its schema
/// (`ToSchema`) is in the API's document, one class per kind of work for generated clients, and
/// the API checks submissions against it (then with [`validate`]), so a malformed one is refused
/// with field-level errors before it is queued.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Work {
    Report(ReportJob),
    Notify(NotifyJob),
    Flaky(FlakyJob),
    Sleep(SleepJob),
}

/// Summary statistics over submitted values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportJob {
    /// What the report is about.
    title: String,
    /// The data.
    values: Vec<f64>,
}

/// A message written to the outbox directory (`RAINDROP_OUTBOX`, default `.raindrop/outbox`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyJob {
    to: String,
    subject: String,
    body: String,
}

/// Fails (or panics) on its first `fail_times` runs, then succeeds: shows retries with backoff,
/// dead letters, and a retry from the dead letters succeeding.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlakyJob {
    /// Runs that fail before one succeeds.
    fail_times: u32,
    /// Fail by panicking instead of returning an error.
    #[serde(default)]
    panic: bool,
}

/// Works for `ms` milliseconds in ten steps, reporting progress and stopping early when
/// cancelled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SleepJob {
    ms: u64,
}

/// Checks a submitted payload field by field: its `type`, then the fields of that type.
pub(crate) fn validate(raw: &serde_json::value::RawValue) -> Result<(), Vec<FieldError>> {
    let payload: serde_json::Value = serde_json::from_str(raw.get()).map_err(|e| {
        vec![FieldError {
            field: "payload".into(),
            message: e.to_string(),
        }]
    })?;
    let error = |field: &str, message: String| {
        vec![FieldError {
            field: field.to_owned(),
            message,
        }]
    };
    const TYPES: &str = "report, notify, flaky or sleep";
    let Some(kind) = payload.get("type").and_then(serde_json::Value::as_str) else {
        return Err(error("payload.type", format!("expected a string: {TYPES}")));
    };
    let mut fields = payload.clone();
    if let Some(object) = fields.as_object_mut() {
        object.remove("type");
    }
    let fields = serde_json::value::to_raw_value(&fields).map_err(|e| {
        vec![FieldError {
            field: "payload".into(),
            message: e.to_string(),
        }]
    })?;
    let check = match kind {
        "report" => validate_as::<ReportJob>(),
        "notify" => validate_as::<NotifyJob>(),
        "flaky" => validate_as::<FlakyJob>(),
        "sleep" => validate_as::<SleepJob>(),
        other => {
            return Err(error(
                "payload.type",
                format!("unknown type `{other}`: expected {TYPES}"),
            ));
        }
    };
    check(&fields)
}

#[cfg(test)]
fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&value).expect("serializable")
}

/// A report's result.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Report {
    pub(crate) title: String,
    pub(crate) count: usize,
    pub(crate) sum: f64,
    pub(crate) mean: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
}

/// Computes the summary of `values`.
pub(crate) fn report(title: String, values: &[f64]) -> Report {
    let sum: f64 = values.iter().sum();
    let count = values.len();
    Report {
        title,
        count,
        sum,
        mean: (count > 0).then(|| sum / count as f64),
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
    }
}

fn outbox() -> PathBuf {
    std::env::var_os("RAINDROP_OUTBOX")
        .map_or_else(|| PathBuf::from(".raindrop/outbox"), PathBuf::from)
}

/// `job_worker`: pulls `job_queue` and does the work.
#[raindrop::task]
pub(crate) async fn job_worker(
    job: Job<Work>,
    ctx: JobContext,
) -> Result<serde_json::Value, TaskError> {
    match job.payload {
        Work::Report(ReportJob { title, values }) => {
            ctx.progress(50, "summarizing").await?;
            Ok(serde_json::to_value(report(title, &values))?)
        }
        Work::Notify(NotifyJob { to, subject, body }) => {
            let dir = outbox();
            tokio::fs::create_dir_all(&dir).await?;
            let path = dir.join(format!("{}.json", ctx.id()));
            let message = serde_json::json!({ "to": to, "subject": subject, "body": body });
            // Written under a temporary name and renamed, so a reader never sees half a file and
            // a retried job rewrites the same one.
            let partial = path.with_extension("json.partial");
            tokio::fs::write(&partial, serde_json::to_vec_pretty(&message)?).await?;
            tokio::fs::rename(&partial, &path).await?;
            Ok(serde_json::json!({ "outbox": path }))
        }
        Work::Flaky(FlakyJob { fail_times, panic }) => {
            // Every run is recorded, also across a retry from the dead letters.
            let run = ctx.job().attempts.len() as u32;
            if run <= fail_times {
                if panic {
                    panic!("flaky job panicked on run {run} of {fail_times} failing runs");
                }
                return Err(TaskError::retry(format!(
                    "flaky job failed on run {run} of {fail_times} failing runs"
                )));
            }
            Ok(serde_json::json!({ "succeeded_on_run": run }))
        }
        Work::Sleep(SleepJob { ms }) => {
            let step = Duration::from_millis(ms / 10);
            for done in 1..=10u8 {
                tokio::select! {
                    () = tokio::time::sleep(step) => {}
                    () = ctx.cancellation().cancelled() => return Err(TaskError::abort("cancelled while sleeping")),
                }
                ctx.progress(done * 10, format!("step {done} of 10"))
                    .await?;
            }
            Ok(serde_json::json!({ "slept_ms": ms }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_summarizes_its_values() {
        let r = report("t".into(), &[3.0, 1.0, 2.0]);
        assert_eq!(
            (r.count, r.sum, r.mean, r.min, r.max),
            (3, 6.0, Some(2.0), Some(1.0), Some(3.0))
        );
        let empty = report("e".into(), &[]);
        assert_eq!((empty.count, empty.mean, empty.min), (0, None, None));
    }

    #[test]
    fn submissions_are_checked_field_by_field() {
        assert!(
            validate(&raw(
                serde_json::json!({ "type": "report", "title": "q3", "values": [1, 2] })
            ))
            .is_ok()
        );
        let errors = validate(&raw(
            serde_json::json!({ "type": "report", "title": "q3", "values": [1, "x"] }),
        ))
        .unwrap_err();
        assert_eq!(errors[0].field, "payload.values[1]");
        let errors = validate(&raw(
            serde_json::json!({ "type": "report", "title": "q3", "values": [], "extra": 1 }),
        ))
        .unwrap_err();
        assert!(
            errors[0].message.contains("unknown field `extra`"),
            "{errors:?}"
        );
        let errors = validate(&raw(serde_json::json!({ "type": "teleport" }))).unwrap_err();
        assert_eq!(errors[0].field, "payload.type");
        assert!(
            errors[0].message.contains("unknown type `teleport`"),
            "{errors:?}"
        );
        assert_eq!(
            validate(&raw(serde_json::json!([1]))).unwrap_err()[0].field,
            "payload.type"
        );
    }

    #[test]
    fn every_checked_payload_is_one_the_worker_reads() {
        for payload in [
            serde_json::json!({ "type": "report", "title": "t", "values": [1.5] }),
            serde_json::json!({ "type": "notify", "to": "a@b", "subject": "s", "body": "b" }),
            serde_json::json!({ "type": "flaky", "fail_times": 2 }),
            serde_json::json!({ "type": "sleep", "ms": 10 }),
        ] {
            assert!(validate(&raw(payload.clone())).is_ok(), "{payload}");
            assert!(
                serde_json::from_value::<Work>(payload.clone()).is_ok(),
                "{payload}"
            );
        }
    }
}
