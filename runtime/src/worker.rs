//! A pool of workers for one task: claims jobs in batches, runs each under a timeout with a
//! heartbeat, reports the outcome, and shuts down gracefully.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::consumer::{BatchHandler, Decision, Message, MessageBatch};
use crate::error::Error;
use crate::job::{Job, JobError, JobId, Payload, Timestamp, humanize, now};
use crate::retry::RetryPolicy;
use crate::store::{AfterFailure, ClaimLimits, LeaseStatus, Store};
use crate::task::{Handler, JobContext, Retry};

mod autoscale;
pub(crate) use autoscale::Autoscale;

/// How a worker pool runs.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// The task's name (for logs and metrics).
    pub(crate) task: String,
    /// The queue it pulls.
    pub(crate) queue: String,
    /// Jobs run at once.
    pub(crate) concurrency: usize,
    /// Longest one attempt may take, unless the job says otherwise.
    pub(crate) timeout: Duration,
    /// How long a claim holds without a heartbeat (the queue's visibility timeout).
    pub(crate) lease: Duration,
    /// The queue's retry policy.
    pub(crate) retry: RetryPolicy,
    /// Longest wait between claims when the queue is empty; an enqueue in this process wakes
    /// the pool at once.
    pub(crate) idle_poll: Duration,
    /// How long in-flight jobs may finish after shutdown starts before they are released.
    pub(crate) grace: Duration,
    /// What claims observe beyond their batch size (tenants' running-jobs quota, the queue's
    /// concurrency and rate limits).
    pub(crate) limits: ClaimLimits,
    /// Snoozes a job may take; the next one fails its attempt.
    pub(crate) max_snoozes: u32,
    /// Concurrency that follows the backlog (`concurrency` is then where it starts).
    pub(crate) autoscale: Option<Autoscale>,
}

/// What a pool runs: one job per handler call, or batches of messages (a queue consumer).
#[derive(Clone)]
pub(crate) enum Work {
    Jobs(Arc<dyn Handler>),
    Batches {
        handler: Arc<dyn BatchHandler>,
        size: usize,
    },
}

/// What the pool shares with its running jobs.
struct Shared {
    store: Arc<dyn Store>,
    work: Work,
    config: WorkerConfig,
    worker: String,
    in_flight: Mutex<HashMap<JobId, InFlight, foldhash::fast::RandomState>>,
    meters: Meters,
    /// Signalled when a job of this pool ends (with a running limit): a claim that came back
    /// empty because a tenant or a key was at its limit may now get one.
    finished: Notify,
    /// Outcomes on their way to the store, at most `concurrency`: a job's slot is free once
    /// its outcome is sent, and while the store falls behind (or refuses them) the pool stops
    /// claiming rather than piling outcomes up.
    reporting: Arc<Semaphore>,
    /// Jobs the pool runs at once now (its `concurrency`, or where autoscaling has taken it).
    concurrency: std::sync::atomic::AtomicUsize,
}

/// The pool's metric handles, registered once.
struct Meters {
    started: metrics::Counter,
    succeeded: metrics::Counter,
    failed: metrics::Counter,
    retried: metrics::Counter,
    snoozed: metrics::Counter,
    timed_out: metrics::Counter,
    lease_lost: metrics::Counter,
    dead_lettered: metrics::Counter,
    wait: metrics::Histogram,
    duration: metrics::Histogram,
    /// Jobs this pool is running now.
    busy: metrics::Gauge,
    /// Pools of this task running in this process (1 while up).
    pools: metrics::Gauge,
    /// Jobs the pools of this task in this process may run at once.
    concurrency: metrics::Gauge,
}

