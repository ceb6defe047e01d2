//! The node's rate limiter sharing its keys' budgets with the other nodes of its
//! store: [`StoreBudgets`] adapts the store's [`SharedBudgets`] to the limiter's
//! [`BudgetSource`], and [`share_rate_budgets`] attaches it to an engine's limiter
//! when the store is shared.
//!
//! Owns the translation between the two crates' types and the time a sync may take.
//! It never decides what a node holds (the limiter does) nor how holdings are kept
//! (the store does), and it never attaches anything to a store open in one process
//! only: there the node's limiter is the whole budget, exactly as without it.

use std::sync::Arc;
use std::time::Duration;

use sluice_host::limiter::{
    Ask, BudgetSource, Grant, Limiter, ShareSettings, SourceError, SyncFuture,
};
use sluice_store::Store;
use sluice_store::budgets::{BudgetKey, HoldRequest, SharedBudgets};

use crate::engine::Engine;

/// The longest a sync waits for the store; a slower one fails, and the limiter
/// syncs again at its next poll.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// A store's shared budgets as the limiter's source.
pub struct StoreBudgets {
    budgets: Arc<dyn SharedBudgets>,
    timeout: Duration,
}

impl StoreBudgets {
    /// The source over `budgets` for a limiter sharing with `settings`: a sync
    /// gives up after a quarter of the grace (at most 5 s), well before the node
    /// would stop sending for want of one.
    pub fn new(budgets: Arc<dyn SharedBudgets>, settings: &ShareSettings) -> Self {
        StoreBudgets {
            budgets,
            timeout: SYNC_TIMEOUT.min(settings.grace / 4).max(settings.poll),
        }
    }
}

impl BudgetSource for StoreBudgets {
    fn sync<'a>(&'a self, ask: &'a Ask) -> SyncFuture<'a> {
        Box::pin(async move {
            let request = HoldRequest {
                key: BudgetKey {
                    connector: ask.key.connector.to_string(),
                    credential: ask.key.credential.to_string(),
                    endpoint: ask.key.endpoint.to_string(),
                },
                limit: ask.limit,
                hold: ask.hold,
                wanting: ask.wanting,
                hold_for: ask.hold_for,
                pause: ask.pause,
            };
            match tokio::time::timeout(self.timeout, self.budgets.hold(&request)).await {
                Ok(Ok(holding)) => Ok(Grant {
                    held: holding.held,
                    holders: holding.holders,
                    others_wanting: holding.others_wanting,
                    paused_for: holding.paused_for,
                }),
                Ok(Err(e)) => Err(SourceError(e.to_string())),
                Err(_) => Err(SourceError(format!(
                    "the store did not answer within {} ms",
                    self.timeout.as_millis()
                ))),
            }
        })
    }
}

/// Makes `limiter` share its keys' budgets through `store` with `settings`, if the
/// store is shared by several nodes (PostgreSQL). Returns whether the limiter shares
/// through it (`false` for a store of one node, or a limiter that already shares).
pub fn share_limiter_budgets(limiter: &Limiter, store: &Store, settings: ShareSettings) -> bool {
    let Some(budgets) = store.shared_budgets() else {
        return false;
    };
    let source = StoreBudgets::new(budgets, &settings);
    let shared = limiter.share(Arc::new(source), settings);
    if shared {
        tracing::info!(
            poll_ms = settings.poll.as_millis() as u64,
            grace_ms = settings.grace.as_millis() as u64,
            "rate-limit budgets shared with the other nodes of the store"
        );
    }
    shared
}

/// Makes the engine's rate limiter share every key's declared budget, and the pauses
/// APIs ask for, with the other nodes of its store when the store is shared
/// (PostgreSQL), with the default settings. Call it once, after building the engine
/// and before it runs anything. Returns whether it shares.
pub fn share_rate_budgets(engine: &Engine) -> bool {
    share_limiter_budgets(engine.limiter(), engine.store(), ShareSettings::default())
}
