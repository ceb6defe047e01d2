//! A key's budget shared by the nodes of a cluster: the slots of its declared window
//! this node holds in a store every node reaches (a [`BudgetSource`]), and the pauses
//! the API asked of the key, learned here or on another node.
//!
//! Owns the rules of holding ([`Share`], pure over an explicit instant) and the
//! contract a source keeps ([`BudgetSource`]). It never talks to a source (the
//! limiter's sync task does), never waits, and never names a storage type: the
//! engine adapts the store to [`BudgetSource`].
//!
//! # Why the cluster never sends more than the declared limit
//!
//! The node's own rule stays as it is: a request occupies a slot of its key's
//! window from its sending until one interval after its answer. A node holding `h`
//! slots never lets more than `h` requests occupy its window, so at any instant:
//!
//! 1. **A node uses no more than it holds.** A permit goes only while the window
//!    holds fewer than [`Share::allowed`]: the slots the store confirmed, never more
//!    than a sync in flight may leave (a node giving slots back stops using them
//!    from the moment it asks), and only within half the grace of the sync the
//!    store last answered.
//! 2. **The store never holds more than the limit.** Each sync of a key runs after
//!    the key's row is locked, counts the holdings of the other nodes that have not
//!    expired (by the store's clock, from before the sync began, so it counts too
//!    many rather than too few) and grants at most what is left.
//! 3. **A holding outlives its use.** A sync holds the slots for one interval plus
//!    the grace from before it was sent. The sync task keeps syncing while the window
//!    holds any request, so a request answered while the store answers is covered
//!    until one interval after its answer. A node cut off from the store stops
//!    sending half the grace after its last answered sync, so what it sent is
//!    covered if it is answered (or given up) within half the grace of its sending.
//!
//! So at the instant `s` of the last request the API counts in any span of one
//! interval, every request it counted in that span was sent by `s` and answered no
//! earlier than the span's start: it still occupies a slot of its node's window at
//! `s`. Those slots are at most what the nodes hold at `s`, which is at most the
//! limit. That holds for fixed windows and sliding ones alike, whatever their
//! alignment, as long as every node's clock and the store's run at the same rate.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use crate::limiter::Key;

/// What [`BudgetSource::sync`] returns.
pub type SyncFuture<'a> = Pin<Box<dyn Future<Output = Result<Grant, SourceError>> + Send + 'a>>;

/// Where the nodes of a cluster keep their shared budgets: a store every node
/// reaches, which never lets the holdings of one key's declared window that have not
/// expired add up to more than its limit.
pub trait BudgetSource: Send + Sync {
    /// Sets this node's holding of `ask.key` to at most `ask.hold` slots of
    /// `ask.limit` (less when the other nodes hold the rest), held from before this
    /// call until `ask.hold_for` after it; publishes `ask.pause` if any; and tells
    /// the key's pause and what the other nodes hold and want. With `ask.limit` 0
    /// (no declared window) only the pause is published and read.
    fn sync<'a>(&'a self, ask: &'a Ask) -> SyncFuture<'a>;
}

/// One sync of a key with its [`BudgetSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The key.
    pub key: Key,
    /// Its declared limit per interval; 0 when it declares none.
    pub limit: u32,
    /// The slots this node means to hold from now on: at least as many as its
    /// window holds (giving back only what is not in use).
    pub hold: u32,
    /// Requests wait on this node for want of slots: nodes holding more than
    /// their share give some back.
    pub wanting: bool,
    /// How long the store keeps the holding after this sync: the window's interval
    /// and the grace.
    pub hold_for: Duration,
    /// A pause this node learned (429 with `Retry-After`, or nothing remaining
    /// until a reset), counted from now, for every node.
    pub pause: Option<Duration>,
}

/// What a [`BudgetSource`] answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grant {
    /// The slots this node holds from now on.
    pub held: u32,
    /// Nodes holding slots of the key or wanting some, this one included.
    pub holders: u32,
    /// Another node wants slots it cannot get.
    pub others_wanting: bool,
    /// How much longer the key is paused, as the store knows it.
    pub paused_for: Option<Duration>,
}

/// A [`BudgetSource`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared rate-limit budget unavailable: {0}")]
pub struct SourceError(pub String);

