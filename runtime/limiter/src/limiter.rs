//! The node's one limiter: a budget per key, shared by every run, and a breaker
//! per credential and host (one tenant's failures or breaker settings never open
//! the breaker of another credential). Requests wait for their key in priority order, then arrival.
//!
//! Owns waiting and waking, and, when the node shares its budgets with a cluster,
//! each active key's sync task; the rules of a budget live in
//! [`budget`](crate::budget), of a shared holding in [`shared`](crate::shared) and
//! of a breaker in [`breaker`](crate::breaker). It must never hold a lock across an
//! await, and never let a granted slot leak: a permit returns its slot when
//! dropped, wherever it is (even unreceived in a channel).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerState, Pass};
use crate::budget::{Blocked, Budget};
use crate::rules::{BreakerSettings, RateLimitRule};
use crate::shared::{Ask, BudgetSource, Share, ShareSettings};
use crate::signals::Signals;

/// What requests share a budget under: a connector, a credential and an
/// endpoint (a declared rule's pattern, or the host the request goes to).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The connector's name.
    pub connector: Arc<str>,
    /// Whose budget: a credential name, or a digest of the connection's secrets.
    pub credential: Arc<str>,
    /// The rule's endpoint pattern, or the request's `host[:port]`.
    pub endpoint: Arc<str>,
}

/// A request could not get its budget within its longest wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: no budget for {retry_after:?}")]
pub struct Saturated {
    /// When the key expects budget again (the longest wait when unknown).
    pub retry_after: Duration,
}

/// A host's breaker (for one credential) is open: the request fails at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker for {host} is open after repeated failures{}", until_text(.retry_after))]
pub struct BreakerOpen {
    /// The credential whose breaker it is.
    pub credential: String,
    /// The host.
    pub host: String,
    /// When a probe may go, if known (unknown while another request probes).
    pub retry_after: Option<Duration>,
}

fn until_text(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!("; it lets a probe through in {} ms", d.as_millis()),
        None => "; a probe is in flight".into(),
    }
}

/// Counters of one key.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyStats {
    /// Requests that got budget.
    pub requests: u64,
    /// Answers that said "slow down" (429, or 503 with `Retry-After`).
    pub throttled: u64,
    /// Requests that had to wait for budget.
    pub waits: u64,
    /// Time spent waiting, in all.
    pub wait_time: Duration,
    /// Requests handed back as rate limited after their longest wait.
    pub saturated: u64,
}

/// One key's state, for the CLI, the API and metrics.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// The key.
    pub key: Key,
    /// Its counters.
    pub stats: KeyStats,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests waiting for budget.
    pub waiting: usize,
    /// Requests in the declared window and its limit, if one is declared.
    pub window: Option<(u64, u32)>,
    /// Requests the API said are left in its window, while it lasts.
    pub learned_left: Option<u64>,
    /// How much longer the key is paused after a throttle.
    pub paused_for: Option<Duration>,
    /// Slots of the declared window this node holds of the cluster's budget, when
    /// the node shares its budgets.
    pub held: Option<u32>,
}

/// One credential's breaker of one host, for the CLI, the API and metrics.
#[derive(Debug, Clone)]
pub struct BreakerView {
    /// The credential whose requests it counts.
    pub credential: String,
    /// The host (`host[:port]`).
    pub host: String,
    /// `closed`, `open` or `probing`.
    pub state: &'static str,
    /// Consecutive failures while closed.
    pub failures: u32,
    /// Times it opened.
    pub opened: u64,
    /// How much longer it stays open.
    pub open_for: Option<Duration>,
}

type WaiterId = (Reverse<i64>, u64);

struct Waiter {
    tx: oneshot::Sender<Permit>,
    since: Instant,
}

struct Core {
    budget: Budget,
    waiters: BTreeMap<WaiterId, Waiter>,
    stats: KeyStats,
    /// The one waiter sleeping until budget is due, and until when. The others
    /// sleep until they are granted or out of time, so a key with many waiters
    /// wakes one task per change, not all of them.
    alarm: Option<(Instant, WaiterId)>,
    /// The key's holding of a budget shared by the cluster, when the node shares.
    share: Option<Share>,
}

impl Core {
    /// Whether a waiter must wake to look again: budget is due at `t` and nobody
    /// is set to wake by then.
    fn needs_alarm(&self, next: Option<Instant>, now: Instant) -> bool {
        match (next, self.alarm) {
            (None, _) => false,
            _ if self.waiters.is_empty() => false,
            (Some(_), None) => true,
            (Some(t), Some((a, _))) => a > t || a <= now,
        }
    }
}

