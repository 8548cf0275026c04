//! Job routes: submit, batch, status, cancel, list (events: [`super::streams`]).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::Query;
use super::{ApiError, Caller, ErrorCode, FieldError, Scope, State, read_json};
use crate::control;
use crate::job::{JobId, JobState, Payload, Timestamp};
use crate::plan::Ceiling;
use crate::queue::SendOptions;
use crate::store::{Enqueued, JobFilter, JobStatus};

/// Most jobs one page lists.
const MAX_PAGE: usize = 500;
/// Most jobs one batch submits.
const MAX_BATCH: usize = 1000;

/// A job to submit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitJob {
    /// The queue; may be left out when the service serves one queue.
    queue: Option<String>,
    /// What kind of work it is (default: the queue's name).
    kind: Option<String>,
    /// The work's input.
    #[schema(value_type = Object)]
    payload: Box<serde_json::value::RawValue>,
    /// Higher runs first.
    #[serde(default)]
    priority: i32,
    /// Run no sooner than this many milliseconds from now.
    delay_ms: Option<u64>,
    /// Run no sooner than this time (wins over `delay_ms`).
    #[schema(value_type = Option<String>, format = DateTime)]
    run_at: Option<Timestamp>,
    /// Attempts before it becomes a dead letter (default and most: the queue's `max_attempts`).
    max_attempts: Option<u32>,
    /// Longest one attempt may take, in milliseconds (default and most: the task's `timeout`).
    timeout_ms: Option<u64>,
    /// Jobs with the same key on one queue are one job (the `Idempotency-Key` header wins).
    idempotency_key: Option<String>,
    /// While a job of this queue and tenant with the same unique key waits or runs (or is in a
    /// state the queue's `unique` rule names, or finished within its `for`), this submission
    /// is that job (`duplicate: true`); instead of the key the queue's rule makes.
    unique_key: Option<String>,
    /// In a queue with a `debounce` rule, the key of this submission's burst instead of the one
    /// the rule takes from the job.
    debounce_key: Option<String>,
    /// Free-form metadata, e.g. trace context.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A submitted job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Submitted {
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    queue: String,
    /// Whether an earlier job was returned instead: one with the same idempotency key, one the
    /// queue's `unique` rule (or `unique_key`) makes this one, or the first of a leading
    /// debounce's burst.
    duplicate: bool,
    /// Whether the submission went into a waiting job of its trailing debounce's burst (`id`):
    /// that job runs with this submission's payload, a debounce window from now.
    debounced: bool,
    /// Where to read its status.
    status_url: String,
    /// Where to follow its events.
    events_url: String,
}

/// Several jobs to submit at once, all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBatch {
    jobs: Vec<SubmitJob>,
}

/// The outcome of a batch, in order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubmittedBatch {
    jobs: Vec<Submitted>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobPage {
    jobs: Vec<JobStatus>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    next_cursor: Option<JobId>,
}

/// Which jobs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only this queue.
    queue: Option<String>,
    /// Only these states, comma-separated (e.g. `queued,running`).
    state: Option<String>,
    /// Only this kind.
    kind: Option<String>,
    /// Continue after this job id (from `next_cursor`).
    cursor: Option<String>,
    /// Jobs per page (default 50, at most 500).
    limit: Option<usize>,
}

/// What a cancel did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Cancelled {
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// `cancelled` (it was waiting) or `cancelled_running` (its worker is told to stop).
    outcome: &'static str,
}

/// A job id from a path or query (400 `invalid_id` if it is not one).
pub(crate) fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(ErrorCode::InvalidId, format!("`{raw}` is not a job id")))
}

fn submitted(outcome: Enqueued, queue: String) -> Submitted {
    let id = outcome.id();
    Submitted {
        id,
        queue,
        duplicate: matches!(outcome, Enqueued::Duplicate(_)),
        debounced: matches!(outcome, Enqueued::Debounced(_)),
        status_url: format!("/v1/jobs/{id}"),
        events_url: format!("/v1/jobs/{id}/events"),
    }
}

