//! One body per behaviour every store must have. `tests/conformance.rs` runs each against every
//! store, so no store can quietly differ.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use raindrop::Error;
use raindrop::event::EventKind;
use raindrop::job::{JobError, JobId, JobState, NewJob, Payload, Progress, Timestamp};
use raindrop::kv::StatusView;
use raindrop::store::{
    AfterFailure, CancelOutcome, Enqueued, JobFilter, JobStatus, KvEntry, LeaseStatus,
    RetentionPolicy, StatusCache, Store,
};

pub type S = Arc<dyn Store>;

/// The namespace of the status kv_cache read over the stores under test.
pub const STATUS: &str = "status";

/// The status kv_cache over `store`, read as the engine reads it: a finished job's document
/// lives an hour.
fn status_view(store: &S) -> StatusView {
    let cache = StatusCache {
        namespace: STATUS.into(),
        ttl: Some(Duration::from_secs(3600)),
    };
    StatusView::new(store.clone(), cache)
}
const LEASE: Duration = Duration::from_secs(30);

/// `secs` seconds after a fixed instant: tests drive the clock.
pub fn t(secs: i64) -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn new_job(queue: &str, n: u32) -> NewJob {
    let mut job = NewJob::new(
        queue,
        "test",
        Payload::from_value(&serde_json::json!({ "n": n })).unwrap(),
    );
    job.max_attempts = 3;
    job
}

async fn enqueue(store: &S, job: NewJob, now: Timestamp) -> JobId {
    let out = store.enqueue(vec![job], now).await.unwrap();
    assert!(matches!(out[0], Enqueued::New(_)), "{out:?}");
    out[0].id()
}

fn n(job: &raindrop::job::Job) -> u64 {
    serde_json::from_str::<serde_json::Value>(job.payload.as_str()).unwrap()["n"]
        .as_u64()
        .unwrap()
}

/// Claims the one job waiting in queue `q` for `worker`.
async fn claim_one(store: &S, worker: &str, now: Timestamp) -> raindrop::job::Job {
    let mut claimed = store.claim("q", worker, 1, LEASE, now).await.unwrap();
    assert_eq!(claimed.len(), 1, "one job to claim");
    claimed.remove(0)
}

async fn claim_all(store: &S, queue: &str, now: Timestamp) -> Vec<u64> {
    store
        .claim(queue, "w", 100, LEASE, now)
        .await
        .unwrap()
        .iter()
        .map(n)
        .collect()
}

pub async fn enqueue_then_get_returns_the_job(store: S) {
    let mut job = new_job("q", 7);
    job.priority = 3;
    job.tenant = Some("acme".into());
    job.headers
        .insert("traceparent".into(), "00-abc-def-01".into());
    job.timeout = Some(Duration::from_millis(1500));
    let id = enqueue(&store, job, t(0)).await;
    let got = store.get(id).await.unwrap().expect("stored");
    assert_eq!(got.state, JobState::Queued);
    assert_eq!(got.queue, "q");
    assert_eq!(got.kind, "test");
    assert_eq!(n(&got), 7);
    assert_eq!(got.priority, 3);
    assert_eq!(got.tenant.as_deref(), Some("acme"));
    assert_eq!(got.headers["traceparent"], "00-abc-def-01");
    assert_eq!(got.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(got.attempt, 0);
    assert_eq!(got.max_attempts, 3);
    assert_eq!(got.created_at, t(0));
    assert!(store.get(JobId::new()).await.unwrap().is_none());
}

/// Every text a job carries comes back from a claim as it went in, whatever its characters:
/// quotes, backslashes, slashes, control characters, non-ASCII (a store may carry records in
/// an encoding of its own).
pub async fn a_claimed_job_arrives_byte_for_byte(store: S) {
    let odd = "quote \" backslash \\ slash / tab \t newline \n é 🦀 \u{2028} \u{1} \u{7f} {}[],:";
    let payload = serde_json::json!({ "text": odd, "list": [odd, 1.5, null] });
    let mut job = NewJob::new("q", odd, Payload::from_value(&payload).unwrap());
    job.max_attempts = 3;
    job.tenant = Some(format!("tenant {odd}"));
    job.idempotency_key = Some(format!("key {odd}"));
    job.headers.insert(odd.into(), odd.into());
    let id = enqueue(&store, job, t(0)).await;
    let worker = format!("worker {odd}");
    let check = |job: &raindrop::job::Job| {
        assert_eq!(job.id, id);
        assert_eq!(job.kind, odd);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(job.payload.as_str()).unwrap(),
            payload
        );
        assert_eq!(
            job.tenant.as_deref(),
            Some(format!("tenant {odd}").as_str())
        );
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some(format!("key {odd}").as_str())
        );
        assert_eq!(job.headers.get(odd).map(String::as_str), Some(odd));
    };
    let first = claim_one(&store, &worker, t(1)).await;
    check(&first);
    assert_eq!(first.lease.as_ref().unwrap().worker, worker);
    store
        .fail(
            id,
            first.lease_token().unwrap(),
            JobError::new(odd),
            AfterFailure::Retry { at: t(2) },
            t(2),
        )
        .await
        .unwrap();
    // The second claim reads a record that holds the first attempt, its worker and its error.
    let second = claim_one(&store, &worker, t(3)).await;
    check(&second);
    assert_eq!(second.attempt, 2);
    assert_eq!(second.attempts[0].worker, worker);
    assert_eq!(second.attempts[0].error.as_ref().unwrap().message, odd);
    assert_eq!(second.error.as_ref().unwrap().message, odd);
    check(&store.get(id).await.unwrap().unwrap());
}

pub async fn fifo_within_a_priority(store: S) {
    for i in 0..20 {
        enqueue(&store, new_job("q", i), t(0)).await;
    }
    assert_eq!(
        claim_all(&store, "q", t(1)).await,
        (0..20).collect::<Vec<_>>()
    );
}

pub async fn higher_priority_runs_first(store: S) {
    for (i, priority) in [(0, 0), (1, 5), (2, -1), (3, 5), (4, 10)] {
        let mut job = new_job("q", i);
        job.priority = priority;
        enqueue(&store, job, t(0)).await;
    }
    assert_eq!(claim_all(&store, "q", t(1)).await, vec![4, 1, 3, 0, 2]);
}

pub async fn equal_priority_orders_by_run_time_then_insertion(store: S) {
    let mut late = new_job("q", 0);
    late.run_at = Some(t(5));
    enqueue(&store, late, t(0)).await;
    let mut early = new_job("q", 1);
    early.run_at = Some(t(2));
    enqueue(&store, early, t(0)).await;
    enqueue(&store, new_job("q", 2), t(3)).await;
    assert_eq!(claim_all(&store, "q", t(10)).await, vec![1, 2, 0]);
}

pub async fn delayed_job_is_not_claimed_early(store: S) {
    let mut job = new_job("q", 1);
    job.run_at = Some(t(60));
    let id = enqueue(&store, job, t(0)).await;
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    assert!(claim_all(&store, "q", t(59)).await.is_empty());
    assert_eq!(claim_all(&store, "q", t(60)).await, vec![1]);
}

pub async fn promote_marks_due_jobs_queued(store: S) {
    let mut job = new_job("q", 1);
    job.run_at = Some(t(10));
    let id = enqueue(&store, job, t(0)).await;
    assert_eq!(store.promote(t(9)).await.unwrap(), 0);
    assert_eq!(store.promote(t(10)).await.unwrap(), 1);
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

pub async fn claim_takes_at_most_the_limit(store: S) {
    for i in 0..5 {
        enqueue(&store, new_job("q", i), t(0)).await;
    }
    assert_eq!(
        store.claim("q", "w", 2, LEASE, t(1)).await.unwrap().len(),
        2
    );
    assert_eq!(
        store.claim("q", "w", 10, LEASE, t(1)).await.unwrap().len(),
        3
    );
    assert!(
        store
            .claim("q", "w", 10, LEASE, t(1))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn claim_leases_and_counts_the_attempt(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let claimed = store.claim("q", "worker-a", 1, LEASE, t(1)).await.unwrap();
    let job = &claimed[0];
    assert_eq!(job.id, id);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.started_at, Some(t(1)));
    let lease = job.lease.as_ref().expect("leased");
    assert_eq!(lease.worker, "worker-a");
    assert_eq!(lease.expires_at, t(31));
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].worker, "worker-a");
    assert_eq!(
        store.get(id).await.unwrap().unwrap().lease_token(),
        Some(lease.token)
    );
}

pub async fn queues_are_isolated(store: S) {
    enqueue(&store, new_job("a", 1), t(0)).await;
    enqueue(&store, new_job("b", 2), t(0)).await;
    assert_eq!(claim_all(&store, "b", t(1)).await, vec![2]);
    assert_eq!(claim_all(&store, "a", t(1)).await, vec![1]);
}

pub async fn complete_stores_the_result(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    let result = Payload::from_json(r#"{"total":42}"#).unwrap();
    store
        .complete(id, job.lease_token().unwrap(), result.clone(), t(3))
        .await
        .unwrap();
    let done = store.get(id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(result));
    assert_eq!(done.finished_at, Some(t(3)));
    assert!(done.lease.is_none());
    assert_eq!(done.attempts[0].finished_at, Some(t(3)));
    assert_eq!(done.attempts[0].duration(), Some(Duration::from_secs(2)));
}

pub async fn complete_with_a_stale_token_is_refused(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    let token = job.lease_token().unwrap();
    let err = store
        .complete(id, token + 1000, Payload::null(), t(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost(e) if e == id), "{err:?}");
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Running
    );
    store
        .complete(id, token, Payload::null(), t(2))
        .await
        .unwrap();
    let again = store
        .complete(id, token, Payload::null(), t(3))
        .await
        .unwrap_err();
    assert!(
        matches!(again, Error::LeaseLost(_)),
        "completing twice: {again:?}"
    );
}

pub async fn failing_with_retry_schedules_the_next_attempt(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    store
        .fail(
            id,
            job.lease_token().unwrap(),
            JobError::new("boom"),
            AfterFailure::Retry { at: t(20) },
            t(2),
        )
        .await
        .unwrap();
    let failed = store.get(id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Retrying);
    assert_eq!(failed.run_at, t(20));
    assert_eq!(failed.error, Some(JobError::new("boom")));
    assert!(
        claim_all(&store, "q", t(19)).await.is_empty(),
        "retried before its time"
    );
    let retried = store.claim("q", "w", 1, LEASE, t(20)).await.unwrap();
    assert_eq!(retried[0].attempt, 2);
}

