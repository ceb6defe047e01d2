//! The ready queue: which due run starts next when a worker slot is free.
//!
//! Owns the order and the concurrency limits, nothing else (it never starts a run).
//! Order: effective priority (the run's priority plus one level per `Aging::step_ms`
//! waited past its due time, so waiting work eventually runs), then fair share (the
//! tenant with fewer runs going first, so one tenant's thousand syncs cannot hold back
//! another tenant's one), then due time, then id. A run starts only within the global
//! slot limit and the limits per tenant and per connector.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

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

/// A waiting candidate with its names interned, so that ranking and limit checks
/// compare integers instead of hashing strings for every waiting run.
#[derive(Debug)]
struct Waiting {
    c: Candidate,
    tenant: usize,
    connector: usize,
    group: Option<usize>,
}

/// Waiting runs and the runs holding slots.
///
/// Runs not due yet wait in a map ordered by due time and are moved to the due list
/// when their time comes; only due runs are ranked, so a pop costs a pass over the due
/// runs with integer work, however many runs wait for later.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    /// Due runs (due at or before the last `now` seen), unordered.
    due: Vec<Waiting>,
    /// Runs due later, by (due, id).
    later: BTreeMap<(i64, u128), Waiting>,
    /// Where each waiting run is: its due time if in `later`, `None` if in `due`.
    place: HashMap<u128, Option<i64>>,
    names: HashMap<String, usize>,
    running: usize,
    /// Slots held, per interned tenant name.
    by_tenant: Vec<usize>,
    /// Slots held, per interned connector name.
    by_connector: Vec<usize>,
    /// Limit per interned connector name.
    connector_limit: Vec<Option<usize>>,
    /// Whether a run of the group (interned) holds a slot.
    group_busy: Vec<bool>,
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

    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.names.get(name) {
            return i;
        }
        let i = self.names.len();
        self.names.insert(name.to_owned(), i);
        self.by_tenant.push(0);
        self.by_connector.push(0);
        self.connector_limit
            .push(self.limits.per_connector.get(name).copied());
        self.group_busy.push(false);
        i
    }

    /// Adds a waiting run (replacing one with the same id).
    pub fn push(&mut self, candidate: Candidate) {
        self.remove(candidate.id);
        let w = Waiting {
            tenant: self.intern(&candidate.tenant),
            connector: self.intern(&candidate.connector),
            group: candidate.group.as_deref().map(|g| self.intern(g)),
            c: candidate,
        };
        self.place.insert(w.c.id, Some(w.c.due_ms));
        self.later.insert((w.c.due_ms, w.c.id), w);
    }

    /// Removes a waiting run; returns whether it was there.
    pub fn remove(&mut self, id: u128) -> bool {
        match self.place.remove(&id) {
            Some(Some(due)) => self.later.remove(&(due, id)).is_some(),
            Some(None) => match self.due.iter().position(|w| w.c.id == id) {
                Some(i) => {
                    self.due.swap_remove(i);
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Runs waiting.
    pub fn waiting(&self) -> usize {
        self.due.len() + self.later.len()
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

    fn fits(&self, w: &Waiting) -> bool {
        if w.group.is_some_and(|g| self.group_busy[g]) {
            return false;
        }
        if self
            .limits
            .per_tenant
            .is_some_and(|max| self.by_tenant[w.tenant] >= max)
        {
            return false;
        }
        self.connector_limit[w.connector].is_none_or(|max| self.by_connector[w.connector] < max)
    }

    /// Moves the runs due by `now_ms` to the due list.
    fn promote(&mut self, now_ms: i64) {
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let w = entry.remove();
            self.place.insert(w.c.id, None);
            self.due.push(w);
        }
    }

    /// Takes the next run to start at `now_ms`, if one is due and fits the limits; it
    /// holds its slot until [`ReadyQueue::finished`].
    pub fn pop_ready(&mut self, now_ms: i64) -> Option<Candidate> {
        if self.running >= self.limits.slots {
            return None;
        }
        self.promote(now_ms);
        let mut best: Option<(usize, Rank)> = None;
        for (i, w) in self.due.iter().enumerate() {
            if !self.fits(w) {
                continue;
            }
            let key = (
                self.effective_priority(&w.c, now_ms),
                Reverse(self.by_tenant[w.tenant]),
                Reverse(w.c.due_ms),
                Reverse(w.c.id),
            );
            if best.as_ref().is_none_or(|(_, k)| key > *k) {
                best = Some((i, key));
            }
        }
        let (i, _) = best?;
        let w = self.due.swap_remove(i);
        self.place.remove(&w.c.id);
        self.running += 1;
        self.by_tenant[w.tenant] += 1;
        self.by_connector[w.connector] += 1;
        if let Some(g) = w.group {
            self.group_busy[g] = true;
        }
        Some(w.c)
    }

    /// Gives back the slot of a run that started from this queue.
    pub fn finished(&mut self, c: &Candidate) {
        self.running = self.running.saturating_sub(1);
        if let Some(g) = c.group.as_deref().and_then(|g| self.names.get(g)) {
            self.group_busy[*g] = false;
        }
        if let Some(&t) = self.names.get(&c.tenant) {
            self.by_tenant[t] = self.by_tenant[t].saturating_sub(1);
        }
        if let Some(&k) = self.names.get(&c.connector) {
            self.by_connector[k] = self.by_connector[k].saturating_sub(1);
        }
    }

    /// The earliest due time of a waiting run, to know when to look again.
    pub fn next_due(&self) -> Option<i64> {
        let due = self.due.iter().map(|w| w.c.due_ms).min();
        let later = self.later.keys().next().map(|(d, _)| *d);
        due.into_iter().chain(later).min()
    }

    /// The earliest due time after `now_ms` (runs already due but blocked by a limit
    /// wait for a slot to be given back, not for the clock).
    pub fn next_due_after(&self, now_ms: i64) -> Option<i64> {
        self.later
            .range((now_ms.saturating_add(1), 0)..)
            .next()
            .map(|((d, _), _)| *d)
    }
}
