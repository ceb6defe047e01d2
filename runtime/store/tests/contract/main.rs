//! The storage contract's conformance suite: one set of tests written against
//! [`sluice_store::Store`] and its traits, run on every backend.
//!
//! Each test is an `async fn(site: &dyn Site)`; [`contract_tests!`] instantiates it
//! once per backend, each in a place of its own (a directory, a database schema).
//! A backend joins the suite with one line in the `backends` list at the bottom.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed expectation fails the test"
)]

mod bulk;
mod catalog;
mod cluster;
mod faults;
mod log;
mod run_logs;
mod store;

use sluice_store::Store;
use sluice_store::postgres::PgStore;
pub use sluice_testkit::events::{begun, checkpoint, run_id, scheduled};
use sluice_testkit::pg::TestSchema;

/// Where one test's store lives. Opening it again after the last [`Store`] opened
/// there is dropped reopens the same data, as a restarted node would.
#[async_trait::async_trait]
pub trait Site: Send + Sync {
    /// Opens (or reopens) the store.
    async fn open(&self) -> Store;
}

/// The embedded sled backend, in a directory of its own.
pub struct SledSite(tempfile::TempDir);

impl SledSite {
    async fn new() -> Self {
        SledSite(tempfile::tempdir().unwrap())
    }
}

#[async_trait::async_trait]
impl Site for SledSite {
    async fn open(&self) -> Store {
        Store::open(self.0.path()).unwrap()
    }
}

/// The PostgreSQL backend, in a schema of its own of the test database.
pub struct PgSite {
    schema: TestSchema,
    dir: tempfile::TempDir,
}

impl PgSite {
    async fn new() -> Self {
        PgSite {
            schema: TestSchema::create().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

#[async_trait::async_trait]
impl Site for PgSite {
    async fn open(&self) -> Store {
        let backend = PgStore::connect(self.schema.url()).await.unwrap();
        Store::with_backend(std::sync::Arc::new(backend), self.dir.path())
    }
}

/// Instantiates every test for every backend: `mod <backend> { #[tokio::test] fn
/// <test>() }`, each test on a new site of that backend.
macro_rules! contract_tests {
    (backends: [$($backend:ident => $site:expr),* $(,)?], tests: $tests:tt) => {
        $( contract_tests!(@backend $backend, $site, $tests); )*
    };
    (@backend $backend:ident, $site:expr, [$($module:ident :: $name:ident),* $(,)?]) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let site = $site.await;
                    crate::$module::$name(&site).await;
                }
            )*
        }
    };
}

contract_tests! {
    backends: [
        sled => SledSite::new(),
        postgres => PgSite::new(),
    ],
    tests: [
        store::a_batch_and_its_checkpoint_commit_together_and_survive_a_reopen,
        store::a_bad_record_rejects_the_whole_batch_and_writes_nothing,
        store::a_completed_full_refresh_deletes_what_it_did_not_see,
        store::a_refresh_deletes_the_same_whether_completed_in_place_or_not,
        store::a_refused_append_leaves_the_hub_untouched,
        store::the_last_streams_completion_completes_the_run_in_the_same_commit,
        store::an_incremental_batch_moves_the_streams_cursor,
        store::the_feed_pages_in_commit_order_from_a_cursor,
        store::a_record_is_read_by_its_key_with_its_version,
        store::a_fire_and_its_document_commit_together,
        catalog::documents_are_put_replaced_listed_and_removed,
        catalog::bad_names_are_refused,
        run_logs::logs_are_bounded_per_run_and_filtered,
        faults::a_failed_commit_writes_nothing_and_the_next_one_lands,
        faults::an_unreadable_run_is_reported_and_others_read,
        log::append_read_fold_round_trip,
        log::invalid_appends_are_refused_and_write_nothing,
        log::scheduling_a_run_id_already_used_is_refused,
        log::group_commit_64_appenders_all_acknowledged_and_durable,
        log::survives_reopen_and_lists_in_flight_runs,
        log::index_queries,
        log::a_lease_is_taken_by_an_attempt_extended_by_heartbeats_and_released_by_its_end,
        log::a_conditional_append_fails_when_the_run_moved_on_and_writes_nothing,
        log::queued_appends_land_in_order_and_a_refused_one_takes_its_followers_down,
        log::a_queued_append_expecting_a_seq_the_log_moved_past_conflicts,
        log::held_events_wait_for_the_runs_next_append_or_their_release,
        log::runs_committed_together_list_in_order,
        log::a_run_dead_lettered_twice_is_listed_once,
        log::runs_dead_lettered_together_stay_listed_when_one_is_again,
        cluster::events_of_an_attempt_that_lost_the_run_are_fenced_off,
        cluster::on_a_shared_store_a_fire_creates_one_run,
        cluster::on_a_shared_store_a_run_starts_only_when_its_workflow_is_free,
        cluster::on_a_shared_store_a_run_starts_only_within_its_tenants_slots,
        store::a_batch_or_completion_of_a_fenced_attempt_is_refused_and_writes_nothing,
        bulk::catalog_kinds_are_listed_sorted_and_go_with_their_last_document,
        bulk::hub_streams_are_listed_with_every_stream_written,
        bulk::live_records_page_through_the_feed_each_record_once_at_its_latest,
        bulk::an_import_writes_changes_as_they_are_and_later_batches_follow_them,
        bulk::an_import_that_does_not_follow_its_records_is_refused_and_writes_nothing,
        bulk::a_store_copies_to_each_backend_and_verifies,
        bulk::a_copy_into_a_store_that_is_not_empty_is_refused_and_writes_nothing,
    ]
}