impl Meters {
    fn new(config: &WorkerConfig) -> Self {
        let labels = [
            ("queue", config.queue.clone()),
            ("task", config.task.clone()),
        ];
        Self {
            started: metrics::counter!("raindrop_jobs_started_total", &labels),
            succeeded: metrics::counter!("raindrop_jobs_succeeded_total", &labels),
            failed: metrics::counter!("raindrop_jobs_failed_total", &labels),
            retried: metrics::counter!("raindrop_jobs_retried_total", &labels),
            snoozed: metrics::counter!("raindrop_jobs_snoozed_total", &labels),
            timed_out: metrics::counter!("raindrop_jobs_timed_out_total", &labels),
            lease_lost: metrics::counter!("raindrop_jobs_lease_lost_total", &labels),
            dead_lettered: metrics::counter!(
                "raindrop_jobs_dead_lettered_total",
                "queue" => config.queue.clone()
            ),
            wait: metrics::histogram!("raindrop_job_wait_seconds", &labels),
            duration: metrics::histogram!("raindrop_job_duration_seconds", &labels),
            busy: metrics::gauge!("raindrop_worker_busy", &labels),
            pools: metrics::gauge!("raindrop_worker_pools", &labels),
            concurrency: metrics::gauge!("raindrop_worker_concurrency", &labels),
        }
    }
}

struct InFlight {
    token: u64,
    cancel: CancellationToken,
    /// Since when the handler has returned and its outcome is on its way to the store. The
    /// lease is still renewed once this has lasted a heartbeat period, so a store slow to take
    /// outcomes does not let it lapse and the job run again; but the job no longer counts as
    /// busy and there is nothing left to stop.
    reporting_since: Option<std::time::Instant>,
}

/// Leases of one attempt (or batch) entered in the pool's `in_flight` for the heartbeat, for
/// as long as the attempt lives: dropped — outcomes recorded, the task ended, aborted or
/// panicked — it takes them out. Entries are matched by token, so a later claim of the same
/// job by this pool is left alone.
struct Tracked<'a> {
    shared: &'a Shared,
    leases: Vec<(JobId, u64)>,
}

impl<'a> Tracked<'a> {
    fn new(shared: &'a Shared, leases: Vec<(JobId, u64)>, cancel: &CancellationToken) -> Self {
        let mut in_flight = shared.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for (id, token) in &leases {
            let entry = InFlight {
                token: *token,
                cancel: cancel.clone(),
                reporting_since: None,
            };
            in_flight.insert(*id, entry);
        }
        drop(in_flight);
        Self { shared, leases }
    }

    /// The handler has returned: the outcomes are on their way to the store.
    fn reporting(&self) {
        let since = std::time::Instant::now();
        let mut in_flight = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (id, token) in &self.leases {
            if let Some(entry) = in_flight.get_mut(id).filter(|e| e.token == *token) {
                entry.reporting_since = Some(since);
            }
        }
    }

    /// The outcome of `id` is recorded (or refused): no lease left to renew.
    fn done(&mut self, id: JobId) {
        if let Some(at) = self.leases.iter().position(|(leased, _)| *leased == id) {
            let (id, token) = self.leases.swap_remove(at);
            forget(self.shared, id, token);
        }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        for (id, token) in std::mem::take(&mut self.leases) {
            forget(self.shared, id, token);
        }
    }
}

/// Takes job `id` out of the pool's `in_flight` if it is still there under `token`.
fn forget(shared: &Shared, id: JobId, token: u64) {
    let mut in_flight = shared.in_flight.lock().unwrap_or_else(|p| p.into_inner());
    if in_flight.get(&id).is_some_and(|e| e.token == token) {
        in_flight.remove(&id);
    }
}

/// How an attempt ended.
enum Outcome {
    Succeeded(Payload),
    Failed(Retry, JobError),
    /// The handler asked to run again after this long, without spending the attempt.
    Snoozed(Duration),
    /// Cancelled in the store, or its lease was lost: someone else owns the job now.
    Abandoned,
    /// Shutdown ran out of grace: give the job back without counting the attempt.
    Release,
}

