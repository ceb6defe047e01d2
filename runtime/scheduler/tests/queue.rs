//! The ready queue under a controllable clock: priority order, aging, fair share
//! between tenants, and the limits.

use std::collections::HashMap;

use proptest::prelude::*;
use sluice_scheduler::{Aging, Candidate, Limits, ReadyQueue};

fn run(id: u128, tenant: &str, priority: i32, due_ms: i64) -> Candidate {
    Candidate {
        id,
        tenant: tenant.into(),
        connector: "sample".into(),
        priority,
        due_ms,
        group: None,
    }
}

fn queue(slots: usize) -> ReadyQueue {
    ReadyQueue::new(
        Limits {
            slots,
            ..Limits::default()
        },
        Aging { step_ms: 1_000 },
    )
}

#[test]
fn higher_priority_first_then_earlier_due() {
    let mut q = queue(10);
    q.push(run(1, "a", 0, 100));
    q.push(run(2, "a", 5, 200));
    q.push(run(3, "a", 0, 50));
    q.push(run(4, "a", 9, 10_000)); // not due yet
    let order: Vec<u128> = std::iter::from_fn(|| q.pop_ready(300).map(|c| c.id)).collect();
    assert_eq!(order, vec![2, 3, 1]);
    assert_eq!(q.next_due(), Some(10_000));
}

#[test]
fn a_waiting_run_rises_with_age_and_eventually_runs() {
    let mut q = queue(1);
    q.push(run(1, "a", 0, 0));
    // A stream of fresh priority-3 runs; the old priority-0 run ages one level per
    // second waited, ties them after 3 s and then wins by its earlier due time.
    let mut now = 0;
    let mut id = 100;
    loop {
        q.push(run(id, "a", 3, now));
        id += 1;
        let c = q.pop_ready(now).expect("something is due");
        q.finished(&c);
        if c.id == 1 {
            break;
        }
        now += 500;
        assert!(now < 10_000, "the old run starved");
    }
    assert_eq!(
        now, 3_000,
        "it wins exactly when it has aged to their level"
    );
}

#[test]
fn one_tenants_thousand_runs_do_not_hold_back_anothers_one() {
    let mut q = queue(2);
    for i in 0..1_000 {
        q.push(run(i, "big", 0, 0));
    }
    let first = q.pop_ready(0).unwrap();
    assert_eq!(first.tenant, "big");
    q.push(run(5_000, "small", 0, 10)); // arrives later, same priority
    // The next free slot goes to the tenant with fewer runs going.
    let next = q.pop_ready(10).unwrap();
    assert_eq!(next.tenant, "small");
}

#[test]
fn limits_per_tenant_and_connector_hold() {
    let mut q = ReadyQueue::new(
        Limits {
            slots: 10,
            per_tenant: Some(2),
            per_connector: HashMap::from([("rest".to_string(), 1)]),
        },
        Aging::default(),
    );
    for i in 0..5 {
        q.push(run(i, "a", 0, 0));
    }
    q.push(Candidate {
        connector: "rest".into(),
        ..run(10, "b", 0, 0)
    });
    q.push(Candidate {
        connector: "rest".into(),
        ..run(11, "c", 0, 0)
    });
    let started: Vec<Candidate> = std::iter::from_fn(|| q.pop_ready(0)).collect();
    let of = |t: &str| started.iter().filter(|c| c.tenant == t).count();
    assert_eq!(of("a"), 2);
    assert_eq!(started.iter().filter(|c| c.connector == "rest").count(), 1);
    assert_eq!(q.running(), 3);
}

proptest! {
    /// Whatever arrives, the limits are never exceeded and every run eventually starts.
    #[test]
    fn limits_hold_and_nothing_starves(
        runs in proptest::collection::vec((0u8..4, -3i32..3, 0i64..5_000), 1..60),
        slots in 1usize..4,
    ) {
        let mut q = ReadyQueue::new(
            Limits { slots, per_tenant: Some(2), per_connector: HashMap::new() },
            Aging { step_ms: 100 },
        );
        for (i, (tenant, priority, due)) in runs.iter().enumerate() {
            q.push(run(i as u128, &format!("t{tenant}"), *priority, *due));
        }
        let mut running: Vec<Candidate> = Vec::new();
        let mut started = 0;
        let mut now = 0;
        while started < runs.len() {
            while let Some(c) = q.pop_ready(now) {
                prop_assert!(c.due_ms <= now);
                running.push(c);
                started += 1;
                prop_assert!(running.len() <= slots);
                let mut per: HashMap<&str, usize> = HashMap::new();
                for r in &running { *per.entry(r.tenant.as_str()).or_default() += 1; }
                prop_assert!(per.values().all(|n| *n <= 2));
            }
            if let Some(done) = running.first().cloned() {
                running.remove(0);
                q.finished(&done);
            }
            now += 100;
            prop_assert!(now < 1_000_000, "runs starved");
        }
    }
}

#[test]
fn one_run_of_a_group_at_a_time() {
    let mut q = queue(10);
    let grouped = |id, due| Candidate {
        group: Some("wf".into()),
        ..run(id, "a", 0, due)
    };
    q.push(grouped(1, 0));
    q.push(grouped(2, 0));
    q.push(run(3, "a", 0, 0));
    let first = q.pop_ready(0).unwrap();
    assert_eq!(first.id, 1);
    assert_eq!(q.pop_ready(0).map(|c| c.id), Some(3));
    assert_eq!(q.pop_ready(0), None, "run 2 waits for run 1 of its group");
    q.finished(&first);
    assert_eq!(q.pop_ready(0).map(|c| c.id), Some(2));
}

