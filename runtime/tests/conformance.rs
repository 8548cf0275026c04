#![allow(unreachable_pub, clippy::unwrap_used)] // shared test bodies, not a public API
//! The store conformance suite: every behaviour in `conformance/behaviours.rs`, run against
//! every store.

mod conformance {
    pub mod behaviours;
}

use std::sync::Arc;
use std::time::Duration;

use conformance::behaviours::{self, STATUS};
use raindrop::store::{StatusCache, Store};

fn status() -> Option<StatusCache> {
    Some(StatusCache {
        namespace: STATUS.into(),
        ttl: Some(Duration::from_secs(3600)),
    })
}

/// Instantiates every behaviour as a test in module `$store`, each with a fresh store from `$open`.
macro_rules! conformance_suite {
    ($store:ident, $open:expr) => {
        mod $store {
            use super::*;
            conformance_suite!(@each $open;
                enqueue_then_get_returns_the_job,
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
                concurrent_claimers_never_get_the_same_job,
                retention_removes_finished_records,
                retention_removes_expired_entries_and_old_events,
                progress_needs_the_current_lease,
                the_status_namespace_lists_job_documents_beside_other_entries,
                a_finished_jobs_status_expires_after_the_cache_ttl,
                counts_stay_true_through_every_kind_of_transition,
            );
        }
    };
    (@each $open:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = $open;
            behaviours::$name(store).await;
        }
    )*};
}

conformance_suite!(memory, {
    let store: Arc<dyn Store> = Arc::new(raindrop::store::memory::MemoryStore::new(status()));
    (store, ())
});

conformance_suite!(sqlite, {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        raindrop::store::sqlite::SqliteStore::open(&dir.path().join("raindrop.db"), status())
            .await
            .unwrap(),
    );
    (store, dir)
});