/// How a node shares its keys' budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareSettings {
    /// How often an active key syncs (renews its holding and reads the key's pause).
    pub poll: Duration,
    /// How long past one interval a holding outlives the last sync that renewed it;
    /// a node that cannot reach the store stops sending half of it after its last
    /// answered sync. Longer covers slower requests of a node cut off from the
    /// store; shorter frees a stopped node's slots sooner.
    pub grace: Duration,
    /// A node takes slots a slice at a time: the limit divided by this, at least 1.
    pub slices: u32,
    /// A key with nothing held, in flight or waiting stops syncing after this long
    /// without requests.
    pub idle: Duration,
}

impl Default for ShareSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            grace: Duration::from_secs(30),
            slices: 10,
            idle: Duration::from_secs(30),
        }
    }
}

/// What a sync asks, as [`Share::plan`] decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The holding to ask for.
    pub hold: u32,
    /// Requests wait for slots here.
    pub wanting: bool,
    /// A pause learned here, to publish, counted from the plan's instant.
    pub pause: Option<Duration>,
}

/// One key's holding of its shared budget on this node. Pure: every method takes
/// the instant, so the rules are tested without a clock or a store.
#[derive(Debug, Clone)]
pub struct Share {
    settings: ShareSettings,
    /// The slots the store holds for this node, as its last answer said.
    held: u32,
    /// Permits may come from `held` until then: half the grace after the sending of
    /// the last sync the store answered.
    usable_until: Option<Instant>,
    /// The holding a sync in flight asks for: it may leave less than `held`.
    asking: Option<u32>,
    /// The most this node uses while another waits (its fair share).
    cap: u32,
    /// The store answered since the key became active (for a key without a declared
    /// window: or failed), so its pause is known.
    ready: bool,
    /// The key's request count at the last plan, to tell demand.
    seen: u64,
    /// When the key last had demand (requests or waiters).
    busy_at: Instant,
    /// A pause learned here and not yet published: until when.
    publish: Option<Instant>,
    /// The pause the sync in flight publishes.
    publishing: Option<Instant>,
    /// A sync should come before the next poll.
    poke: bool,
    /// The last sync got less than it asked for.
    starved: bool,
    /// The key's sync task runs.
    pub(crate) running: bool,
}

impl Share {
    /// A key that has just become active at `now`: nothing held, its pause unknown.
    pub fn new(settings: ShareSettings, now: Instant) -> Self {
        Share {
            settings,
            held: 0,
            usable_until: None,
            asking: None,
            cap: u32::MAX,
            ready: false,
            seen: 0,
            busy_at: now,
            publish: None,
            publishing: None,
            poke: true,
            starved: false,
            running: false,
        }
    }

    /// The slots the store holds for this node, as its last answer said.
    pub fn held(&self) -> u32 {
        self.held
    }

    /// Whether the store has answered since the key became active, so requests may
    /// go (for a key with a declared window: within [`Share::allowed`]).
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Whether the last sync got fewer slots than it asked for.
    pub fn starved(&self) -> bool {
        self.starved
    }

    /// How many requests the key's declared window may hold at `now`: the slots
    /// held, confirmed within half the grace, not more than a sync in flight may
    /// leave, nor more than this node's fair share while another node waits.
    pub fn allowed(&self, now: Instant) -> u32 {
        if !self.ready || self.usable_until.is_none_or(|u| u <= now) {
            return 0;
        }
        let mut allowed = self.held.min(self.cap);
        if let Some(asking) = self.asking {
            allowed = allowed.min(asking);
        }
        allowed
    }

    /// The slots a node takes at a time of a window of `limit`.
    pub fn slice(&self, limit: u32) -> u32 {
        (limit / self.settings.slices.max(1)).max(1)
    }

    /// After a permit was asked for at a window of `limit` that holds `used`
    /// requests and may hold `allowed`: ask for more ahead of need when what is
    /// left is half a slice or less.
    pub fn note_use(&mut self, limit: u32, allowed: u32, used: u64) {
        let left = u64::from(allowed).saturating_sub(used);
        if left <= u64::from(self.slice(limit) / 2) {
            self.poke = true;
        }
    }

    /// Ask for a sync before the next poll.
    pub fn poke(&mut self) {
        self.poke = true;
    }

    /// Whether a sync was asked for since the last call; clears it.
    pub fn take_poke(&mut self) -> bool {
        std::mem::take(&mut self.poke)
    }

