//! The ready queue: which due run starts next when a worker slot is free.
//!
//! Owns the order and the concurrency limits, nothing else (it never starts a run).
//! Order: effective priority (the run's priority plus one level per `Aging::step_ms`
//! waited past its due time, so waiting work eventually runs), then fair share (the
//! tenant with fewer runs going first, so one tenant's thousand syncs cannot hold back
//! another tenant's one), then due time, then id. A run starts only within the global
//! slot limit and the limits per tenant and per connector.

use std::cmp::Reverse;
use std::collections::HashMap;

/// How candidates compare: effective priority, fewer runs of the tenant going, earlier
/// due, smaller id — larger is better.
type Rank = (i64, Reverse<usize>, Reverse<i64>, Reverse<u128>);

/// A run waiting for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The run (unique in the queue).
    pub id: u128,
    /// Its tenant.
    pub tenant: String,
    /// Its connector (limits per connector).
    pub connector: String,
    /// Higher runs first.
    pub priority: i32,
    /// When it is due, in Unix milliseconds; it may not start before.
    pub due_ms: i64,
    /// At most one run of a group holds a slot at a time (a workflow whose runs may
    /// not overlap); `None` for no such rule.
    pub group: Option<String>,
}

/// How waiting raises a run's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aging {
    /// One priority level per this many milliseconds waited past due; 0 disables.
    pub step_ms: i64,
}

impl Default for Aging {
    fn default() -> Self {
        Aging { step_ms: 60_000 }
    }
}

/// Concurrency limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Runs at once on the node.
    pub slots: usize,
    /// Runs at once per tenant; `None`: only the global limit.
    pub per_tenant: Option<usize>,
    /// Runs at once per connector, for connectors listed here.
    pub per_connector: HashMap<String, usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            slots: 8,
            per_tenant: None,
            per_connector: HashMap::new(),
        }
    }
}

/// Waiting runs and the runs holding slots.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    waiting: Vec<Candidate>,
    running: usize,
    by_tenant: HashMap<String, usize>,
    by_connector: HashMap<String, usize>,
    groups: std::collections::HashSet<String>,
    limits: Limits,
    aging: Aging,
}

impl ReadyQueue {
    /// An empty queue.
    pub fn new(limits: Limits, aging: Aging) -> Self {
        ReadyQueue {
            limits,
            aging,
            ..ReadyQueue::default()
        }
    }

    /// Adds a waiting run (replacing one with the same id).
    pub fn push(&mut self, candidate: Candidate) {
        self.remove(candidate.id);
        self.waiting.push(candidate);
    }

    /// Removes a waiting run; returns whether it was there.
    pub fn remove(&mut self, id: u128) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|c| c.id != id);
        self.waiting.len() != before
    }

    /// Runs waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Runs holding slots.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The run's priority after aging, at `now_ms`.
    pub fn effective_priority(&self, c: &Candidate, now_ms: i64) -> i64 {
        let waited = now_ms.saturating_sub(c.due_ms);
        let boost = if self.aging.step_ms > 0 && waited > 0 {
            waited / self.aging.step_ms
        } else {
            0
        };
        i64::from(c.priority).saturating_add(boost)
    }

    fn fits(&self, c: &Candidate) -> bool {
        if self.running >= self.limits.slots {
            return false;
        }
        if c.group.as_ref().is_some_and(|g| self.groups.contains(g)) {
            return false;
        }
        let tenant = self.by_tenant.get(&c.tenant).copied().unwrap_or(0);
        if self.limits.per_tenant.is_some_and(|max| tenant >= max) {
            return false;
        }
        match self.limits.per_connector.get(&c.connector) {
            Some(max) => self.by_connector.get(&c.connector).copied().unwrap_or(0) < *max,
            None => true,
        }
    }

    /// Takes the next run to start at `now_ms`, if one is due and fits the limits; it
    /// holds its slot until [`ReadyQueue::finished`].
    pub fn pop_ready(&mut self, now_ms: i64) -> Option<Candidate> {
        let mut best: Option<(usize, Rank)> = None;
        for (i, c) in self.waiting.iter().enumerate() {
            if c.due_ms > now_ms || !self.fits(c) {
                continue;
            }
            let share = self.by_tenant.get(&c.tenant).copied().unwrap_or(0);
            let key = (
                self.effective_priority(c, now_ms),
                Reverse(share),
                Reverse(c.due_ms),
                Reverse(c.id),
            );
            if best.as_ref().is_none_or(|(_, k)| key > *k) {
                best = Some((i, key));
            }
        }
        let (i, _) = best?;
        let c = self.waiting.swap_remove(i);
        self.running += 1;
        *self.by_tenant.entry(c.tenant.clone()).or_default() += 1;
        *self.by_connector.entry(c.connector.clone()).or_default() += 1;
        if let Some(g) = &c.group {
            self.groups.insert(g.clone());
        }
        Some(c)
    }

    /// Gives back the slot of a run that started from this queue.
    pub fn finished(&mut self, c: &Candidate) {
        self.running = self.running.saturating_sub(1);
        if let Some(g) = &c.group {
            self.groups.remove(g);
        }
        let (tenant, connector) = (c.tenant.as_str(), c.connector.as_str());
        for (map, key) in [
            (&mut self.by_tenant, tenant),
            (&mut self.by_connector, connector),
        ] {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// The earliest due time of a waiting run, to know when to look again.
    pub fn next_due(&self) -> Option<i64> {
        self.waiting.iter().map(|c| c.due_ms).min()
    }

    /// The earliest due time after `now_ms` (runs already due but blocked by a limit
    /// wait for a slot to be given back, not for the clock).
    pub fn next_due_after(&self, now_ms: i64) -> Option<i64> {
        self.waiting
            .iter()
            .map(|c| c.due_ms)
            .filter(|d| *d > now_ms)
            .min()
    }
}
