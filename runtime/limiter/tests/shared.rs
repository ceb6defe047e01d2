//! Budgets shared by the nodes of a cluster: the rules of a holding ([`Share`]) over
//! explicit instants, then several limiters ("nodes") sharing one key through a
//! source in memory that keeps a store's promise, on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use sluice_limiter::{
    Ask, BudgetSource, Grant, Key, Limiter, RateLimitRule, Share, ShareSettings, SourceError,
    SyncFuture,
};
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(3600);

fn settings() -> ShareSettings {
    ShareSettings {
        poll: Duration::from_millis(250),
        grace: Duration::from_secs(10),
        slices: 10,
        idle: Duration::from_secs(5),
    }
}

fn grant(held: u32) -> Grant {
    Grant {
        held,
        holders: 1,
        others_wanting: false,
        paused_for: None,
    }
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

// ---- The rules of a holding, over explicit instants.

#[test]
fn nothing_goes_before_the_store_answers_and_nothing_after_half_the_grace() {
    let t0 = Instant::now();
    let mut share = Share::new(settings(), t0);
    assert!(!share.ready());
    assert_eq!(share.allowed(t0), 0);
    let plan = share.plan(t0, 100, 0, 1, 0);
    assert_eq!(plan.hold, 10, "a slice ahead of need");
    assert!(plan.wanting);
    share.settle(t0, 100, Ok(&grant(10)), ms(t0, 2));
    assert!(share.ready());
    assert_eq!(share.allowed(ms(t0, 2)), 10);
    // Half the grace after the sync was sent, not after its answer came.
    assert_eq!(share.allowed(ms(t0, 4_999)), 10);
    assert_eq!(share.allowed(ms(t0, 5_000)), 0);
}

#[test]
fn a_slice_is_taken_ahead_of_need_and_kept_while_requests_come() {
    let t0 = Instant::now();
    let mut share = Share::new(settings(), t0);
    share.plan(t0, 50, 0, 0, 0);
    share.settle(t0, 50, Ok(&grant(5)), t0);
    // 5 of 50 is one slice; 3 in use leave less than a slice: ask for one more.
    assert_eq!(share.plan(ms(t0, 250), 50, 3, 0, 3).hold, 8);
    share.settle(ms(t0, 250), 50, Ok(&grant(8)), ms(t0, 251));
    // 2 in use leave a slice and more: keep what is held.
    assert_eq!(share.plan(ms(t0, 500), 50, 2, 0, 4).hold, 8);
    share.settle(ms(t0, 500), 50, Ok(&grant(8)), ms(t0, 501));
    // As many as wait, when that is more than a slice.
    assert_eq!(share.plan(ms(t0, 750), 50, 8, 12, 9).hold, 20);
    share.settle(ms(t0, 750), 50, Ok(&grant(20)), ms(t0, 751));
    // Never more than the limit.
    assert_eq!(share.plan(ms(t0, 1_000), 50, 20, 40, 30).hold, 50);
}

#[test]
fn unused_slots_go_back_after_a_quiet_poll_but_never_those_in_use() {
    let t0 = Instant::now();
    let mut share = Share::new(settings(), t0);
    assert_eq!(share.plan(t0, 100, 0, 20, 0).hold, 20);
    share.settle(t0, 100, Ok(&grant(20)), t0);
    assert_eq!(share.plan(ms(t0, 100), 100, 4, 0, 4).hold, 20);
    share.settle(ms(t0, 100), 100, Ok(&grant(20)), ms(t0, 100));
    // No request since the last plan, but the last one was under a poll ago.
    assert_eq!(share.plan(ms(t0, 200), 100, 4, 0, 4).hold, 20);
    share.settle(ms(t0, 200), 100, Ok(&grant(20)), ms(t0, 200));
    // A poll without requests: give back all but the 4 still in the window.
    let plan = share.plan(ms(t0, 400), 100, 4, 0, 4);
    assert_eq!(plan.hold, 4);
    // From the moment it is asked, no more than that is used.
    assert_eq!(share.allowed(ms(t0, 400)), 4);
    share.settle(ms(t0, 400), 100, Ok(&grant(4)), ms(t0, 401));
    assert_eq!(share.plan(ms(t0, 1_500), 100, 0, 0, 4).hold, 0);
    share.settle(ms(t0, 1_500), 100, Ok(&grant(0)), ms(t0, 1_501));
    assert!(
        !share.idle(ms(t0, 1_501), 0, 0),
        "not idle before the idle time"
    );
    assert!(share.idle(ms(t0, 5_400), 0, 0));
    assert!(
        !share.idle(ms(t0, 5_400), 1, 0),
        "a request still in the window"
    );
}

#[test]
fn a_failed_sync_counts_the_smaller_holding_and_keeps_the_older_confirmation() {
    let t0 = Instant::now();
    let mut share = Share::new(settings(), t0);
    share.plan(t0, 100, 0, 1, 0);
    share.settle(t0, 100, Ok(&grant(10)), t0);
    // Giving back 6 fails: the store may have applied it, so count 4.
    assert_eq!(share.plan(ms(t0, 1_000), 100, 4, 0, 0).hold, 4);
    let down = SourceError("down".into());
    assert_eq!(
        share.settle(ms(t0, 1_000), 100, Err(&down), ms(t0, 1_100)),
        None
    );
    assert_eq!(share.allowed(ms(t0, 1_100)), 4);
    assert!(
        share.starved(),
        "after a failure the task waits a whole poll"
    );
    // Growing fails: nothing more than before; still only until half the grace
    // after the last answered sync.
    share.plan(ms(t0, 2_000), 100, 4, 3, 1);
    share.settle(ms(t0, 2_000), 100, Err(&down), ms(t0, 2_100));
    assert_eq!(share.allowed(ms(t0, 4_999)), 4);
    assert_eq!(share.allowed(ms(t0, 5_000)), 0);
}

#[test]
fn a_node_over_its_share_shrinks_towards_it_while_another_waits() {
    let t0 = Instant::now();
    let mut share = Share::new(settings(), t0);
    share.plan(t0, 9, 0, 1, 0);
    share.settle(t0, 9, Ok(&grant(9)), t0);
    assert_eq!(share.allowed(t0), 9);
    let others_wait = Grant {
        held: 9,
        holders: 3,
        others_wanting: true,
        paused_for: None,
    };
    share.plan(ms(t0, 250), 9, 7, 0, 7);
    share.settle(ms(t0, 250), 9, Ok(&others_wait), ms(t0, 250));
    assert_eq!(share.allowed(ms(t0, 250)), 3, "a third of 9");
    // It keeps what is in use and gives back the rest.
    assert_eq!(share.plan(ms(t0, 500), 9, 7, 4, 8).hold, 7);
    share.settle(ms(t0, 500), 9, Ok(&others_wait), ms(t0, 500));
    assert_eq!(share.plan(ms(t0, 1_500), 9, 2, 4, 9).hold, 3);
    // Once nobody else waits, it may grow again.
    share.settle(ms(t0, 1_500), 9, Ok(&grant(3)), ms(t0, 1_500));
    assert_eq!(share.plan(ms(t0, 1_750), 9, 3, 4, 10).hold, 7);
}

#[test]
fn a_pause_learned_here_is_published_until_the_store_took_it() {
    let t0 = Instant::now();
    let mut share = Share::new(settings(), t0);
    share.publish(ms(t0, 3_000));
    assert!(share.take_poke(), "a pause to publish asks for a sync");
    let plan = share.plan(ms(t0, 1_000), 0, 0, 0, 1);
    assert_eq!(plan.pause, Some(Duration::from_secs(2)));
    let down = SourceError("down".into());
    share.settle(ms(t0, 1_000), 0, Err(&down), ms(t0, 1_000));
    assert!(
        share.ready(),
        "a key without a declared window goes without the store"
    );
    let plan = share.plan(ms(t0, 1_500), 0, 0, 0, 1);
    assert_eq!(plan.pause, Some(Duration::from_millis(1_500)), "again");
    let paused = Grant {
        paused_for: Some(Duration::from_millis(1_400)),
        ..grant(0)
    };
    assert_eq!(
        share.settle(ms(t0, 1_500), 0, Ok(&paused), ms(t0, 1_600)),
        Some(ms(t0, 3_000)),
        "the store's pause, from the answer's arrival"
    );
    assert_eq!(share.plan(ms(t0, 1_750), 0, 0, 0, 1).pause, None);
}

// ---- Limiters sharing a key through a source in memory.

/// One key's state in the in-memory store.
#[derive(Default)]
struct KeyState {
    /// Per node: slots, wanting, until.
    holds: HashMap<usize, (u32, bool, Instant)>,
    paused_until: Option<Instant>,
}

/// A store in memory keeping the promise of a shared store: the holdings of a
/// key that have not expired never add up to more than its limit.
#[derive(Default)]
struct Cluster {
    keys: Mutex<HashMap<Key, KeyState>>,
    syncs: Mutex<u64>,
}

/// One node's client of the cluster's store.
struct Node {
    cluster: Arc<Cluster>,
    id: usize,
    down: AtomicBool,
    round_trip: Duration,
}

impl BudgetSource for Node {
    fn sync<'a>(&'a self, ask: &'a Ask) -> SyncFuture<'a> {
        Box::pin(async move {
            if self.down.load(Ordering::Relaxed) {
                return Err(SourceError("the store is away".into()));
            }
            // Half the round trip before the store decides, half after.
            tokio::time::sleep(self.round_trip / 2).await;
            let now = Instant::now();
            let grant = {
                *self.cluster.syncs.lock().unwrap() += 1;
                let mut keys = self.cluster.keys.lock().unwrap();
                let state = keys.entry(ask.key.clone()).or_default();
                if let Some(p) = ask.pause {
                    let until = now + p;
                    state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
                }
                let mut held = 0;
                let (mut others, mut holders, mut wanting) = (0u32, 1u32, false);
                if ask.limit > 0 {
                    for (node, (slots, w, until)) in &state.holds {
                        if *node != self.id && *until > now {
                            others += slots;
                            holders += u32::from(*slots > 0 || *w);
                            wanting |= *w;
                        }
                    }
                    held = ask.hold.min(ask.limit.saturating_sub(others));
                    state
                        .holds
                        .insert(self.id, (held, ask.wanting, now + ask.hold_for));
                }
                Grant {
                    held,
                    holders,
                    others_wanting: wanting,
                    paused_for: state
                        .paused_until
                        .map(|u| u.saturating_duration_since(now))
                        .filter(|d| !d.is_zero()),
                }
            };
            tokio::time::sleep(self.round_trip / 2).await;
            Ok(grant)
        })
    }
}

fn key() -> Key {
    Key {
        connector: "rest".into(),
        credential: "acme".into(),
        endpoint: "api.example.com".into(),
    }
}

fn rule(requests: u32, per_ms: u64) -> RateLimitRule {
    RateLimitRule {
        endpoint: "api.example.com".into(),
        requests: Some(requests),
        per_ms,
        concurrent: None,
    }
}

/// A limiter and its client of the cluster's store.
type Member = (Arc<Limiter>, Arc<Node>);

fn nodes(n: usize) -> (Arc<Cluster>, Vec<Member>) {
    let cluster = Arc::new(Cluster::default());
    let nodes = (0..n)
        .map(|id| {
            let node = Arc::new(Node {
                cluster: cluster.clone(),
                id,
                down: AtomicBool::new(false),
                round_trip: Duration::from_millis(2),
            });
            let limiter = Limiter::new();
            assert!(limiter.share(node.clone(), settings()));
            assert!(!limiter.share(node.clone(), settings()), "shares once");
            (limiter, node)
        })
        .collect();
    (cluster, nodes)
}

/// The most arrivals in any span of `period` (half-open), over sorted instants.
fn most_in_any_window(arrivals: &[Instant], period: Duration) -> usize {
    let mut most = 0;
    let mut start = 0;
    for (end, at) in arrivals.iter().enumerate() {
        while *at >= arrivals[start] + period {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

#[tokio::test(start_paused = true)]
async fn three_nodes_never_let_the_api_count_more_than_the_limit_in_any_window() {
    let (cluster, nodes) = nodes(3);
    let limit = 12;
    let period = Duration::from_millis(1_000);
    let r = rule(limit, 1_000);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let per_node = Arc::new(Mutex::new(vec![0u32; 3]));
    let start = Instant::now();
    let run_for = Duration::from_secs(20);
    let mut tasks = Vec::new();
    for (n, (limiter, _)) in nodes.iter().enumerate() {
        for t in 0..4u64 {
            let (limiter, r, arrivals, per_node) = (
                limiter.clone(),
                r.clone(),
                arrivals.clone(),
                per_node.clone(),
            );
            // Latencies differ per task; the API counts a request somewhere
            // between its sending and its answer.
            let (to_api, back) = (
                Duration::from_millis(1 + 7 * t + n as u64),
                Duration::from_millis(3 + 11 * t),
            );
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < run_for {
                    let permit = limiter.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
                    tokio::time::sleep(to_api).await;
                    arrivals.lock().unwrap().push(Instant::now());
                    per_node.lock().unwrap()[n] += 1;
                    tokio::time::sleep(back).await;
                    permit.observe(200, &HeaderMap::new());
                    drop(permit);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    let most = most_in_any_window(&arrivals, period);
    assert!(
        most <= limit as usize,
        "{most} requests in one window of a limit of {limit}"
    );
    // Virtual time, so this is exact: the budget is used, not starved (a node
    // alone sends about `limit` per interval plus latency).
    let per_node = per_node.lock().unwrap().clone();
    let total: u32 = per_node.iter().sum();
    assert!(
        total >= limit * 20 / 2,
        "{total} requests in 20 windows: {per_node:?}"
    );
    assert!(
        per_node.iter().all(|n| *n >= total / 10),
        "every node gets a share: {per_node:?}"
    );
    println!("{total} requests {per_node:?}, at most {most} in a window of {limit}");
    // Each node syncs about once a poll, and not much more when it needs slots.
    let syncs = *cluster.syncs.lock().unwrap();
    let polls = 3 * run_for.as_millis() / settings().poll.as_millis();
    println!("{syncs} syncs in {polls} polls");
    assert!(
        u128::from(syncs) <= 2 * polls,
        "{syncs} syncs in {polls} polls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttle_on_one_node_pauses_the_others_within_a_poll() {
    let (_cluster, nodes) = nodes(3);
    let r = rule(100, 1_000);
    for (limiter, _) in &nodes {
        let p = limiter.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
        p.observe(200, &HeaderMap::new());
    }
    let mut throttled = HeaderMap::new();
    throttled.insert("retry-after", "30".parse().unwrap());
    let p = nodes[0].0.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
    assert_eq!(p.observe(429, &throttled), Some(Duration::from_secs(30)));
    drop(p);
    tokio::time::sleep(settings().poll + Duration::from_millis(10)).await;
    for (limiter, _) in &nodes[1..] {
        let paused = limiter.keys()[0].paused_for.expect("paused");
        assert!(
            paused > Duration::from_secs(29) && paused <= Duration::from_secs(30),
            "{paused:?}"
        );
        let refused = limiter
            .acquire(&key(), Some(&r), 0, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(29));
    }
}

#[tokio::test(start_paused = true)]
async fn a_used_up_window_the_api_reports_pauses_every_node_until_its_reset() {
    let (_cluster, nodes) = nodes(2);
    let r = rule(100, 1_000);
    let mut used_up = HeaderMap::new();
    used_up.insert("ratelimit-remaining", "0".parse().unwrap());
    used_up.insert("ratelimit-reset", "5".parse().unwrap());
    let p = nodes[0].0.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
    assert_eq!(p.observe(200, &used_up), None);
    drop(p);
    // Published with node 0's next sync, at once.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let start = Instant::now();
    // The other node's first request waits for its first sync, which tells it.
    let p = nodes[1].0.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(4_900),
        "{:?}",
        start.elapsed()
    );
    drop(p);
}

#[tokio::test(start_paused = true)]
async fn a_node_cut_off_from_the_store_stops_sending_after_half_the_grace() {
    let (_cluster, nodes) = nodes(1);
    let (limiter, node) = &nodes[0];
    let r = rule(1_000, 10);
    let no_window = None;
    limiter.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
    let other = Key {
        endpoint: "other.example.com".into(),
        ..key()
    };
    limiter.acquire(&other, no_window, 0, LONG).await.unwrap();
    node.down.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    let half_grace = settings().grace / 2;
    let mut last = cut;
    while let Ok(p) = limiter
        .acquire(&key(), Some(&r), 0, Duration::from_secs(1))
        .await
    {
        last = Instant::now();
        p.observe(200, &HeaderMap::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(p);
        assert!(last.duration_since(cut) < half_grace + Duration::from_secs(1));
    }
    assert!(last.duration_since(cut) >= half_grace - Duration::from_millis(400));
    // A key without a declared window has no budget to protect: it goes on.
    let p = limiter.acquire(&other, no_window, 0, LONG).await.unwrap();
    drop(p);
    // The store back: the key gets slots again.
    node.down.store(false, Ordering::Relaxed);
    limiter
        .acquire(&key(), Some(&r), 0, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(limiter.keys().iter().any(|k| k.held.is_some_and(|h| h > 0)));
}

#[tokio::test(start_paused = true)]
async fn an_idle_key_gives_its_slots_back_and_stops_syncing() {
    let (cluster, nodes) = nodes(2);
    let r = rule(10, 1_000);
    let p = nodes[0].0.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
    p.observe(200, &HeaderMap::new());
    drop(p);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        nodes[0].0.keys()[0].held,
        Some(0),
        "given back once out of the window"
    );
    tokio::time::sleep(settings().idle).await;
    let before = *cluster.syncs.lock().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(*cluster.syncs.lock().unwrap(), before, "no more syncs");
    // The other node may take all of it now, and the first comes back when used.
    let mut permits = Vec::new();
    for _ in 0..10 {
        let p = nodes[1].0.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
        p.observe(200, &HeaderMap::new());
        permits.push(p);
    }
    let refused = nodes[0]
        .0
        .acquire(&key(), Some(&r), 0, Duration::from_millis(500))
        .await;
    assert!(refused.is_err(), "the other node holds all 10");
    drop(permits);
}

#[tokio::test(start_paused = true)]
async fn slow_syncs_and_scattered_latencies_never_break_the_limit_either() {
    let cluster = Arc::new(Cluster::default());
    let limit = 7;
    let period = Duration::from_millis(500);
    let r = rule(limit, 500);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let run_for = Duration::from_secs(30);
    let mut tasks = Vec::new();
    for n in 0..3u64 {
        let node = Arc::new(Node {
            cluster: cluster.clone(),
            id: n as usize,
            down: AtomicBool::new(false),
            round_trip: Duration::from_millis(20 + 15 * n),
        });
        let limiter = Limiter::new();
        limiter.share(node, settings());
        for t in 0..6u64 {
            let (limiter, r, arrivals) = (limiter.clone(), r.clone(), arrivals.clone());
            tasks.push(tokio::spawn(async move {
                let mut seed = (n * 6 + t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut next = move |below: u64| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % below
                };
                while start.elapsed() < run_for {
                    // Bursts and pauses of the runs on this node.
                    tokio::time::sleep(Duration::from_millis(next(400))).await;
                    let permit = limiter.acquire(&key(), Some(&r), 0, LONG).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(next(300))).await;
                    arrivals.lock().unwrap().push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(next(300))).await;
                    permit.observe(200, &HeaderMap::new());
                    drop(permit);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    let most = most_in_any_window(&arrivals, period);
    println!(
        "{} requests, at most {most} in a window of {limit}",
        arrivals.len()
    );
    assert!(most <= limit as usize, "{most} in one window of {limit}");
    assert!(arrivals.len() > 100, "{} requests", arrivals.len());
}
