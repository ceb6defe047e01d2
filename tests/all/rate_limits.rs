//! Central rate limiting against a local API that enforces its own limit and counts
//! violations: declared limits shared by every run of a credential, reactive limits
//! learned from headers, `Retry-After` in both forms, a spent retry budget that
//! makes the run wait, and a host's circuit breaker.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_engine::{ConnectionDef, Engine, Trigger, WorkflowDef};
use sluice_host::Grant;
use sluice_store::RunStatus;
use sluice_testkit::NodeBuilder;
use sluice_testkit::servers::limited_api::{
    self, LimitConfig, LimitHeaders, LimitedApi, RetryAfter,
};

/// A host per engine (a small pool: many engines live in this process); compiled
/// components are shared on disk between the tests.
const NODE: NodeBuilder = NodeBuilder::new()
    .pool(64, 512 << 20)
    .cache_under(env!("CARGO_TARGET_TMPDIR"), "rate-limit-test-components");

/// An API of `records` in pages of `page_size` that allows `limit` requests per
/// `window`, sends no rate-limit headers and says `Retry-After` in seconds.
fn plain_api(records: u64, page_size: u64, limit: u64, window: Duration) -> LimitConfig {
    LimitConfig {
        records,
        page_size,
        limit,
        window,
        headers: LimitHeaders::None,
        retry_after: RetryAfter::Seconds,
    }
}

async fn api(config: LimitConfig) -> (SocketAddr, Arc<LimitedApi>) {
    let (app, api) = limited_api::router(config);
    (sluice_testkit::serve(app).await, api)
}

/// A `rest` connection to the limited API at `addr`, authenticating with `token`.
fn connection(name: &str, addr: SocketAddr, token: &str, rate_limits: Value) -> ConnectionDef {
    connection_declaring(name, addr, token, rate_limits, Value::Null)
}

/// The same, with the `rest` connector declaring `declared` as the API's limit.
fn connection_declaring(
    name: &str,
    addr: SocketAddr,
    token: &str,
    rate_limits: Value,
    declared: Value,
) -> ConnectionDef {
    serde_json::from_value(json!({
        "name": name,
        "connector": "rest",
        "config": {
            "base_url": format!("http://{addr}"),
            "streams": [{
                "name": "items",
                "path": "/items/page-1.json",
                "records_path": "data",
                "primary_key": ["id"],
                "pagination": {"style": "next_link", "path": "next"}
            }],
            "rate_limit": declared
        },
        "secrets": {"auth": {"type": "bearer", "token": token}},
        "allowed_hosts": [addr.to_string()],
        "rate_limits": rate_limits
    }))
    .expect("connection JSON")
}

fn workflow(name: &str, connection: &str, retry: Value) -> WorkflowDef {
    workflow_in_batches(name, connection, retry, 1000)
}

fn workflow_in_batches(name: &str, connection: &str, retry: Value, batch_size: u32) -> WorkflowDef {
    serde_json::from_value(json!({
        "name": name, "connection": connection, "streams": [{"name": "items"}],
        "batch_size": batch_size, "retry": retry
    }))
    .expect("workflow JSON")
}

/// Defines `runs` connections sharing one token and a workflow on each, starts
/// them all at once and waits for every run to end; each must complete with every
/// record in the hub.
async fn sync_concurrently(
    engine: &Engine,
    addr: SocketAddr,
    runs: usize,
    rate_limits: Value,
    records: u64,
) {
    sync_declaring(engine, addr, runs, rate_limits, Value::Null, records).await;
}