/// Runs the pool until `shutdown` fires, then drains it.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    work: Work,
    config: WorkerConfig,
    worker: String,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let slots = config.concurrency.max(1);
    let capacity = config.autoscale.map_or(slots, |a| a.max.max(slots));
    let shared = Arc::new(Shared {
        store,
        work,
        meters: Meters::new(&config),
        config,
        worker,
        in_flight: Mutex::new(HashMap::default()),
        finished: Notify::new(),
        reporting: Arc::new(Semaphore::new(capacity)),
        concurrency: std::sync::atomic::AtomicUsize::new(slots),
    });
    let permits = Arc::new(Semaphore::new(slots));
    let scaler = shared.config.autoscale.map(|autoscale| {
        tokio::spawn(autoscale::scale_loop(
            shared.clone(),
            permits.clone(),
            autoscale,
            shutdown.clone(),
        ))
    });
    // Fires when the grace period is over: running jobs are stopped and released.
    let hard_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), hard_stop.clone()));
    shared.meters.pools.increment(1.0);
    shared.meters.concurrency.increment(slots as f64);
    tracing::info!(task = %shared.config.task, queue = %shared.config.queue, concurrency = shared.config.concurrency, "worker pool started");
    // Two claimers share the pool's slots, so one claim can be on its way while the other's
    // answer is taken in: a pool is not held to one claim per round trip to the store.
    let claimer = || {
        claim_loop(
            shared.clone(),
            permits.clone(),
            wake.clone(),
            shutdown.clone(),
            hard_stop.clone(),
        )
    };
    let (mut first, mut second) = tokio::join!(claimer(), claimer());
    let mut wait_for_jobs = async || {
        while first.join_next().await.is_some() {}
        while second.join_next().await.is_some() {}
    };

    let in_flight = shared
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    tracing::info!(task = %shared.config.task, in_flight, grace_ms = shared.config.grace.as_millis() as u64, "worker pool stopping; waiting for running jobs");
    let drained = tokio::time::timeout(shared.config.grace, wait_for_jobs()).await;
    if drained.is_err() {
        tracing::warn!(task = %shared.config.task, "grace period over; releasing the jobs still running");
        hard_stop.cancel();
        wait_for_jobs().await;
    }
    hard_stop.cancel();
    if let Some(scaler) = scaler {
        let _ = scaler.await;
    }
    let _ = heartbeat.await;
    shared.meters.pools.decrement(1.0);
    shared.meters.concurrency.decrement(slots as f64);
    tracing::info!(task = %shared.config.task, "worker pool stopped");
}