/// Start a request now if the budget, and the key's shared holding if any, allow.
/// (Over the two fields, so a caller may hold the waiters meanwhile.)
fn try_take(budget: &mut Budget, share: &mut Option<Share>, now: Instant) -> Result<(), Blocked> {
    let Some(share) = share else {
        return budget.try_take(now);
    };
    if !share.ready() {
        // The key's pause and holding are unknown until its first sync.
        share.poke();
        return Err(Blocked::OnRelease);
    }
    let Some((limit, _)) = budget.declared() else {
        return budget.try_take(now);
    };
    let allowed = share.allowed(now);
    let taken = budget.try_take_within(now, Some(allowed));
    share.note_use(limit, allowed, budget.used_after_take());
    taken
}

struct Cell {
    key: Key,
    core: Mutex<Core>,
    /// Wakes one waiter when the budget changes (a release, an answer) in a way no
    /// sleeping waiter knows of: a release can turn "when something ends" into "at
    /// this instant". The waken one takes the alarm.
    changed: Notify,
    /// Wakes the key's sync task before its next poll (more slots needed, a pause
    /// to publish).
    sync_wake: Notify,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves counters that are still counters.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the key's sync task if its holding asked for a sync.
    fn poke_sync(&self, core: &mut Core) {
        if core.share.as_mut().is_some_and(Share::take_poke) {
            self.sync_wake.notify_one();
        }
    }

    /// Grant budget to waiters, best first, while there is some. Permits whose
    /// waiter left are returned, to be dropped once the lock is released.
    fn dispatch(self: &Arc<Self>, core: &mut Core, now: Instant) -> (Option<Instant>, Vec<Permit>) {
        let mut undelivered = Vec::new();
        let outcome = loop {
            let Some(entry) = core.waiters.first_entry() else {
                break (None, undelivered);
            };
            match try_take(&mut core.budget, &mut core.share, now) {
                Ok(()) => {
                    let waiter = entry.remove();
                    core.stats.requests += 1;
                    core.stats.waits += 1;
                    core.stats.wait_time += now.saturating_duration_since(waiter.since);
                    let permit = Permit {
                        cell: self.clone(),
                        waited: now.saturating_duration_since(waiter.since),
                    };
                    if let Err(permit) = waiter.tx.send(permit) {
                        undelivered.push(permit);
                    }
                }
                Err(Blocked::Until(t)) => break (Some(t), undelivered),
                Err(Blocked::OnRelease) => break (None, undelivered),
            }
        };
        self.poke_sync(core);
        outcome
    }

    /// After a change: grant what can be granted, and make sure a waiter wakes
    /// when more is due.
    fn changed(self: &Arc<Self>, mut core: MutexGuard<'_, Core>) {
        let now = Instant::now();
        let (next, undelivered) = self.dispatch(&mut core, now);
        let wake = core.needs_alarm(next, now);
        drop(core);
        drop(undelivered);
        if wake {
            self.changed.notify_one();
        }
    }
}

/// A request's right to go. Dropping it ends the request for the budget.
pub struct Permit {
    cell: Arc<Cell>,
    waited: Duration,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.cell.key)
            .field("waited", &self.waited)
            .finish()
    }
}

impl Permit {
    /// How long the request waited for budget.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The key it was granted on.
    pub fn key(&self) -> &Key {
        &self.cell.key
    }

    /// Learn from the answer; returns how long the key pauses when the answer
    /// was a throttle.
    pub fn observe(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        let signals = Signals::read(status, headers, SystemTime::now());
        let now = Instant::now();
        let mut core = self.cell.lock();
        let pause = core.budget.observe(&signals, now);
        if let Some(share) = &mut core.share {
            // Every node pauses for a throttle, or for a window the API says is
            // used up until its reset.
            let exhausted = (signals.remaining == Some(0))
                .then_some(signals.reset)
                .flatten()
                .filter(|r| !r.is_zero());
            if let Some(until) = pause.or(exhausted).map(|p| now + p) {
                share.publish(until);
            }
        }
        if signals.throttled {
            core.stats.throttled += 1;
            tracing::info!(
                connector = %self.cell.key.connector, endpoint = %self.cell.key.endpoint,
                pause_ms = pause.map(|p| p.as_millis() as u64), "API throttled; key paused"
            );
        }
        // An answer can end a probe, which lets waiters go.
        self.cell.changed(core);
        pause
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut core = self.cell.lock();
        core.budget.release(Instant::now());
        self.cell.changed(core);
    }
}