/// Checks a submission and turns it into the payload and options of a job, or field errors.
fn prepare(
    state: &State,
    caller: &Caller,
    request: &HeaderMap,
    job: SubmitJob,
    idempotency_key: Option<String>,
    at: &str,
) -> Result<(String, Payload, SendOptions), Vec<FieldError>> {
    let field = |name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    let served = state.control.served();
    let queue = match job.queue {
        Some(queue) if state.control.serves(&queue) => queue,
        Some(queue) => {
            return Err(vec![FieldError {
                field: field("queue"),
                message: format!(
                    "this service takes jobs for {}, not `{queue}`",
                    served.join(", ")
                ),
            }]);
        }
        None => match served {
            [only] => only.clone(),
            _ => {
                return Err(vec![FieldError {
                    field: field("queue"),
                    message: format!("name the queue: one of {}", served.join(", ")),
                }]);
            }
        },
    };
    if job.debounce_key.is_some()
        && state
            .control
            .engine()
            .app()
            .queues
            .iter()
            .any(|q| q.name.as_str() == queue && q.debounce.is_none())
    {
        return Err(vec![FieldError {
            field: field("debounce_key"),
            message: format!("queue `{queue}` has no `debounce` rule to key"),
        }]);
    }
    if let Some(ceiling) = state.ceilings.get(&queue) {
        let errors = beyond_ceiling(*ceiling, &queue, job.max_attempts, job.timeout_ms, &field);
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    if state.check_schemas
        && let Some(schema) = state.schemas.get(&queue)
    {
        schema.check(&job.payload).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| FieldError {
                    field: field(&e.field),
                    message: e.message,
                })
                .collect::<Vec<_>>()
        })?;
    }
    if let Some(validator) = state.validators.get(&queue) {
        validator(&job.payload).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| FieldError {
                    field: field(&e.field),
                    message: e.message,
                })
                .collect::<Vec<_>>()
        })?;
    }
    let payload = Payload::from_value(&job.payload).map_err(|e| {
        vec![FieldError {
            field: field("payload"),
            message: e.to_string(),
        }]
    })?;
    let kind = job.kind.or_else(|| {
        let field = state.kind_fields.get(&queue)?;
        kind_in(&job.payload, field)
    });
    let options = SendOptions {
        kind,
        priority: job.priority,
        delay: job.delay_ms.map(Duration::from_millis),
        at: job.run_at,
        idempotency_key: idempotency_key.or(job.idempotency_key),
        unique_key: job.unique_key,
        debounce_key: job.debounce_key,
        max_attempts: job.max_attempts,
        timeout: job.timeout_ms.map(Duration::from_millis),
        tenant: caller.tenant.clone(),
        // Set with the rest of the quota (`apply_quota`).
        max_waiting: None,
        headers: {
            let mut headers = job.headers;
            crate::telemetry::inject(request, &mut headers);
            headers
        },
    };
    Ok((queue, payload, options))
}

/// What a submission asks for beyond what the manifest lets one to `queue` ask for: more
/// attempts than the queue's `max_attempts`, a longer timeout than its tasks' `timeout`, or
/// none at all.
fn beyond_ceiling(
    ceiling: Ceiling,
    queue: &str,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    field: &dyn Fn(&str) -> String,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match max_attempts {
        Some(0) => errors.push(FieldError {
            field: field("max_attempts"),
            message: "at least 1".into(),
        }),
        Some(asked) if asked > ceiling.max_attempts => errors.push(FieldError {
            field: field("max_attempts"),
            message: format!(
                "at most {} (the max_attempts of queue `{queue}`)",
                ceiling.max_attempts
            ),
        }),
        _ => {}
    }
    if let Some(asked) = timeout_ms {
        let most = ceiling.timeout.map_or(0, |t| t.as_millis());
        if asked == 0 {
            errors.push(FieldError {
                field: field("timeout_ms"),
                message: "at least 1".into(),
            });
        } else if u128::from(asked) > most {
            errors.push(FieldError {
                field: field("timeout_ms"),
                message: match ceiling.timeout {
                    Some(_) => format!(
                        "at most {most} (the longest timeout of the tasks working queue `{queue}`)"
                    ),
                    None => format!("no task works queue `{queue}`, so no timeout may be asked"),
                },
            });
        }
    }
    errors
}

