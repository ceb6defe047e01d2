//! Limiter overhead per request: acquire, read the answer's headers, release.
//!
//! `cargo bench -p sluice-limiter --bench limiter`. Uncontended on one task, then
//! 64 tasks on one key (free, and with 2 in flight at a time so that the rest queue) and
//! 64 tasks on a key each, on a 2-worker runtime. In the queueing case the latency
//! is mostly waiting for the other tasks; ns/request is the limiter's cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use sluice_limiter::{Key, Limiter, RateLimitRule};
use sluice_testkit::stats::{percentile, rate};

const LONG: Duration = Duration::from_secs(60);

fn key(i: usize) -> Key {
    Key {
        connector: "rest".into(),
        credential: "acme".into(),
        endpoint: format!("api{i}.example.com").into(),
    }
}

async fn one_request(
    limiter: &Limiter,
    key: &Key,
    rule: Option<&RateLimitRule>,
    headers: &HeaderMap,
) {
    match limiter.acquire(key, rule, 0, LONG).await {
        Ok(permit) => {
            permit.observe(200, headers);
            // Hold the slot across a yield, as a request in flight does, so that
            // with a small concurrency limit the other tasks really queue.
            if rule.is_some_and(|r| r.concurrent.is_some_and(|c| c < 64)) {
                tokio::task::yield_now().await;
            }
        }
        Err(e) => panic!("bench key saturated: {e}"),
    }
}

async fn contended(
    limiter: Arc<Limiter>,
    tasks: usize,
    per_task: usize,
    shared_key: bool,
    rule: Option<RateLimitRule>,
) -> (Duration, Vec<Duration>) {
    let headers = Arc::new(HeaderMap::new());
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (limiter, headers, rule) = (limiter.clone(), headers.clone(), rule.clone());
            tokio::spawn(async move {
                let k = key(if shared_key { 0 } else { t });
                let mut latencies = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let s = Instant::now();
                    one_request(&limiter, &k, rule.as_ref(), &headers).await;
                    latencies.push(s.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        match h.await {
            Ok(l) => all.extend(l),
            Err(e) => panic!("bench task failed: {e}"),
        }
    }
    let elapsed = start.elapsed();
    all.sort();
    (elapsed, all)
}

fn report(name: &str, ops: usize, elapsed: Duration, latencies: &[Duration]) {
    println!(
        "{name:<44} {:>8.0} ns/request  {:>10.0} requests/s  p50 {:>7.2} µs  p99 {:>7.2} µs",
        elapsed.as_nanos() as f64 / ops as f64,
        rate(ops as u64, elapsed),
        percentile(latencies, 0.50).as_nanos() as f64 / 1000.0,
        percentile(latencies, 0.99).as_nanos() as f64 / 1000.0,
    );
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("no runtime: {e}"),
    };
    let declared = RateLimitRule {
        endpoint: "api0.example.com".into(),
        requests: Some(1_000_000),
        per_ms: 1,
        concurrent: Some(1_000),
    };
    runtime.block_on(async {
        for (name, rule) in [
            ("no rule", None),
            ("declared window + concurrency", Some(declared.clone())),
        ] {
            let limiter = Limiter::new();
            let k = key(0);
            let headers = HeaderMap::new();
            let n = 1_000_000;
            for _ in 0..10_000 {
                one_request(&limiter, &k, rule.as_ref(), &headers).await;
            }
            let mut latencies = Vec::with_capacity(n);
            let start = Instant::now();
            for _ in 0..n {
                let s = Instant::now();
                one_request(&limiter, &k, rule.as_ref(), &headers).await;
                latencies.push(s.elapsed());
            }
            let elapsed = start.elapsed();
            latencies.sort();
            report(&format!("uncontended, {name}"), n, elapsed, &latencies);
        }
        let queueing = RateLimitRule {
            concurrent: Some(2),
            ..declared.clone()
        };
        for (name, shared, rule) in [
            ("64 tasks, one key, no rule", true, None),
            ("64 tasks, one key, declared", true, Some(declared.clone())),
            (
                "64 tasks, one key, 2 in flight (queueing)",
                true,
                Some(queueing),
            ),
            ("64 tasks, a key each, no rule", false, None),
        ] {
            let per_task = 20_000;
            let limiter = Limiter::new();
            let (elapsed, latencies) = contended(limiter.clone(), 64, per_task, shared, rule).await;
            report(name, 64 * per_task, elapsed, &latencies);
            let waited: u64 = limiter.keys().iter().map(|k| k.stats.waits).sum();
            println!(
                "{:<44} {waited} of {} requests waited in the queue",
                "",
                64 * per_task
            );
        }
    });
}
