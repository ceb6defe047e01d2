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

/// Where a waiting run is.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Not due yet: in `later`, at this due time.
    Later(i64),
    /// Due: in this bucket, at this due time.
    Due(BucketKey, i64),
    /// Due, but a run of its (interned) group held a slot when it was looked at.
    Parked(usize),
}

/// Due runs that rank alike but for their due time and id: one tenant, connector and
/// priority. Ordered by (due, id), a bucket's first run is its best (it has aged the
/// most), so a pop looks at one run per bucket instead of every due run.
type BucketKey = (usize, usize, i32);

/// Waiting runs and the runs holding slots.
///
/// Runs not due yet wait in a map ordered by due time and are moved to their bucket
/// when their time comes. A pop ranks the first run of each bucket within the limits
/// (runs whose group is busy are parked until it is free), so it costs a pass over the
/// buckets, not over the due runs: a backlog of thousands (a catch-up after downtime,
/// a burst of fires while every slot is taken) does not make each start slower.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    /// Due runs (due at or before the last `now` seen), by bucket, then (due, id).
    due: HashMap<BucketKey, BTreeMap<(i64, u128), Waiting>>,
    /// Due runs set aside while a run of their group holds a slot, per interned group.
    parked: HashMap<usize, Vec<Waiting>>,
    /// Runs due later, by (due, id).
    later: BTreeMap<(i64, u128), Waiting>,
    /// Where each waiting run is.
    place: HashMap<u128, Place>,
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

impl Waiting {
    fn bucket(&self) -> BucketKey {
        (self.tenant, self.connector, self.c.priority)
    }
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
        self.place.insert(w.c.id, Place::Later(w.c.due_ms));
        self.later.insert((w.c.due_ms, w.c.id), w);
    }

    /// Puts a due run in its bucket.
    fn make_due(&mut self, w: Waiting) {
        let key = w.bucket();
        self.place.insert(w.c.id, Place::Due(key, w.c.due_ms));
        self.due
            .entry(key)
            .or_default()
            .insert((w.c.due_ms, w.c.id), w);
    }

    /// Removes a waiting run; returns whether it was there.
    pub fn remove(&mut self, id: u128) -> bool {
        match self.place.remove(&id) {
            Some(Place::Later(due)) => self.later.remove(&(due, id)).is_some(),
            Some(Place::Due(key, due)) => {
                let Some(bucket) = self.due.get_mut(&key) else {
                    return false;
                };
                let gone = bucket.remove(&(due, id)).is_some();
                if bucket.is_empty() {
                    self.due.remove(&key);
                }
                gone
            }
            Some(Place::Parked(group)) => {
                let Some(runs) = self.parked.get_mut(&group) else {
                    return false;
                };
                let gone = match runs.iter().position(|w| w.c.id == id) {
                    Some(i) => {
                        runs.swap_remove(i);
                        true
                    }
                    None => false,
                };
                if runs.is_empty() {
                    self.parked.remove(&group);
                }
                gone
            }
            None => false,
        }
    }

    /// Runs waiting.
    pub fn waiting(&self) -> usize {
        self.place.len()
    }

    /// Runs holding slots.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The run's priority after aging, at `now_ms`.
    pub fn effective_priority(&self, c: &Candidate, now_ms: i64) -> i64 {
        aged(self.aging, c.priority, c.due_ms, now_ms)
    }

    /// Moves the runs due by `now_ms` to their buckets.
    fn promote(&mut self, now_ms: i64) {
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let w = entry.remove();
            self.make_due(w);
        }
    }

    /// Takes the next run to start at `now_ms`, if one is due and fits the limits; it
    /// holds its slot until [`ReadyQueue::finished`].
    pub fn pop_ready(&mut self, now_ms: i64) -> Option<Candidate> {
        if self.running >= self.limits.slots {
            return None;
        }
        self.promote(now_ms);
        let mut best: Option<(BucketKey, (i64, u128), Rank)> = None;
        let mut emptied = false;
        for (&key @ (tenant, connector, priority), bucket) in &mut self.due {
            let tenant_full =
                (self.limits.per_tenant).is_some_and(|max| self.by_tenant[tenant] >= max);
            let connector_full = self.connector_limit[connector]
                .is_some_and(|max| self.by_connector[connector] >= max);
            if tenant_full || connector_full {
                continue;
            }
            // The bucket's first run whose group holds no slot; those before it wait
            // parked until their group's run finishes.
            while let Some((&at @ (due_ms, id), w)) = bucket.first_key_value() {
                if let Some(group) = w.group.filter(|g| self.group_busy[*g]) {
                    if let Some(w) = bucket.remove(&at) {
                        self.place.insert(id, Place::Parked(group));
                        self.parked.entry(group).or_default().push(w);
                    }
                    emptied |= bucket.is_empty();
                    continue;
                }
                let rank = (
                    aged(self.aging, priority, due_ms, now_ms),
                    Reverse(self.by_tenant[tenant]),
                    Reverse(due_ms),
                    Reverse(id),
                );
                if best.as_ref().is_none_or(|(_, _, r)| rank > *r) {
                    best = Some((key, at, rank));
                }
                break;
            }
        }
        if emptied {
            self.due.retain(|_, b| !b.is_empty());
        }
        let (key, at, _) = best?;
        let bucket = self.due.get_mut(&key)?;
        let w = bucket.remove(&at)?;
        if bucket.is_empty() {
            self.due.remove(&key);
        }
        self.place.remove(&w.c.id);
        self.running += 1;
        self.by_tenant[w.tenant] += 1;
        self.by_connector[w.connector] += 1;
        if let Some(g) = w.group {
            self.group_busy[g] = true;
        }
        Some(w.c)
    }

    /// Gives back the slot of a run that started from this queue, and frees its group.
    pub fn finished(&mut self, c: &Candidate) {
        self.release_slot(c);
        self.release_group(c);
    }

    /// Gives back the slot of a run that started from this queue (the global, tenant
    /// and connector counts) while its group stays busy: its work is over, but the
    /// next run of its group must wait until [`ReadyQueue::release_group`].
    pub fn release_slot(&mut self, c: &Candidate) {
        self.running = self.running.saturating_sub(1);
        if let Some(&t) = self.names.get(&c.tenant) {
            self.by_tenant[t] = self.by_tenant[t].saturating_sub(1);
        }
        if let Some(&k) = self.names.get(&c.connector) {
            self.by_connector[k] = self.by_connector[k].saturating_sub(1);
        }
    }

    /// Frees the group of a run that started from this queue (after
    /// [`ReadyQueue::release_slot`]); its parked runs may start again.
    pub fn release_group(&mut self, c: &Candidate) {
        if let Some(&g) = c.group.as_deref().and_then(|g| self.names.get(g)) {
            self.group_busy[g] = false;
            for w in self.parked.remove(&g).unwrap_or_default() {
                self.make_due(w);
            }
        }
    }

    /// The earliest due time of a waiting run, to know when to look again.
    pub fn next_due(&self) -> Option<i64> {
        let due = (self.due.values())
            .filter_map(|b| b.keys().next().map(|(d, _)| *d))
            .chain(self.parked.values().flatten().map(|w| w.c.due_ms))
            .min();
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

/// A priority after aging: one level more per `aging.step_ms` waited past due.
fn aged(aging: Aging, priority: i32, due_ms: i64, now_ms: i64) -> i64 {
    let waited = now_ms.saturating_sub(due_ms);
    let boost = if aging.step_ms > 0 && waited > 0 {
        waited / aging.step_ms
    } else {
        0
    };
    i64::from(priority).saturating_add(boost)
}
