//! Properties of the limiter over random workloads, on tokio's paused clock: many
//! tasks with random priorities and holding times on one key under a random rule.
//! Whatever the interleaving, no request goes beyond the rule's concurrency or
//! window, and every request is served without waiting out its deadline (a lost
//! wake-up would show as a request served only at its deadline).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use proptest::prelude::*;
use sluice_limiter::{Key, Limiter, RateLimitRule};
use tokio::time::Instant;

/// Longer than any workload here can take when the limiter wakes waiters in time.
const DEADLINE: Duration = Duration::from_secs(10_000);

#[derive(Debug, Clone)]
struct Task {
    priority: i64,
    start_ms: u64,
    hold_ms: u64,
    requests: u32,
}

fn task() -> impl Strategy<Value = Task> {
    (0i64..3, 0u64..300, 0u64..50, 1u32..4).prop_map(|(priority, start_ms, hold_ms, requests)| {
        Task {
            priority,
            start_ms,
            hold_ms,
            requests,
        }
    })
}

fn rule() -> impl Strategy<Value = RateLimitRule> {
    (
        prop::option::of(1u32..5),
        10u64..200,
        prop::option::of(1u32..4),
    )
        .prop_filter_map(
            "a rule limits something",
            |(requests, per_ms, concurrent)| {
                (requests.is_some() || concurrent.is_some()).then(|| RateLimitRule {
                    endpoint: "api.example.com".into(),
                    requests,
                    per_ms,
                    concurrent,
                })
            },
        )
}

/// (sent, answered) of every request, in virtual time since the start.
type Log = Arc<Mutex<Vec<(Duration, Duration)>>>;

fn run(rule: &RateLimitRule, tasks: &[Task]) -> Vec<(Duration, Duration)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let limiter = Limiter::new();
        let key = Key {
            connector: "rest".into(),
            credential: "acme".into(),
            endpoint: "api.example.com".into(),
        };
        let start = Instant::now();
        let log: Log = Arc::default();
        let handles: Vec<_> = tasks
            .iter()
            .cloned()
            .map(|t| {
                let (limiter, key, rule, log) =
                    (limiter.clone(), key.clone(), rule.clone(), log.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(t.start_ms)).await;
                    for _ in 0..t.requests {
                        let permit = limiter
                            .acquire(&key, Some(&rule), t.priority, DEADLINE)
                            .await
                            .unwrap();
                        let sent = start.elapsed();
                        tokio::time::sleep(Duration::from_millis(t.hold_ms)).await;
                        permit.observe(200, &HeaderMap::new());
                        let answered = start.elapsed();
                        drop(permit);
                        log.lock().unwrap().push((sent, answered));
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        log.lock().unwrap().clone()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_request_breaks_the_rule_and_none_waits_for_its_deadline(
        rule in rule(),
        tasks in prop::collection::vec(task(), 1..12),
    ) {
        let log = run(&rule, &tasks);
        let total: u32 = tasks.iter().map(|t| t.requests).sum();
        prop_assert_eq!(log.len() as u32, total);
        let period = rule.period();
        for (sent, _) in &log {
            let in_flight = log.iter().filter(|(s, a)| s <= sent && sent < a).count() as u32;
            if let Some(c) = rule.concurrent {
                prop_assert!(in_flight <= c, "{} in flight at {:?}, limit {}", in_flight, sent, c);
            }
            if let Some(n) = rule.requests {
                // A request holds its place from sending until one interval after
                // its answer.
                let held = log.iter().filter(|(s, a)| s <= sent && *sent < *a + period).count() as u32;
                prop_assert!(held <= n, "{} in the window at {:?}, limit {}", held, sent, n);
            }
            prop_assert!(*sent < DEADLINE, "a request waited out its deadline: {:?}", sent);
        }
    }
}
