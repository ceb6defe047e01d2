//! What sharing a credential's budget across the nodes of a cluster costs: permits
//! per second and the time from asking for a permit to giving it back, with budgets
//! shared through PostgreSQL versus node-local, for one limiter ("node") and three.
//!
//! `cargo bench -p sluice-engine --bench shared_budget` (release). PostgreSQL: a fresh
//! schema of the test database (`SLUICE_TEST_POSTGRES`, by default
//! `postgres://root@127.0.0.1:5432/test`), dropped afterwards; or the store
//! `SLUICE_BENCH_POSTGRES` names. `SLUICE_BENCH_SECONDS` sets each phase's length
//! (default 3).
//!
//! Three tables:
//!
//! - **Overhead**: a declared window so large it never binds (1,000,000 requests per
//!   millisecond, as the limiter's own benchmark), 8 tasks per limiter asking, reading
//!   an answer and giving back on one key as fast as they can. The shared rows cost
//!   the limiter's hot path (in memory) plus its syncs with the store, counted with
//!   their latency.
//! - **First permit of a key**: the time to the first permit of each of 200 fresh
//!   keys. Shared, a key's first request waits for its first sync.
//! - **A binding budget**: 300 requests per 100 ms, 16 tasks per limiter, each
//!   request holding its permit 2 ms (an API's latency): how much of the declared
//!   rate the limiters reach. Three node-local limiters are the cluster without a
//!   shared budget: each reaches the limit on its own, three times it together.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

/// The allocator `sluice` itself runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use sluice_engine::StoreBudgets;
use sluice_host::limiter::{
    Ask, BudgetSource, Key, Limiter, RateLimitRule, ShareSettings, SyncFuture,
};
use sluice_store::Store;
use sluice_store::postgres::PgStore;
use sluice_testkit::pg::TestSchema;
use sluice_testkit::stats::{bench_postgres_url, env_or, percentile, rate};

/// A store's budgets, counting its syncs and timing them.
struct Counted {
    inner: StoreBudgets,
    syncs: Mutex<Vec<Duration>>,
}

impl BudgetSource for Counted {
    fn sync<'a>(&'a self, ask: &'a Ask) -> SyncFuture<'a> {
        Box::pin(async move {
            let start = Instant::now();
            let outcome = self.inner.sync(ask).await;
            self.syncs.lock().unwrap().push(start.elapsed());
            outcome
        })
    }
}

/// One limiter of a configuration, with its source when it shares.
struct Node {
    limiter: Arc<Limiter>,
    source: Option<Arc<Counted>>,
}

async fn node(url: Option<&str>) -> Node {
    let limiter = Limiter::new();
    let Some(url) = url else {
        return Node {
            limiter,
            source: None,
        };
    };
    let backend = PgStore::connect(url).await.unwrap();
    let store = Store::with_backend(Arc::new(backend), std::env::temp_dir());
    let settings = ShareSettings::default();
    let source = Arc::new(Counted {
        inner: StoreBudgets::new(store.shared_budgets().unwrap(), &settings),
        syncs: Mutex::new(Vec::new()),
    });
    assert!(limiter.share(source.clone(), settings));
    Node {
        limiter,
        source: Some(source),
    }
}

fn key(endpoint: &str) -> Key {
    Key {
        connector: "rest".into(),
        credential: "acme".into(),
        endpoint: endpoint.into(),
    }
}

/// What one configuration measured.
struct Figures {
    permits: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    syncs: Vec<Duration>,
}

/// `tasks` tasks per limiter, each asking for permits on one key for `length`,
/// holding each for `hold`.
async fn drive(
    nodes: &[Node],
    rule: &RateLimitRule,
    tasks: usize,
    hold: Duration,
    length: Duration,
) -> Figures {
    for node in nodes {
        if let Some(source) = &node.source {
            source.syncs.lock().unwrap().clear();
        }
    }
    let start = Instant::now();
    let until = start + length;
    let headers = Arc::new(HeaderMap::new());
    let mut handles = Vec::new();
    for node in nodes {
        for _ in 0..tasks {
            let (limiter, rule, headers) = (node.limiter.clone(), rule.clone(), headers.clone());
            handles.push(tokio::spawn(async move {
                let k = key(&rule.endpoint);
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let asked = Instant::now();
                    let Ok(permit) = limiter
                        .acquire(&k, Some(&rule), 0, Duration::from_secs(10))
                        .await
                    else {
                        continue;
                    };
                    if hold.is_zero() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(hold).await;
                    }
                    permit.observe(200, &headers);
                    drop(permit);
                    latencies.push(asked.elapsed());
                }
                latencies
            }));
        }
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let mut syncs: Vec<Duration> = nodes
        .iter()
        .filter_map(|n| n.source.as_ref())
        .flat_map(|s| s.syncs.lock().unwrap().clone())
        .collect();
    syncs.sort();
    Figures {
        permits: latencies.len() as u64,
        elapsed,
        latencies,
        syncs,
    }
}

fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

fn header() {
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>9} {:>12} {:>12}",
        "budget", "permits/s", "p50 µs", "p99 µs", "syncs/s", "sync p50 µs", "sync p99 µs"
    );
}

fn row(name: &str, f: &Figures, declared_rate: Option<f64>) {
    let per_second = rate(f.permits, f.elapsed);
    let (sync_rate, sync_p50, sync_p99) = if f.syncs.is_empty() {
        ("-".to_owned(), "-".to_owned(), "-".to_owned())
    } else {
        (
            format!("{:.0}", rate(f.syncs.len() as u64, f.elapsed)),
            format!("{:.0}", micros(percentile(&f.syncs, 0.50))),
            format!("{:.0}", micros(percentile(&f.syncs, 0.99))),
        )
    };
    let share = declared_rate.map_or(String::new(), |d| {
        format!("  {:.0}% of the declared rate", 100.0 * per_second / d)
    });
    println!(
        "{name:<28} {per_second:>12.0} {:>10.1} {:>10.1} {sync_rate:>9} {sync_p50:>12} {sync_p99:>12}{share}",
        micros(percentile(&f.latencies, 0.50)),
        micros(percentile(&f.latencies, 0.99)),
    );
}

async fn nodes(count: usize, url: Option<&str>) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(node(url).await);
    }
    nodes
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let length = Duration::from_secs(env_or("SLUICE_BENCH_SECONDS", 3u64));
    runtime.block_on(async {
        let (schema, url) = match bench_postgres_url() {
            Some(url) => (None, url),
            None => {
                let schema = TestSchema::create().await;
                let url = schema.url().to_owned();
                (Some(schema), url)
            }
        };

        println!("\nOverhead: a window that never binds, 8 tasks per limiter, {length:?} each\n");
        header();
        for (name, count, shared) in [
            ("node-local, 1 limiter", 1, false),
            ("shared (PostgreSQL), 1", 1, true),
            ("node-local, 3 limiters", 3, false),
            ("shared (PostgreSQL), 3", 3, true),
        ] {
            let rule = RateLimitRule {
                endpoint: format!("overhead-{count}-{shared}.example.com"),
                requests: Some(1_000_000),
                per_ms: 1,
                concurrent: None,
            };
            let nodes = nodes(count, shared.then_some(url.as_str())).await;
            let f = drive(&nodes, &rule, 8, Duration::ZERO, length).await;
            row(name, &f, None);
        }

        println!("\nFirst permit of each of 200 fresh keys\n");
        header();
        for (name, shared) in [
            ("node-local", false),
            ("shared (PostgreSQL)", true),
        ] {
            let node = node(shared.then_some(url.as_str())).await;
            let mut latencies = Vec::new();
            let start = Instant::now();
            for i in 0..200 {
                let rule = RateLimitRule {
                    endpoint: format!("cold-{i}-{shared}.example.com"),
                    requests: Some(100),
                    per_ms: 1_000,
                    concurrent: None,
                };
                let asked = Instant::now();
                let permit = node
                    .limiter
                    .acquire(&key(&rule.endpoint), Some(&rule), 0, Duration::from_secs(10))
                    .await
                    .unwrap();
                latencies.push(asked.elapsed());
                drop(permit);
            }
            let elapsed = start.elapsed();
            latencies.sort();
            let mut syncs = node
                .source
                .as_ref()
                .map(|s| s.syncs.lock().unwrap().clone())
                .unwrap_or_default();
            syncs.sort();
            let f = Figures {
                permits: latencies.len() as u64,
                elapsed,
                latencies,
                syncs,
            };
            row(name, &f, None);
        }

        let binding = RateLimitRule {
            endpoint: "binding.example.com".into(),
            requests: Some(300),
            per_ms: 100,
            concurrent: None,
        };
        let declared = 300.0 * 10.0;
        println!(
            "\nA binding budget: 300 per 100 ms (3,000/s), 16 tasks per limiter, 2 ms per request, {length:?} each\n"
        );
        header();
        for (name, count, shared) in [
            ("node-local, 1 limiter", 1, false),
            ("shared (PostgreSQL), 1", 1, true),
            ("node-local, 3 (unshared)", 3, false),
            ("shared (PostgreSQL), 3", 3, true),
        ] {
            let rule = RateLimitRule {
                endpoint: format!("binding-{count}-{shared}.example.com"),
                ..binding.clone()
            };
            let nodes = nodes(count, shared.then_some(url.as_str())).await;
            let f = drive(&nodes, &rule, 16, Duration::from_millis(2), length).await;
            row(name, &f, Some(declared));
        }
        drop(schema);
    });
}