    /// A pause until `until` learned here, to publish with the next sync.
    pub fn publish(&mut self, until: Instant) {
        self.publish = Some(self.publish.map_or(until, |p| p.max(until)));
        self.poke = true;
    }

    /// What to ask at `now` of a key with a declared window of `limit` (0: none)
    /// whose window holds `used` requests, with `waiting` requests waiting and
    /// `requests` granted so far. The node gives back nothing in use; it asks for a
    /// slice more (or as many as wait) when it has less than a slice to spare and
    /// requests come, keeps what it holds while they do, gives back what is not in
    /// use after a poll without any, and never asks for more than its fair share
    /// while another node waits.
    pub fn plan(
        &mut self,
        now: Instant,
        limit: u32,
        used: u32,
        waiting: usize,
        requests: u64,
    ) -> Plan {
        let demand = waiting > 0 || requests != self.seen;
        // Waiting for slots, not for a pause or a request in flight.
        let wanting = limit > 0 && waiting > 0 && u64::from(self.allowed(now)) <= u64::from(used);
        self.seen = requests;
        if demand {
            self.busy_at = now;
        }
        let hold = if limit == 0 {
            0
        } else {
            let slice = self.slice(limit);
            let waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
            let want = if waiting > 0 || (demand && self.held.saturating_sub(used) < slice) {
                used.saturating_add(slice.max(waiting)).max(self.held)
            } else if demand || now.saturating_duration_since(self.busy_at) < self.settings.poll {
                self.held
            } else {
                used
            };
            // Never below what is in use: those slots stay held until they leave.
            want.min(self.cap).min(limit).max(used)
        };
        self.asking = Some(hold);
        self.publishing = self.publish;
        Plan {
            hold,
            wanting,
            pause: self
                .publish
                .map(|until| until.saturating_duration_since(now))
                .filter(|d| !d.is_zero()),
        }
    }

    /// Whether a sync asking `plan` could change anything before the next poll:
    /// the key's first, a pause to publish, or another holding.
    pub fn worth_syncing(&self, plan: &Plan) -> bool {
        !self.ready || plan.pause.is_some() || plan.hold != self.held
    }

    /// The last plan is not sent after all.
    pub fn unplan(&mut self) {
        self.asking = None;
        self.publishing = None;
    }

    /// The answer to the sync of a key with a declared window of `limit` (0: none)
    /// sent at `sent`, received at `now`; returns until when the key is paused, if
    /// the store says it is.
    pub fn settle(
        &mut self,
        sent: Instant,
        limit: u32,
        outcome: Result<&Grant, &SourceError>,
        now: Instant,
    ) -> Option<Instant> {
        let asked = self.asking.take();
        match outcome {
            Ok(grant) => {
                self.held = grant.held;
                // The store counts the holding from no earlier than `sent`.
                self.usable_until = Some(sent + self.settings.grace / 2);
                self.cap = if grant.others_wanting && limit > 0 {
                    limit.div_ceil(grant.holders.max(1)).max(1)
                } else {
                    u32::MAX
                };
                self.ready = true;
                self.starved = asked.is_some_and(|a| grant.held < a);
                if self.publish == self.publishing {
                    self.publish = None;
                }
                self.publishing = None;
                grant.paused_for.filter(|d| !d.is_zero()).map(|d| now + d)
            }
            Err(_) => {
                // The store may or may not have applied it: count the smaller.
                if let Some(asked) = asked {
                    self.held = self.held.min(asked);
                }
                self.publishing = None;
                if limit == 0 {
                    // No declared budget to protect: go without the remote pause
                    // rather than stop the key.
                    self.ready = true;
                }
                self.starved = true;
                None
            }
        }
    }

    /// Whether the key's sync task may stop at `now`: nothing held, in the window
    /// or waiting, nothing to publish, and no requests for the idle time.
    pub fn idle(&self, now: Instant, used: u32, waiting: usize) -> bool {
        used == 0
            && waiting == 0
            && self.held == 0
            && self.publish.is_none()
            && now.saturating_duration_since(self.busy_at) >= self.settings.idle
    }

    /// The sync task stops: the key's next request waits for a sync again.
    pub(crate) fn stop(&mut self) {
        self.running = false;
        self.ready = false;
        self.usable_until = None;
        self.poke = true;
    }
}