/// Removes a waiter that stops waiting (cancelled, or out of time).
struct WaiterGuard<'a> {
    cell: &'a Arc<Cell>,
    id: WaiterId,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut core = self.cell.lock();
        let removed = core.waiters.remove(&self.id);
        // Whoever held the alarm hands it on.
        let handover = core.alarm.is_some_and(|(_, owner)| owner == self.id);
        if handover {
            core.alarm = None;
        }
        let others = !core.waiters.is_empty();
        drop(core);
        drop(removed);
        if handover && others {
            self.cell.changed.notify_one();
        }
    }
}

/// A request the breaker let through. Report how it ended; dropping it
/// unreported counts as neither success nor failure.
pub struct HostPass {
    limiter: Arc<Limiter>,
    key: BreakerKey,
    pass: Pass,
    settings: BreakerSettings,
    reported: bool,
}

impl HostPass {
    /// The request ended; `failed` for connection errors, timeouts and server
    /// errors.
    pub fn report(mut self, failed: bool) {
        self.reported = true;
        let mut breakers = self.limiter.breakers();
        if let Some(b) = breakers.get_mut(&self.key) {
            let was_open = b.opened;
            b.report(self.pass, failed, &self.settings, Instant::now());
            if b.opened > was_open {
                tracing::warn!(host = %self.key.1, credential = %self.key.0, cool_down_ms = self.settings.cool_down_ms,
                    "circuit breaker opened after repeated failures");
            }
        }
    }
}

impl Drop for HostPass {
    fn drop(&mut self) {
        if !self.reported
            && let Some(b) = self.limiter.breakers().get_mut(&self.key)
        {
            b.abandon(self.pass, &self.settings, Instant::now());
        }
    }
}

/// Where the node shares its keys' budgets, and how.
struct Sharing {
    source: Arc<dyn BudgetSource>,
    settings: ShareSettings,
}

/// A breaker's key: (credential, host).
type BreakerKey = (String, String);