async fn sync_declaring(
    engine: &Engine,
    addr: SocketAddr,
    runs: usize,
    rate_limits: Value,
    declared: Value,
    records: u64,
) {
    let retry = json!({"initial_backoff_ms": 10, "max_backoff_ms": 50, "jitter": false,
                       "max_attempts": 1, "max_rate_limit_waits": 50});
    for i in 0..runs {
        let c = connection_declaring(
            &format!("c{i}"),
            addr,
            "shared-token",
            rate_limits.clone(),
            declared.clone(),
        );
        engine.define_connection(&c).await.expect("connection");
        engine
            .define_workflow(&workflow(&format!("w{i}"), &c.name, retry.clone()))
            .await
            .expect("workflow");
    }
    let mut started = Vec::new();
    for i in 0..runs {
        started.push(
            engine
                .start(&format!("w{i}"), Trigger::Manual)
                .await
                .expect("start"),
        );
    }
    for (i, run) in started.into_iter().enumerate() {
        let state = engine.wait(run).await.expect("state");
        assert!(
            matches!(state.status, RunStatus::Completed),
            "run of w{i}: {state:?}"
        );
        let landed = engine
            .store()
            .hub()
            .count(&format!("c{i}"), "items")
            .await
            .expect("hub");
        assert_eq!(landed, records, "records of c{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_limits_keep_ten_runs_sharing_a_credential_within_the_apis_limit() {
    let config = plain_api(200, 20, 20, Duration::from_millis(500));
    let (addr, server) = api(config).await;
    let node = NODE.temp().await;
    let rules = json!({"rules": [{"endpoint": addr.to_string(), "requests": 20, "per_ms": 500}]});
    sync_concurrently(&node.engine, addr, 10, rules, 200).await;
    assert_eq!(
        server.violations(),
        0,
        "the API saw its limit broken: {:?}",
        server.throttled_per_window()
    );
    // 10 pages each, plus the check-free discover: every request was a page.
    assert_eq!(server.served(), 10 * 10);
    let keys = node.engine.limiter().keys();
    assert_eq!(keys.len(), 1, "the ten connections share one key: {keys:?}");
    let key = &keys[0];
    assert_eq!(&*key.key.connector, "rest");
    assert!(key.key.credential.starts_with("secrets:"), "{:?}", key.key);
    assert_eq!(&*key.key.endpoint, addr.to_string());
    assert_eq!(key.stats.requests, 100);
    assert!(
        key.stats.waits > 0,
        "ten runs at once must have waited for budget"
    );
    let metrics = node.engine.metrics_text().await;
    assert!(
        metrics.contains(&format!("sluice_rate_limit_requests_total{{connector=\"rest\",credential=\"{}\",endpoint=\"{addr}\"}} 100", key.key.credential)),
        "{metrics}"
    );
}

async fn reactive_only(headers: LimitHeaders) {
    let config = LimitConfig {
        headers,
        ..plain_api(100, 25, 8, Duration::from_secs(1))
    };
    let (addr, server) = api(config).await;
    let node = NODE.temp().await;
    sync_concurrently(&node.engine, addr, 10, json!({}), 100).await;
    let throttled = server.throttled_per_window();
    assert!(
        throttled.values().all(|n| *n <= 1),
        "more than one 429 in a window ({headers:?}): {throttled:?}"
    );
    assert_eq!(server.served(), 10 * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_limits_alone_draw_at_most_one_429_per_window() {
    reactive_only(LimitHeaders::XRateLimit).await;
    reactive_only(LimitHeaders::Ietf).await;
}

async fn honours_retry_after(form: RetryAfter) {
    let config = LimitConfig {
        retry_after: form,
        ..plain_api(60, 10, 3, Duration::from_secs(1))
    };
    let (addr, server) = api(config).await;
    let node = NODE.temp().await;
    sync_concurrently(&node.engine, addr, 1, json!({}), 60).await;
    assert!(
        server.violations() >= 1,
        "the API never had to say 429 ({form:?})"
    );
    assert_eq!(
        server.early(),
        0,
        "a request came back before Retry-After ({form:?}): {:?}",
        server.log()
    );
    assert!(server.throttled_per_window().values().all(|n| *n <= 1));
    let keys = node.engine.limiter().keys();
    assert_eq!(keys[0].stats.throttled, server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_in_seconds_and_as_an_http_date() {
    honours_retry_after(RetryAfter::Seconds).await;
    honours_retry_after(RetryAfter::HttpDate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_retry_budget_makes_the_run_wait_not_fail() {
    let config = plain_api(40, 10, 2, Duration::from_secs(1));
    let (addr, server) = api(config).await;
    let node = NODE.temp().await;
    let e = &node.engine;
    // No retries in the host: the first 429 goes back to the connector.
    let c = connection("c", addr, "t", json!({"retries": 0}));
    e.define_connection(&c).await.unwrap();
    // One failed attempt would dead-letter the run; waits for rate limits do not count.
    let retry = json!({"max_attempts": 1, "max_rate_limit_waits": 20, "jitter": false,
                       "initial_backoff_ms": 10, "max_backoff_ms": 50});
    // A page per batch, so the 429 is the first answer of a read and fails it (the
    // `rest` reader keeps a partial batch and asks again on its next read).
    e.define_workflow(&workflow_in_batches("w", "c", retry, 10))
        .await
        .unwrap();
    let run = e.start("w", Trigger::Manual).await.unwrap();
    let state = e.wait(run).await.unwrap();
    assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
    assert_eq!(e.store().hub().count("c", "items").await.unwrap(), 40);
    assert!(server.violations() >= 1);
    assert!(
        state.attempts >= 2,
        "the run waited and came back: {state:?}"
    );
    let logs = e
        .store()
        .run_logs()
        .read(
            run,
            &sluice_store::run_logs::LogFilter {
                requests: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        logs.iter()
            .any(|l| l.request.as_ref().is_some_and(|r| r.status == Some(429))),
        "the throttled request is in the run's request log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_opens_its_breaker_which_fails_fast_then_recovers() {
    let (addr, server) = api(LimitConfig::default()).await;
    let host = NODE.host();
    let connector = host.load_file(Path::new(sluice_artifacts::REST)).unwrap();
    let def = connection(
        "c",
        addr,
        "t",
        json!({"breaker": {"failures": 3, "cool_down_ms": 1500}}),
    );
    let grant = Arc::new(Grant {
        rates: Arc::new(def.rate_scope(&[], 0)),
        ..Grant::allowing([addr.to_string()])
    });
    let config = def.effective_config().to_string();
    server.fail_next(3, 500);
    for _ in 0..3 {
        let e = connector.check(&grant, &config).await.unwrap_err();
        assert!(e.to_string().contains("500"), "{e}");
    }
    assert_eq!(server.hits(), 3);
    // Open: the next request fails at once, naming the breaker, and never reaches
    // the API.
    let e = connector.check(&grant, &config).await.unwrap_err();
    assert!(
        matches!(e, sluice_host::HostError::BreakerOpen { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("circuit breaker"), "{e}");
    assert_eq!(e.kind(), sluice_host::FailureKind::Transient);
    assert!(
        e.retry_after()
            .is_some_and(|r| r <= Duration::from_millis(1500)),
        "{e}"
    );
    assert_eq!(server.hits(), 3);
    let breakers = host.limiter().breaker_views();
    assert_eq!(
        (breakers[0].host.as_str(), breakers[0].state),
        (addr.to_string().as_str(), "open")
    );
    // After the cool-down the breaker said, one probe goes; the API is well again,
    // so it closes.
    tokio::time::sleep(e.retry_after().unwrap()).await;
    connector.check(&grant, &config).await.unwrap();
    assert_eq!(server.hits(), 4);
    assert_eq!(host.limiter().breaker_views()[0].state, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connectors_declared_limit_applies_and_a_connection_overrides_it() {
    let config = plain_api(100, 20, 10, Duration::from_millis(500));
    let (addr, server) = api(config.clone()).await;
    let node = NODE.temp().await;
    // The connector declares the API's limit from its config; the connection says
    // nothing.
    let declared = json!({"requests": 10, "per_ms": 500});
    sync_declaring(&node.engine, addr, 5, json!({}), declared.clone(), 100).await;
    assert_eq!(
        server.violations(),
        0,
        "{:?}",
        server.throttled_per_window()
    );
    let keys = node.engine.limiter().keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0].window.map(|w| w.1),
        Some(10),
        "the declared rule governs the key"
    );

    // A connection's rule for the same endpoint replaces the declared one.
    let (addr, server) = api(config).await;
    let other = NODE.temp().await;
    let tighter = json!({"rules": [{"endpoint": addr.to_string(), "requests": 4, "per_ms": 500}]});
    sync_declaring(&other.engine, addr, 2, tighter, declared, 100).await;
    assert_eq!(server.violations(), 0);
    assert_eq!(
        other.engine.limiter().keys()[0].window.map(|w| w.1),
        Some(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rate_limits_are_refused_naming_the_field() {
    let node = NODE.temp().await;
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = connection(
        "c",
        addr,
        "t",
        json!({"rules": [{"endpoint": "api.example.com", "requests": 0}]}),
    );
    let e = node.engine.define_connection(&bad).await.unwrap_err();
    assert!(
        e.to_string().contains("rate_limits.rules[0].requests"),
        "{e}"
    );
    let unknown: Result<ConnectionDef, _> = serde_json::from_value(json!({
        "name": "c", "connector": "rest", "rate_limits": {"rule": []}
    }));
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `rule`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_key_is_saturated_the_higher_priority_run_gets_the_budget_first() {
    let config = plain_api(120, 10, 100, Duration::from_secs(1));
    let (addr, server) = api(config).await;
    let node = NODE.temp().await;
    let e = &node.engine;
    // One request per 200 ms for the shared token: a slot frees 200 ms after the
    // previous answer, by when the high run has long asked for its next page.
    let rules = json!({"rules": [{"endpoint": addr.to_string(), "requests": 1, "per_ms": 200}]});
    for (name, pages) in [("low", 12), ("high", 4)] {
        let mut c = connection(name, addr, "shared-token", rules.clone());
        c.config["headers"] = json!({"x-test-priority": name});
        c.config["streams"][0]["path"] = json!(format!("/items/page-{}.json", 13 - pages));
        e.define_connection(&c).await.unwrap();
    }
    let retry = json!({"max_attempts": 1});
    let mut low = workflow_in_batches("low", "low", retry.clone(), 10);
    low.priority = 0;
    let mut high = workflow_in_batches("high", "high", retry, 10);
    high.priority = 10;
    e.define_workflow(&low).await.unwrap();
    e.define_workflow(&high).await.unwrap();

    let low_run = e.start("low", Trigger::Manual).await.unwrap();
    let by = |who: &str| {
        let who = who.to_owned();
        move |h: &&sluice_testkit::servers::limited_api::Hit| {
            h.priority.as_deref() == Some(who.as_str())
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.log().iter().filter(by("low")).count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the low run never got going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let high_run = e.start("high", Trigger::Manual).await.unwrap();
    for run in [high_run, low_run] {
        let state = e.wait(run).await.unwrap();
        assert!(matches!(state.status, RunStatus::Completed), "{state:?}");
    }
    let log = server.log();
    let first_high = log
        .iter()
        .position(|h| h.priority.as_deref() == Some("high"))
        .unwrap();
    let last_high = log
        .iter()
        .rposition(|h| h.priority.as_deref() == Some("high"))
        .unwrap();
    let low_between = log[first_high..last_high].iter().filter(by("low")).count();
    assert_eq!(
        low_between,
        0,
        "the low run was served while the high one waited: {:?}",
        log.iter()
            .map(|h| h.priority.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert_eq!(log.iter().filter(by("high")).count(), 4);
    assert_eq!(log.iter().filter(by("low")).count(), 12);
    assert_eq!(server.violations(), 0);
}