/// Claims jobs into free slots of the pool and starts them, until `shutdown`; returns the
/// jobs still running.
async fn claim_loop(
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut jobs = tokio::task::JoinSet::new();
    let mut idle = Duration::from_millis(5);
    loop {
        let first = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let (held, limit) = free_slots(&shared.work, &permits, first);
        // Listening before the claim: a job enqueued (or a tenant's slot freed) while the claim
        // is on its way wakes the pool if the claim comes back empty, instead of waiting for
        // the next poll.
        let woken = wake.notified();
        let finished = shared.finished.notified();
        tokio::pin!(woken, finished);
        woken.as_mut().enable();
        finished.as_mut().enable();
        let claimed_at = now();
        let claimed = match shared
            .store
            .claim_with(
                &shared.config.queue,
                &shared.worker,
                limit,
                shared.config.lease,
                shared.config.limits,
                claimed_at,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(task = %shared.config.task, error = %err, retry_in_ms = idle.as_millis() as u64, "claiming jobs failed; retrying");
                drop(held);
                idle = (idle * 2).min(Duration::from_secs(5));
                tokio::select! {
                    () = tokio::time::sleep(idle) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        // Reap finished attempts so the set does not grow.
        while jobs.try_join_next().is_some() {}
        if claimed.is_empty() {
            drop(held);
            tokio::select! {
                () = woken => {}
                () = finished => {}
                () = tokio::time::sleep(idle) => {}
                () = shutdown.cancelled() => break,
            }
            idle = (idle * 2).min(longest_idle(&shared.config));
            continue;
        }
        idle = Duration::from_millis(5);
        start(&mut jobs, &shared, &hard_stop, claimed, claimed_at, held);
    }
    jobs
}

/// The longest wait between two claims that come back empty. A job enqueued in this process
/// (or, on stores that tell, in any) wakes the pool sooner; what no store tells is a slot freed
/// or a token refilled elsewhere: a limited queue looks again after a running job could have
/// ended elsewhere (100 ms) or once its bucket of starts refilled, whichever is sooner.
fn longest_idle(config: &WorkerConfig) -> Duration {
    let mut longest = config.idle_poll;
    if config.limits.running.is_some()
        || config.limits.running_per_key.is_some()
        || config.limits.running_per_tenant.is_some()
    {
        longest = longest.min(Duration::from_millis(100));
    }
    if let Some(rate) = config.limits.rate {
        let refill = rate.per.saturating_mul(rate.burst.max(1)) / rate.requests.max(1);
        longest = longest.min(refill.max(Duration::from_millis(5)));
    }
    longest
}

/// Whether a pool's claims can come back short because of a running limit, so a job that
/// ends should wake its claim loop.
fn limits_running(config: &WorkerConfig) -> bool {
    let limits = &config.limits;
    limits.running_per_tenant.is_some()
        || limits.running.is_some()
        || limits.running_per_key.is_some()
}

/// The permits the next claim may fill, starting with `first`, and how many jobs to claim:
/// every free slot for jobs, one batch for a consumer.
fn free_slots(
    work: &Work,
    permits: &Arc<Semaphore>,
    first: OwnedSemaphorePermit,
) -> (Vec<OwnedSemaphorePermit>, usize) {
    let mut held = vec![first];
    match work {
        Work::Jobs(_) => {
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                held.push(permit);
            }
            let limit = held.len();
            (held, limit)
        }
        // One permit runs one batch.
        Work::Batches { size, .. } => (held, *size),
    }
}

/// Starts the `claimed` jobs (claimed at `claimed_at`) in `jobs`, each holding one of `held`
/// (a batch holds them all).
fn start(
    jobs: &mut tokio::task::JoinSet<()>,
    shared: &Arc<Shared>,
    hard_stop: &CancellationToken,
    claimed: Vec<Job>,
    claimed_at: Timestamp,
    mut held: Vec<OwnedSemaphorePermit>,
) {
    match shared.work.clone() {
        Work::Jobs(handler) => {
            held.truncate(claimed.len());
            for (job, permit) in claimed.into_iter().zip(held) {
                let (shared, hard_stop, handler) =
                    (shared.clone(), hard_stop.clone(), handler.clone());
                // Boxed: the attempt's future is kilobytes, which the task would otherwise
                // copy several times on its way in and out of the scheduler.
                jobs.spawn(Box::pin(async move {
                    execute(&shared, &handler, job, claimed_at, hard_stop, permit).await;
                    if limits_running(&shared.config) {
                        shared.finished.notify_one();
                    }
                }));
            }
        }
        Work::Batches { handler, .. } => {
            let (shared, hard_stop) = (shared.clone(), hard_stop.clone());
            jobs.spawn(async move {
                execute_batch(&shared, &handler, claimed, hard_stop).await;
                drop(held);
                if limits_running(&shared.config) {
                    shared.finished.notify_one();
                }
            });
        }
    }
}

/// Runs one attempt of `job`, claimed at `claimed_at`, and records its outcome.
async fn execute(
    shared: &Arc<Shared>,
    handler: &Arc<dyn Handler>,
    job: Job,
    claimed_at: Timestamp,
    hard_stop: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let Some(token) = job.lease_token() else {
        return;
    };
    let id = job.id;
    let cancel = CancellationToken::new();
    let tracked = Tracked::new(shared, vec![(id, token)], &cancel);
    let timeout = job.timeout.unwrap_or(shared.config.timeout);
    shared.meters.started.increment(1);
    shared.meters.busy.increment(1.0);
    // Waited until claimed: the clock is read once per claim, not per job.
    shared.meters.wait.record(
        (claimed_at - job.run_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64(),
    );
    let span = job_span(&job);
    let attempt = job.attempt;
    let max_attempts = job.max_attempts;
    let snoozes = job.snoozes;
    let started = std::time::Instant::now();
    let ctx = JobContext::new(Arc::new(job), token, shared.store.clone(), cancel.clone());
    // Polled in place: dropping it stops the handler; a panic becomes the attempt's error.
    let run = CatchUnwind(handler.call(ctx)).instrument(span.clone());
    tokio::pin!(run);
    let outcome = tokio::select! {
        result = &mut run => match result {
            Ok(Ok(payload)) => Outcome::Succeeded(payload),
            Ok(Err(error)) => match error.into_parts() {
                (Retry::Snooze(delay), _) if snoozes < shared.config.max_snoozes => Outcome::Snoozed(delay),
                (Retry::Snooze(delay), _) => Outcome::Failed(Retry::After(delay), JobError::new(format!(
                    "snoozed {snoozes} times, the most its queue allows (max_snoozes = {})", shared.config.max_snoozes
                ))),
                (retry, error) => Outcome::Failed(retry, error),
            },
            Err(panic) => Outcome::Failed(Retry::Backoff, JobError::new(format!("the handler panicked: {panic}"))),
        },
        () = tokio::time::sleep(timeout) => {
            cancel.cancel();
            shared.meters.timed_out.increment(1);
            Outcome::Failed(Retry::Backoff, JobError::new(format!("timed out after {}", humanize(timeout))))
        }
        () = cancel.cancelled() => Outcome::Abandoned,
        () = hard_stop.cancelled() => {
            cancel.cancel();
            Outcome::Release
        }
    };
    tracked.reporting();
    shared.meters.busy.decrement(1.0);
    span.in_scope(|| observe(shared, &outcome, started.elapsed(), attempt));
    let reporting = shared.reporting.clone().acquire_owned().await;
    drop(permit);
    let dead = dead_if_failed(&outcome, attempt, max_attempts);
    if report(shared, id, token, attempt, outcome).await {
        count_failure(shared, dead);
    }
    drop(tracked);
    drop(reporting);
}

/// The span an attempt of `job` runs in, continuing the trace of the request that submitted it.
fn job_span(job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        job.id = %job.id,
        queue = %job.queue,
        kind = %job.kind,
        attempt = job.attempt,
        tenant = job.tenant.as_deref().unwrap_or("")
    );
    crate::telemetry::continue_job(&span, &job.headers);
    span
}

/// For a failed attempt, whether the store will dead-letter the job (`Some(true)`) or keep it
/// for another attempt (`Some(false)`); `None` for any other outcome.
fn dead_if_failed(outcome: &Outcome, attempt: u32, max_attempts: u32) -> Option<bool> {
    match outcome {
        Outcome::Failed(retry, _) => Some(matches!(retry, Retry::Never) || attempt >= max_attempts),
        _ => None,
    }
}

/// Counts where a failed attempt's job went, once the store has recorded it.
fn count_failure(shared: &Shared, dead: Option<bool>) {
    match dead {
        Some(true) => shared.meters.dead_lettered.increment(1),
        Some(false) => shared.meters.retried.increment(1),
        None => {}
    }
}

/// Counts and logs how an attempt that ran for `elapsed` ended.
fn observe(shared: &Shared, outcome: &Outcome, elapsed: Duration, attempt: u32) {
    match outcome {
        Outcome::Succeeded(_) => {
            shared.meters.succeeded.increment(1);
            shared.meters.duration.record(elapsed.as_secs_f64());
            tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "job succeeded");
        }
        Outcome::Failed(_, error) => {
            shared.meters.failed.increment(1);
            shared.meters.duration.record(elapsed.as_secs_f64());
            tracing::warn!(error = %error.message, attempt, "job attempt failed");
        }
        Outcome::Snoozed(delay) => {
            shared.meters.snoozed.increment(1);
            tracing::debug!(snooze_ms = delay.as_millis() as u64, "job snoozed");
        }
        Outcome::Abandoned => tracing::info!("job cancelled or its lease lost; outcome discarded"),
        Outcome::Release => tracing::info!("job released for another worker"),
    }
}

