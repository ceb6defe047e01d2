//! Ready-queue benchmark: how long a start takes with a backlog of due runs (a
//! catch-up after downtime, a burst of fires while every slot is taken).
//!
//! `cargo bench -p sluice-scheduler --bench queue`; `SLUICE_BENCH_BACKLOG` (due runs
//! waiting, default 10,000, over 100 tenants and 3 priorities, each run in a workflow
//! group that no other run shares but in one group of nine, where a second run waits
//! for the first), `SLUICE_BENCH_SLOTS` (default 512).

#![allow(clippy::unwrap_used, reason = "a benchmark binary")]

use std::time::Instant;

use sluice_scheduler::{Aging, Candidate, Limits, ReadyQueue};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let backlog = env("SLUICE_BENCH_BACKLOG", 10_000);
    let slots = env("SLUICE_BENCH_SLOTS", 512);
    let mut q = ReadyQueue::new(
        Limits {
            slots,
            per_tenant: Some(slots / 4),
            ..Limits::default()
        },
        Aging::default(),
    );
    let candidate = |i: usize| Candidate {
        id: i as u128,
        tenant: format!("tenant-{}", i % 100),
        connector: "sample".into(),
        priority: (i % 3) as i32,
        due_ms: (i % 1_000) as i64,
        group: Some(format!("workflow-{}", i % (backlog - backlog / 10).max(1))),
    };
    for i in 0..backlog {
        q.push(candidate(i));
    }
    // Fill the slots, then start one run each time one finishes, as the dispatcher
    // does while behind.
    let now = 1_000;
    let mut running = std::collections::VecDeque::new();
    while let Some(c) = q.pop_ready(now) {
        running.push_back(c);
    }
    let t0 = Instant::now();
    let mut started = 0usize;
    while let Some(done) = running.pop_front() {
        q.finished(&done);
        while let Some(c) = q.pop_ready(now) {
            running.push_back(c);
            started += 1;
        }
    }
    let elapsed = t0.elapsed();
    println!(
        "ready queue, {backlog} due runs, {slots} slots: {started} starts in {:.1} ms, {:.2} us a start",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / started.max(1) as f64
    );
}