pub async fn out_of_attempts_becomes_a_dead_letter(store: S) {
    let mut new = new_job("q", 1);
    new.max_attempts = 2;
    let id = enqueue(&store, new, t(0)).await;
    for attempt in 1..=2 {
        let job = store
            .claim("q", "w", 1, LEASE, t(attempt))
            .await
            .unwrap()
            .remove(0);
        store
            .fail(
                id,
                job.lease_token().unwrap(),
                JobError::new(format!("failure {attempt}")),
                AfterFailure::Retry { at: t(attempt) },
                t(attempt),
            )
            .await
            .unwrap();
    }
    let dead = store.get(id).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempt, 2);
    assert_eq!(dead.finished_at, Some(t(2)));
    let errors: Vec<_> = dead
        .attempts
        .iter()
        .map(|a| a.error.clone().unwrap().message)
        .collect();
    assert_eq!(errors, vec!["failure 1", "failure 2"]);
    assert!(claim_all(&store, "q", t(100)).await.is_empty());
}

pub async fn a_fatal_failure_dead_letters_at_once(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    store
        .fail(
            id,
            job.lease_token().unwrap(),
            JobError::new("invalid input"),
            AfterFailure::Dead,
            t(2),
        )
        .await
        .unwrap();
    let dead = store.get(id).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempt, 1);
}

pub async fn fail_with_a_stale_token_is_refused(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    let err = store
        .fail(
            id,
            job.lease_token().unwrap() + 1,
            JobError::new("x"),
            AfterFailure::Dead,
            t(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost(_)), "{err:?}");
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Running
    );
}

pub async fn heartbeat_extends_the_lease(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(0))
        .await
        .unwrap()
        .remove(0);
    let token = job.lease_token().unwrap();
    let status = store.heartbeat(&[(id, token)], LEASE, t(20)).await.unwrap();
    assert_eq!(status, vec![LeaseStatus::Extended]);
    assert!(
        store.recover(t(31)).await.unwrap().is_empty(),
        "extended lease was recovered"
    );
    assert_eq!(
        store
            .get(id)
            .await
            .unwrap()
            .unwrap()
            .lease
            .unwrap()
            .expires_at,
        t(50)
    );
}

pub async fn heartbeat_reports_a_lost_lease(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(0))
        .await
        .unwrap()
        .remove(0);
    store.recover(t(31)).await.unwrap();
    let status = store
        .heartbeat(
            &[(id, job.lease_token().unwrap()), (JobId::new(), 1)],
            LEASE,
            t(32),
        )
        .await
        .unwrap();
    assert_eq!(status, vec![LeaseStatus::Lost, LeaseStatus::Lost]);
}

pub async fn expired_lease_returns_the_job_to_its_queue(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    store.claim("q", "w", 1, LEASE, t(0)).await.unwrap();
    assert!(store.recover(t(29)).await.unwrap().is_empty());
    let recovered = store.recover(t(30)).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].id, id);
    assert_eq!(recovered[0].state, JobState::Queued);
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert!(
        job.attempts[0].error.is_some(),
        "the lost attempt is recorded"
    );
    let again = store.claim("q", "w2", 1, LEASE, t(31)).await.unwrap();
    assert_eq!(again[0].attempt, 2);
}

pub async fn expired_lease_without_attempts_left_is_dead(store: S) {
    let mut new = new_job("q", 1);
    new.max_attempts = 1;
    let id = enqueue(&store, new, t(0)).await;
    store.claim("q", "w", 1, LEASE, t(0)).await.unwrap();
    let recovered = store.recover(t(31)).await.unwrap();
    assert_eq!(recovered[0].state, JobState::Dead);
    assert_eq!(store.get(id).await.unwrap().unwrap().state, JobState::Dead);
}

pub async fn a_recovered_jobs_old_token_is_fenced_off(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let first = store
        .claim("q", "slow", 1, LEASE, t(0))
        .await
        .unwrap()
        .remove(0);
    store.recover(t(31)).await.unwrap();
    let second = store
        .claim("q", "fast", 1, LEASE, t(32))
        .await
        .unwrap()
        .remove(0);
    assert_ne!(first.lease_token(), second.lease_token());
    let late = store
        .complete(id, first.lease_token().unwrap(), Payload::null(), t(33))
        .await
        .unwrap_err();
    assert!(matches!(late, Error::LeaseLost(_)), "{late:?}");
    store
        .complete(id, second.lease_token().unwrap(), Payload::null(), t(34))
        .await
        .unwrap();
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
}

pub async fn release_does_not_burn_an_attempt(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    store
        .release(id, job.lease_token().unwrap(), t(2))
        .await
        .unwrap();
    let released = store.get(id).await.unwrap().unwrap();
    assert_eq!(released.state, JobState::Queued);
    assert_eq!(released.attempt, 0);
    assert!(released.attempts.is_empty());
    let again = store.claim("q", "w", 1, LEASE, t(3)).await.unwrap();
    assert_eq!(again[0].attempt, 1);
}