/// Runs one batch of a consumer and records each message's outcome.
async fn execute_batch(
    shared: &Arc<Shared>,
    handler: &Arc<dyn BatchHandler>,
    jobs: Vec<Job>,
    hard_stop: CancellationToken,
) {
    let cancel = CancellationToken::new();
    let leases: Vec<(JobId, u64, u32, u32)> = jobs
        .iter()
        .filter_map(|job| Some((job.id, job.lease_token()?, job.attempt, job.max_attempts)))
        .collect();
    let mut tracked = Tracked::new(
        shared,
        leases
            .iter()
            .map(|(id, token, _, _)| (*id, *token))
            .collect(),
        &cancel,
    );
    shared.meters.started.increment(jobs.len() as u64);
    shared.meters.busy.increment(jobs.len() as f64);
    let messages: Vec<Message> = jobs.iter().map(Message::of).collect();
    let batch = MessageBatch::new(shared.config.queue.clone(), messages.clone());
    let span = tracing::info_span!("batch", queue = %shared.config.queue, size = jobs.len());
    let run = CatchUnwind(handler.call(batch)).instrument(span.clone());
    tokio::pin!(run);
    // What happens to the messages the handler did not decide for.
    let fallback = tokio::select! {
        result = &mut run => match result {
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(error)) => Some(Err(error.into_parts())),
            Err(panic) => Some(Err((Retry::Backoff, JobError::new(format!("the handler panicked: {panic}"))))),
        },
        () = tokio::time::sleep(shared.config.timeout) => {
            cancel.cancel();
            shared.meters.timed_out.increment(jobs.len() as u64);
            Some(Err((Retry::Backoff, JobError::new(format!("the batch timed out after {}", humanize(shared.config.timeout))))))
        }
        () = cancel.cancelled() => None,
        () = hard_stop.cancelled() => {
            cancel.cancel();
            for (id, token, _, _) in &leases {
                report(shared, *id, *token, 0, Outcome::Release).await;
            }
            None
        }
    };
    tracked.reporting();
    shared.meters.busy.decrement(jobs.len() as f64);
    let Some(fallback) = fallback else { return };
    for ((id, token, attempt, max_attempts), message) in leases.into_iter().zip(&messages) {
        let outcome = match (message.decision(), &fallback) {
            (Some(Decision::Ack), _) | (None, Ok(())) => Outcome::Succeeded(Payload::null()),
            (Some(Decision::Retry(delay)), _) => {
                let retry = delay.map_or(Retry::Backoff, Retry::After);
                Outcome::Failed(retry, JobError::new("retried by the consumer"))
            }
            (None, Err((retry, error))) => Outcome::Failed(*retry, error.clone()),
        };
        match &outcome {
            Outcome::Succeeded(_) => shared.meters.succeeded.increment(1),
            _ => shared.meters.failed.increment(1),
        }
        let dead = dead_if_failed(&outcome, attempt, max_attempts);
        if report(shared, id, token, attempt, outcome).await {
            count_failure(shared, dead);
        }
        tracked.done(id);
    }
}

