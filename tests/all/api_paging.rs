//! Paging of the API's list calls through the real gRPC server and tonic's default
//! 4 MiB decoding limit: 3,000 connections (over 6 MB of definitions, which one
//! answer could not carry) listed whole across pages with no duplicate or gap; runs
//! created in one millisecond paged exactly, newest and oldest first, by time and by
//! tenant; page sizes capped at their maximum; a foreign page token refused.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::json;
use sluice_api::pb::connections_client::ConnectionsClient;
use sluice_api::pb::runs_client::RunsClient;
use sluice_api::pb::workflows_client::WorkflowsClient;
use sluice_api::pb::{self};
use sluice_api::{ApiServer, Tokens};
use sluice_engine::{ConnectionDef, Engine};
use sluice_store::RunId;
use sluice_testkit::{NodeBuilder, NodeDir};
use tonic::Code;
use tonic::transport::Channel;

use crate::api::channel;

const NODE: NodeBuilder = NodeBuilder::new()
    .cache_under(env!("CARGO_TARGET_TMPDIR"), "api-paging-components")
    .worker("api-paging-node");

const CONNECTIONS: usize = 3_000;

struct Node {
    addr: SocketAddr,
    engine: Engine,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: NodeDir,
}

async fn node() -> Node {
    let dir = NodeDir::new();
    let engine = NODE.test_engine_at(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        ApiServer::new(engine.clone(), Tokens::default()).serve(listener, async {
            let _ = stopped.await;
        }),
    );
    Node {
        addr,
        engine,
        _stop: stop,
        _dir: dir,
    }
}

#[tokio::test]
async fn three_thousand_connections_are_listed_whole_across_pages() {
    let node = node().await;
    // 2 KB of config each: over 6 MB in all, past the 4 MiB a client decodes.
    let padding = "x".repeat(2_000);
    for i in 0..CONNECTIONS {
        let def: ConnectionDef = serde_json::from_value(json!({
            "name": format!("conn-{i:05}"), "tenant": format!("t{}", i % 3),
            "connector": "sample", "config": {"records": 1, "note": padding}
        }))
        .unwrap();
        node.engine.define_connection(&def).await.unwrap();
    }
    let mut api = ConnectionsClient::new(channel(node.addr).await);
    for page_size in [0u32, 1_000, 77] {
        let mut names = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = api
                .list_connections(pb::ListConnectionsRequest {
                    page_size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|s| panic!("page {pages} of size {page_size}: {s:?}"))
                .into_inner();
            let asked = if page_size == 0 {
                100
            } else {
                page_size as usize
            };
            assert!(page.connections.len() <= asked);
            names.extend(page.connections.into_iter().map(|c| c.name));
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "duplicates at page size {page_size}"
        );
        let expected: Vec<String> = (0..CONNECTIONS).map(|i| format!("conn-{i:05}")).collect();
        assert_eq!(names, expected, "page size {page_size}");
        assert!(pages >= CONNECTIONS.div_ceil(1_000), "{pages} pages");
    }
    // A size past the maximum is capped, and the list goes on from there.
    let big = api
        .list_connections(pb::ListConnectionsRequest {
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(big.connections.len(), 1_000);
    assert!(!big.next_page_token.is_empty());
    // One tenant's: a third, paged alike.
    let mut of_t1 = 0;
    let mut token = String::new();
    loop {
        let page = api
            .list_connections(pb::ListConnectionsRequest {
                tenant: "t1".into(),
                page_size: 400,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.connections.iter().all(|c| c.tenant == "t1"));
        of_t1 += page.connections.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(of_t1, CONNECTIONS / 3);
    // A token of another list is refused, naming the field.
    let runs_token = RunsClient::new(channel(node.addr).await)
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(runs_token.is_empty());
    let foreign = WorkflowsClient::new(channel(node.addr).await)
        .list_workflows(pb::ListWorkflowsRequest {
            page_token: "6e6f7065".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert!(foreign.message().starts_with("page_token:"), "{foreign:?}");
}

/// Every run id of a listing, page by page.
async fn all_runs(api: &mut RunsClient<Channel>, ask: pb::ListRunsRequest) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_runs(pb::ListRunsRequest {
                page_token: token,
                ..ask.clone()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.runs.len() <= ask.limit as usize);
        ids.extend(page.runs.into_iter().map(|r| r.run_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn runs_created_in_one_millisecond_are_paged_without_gaps_or_repeats() {
    let node = node().await;
    let log = node.engine.store().log();
    let base: i64 = 1_750_000_000_000;
    // 60 runs in one millisecond (ids of that millisecond, in random order of
    // creation), and 30 around it; two tenants.
    let mut made = Vec::new();
    for i in 0u8..90 {
        let ms = if i < 60 {
            base
        } else {
            base - 50 + i64::from(i)
        };
        let mut random = [0u8; 10];
        random[0] = i.wrapping_mul(97);
        random[9] = i;
        let run = RunId::v7(u64::try_from(ms).unwrap(), random);
        let tenant = if i % 2 == 0 { "even" } else { "odd" };
        log.append_at(
            run,
            ms,
            vec![sluice_testkit::events::scheduled("wf", "conn", tenant)],
        )
        .await
        .unwrap();
        made.push((ms, run, tenant));
    }
    let mut api = RunsClient::new(channel(node.addr).await);
    let expected = |tenant: Option<&str>, newest_first: bool| {
        let mut runs: Vec<(i64, RunId)> = made
            .iter()
            .filter(|(_, _, t)| tenant.is_none_or(|x| x == *t))
            .map(|(ms, run, _)| (*ms, *run))
            .collect();
        runs.sort();
        if newest_first {
            runs.reverse();
        }
        runs.into_iter()
            .map(|(_, r)| r.to_string())
            .collect::<Vec<_>>()
    };
    for limit in [7u32, 1, 60] {
        for oldest_first in [false, true] {
            let got = all_runs(
                &mut api,
                pb::ListRunsRequest {
                    limit,
                    oldest_first,
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(got, expected(None, !oldest_first), "limit {limit}");
            // By tenant the store lists by run id; still exact.
            let got = all_runs(
                &mut api,
                pb::ListRunsRequest {
                    limit,
                    oldest_first,
                    tenant: "odd".into(),
                    ..Default::default()
                },
            )
            .await;
            let mut want = expected(Some("odd"), !oldest_first);
            let mut got_sorted = got.clone();
            got_sorted.sort();
            want.sort();
            assert_eq!(got_sorted, want, "by tenant, limit {limit}");
            assert_eq!(
                got.iter().collect::<BTreeSet<_>>().len(),
                got.len(),
                "repeats by tenant"
            );
        }
    }
    // The old way, `created_before` of the page's last run, skipped runs of its
    // millisecond: the token does not.
    let first = api
        .list_runs(pb::ListRunsRequest {
            limit: 75,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.runs.len(), 75);
    let last = first.runs.last().unwrap();
    assert_eq!(last.created_at_unix_ms, base);
    let rest = all_runs(
        &mut api,
        pb::ListRunsRequest {
            limit: 75,
            page_token: String::new(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.len(), 90);
    let by_time = api
        .list_runs(pb::ListRunsRequest {
            limit: 100,
            created_before_unix_ms: base,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(
        75 + by_time.len() < 90,
        "the time bound skips none: {}",
        by_time.len()
    );
}
