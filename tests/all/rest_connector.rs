//! The `rest` connector through the host, against a local server of the shared
//! benchmark's "contacts" API: a full sync lands every record exactly once, and a
//! read resumed from a mid-way checkpoint neither loses nor repeats a record.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use sluice_host::{Connector, Grant, SyncMode};
use sluice_testkit::NodeBuilder;
use sluice_testkit::servers::contacts;

const RECORDS: u64 = 100_000;

/// A host of its own for each test (`NODE.host()`), without an on-disk cache.
const NODE: NodeBuilder = NodeBuilder::new();

fn config(addr: SocketAddr) -> String {
    sluice_testkit::servers::contacts::rest_config(addr).to_string()
}

/// Read until the end or until `stop_after` records; returns records by id and the
/// last checkpoint.
async fn read(
    connector: &Connector,
    grant: &Arc<Grant>,
    config: &str,
    checkpoint: Option<&str>,
    batch: u32,
    stop_after: Option<u64>,
    seen: &mut BTreeMap<u64, String>,
) -> (Option<String>, bool) {
    let mut reader = connector
        .open(grant, config, "contacts", SyncMode::FullRefresh, checkpoint)
        .await
        .unwrap();
    let mut last = checkpoint.map(str::to_string);
    let mut read = 0u64;
    loop {
        if stop_after.is_some_and(|n| read >= n) {
            return (last, false);
        }
        let Some(b) = reader.next(batch).await.unwrap() else {
            return (last, true);
        };
        for line in b.lines() {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let id = v["id"].as_u64().unwrap();
            let text = String::from_utf8(line.to_vec()).unwrap();
            assert!(seen.insert(id, text).is_none(), "record {id} read twice");
        }
        read += u64::from(b.count);
        last = b.checkpoint.or(last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_every_record_of_the_contacts_api_once() {
    let (app, server) = contacts::router(RECORDS);
    let addr = sluice_testkit::serve(app).await;
    let host = NODE.host();
    let connector = host.load_file(Path::new(sluice_artifacts::REST)).unwrap();
    let grant = Arc::new(Grant::allowing([addr.to_string()]));
    let config = config(addr);

    connector.check(&grant, &config).await.unwrap();
    let streams = connector.discover(&grant, &config).await.unwrap();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].primary_key, vec!["id".to_string()]);

    let mut seen = BTreeMap::new();
    let (_, complete) = read(&connector, &grant, &config, None, 1000, None, &mut seen).await;
    assert!(complete);
    assert_eq!(seen.len() as u64, RECORDS);
    assert_eq!(seen.keys().next(), Some(&1));
    assert_eq!(seen.keys().last(), Some(&RECORDS));
    // Records arrive byte for byte as the API served them.
    for id in [1, 999, 1000, 1001, 54_321, RECORDS] {
        assert_eq!(seen[&id], contacts::record(id));
    }
    let pages = RECORDS.div_ceil(contacts::PAGE_SIZE);
    let requests = server.requests.load(std::sync::atomic::Ordering::Relaxed);
    // One request per page, plus the page `check` fetched.
    assert_eq!(requests, pages + 1);
    // Every request is in the connection's request log.
    let log = grant.activity.requests();
    assert_eq!(log.len() as u64, requests);
    assert!(
        log.iter()
            .all(|r| r.status == Some(200) && r.method == "GET")
    );
    assert!(log.iter().all(|r| r.bytes_received > 200_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_a_mid_way_checkpoint_without_loss_or_repeats() {
    let (app, _server) = contacts::router(RECORDS);
    let addr = sluice_testkit::serve(app).await;
    let host = NODE.host();
    let connector = host.load_file(Path::new(sluice_artifacts::REST)).unwrap();
    let grant = Arc::new(Grant::allowing([addr.to_string()]));
    let config = config(addr);

    // Batches of 1,500 end in the middle of pages, so checkpoints must carry how
    // much of a page was already emitted. Stop and resume several times.
    let mut seen = BTreeMap::new();
    let mut checkpoint = None;
    let mut complete = false;
    let mut resumes = 0;
    while !complete {
        let (c, done) = read(
            &connector,
            &grant,
            &config,
            checkpoint.as_deref(),
            1500,
            Some(22_500),
            &mut seen,
        )
        .await;
        checkpoint = c;
        complete = done;
        resumes += 1;
    }
    assert!(resumes >= 5, "expected several resumes, got {resumes}");
    assert_eq!(seen.len() as u64, RECORDS);
    assert!(seen.keys().copied().eq(1..=RECORDS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_checkpoint_it_cannot_understand() {
    let (app, _server) = contacts::router(10);
    let addr = sluice_testkit::serve(app).await;
    let host = NODE.host();
    let connector = host.load_file(Path::new(sluice_artifacts::REST)).unwrap();
    let grant = Arc::new(Grant::allowing([addr.to_string()]));
    let err = connector
        .open(
            &grant,
            &config(addr),
            "contacts",
            SyncMode::FullRefresh,
            Some("not a checkpoint"),
        )
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            sluice_host::HostError::Connector {
                kind: sluice_host::FailureKind::Config,
                ..
            }
        ),
        "{err}"
    );
}