/// Records an outcome in the store, retrying while the store is unreachable: an outcome is
/// never dropped silently. A refused lease ends the matter (the job is someone else's now).
/// Whether the store recorded it.
async fn report(shared: &Shared, id: JobId, token: u64, attempt: u32, outcome: Outcome) -> bool {
    let mut delay = Duration::from_millis(50);
    let mut failing_since = None;
    loop {
        let at = now();
        let result = match &outcome {
            Outcome::Succeeded(payload) => {
                shared.store.complete(id, token, payload.clone(), at).await
            }
            Outcome::Failed(retry, error) => {
                let then = match retry {
                    Retry::Never => AfterFailure::Dead,
                    // Saturating: a delay past the calendar's end waits until its end. (A
                    // snooze that reaches here is a consumer's or one past `max_snoozes`:
                    // another attempt after its delay.)
                    Retry::After(delay) | Retry::Snooze(delay) => AfterFailure::Retry {
                        at: crate::store::after(at, *delay),
                    },
                    Retry::Backoff => AfterFailure::Retry {
                        at: crate::store::after(at, shared.config.retry.delay(attempt)),
                    },
                };
                shared.store.fail(id, token, error.clone(), then, at).await
            }
            Outcome::Release => shared.store.release(id, token, at).await,
            Outcome::Snoozed(delay) => {
                let detail = format!("for {}", humanize(*delay));
                shared
                    .store
                    .snooze(id, token, crate::store::after(at, *delay), &detail, at)
                    .await
            }
            Outcome::Abandoned => return false,
        };
        match result {
            Ok(()) => {
                if let Some(since) = failing_since {
                    tracing::info!(job.id = %id, waited_ms = std::time::Instant::elapsed(&since).as_millis() as u64, "job outcome recorded after the store recovered");
                }
                return true;
            }
            Err(Error::LeaseLost(_) | Error::NotFound(_)) => {
                tracing::warn!(job.id = %id, "job outcome refused: the lease was lost (the job was recovered or cancelled)");
                shared.meters.lease_lost.increment(1);
                return false;
            }
            Err(err) => {
                if failing_since.is_none() {
                    tracing::error!(job.id = %id, error = %err, "cannot record the job's outcome; retrying with backoff");
                    failing_since = Some(std::time::Instant::now());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Extends the leases of running jobs; stops jobs that were cancelled or lost.
async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let period = (shared.config.lease / 3).max(Duration::from_millis(10));
    let started_at = now();
    // The dashboard lists the pool while its entry is renewed (each period, living three).
    let announce_every = period.max(Duration::from_secs(1));
    let mut announced: Option<std::time::Instant> = None;
    loop {
        if announced.is_none_or(|at| at.elapsed() >= announce_every) {
            let info = crate::registry::WorkerInfo {
                worker: shared.worker.clone(),
                task: shared.config.task.clone(),
                queue: shared.config.queue.clone(),
                concurrency: shared
                    .concurrency
                    .load(std::sync::atomic::Ordering::Relaxed),
                busy: shared
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|job| job.reporting_since.is_none())
                    .count(),
                started_at,
                seen_at: now(),
            };
            if let Err(err) =
                crate::registry::announce(&shared.store, &info, announce_every * 3).await
            {
                tracing::debug!(error = %err, "announcing the worker pool failed");
            }
            announced = Some(std::time::Instant::now());
        }
        tokio::select! {
            () = tokio::time::sleep(period.min(announce_every)) => {}
            () = stop.cancelled() => {
                let _ = crate::registry::withdraw(&shared.store, &shared.worker, &shared.config.task).await;
                return;
            }
        }
        // Outcomes on their way are renewed only once they have waited a period: most are
        // recorded well within it.
        let leases: Vec<(JobId, u64)> = shared
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, f)| f.reporting_since.is_none_or(|at| at.elapsed() >= period))
            .map(|(id, f)| (*id, f.token))
            .collect();
        if leases.is_empty() {
            continue;
        }
        match shared
            .store
            .heartbeat(&leases, shared.config.lease, now())
            .await
        {
            Ok(statuses) => {
                let in_flight = shared.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                for ((id, _), status) in leases.iter().zip(statuses) {
                    // A job reporting its outcome hears about a lost lease from the store.
                    if status != LeaseStatus::Extended
                        && let Some(job) = in_flight.get(id)
                        && job.reporting_since.is_none()
                    {
                        tracing::info!(job.id = %id, ?status, "stopping a job whose lease is no longer held");
                        if status == LeaseStatus::Lost {
                            shared.meters.lease_lost.increment(1);
                        }
                        job.cancel.cancel();
                    }
                }
            }
            Err(err) => {
                tracing::warn!(task = %shared.config.task, error = %err, "heartbeat failed; leases may lapse if the store stays unreachable")
            }
        }
    }
}

/// Runs a future, turning a panic while polling it into the panic's message.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(inner).poll(cx)
        })) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => std::task::Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
