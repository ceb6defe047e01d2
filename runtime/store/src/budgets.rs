//! [`SharedBudgets`]: the rate-limit budgets the nodes of a cluster share through
//! their store. Per key (connector, credential, endpoint): the slots of its declared
//! window each node holds, and the pause the API asked of the key.
//!
//! Owns the contract and its types. A backend keeps one promise: **the holdings of
//! one key that have not expired never add up to more than its limit**, expiry
//! being judged by the store's clock from no later than the start of the call that
//! set the holding. It never decides how many slots a node wants, and never sees a
//! request: each node's limiter counts its own requests within what it holds. A
//! store open in one process only (sled) has none ([`crate::Backend::shared_budgets`]):
//! its node's limiter is the whole budget.

use std::time::Duration;

use async_trait::async_trait;

use crate::StoreError;

/// What requests share a budget under, as the limiter names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    /// The connector.
    pub connector: String,
    /// The credential: a name, or a digest of a connection's secrets (never a
    /// secret itself).
    pub credential: String,
    /// The endpoint pattern of the rule, or the host.
    pub endpoint: String,
}

impl BudgetKey {
    /// Refuses names a backend cannot store.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        for (what, name) in [
            ("connector", &self.connector),
            ("credential", &self.credential),
            ("endpoint", &self.endpoint),
        ] {
            if name.contains('\0') {
                return Err(StoreError::Invalid(format!(
                    "a rate-limit key's {what} may not contain NUL"
                )));
            }
        }
        Ok(())
    }
}

/// One node's change of its holding of a key, with a pause to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The key.
    pub key: BudgetKey,
    /// Its declared limit per interval; 0 when it declares none (then only the
    /// pause is published and read, and nothing is held).
    pub limit: u32,
    /// The slots the node means to hold from now on.
    pub hold: u32,
    /// Requests wait on the node for want of slots.
    pub wanting: bool,
    /// How long the holding lasts from this call unless renewed.
    pub hold_for: Duration,
    /// A pause the API asked of the key, counted from this call.
    pub pause: Option<Duration>,
}

/// A node's holding of a key after a [`SharedBudgets::hold`], and what the store
/// knows of the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holding {
    /// The slots the node holds: what it asked, or what the other nodes left.
    pub held: u32,
    /// Nodes holding slots of the key or wanting some, the caller included.
    pub holders: u32,
    /// Another node wants slots.
    pub others_wanting: bool,
    /// How much longer the key is paused.
    pub paused_for: Option<Duration>,
}

/// Budgets shared by the nodes of a cluster. One value is one node's client: its
/// holdings are its own, apart from every other client's.
#[async_trait]
pub trait SharedBudgets: Send + Sync {
    /// Sets this client's holding of `request.key` to `request.hold` slots, or to
    /// what the other clients' unexpired holdings leave of `request.limit` if that
    /// is less, until `request.hold_for` after the call began; publishes
    /// `request.pause`, if any, keeping the later of it and the key's pause.
    async fn hold(&self, request: &HoldRequest) -> Result<Holding, StoreError>;

    /// Publishes that the key is paused for `pause` from now (the later of it and
    /// any pause it has).
    async fn pause(&self, key: &BudgetKey, pause: Duration) -> Result<(), StoreError> {
        self.hold(&HoldRequest {
            key: key.clone(),
            limit: 0,
            hold: 0,
            wanting: false,
            hold_for: Duration::ZERO,
            pause: Some(pause),
        })
        .await
        .map(|_| ())
    }

    /// How much longer the key is paused, if it is.
    async fn paused(&self, key: &BudgetKey) -> Result<Option<Duration>, StoreError> {
        self.hold(&HoldRequest {
            key: key.clone(),
            limit: 0,
            hold: 0,
            wanting: false,
            hold_for: Duration::ZERO,
            pause: None,
        })
        .await
        .map(|h| h.paused_for)
    }
}
