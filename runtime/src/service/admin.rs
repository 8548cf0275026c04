//! Queue, dead-letter, health and metrics routes.

use axum::extract::{Path, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::Query;
use super::jobs::parse_id;
use super::{ApiError, Caller, ErrorCode, Scope, State};
use crate::control::View;
use crate::event::EventKind;
use crate::job::{JobId, now};
use crate::store::{JobStatus, StateCounts};

/// A queue's health at a glance. A key of one tenant sees its own jobs' counts and none of
/// the queue-wide figures.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueInfo {
    name: String,
    paused: bool,
    /// The jobs the caller sees (a tenant's: its own) by state.
    counts: StateCounts,
    /// How long the oldest ready job has waited, in seconds (keys of every tenant only).
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_ready_age_seconds: Option<f64>,
    /// Jobs that succeeded in the last minute (keys of every tenant only).
    #[serde(skip_serializing_if = "Option::is_none")]
    succeeded_last_minute: Option<u64>,
    /// Attempts that failed in the last minute (keys of every tenant only).
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_last_minute: Option<u64>,
}

/// The queues this service serves.
#[utoipa::path(get, path = "/v1/queues", responses((status = 200, body = Vec<QueueInfo>)))]
pub(crate) async fn queues(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<axum::Json<Vec<QueueInfo>>, ApiError> {
    caller.require(Scope::Read)?;
    let store = state.control.engine().store();
    let at = now();
    let view = caller.view();
    let queues = state.control.queues(&view, at).await?;
    // Queue-wide figures, for keys that see every tenant.
    let rates = if view == View::All {
        let minute_ago = crate::store::before(at, std::time::Duration::from_secs(60));
        Some((
            store.count_events(EventKind::Succeeded, minute_ago).await?,
            store.count_events(EventKind::Failed, minute_ago).await?,
        ))
    } else {
        None
    };
    let out = queues
        .into_iter()
        .map(|queue| QueueInfo {
            oldest_ready_age_seconds: rates.as_ref().map(|_| {
                queue
                    .oldest_ready
                    .map_or(0.0, |t| (at - t).to_std().unwrap_or_default().as_secs_f64())
            }),
            succeeded_last_minute: rates
                .as_ref()
                .map(|(succeeded, _)| succeeded.get(&queue.name).copied().unwrap_or_default()),
            failed_last_minute: rates
                .as_ref()
                .map(|(_, failed)| failed.get(&queue.name).copied().unwrap_or_default()),
            paused: queue.paused,
            counts: queue.counts,
            name: queue.name,
        })
        .collect();
    Ok(axum::Json(out))
}

/// A queue's pause state after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Paused {
    queue: String,
    paused: bool,
}

