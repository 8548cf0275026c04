//! The monitor: recovery of lapsed leases, retention clean-up, queue metrics, alert rules, and
//! lifecycle events delivered to user handlers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use raindrop_codegen::model::{self, AlertMetric};
use tokio_util::sync::CancellationToken;

pub use crate::alert::{AlertState, Alerts};
use crate::event::{Event, EventKind};
use crate::job::{Timestamp, now};
use crate::store::{RetentionPolicy, Store};

/// What a monitor hands its handler: a lifecycle event of a job, or an alert that started or
/// stopped firing. An `#[observer]` function that takes `Observed` receives both; one that
/// takes [`Event`] receives the events only, one that takes [`AlertState`] the alerts only.
#[derive(Debug, Clone)]
pub enum Observed {
    /// A job's lifecycle event.
    Event(Event),
    /// An alert rule that started firing (`firing`) or resolved.
    Alert(AlertState),
}

/// Receives lifecycle events and alerts of the queues an observer monitors.
#[async_trait]
pub trait ObserverHandler: Send + Sync + 'static {
    /// Called for each lifecycle event, in order.
    async fn on_event(&self, event: &Event);

    /// Called when an alert is raised or resolved.
    async fn on_alert(&self, alert: &AlertState) {
        let _ = alert;
    }
}

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The observer's name.
    pub name: String,
    /// The queues it watches.
    pub queues: Vec<String>,
    /// Its alert rules.
    pub alerts: Vec<model::Alert>,
    /// Where its alerts are sent.
    pub sinks: Vec<model::Sink>,
    /// How often recovery and metrics run.
    pub tick: Duration,
    /// How often retention runs.
    pub retention_every: Duration,
    /// Retention per queue.
    pub retention: BTreeMap<String, RetentionPolicy>,
    /// How long events are kept.
    pub event_horizon: Duration,
    /// What claims of each queue with limits observe: their held jobs are published.
    pub limits: BTreeMap<String, crate::store::ClaimLimits>,
}

/// Terminal and retry events in the recent window, and the waits of attempts started in it,
/// per queue.
#[derive(Default)]
struct Window {
    events: VecDeque<(Timestamp, String, EventKind)>,
    /// When an attempt started, its queue, and how long it waited past its due time (s).
    waits: VecDeque<(Timestamp, String, f64)>,
}

impl Window {
    fn push(&mut self, event: &Event) {
        if matches!(
            event.kind,
            EventKind::Succeeded
                | EventKind::Failed
                | EventKind::DeadLettered
                | EventKind::Retrying
        ) {
            self.events
                .push_back((event.at, event.queue.clone(), event.kind));
        }
    }

    fn trim(&mut self, horizon: Timestamp) {
        while self.events.front().is_some_and(|(at, _, _)| *at < horizon) {
            self.events.pop_front();
        }
        while self.waits.front().is_some_and(|(at, _, _)| *at < horizon) {
            self.waits.pop_front();
        }
    }

    /// The 99th percentile (nearest rank) of the waits of `queue`'s attempts started since
    /// `since`, in seconds; 0 when none started.
    fn wait_p99(&self, queue: &str, since: Timestamp) -> f64 {
        let mut waits: Vec<f64> = self
            .waits
            .iter()
            .filter(|(at, q, _)| *at >= since && q == queue)
            .map(|(_, _, w)| *w)
            .collect();
        if waits.is_empty() {
            return 0.0;
        }
        waits.sort_by(f64::total_cmp);
        let rank = (waits.len() as f64 * 0.99).ceil() as usize;
        waits[rank.clamp(1, waits.len()) - 1]
    }

    fn count(&self, queue: &str, kind: EventKind, since: Timestamp) -> usize {
        self.events
            .iter()
            .filter(|(at, q, k)| *at >= since && q == queue && *k == kind)
            .count()
    }
}

/// How many ticks a monitor's lead on a queue's gauges outlives its last renewal: a process
/// that stops renewing (killed, or cut off from the store) hands the gauges over within this.
const LEAD_TICKS: u32 = 3;

/// This process's name as a lease holder: unique per process, shared by its monitors (they
/// publish to the same recorder, so any of them may publish what another in the process leads).
fn holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| format!("{}/{}", std::process::id(), uuid::Uuid::now_v7()))
}

/// The lease whose holder publishes `queue`'s gauges.
fn gauge_lease(queue: &str) -> String {
    format!("queue-gauges:{queue}")
}

/// The queues whose gauges this monitor has published since it last led them.
#[derive(Default)]
struct Published(BTreeSet<String>);

