//! Job transitions as pure functions on a [`Job`] record, shared by the stores that keep whole
//! records (memory, SQLite): each checks that the transition applies, changes the record and
//! says which events to emit. The store around it indexes, persists and emits atomically.

use super::{AfterFailure, CancelOutcome, LeaseStatus};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::job::{Attempt, Job, JobError, JobState, Lease, Payload, Progress, Timestamp};
pub(crate) use crate::job::{after, before};

/// Events a transition emits, in order, with their detail.
pub(crate) type Emitted = Vec<(EventKind, Option<String>)>;

/// The state a waiting job has at `now`.
pub(crate) fn waiting_state(job: &Job, now: Timestamp) -> JobState {
    match job.state {
        JobState::Retrying if job.run_at > now => JobState::Retrying,
        _ if job.run_at > now => JobState::Scheduled,
        _ => JobState::Queued,
    }
}

/// Checks that `job` is running under lease `token`.
pub(crate) fn check_lease(job: &Job, token: u64) -> Result<()> {
    if job.state == JobState::Running && job.lease_token() == Some(token) {
        Ok(())
    } else {
        Err(Error::LeaseLost(job.id))
    }
}

/// Starts an attempt for `worker` under a new lease.
pub(crate) fn claim(
    job: &mut Job,
    worker: &str,
    token: u64,
    expires_at: Timestamp,
    now: Timestamp,
) -> Emitted {
    job.state = JobState::Running;
    job.attempt += 1;
    job.started_at.get_or_insert(now);
    job.lease = Some(Lease {
        worker: worker.to_owned(),
        expires_at,
        token,
    });
    job.attempts.push(Attempt {
        number: job.attempt,
        worker: worker.to_owned(),
        started_at: now,
        finished_at: None,
        error: None,
    });
    vec![(EventKind::Started, None)]
}

/// Answers a heartbeat for lease `token`, extending it to `expires_at` if it is still held.
pub(crate) fn heartbeat(job: Option<&mut Job>, token: u64, expires_at: Timestamp) -> LeaseStatus {
    match job {
        Some(job) if job.state == JobState::Running && job.lease_token() == Some(token) => {
            if let Some(lease) = job.lease.as_mut() {
                lease.expires_at = expires_at;
            }
            LeaseStatus::Extended
        }
        Some(job) if job.state == JobState::Cancelled => LeaseStatus::Cancelled,
        _ => LeaseStatus::Lost,
    }
}

fn close_attempt(job: &mut Job, error: Option<JobError>, now: Timestamp) {
    if let Some(attempt) = job.attempts.last_mut().filter(|a| a.finished_at.is_none()) {
        attempt.finished_at = Some(now);
        attempt.error = error;
    }
}

/// Records progress of the running job.
pub(crate) fn progress(job: &mut Job, token: u64, progress: Progress) -> Result<Emitted> {
    check_lease(job, token)?;
    let detail = format!("{}% {}", progress.percent, progress.message);
    job.progress = Some(progress);
    Ok(vec![(EventKind::Progress, Some(detail))])
}

/// Finishes the running job with `result`.
pub(crate) fn complete(
    job: &mut Job,
    token: u64,
    result: Payload,
    now: Timestamp,
) -> Result<Emitted> {
    check_lease(job, token)?;
    close_attempt(job, None, now);
    job.state = JobState::Succeeded;
    job.finished_at = Some(now);
    job.result = Some(result);
    job.lease = None;
    Ok(vec![(EventKind::Succeeded, None)])
}

/// Records a failed attempt; the job retries at the requested time if it has attempts left,
/// else it is dead.
pub(crate) fn fail(
    job: &mut Job,
    token: u64,
    error: JobError,
    then: AfterFailure,
    now: Timestamp,
) -> Result<Emitted> {
    check_lease(job, token)?;
    let message = error.message.clone();
    close_attempt(job, Some(error.clone()), now);
    job.error = Some(error);
    job.lease = None;
    match then {
        AfterFailure::Retry { at } if job.attempt < job.max_attempts => {
            job.run_at = at;
            job.state = JobState::Retrying;
            job.state = waiting_state(job, now);
            Ok(vec![
                (EventKind::Failed, Some(message)),
                (EventKind::Retrying, Some(at.to_rfc3339())),
            ])
        }
        _ => {
            job.state = JobState::Dead;
            job.finished_at = Some(now);
            Ok(vec![
                (EventKind::Failed, Some(message.clone())),
                (EventKind::DeadLettered, Some(message)),
            ])
        }
    }
}