/// Stops workers taking jobs from a queue (jobs are still accepted).
#[utoipa::path(post, path = "/v1/queues/{name}/pause", params(("name" = String, Path)), responses((status = 200, body = Paused), (status = 404, body = super::ErrorBody)))]
pub(crate) async fn pause(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<Paused>, ApiError> {
    caller.require(Scope::Admin)?;
    state.control.pause(&name).await?;
    Ok(axum::Json(Paused {
        queue: name,
        paused: true,
    }))
}

/// Lets workers take jobs from a queue again.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", params(("name" = String, Path)), responses((status = 200, body = Paused), (status = 404, body = super::ErrorBody)))]
pub(crate) async fn resume(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<Paused>, ApiError> {
    caller.require(Scope::Admin)?;
    state.control.resume(&name).await?;
    Ok(axum::Json(Paused {
        queue: name,
        paused: false,
    }))
}

/// Which dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterQuery {
    /// Only this queue.
    queue: Option<String>,
    /// Continue after this job id.
    cursor: Option<String>,
    /// Per page (default 50, at most 500).
    limit: Option<usize>,
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterPage {
    jobs: Vec<JobStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    next_cursor: Option<JobId>,
}

/// A worker pool that announced itself in the last few seconds.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkerPool {
    /// The worker's name (process and pool).
    worker: String,
    task: String,
    queue: String,
    /// Jobs it may run at once.
    concurrency: usize,
    /// Jobs it runs now.
    busy: usize,
    #[schema(value_type = String, format = DateTime)]
    started_at: crate::job::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    seen_at: crate::job::Timestamp,
}

/// The worker pools pulling the queues this service serves, from every process sharing the
/// store. They are the deployment's, not a tenant's (their names carry hosts and process ids):
/// only admin keys see them.
#[utoipa::path(get, path = "/v1/workers", responses((status = 200, body = Vec<WorkerPool>), (status = 403, description = "The key lacks the `admin` scope", body = super::ErrorBody)))]
pub(crate) async fn workers(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<axum::Json<Vec<WorkerPool>>, ApiError> {
    caller.require(Scope::Admin)?;
    let store = state.control.engine().store();
    let mut pools: Vec<WorkerPool> = crate::registry::workers(store, now())
        .await?
        .into_iter()
        .filter(|pool| state.control.serves(&pool.queue))
        .map(|pool| WorkerPool {
            worker: pool.worker,
            task: pool.task,
            queue: pool.queue,
            concurrency: pool.concurrency,
            busy: pool.busy,
            started_at: pool.started_at,
            seen_at: pool.seen_at,
        })
        .collect();
    pools.sort_by(|a, b| (&a.queue, &a.worker).cmp(&(&b.queue, &b.worker)));
    Ok(axum::Json(pools))
}

/// Jobs that ran out of attempts or failed for good, newest first.
#[utoipa::path(get, path = "/v1/dead-letters", params(DeadLetterQuery), responses((status = 200, body = DeadLetterPage), (status = 404, description = "No queue of that name is served here", body = super::ErrorBody)))]
pub(crate) async fn dead_letters(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<DeadLetterQuery>,
) -> Result<axum::Json<DeadLetterPage>, ApiError> {
    caller.require(Scope::Read)?;
    let after = query.cursor.as_deref().map(parse_id).transpose()?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let page = state
        .control
        .dead_letters(
            &caller.view(),
            query.queue.filter(|q| !q.is_empty()),
            after,
            limit,
        )
        .await?;
    Ok(axum::Json(DeadLetterPage {
        jobs: page.items.iter().map(JobStatus::of).collect(),
        next_cursor: page.next,
    }))
}

/// A dead letter put back in its queue.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Retried {
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    status_url: String,
}

/// Puts a dead letter back in its queue with a fresh set of attempts.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/retry", params(("id" = uuid::Uuid, Path, description = "Job id")), responses((status = 202, body = Retried), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub(crate) async fn retry_dead_letter(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Submit)?;
    let id = parse_id(&id)?;
    // Another tenant's job is not found; admins may retry any.
    state.control.retry_dead(&caller.view(), id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Retried {
            id,
            status_url: format!("/v1/jobs/{id}"),
        }),
    )
        .into_response())
}

/// Which dead letters to purge.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PurgeQuery {
    /// Only this queue (default: all).
    queue: Option<String>,
}

/// How many were purged.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PurgedCount {
    purged: u64,
}

/// Removes dead letters for good.
#[utoipa::path(delete, path = "/v1/dead-letters", params(PurgeQuery), responses((status = 200, body = PurgedCount), (status = 404, description = "No queue of that name is served here", body = super::ErrorBody)))]
pub(crate) async fn purge_dead_letters(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<PurgeQuery>,
) -> Result<axum::Json<PurgedCount>, ApiError> {
    caller.require(Scope::Admin)?;
    // `?queue=` names no queue: every served one, as without it.
    let queue = query.queue.as_deref().filter(|q| !q.is_empty());
    let purged = state.control.purge_dead(queue).await?;
    Ok(axum::Json(PurgedCount { purged }))
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// The store answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Health), (status = 503, body = super::ErrorBody)))]
pub(crate) async fn readyz(Extract(state): Extract<State>) -> Result<axum::Json<Health>, ApiError> {
    state.control.engine().store().ready().await?;
    Ok(axum::Json(Health { status: "ready" }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain"), (status = 503, body = super::ErrorBody)))]
pub(crate) async fn metrics(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let handle = state.metrics.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::MetricsUnavailable,
            "another metrics recorder is installed in this process",
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}