impl Published {
    /// Publishes `queue`'s gauges when this process leads them; when it has lost the lead,
    /// sets what it had published to 0 once, so that `sum` and `max` across processes stay right.
    async fn publish(
        &mut self,
        store: &Arc<dyn Store>,
        config: &MonitorConfig,
        queue: &str,
        counts: &crate::store::StateCounts,
        age: f64,
        at: Timestamp,
    ) {
        let ttl = config.tick.saturating_mul(LEAD_TICKS);
        let leads = match store.try_lead(&gauge_lease(queue), holder(), ttl, at).await {
            Ok(leads) => leads,
            Err(err) => {
                tracing::warn!(observer = %config.name, queue, error = %err, "renewing the lead on the queue gauges failed");
                false
            }
        };
        if leads {
            self.0.insert(queue.to_owned());
        } else if !self.0.remove(queue) {
            return;
        }
        for state in crate::job::JobState::ALL {
            let value = if leads { counts.get(state) as f64 } else { 0.0 };
            metrics::gauge!("raindrop_queue_jobs", "queue" => queue.to_owned(), "state" => state.as_str())
                .set(value);
        }
        metrics::gauge!("raindrop_queue_oldest_ready_age_seconds", "queue" => queue.to_owned())
            .set(if leads { age } else { 0.0 });
        if let Some(limits) = config.limits.get(queue) {
            let held = if leads {
                match store.held_by_limits(queue, *limits, at).await {
                    Ok(held) => held as f64,
                    Err(err) => {
                        tracing::warn!(observer = %config.name, queue, error = %err, "counting the jobs held by limits failed");
                        return;
                    }
                }
            } else {
                0.0
            };
            metrics::gauge!("raindrop_queue_held_by_limits", "queue" => queue.to_owned()).set(held);
        }
    }
}