/// The top-level string field `field` of `payload`, if it is an object that has one (at most
/// 200 bytes: a kind is a name, not data).
fn kind_in(payload: &serde_json::value::RawValue, field: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Fields<'a>(
        #[serde(borrow)]
        std::collections::HashMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>,
    );
    let Fields(fields) = serde_json::from_str(payload.get()).ok()?;
    let kind: String = serde_json::from_str(fields.get(field)?.get()).ok()?;
    (!kind.is_empty() && kind.len() <= 200).then_some(kind)
}

/// Applies the tenant's quota to jobs about to be submitted: clamps their priorities, refuses
/// payloads over the size limit (413), and gives each job the most jobs the tenant may have
/// waiting, which the store enforces as it adds them (429 over it). Without authentication
/// there are no tenants and no quota.
async fn apply_quota(
    state: &State,
    caller: &Caller,
    jobs: &mut [(String, Payload, SendOptions)],
) -> Result<(), ApiError> {
    let (Some(quota), Some(_)) = (&state.quota, &caller.tenant) else {
        return Ok(());
    };
    for (_, payload, options) in jobs.iter_mut() {
        if let Some(limit) = quota.max_payload
            && payload.len() as u64 > limit.bytes()
        {
            return Err(ApiError::new(
                ErrorCode::QuotaPayload,
                format!(
                    "the payload is {} bytes; this tenant may submit at most {limit}",
                    payload.len()
                ),
            ));
        }
        let floor = quota.min_priority.unwrap_or(i32::MIN);
        let ceiling = quota.max_priority.unwrap_or(i32::MAX);
        options.priority = options.priority.clamp(floor, ceiling);
        // The store checks the quota of waiting jobs in the step that adds them, so
        // concurrent submissions cannot pass it together.
        options.max_waiting = quota.max_queued.map(u64::from);
    }
    Ok(())
}

/// Submits a job.
#[utoipa::path(
    post, path = "/v1/jobs", request_body = SubmitJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key returns the same job")),
    responses(
        (status = 202, description = "Accepted", body = Submitted),
        (status = 400, description = "Invalid body or payload", body = super::ErrorBody),
        (status = 413, description = "Body or payload too large", body = super::ErrorBody),
    )
)]
pub(crate) async fn submit(
    Extract(state): Extract<State>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Submit)?;
    let job: SubmitJob = read_json(body, state.max_body).await?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let prepared =
        prepare(&state, &caller, &headers, job, key, "").map_err(ApiError::validation)?;
    let mut jobs = [prepared];
    apply_quota(&state, &caller, &mut jobs).await?;
    let [(queue, payload, options)] = jobs;
    let outcome = state
        .control
        .engine()
        .queue(&queue)?
        .send_batch(vec![(payload, options)])
        .await?;
    let outcome = outcome.into_iter().next().ok_or_else(|| {
        ApiError::from(crate::Error::store(
            "enqueue",
            crate::error::StoreErrorKind::Internal,
            "no outcome for the job",
        ))
    })?;
    Ok((StatusCode::ACCEPTED, axum::Json(submitted(outcome, queue))).into_response())
}

