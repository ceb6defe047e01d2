//! A connector's outbound HTTP under its caps, through the real host against real
//! local servers: a huge request body, huge header fields and a flood of requests
//! in flight each fail with their named limit while the node keeps serving;
//! addresses are checked at connect time (a name resolving to loopback is refused
//! unless the connection allows that network); rate-limit rules and keys are
//! matched on the normalised URL; a breaker belongs to one credential.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use sluice_host::limiter::{BreakerSettings, RateLimitRule};
use sluice_host::{
    AddressClass, Connector, EgressRefusal, FailureKind, Grant, Host, HostError, Limits, RateScope,
    SyncMode,
};
use sluice_testkit::NodeBuilder;

const STREAM: &str = "items";
const NODE: NodeBuilder = NodeBuilder::new().pool(32, 256 << 20);

/// What the test API saw.
#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A local API: `/ok` answers 200, `/fail` 500, `/slow` holds each request a
/// moment and counts how many it holds at once, `/upload` takes a body.
async fn api() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let (ok, fail, slow, upload) = (seen.clone(), seen.clone(), seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/ok",
            get(move || async move {
                ok.hits.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .route(
            "/fail",
            get(move || async move {
                fail.hits.fetch_add(1, Ordering::SeqCst);
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route(
            "/slow",
            get(move || async move {
                slow.hits.fetch_add(1, Ordering::SeqCst);
                let now = slow.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                slow.max_in_flight.fetch_max(now, Ordering::SeqCst);
                // Long enough that every request the host lets through is held
                // here together; no assertion depends on the duration.
                tokio::time::sleep(Duration::from_millis(300)).await;
                slow.in_flight.fetch_sub(1, Ordering::SeqCst);
                "slow"
            }),
        )
        .route(
            "/upload",
            post(move |body: Bytes| async move {
                upload.hits.fetch_add(1, Ordering::SeqCst);
                body.len().to_string()
            }),
        );
    (sluice_testkit::servers::serve(app).await, seen)
}

fn hostile(host: &Host) -> Connector {
    host.load_file(Path::new(sluice_artifacts::TEST_HOSTILE))
        .expect("hostile component loads")
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 128 << 20,
        cpu_per_call: Duration::from_secs(10),
        call_timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

/// A grant that may reach `hosts`.
fn grant(hosts: &[String]) -> Grant {
    Grant {
        limits: limits(),
        ..Grant::allowing(hosts.iter().cloned())
    }
}

/// The outcome of the first `next` of a reader of `config`.
async fn read(connector: &Connector, grant: &Grant, config: Value) -> Result<String, HostError> {
    let grant = Arc::new(grant.clone());
    let mut reader = connector
        .open(
            &grant,
            &config.to_string(),
            STREAM,
            SyncMode::FullRefresh,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("open with {config} must succeed: {e}"));
    let batch = reader.next(100).await?;
    let batch = batch.expect("one batch");
    let line = batch.lines().next().expect("one record");
    let record: Value = serde_json::from_slice(line).expect("JSON record");
    Ok(record["v"].as_str().unwrap_or_default().to_owned())
}

/// The refusal a read of `config` fails with.
async fn refused(
    connector: &Connector,
    grant: &Grant,
    config: Value,
) -> (EgressRefusal, HostError) {
    match read(connector, grant, config.clone()).await {
        Err(e) => match &e {
            HostError::EgressRefused { refusal, .. } => (refusal.clone(), e),
            other => panic!("{config}: expected a refused request, got {other}"),
        },
        Ok(v) => panic!("{config}: expected a refused request, got a record {v:?}"),
    }
}

/// The node still serves: the same connector reads from the API, and a fresh
/// reader reads the `ok` mode.
async fn still_serves(connector: &Connector, addr: SocketAddr) {
    let grant = grant(&[addr.to_string()]);
    let v = read(
        connector,
        &grant,
        json!({"mode": "get", "url": format!("http://{addr}/ok")}),
    )
    .await
    .expect("a plain request still works");
    assert_eq!(v, "status 200");
    let v = read(connector, &grant, json!({"mode": "ok"}))
        .await
        .expect("ok mode");
    assert_eq!(v, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_request_body_is_refused_while_it_streams() {
    let (addr, seen) = api().await;
    let host = NODE.host();
    let connector = hostile(&host);
    let grant = grant(&[addr.to_string()]);
    let config =
        json!({"mode": "big_body", "url": format!("http://{addr}/upload"), "bytes": 256u64 << 20});
    let (refusal, e) = refused(&connector, &grant, config).await;
    assert_eq!(
        refusal,
        EgressRefusal::RequestTooLarge {
            host: addr.to_string(),
            limit: 16 << 20
        }
    );
    assert!(
        e.to_string().contains("max_request_bytes (16777216 bytes)"),
        "{e}"
    );
    assert_eq!(e.kind(), FailureKind::Sandbox);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0, "nothing was sent");
    // A body within the limit goes through.
    let small =
        json!({"mode": "big_body", "url": format!("http://{addr}/upload"), "bytes": 1u64 << 20});
    let v = read(&connector, &grant, small).await.unwrap();
    assert!(v.ends_with("status 200"), "{v}");
    still_serves(&connector, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_header_fields_are_refused() {
    let (addr, seen) = api().await;
    let host = NODE.host();
    let connector = hostile(&host);
    let grant = grant(&[addr.to_string()]);
    let url = format!("http://{addr}/ok");
    let config =
        json!({"mode": "big_headers", "url": url, "count": 16_000, "field_bytes": 120_000});
    let (refusal, e) = refused(&connector, &grant, config).await;
    assert_eq!(refusal, EgressRefusal::FieldsTooLarge { limit: 64 << 10 });
    assert!(e.to_string().contains("max_header_bytes"), "{e}");
    // Many small fields that add up past the limit too.
    let config = json!({"mode": "big_headers", "url": url, "count": 2_000, "field_bytes": 100});
    let (refusal, _) = refused(&connector, &grant, config).await;
    assert_eq!(refusal, EgressRefusal::FieldsTooLarge { limit: 64 << 10 });
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0, "nothing was sent");
    // Headers within the limit go through.
    let config = json!({"mode": "big_headers", "url": url, "count": 10, "field_bytes": 100});
    assert_eq!(
        read(&connector, &grant, config).await.unwrap(),
        "status 200"
    );
    still_serves(&connector, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_fields_resources_held_at_once_are_capped_per_store() {
    let (addr, _seen) = api().await;
    let host = NODE.host();
    let connector = hostile(&host);
    let grant = grant(&[addr.to_string()]);
    let limit = grant.limits.max_host_resources;
    // 16,000 resources of 60 KB each would be ~1 GB of the host's memory.
    let config = json!({"mode": "many_fields", "count": 16_000, "field_bytes": 60_000});
    match read(&connector, &grant, config).await {
        Err(e @ HostError::ResourceLimit { .. }) => {
            assert_eq!(e.kind(), FailureKind::Sandbox);
            assert!(e.to_string().contains("max_host_resources"), "{e}");
        }
        other => panic!("expected the host resource limit, got {other:?}"),
    }
    // Under the limit, the same misbehaviour is only wasteful.
    let config = json!({"mode": "many_fields", "count": limit / 2, "field_bytes": 100});
    let v = read(&connector, &grant, config)
        .await
        .expect("within the limit");
    assert_eq!(v, format!("held {} fields resources", limit / 2));
    still_serves(&connector, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped_per_store() {
    let (addr, seen) = api().await;
    let host = NODE.host();
    let connector = hostile(&host);
    let grant = grant(&[addr.to_string()]);
    let cap = grant.limits.max_concurrent_requests;
    let config =
        json!({"mode": "concurrent_requests", "url": format!("http://{addr}/slow"), "count": 20});
    let (refusal, e) = refused(&connector, &grant, config).await;
    assert_eq!(refusal, EgressRefusal::TooManyRequests { limit: cap });
    assert!(e.to_string().contains("max_concurrent_requests (8)"), "{e}");
    // The connector held every answer while it sent the rest: exactly the cap
    // reached the server, never more at once.
    assert_eq!(seen.hits.load(Ordering::SeqCst), cap);
    let max = seen.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=cap).contains(&max),
        "the server saw {max} requests at once"
    );
    // Within the cap, all go through.
    let config =
        json!({"mode": "concurrent_requests", "url": format!("http://{addr}/slow"), "count": cap});
    let v = read(&connector, &grant, config).await.unwrap();
    assert_eq!(v.matches("status 200").count(), cap, "{v}");
    still_serves(&connector, addr).await;
}

/// A grant for `api.test` on the API's port, the name pinned to `addresses`.
fn named(addr: SocketAddr, addresses: &[&str]) -> Grant {
    Grant {
        pinned_names: vec![(
            "api.test".into(),
            addresses
                .iter()
                .map(|a| a.parse::<IpAddr>().unwrap())
                .collect(),
        )],
        ..grant(&[format!("api.test:{}", addr.port())])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_denied_address_is_refused_at_connect_time() {
    let (addr, seen) = api().await;
    let host = NODE.host();
    let connector = hostile(&host);
    let port = addr.port();
    let get = |url: String| json!({"mode": "get", "url": url});
    let cases = [
        (vec!["127.0.0.1"], "127.0.0.1", AddressClass::Loopback),
        (
            vec!["::ffff:127.0.0.1"],
            "::ffff:127.0.0.1",
            AddressClass::Loopback,
        ),
        (
            vec!["93.184.215.14", "169.254.169.254"],
            "169.254.169.254",
            AddressClass::LinkLocal,
        ),
        (vec!["10.0.0.1"], "10.0.0.1", AddressClass::Private),
    ];
    for (addresses, denied, class) in cases {
        let grant = named(addr, &addresses);
        for scheme in ["http", "https"] {
            let (refusal, e) = refused(
                &connector,
                &grant,
                get(format!("{scheme}://api.test:{port}/ok")),
            )
            .await;
            match refusal {
                EgressRefusal::Address(a) => {
                    assert_eq!(
                        (a.address, a.class),
                        (denied.parse().unwrap(), class),
                        "{e}"
                    );
                }
                other => panic!("{addresses:?}: expected an address refusal, got {other}"),
            }
            assert!(e.to_string().contains(class.name()), "{e}");
            assert!(e.to_string().contains("allowed_networks"), "{e}");
            assert_eq!(e.kind(), FailureKind::Config);
        }
    }
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0, "nothing connected");
    // The connection allows loopback explicitly: the same name goes through.
    let allowed = Grant {
        allowed_networks: vec![sluice_host::parse_network("127.0.0.0/8").unwrap()],
        ..named(addr, &["127.0.0.1"])
    };
    let v = read(
        &connector,
        &allowed,
        get(format!("http://api.test:{port}/ok")),
    )
    .await;
    assert_eq!(v.unwrap(), "status 200");
    // An allowlist entry that is the literal address grants it.
    let literal = grant(&[addr.to_string()]);
    let v = read(&connector, &literal, get(format!("http://{addr}/ok"))).await;
    assert_eq!(v.unwrap(), "status 200");
    // A wildcard that happens to match the address does not.
    let wildcard = grant(&[format!("*.0.0.1:{port}")]);
    let (refusal, _) = refused(&connector, &wildcard, get(format!("http://{addr}/ok"))).await;
    assert!(matches!(refusal, EgressRefusal::Address(_)), "{refusal}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_keys_are_matched_on_the_normalised_url() {
    let (addr, seen) = api().await;
    let host = NODE.host();
    let connector = hostile(&host);
    let port = addr.port();
    let endpoint = format!("127.0.0.1:{port}");
    let grant = Grant {
        rates: Arc::new(RateScope {
            connector: "hostile".into(),
            credential: "tenant-a".into(),
            rules: vec![RateLimitRule {
                endpoint: endpoint.clone(),
                requests: Some(100),
                per_ms: 60_000,
                concurrent: None,
            }],
            ..RateScope::default()
        }),
        ..grant(std::slice::from_ref(&endpoint))
    };
    let get = |url: String| json!({"mode": "get", "url": url});
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://127.0.0.1:0{port}/ok"),
        format!("http://127.0.0.1:000{port}/ok"),
    ] {
        assert_eq!(
            read(&connector, &grant, get(url)).await.unwrap(),
            "status 200"
        );
    }
    let keys = host.limiter().keys();
    assert_eq!(keys.len(), 1, "one key: {keys:?}");
    assert_eq!(&*keys[0].key.endpoint, endpoint.as_str(), "the rule's key");
    assert_eq!(keys[0].stats.requests, 3);
    // User info in a URL is refused outright, before any rule or key.
    let (refusal, e) = refused(
        &connector,
        &grant,
        get(format!("http://x@127.0.0.1:{port}/ok")),
    )
    .await;
    assert!(
        matches!(refusal, EgressRefusal::UserInfo { .. }),
        "{refusal}"
    );
    assert!(e.to_string().contains("user info"), "{e}");
    assert_eq!(host.limiter().keys()[0].stats.requests, 3);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credentials_open_breaker_leaves_another_credential_alone() {
    let (addr, seen) = api().await;
    let host = NODE.host();
    let connector = hostile(&host);
    let scope = |credential: &str, breaker: BreakerSettings| {
        Arc::new(RateScope {
            connector: "hostile".into(),
            credential: credential.into(),
            breaker,
            ..RateScope::default()
        })
    };
    let aggressive = BreakerSettings {
        failures: 2,
        cool_down_ms: 600_000,
    };
    let a = Grant {
        rates: scope("tenant-a", aggressive),
        ..grant(&[addr.to_string()])
    };
    let b = Grant {
        rates: scope("tenant-b", BreakerSettings::default()),
        ..grant(&[addr.to_string()])
    };
    // The SDK's GET: a 500 comes back as a status, an open breaker as an error.
    let config = json!({"mode": "disallowed_host", "url": format!("http://{addr}/fail")});
    for _ in 0..2 {
        assert_eq!(
            read(&connector, &a, config.clone()).await.unwrap(),
            "status 500"
        );
    }
    let e = read(&connector, &a, config.clone()).await.unwrap_err();
    assert!(matches!(e, HostError::BreakerOpen { .. }), "{e}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
    // Tenant B's credential reaches the same host.
    assert_eq!(
        read(&connector, &b, config.clone()).await.unwrap(),
        "status 500"
    );
    assert_eq!(seen.hits.load(Ordering::SeqCst), 3);
    let views: Vec<(String, &str)> = host
        .limiter()
        .breaker_views()
        .into_iter()
        .map(|v| (v.credential, v.state))
        .collect();
    assert_eq!(
        views,
        [
            ("tenant-a".to_owned(), "open"),
            ("tenant-b".to_owned(), "closed")
        ]
    );
}