pub async fn cancel_a_queued_job(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    assert_eq!(
        store.cancel(id, t(1)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.finished_at, Some(t(1)));
    assert!(claim_all(&store, "q", t(2)).await.is_empty());
}

pub async fn cancel_a_scheduled_job(store: S) {
    let mut new = new_job("q", 1);
    new.run_at = Some(t(10));
    let id = enqueue(&store, new, t(0)).await;
    assert_eq!(
        store.cancel(id, t(1)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(claim_all(&store, "q", t(20)).await.is_empty());
}

pub async fn cancel_a_running_job_revokes_its_lease(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    let token = job.lease_token().unwrap();
    assert_eq!(
        store.cancel(id, t(2)).await.unwrap(),
        CancelOutcome::CancelledRunning
    );
    assert_eq!(
        store.heartbeat(&[(id, token)], LEASE, t(3)).await.unwrap(),
        vec![LeaseStatus::Cancelled]
    );
    assert!(matches!(
        store.complete(id, token, Payload::null(), t(4)).await,
        Err(Error::LeaseLost(_))
    ));
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert!(
        store.recover(t(100)).await.unwrap().is_empty(),
        "a cancelled job is not recovered"
    );
}

pub async fn cancel_a_finished_or_unknown_job(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    store
        .complete(id, job.lease_token().unwrap(), Payload::null(), t(2))
        .await
        .unwrap();
    assert_eq!(
        store.cancel(id, t(3)).await.unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Succeeded)
    );
    assert!(matches!(
        store.cancel(JobId::new(), t(3)).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn idempotency_key_dedupes_across_enqueues(store: S) {
    let mut first = new_job("q", 1);
    first.idempotency_key = Some("order-17".into());
    let id = enqueue(&store, first, t(0)).await;
    let mut second = new_job("q", 2);
    second.idempotency_key = Some("order-17".into());
    let out = store.enqueue(vec![second], t(1)).await.unwrap();
    assert_eq!(out, vec![Enqueued::Duplicate(id)]);
    assert_eq!(claim_all(&store, "q", t(2)).await, vec![1]);
}

pub async fn idempotency_key_dedupes_within_a_batch(store: S) {
    let mut a = new_job("q", 1);
    a.idempotency_key = Some("k".into());
    let mut b = new_job("q", 2);
    b.idempotency_key = Some("k".into());
    let out = store.enqueue(vec![a, b], t(0)).await.unwrap();
    assert!(matches!(out[0], Enqueued::New(_)));
    assert_eq!(out[1], Enqueued::Duplicate(out[0].id()));
}

pub async fn idempotency_keys_are_per_queue(store: S) {
    let mut a = new_job("a", 1);
    a.idempotency_key = Some("k".into());
    let mut b = new_job("b", 2);
    b.idempotency_key = Some("k".into());
    let out = store.enqueue(vec![a, b], t(0)).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, Enqueued::New(_))), "{out:?}");
}

pub async fn the_event_feed_pages_through_batches_without_gaps_or_repeats(store: S) {
    let start = store.last_event_seq().await.unwrap();
    let jobs: Vec<NewJob> = (0..250).map(|i| new_job("q", i)).collect();
    store.enqueue(jobs, t(0)).await.unwrap();
    let claimed = store.claim("q", "w", 250, LEASE, t(1)).await.unwrap();
    assert_eq!(claimed.len(), 250);
    // Completed at once, as a busy worker pool does: stores may record them together.
    let completions = claimed
        .iter()
        .map(|job| store.complete(job.id, job.lease_token().unwrap(), Payload::null(), t(2)));
    for done in futures_util::future::join_all(completions).await {
        done.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = start;
    loop {
        let page = store.events_after(after, 7).await.unwrap();
        assert!(page.len() <= 7, "{} events for a limit of 7", page.len());
        let Some(last) = page.last() else { break };
        after = last.seq;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 750, "every event once");
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut per_job: BTreeMap<JobId, Vec<EventKind>> = BTreeMap::new();
    for event in &seen {
        per_job.entry(event.job).or_default().push(event.kind);
    }
    assert_eq!(per_job.len(), 250);
    for kinds in per_job.values() {
        assert_eq!(
            kinds,
            &[
                EventKind::Enqueued,
                EventKind::Started,
                EventKind::Succeeded
            ]
        );
    }
    assert_eq!(store.last_event_seq().await.unwrap(), after);
}

pub async fn a_retried_jobs_attempts_list_each_outcome(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let first = claim_one(&store, "w1", t(1)).await;
    store
        .fail(
            id,
            first.lease_token().unwrap(),
            JobError::new("flaky"),
            AfterFailure::Retry { at: t(3) },
            t(2),
        )
        .await
        .unwrap();
    let second = claim_one(&store, "w2", t(3)).await;
    let running = store.get(id).await.unwrap().unwrap();
    assert_eq!(running.attempts.len(), 2);
    assert_eq!(running.attempts[1].finished_at, None, "the open attempt");
    store
        .complete(id, second.lease_token().unwrap(), Payload::null(), t(5))
        .await
        .unwrap();
    let done = store.get(id).await.unwrap().unwrap();
    let attempts: Vec<_> = done
        .attempts
        .iter()
        .map(|a| {
            (
                a.number,
                a.worker.as_str(),
                a.started_at,
                a.finished_at,
                a.error.as_ref().map(|e| e.message.as_str()),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (1, "w1", t(1), Some(t(2)), Some("flaky")),
            (2, "w2", t(3), Some(t(5)), None),
        ]
    );
    assert_eq!(done.started_at, Some(t(1)));
    assert!(done.lease.is_none());
}

pub async fn batch_enqueue_adds_every_job(store: S) {
    let jobs: Vec<NewJob> = (0..500).map(|i| new_job("q", i)).collect();
    let out = store.enqueue(jobs, t(0)).await.unwrap();
    assert_eq!(out.len(), 500);
    assert_eq!(store.counts().await.unwrap()["q"].queued, 500);
}

pub async fn dead_letters_list_retry_and_purge(store: S) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = enqueue(&store, new_job("q", i), t(0)).await;
        let job = store
            .claim("q", "w", 1, LEASE, t(1))
            .await
            .unwrap()
            .remove(0);
        store
            .fail(
                id,
                job.lease_token().unwrap(),
                JobError::new("bad"),
                AfterFailure::Dead,
                t(2),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    enqueue(&store, new_job("q", 9), t(3)).await;
    let dead = store.dead_letters(Some("q"), None, 10).await.unwrap();
    assert_eq!(dead.items.len(), 3);
    assert!(dead.items.iter().all(|j| j.state == JobState::Dead));

    store.retry_dead(ids[0], t(4)).await.unwrap();
    let retried = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(retried.state, JobState::Queued);
    assert_eq!(
        retried.attempt, 0,
        "a retried dead letter gets its attempts back"
    );
    let claimed = store.claim("q", "w", 10, LEASE, t(5)).await.unwrap();
    assert!(claimed.iter().any(|j| j.id == ids[0]));

    assert_eq!(store.purge_dead(Some("q")).await.unwrap(), 2);
    assert!(store.get(ids[1]).await.unwrap().is_none());
    assert!(
        store
            .dead_letters(None, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn only_dead_letters_can_be_retried(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let err = store.retry_dead(id, t(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongState {
                state: JobState::Queued,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        store.retry_dead(JobId::new(), t(1)).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn pause_stops_claims_and_resume_restarts_them(store: S) {
    enqueue(&store, new_job("q", 1), t(0)).await;
    store.pause("q").await.unwrap();
    assert_eq!(store.paused().await.unwrap(), vec!["q".to_owned()]);
    assert!(claim_all(&store, "q", t(1)).await.is_empty());
    enqueue(&store, new_job("q", 2), t(1)).await;
    store.resume("q").await.unwrap();
    assert!(store.paused().await.unwrap().is_empty());
    assert_eq!(claim_all(&store, "q", t(2)).await, vec![1, 2]);
}

pub async fn kv_put_get_delete(store: S) {
    let entry = KvEntry {
        value: b"hello".to_vec(),
        metadata: None,
        expires_at: None,
    };
    store
        .kv_put("cache", "greeting", entry.clone())
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("cache", "greeting", t(0)).await.unwrap(),
        Some(entry)
    );
    assert_eq!(
        store.kv_get("other", "greeting", t(0)).await.unwrap(),
        None,
        "namespaces are separate"
    );
    assert!(store.kv_delete("cache", "greeting").await.unwrap());
    assert!(!store.kv_delete("cache", "greeting").await.unwrap());
    assert_eq!(store.kv_get("cache", "greeting", t(0)).await.unwrap(), None);
}

pub async fn kv_entries_expire(store: S) {
    let entry = KvEntry {
        value: b"v".to_vec(),
        metadata: None,
        expires_at: Some(t(10)),
    };
    store.kv_put("cache", "k", entry).await.unwrap();
    assert!(store.kv_get("cache", "k", t(9)).await.unwrap().is_some());
    assert!(store.kv_get("cache", "k", t(10)).await.unwrap().is_none());
    assert!(
        store
            .kv_list("cache", "", None, 10, t(10))
            .await
            .unwrap()
            .keys
            .is_empty()
    );
}

pub async fn kv_metadata_round_trips(store: S) {
    let metadata = serde_json::json!({ "content_type": "application/json", "version": 3 });
    let entry = KvEntry {
        value: b"{}".to_vec(),
        metadata: Some(metadata.clone()),
        expires_at: Some(t(100)),
    };
    store.kv_put("cache", "k", entry).await.unwrap();
    let got = store.kv_get("cache", "k", t(0)).await.unwrap().unwrap();
    assert_eq!(got.metadata, Some(metadata.clone()));
    assert_eq!(got.expires_at, Some(t(100)));
    let listed = store.kv_list("cache", "", None, 10, t(0)).await.unwrap();
    assert_eq!(listed.keys[0].metadata, Some(metadata));
}

pub async fn kv_list_pages_by_prefix_in_key_order(store: S) {
    for key in ["user:3", "user:1", "order:1", "user:2", "user:10", "users"] {
        store
            .kv_put(
                "c",
                key,
                KvEntry {
                    value: vec![],
                    metadata: None,
                    expires_at: None,
                },
            )
            .await
            .unwrap();
    }
    let first = store.kv_list("c", "user:", None, 2, t(0)).await.unwrap();
    let names: Vec<_> = first.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec!["user:1", "user:10"]);
    assert!(!first.list_complete);
    // A key added before the cursor does not shift the next page.
    store
        .kv_put(
            "c",
            "user:0",
            KvEntry {
                value: vec![],
                metadata: None,
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let second = store
        .kv_list("c", "user:", first.cursor.as_deref(), 2, t(0))
        .await
        .unwrap();
    let names: Vec<_> = second.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec!["user:2", "user:3"]);
    assert!(second.list_complete);
    assert!(second.cursor.is_none());
}

pub async fn list_filters_and_pages_newest_first(store: S) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut job = new_job(if i % 2 == 0 { "even" } else { "odd" }, i);
        job.kind = format!("kind-{}", i % 3);
        job.tenant = Some(if i < 3 { "a" } else { "b" }.into());
        ids.push(enqueue(&store, job, t(0)).await);
    }
    let all = store.list(&JobFilter::default(), None, 100).await.unwrap();
    let listed: Vec<JobId> = all.items.iter().map(|j| j.id).collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(listed, expected);

    let even = store
        .list(
            &JobFilter {
                queues: vec!["even".into()],
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(even.items.len(), 3);
    let kind = store
        .list(
            &JobFilter {
                kind: Some("kind-1".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(kind.items.iter().map(n).collect::<Vec<_>>(), vec![4, 1]);
    let tenant = store
        .list(
            &JobFilter {
                tenant: Some("b".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(tenant.items.len(), 2);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&JobFilter::default(), after, 2).await.unwrap();
        seen.extend(page.items.iter().map(|j| j.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    // Several queues at once: a third queue's job stays out, paging still newest first.
    let other = enqueue(&store, new_job("other", 9), t(0)).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(
                &JobFilter {
                    queues: vec!["odd".into(), "even".into()],
                    ..Default::default()
                },
                after,
                2,
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|j| j.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(!seen.contains(&other));
    assert_eq!(seen, expected, "both queues, newest first, across pages");
}

pub async fn list_cursor_is_stable_while_jobs_arrive(store: S) {
    for i in 0..4 {
        enqueue(&store, new_job("q", i), t(0)).await;
    }
    let first = store.list(&JobFilter::default(), None, 2).await.unwrap();
    assert_eq!(first.items.iter().map(n).collect::<Vec<_>>(), vec![3, 2]);
    enqueue(&store, new_job("q", 99), t(1)).await;
    let second = store
        .list(&JobFilter::default(), first.next, 2)
        .await
        .unwrap();
    assert_eq!(second.items.iter().map(n).collect::<Vec<_>>(), vec![1, 0]);
    let running = store
        .list(
            &JobFilter {
                states: vec![JobState::Running],
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert!(running.items.is_empty());
}

pub async fn counts_per_state_and_queue(store: S) {
    for i in 0..4 {
        enqueue(&store, new_job("a", i), t(0)).await;
    }
    let mut later = new_job("a", 9);
    later.run_at = Some(t(100));
    enqueue(&store, later, t(0)).await;
    enqueue(&store, new_job("b", 0), t(0)).await;
    let job = store
        .claim("a", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    store
        .complete(job.id, job.lease_token().unwrap(), Payload::null(), t(2))
        .await
        .unwrap();
    store.claim("a", "w", 1, LEASE, t(2)).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (
            counts["a"].queued,
            counts["a"].scheduled,
            counts["a"].running,
            counts["a"].succeeded
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(counts["b"].queued, 1);
    assert_eq!(counts["a"].waiting(), 3);
}

pub async fn oldest_ready_job_age(store: S) {
    assert_eq!(store.oldest_ready("q", t(0)).await.unwrap(), None);
    enqueue(&store, new_job("q", 1), t(5)).await;
    enqueue(&store, new_job("q", 2), t(8)).await;
    let mut later = new_job("q", 3);
    later.run_at = Some(t(50));
    enqueue(&store, later, t(8)).await;
    assert_eq!(store.oldest_ready("q", t(10)).await.unwrap(), Some(t(5)));
    // A tenant's jobs wait in their own line; they count too.
    let mut urgent = tenant_job("q", Some("acme"), 4);
    urgent.priority = 9;
    enqueue(&store, urgent, t(1)).await;
    enqueue(&store, tenant_job("q", Some("acme"), 5), t(3)).await;
    assert_eq!(store.oldest_ready("q", t(10)).await.unwrap(), Some(t(1)));
}

pub async fn events_follow_the_lifecycle_in_order(store: S) {
    let start = store.last_event_seq().await.unwrap();
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    let token = job.lease_token().unwrap();
    store
        .progress(
            id,
            token,
            Progress {
                percent: 50,
                message: "half".into(),
            },
            t(2),
        )
        .await
        .unwrap();
    store
        .fail(
            id,
            token,
            JobError::new("oops"),
            AfterFailure::Retry { at: t(3) },
            t(2),
        )
        .await
        .unwrap();
    let job = store
        .claim("q", "w", 1, LEASE, t(3))
        .await
        .unwrap()
        .remove(0);
    store
        .complete(id, job.lease_token().unwrap(), Payload::null(), t(4))
        .await
        .unwrap();
    let events = store.events_after(start, 100).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    use EventKind as K;
    assert_eq!(
        kinds,
        vec![
            K::Enqueued,
            K::Started,
            K::Progress,
            K::Failed,
            K::Retrying,
            K::Started,
            K::Succeeded
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.iter().all(|e| e.job == id && e.queue == "q"));
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    assert_eq!(events[3].detail.as_deref(), Some("oops"));
    assert_eq!(
        store.last_event_seq().await.unwrap(),
        events.last().unwrap().seq
    );
    let tail = store.events_after(events[4].seq, 100).await.unwrap();
    assert_eq!(tail.len(), 2);
}

pub async fn status_document_follows_every_transition(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let status = |store: S| async move {
        let entry = status_view(&store)
            .get(&id.to_string(), t(0))
            .await
            .unwrap()
            .expect("status document");
        serde_json::from_slice::<JobStatus>(&entry.value).unwrap()
    };
    assert_eq!(status(store.clone()).await.state, JobState::Queued);
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    let token = job.lease_token().unwrap();
    assert_eq!(status(store.clone()).await.state, JobState::Running);
    store
        .progress(
            id,
            token,
            Progress {
                percent: 40,
                message: "reading".into(),
            },
            t(2),
        )
        .await
        .unwrap();
    let s = status(store.clone()).await;
    assert_eq!(
        s.progress,
        Some(Progress {
            percent: 40,
            message: "reading".into()
        })
    );
    store
        .complete(id, token, Payload::from_json("[1,2]").unwrap(), t(3))
        .await
        .unwrap();
    let s = status(store.clone()).await;
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(s.result.unwrap().as_str(), "[1,2]");
    assert_eq!(s.attempts.len(), 1);
    let entry = status_view(&store)
        .get(&id.to_string(), t(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        entry.expires_at,
        Some(t(3) + chrono::Duration::hours(1)),
        "finished status lives for the cache TTL"
    );
}

pub async fn cron_tick_is_claimed_once(store: S) {
    let claims = futures_join(&store, 8, |store| async move {
        store.claim_tick("nightly", t(3600), t(3600)).await.unwrap()
    })
    .await;
    assert_eq!(claims.iter().filter(|c| **c).count(), 1);
    assert!(
        store.claim_tick("nightly", t(7200), t(7200)).await.unwrap(),
        "the next tick is its own"
    );
    assert!(
        store.claim_tick("other", t(3600), t(3600)).await.unwrap(),
        "ticks are per task"
    );
}

const LEAD_TTL: Duration = Duration::from_secs(3);

pub async fn a_lease_has_one_holder_at_a_time(store: S) {
    let holders = (0..8).map(|i| format!("observer-{i}"));
    let mut handles = Vec::new();
    for holder in holders {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let held = store
                .try_lead("monitor", &holder, LEAD_TTL, t(10))
                .await
                .unwrap();
            (holder, held)
        }));
    }
    let mut winners = Vec::new();
    for handle in handles {
        let (holder, held) = handle.await.unwrap();
        if held {
            winners.push(holder);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one contender takes the lease: {winners:?}"
    );
    let leader = &winners[0];
    for i in 0..8 {
        let other = format!("observer-{i}");
        if &other != leader {
            assert!(
                !store
                    .try_lead("monitor", &other, LEAD_TTL, t(12))
                    .await
                    .unwrap(),
                "{other} cannot take the lease while {leader}'s runs"
            );
        }
    }
    assert!(
        store
            .try_lead("other-lease", "observer-x", LEAD_TTL, t(12))
            .await
            .unwrap(),
        "leases are per name"
    );
}

pub async fn the_holder_renews_its_lease(store: S) {
    assert!(
        store
            .try_lead("monitor", "a", LEAD_TTL, t(0))
            .await
            .unwrap()
    );
    // Renewed at 2 s, the lease runs to 5 s: past the first lease's end, b still cannot take it.
    assert!(
        store
            .try_lead("monitor", "a", LEAD_TTL, t(2))
            .await
            .unwrap(),
        "the holder renews"
    );
    assert!(
        !store
            .try_lead("monitor", "b", LEAD_TTL, t(4))
            .await
            .unwrap(),
        "a renewed lease runs from its renewal"
    );
    assert!(
        store
            .try_lead("monitor", "a", LEAD_TTL, t(4))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lead("monitor", "b", LEAD_TTL, t(6))
            .await
            .unwrap()
    );
}

pub async fn a_lapsed_lease_is_taken_over(store: S) {
    assert!(
        store
            .try_lead("monitor", "a", LEAD_TTL, t(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lead("monitor", "b", LEAD_TTL, t(2))
            .await
            .unwrap()
    );
    assert!(
        store
            .try_lead("monitor", "b", LEAD_TTL, t(3))
            .await
            .unwrap(),
        "the lease ends at its ttl and b takes it"
    );
    assert!(
        !store
            .try_lead("monitor", "a", LEAD_TTL, t(4))
            .await
            .unwrap(),
        "the old holder has lost it"
    );
    assert!(
        store
            .try_lead("monitor", "b", LEAD_TTL, t(5))
            .await
            .unwrap()
    );
}

pub async fn concurrent_claimers_never_get_the_same_job(store: S) {
    let jobs: Vec<NewJob> = (0..400).map(|i| new_job("q", i)).collect();
    store.enqueue(jobs, t(0)).await.unwrap();
    let batches = futures_join(&store, 8, |store| async move {
        let mut mine = Vec::new();
        loop {
            let claimed = store.claim("q", "w", 7, LEASE, t(1)).await.unwrap();
            if claimed.is_empty() {
                break mine;
            }
            mine.extend(claimed.into_iter().map(|j| j.id));
        }
    })
    .await;
    let all: Vec<JobId> = batches.into_iter().flatten().collect();
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), 400);
    assert_eq!(unique.len(), 400, "a job was claimed twice");
}

pub async fn retention_removes_finished_records(store: S) {
    let keep = RetentionPolicy {
        succeeded: Duration::from_secs(60),
        failed: Duration::from_secs(120),
        dead: Duration::from_secs(300),
    };
    let mut ids = BTreeMap::new();
    for (name, outcome) in [("ok", 0), ("dead", 1), ("cancelled", 2), ("waiting", 3)] {
        let mut job = new_job("q", outcome);
        job.idempotency_key = Some(name.to_owned());
        let id = enqueue(&store, job, t(0)).await;
        ids.insert(name, id);
        match outcome {
            0 | 1 => {
                let job = store
                    .claim("q", "w", 1, LEASE, t(0))
                    .await
                    .unwrap()
                    .remove(0);
                let token = job.lease_token().unwrap();
                if outcome == 0 {
                    store
                        .complete(id, token, Payload::null(), t(0))
                        .await
                        .unwrap();
                } else {
                    store
                        .fail(id, token, JobError::new("x"), AfterFailure::Dead, t(0))
                        .await
                        .unwrap();
                }
            }
            2 => {
                store.cancel(id, t(0)).await.unwrap();
            }
            _ => {}
        }
    }
    let policies = BTreeMap::from([("q".to_owned(), keep)]);
    let purged = store
        .purge_expired(&policies, keep, Duration::from_secs(86_400), t(59))
        .await
        .unwrap();
    assert_eq!(purged.jobs, 0);
    let purged = store
        .purge_expired(&policies, keep, Duration::from_secs(86_400), t(60))
        .await
        .unwrap();
    assert_eq!(purged.jobs, 1);
    assert!(store.get(ids["ok"]).await.unwrap().is_none());
    assert!(
        status_view(&store)
            .get(&ids["ok"].to_string(), t(0))
            .await
            .unwrap()
            .is_none(),
        "status goes with the job"
    );
    store
        .purge_expired(&policies, keep, Duration::from_secs(86_400), t(300))
        .await
        .unwrap();
    assert!(store.get(ids["cancelled"]).await.unwrap().is_none());
    assert!(store.get(ids["dead"]).await.unwrap().is_none());
    assert!(
        store.get(ids["waiting"]).await.unwrap().is_some(),
        "unfinished jobs are kept"
    );
    // A purged job's idempotency key can be used again; a kept job's cannot.
    let mut again = new_job("q", 5);
    again.idempotency_key = Some("ok".into());
    enqueue(&store, again, t(301)).await;
    let mut kept = new_job("q", 6);
    kept.idempotency_key = Some("waiting".into());
    assert_eq!(
        store.enqueue(vec![kept], t(301)).await.unwrap(),
        vec![Enqueued::Duplicate(ids["waiting"])]
    );
}

pub async fn retention_removes_expired_entries_and_old_events(store: S) {
    store
        .kv_put(
            "c",
            "old",
            KvEntry {
                value: vec![],
                metadata: None,
                expires_at: Some(t(10)),
            },
        )
        .await
        .unwrap();
    store
        .kv_put(
            "c",
            "new",
            KvEntry {
                value: vec![],
                metadata: None,
                expires_at: Some(t(1000)),
            },
        )
        .await
        .unwrap();
    enqueue(&store, new_job("q", 1), t(0)).await;
    enqueue(&store, new_job("q", 2), t(500)).await;
    let keep = RetentionPolicy {
        succeeded: Duration::from_secs(60),
        failed: Duration::from_secs(60),
        dead: Duration::from_secs(60),
    };
    let purged = store
        .purge_expired(&BTreeMap::new(), keep, Duration::from_secs(100), t(550))
        .await
        .unwrap();
    assert!(purged.kv_entries >= 1);
    assert!(purged.events >= 1);
    let events = store.events_after(0, 100).await.unwrap();
    assert!(events.iter().all(|e| e.at >= t(450)), "{events:?}");
    assert!(store.kv_get("c", "new", t(550)).await.unwrap().is_some());
}

pub async fn progress_needs_the_current_lease(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    let stale = store
        .progress(
            id,
            job.lease_token().unwrap() + 1,
            Progress {
                percent: 10,
                message: String::new(),
            },
            t(2),
        )
        .await;
    assert!(matches!(stale, Err(Error::LeaseLost(_))));
    store
        .progress(
            id,
            job.lease_token().unwrap(),
            Progress {
                percent: 10,
                message: "x".into(),
            },
            t(2),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get(id)
            .await
            .unwrap()
            .unwrap()
            .progress
            .unwrap()
            .percent,
        10
    );
}

/// Runs `count` copies of `f` concurrently on the runtime's threads and collects their results.
async fn futures_join<T, F, Fut>(store: &S, count: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(S) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..count).map(|_| tokio::spawn(f(store.clone()))).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

pub async fn the_status_namespace_lists_job_documents_beside_other_entries(store: S) {
    let ids: Vec<JobId> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(enqueue(&store, new_job("q", i), t(0)).await);
        }
        ids
    };
    let entry = KvEntry {
        value: b"note".to_vec(),
        metadata: None,
        expires_at: None,
    };
    store
        .kv_put(STATUS, "zz-note", entry.clone())
        .await
        .unwrap();
    store.kv_put(STATUS, "00-first", entry).await.unwrap();
    let mut names = Vec::new();
    let mut cursor = None;
    loop {
        let page = status_view(&store)
            .list("", cursor.as_deref(), 2, t(0))
            .await
            .unwrap();
        names.extend(page.keys.iter().map(|k| k.name.clone()));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.push("zz-note".into());
    expected.insert(0, "00-first".into());
    expected.sort();
    assert_eq!(names, expected);
    let only_jobs = status_view(&store)
        .list(&ids[0].to_string()[..8], None, 10, t(0))
        .await
        .unwrap();
    assert!(
        only_jobs
            .keys
            .iter()
            .all(|k| k.name.starts_with(&ids[0].to_string()[..8]))
    );
    assert!(only_jobs.keys.iter().any(|k| k.name == ids[0].to_string()));
    assert_eq!(
        status_view(&store)
            .get("zz-note", t(0))
            .await
            .unwrap()
            .unwrap()
            .value,
        b"note"
    );
}

pub async fn jobs_from_lists_every_queue_and_state_in_id_order(store: S) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let queue = if i % 2 == 0 { "a" } else { "b" };
        ids.push(enqueue(&store, new_job(queue, i), t(0)).await);
    }
    let claimed = store.claim("b", "w", 1, LEASE, t(1)).await.unwrap();
    assert_eq!(claimed[0].id, ids[1]);
    let mut sorted = ids.clone();
    sorted.sort();
    let from: Vec<JobId> = store
        .jobs_from(sorted[1], 3)
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(
        from,
        sorted[1..4],
        "from is included; then id order, across queues"
    );
    let all = store.jobs_from(sorted[0], 100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.iter().any(|job| job.state == JobState::Running));
}

pub async fn a_status_listing_pages_past_expired_documents(store: S) {
    // Four finished jobs whose documents expire, then one still queued: a page of one key at
    // t(3602) must look past every expired document, whatever window the view reads.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(enqueue(&store, new_job("q", i), t(0)).await);
    }
    let mut finished = HashSet::new();
    for _ in 0..4 {
        let job = claim_one(&store, "w", t(1)).await;
        store
            .complete(job.id, job.lease_token().unwrap(), Payload::null(), t(2))
            .await
            .unwrap();
        finished.insert(job.id);
    }
    let waiting = ids
        .iter()
        .find(|id| !finished.contains(id))
        .expect("one job left");
    let mut names = Vec::new();
    let mut cursor = None;
    loop {
        let page = status_view(&store)
            .list("", cursor.as_deref(), 1, t(3602))
            .await
            .unwrap();
        assert!(page.keys.len() <= 1);
        names.extend(page.keys.iter().map(|k| k.name.clone()));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(names, vec![waiting.to_string()]);
}

pub async fn a_finished_jobs_status_expires_after_the_cache_ttl(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    store
        .complete(id, job.lease_token().unwrap(), Payload::null(), t(2))
        .await
        .unwrap();
    // The cache's TTL is one hour.
    assert!(
        status_view(&store)
            .get(&id.to_string(), t(3601))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        status_view(&store)
            .get(&id.to_string(), t(3602))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        status_view(&store)
            .list("", None, 10, t(3602))
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    assert!(
        store.get(id).await.unwrap().is_some(),
        "the job record follows retention, not the cache TTL"
    );
}

/// Counts computed from the job records themselves.
async fn counted(store: &S) -> BTreeMap<String, raindrop::store::StateCounts> {
    let mut counts: BTreeMap<String, raindrop::store::StateCounts> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.list(&JobFilter::default(), after, 100).await.unwrap();
        for job in &page.items {
            counts
                .entry(job.queue.clone())
                .or_default()
                .add(job.state, 1);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    counts
}

fn nonzero(
    counts: BTreeMap<String, raindrop::store::StateCounts>,
) -> BTreeMap<String, raindrop::store::StateCounts> {
    counts
        .into_iter()
        .filter(|(_, c)| *c != raindrop::store::StateCounts::default())
        .collect()
}

pub async fn counts_stay_true_through_every_kind_of_transition(store: S) {
    let check = |label: &'static str| {
        let store = store.clone();
        async move {
            assert_eq!(
                nonzero(store.counts().await.unwrap()),
                nonzero(counted(&store).await),
                "after {label}"
            );
        }
    };
    for i in 0..6 {
        enqueue(&store, new_job(if i % 2 == 0 { "a" } else { "b" }, i), t(0)).await;
    }
    let mut later = new_job("a", 10);
    later.run_at = Some(t(50));
    enqueue(&store, later, t(0)).await;
    check("enqueue").await;
    let claimed = store.claim("a", "w", 3, LEASE, t(1)).await.unwrap();
    check("claim").await;
    store
        .complete(
            claimed[0].id,
            claimed[0].lease_token().unwrap(),
            Payload::null(),
            t(2),
        )
        .await
        .unwrap();
    store
        .fail(
            claimed[1].id,
            claimed[1].lease_token().unwrap(),
            JobError::new("x"),
            AfterFailure::Retry { at: t(20) },
            t(2),
        )
        .await
        .unwrap();
    store
        .fail(
            claimed[2].id,
            claimed[2].lease_token().unwrap(),
            JobError::new("x"),
            AfterFailure::Dead,
            t(2),
        )
        .await
        .unwrap();
    check("complete and fail").await;
    let b = store.claim("b", "w", 2, LEASE, t(3)).await.unwrap();
    store
        .release(b[0].id, b[0].lease_token().unwrap(), t(4))
        .await
        .unwrap();
    store.cancel(b[1].id, t(4)).await.unwrap();
    check("release and cancel").await;
    store.claim("b", "w", 1, LEASE, t(5)).await.unwrap();
    store.recover(t(100)).await.unwrap();
    check("recover").await;
    store.promote(t(60)).await.unwrap();
    check("promote").await;
    store.retry_dead(claimed[2].id, t(61)).await.unwrap();
    check("retry dead").await;
    let again = store.claim("a", "w", 10, LEASE, t(62)).await.unwrap();
    for job in &again {
        store
            .fail(
                job.id,
                job.lease_token().unwrap(),
                JobError::new("x"),
                AfterFailure::Dead,
                t(63),
            )
            .await
            .unwrap();
    }
    store.purge_dead(Some("a")).await.unwrap();
    check("purge dead").await;
    let keep = RetentionPolicy {
        succeeded: Duration::from_secs(1),
        failed: Duration::from_secs(1),
        dead: Duration::from_secs(1),
    };
    store
        .purge_expired(&BTreeMap::new(), keep, Duration::from_secs(86_400), t(1000))
        .await
        .unwrap();
    check("retention").await;
}

pub async fn rate_limits_refill_and_keep_keys_apart(store: S) {
    use raindrop::store::rate::Limit;
    let limit = Limit {
        requests: 10,
        per: Duration::from_secs(1),
        burst: 3,
    };
    let key = format!("key-{}", JobId::new());
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let decision = store.take_token(&key, &limit, t(0)).await.unwrap();
        assert!(decision.allowed);
        remaining.push(decision.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = store.take_token(&key, &limit, t(0)).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, Duration::from_millis(100));
    assert_eq!(refused.limit, 3);
    let other = store.take_token("another key", &limit, t(0)).await.unwrap();
    assert!(other.allowed, "buckets are per key");
    let later = t(0) + chrono::Duration::milliseconds(100);
    assert!(store.take_token(&key, &limit, later).await.unwrap().allowed);
    assert!(!store.take_token(&key, &limit, later).await.unwrap().allowed);
}

fn tenant_job(queue: &str, tenant: Option<&str>, n: u32) -> NewJob {
    let mut job = new_job(queue, n);
    job.tenant = tenant.map(str::to_owned);
    job
}

pub async fn a_flooding_tenant_does_not_starve_another(store: S) {
    for batch in 0..10 {
        let jobs = (0..1000)
            .map(|i| tenant_job("q", Some("flood"), batch * 1000 + i))
            .collect();
        store.enqueue(jobs, t(0)).await.unwrap();
    }
    let trickle = (0..100)
        .map(|i| tenant_job("q", Some("trickle"), 100_000 + i))
        .collect();
    store.enqueue(trickle, t(1)).await.unwrap();

    let (mut claimed, mut flood, mut trickle) = (0, Vec::new(), Vec::new());
    while trickle.len() < 100 {
        let batch = store.claim("q", "w", 10, LEASE, t(2)).await.unwrap();
        assert!(!batch.is_empty(), "the trickle's jobs are still waiting");
        claimed += batch.len();
        for job in &batch {
            match job.tenant.as_deref() {
                Some("flood") => flood.push(n(job)),
                _ => trickle.push(n(job)),
            }
        }
    }
    // The two tenants take turns: the trickle's 100 jobs start within the first 200 claimed
    // (plus the rest of the last batch), though 10,000 of the flood's were waiting before them.
    assert!(
        claimed <= 210,
        "{claimed} jobs claimed before the trickle's 100 started"
    );
    assert_eq!(trickle, (100_000..100_100).collect::<Vec<_>>());
    assert_eq!(
        flood,
        (0..flood.len() as u64).collect::<Vec<_>>(),
        "each tenant in order"
    );
}

pub async fn fair_claiming_keeps_priorities_and_untenanted_jobs(store: S) {
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(tenant_job("q", Some("a"), i));
    }
    for i in 10..12 {
        jobs.push(tenant_job("q", None, i));
    }
    for i in 20..22 {
        let mut urgent = tenant_job("q", Some("b"), i);
        urgent.priority = 5;
        jobs.push(urgent);
    }
    store.enqueue(jobs, t(0)).await.unwrap();
    let order = claim_all(&store, "q", t(1)).await;
    // b's urgent jobs first whatever the turns; then a and the untenanted jobs alternate.
    assert_eq!(&order[..2], [20, 21]);
    let rest = &order[2..];
    assert_eq!(rest.len(), 6);
    let firsts: HashSet<u64> = rest[..2].iter().copied().collect();
    assert_eq!(firsts, HashSet::from([0, 10]), "{order:?}");
    let seconds: HashSet<u64> = rest[2..4].iter().copied().collect();
    assert_eq!(seconds, HashSet::from([1, 11]), "{order:?}");
    assert_eq!(&rest[4..], [2, 3]);
    assert_eq!(store.counts().await.unwrap()["q"].queued, 0);
}

pub async fn a_tenant_at_its_running_limit_waits(store: S) {
    use raindrop::store::ClaimLimits;
    let limits = ClaimLimits {
        running_per_tenant: Some(2),
        ..ClaimLimits::default()
    };
    let claim = |store: S, now: Timestamp| async move {
        store
            .claim_with("q", "w", 10, LEASE, limits, now)
            .await
            .unwrap()
    };
    let mut jobs: Vec<NewJob> = (0..6).map(|i| tenant_job("q", Some("a"), i)).collect();
    jobs.push(tenant_job("q", Some("b"), 10));
    jobs.push(tenant_job("q", None, 20));
    jobs.push(tenant_job("q", None, 21));
    jobs.push(tenant_job("q", None, 22));
    store.enqueue(jobs, t(0)).await.unwrap();

    let first = claim(store.clone(), t(1)).await;
    let mut got: Vec<u64> = first.iter().map(n).collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 10, 20, 21, 22], "two of a's, every other job");
    for job in first.iter().filter(|j| j.tenant.as_deref() != Some("a")) {
        let token = job.lease_token().unwrap();
        store
            .complete(job.id, token, Payload::from_value(&1).unwrap(), t(1))
            .await
            .unwrap();
    }
    assert!(
        claim(store.clone(), t(1)).await.is_empty(),
        "a is at its limit"
    );
    assert_eq!(
        store.claim("q", "w", 10, LEASE, t(1)).await.unwrap().len(),
        4,
        "without the limit, a's other jobs are there to take"
    );
    // Start over with four of a's running.
    let running: Vec<_> = store
        .list(
            &JobFilter {
                queues: vec!["q".into()],
                states: vec![JobState::Running],
                kind: None,
                tenant: Some("a".into()),
            },
            None,
            100,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(running.len(), 6);
    let (done, rest) = running.split_at(4);
    for job in done {
        let token = job.lease_token().unwrap();
        store
            .complete(job.id, token, Payload::from_value(&1).unwrap(), t(2))
            .await
            .unwrap();
    }
    let more = (6..9).map(|i| tenant_job("q", Some("a"), i)).collect();
    store.enqueue(more, t(2)).await.unwrap();
    assert!(
        claim(store.clone(), t(3)).await.is_empty(),
        "a still runs two jobs"
    );

    // Every way a running job ends frees its place: failing (and retrying) ...
    let (failing, leaving) = (&rest[0], &rest[1]);
    store
        .fail(
            failing.id,
            failing.lease_token().unwrap(),
            JobError::new("boom"),
            AfterFailure::Retry { at: t(500) },
            t(3),
        )
        .await
        .unwrap();
    assert_eq!(claim(store.clone(), t(4)).await.len(), 1);
    // ... cancelling ...
    store.cancel(leaving.id, t(5)).await.unwrap();
    assert_eq!(claim(store.clone(), t(5)).await.len(), 1);
    assert!(claim(store.clone(), t(5)).await.is_empty());
    // ... and losing the lease: both come back and run again, still two at a time.
    let recovered = store.recover(t(100)).await.unwrap();
    assert_eq!(recovered.len(), 2);
    let again = claim(store.clone(), t(101)).await;
    assert_eq!(again.len(), 2);
    // ... and being released by a stopping worker.
    store
        .release(again[0].id, again[0].lease_token().unwrap(), t(102))
        .await
        .unwrap();
    let last = claim(store.clone(), t(102)).await;
    assert_eq!(last.len(), 1);
    assert!(claim(store.clone(), t(103)).await.is_empty());
}

pub async fn idempotency_keys_are_scoped_by_tenant(store: S) {
    let keyed = |tenant: Option<&str>| {
        let mut job = new_job("q", 1);
        job.idempotency_key = Some("invoice-42".into());
        job.tenant = tenant.map(str::to_owned);
        job
    };
    let first = store
        .enqueue(vec![keyed(Some("acme"))], t(0))
        .await
        .unwrap();
    let Enqueued::New(acme) = first[0] else {
        panic!("{first:?}")
    };
    // Another tenant's job with the same key is its own job, and learns nothing of acme's.
    let other = store
        .enqueue(vec![keyed(Some("globex"))], t(0))
        .await
        .unwrap();
    let Enqueued::New(globex) = other[0] else {
        panic!("another tenant's key collided: {other:?}")
    };
    assert_ne!(globex, acme);
    let untenanted = store.enqueue(vec![keyed(None)], t(0)).await.unwrap();
    assert!(matches!(untenanted[0], Enqueued::New(_)), "{untenanted:?}");
    // A tenant's own key still deduplicates, to its own job.
    let again = store
        .enqueue(vec![keyed(Some("acme"))], t(0))
        .await
        .unwrap();
    assert!(
        matches!(again[0], Enqueued::Duplicate(id) if id == acme),
        "{again:?}"
    );
    let again = store
        .enqueue(vec![keyed(Some("globex"))], t(0))
        .await
        .unwrap();
    assert!(
        matches!(again[0], Enqueued::Duplicate(id) if id == globex),
        "{again:?}"
    );
    // A tenant whose name and key run together like another's does not collide either.
    let mut spliced = new_job("q", 2);
    spliced.tenant = Some("acmei".into());
    spliced.idempotency_key = Some("nvoice-42".into());
    let spliced = store.enqueue(vec![spliced], t(0)).await.unwrap();
    assert!(matches!(spliced[0], Enqueued::New(_)), "{spliced:?}");
    assert!(store.get(globex).await.unwrap().is_some());
}

pub async fn resubmitting_a_job_id_answers_duplicate(store: S) {
    let first = new_job("q", 1);
    let id = first.id;
    enqueue(&store, first, t(0)).await;
    // A producer retrying a batch after a timeout: the same id again, beside a new job.
    let mut again = new_job("q", 2);
    again.id = id;
    let fresh = new_job("q", 3);
    let fresh_id = fresh.id;
    let out = store.enqueue(vec![fresh, again], t(1)).await.unwrap();
    assert_eq!(out, vec![Enqueued::New(fresh_id), Enqueued::Duplicate(id)]);
    assert_eq!(
        n(&store.get(id).await.unwrap().unwrap()),
        1,
        "the first stays"
    );
    assert_eq!(store.counts().await.unwrap()["q"].queued, 2);
}

/// A tenant's job carrying its quota of `max` waiting jobs.
fn quota_job(tenant: &str, n: u32, max: u64) -> NewJob {
    let mut job = tenant_job("q", Some(tenant), n);
    job.max_waiting = Some(max);
    job
}

pub async fn thirty_two_submitters_at_quota_minus_one_admit_exactly_the_quota(store: S) {
    const QUOTA: u64 = 10;
    let waiting: Vec<NewJob> = (0..9).map(|i| quota_job("a", i, QUOTA)).collect();
    store.enqueue(waiting, t(0)).await.unwrap();
    // Another tenant's jobs and jobs without a tenant do not count against a's quota.
    store
        .enqueue(
            vec![tenant_job("q", None, 100), quota_job("b", 101, 1)],
            t(0),
        )
        .await
        .unwrap();
    let submitters: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enqueue(vec![quota_job("a", 200 + i, QUOTA)], t(1))
                    .await
            })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for submitter in submitters {
        match submitter.await.unwrap() {
            Ok(outcomes) => {
                assert!(matches!(outcomes[..], [Enqueued::New(_)]));
                admitted += 1;
            }
            Err(Error::QuotaQueued {
                queue,
                waiting,
                max,
            }) => {
                assert_eq!((queue.as_str(), waiting, max), ("q", QUOTA, QUOTA));
                refused += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(
        (admitted, refused),
        (1, 31),
        "exactly the quota is admitted"
    );
    assert_eq!(store.count_waiting("q", "a", 100).await.unwrap(), QUOTA);
    let listed = JobFilter {
        tenant: Some("a".into()),
        ..JobFilter::default()
    };
    assert_eq!(
        store.list(&listed, None, 100).await.unwrap().items.len(),
        10
    );

    // At its quota, a resubmission with a known idempotency key is its duplicate, not refused;
    // a batch that would go over adds nothing of itself.
    let mut keyed = quota_job("b", 300, 2);
    keyed.idempotency_key = Some("k".into());
    let first = store.enqueue(vec![keyed.clone()], t(2)).await.unwrap()[0].id();
    let mut again = keyed.clone();
    again.id = JobId::new();
    assert_eq!(
        store.enqueue(vec![again], t(2)).await.unwrap(),
        vec![Enqueued::Duplicate(first)]
    );
    let over = vec![
        quota_job("c", 400, 2),
        quota_job("c", 401, 2),
        quota_job("c", 402, 2),
    ];
    assert!(matches!(
        store.enqueue(over, t(2)).await,
        Err(Error::QuotaQueued { .. })
    ));
    assert_eq!(store.count_waiting("q", "c", 100).await.unwrap(), 0);
    // Jobs that stop waiting make room: a's running job leaves its count.
    let claimed = store.claim("q", "w", 100, LEASE, t(3)).await.unwrap();
    assert!(!claimed.is_empty());
    assert_eq!(store.count_waiting("q", "a", 100).await.unwrap(), 0);
    store
        .enqueue(vec![quota_job("a", 500, QUOTA)], t(4))
        .await
        .unwrap();
}

pub async fn a_tenants_listing_and_count_cover_its_jobs_in_every_state(store: S) {
    let mut jobs: Vec<NewJob> = (0..8).map(|i| tenant_job("q", Some("a"), i)).collect();
    jobs.extend((10..14).map(|i| tenant_job("q", Some("b"), i)));
    jobs.push(tenant_job("q", None, 20));
    let mut later = tenant_job("q", Some("a"), 8);
    later.run_at = Some(t(100));
    jobs.push(later);
    store.enqueue(jobs, t(0)).await.unwrap();
    // a's jobs move through every state: running, succeeded, retrying, dead, cancelled.
    let mut claimed = store.claim("q", "w", 20, LEASE, t(1)).await.unwrap();
    claimed.retain(|j| j.tenant.as_deref() == Some("a"));
    claimed.sort_by_key(n);
    let token = |j: &raindrop::job::Job| j.lease_token().unwrap();
    let [done, retried, dead, cancelled, released, ..] = &claimed[..] else {
        panic!("a's jobs were claimed: {claimed:?}");
    };
    let result = Payload::from_value(&1).unwrap();
    store
        .complete(done.id, token(done), result, t(2))
        .await
        .unwrap();
    let boom = || JobError::new("boom");
    store
        .fail(
            retried.id,
            token(retried),
            boom(),
            AfterFailure::Retry { at: t(50) },
            t(2),
        )
        .await
        .unwrap();
    store
        .fail(dead.id, token(dead), boom(), AfterFailure::Dead, t(2))
        .await
        .unwrap();
    store.cancel(cancelled.id, t(2)).await.unwrap();
    store
        .release(released.id, token(released), t(2))
        .await
        .unwrap();

    let all = JobFilter::default();
    let every = store.list(&all, None, 100).await.unwrap().items;
    let of_a: Vec<JobId> = every
        .iter()
        .filter(|j| j.tenant.as_deref() == Some("a"))
        .map(|j| j.id)
        .collect();
    assert_eq!(of_a.len(), 9);
    // The tenant's listing, page by page, is exactly its jobs, newest first.
    let mine = JobFilter {
        tenant: Some("a".into()),
        ..JobFilter::default()
    };
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&mine, after, 4).await.unwrap();
        paged.extend(page.items.iter().map(|j| j.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, of_a);
    // By state, including running and each finished state.
    for (state, expected) in [
        (JobState::Running, 3),
        (JobState::Succeeded, 1),
        (JobState::Dead, 1),
        (JobState::Cancelled, 1),
        (JobState::Retrying, 1),
        (JobState::Queued, 1),
        (JobState::Scheduled, 1),
    ] {
        let filter = JobFilter {
            states: vec![state],
            tenant: Some("a".into()),
            ..JobFilter::default()
        };
        let page = store.list(&filter, None, 100).await.unwrap();
        assert_eq!(
            page.items.len(),
            expected,
            "a's {state} jobs: {:?}",
            page.items
        );
        let counts = store.tenant_counts("q", "a").await.unwrap();
        assert_eq!(counts.get(state), expected as u64, "a's {state} count");
        assert!(
            page.items
                .iter()
                .all(|j| j.state == state && j.tenant.as_deref() == Some("a"))
        );
    }
    // Waiting: the released one, the retrying one and the scheduled one.
    assert_eq!(store.count_waiting("q", "a", 100).await.unwrap(), 3);
    assert_eq!(store.count_waiting("q", "b", 100).await.unwrap(), 0);
    // Dead letters retried and finished jobs removed by retention leave its indexes too.
    store.retry_dead(dead.id, t(3)).await.unwrap();
    assert_eq!(store.count_waiting("q", "a", 100).await.unwrap(), 4);
    let dead_of_a = JobFilter {
        states: vec![JobState::Dead],
        tenant: Some("a".into()),
        ..JobFilter::default()
    };
    assert!(
        store
            .list(&dead_of_a, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A job of `tenant` counted under limit key `key` by a queue's keyed concurrency limit.
fn keyed_job(tenant: Option<&str>, key: Option<&str>, n: u32) -> NewJob {
    let mut job = tenant_job("q", tenant, n);
    job.limit_key = key.map(str::to_owned);
    job
}

/// Ends `job` (claimed, running) one of the ways a running job stops, by `way`: 0 succeeds,
/// 1 fails for a retry now, 2 fails for good, 3 is cancelled, 4 is released, 5 is snoozed.
async fn end_running(store: &S, job: &raindrop::job::Job, way: usize, now: Timestamp) {
    let token = job.lease_token().unwrap();
    let error = || JobError::new("boom");
    match way {
        0 => store.complete(job.id, token, Payload::null(), now).await,
        1 => {
            let then = AfterFailure::Retry { at: now };
            store.fail(job.id, token, error(), then, now).await
        }
        2 => {
            store
                .fail(job.id, token, error(), AfterFailure::Dead, now)
                .await
        }
        3 => store.cancel(job.id, now).await.map(drop),
        4 => store.release(job.id, token, now).await,
        _ => store.snooze(job.id, token, now, "for 0s", now).await,
    }
    .unwrap();
}

pub async fn a_queues_concurrency_limit_holds_whatever_ends_its_jobs(store: S) {
    use raindrop::store::ClaimLimits;
    let limits = ClaimLimits {
        running: Some(3),
        ..ClaimLimits::default()
    };
    let jobs = (0..20).map(|i| tenant_job("q", None, i)).collect();
    store.enqueue(jobs, t(0)).await.unwrap();
    let claim = |now| {
        let store = store.clone();
        async move {
            store
                .claim_with("q", "w", 10, LEASE, limits, now)
                .await
                .unwrap()
        }
    };
    let mut running = claim(t(1)).await;
    assert_eq!(running.len(), 3, "three at most");
    assert!(claim(t(1)).await.is_empty(), "the queue is at its limit");
    // Each way a running job stops frees its place, and only its own.
    for way in 0..6 {
        let job = running.remove(0);
        end_running(&store, &job, way, t(2)).await;
        let next = claim(t(2)).await;
        assert_eq!(next.len(), 1, "way {way} freed one place");
        running.extend(next);
        assert!(claim(t(2)).await.is_empty(), "way {way} freed no more");
    }
    // A lapsed lease taken back frees its place too.
    let recovered = store.recover(t(100)).await.unwrap();
    assert_eq!(recovered.len(), 3);
    assert_eq!(claim(t(100)).await.len(), 3);
    assert_eq!(store.counts().await.unwrap()["q"].running, 3);
}

pub async fn a_keys_concurrency_limit_holds_without_holding_up_other_keys(store: S) {
    use raindrop::store::ClaimLimits;
    let limits = ClaimLimits {
        running_per_key: Some(2),
        ..ClaimLimits::default()
    };
    // Key k1 has a backlog ahead of everyone; k2, the same key of another tenant and a job
    // without a key (which counts under the key "" of its tenant) come after it.
    let mut jobs: Vec<NewJob> = (0..50)
        .map(|i| keyed_job(Some("a"), Some("k1"), i))
        .collect();
    jobs.extend((100..103).map(|i| keyed_job(Some("a"), Some("k2"), i)));
    jobs.push(keyed_job(Some("b"), Some("k1"), 200));
    jobs.push(keyed_job(None, Some("k1"), 300));
    jobs.push(keyed_job(Some("a"), Some(""), 400));
    jobs.push(keyed_job(Some("a"), None, 500));
    store.enqueue(jobs, t(0)).await.unwrap();
    let claim = |now| {
        let store = store.clone();
        async move {
            store
                .claim_with("q", "w", 100, LEASE, limits, now)
                .await
                .unwrap()
        }
    };
    let first = claim(t(1)).await;
    let mut got: Vec<u64> = first.iter().map(n).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [0, 1, 100, 101, 200, 300, 400, 500],
        "two of each key of each tenant; the job with no key is not limited"
    );
    let k1: Vec<_> = first.iter().filter(|j| n(j) < 50).collect();
    assert_eq!(
        k1[0].limit_key.as_deref(),
        Some("k1"),
        "the key is kept with the job"
    );
    assert!(claim(t(1)).await.is_empty(), "every key is at its limit");
    // Each way a job of k1 stops frees one place for k1.
    let mut running: Vec<_> = first.into_iter().filter(|j| n(j) < 50).collect();
    for way in 0..6 {
        let job = running.remove(0);
        end_running(&store, &job, way, t(2)).await;
        let next = claim(t(2)).await;
        assert_eq!(next.len(), 1, "way {way} freed one place");
        assert_eq!(next[0].limit_key.as_deref(), Some("k1"));
        assert_eq!(next[0].tenant.as_deref(), Some("a"));
        running.extend(next);
    }
    store.recover(t(100)).await.unwrap();
    let again = claim(t(100)).await;
    let per_key = again.iter().fold(BTreeMap::new(), |mut m, j| {
        *m.entry((j.tenant.clone(), j.limit_key.clone()))
            .or_insert(0) += 1;
        m
    });
    assert!(per_key.values().all(|&count| count <= 2), "{per_key:?}");
}

pub async fn a_tenants_keys_share_its_running_limit_and_its_turns(store: S) {
    use raindrop::store::ClaimLimits;
    let limits = ClaimLimits {
        running_per_tenant: Some(3),
        running_per_key: Some(10),
        ..ClaimLimits::default()
    };
    // Tenant a spreads its jobs over many keys; b has one key. a's keys take turns as one
    // tenant, so b is served as often as a, and a never runs more than three.
    let mut jobs: Vec<NewJob> = (0..40)
        .map(|i| keyed_job(Some("a"), Some(&format!("k{i}")), i))
        .collect();
    jobs.extend((100..140).map(|i| keyed_job(Some("b"), Some("only"), i)));
    store.enqueue(jobs, t(0)).await.unwrap();
    let first = store
        .claim_with("q", "w", 6, LEASE, limits, t(1))
        .await
        .unwrap();
    let tenants: Vec<_> = first.iter().map(|j| j.tenant.clone().unwrap()).collect();
    assert_eq!(
        tenants.iter().filter(|t| *t == "a").count(),
        3,
        "{tenants:?}"
    );
    assert_eq!(
        tenants.iter().filter(|t| *t == "b").count(),
        3,
        "{tenants:?}"
    );
}

pub async fn a_rate_limited_queue_starts_no_more_than_its_bucket_holds(store: S) {
    use raindrop::store::ClaimLimits;
    use raindrop::store::rate::Limit;
    let limits = ClaimLimits {
        rate: Some(Limit {
            requests: 10,
            per: Duration::from_secs(1),
            burst: 5,
        }),
        ..ClaimLimits::default()
    };
    let jobs = (0..100).map(|i| tenant_job("q", None, i)).collect();
    store.enqueue(jobs, t(0)).await.unwrap();
    let ms = |ms: i64| t(10) + chrono::Duration::milliseconds(ms);
    let claim = |now| {
        let store = store.clone();
        async move {
            store
                .claim_with("q", "w", 100, LEASE, limits, now)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(claim(ms(0)).await, 5, "a burst");
    assert_eq!(claim(ms(0)).await, 0, "then the bucket is empty");
    assert_eq!(claim(ms(99)).await, 0, "a token comes every 100 ms");
    assert_eq!(claim(ms(100)).await, 1);
    assert_eq!(claim(ms(350)).await, 2);
    assert_eq!(claim(ms(10_000)).await, 5, "never more than a burst");
    // Another claimer of the same queue draws from the same bucket.
    let other = store
        .claim_with("q", "other", 100, LEASE, limits, ms(10_000))
        .await
        .unwrap();
    assert!(other.is_empty());
    // An empty queue spends no tokens.
    let drained = store
        .claim("q", "w", 1000, LEASE, ms(20_000))
        .await
        .unwrap();
    assert_eq!(drained.len(), 100 - 13);
    assert_eq!(claim(ms(30_000)).await, 0);
    let jobs = (0..10).map(|i| tenant_job("q", None, i)).collect();
    store.enqueue(jobs, ms(30_000)).await.unwrap();
    assert_eq!(claim(ms(30_000)).await, 5);
}

pub async fn a_snoozed_job_runs_later_without_spending_an_attempt(store: S) {
    let id = enqueue(&store, new_job("q", 1), t(0)).await;
    let job = store
        .claim("q", "w", 1, LEASE, t(1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.attempt, 1);
    let token = job.lease_token().unwrap();
    let stale = store.snooze(id, token + 1, t(11), "for 10s", t(1)).await;
    assert!(matches!(stale, Err(Error::LeaseLost(_))), "{stale:?}");
    store
        .snooze(id, token, t(11), "for 10s", t(1))
        .await
        .unwrap();
    let snoozed = store.get(id).await.unwrap().unwrap();
    assert_eq!(snoozed.state, JobState::Scheduled);
    assert_eq!(snoozed.attempt, 0, "the attempt is not spent");
    assert!(snoozed.attempts.is_empty());
    assert_eq!(snoozed.snoozes, 1);
    assert_eq!(snoozed.run_at, t(11));
    assert!(
        store
            .claim("q", "w", 1, LEASE, t(10))
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim("q", "w", 1, LEASE, t(11))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.attempt, 1);
    assert_eq!(again.snoozes, 1);
    store
        .snooze(id, again.lease_token().unwrap(), t(11), "for 0s", t(11))
        .await
        .unwrap();
    assert_eq!(store.get(id).await.unwrap().unwrap().snoozes, 2);
    let events = store.events_after(0, 100).await.unwrap();
    let snoozes: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Snoozed)
        .map(|e| (e.job, e.detail.clone()))
        .collect();
    assert_eq!(
        snoozes,
        [
            (id, Some("for 10s".to_owned())),
            (id, Some("for 0s".to_owned()))
        ]
    );
    // A retried dead letter starts its snoozes over with its attempts.
    let job = store
        .claim("q", "w", 1, LEASE, t(12))
        .await
        .unwrap()
        .remove(0);
    let token = job.lease_token().unwrap();
    store
        .fail(id, token, JobError::new("boom"), AfterFailure::Dead, t(12))
        .await
        .unwrap();
    store.retry_dead(id, t(13)).await.unwrap();
    assert_eq!(store.get(id).await.unwrap().unwrap().snoozes, 0);
}

/// A job of `tenant` with unique key `key` under a rule of `states` and `window`.
fn unique_job(tenant: Option<&str>, key: &str, n: u32, states: &[JobState], window: u64) -> NewJob {
    let mut job = tenant_job("q", tenant, n);
    job.unique = Some(raindrop::job::UniqueRule {
        key: key.into(),
        states: states.to_vec(),
        window: Duration::from_secs(window),
    });
    job
}

pub async fn a_unique_job_is_the_existing_one_while_its_rule_holds(store: S) {
    use JobState::*;
    let waiting_or_running = [Queued, Scheduled, Retrying, Running];
    let send = |job: NewJob, now| {
        let store = store.clone();
        async move { store.enqueue(vec![job], now).await.unwrap().remove(0) }
    };
    let first = send(unique_job(Some("a"), "k", 1, &waiting_or_running, 60), t(0)).await;
    let Enqueued::New(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        store
            .get(first)
            .await
            .unwrap()
            .unwrap()
            .unique_key
            .as_deref(),
        Some("k")
    );
    // While it waits, and while it runs, a job with the key is the first one.
    let again = send(unique_job(Some("a"), "k", 2, &waiting_or_running, 60), t(1)).await;
    assert_eq!(again, Enqueued::Duplicate(first));
    // Another tenant's key, another key, no key: new jobs.
    for job in [
        unique_job(Some("b"), "k", 3, &waiting_or_running, 60),
        unique_job(Some("a"), "other", 4, &waiting_or_running, 60),
        tenant_job("q", Some("a"), 5),
    ] {
        assert!(matches!(send(job, t(1)).await, Enqueued::New(_)));
    }
    let claimed = store.claim("q", "w", 10, LEASE, t(2)).await.unwrap();
    let running = claimed.iter().find(|j| j.id == first).unwrap();
    let again = send(unique_job(Some("a"), "k", 6, &waiting_or_running, 60), t(2)).await;
    assert_eq!(again, Enqueued::Duplicate(first));
    // Finished: still the one for its window (60 s), then a new job takes the key.
    store
        .complete(first, running.lease_token().unwrap(), Payload::null(), t(3))
        .await
        .unwrap();
    let again = send(
        unique_job(Some("a"), "k", 7, &waiting_or_running, 60),
        t(62),
    )
    .await;
    assert_eq!(again, Enqueued::Duplicate(first));
    let later = send(
        unique_job(Some("a"), "k", 8, &waiting_or_running, 60),
        t(63),
    )
    .await;
    let Enqueued::New(later) = later else {
        panic!("{later:?}")
    };
    let again = send(unique_job(Some("a"), "k", 9, &waiting_or_running, 0), t(64)).await;
    assert_eq!(
        again,
        Enqueued::Duplicate(later),
        "the newest job holds the key"
    );
    // Without a window, a finished job no longer counts; a rule naming `succeeded` keeps it.
    let job = store.claim("q", "w", 10, LEASE, t(65)).await.unwrap();
    let job = job.iter().find(|j| j.id == later).unwrap();
    store
        .complete(later, job.lease_token().unwrap(), Payload::null(), t(65))
        .await
        .unwrap();
    let kept = send(unique_job(Some("a"), "k", 10, &[Succeeded], 0), t(66)).await;
    assert_eq!(kept, Enqueued::Duplicate(later));
    let fresh = send(
        unique_job(Some("a"), "k", 11, &waiting_or_running, 0),
        t(66),
    )
    .await;
    assert!(matches!(fresh, Enqueued::New(_)), "{fresh:?}");
    // Twice in one enqueue: the second is the first.
    let both = store
        .enqueue(
            vec![
                unique_job(Some("c"), "k", 12, &waiting_or_running, 0),
                unique_job(Some("c"), "k", 13, &waiting_or_running, 0),
            ],
            t(70),
        )
        .await
        .unwrap();
    assert_eq!(both[1], Enqueued::Duplicate(both[0].id()));
    // A purged holder frees its key.
    let Enqueued::New(held) = send(unique_job(Some("d"), "k", 14, &[Succeeded], 0), t(80)).await
    else {
        panic!("d's first job is new")
    };
    let job = store.claim("q", "w", 100, LEASE, t(81)).await.unwrap();
    let job = job.iter().find(|j| j.id == held).unwrap();
    store
        .complete(held, job.lease_token().unwrap(), Payload::null(), t(81))
        .await
        .unwrap();
    let again = send(unique_job(Some("d"), "k", 15, &[Succeeded], 0), t(82)).await;
    assert_eq!(again, Enqueued::Duplicate(held));
    let policy = RetentionPolicy {
        succeeded: Duration::ZERO,
        failed: Duration::ZERO,
        dead: Duration::ZERO,
    };
    store
        .purge_expired(&BTreeMap::new(), policy, Duration::from_secs(3600), t(100))
        .await
        .unwrap();
    assert!(store.get(held).await.unwrap().is_none());
    let after_purge = send(unique_job(Some("d"), "k", 16, &[Succeeded], 0), t(101)).await;
    assert!(matches!(after_purge, Enqueued::New(_)), "{after_purge:?}");
}

/// A job of `tenant` sent with debounce key `key`, window `window` seconds, in `mode`.
fn debounced_job(
    tenant: &str,
    key: &str,
    n: u32,
    window: i64,
    mode: raindrop::job::DebounceMode,
) -> NewJob {
    let mut job = tenant_job("q", Some(tenant), n);
    job.debounce = Some(raindrop::job::DebounceRule {
        key: key.into(),
        window: Duration::from_secs(window as u64),
        mode,
    });
    job
}

pub async fn a_trailing_debounce_runs_the_latest_job_of_a_burst_once_it_is_quiet(store: S) {
    use raindrop::job::DebounceMode;
    let mode = DebounceMode::Trailing {
        max_wait: Some(Duration::from_secs(5)),
    };
    let send = |n: u32, tenant: &'static str, now| {
        let store = store.clone();
        async move {
            let job = debounced_job(tenant, "k", n, 2, mode);
            store.enqueue(vec![job], now).await.unwrap().remove(0)
        }
    };
    let Enqueued::New(id) = send(1, "a", t(0)).await else {
        panic!("the first of a burst is new")
    };
    let first = store.get(id).await.unwrap().unwrap();
    assert_eq!((first.state, first.run_at), (JobState::Scheduled, t(2)));
    assert_eq!(first.debounce_key.as_deref(), Some("k"));
    // Each later one of the burst replaces its payload and pushes it a window on ...
    assert_eq!(send(2, "a", t(1)).await, Enqueued::Debounced(id));
    assert_eq!(store.get(id).await.unwrap().unwrap().run_at, t(3));
    assert_eq!(send(3, "a", t(2)).await, Enqueued::Debounced(id));
    // ... but never past max_wait after the first.
    assert_eq!(send(4, "a", t(4)).await, Enqueued::Debounced(id));
    let waiting = store.get(id).await.unwrap().unwrap();
    assert_eq!(waiting.run_at, t(5));
    assert_eq!(n(&waiting), 4, "the latest payload");
    // Another tenant's key is its own burst.
    assert!(matches!(send(9, "b", t(4)).await, Enqueued::New(other) if other != id));
    assert!(
        store
            .claim("q", "w", 10, LEASE, t(4))
            .await
            .unwrap()
            .is_empty()
    );
    let ran = store.claim("q", "w", 10, LEASE, t(5)).await.unwrap();
    let ran: Vec<_> = ran.iter().filter(|j| j.id == id).collect();
    assert_eq!(ran.len(), 1);
    assert_eq!(n(ran[0]), 4);
    // Once it has started, the next one starts a new burst.
    let next = send(5, "a", t(5)).await;
    assert!(
        matches!(next, Enqueued::New(other) if other != id),
        "{next:?}"
    );
    let debounced = store
        .events_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.job == id && e.kind == EventKind::Debounced)
        .count();
    assert_eq!(debounced, 3);
    // Two of one burst in one enqueue: the second goes into the first.
    let both = store
        .enqueue(
            vec![
                debounced_job("c", "k", 1, 2, mode),
                debounced_job("c", "k", 2, 2, mode),
            ],
            t(10),
        )
        .await
        .unwrap();
    assert_eq!(both[1], Enqueued::Debounced(both[0].id()));
    let job = store.get(both[0].id()).await.unwrap().unwrap();
    assert_eq!((n(&job), job.run_at), (2, t(12)));
    // b's burst, a's second and c's: three jobs wait.
    assert_eq!(store.counts().await.unwrap()["q"].scheduled, 3);
}

pub async fn a_leading_debounce_runs_the_first_job_and_drops_the_rest_of_its_window(store: S) {
    use raindrop::job::DebounceMode;
    let send = |n: u32, now| {
        let store = store.clone();
        async move {
            let job = debounced_job("a", "k", n, 10, DebounceMode::Leading);
            store.enqueue(vec![job], now).await.unwrap().remove(0)
        }
    };
    let Enqueued::New(first) = send(1, t(0)).await else {
        panic!("the first is new")
    };
    assert_eq!(
        store.get(first).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert_eq!(send(2, t(5)).await, Enqueued::Duplicate(first));
    let claimed = store.claim("q", "w", 10, LEASE, t(6)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(n(&claimed[0]), 1, "the first payload runs");
    assert_eq!(
        send(3, t(9)).await,
        Enqueued::Duplicate(first),
        "running, still its window"
    );
    let Enqueued::New(second) = send(4, t(10)).await else {
        panic!("a window later, a new job")
    };
    assert_ne!(second, first);
}

pub async fn the_jobs_a_limit_holds_back_are_counted(store: S) {
    use raindrop::store::ClaimLimits;
    use raindrop::store::rate::Limit;
    let per_key = ClaimLimits {
        running_per_key: Some(1),
        ..ClaimLimits::default()
    };
    let mut jobs: Vec<NewJob> = (0..4).map(|i| keyed_job(Some("t"), Some("a"), i)).collect();
    jobs.extend((10..12).map(|i| keyed_job(Some("t"), Some("b"), i)));
    store.enqueue(jobs, t(0)).await.unwrap();
    let held = |limits| {
        let store = store.clone();
        async move { store.held_by_limits("q", limits, t(1)).await.unwrap() }
    };
    assert_eq!(held(per_key).await, 0, "nothing runs: nothing is held");
    let running = store
        .claim_with("q", "w", 10, LEASE, per_key, t(1))
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    assert_eq!(
        held(per_key).await,
        4,
        "both keys at their limit: 3 of a, 1 of b"
    );
    let b = running
        .iter()
        .find(|j| j.limit_key.as_deref() == Some("b"))
        .unwrap();
    store
        .complete(b.id, b.lease_token().unwrap(), Payload::null(), t(1))
        .await
        .unwrap();
    assert_eq!(held(per_key).await, 3, "b has room again");
    let capped = ClaimLimits {
        running: Some(1),
        ..ClaimLimits::default()
    };
    assert_eq!(
        held(capped).await,
        4,
        "the queue at its cap holds every queued job"
    );
    let tenant = ClaimLimits {
        running_per_tenant: Some(1),
        ..ClaimLimits::default()
    };
    assert_eq!(held(tenant).await, 4, "the tenant at its limit");
    assert_eq!(held(ClaimLimits::default()).await, 0);
    let rate = ClaimLimits {
        rate: Some(Limit {
            requests: 1,
            per: Duration::from_secs(3600),
            burst: 1,
        }),
        ..ClaimLimits::default()
    };
    assert_eq!(held(rate).await, 0, "a full bucket holds nothing");
    let started = store
        .claim_with("q", "w", 10, LEASE, rate, t(1))
        .await
        .unwrap();
    assert_eq!(started.len(), 1);
    assert_eq!(
        held(rate).await,
        3,
        "an empty bucket holds every queued job"
    );
}
