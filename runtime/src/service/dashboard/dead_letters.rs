//! The dead letters page: jobs that ran out of attempts, each with a retry button, and the
//! forms to retry them all or (admins) purge them.

use axum::extract::State as Extract;
use maud::{Markup, html};

use super::jobs::JobsQuery;
use super::layout::{Result, page};
use super::session::action;
use super::{PAGE, Query, Visitor};
use crate::service::jobs::parse_id;
use crate::service::{Scope, State};

pub(super) async fn dead_letters(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Query(query): Query<JobsQuery>,
) -> Result<Markup> {
    let logout = visitor.logout();
    let Visitor { caller, token, .. } = visitor;
    caller.require(Scope::Read)?;
    let queue = query.queue.filter(|q| !q.is_empty());
    let after = query.cursor.as_deref().map(parse_id).transpose()?;
    let listing = state
        .control
        .dead_letters(&caller.view(), queue, after, PAGE)
        .await?;
    let may_submit = caller.has(Scope::Submit);
    let admin = caller.has(Scope::Admin);
    Ok(page(
        "Dead letters",
        None,
        logout.as_ref(),
        html! {
            table {
                tr { th { "id" } th { "queue" } th { "kind" } th { "last error" } th { "finished" } th { "" } }
                @for job in &listing.items {
                    tr {
                        td { a href=(format!("/dashboard/jobs/{}", job.id)) { code { (job.id) } } }
                        td { (job.queue) }
                        td { (job.kind) }
                        td { @if let Some(e) = &job.error { (e.message) } }
                        td { @if let Some(t) = job.finished_at { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
                        td { @if may_submit { (action(&format!("/dashboard/jobs/{}/retry", job.id), "Retry", &token)) } }
                    }
                }
            }
            @if listing.items.is_empty() { p.muted { "No dead letters." } }
            @if let Some(cursor) = listing.next {
                p { a href=(format!("/dashboard/dead-letters?cursor={cursor}")) { "Next page →" } }
            }
            @if may_submit && !listing.items.is_empty() {
                p { (action("/dashboard/dead-letters/retry-all", "Retry all", &token)) }
            }
            @if admin && !listing.items.is_empty() {
                h2 { "Purge" }
                form method="post" action="/dashboard/dead-letters/purge" {
                    input type="hidden" name="csrf" value=(token.as_str());
                    label { input type="checkbox" name="confirm" value="yes"; " remove every dead letter for good" }
                    " "
                    button type="submit" { "Purge" }
                }
            }
        },
    ))
}