/// Takes the running `job` (under lease `token`) back to waiting, its open attempt undone, due
/// at its run time.
fn unclaim(job: &mut Job, token: u64, now: Timestamp) -> Result<()> {
    check_lease(job, token)?;
    job.attempts.pop();
    job.attempt = job.attempt.saturating_sub(1);
    if job.attempt == 0 {
        job.started_at = None;
    }
    job.lease = None;
    job.state = JobState::Queued;
    job.state = waiting_state(job, now);
    Ok(())
}

/// Puts the running job back without counting the attempt.
pub(crate) fn release(job: &mut Job, token: u64, now: Timestamp) -> Result<Emitted> {
    unclaim(job, token, now)?;
    Ok(vec![(
        EventKind::Requeued,
        Some("released by a stopping worker".into()),
    )])
}

/// Gives the waiting `job` the payload, headers and kind of `new`, a later job of its trailing
/// debounce burst, to run at `run_at`.
pub(crate) fn debounce(
    job: &mut Job,
    new: crate::job::NewJob,
    run_at: Timestamp,
    now: Timestamp,
) -> Emitted {
    job.payload = new.payload;
    job.headers = new.headers;
    job.kind = new.kind;
    job.run_at = run_at;
    job.state = JobState::Queued;
    job.state = waiting_state(job, now);
    vec![(
        EventKind::Debounced,
        Some(format!("runs at {}", run_at.to_rfc3339())),
    )]
}

/// Puts the running job back without counting the attempt, not before `until`, one snooze more.
pub(crate) fn snooze(
    job: &mut Job,
    token: u64,
    until: Timestamp,
    detail: &str,
    now: Timestamp,
) -> Result<Emitted> {
    check_lease(job, token)?;
    job.run_at = until.max(now);
    unclaim(job, token, now)?;
    job.snoozes = job.snoozes.saturating_add(1);
    Ok(vec![(EventKind::Snoozed, Some(detail.to_owned()))])
}

/// Cancels a waiting or running job.
pub(crate) fn cancel(job: &mut Job, now: Timestamp) -> (CancelOutcome, Emitted) {
    let outcome = match job.state {
        state if state.is_finished() => return (CancelOutcome::AlreadyFinished(state), Vec::new()),
        JobState::Running => CancelOutcome::CancelledRunning,
        _ => CancelOutcome::Cancelled,
    };
    close_attempt(job, Some(JobError::new("cancelled")), now);
    job.state = JobState::Cancelled;
    job.finished_at = Some(now);
    job.lease = None;
    (outcome, vec![(EventKind::Cancelled, None)])
}

/// Whether the running `job` has lost its lease by `now` (or never had one).
pub(crate) fn lease_lapsed(job: &Job, now: Timestamp) -> bool {
    job.state == JobState::Running
        && job
            .lease
            .as_ref()
            .is_none_or(|lease| lease.expires_at <= now)
}

/// Takes back a running job whose lease lapsed: queued again, or dead when out of attempts.
pub(crate) fn recover(job: &mut Job, now: Timestamp) -> Emitted {
    let error = JobError::new("the worker's lease expired before the job finished");
    close_attempt(job, Some(error.clone()), now);
    job.lease = None;
    job.error = Some(error);
    if job.attempt >= job.max_attempts {
        job.state = JobState::Dead;
        job.finished_at = Some(now);
        vec![
            (EventKind::Recovered, None),
            (
                EventKind::DeadLettered,
                Some("out of attempts after its lease expired".into()),
            ),
        ]
    } else {
        job.state = JobState::Queued;
        job.run_at = now;
        vec![(EventKind::Recovered, None)]
    }
}

/// Puts a dead letter back in its queue with a fresh set of attempts.
pub(crate) fn retry_dead(job: &mut Job, now: Timestamp) -> Result<Emitted> {
    if job.state != JobState::Dead {
        return Err(Error::WrongState {
            id: job.id,
            state: job.state,
        });
    }
    job.attempt = 0;
    job.snoozes = 0;
    job.finished_at = None;
    job.run_at = now;
    job.state = JobState::Queued;
    Ok(vec![(
        EventKind::Requeued,
        Some("retried from the dead letters".into()),
    )])
}

/// How long a finished job is kept under `policy`; `None` while it is not finished.
pub(crate) fn retention_deadline(job: &Job, policy: &super::RetentionPolicy) -> Option<Timestamp> {
    let keep = match job.state {
        JobState::Succeeded => policy.succeeded,
        JobState::Dead => policy.dead,
        JobState::Cancelled => policy.failed,
        _ => return None,
    };
    job.finished_at.map(|at| after(at, keep))
}