/// The queue's rules stated plainly: every due run that fits the limits is ranked,
/// the best starts. The queue must choose exactly as this does, however it indexes.
#[derive(Default)]
struct Plain {
    waiting: Vec<Candidate>,
    /// Holding slots.
    running: Vec<Candidate>,
    /// Slot given back, group still busy.
    lingering: Vec<Candidate>,
}

impl Plain {
    fn pop(&mut self, now: i64, limits: &Limits, aging: Aging) -> Option<Candidate> {
        if self.running.len() >= limits.slots {
            return None;
        }
        let going = |f: &dyn Fn(&Candidate) -> bool| self.running.iter().filter(|r| f(r)).count();
        let fits = |c: &Candidate| {
            let group_free = c.group.as_ref().is_none_or(|g| {
                going(&|r| r.group.as_ref() == Some(g)) == 0
                    && !self.lingering.iter().any(|r| r.group.as_ref() == Some(g))
            });
            let tenant_free = limits
                .per_tenant
                .is_none_or(|max| going(&|r| r.tenant == c.tenant) < max);
            let connector_free = limits
                .per_connector
                .get(&c.connector)
                .is_none_or(|max| going(&|r| r.connector == c.connector) < *max);
            c.due_ms <= now && group_free && tenant_free && connector_free
        };
        let rank = |c: &Candidate| {
            let waited = now.saturating_sub(c.due_ms);
            let boost = if waited > 0 {
                waited / aging.step_ms
            } else {
                0
            };
            (
                i64::from(c.priority) + boost,
                std::cmp::Reverse(going(&|r| r.tenant == c.tenant)),
                std::cmp::Reverse(c.due_ms),
                std::cmp::Reverse(c.id),
            )
        };
        let best = (0..self.waiting.len())
            .filter(|&i| fits(&self.waiting[i]))
            .max_by_key(|&i| rank(&self.waiting[i]))?;
        let c = self.waiting.swap_remove(best);
        self.running.push(c.clone());
        Some(c)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push {
        tenant: u8,
        connector: u8,
        priority: i32,
        due: i64,
        group: Option<u8>,
    },
    Pop {
        advance: i64,
    },
    Finish(usize),
    ReleaseSlot(usize),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..3,
            0u8..2,
            -2i32..3,
            0i64..3_000,
            proptest::option::of(0u8..3)
        )
            .prop_map(|(tenant, connector, priority, due, group)| Op::Push {
                tenant,
                connector,
                priority,
                due,
                group,
            }),
        (0i64..400).prop_map(|advance| Op::Pop { advance }),
        (0usize..8).prop_map(Op::Finish),
        (0usize..8).prop_map(Op::ReleaseSlot),
        (0usize..64).prop_map(Op::Remove),
    ]
}

proptest! {
    /// Under any sequence of arrivals, starts, finishes (in one step, or the slot
    /// first and the group later) and removals, the queue starts
    /// the same run as the plain statement of its rules, and waits for the same.
    #[test]
    fn starts_what_the_rules_say(ops in proptest::collection::vec(op(), 1..200), slots in 1usize..5) {
        let limits = Limits {
            slots,
            per_tenant: Some(2),
            per_connector: HashMap::from([("c1".to_string(), 1)]),
        };
        let aging = Aging { step_ms: 500 };
        let mut q = ReadyQueue::new(limits.clone(), aging);
        let mut plain = Plain::default();
        let mut pushed: Vec<u128> = Vec::new();
        let mut now = 0;
        for op in ops {
            match op {
                Op::Push { tenant, connector, priority, due, group } => {
                    let c = Candidate {
                        id: pushed.len() as u128,
                        tenant: format!("t{tenant}"),
                        connector: format!("c{connector}"),
                        priority,
                        due_ms: due,
                        group: group.map(|g| format!("g{g}")),
                    };
                    pushed.push(c.id);
                    q.push(c.clone());
                    plain.waiting.push(c);
                }
                Op::Pop { advance } => {
                    now += advance;
                    loop {
                        let got = q.pop_ready(now);
                        prop_assert_eq!(got.clone(), plain.pop(now, &limits, aging));
                        if got.is_none() {
                            break;
                        }
                    }
                }
                Op::Finish(i) => {
                    let (running, lingering) = (plain.running.len(), plain.lingering.len());
                    if running + lingering > 0 {
                        let i = i % (running + lingering);
                        if i < running {
                            q.finished(&plain.running.remove(i));
                        } else {
                            q.release_group(&plain.lingering.remove(i - running));
                        }
                    }
                }
                Op::ReleaseSlot(i) => {
                    if !plain.running.is_empty() {
                        let c = plain.running.remove(i % plain.running.len());
                        q.release_slot(&c);
                        plain.lingering.push(c);
                    }
                }
                Op::Remove(i) => {
                    if let Some(&id) = pushed.get(i) {
                        let was = plain.waiting.iter().position(|c| c.id == id);
                        if let Some(w) = was {
                            plain.waiting.swap_remove(w);
                        }
                        prop_assert_eq!(q.remove(id), was.is_some());
                    }
                }
            }
            prop_assert_eq!(q.waiting(), plain.waiting.len());
            prop_assert_eq!(q.running(), plain.running.len());
            prop_assert_eq!(q.next_due(), plain.waiting.iter().map(|c| c.due_ms).min());
        }
    }
}
