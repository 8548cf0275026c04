//! The pages about what runs: processes and worker pools, scheduled tasks, alerts.

use axum::extract::State as Extract;
use maud::{Markup, html};

use super::Visitor;
use super::layout::{Result, duration, millis, page, utc};
use crate::job::now;
use crate::service::{Scope, State};

pub(super) async fn workers(Extract(state): Extract<State>, visitor: Visitor) -> Result<Markup> {
    visitor.caller.require(Scope::Read)?;
    let at = now();
    let store = state.control.engine().store();
    let mut pools = crate::registry::workers(store, at).await?;
    pools.sort_by(|a, b| (&a.queue, &a.worker).cmp(&(&b.queue, &b.worker)));
    let mut processes = crate::registry::processes(store, at).await?;
    processes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(page(
        "Workers",
        Some(5),
        visitor.logout().as_ref(),
        html! {
            p.muted { "Processes and worker pools that announced themselves in the last few seconds, from every process sharing the store." }
            h2 { "Processes" }
            table {
                tr { th { "process" } th { "roles" } th { "up since" } th { "last heartbeat" } }
                @for process in &processes {
                    tr {
                        td { code { (process.id) } }
                        td { (process.roles.join(", ")) }
                        td { (utc(process.started_at)) }
                        td { (duration(Some(millis(at - process.seen_at)))) " ago" }
                    }
                }
            }
            @if processes.is_empty() { p.muted { "No process runs workers, schedulers or monitors." } }
            h2 { "Worker pools" }
            table {
                tr { th { "worker" } th { "task" } th { "queue" } th { "running" } th { "up since" } th { "last heartbeat" } }
                @for pool in &pools {
                    tr {
                        td { code { (pool.worker) } }
                        td { (pool.task) }
                        td { (pool.queue) }
                        td {
                            meter min="0" max=(pool.concurrency) value=(pool.busy) { (pool.busy) }
                            " " (pool.busy) " / " (pool.concurrency)
                        }
                        td { (utc(pool.started_at)) }
                        td { (duration(Some(millis(at - pool.seen_at)))) " ago" }
                    }
                }
            }
            @if pools.is_empty() { p.muted { "No worker is running." } }
        },
    ))
}

pub(super) async fn schedules(Extract(state): Extract<State>, visitor: Visitor) -> Result<Markup> {
    visitor.caller.require(Scope::Read)?;
    let at = now();
    let engine = state.control.engine();
    let mut rows = Vec::new();
    for task in &engine.app().tasks {
        let raindrop_codegen::model::TaskRole::Cron { schedule, .. } = &task.role else {
            continue;
        };
        let parsed = crate::cron::Schedule::from(schedule.clone());
        let mut next = Vec::new();
        let mut from = at;
        while next.len() < 3 {
            let Some(tick) = parsed.next_after(from) else {
                break;
            };
            next.push(tick);
            from = tick;
        }
        let last = engine
            .store()
            .kv_get(crate::cron::CRON_RUNS_NAMESPACE, task.name.as_str(), at)
            .await?
            .and_then(|e| serde_json::from_slice::<crate::cron::CronRun>(&e.value).ok());
        rows.push((
            task.name.to_string(),
            schedule.as_str().to_owned(),
            next,
            last,
        ));
    }
    Ok(page(
        "Schedules",
        None,
        visitor.logout().as_ref(),
        html! {
            table {
                tr { th { "task" } th { "schedule" } th { "next runs" } th { "last run" } }
                @for (name, cron, next, last) in &rows {
                    tr {
                        td { (name) }
                        td { code { (cron) } }
                        td { @for tick in next { (utc(*tick)) br; } }
                        td {
                            @if let Some(run) = last {
                                (utc(run.scheduled_time)) ": " strong { (run.outcome) }
                                " after " (run.attempts) " attempt(s)"
                                @if let Some(e) = &run.error { br; span.muted { (e.message) } }
                            } @else { span.muted { "not run yet" } }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "The manifest declares no scheduled task." } }
        },
    ))
}

pub(super) async fn alerts(Extract(state): Extract<State>, visitor: Visitor) -> Result<Markup> {
    visitor.caller.require(Scope::Read)?;
    let mut alerts = crate::registry::alerts(state.control.engine().store(), now()).await?;
    alerts.sort_by(|a, b| (!a.firing, &a.name).cmp(&(!b.firing, &b.name)));
    Ok(page(
        "Alerts",
        Some(10),
        visitor.logout().as_ref(),
        html! {
            table {
                tr { th { "" } th { "alert" } th { "observer" } th { "queue" } th { "value" } th { "threshold" } th { "since" } }
                @for alert in &alerts {
                    tr {
                        td.state style=(if alert.firing { "color:#d1242f" } else { "color:#1a7f37" }) {
                            @if alert.firing { "firing" } @else { "resolved" }
                        }
                        td { (alert.name) }
                        td { (alert.observer) }
                        td { (alert.queue) }
                        td { (format!("{:.2}", alert.value)) }
                        td { (format!("{:.2}", alert.threshold)) }
                        td { (utc(alert.since)) }
                    }
                }
            }
            @if alerts.is_empty() { p.muted { "No alert has fired." } }
        },
    ))
}