/// Submits several jobs at once, all or none.
#[utoipa::path(
    post, path = "/v1/jobs/batch", request_body = SubmitBatch,
    responses(
        (status = 202, description = "Accepted", body = SubmittedBatch),
        (status = 400, description = "Invalid body or payload", body = super::ErrorBody),
        (status = 413, description = "Body or payload too large", body = super::ErrorBody),
    )
)]
pub(crate) async fn submit_batch(
    Extract(state): Extract<State>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Submit)?;
    let batch: SubmitBatch = read_json(body, state.max_body).await?;
    if batch.jobs.is_empty() || batch.jobs.len() > MAX_BATCH {
        return Err(ApiError::validation(vec![FieldError {
            field: "jobs".into(),
            message: format!("submit 1 to {MAX_BATCH} jobs"),
        }]));
    }
    let mut errors = Vec::new();
    let mut prepared = Vec::with_capacity(batch.jobs.len());
    for (index, job) in batch.jobs.into_iter().enumerate() {
        match prepare(
            &state,
            &caller,
            &headers,
            job,
            None,
            &format!("jobs[{index}]"),
        ) {
            Ok(job) => prepared.push(job),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    apply_quota(&state, &caller, &mut prepared).await?;
    // Every job is checked (its queue's size limit among them) before any is written; then
    // one enqueue writes them all: atomically on the memory and SQLite stores, per queue on
    // Redis (a Redis Cluster keeps each queue in a slot of its own).
    let mut queues = Vec::with_capacity(prepared.len());
    let mut built = Vec::with_capacity(prepared.len());
    for (queue, payload, options) in prepared {
        let producer = state
            .producers
            .get(&queue)
            .ok_or_else(|| control::Error::NotServed(queue.clone()))?;
        built.push(producer.job(payload, options)?);
        queues.push(queue);
    }
    let outcomes = state
        .control
        .engine()
        .store()
        .enqueue(built, crate::job::now())
        .await?;
    let jobs = outcomes
        .into_iter()
        .zip(queues)
        .map(|(outcome, queue)| submitted(outcome, queue))
        .collect();
    Ok((StatusCode::ACCEPTED, axum::Json(SubmittedBatch { jobs })).into_response())
}

/// A job's state, progress, attempts and result or error.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, body = JobStatus), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody))
)]
pub(crate) async fn status(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<JobStatus>, ApiError> {
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    Ok(axum::Json(state.control.status(&caller.view(), id).await?))
}

/// Cancels a waiting or running job.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, body = Cancelled), (status = 404, body = super::ErrorBody), (status = 409, description = "Already finished", body = super::ErrorBody))
)]
pub(crate) async fn cancel(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Cancelled>, ApiError> {
    caller.require(Scope::Submit)?;
    let id = parse_id(&id)?;
    let outcome = match state.control.cancel(&caller.view(), id).await? {
        control::Cancelled::Waiting => "cancelled",
        control::Cancelled::Running => "cancelled_running",
    };
    Ok(axum::Json(Cancelled { id, outcome }))
}

/// Jobs, newest first, filtered, a page at a time.
#[utoipa::path(
    get, path = "/v1/jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = super::ErrorBody), (status = 404, description = "No queue of that name is served here", body = super::ErrorBody))
)]
pub(crate) async fn list(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<JobPage>, ApiError> {
    caller.require(Scope::Read)?;
    let states = match &query.state {
        Some(states) => states
            .split(',')
            .map(|s| {
                s.trim().parse::<JobState>().map_err(|_| FieldError {
                    field: "state".into(),
                    message: format!("`{s}` is not a job state"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::validation(vec![e]))?,
        None => Vec::new(),
    };
    let filter = JobFilter {
        queues: query.queue.into_iter().filter(|q| !q.is_empty()).collect(),
        states,
        kind: query.kind,
        tenant: None,
    };
    let after = query.cursor.as_deref().map(parse_id).transpose()?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let page = state
        .control
        .list(&caller.view(), filter, after, limit)
        .await?;
    Ok(axum::Json(JobPage {
        jobs: page.items.iter().map(JobStatus::of).collect(),
        next_cursor: page.next,
    }))
}
