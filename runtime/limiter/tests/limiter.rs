//! The limiter as egress meets it: tasks acquiring budget on shared keys, on
//! tokio's paused clock so every wait is exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use sluice_limiter::{Key, Limiter, RateLimitRule};
use tokio::time::Instant;

fn key(endpoint: &str) -> Key {
    Key {
        connector: "rest".into(),
        credential: "acme".into(),
        endpoint: endpoint.into(),
    }
}

fn rule(requests: Option<u32>, per_ms: u64, concurrent: Option<u32>) -> RateLimitRule {
    RateLimitRule {
        endpoint: "api.example.com".into(),
        requests,
        per_ms,
        concurrent,
    }
}

const LONG: Duration = Duration::from_secs(3600);

fn throttle(retry_after: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("retry-after", retry_after.parse().unwrap());
    h
}

/// Let spawned tasks run until they block.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_served_by_priority_then_arrival() {
    let limiter = Limiter::new();
    let k = key("api.example.com");
    let one_at_a_time = rule(None, 1000, Some(1));
    let first = limiter
        .acquire(&k, Some(&one_at_a_time), 0, LONG)
        .await
        .unwrap();
    first.observe(200, &HeaderMap::new());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, priority) in [
        ("low-1", 0),
        ("low-2", 0),
        ("high", 10),
        ("mid", 5),
        ("low-3", 0),
    ] {
        let (limiter, k, r, order) = (
            limiter.clone(),
            k.clone(),
            one_at_a_time.clone(),
            order.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = limiter.acquire(&k, Some(&r), priority, LONG).await.unwrap();
            order.lock().unwrap().push(name);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(permit);
        }));
        settle().await;
    }
    assert_eq!(limiter.keys()[0].waiting, 5);
    drop(first);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["high", "mid", "low-1", "low-2", "low-3"]
    );
    let view = &limiter.keys()[0];
    assert_eq!(
        (view.stats.requests, view.stats.waits, view.in_flight),
        (6, 5, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_declared_window_spaces_requests_from_their_answers() {
    let limiter = Limiter::new();
    let k = key("api.example.com");
    let three_a_second = rule(Some(3), 1000, None);
    let start = Instant::now();
    let mut started = Vec::new();
    for _ in 0..7 {
        let permit = limiter
            .acquire(&k, Some(&three_a_second), 0, LONG)
            .await
            .unwrap();
        started.push(start.elapsed().as_millis());
        permit.observe(200, &HeaderMap::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(permit);
    }
    // Each request holds its slot from sending until 1 s after its answer.
    assert_eq!(started, [0, 100, 200, 1100, 1200, 1300, 2200]);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_pauses_the_key_for_every_run_then_one_probe_goes() {
    let limiter = Limiter::new();
    let k = key("api.example.com");
    let p = limiter.acquire(&k, None, 0, LONG).await.unwrap();
    p.observe(200, &HeaderMap::new());
    let q = limiter.acquire(&k, None, 0, LONG).await.unwrap();
    assert_eq!(q.observe(429, &throttle("5")), Some(Duration::from_secs(5)));
    drop((p, q));
    let start = Instant::now();
    let others: Vec<_> = (0..3)
        .map(|_| {
            let (limiter, k) = (limiter.clone(), k.clone());
            tokio::spawn(async move {
                let permit = limiter.acquire(&k, None, 0, LONG).await.unwrap();
                let at = start.elapsed();
                tokio::time::sleep(Duration::from_millis(50)).await;
                permit.observe(200, &HeaderMap::new());
                at
            })
        })
        .collect();
    let mut at = Vec::new();
    for t in others {
        at.push(t.await.unwrap().as_millis());
    }
    at.sort();
    assert_eq!(
        at,
        [5000, 5050, 5050],
        "the probe goes alone; its answer lets the rest go"
    );
    let view = &limiter.keys()[0];
    assert_eq!(view.stats.throttled, 1);
}

#[tokio::test(start_paused = true)]
async fn no_budget_within_the_longest_wait_is_reported_at_once_or_at_the_deadline() {
    let limiter = Limiter::new();
    let k = key("api.example.com");
    let slow = rule(Some(1), 10_000, Some(1));
    let p = limiter.acquire(&k, Some(&slow), 0, LONG).await.unwrap();
    p.observe(200, &HeaderMap::new());
    // In flight: the wait is unknown, so the request waits its whole second.
    let start = Instant::now();
    let e = limiter
        .acquire(&k, Some(&slow), 0, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(e.retry_after, Duration::from_secs(1));
    drop(p);
    // Known to be 10 s away: refused without waiting.
    let start = Instant::now();
    let e = limiter
        .acquire(&k, Some(&slow), 0, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(e.retry_after, Duration::from_secs(10));
    assert_eq!(limiter.keys()[0].stats.saturated, 2);
    assert!(limiter.acquire(&k, Some(&slow), 0, LONG).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaks_no_budget() {
    let limiter = Limiter::new();
    let k = key("api.example.com");
    let one = rule(None, 1000, Some(1));
    let p = limiter.acquire(&k, Some(&one), 0, LONG).await.unwrap();
    p.observe(200, &HeaderMap::new());
    let waiting = {
        let (limiter, k, one) = (limiter.clone(), k.clone(), one.clone());
        tokio::spawn(async move { limiter.acquire(&k, Some(&one), 0, LONG).await.map(drop) })
    };
    settle().await;
    drop(p);
    waiting.abort();
    let _ = waiting.await;
    let again = tokio::time::timeout(
        Duration::from_secs(1),
        limiter.acquire(&k, Some(&one), 0, LONG),
    );
    assert!(again.await.is_ok(), "the slot came back");
    assert_eq!(limiter.keys()[0].waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent_and_a_redefined_rule_applies() {
    let limiter = Limiter::new();
    let one = rule(None, 1000, Some(1));
    let a = limiter
        .acquire(&key("a"), Some(&one), 0, LONG)
        .await
        .unwrap();
    a.observe(200, &HeaderMap::new());
    let b = limiter
        .acquire(&key("b"), Some(&one), 0, LONG)
        .await
        .unwrap();
    b.observe(200, &HeaderMap::new());
    let two = rule(None, 1000, Some(2));
    let a2 = limiter
        .acquire(&key("a"), Some(&two), 0, Duration::ZERO)
        .await;
    assert!(a2.is_ok(), "the key follows its rule's new concurrency");
    assert_eq!(limiter.keys().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_fails_fast_while_open_and_recovers_through_one_probe() {
    let limiter = Limiter::new();
    let settings = sluice_limiter::BreakerSettings {
        failures: 2,
        cool_down_ms: 500,
    };
    for _ in 0..2 {
        limiter
            .pass("a", "api.example.com", &settings)
            .unwrap()
            .report(true);
    }
    let open = limiter
        .pass("a", "api.example.com", &settings)
        .err()
        .unwrap();
    assert_eq!(open.retry_after, Some(Duration::from_millis(500)));
    assert!(open.to_string().contains("api.example.com"), "{open}");
    assert!(
        limiter.pass("a", "other.example.com", &settings).is_ok(),
        "per host"
    );
    assert!(
        limiter.pass("b", "api.example.com", &settings).is_ok(),
        "per credential"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = limiter.pass("a", "api.example.com", &settings).unwrap();
    assert!(
        limiter.pass("a", "api.example.com", &settings).is_err(),
        "one probe at a time"
    );
    probe.report(false);
    assert!(limiter.pass("a", "api.example.com", &settings).is_ok());
    let view = &limiter.breaker_views()[0];
    assert_eq!(
        (
            view.credential.as_str(),
            view.host.as_str(),
            view.state,
            view.opened
        ),
        ("a", "api.example.com", "closed", 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_that_starts_a_window_wait_wakes_the_waiters_in_time() {
    let limiter = Limiter::new();
    let k = key("api.example.com");
    let one_per_200ms = rule(Some(1), 200, None);
    let p = limiter
        .acquire(&k, Some(&one_per_200ms), 0, LONG)
        .await
        .unwrap();
    p.observe(200, &HeaderMap::new());
    let start = Instant::now();
    // Waits while the request is in flight: nobody can know when it may go.
    let waiter = {
        let (limiter, k, r) = (limiter.clone(), k.clone(), one_per_200ms.clone());
        tokio::spawn(async move {
            limiter.acquire(&k, Some(&r), 0, LONG).await.unwrap();
            start.elapsed()
        })
    };
    settle().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(p);
    // The answer came at 50 ms; the slot frees one window later.
    assert_eq!(waiter.await.unwrap(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn many_waiters_on_a_window_each_go_when_their_slot_frees() {
    let limiter = Limiter::new();
    let k = key("api.example.com");
    let one_per_100ms = rule(Some(1), 100, None);
    let start = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (limiter, k, r) = (limiter.clone(), k.clone(), one_per_100ms.clone());
            tokio::spawn(async move {
                let permit = limiter.acquire(&k, Some(&r), 0, LONG).await.unwrap();
                let at = start.elapsed().as_millis();
                permit.observe(200, &HeaderMap::new());
                tokio::time::sleep(Duration::from_millis(10)).await;
                at
            })
        })
        .collect();
    let mut at = Vec::new();
    for t in tasks {
        at.push(t.await.unwrap());
    }
    at.sort();
    // Each waits for one window after the previous answer (held 10 ms).
    assert_eq!(at, [0, 110, 220, 330, 440]);
}