/// Budgets and breakers for every connector request on the node.
#[derive(Default)]
pub struct Limiter {
    keys: Mutex<HashMap<Key, Arc<Cell>>>,
    breakers: Mutex<HashMap<BreakerKey, Breaker>>,
    arrivals: AtomicU64,
    sharing: OnceLock<Sharing>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Limiter {
    /// An empty limiter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn breakers(&self) -> MutexGuard<'_, HashMap<BreakerKey, Breaker>> {
        self.breakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cell(&self, key: &Key, rule: Option<&RateLimitRule>) -> Arc<Cell> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let cell = keys
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Cell {
                    key: key.clone(),
                    core: Mutex::new(Core {
                        budget: Budget::new(rule),
                        waiters: BTreeMap::new(),
                        stats: KeyStats::default(),
                        alarm: None,
                        share: None,
                    }),
                    changed: Notify::new(),
                    sync_wake: Notify::new(),
                })
            })
            .clone();
        drop(keys);
        let mut core = cell.lock();
        if !core.budget.follows(rule) {
            core.budget.apply(rule);
        }
        drop(core);
        cell
    }

    /// Share every key's budget with the other nodes of a cluster through `source`:
    /// from now on a key with a declared window sends only within the slots this
    /// node holds of it there, and pauses learned on any node reach every node.
    /// Returns `false`, changing nothing, if the limiter already shares.
    pub fn share(&self, source: Arc<dyn BudgetSource>, settings: ShareSettings) -> bool {
        self.sharing.set(Sharing { source, settings }).is_ok()
    }

    /// Whether the limiter shares its keys' budgets with a cluster.
    pub fn shares(&self) -> bool {
        self.sharing.get().is_some()
    }

    /// When sharing: give the key its holding, and start its sync task if none runs.
    fn start_sharing(&self, cell: &Arc<Cell>, core: &mut Core, now: Instant) {
        let Some(sharing) = self.sharing.get() else {
            return;
        };
        let share = core
            .share
            .get_or_insert_with(|| Share::new(sharing.settings, now));
        if !share.running {
            share.running = true;
            tokio::spawn(keep_in_sync(
                cell.clone(),
                sharing.source.clone(),
                sharing.settings,
            ));
        }
    }

    /// Wait for budget on `key` under `rule`, behind waiters of higher `priority`
    /// and earlier ones of the same, at most `max_wait`.
    pub async fn acquire(
        &self,
        key: &Key,
        rule: Option<&RateLimitRule>,
        priority: i64,
        max_wait: Duration,
    ) -> Result<Permit, Saturated> {
        let cell = self.cell(key, rule);
        let since = Instant::now();
        let deadline = since + max_wait;
        let id = (
            Reverse(priority),
            self.arrivals.fetch_add(1, Ordering::Relaxed),
        );
        let mut rx = {
            let mut core = cell.lock();
            self.start_sharing(&cell, &mut core, since);
            if core.waiters.is_empty() {
                let Core { budget, share, .. } = &mut *core;
                let taken = try_take(budget, share, since);
                cell.poke_sync(&mut core);
                match taken {
                    Ok(()) => {
                        core.stats.requests += 1;
                        return Ok(Permit {
                            cell: cell.clone(),
                            waited: Duration::ZERO,
                        });
                    }
                    Err(Blocked::Until(t)) if t > deadline => {
                        core.stats.saturated += 1;
                        return Err(Saturated {
                            retry_after: t - since,
                        });
                    }
                    Err(_) => {}
                }
            }
            let (tx, rx) = oneshot::channel();
            core.waiters.insert(id, Waiter { tx, since });
            rx
        };
        let guard = WaiterGuard { cell: &cell, id };
        loop {
            // Listen before looking, so a change between the two is not missed.
            let changed = cell.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let (next, alarm, undelivered) = {
                let mut core = cell.lock();
                let (next, undelivered) = cell.dispatch(&mut core, now);
                let owner = core.alarm.is_some_and(|(_, owner)| owner == id);
                let alarm = match next {
                    // Take the alarm if nobody wakes by then; keep it (moved) if
                    // this waiter had it.
                    Some(t) if owner || (t <= deadline && core.needs_alarm(next, now)) => {
                        core.alarm = Some((t, id));
                        Some(t)
                    }
                    _ => {
                        // Nothing is due at a known time: a held alarm would
                        // promise a wake-up that will not come.
                        if owner {
                            core.alarm = None;
                        }
                        None
                    }
                };
                (next, alarm, undelivered)
            };
            drop(undelivered);
            if let Ok(permit) = rx.try_recv() {
                return Ok(permit);
            }
            if now >= deadline || next.is_some_and(|t| t > deadline) {
                drop(guard);
                // Granted between the last look and leaving the queue.
                if let Ok(permit) = rx.try_recv() {
                    return Ok(permit);
                }
                cell.lock().stats.saturated += 1;
                let retry_after = next.map_or(max_wait, |t| t.saturating_duration_since(now));
                return Err(Saturated { retry_after });
            }
            let wake = alarm.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                granted = &mut rx => {
                    if let Ok(permit) = granted {
                        return Ok(permit);
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
                () = &mut changed => {}
            }
        }
    }

    /// Let a request of `credential` to `host` through their breaker, or fail it
    /// at once. Each credential has its own breaker of a host: its settings and
    /// its failures concern its own requests only.
    pub fn pass(
        self: &Arc<Self>,
        credential: &str,
        host: &str,
        settings: &BreakerSettings,
    ) -> Result<HostPass, BreakerOpen> {
        let now = Instant::now();
        let key = (credential.to_owned(), host.to_owned());
        let mut breakers = self.breakers();
        let breaker = breakers.entry(key.clone()).or_insert_with(Breaker::new);
        match breaker.pass(now) {
            Ok(pass) => Ok(HostPass {
                limiter: self.clone(),
                key,
                pass,
                settings: settings.clone(),
                reported: false,
            }),
            Err(until) => Err(BreakerOpen {
                credential: key.0,
                host: key.1,
                retry_after: until.map(|u| u.saturating_duration_since(now)),
            }),
        }
    }

    /// Every key's state, ordered by key.
    pub fn keys(&self) -> Vec<KeyView> {
        let cells: Vec<Arc<Cell>> = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        let mut views: Vec<KeyView> = cells
            .iter()
            .map(|cell| {
                let core = cell.lock();
                KeyView {
                    key: cell.key.clone(),
                    stats: core.stats,
                    in_flight: core.budget.in_flight,
                    waiting: core.waiters.len(),
                    window: core.budget.window_used(now),
                    learned_left: core.budget.learned_left(now),
                    paused_for: core.budget.paused_until(now).map(|p| p - now),
                    held: core
                        .share
                        .as_ref()
                        .filter(|_| core.budget.declared().is_some())
                        .map(Share::held),
                }
            })
            .collect();
        views.sort_by(|a, b| a.key.cmp(&b.key));
        views
    }

    /// Every breaker, ordered by host, then credential.
    pub fn breaker_views(&self) -> Vec<BreakerView> {
        let now = Instant::now();
        let mut views: Vec<BreakerView> = self
            .breakers()
            .iter()
            .map(|((credential, host), b)| {
                let (state, failures, open_for) = match b.state {
                    BreakerState::Closed { failures } => ("closed", failures, None),
                    BreakerState::Open { until } if until > now => ("open", 0, Some(until - now)),
                    BreakerState::Open { .. } => ("open", 0, Some(Duration::ZERO)),
                    BreakerState::Probing => ("probing", 0, None),
                };
                BreakerView {
                    credential: credential.clone(),
                    host: host.clone(),
                    state,
                    failures,
                    opened: b.opened,
                    open_for,
                }
            })
            .collect();
        views.sort_by(|a, b| (&a.host, &a.credential).cmp(&(&b.host, &b.credential)));
        views
    }
}

