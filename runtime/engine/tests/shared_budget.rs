//! Three nodes in one process, each a limiter with its own client of one PostgreSQL
//! store, sharing a credential's declared budget against an API that enforces it
//! (`limited_api`): the API never counts more than the limit in a window, and a pause
//! one node learns reaches the others.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed expectation fails the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_engine::share_limiter_budgets;
use sluice_host::limiter::{Key, Limiter, RateLimitRule, ShareSettings};
use sluice_store::Store;
use sluice_store::postgres::PgStore;
use sluice_testkit::pg::TestSchema;
use sluice_testkit::servers::limited_api::{self, Hit, LimitConfig, LimitHeaders, RetryAfter};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CREDENTIAL: &str = "Bearer acme";

fn key() -> Key {
    Key {
        connector: "rest".into(),
        credential: "acme".into(),
        endpoint: "127.0.0.1".into(),
    }
}

/// Three nodes: a limiter each, sharing through a store client of its own on one
/// schema.
async fn nodes(schema: &TestSchema, settings: ShareSettings) -> Vec<Arc<Limiter>> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let backend = PgStore::connect(schema.url()).await.unwrap();
        let store = Store::with_backend(Arc::new(backend), std::env::temp_dir());
        let limiter = Limiter::new();
        assert!(share_limiter_budgets(&limiter, &store, settings));
        nodes.push(limiter);
    }
    nodes
}

/// One keep-alive HTTP/1.1 connection to the test API.
struct Connection {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Connection {
    fn new(addr: SocketAddr) -> Self {
        Connection { addr, stream: None }
    }

    /// `GET path`; the answer's status and headers (the body is read and dropped).
    async fn get(&mut self, path: &str) -> (u16, HeaderMap) {
        for _ in 0..3 {
            if self.stream.is_none() {
                self.stream = Some(BufReader::new(TcpStream::connect(self.addr).await.unwrap()));
            }
            let stream = self.stream.as_mut().unwrap();
            match exchange(stream, path).await {
                Ok(answer) => return answer,
                // The server closed an idle connection: open another.
                Err(_) => self.stream = None,
            }
        }
        panic!("no answer from the test API");
    }
}

async fn exchange(
    stream: &mut BufReader<TcpStream>,
    path: &str,
) -> std::io::Result<(u16, HeaderMap)> {
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {CREDENTIAL}\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut headers = HeaderMap::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let text = line.trim_end();
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok((status, headers))
}

/// The most requests the API counted within any span shorter than `window` (its
/// log has whole milliseconds, so spans of `window` less 2 ms: no more than that is
/// surely shorter than a window).
fn most_in_any_span(log: &[Hit], window: Duration) -> usize {
    let span = u64::try_from(window.as_millis()).unwrap() - 2;
    let mut at: Vec<u64> = log.iter().map(|h| h.at_ms).collect();
    at.sort_unstable();
    let mut most = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end] - at[start] > span {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_sharing_a_declared_budget_never_break_the_apis_limit() {
    let limit = 10;
    let window = Duration::from_secs(1);
    let (app, api) = limited_api::router(LimitConfig {
        limit,
        window,
        headers: LimitHeaders::None,
        retry_after: RetryAfter::Seconds,
        ..LimitConfig::default()
    });
    let addr = sluice_testkit::serve(app).await;
    let schema = TestSchema::create().await;
    let nodes = nodes(&schema, ShareSettings::default()).await;
    let rule = RateLimitRule {
        endpoint: "127.0.0.1".into(),
        requests: Some(u32::try_from(limit).unwrap()),
        per_ms: 1_000,
        concurrent: None,
    };
    let until = Instant::now() + Duration::from_secs(5);
    let mut workers = Vec::new();
    for (n, limiter) in nodes.iter().enumerate() {
        for _ in 0..4 {
            let (limiter, rule) = (limiter.clone(), rule.clone());
            workers.push(tokio::spawn(async move {
                let mut connection = Connection::new(addr);
                let mut sent = 0u32;
                while Instant::now() < until {
                    let Ok(permit) = limiter
                        .acquire(&key(), Some(&rule), 0, Duration::from_secs(2))
                        .await
                    else {
                        continue;
                    };
                    let (status, headers) = connection.get("/items/page-1.json").await;
                    permit.observe(status, &headers);
                    drop(permit);
                    sent += 1;
                }
                (n, sent)
            }));
        }
    }
    let mut per_node = [0u32; 3];
    for w in workers {
        let (n, sent) = w.await.unwrap();
        per_node[n] += sent;
    }
    let log = api.log();
    assert_eq!(api.violations(), 0, "requests over the limit: {per_node:?}");
    assert_eq!(api.early(), 0);
    let most = most_in_any_span(&log, window);
    assert!(
        most <= usize::try_from(limit).unwrap(),
        "{most} requests within one window"
    );
    assert!(
        api.served() >= limit,
        "the budget was used: {}",
        api.served()
    );
    assert!(
        per_node.iter().all(|n| *n > 0),
        "every node sent: {per_node:?}"
    );
    println!(
        "{} requests served by 3 nodes ({per_node:?}), at most {most} in a window of {limit}",
        api.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_one_node_learns_reaches_the_others() {
    let (app, api) = limited_api::router(LimitConfig {
        limit: 1_000,
        ..LimitConfig::default()
    });
    let addr = sluice_testkit::serve(app).await;
    let schema = TestSchema::create().await;
    let nodes = nodes(&schema, ShareSettings::default()).await;
    let rule = RateLimitRule {
        endpoint: "127.0.0.1".into(),
        requests: Some(1_000),
        per_ms: 1_000,
        concurrent: None,
    };
    let mut connection = Connection::new(addr);
    for limiter in &nodes {
        let permit = limiter
            .acquire(&key(), Some(&rule), 0, Duration::from_secs(5))
            .await
            .unwrap();
        let (status, headers) = connection.get("/items/page-1.json").await;
        assert_eq!(status, 200);
        permit.observe(status, &headers);
    }
    // The API throttles node 0, asking for 30 s.
    let permit = nodes[0]
        .acquire(&key(), Some(&rule), 0, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, _) = connection.get("/items/page-2.json").await;
    assert_eq!(status, 200);
    let mut throttled = HeaderMap::new();
    throttled.insert("retry-after", HeaderValue::from_static("30"));
    assert_eq!(
        permit.observe(429, &throttled),
        Some(Duration::from_secs(30))
    );
    drop(permit);
    let learned = Instant::now();
    for limiter in &nodes[1..] {
        // Within a few polls; the bound only keeps a failing test from hanging.
        let paused = loop {
            if let Some(p) = limiter.keys()[0].paused_for {
                break p;
            }
            assert!(
                learned.elapsed() < Duration::from_secs(10),
                "the pause never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(paused > Duration::from_secs(20), "{paused:?}");
        let refused = limiter
            .acquire(&key(), Some(&rule), 0, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(20));
    }
    println!(
        "the pause reached the other nodes in {} ms",
        learned.elapsed().as_millis()
    );
    assert_eq!(api.hits(), 4, "nothing went during the pause");
}
