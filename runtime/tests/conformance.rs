#![allow(unreachable_pub, clippy::unwrap_used)] // shared test bodies, not a public API
//! The store conformance suite: every behaviour in `conformance/behaviours.rs`, run against
//! every store — memory, SQLite, Redis and a three-master Redis Cluster the suite starts itself.
//!
//! Redis trials need a Redis (`RAINDROP_TEST_REDIS`, default `redis://127.0.0.1:6379`); without
//! one they are skipped with a notice, unless `RAINDROP_REQUIRE_REDIS=1` (as in CI), which makes
//! a missing Redis a failure. `RAINDROP_TEST_CLUSTER=0` leaves the cluster out.

mod conformance {
    pub mod behaviours;
}
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use conformance::behaviours::{self, S};
use libtest_mimic::{Arguments, Trial};
use raindrop::store::Store;

type Body = fn(S) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every behaviour, by name.
macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        const BEHAVIOURS: &[(&str, Body)] = &[$(
            (stringify!($name), |store| Box::pin(behaviours::$name(store))),
        )*];
    };
}

behaviours!(
    enqueue_then_get_returns_the_job,
    a_claimed_job_arrives_byte_for_byte,
    a_flooding_tenant_does_not_starve_another,
    fair_claiming_keeps_priorities_and_untenanted_jobs,
    a_tenant_at_its_running_limit_waits,
    thirty_two_submitters_at_quota_minus_one_admit_exactly_the_quota,
    a_tenants_listing_and_count_cover_its_jobs_in_every_state,
    resubmitting_a_job_id_answers_duplicate,
    idempotency_keys_are_scoped_by_tenant,
    fifo_within_a_priority,
    higher_priority_runs_first,
    equal_priority_orders_by_run_time_then_insertion,
    delayed_job_is_not_claimed_early,
    promote_marks_due_jobs_queued,
    claim_takes_at_most_the_limit,
    claim_leases_and_counts_the_attempt,
    queues_are_isolated,
    complete_stores_the_result,
    complete_with_a_stale_token_is_refused,
    failing_with_retry_schedules_the_next_attempt,
    out_of_attempts_becomes_a_dead_letter,
    a_fatal_failure_dead_letters_at_once,
    fail_with_a_stale_token_is_refused,
    heartbeat_extends_the_lease,
    heartbeat_reports_a_lost_lease,
    expired_lease_returns_the_job_to_its_queue,
    expired_lease_without_attempts_left_is_dead,
    a_recovered_jobs_old_token_is_fenced_off,
    release_does_not_burn_an_attempt,
    cancel_a_queued_job,
    cancel_a_scheduled_job,
    cancel_a_running_job_revokes_its_lease,
    cancel_a_finished_or_unknown_job,
    idempotency_key_dedupes_across_enqueues,
    idempotency_key_dedupes_within_a_batch,
    idempotency_keys_are_per_queue,
    batch_enqueue_adds_every_job,
    the_event_feed_pages_through_batches_without_gaps_or_repeats,
    a_retried_jobs_attempts_list_each_outcome,
    dead_letters_list_retry_and_purge,
    only_dead_letters_can_be_retried,
    pause_stops_claims_and_resume_restarts_them,
    kv_put_get_delete,
    kv_entries_expire,
    kv_metadata_round_trips,
    kv_list_pages_by_prefix_in_key_order,
    list_filters_and_pages_newest_first,
    list_cursor_is_stable_while_jobs_arrive,
    counts_per_state_and_queue,
    oldest_ready_job_age,
    events_follow_the_lifecycle_in_order,
    status_document_follows_every_transition,
    cron_tick_is_claimed_once,
    a_lease_has_one_holder_at_a_time,
    the_holder_renews_its_lease,
    a_lapsed_lease_is_taken_over,
    concurrent_claimers_never_get_the_same_job,
    retention_removes_finished_records,
    retention_removes_expired_entries_and_old_events,
    progress_needs_the_current_lease,
    the_status_namespace_lists_job_documents_beside_other_entries,
    jobs_from_lists_every_queue_and_state_in_id_order,
    a_status_listing_pages_past_expired_documents,
    a_finished_jobs_status_expires_after_the_cache_ttl,
    counts_stay_true_through_every_kind_of_transition,
    rate_limits_refill_and_keep_keys_apart,
    a_queues_concurrency_limit_holds_whatever_ends_its_jobs,
    a_keys_concurrency_limit_holds_without_holding_up_other_keys,
    a_tenants_keys_share_its_running_limit_and_its_turns,
    a_rate_limited_queue_starts_no_more_than_its_bucket_holds,
    a_snoozed_job_runs_later_without_spending_an_attempt,
    a_unique_job_is_the_existing_one_while_its_rule_holds,
    a_trailing_debounce_runs_the_latest_job_of_a_burst_once_it_is_quiet,
    a_leading_debounce_runs_the_first_job_and_drops_the_rest_of_its_window,
    the_jobs_a_limit_holds_back_are_counted,
);

/// Which store a trial runs against.
#[derive(Clone)]
enum Target {
    Memory,
    Sqlite,
    Redis(String),
    Cluster(Arc<redis_support::Cluster>),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Memory => "memory",
            Target::Sqlite => "sqlite",
            Target::Redis(_) => "redis",
            Target::Cluster(_) => "redis_cluster",
        }
    }

    /// Runs `body` against a fresh store of this kind.
    fn run(&self, body: Body) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            match self {
                Target::Memory => {
                    body(support::memory()).await;
                }
                Target::Sqlite => {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("raindrop.db");
                    body(support::sqlite(&path).await).await;
                }
                Target::Redis(url) => {
                    let prefix = redis_support::Prefix::new(url);
                    redis_trial(&prefix, body).await;
                }
                Target::Cluster(cluster) => {
                    let prefix = redis_support::Prefix::on_cluster(cluster);
                    redis_trial(&prefix, body).await;
                }
            }
        });
    }
}

async fn redis_trial(prefix: &redis_support::Prefix, body: Body) {
    let store: Arc<dyn Store> = Arc::new(
        // The behaviours simulate time: leases follow the `now` each call passes.
        raindrop::store::redis::RedisStore::open(&format!("{}&clock=caller", prefix.store_url()))
            .await
            .unwrap(),
    );
    body(store).await;
}

fn main() {
    let args = Arguments::from_args();
    let mut targets = vec![Target::Memory, Target::Sqlite];
    let mut cluster = None;
    if let Some(url) = redis_support::available() {
        targets.push(Target::Redis(url));
        if std::env::var("RAINDROP_TEST_CLUSTER").is_ok_and(|v| v == "0") {
            eprintln!("note: RAINDROP_TEST_CLUSTER=0: skipping the Redis Cluster trials");
        } else if !args.list {
            let started = Arc::new(redis_support::Cluster::start());
            assert_eq!(started.len(), 3);
            cluster = Some(started.clone());
            targets.push(Target::Cluster(started));
        }
    }
    let trials = targets
        .iter()
        .flat_map(|target| {
            BEHAVIOURS.iter().map(move |(name, body)| {
                let (target, body) = (target.clone(), *body);
                Trial::test(format!("{}::{name}", target.name()), move || {
                    target.run(body);
                    Ok(())
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // `exit` runs no destructors: stop the cluster's servers first.
    drop(targets);
    drop(cluster);
    conclusion.exit();
}