/// The sync task of one key while it is active: renews its holding every poll, syncs
/// sooner when it needs more slots or has a pause to publish, applies what the
/// source answers, and stops once the key is idle.
async fn keep_in_sync(cell: Arc<Cell>, source: Arc<dyn BudgetSource>, settings: ShareSettings) {
    let mut failing = false;
    let mut next_poll = Instant::now();
    let mut wait_out = false;
    loop {
        let now = Instant::now();
        let ask = {
            let mut core = cell.lock();
            let declared = core.budget.declared();
            let used = core
                .budget
                .window_used(now)
                .map_or(0, |(used, _)| u32::try_from(used).unwrap_or(u32::MAX));
            let waiting = core.waiters.len();
            let requests = core.stats.requests;
            let Some(share) = core.share.as_mut() else {
                return;
            };
            if share.idle(now, used, waiting) {
                share.stop();
                return;
            }
            let limit = declared.map_or(0, |(limit, _)| limit);
            let plan = share.plan(now, limit, used, waiting, requests);
            // Woken early with nothing new to ask: the poll renews in time.
            if now < next_poll && !share.worth_syncing(&plan) {
                share.unplan();
                None
            } else {
                Some(Ask {
                    key: cell.key.clone(),
                    limit,
                    hold: plan.hold,
                    wanting: plan.wanting,
                    hold_for: declared
                        .map_or(Duration::ZERO, |(_, period)| period + settings.grace),
                    pause: plan.pause,
                })
            }
        };
        if let Some(ask) = ask {
            // Taken before the store sees the sync, so the holding it confirms is
            // counted from no later than this.
            let sent = Instant::now();
            let outcome = source.sync(&ask).await;
            next_poll = sent + settings.poll;
            let mut core = cell.lock();
            let now = Instant::now();
            let Some(share) = core.share.as_mut() else {
                return;
            };
            let pause = share.settle(sent, ask.limit, outcome.as_ref(), now);
            wait_out = share.starved();
            if let Some(until) = pause
                && core.budget.pause_until(until)
            {
                tracing::debug!(
                    connector = %cell.key.connector, endpoint = %cell.key.endpoint,
                    pause_ms = until.saturating_duration_since(now).as_millis() as u64,
                    "key paused as the cluster learned"
                );
            }
            // New slots or a pause: grant or reschedule the waiters.
            cell.changed(core);
            match &outcome {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        connector = %cell.key.connector, endpoint = %cell.key.endpoint,
                        error = %e,
                        "cannot sync the key's shared budget; it sends only within what it holds"
                    );
                }
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(
                        connector = %cell.key.connector, endpoint = %cell.key.endpoint,
                        "the key's shared budget syncs again"
                    );
                }
                _ => {}
            }
        }
        let poked = cell.sync_wake.notified();
        if wait_out {
            // The others hold the rest (or the store failed): asking again before
            // the poll would only load the store; they give back within a poll.
            tokio::time::sleep_until(next_poll).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep_until(next_poll) => {}
                () = poked => {}
            }
        }
    }
}