/// Runs the monitor until `stop`.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    config: MonitorConfig,
    handler: Option<Arc<dyn ObserverHandler>>,
    alerts: Arc<Alerts>,
    webhooks: Vec<crate::sink::Webhook>,
    mut cursor: u64,
    stop: CancellationToken,
) {
    tracing::info!(observer = %config.name, queues = ?config.queues, "monitor started");
    let sinks = crate::sink::Sinks::start(webhooks);
    let wants_waits = config
        .alerts
        .iter()
        .any(|a| a.metric == AlertMetric::WaitP99);
    let mut window = Window::default();
    let longest_window = config
        .alerts
        .iter()
        .map(|a| a.window.get())
        .max()
        .unwrap_or_default();
    let mut last_retention: Option<std::time::Instant> = None;
    let mut published = Published::default();
    loop {
        let at = now();
        recover(&store, &config).await;
        if last_retention.is_none_or(|t| t.elapsed() >= config.retention_every) {
            retain(&store, &config, at).await;
            last_retention = Some(std::time::Instant::now());
        }
        // Tail the event feed: handlers and windowed alerts both read it.
        loop {
            match store.events_after(cursor, 1000).await {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    for event in &events {
                        cursor = event.seq;
                        if !config.queues.contains(&event.queue) {
                            continue;
                        }
                        window.push(event);
                        if wants_waits
                            && event.kind == EventKind::Started
                            && let Some(wait) = wait_of(&store, event).await
                        {
                            window
                                .waits
                                .push_back((event.at, event.queue.clone(), wait));
                        }
                        if let Some(handler) = &handler {
                            handler.on_event(event).await;
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(observer = %config.name, error = %err, "reading the event feed failed");
                    break;
                }
            }
        }
        window.trim(crate::store::before(at, longest_window));
        measure(
            &store,
            &config,
            &window,
            &mut published,
            &alerts,
            handler.as_ref(),
            &sinks,
            at,
        )
        .await;
        tokio::select! {
            () = tokio::time::sleep(config.tick) => {}
            () = stop.cancelled() => break,
        }
    }
    sinks.finish(SINK_GRACE).await;
    tracing::info!(observer = %config.name, "monitor stopped");
}

/// How long a stopping monitor keeps delivering the alerts its sinks have queued.
const SINK_GRACE: Duration = Duration::from_secs(10);

/// How long the attempt `event` started waited past its due time, in seconds; none when the
/// job has moved on to another attempt (or is gone) by the time the monitor reads it.
async fn wait_of(store: &Arc<dyn Store>, event: &Event) -> Option<f64> {
    let job = store.get(event.job).await.ok().flatten()?;
    if job.attempt != event.attempt {
        return None;
    }
    let waited = (event.at - job.run_at).to_std().unwrap_or_default();
    Some(waited.as_secs_f64())
}

async fn recover(store: &Arc<dyn Store>, config: &MonitorConfig) {
    match store.recover(now()).await {
        Ok(recovered) => {
            for job in recovered {
                metrics::counter!("raindrop_jobs_recovered_total", "queue" => job.queue.clone())
                    .increment(1);
                if job.state == crate::job::JobState::Dead {
                    metrics::counter!("raindrop_jobs_dead_lettered_total", "queue" => job.queue.clone())
                        .increment(1);
                }
                tracing::warn!(job.id = %job.id, queue = %job.queue, state = %job.state, "recovered a job whose worker's lease lapsed");
            }
        }
        Err(err) => {
            tracing::warn!(observer = %config.name, error = %err, "lease recovery failed; will retry")
        }
    }
    if let Err(err) = store.promote(now()).await {
        tracing::warn!(observer = %config.name, error = %err, "promoting due jobs failed; will retry");
    }
}

async fn retain(store: &Arc<dyn Store>, config: &MonitorConfig, at: Timestamp) {
    let default = config
        .retention
        .values()
        .next()
        .copied()
        .unwrap_or(RetentionPolicy {
            succeeded: Duration::from_secs(86_400),
            failed: Duration::from_secs(7 * 86_400),
            dead: Duration::from_secs(14 * 86_400),
        });
    match store
        .purge_expired(&config.retention, default, config.event_horizon, at)
        .await
    {
        Ok(purged) if purged.jobs + purged.kv_entries + purged.events > 0 => {
            tracing::info!(observer = %config.name, jobs = purged.jobs, kv_entries = purged.kv_entries, events = purged.events, "retention removed expired records");
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(observer = %config.name, error = %err, "retention clean-up failed; will retry")
        }
    }
}

/// Publishes queue gauges (while this process leads them) and evaluates alert rules.
#[allow(clippy::too_many_arguments)]
async fn measure(
    store: &Arc<dyn Store>,
    config: &MonitorConfig,
    window: &Window,
    published: &mut Published,
    alerts: &Alerts,
    handler: Option<&Arc<dyn ObserverHandler>>,
    sinks: &crate::sink::Sinks,
    at: Timestamp,
) {
    let counts = match store.counts().await {
        Ok(counts) => counts,
        Err(err) => {
            tracing::warn!(observer = %config.name, error = %err, "reading queue counts failed");
            return;
        }
    };
    let workers = if config
        .alerts
        .iter()
        .any(|a| a.metric == AlertMetric::WorkersAlive)
    {
        match crate::registry::workers(store, at).await {
            Ok(workers) => Some(workers),
            Err(err) => {
                tracing::warn!(observer = %config.name, error = %err, "reading the live worker pools failed");
                None
            }
        }
    } else {
        None
    };
    for queue in &config.queues {
        let queue_counts = counts.get(queue).cloned().unwrap_or_default();
        let oldest = store.oldest_ready(queue, at).await.ok().flatten();
        let age = oldest.map_or(0.0, |t| (at - t).to_std().unwrap_or_default().as_secs_f64());
        published
            .publish(store, config, queue, &queue_counts, age, at)
            .await;

        for rule in &config.alerts {
            let since = crate::store::before(at, rule.window.get());
            let succeeded = window.count(queue, EventKind::Succeeded, since) as f64;
            let failed = window.count(queue, EventKind::Failed, since) as f64;
            let value = match rule.metric {
                AlertMetric::WorkersAlive => match &workers {
                    Some(workers) => workers.iter().filter(|w| &w.queue == queue).count() as f64,
                    // Unknown: neither fire nor resolve on a failed read.
                    None => continue,
                },
                AlertMetric::RetryRate => {
                    window.count(queue, EventKind::Retrying, since) as f64
                        / rule.window.get().as_secs_f64().max(1.0)
                }
                AlertMetric::WaitP99 => window.wait_p99(queue, since),
                AlertMetric::QueueDepth => queue_counts.waiting() as f64,
                AlertMetric::OldestJobAge => age,
                AlertMetric::ErrorRate if succeeded + failed > 0.0 => failed / (succeeded + failed),
                AlertMetric::ErrorRate => 0.0,
                AlertMetric::DeadLetters => {
                    window.count(queue, EventKind::DeadLettered, since) as f64
                }
                AlertMetric::Throughput => succeeded / rule.window.get().as_secs_f64().max(1.0),
            };
            let changed = alerts.update(&config.name, rule, queue, value, at);
            if let Some(state) = &changed
                && let Err(err) = crate::registry::record_alert(store, state).await
            {
                tracing::debug!(error = %err, "recording the alert's standing failed");
            }
            if let Some(state) = changed {
                if state.firing {
                    tracing::warn!(observer = %state.observer, alert = %state.name, queue = %state.queue, severity = state.severity.as_str(), value = state.value, threshold = state.threshold, "alert raised");
                } else {
                    tracing::info!(observer = %state.observer, alert = %state.name, queue = %state.queue, value = state.value, "alert resolved");
                }
                metrics::gauge!("raindrop_alert_firing", "alert" => state.name.clone(), "queue" => state.queue.clone())
                    .set(if state.firing { 1.0 } else { 0.0 });
                sinks.send(&state);
                if let Some(handler) = handler {
                    handler.on_alert(&state).await;
                }
            }
        }
    }
}
