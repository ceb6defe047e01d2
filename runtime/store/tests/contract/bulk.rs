//! What copying a store takes of the contract: the catalog's kinds, the hub's streams
//! and live records, an import that writes a stream's changes as they are; and the
//! copy itself, from this backend to each backend, verified, and refused into a store
//! that is not empty.

use sluice_store::copy::{CopyError, copy, verify};
use sluice_store::hub::{Change, ChangeKind, StreamImport};
use sluice_store::log::{RunFilter, RunId};
use sluice_store::run_logs::{LogEntry, LogFilter};
use sluice_store::{BatchCommit, Store, StoreError, StreamEnd};

use crate::{PgSite, Site, SledSite, begun, run_id, scheduled};

/// A refresh generation later than the copy: a run scheduled after it.
const LATER: u64 = 4_000_000_000_000;

fn batch(stream: &str, ids: std::ops::Range<u32>, tag: &str, generation: u64) -> BatchCommit {
    let mut records = Vec::new();
    for id in ids {
        records.extend_from_slice(format!("{{\"id\":{id},\"v\":\"{tag}{id}\"}}\n").as_bytes());
    }
    BatchCommit {
        connection: "c".into(),
        stream: stream.into(),
        primary_key: vec!["id".into()],
        records,
        checkpoint: format!("{tag}-cp"),
        attempt: 1,
        generation,
        incremental: generation == 0,
    }
}

fn refresh_end(stream: &str, generation: u64, completes_run: bool) -> StreamEnd {
    StreamEnd {
        connection: "c".into(),
        stream: stream.into(),
        full_refresh: true,
        generation,
        checkpoint: "end".into(),
        attempt: 1,
        completes_run,
    }
}

async fn started(store: &Store, run: RunId, at: i64) {
    store
        .log()
        .append_at(run, at, vec![scheduled("wf", "c", "t")])
        .await
        .unwrap();
    store
        .log()
        .append_at(run, at + 5, vec![begun(1)])
        .await
        .unwrap();
}

pub async fn catalog_kinds_are_listed_sorted_and_go_with_their_last_document(site: &dyn Site) {
    let store = site.open().await;
    let catalog = store.catalog();
    assert!(catalog.kinds().await.unwrap().is_empty());
    for (kind, name) in [
        ("workflow", "a"),
        ("work", "x"),
        ("connection", "b"),
        ("workflow", "b"),
    ] {
        catalog.put(kind, name, b"{}").await.unwrap();
    }
    assert_eq!(
        catalog.kinds().await.unwrap(),
        ["connection", "work", "workflow"]
    );
    catalog.remove("work", "x").await.unwrap();
    assert_eq!(catalog.kinds().await.unwrap(), ["connection", "workflow"]);
}

pub async fn hub_streams_are_listed_with_every_stream_written(site: &dyn Site) {
    let store = site.open().await;
    assert!(store.hub_bulk().streams().await.unwrap().is_empty());
    let run = run_id(1);
    started(&store, run, 1_000).await;
    store
        .commit_batch(run, batch("users", 0..3, "a", 7))
        .await
        .unwrap();
    let mut other = batch("orders", 0..2, "a", 0);
    other.connection = "b".into();
    store.commit_batch(run, other).await.unwrap();
    assert_eq!(
        store.hub_bulk().streams().await.unwrap(),
        [
            ("b".to_owned(), "orders".to_owned()),
            ("c".to_owned(), "users".to_owned())
        ]
    );
}

pub async fn live_records_page_through_the_feed_each_record_once_at_its_latest(site: &dyn Site) {
    let store = site.open().await;
    let run = run_id(2);
    started(&store, run, 1_000).await;
    store
        .commit_batch(run, batch("users", 0..50, "a", 1))
        .await
        .unwrap();
    store
        .commit_batch(run, batch("users", 10..20, "b", 1))
        .await
        .unwrap();
    let second = run_id(3);
    started(&store, second, 2_000).await;
    store
        .commit_batch(second, batch("users", 0..40, "a", 2))
        .await
        .unwrap();
    store
        .commit_batch(second, batch("users", 10..20, "b", 2))
        .await
        .unwrap();
    let deleted = store
        .complete_stream(second, refresh_end("users", 2, false))
        .await
        .unwrap();
    assert_eq!(deleted, 10, "40..50 were not seen by the second refresh");

    let mut listed = Vec::new();
    let mut after = 0;
    loop {
        let (records, next) = store
            .hub_bulk()
            .live_records("c", "users", after, 7)
            .await
            .unwrap();
        if next == after {
            assert!(records.is_empty());
            break;
        }
        listed.extend(records);
        after = next;
    }
    assert_eq!(listed.len(), 40);
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 40);
    let mut ids: Vec<u64> = listed
        .iter()
        .map(|r| r.primary_key.trim_matches(['[', ']']).parse().unwrap())
        .collect();
    // In feed order: the records updated last come last.
    assert_eq!(&ids[30..], (10..20).collect::<Vec<_>>());
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    for r in &listed {
        let id: u64 = r.primary_key.trim_matches(['[', ']']).parse().unwrap();
        let got = store
            .hub()
            .get("c", "users", &[id.into()])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*r, got, "listed as read by its key");
    }
    // A stream never written has none.
    let (none, next) = store
        .hub_bulk()
        .live_records("c", "nothing", 0, 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(next, 0);
}

fn change(kind: ChangeKind, id: u32, version: u64, data: Option<&str>) -> Change {
    Change {
        cursor: 0,
        kind,
        primary_key: format!("[{id}]"),
        version,
        data: data.map(str::to_owned),
    }
}

fn import(changes: Vec<Change>, cursor: Option<&str>) -> StreamImport {
    StreamImport {
        connection: "c".into(),
        stream: "users".into(),
        changes,
        cursor: cursor.map(str::to_owned),
        at_unix_ms: 1_700_000_000_000,
    }
}

pub async fn an_import_writes_changes_as_they_are_and_later_batches_follow_them(site: &dyn Site) {
    use ChangeKind::{Created, Deleted, Updated};
    let history = [
        change(Created, 1, 1, Some(r#"{"id":1,"v":"a"}"#)),
        change(Created, 2, 1, Some(r#"{"id":2,"v":"a"}"#)),
        change(Updated, 1, 2, Some(r#"{"id":1,"v":"b"}"#)),
        change(Deleted, 2, 2, None),
        change(Created, 3, 1, Some(r#"{"id":3,"v":"a"}"#)),
        change(Created, 2, 3, Some(r#"{"id":2,"v":"c"}"#)),
    ];
    {
        let store = site.open().await;
        let bulk = store.hub_bulk();
        bulk.import(import(history[..4].to_vec(), None))
            .await
            .unwrap();
        bulk.import(import(history[4..].to_vec(), Some("cursor-9")))
            .await
            .unwrap();
    }
    let store = site.open().await;
    let (feed, _) = store.hub().feed("c", "users", 0, 100).await.unwrap();
    let strip = |c: &Change| (c.kind, c.primary_key.clone(), c.version, c.data.clone());
    assert_eq!(
        feed.iter().map(strip).collect::<Vec<_>>(),
        history.iter().map(strip).collect::<Vec<_>>(),
        "the feed is the history imported, in order"
    );
    assert!(
        feed.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "{feed:?}"
    );
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 3);
    assert_eq!(
        store
            .hub()
            .stream_cursor("c", "users")
            .await
            .unwrap()
            .as_deref(),
        Some("cursor-9")
    );
    let one = store
        .hub()
        .get("c", "users", &[1.into()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((one.version, one.data.as_str()), (2, r#"{"id":1,"v":"b"}"#));
    assert_eq!(one.first_seen_ms, 1_700_000_000_000);

    // A run's batch is classified against the imported state: the same bytes are
    // unchanged, others update the record at the next version.
    let run = run_id(4);
    started(&store, run, 1_800_000_000_000).await;
    let mut records = Vec::new();
    for line in [
        r#"{"id":1,"v":"b"}"#,
        r#"{"id":2,"v":"d"}"#,
        r#"{"id":3,"v":"a"}"#,
    ] {
        records.extend_from_slice(line.as_bytes());
        records.push(b'\n');
    }
    let committed = store
        .commit_batch(
            run,
            BatchCommit {
                connection: "c".into(),
                stream: "users".into(),
                primary_key: vec!["id".into()],
                records,
                checkpoint: "x".into(),
                attempt: 1,
                generation: 1_800_000_000_000,
                incremental: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            committed.outcome.created,
            committed.outcome.updated,
            committed.outcome.unchanged
        ),
        (0, 1, 2)
    );
    let two = store
        .hub()
        .get("c", "users", &[2.into()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.version, 4);
    // Every imported record was seen by that refresh: completing it deletes nothing.
    let deleted = store
        .complete_stream(run, refresh_end("users", 1_800_000_000_000, false))
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 3);
}

pub async fn an_import_that_does_not_follow_its_records_is_refused_and_writes_nothing(
    site: &dyn Site,
) {
    use ChangeKind::{Created, Deleted, Updated};
    let store = site.open().await;
    let bulk = store.hub_bulk();
    bulk.import(import(
        vec![change(Created, 1, 1, Some(r#"{"id":1}"#))],
        Some("a"),
    ))
    .await
    .unwrap();
    let refused = [
        // A gap in the versions.
        vec![change(Updated, 1, 3, Some(r#"{"id":1,"v":2}"#))],
        // An update of a record that does not exist.
        vec![change(Updated, 2, 2, Some(r#"{"id":2}"#))],
        // A creation of a live record.
        vec![change(Created, 1, 2, Some(r#"{"id":1}"#))],
        // A deletion with data, and a valid change before it: neither lands.
        vec![
            change(Created, 5, 1, Some(r#"{"id":5}"#)),
            change(Deleted, 1, 2, Some("{}")),
        ],
        // A creation without data.
        vec![change(Created, 6, 1, None)],
    ];
    for changes in refused {
        match bulk.import(import(changes.clone(), Some("b"))).await {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains("users"), "{message}")
            }
            other => panic!("{changes:?} was not refused: {other:?}"),
        }
    }
    let (feed, _) = store.hub().feed("c", "users", 0, 100).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(store.hub().count("c", "users").await.unwrap(), 1);
    assert_eq!(
        store
            .hub()
            .stream_cursor("c", "users")
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
}

/// A store with something of everything: documents, runs (one in flight) with log
/// entries, a full-refresh stream with updates and deletions, an incremental stream
/// with a cursor.
async fn filled(store: &Store) {
    let catalog = store.catalog();
    catalog
        .put("workflow", "wf", br#"{"name":"wf"}"#)
        .await
        .unwrap();
    catalog.put("connection", "c", b"{}").await.unwrap();
    catalog.put("schedule", "wf", b"\x00\x01").await.unwrap();

    let first = run_id(10);
    started(store, first, 1_000).await;
    store
        .commit_batch(first, batch("users", 0..300, "a", 1))
        .await
        .unwrap();
    store
        .commit_batch(first, batch("orders", 0..20, "a", 0))
        .await
        .unwrap();
    store
        .complete_stream(first, refresh_end("users", 1, true))
        .await
        .unwrap();
    let second = run_id(11);
    started(store, second, 2_000).await;
    store
        .commit_batch(second, batch("users", 0..250, "a", 2))
        .await
        .unwrap();
    store
        .commit_batch(second, batch("users", 100..150, "b", 2))
        .await
        .unwrap();
    store
        .complete_stream(second, refresh_end("users", 2, false))
        .await
        .unwrap();
    store
        .commit_batch(second, batch("orders", 20..30, "a", 0))
        .await
        .unwrap();
    // Still in flight: its attempt began and committed a batch.
    let entry = LogEntry {
        at_unix_ms: 2_100,
        attempt: 1,
        stream: Some("users".into()),
        level: "info".into(),
        context: "source.next".into(),
        message: "page 3".into(),
        request: None,
    };
    store
        .run_logs()
        .append(second, &[entry.clone(), entry])
        .await
        .unwrap();
}

pub async fn a_store_copies_to_each_backend_and_verifies(site: &dyn Site) {
    let from = site.open().await;
    filled(&from).await;
    let sled = SledSite::new().await;
    let pg = PgSite::new().await;
    for to_site in [&sled as &dyn Site, &pg] {
        let to = to_site.open().await;
        let report = copy(&from, &to, &|_| {}).await.unwrap();
        let v = &report.verified;
        assert_eq!((v.kinds, v.documents, v.runs), (3, 3, 2));
        assert_eq!(v.streams.len(), 2);
        assert_eq!(report.live_records(), 250 + 30);
        assert_eq!(report.run_log_entries, 2);
        let users = v.streams.iter().find(|s| s.stream == "users").unwrap();
        assert_eq!((users.live, users.changes), (250, 300 + 50 + 50));
        let orders = v.streams.iter().find(|s| s.stream == "orders").unwrap();
        assert_eq!(orders.cursor.as_deref(), Some("a-cp"));

        // Listing and summaries are the source's, times included.
        let all = RunFilter::default();
        assert_eq!(
            from.log().list(&all).await.unwrap(),
            to.log().list(&all).await.unwrap()
        );
        assert_eq!(
            to.log().in_flight().await.unwrap(),
            [run_id(11)],
            "the run in flight is still in flight"
        );
        let lines = to
            .run_logs()
            .read(run_id(11), &LogFilter::default())
            .await
            .unwrap();
        assert_eq!(lines.len(), 2);

        // The copy carries on: the in-flight run's next batch classifies against the
        // copied records, and a new refresh deletes what it does not see.
        let committed = to
            .commit_batch(run_id(11), batch("users", 0..100, "a", 2))
            .await
            .unwrap();
        assert_eq!(committed.outcome.unchanged, 100);
        let third = run_id(12);
        started(&to, third, 3_000).await;
        let committed = to
            .commit_batch(third, batch("users", 0..200, "a", LATER))
            .await
            .unwrap();
        assert_eq!(
            (committed.outcome.unchanged, committed.outcome.updated),
            (150, 50)
        );
        let deleted = to
            .complete_stream(third, refresh_end("users", LATER, false))
            .await
            .unwrap();
        assert_eq!(deleted, 50);
        drop(to);
        // And the copy has moved on from its source: verifying says so.
        let to = to_site.open().await;
        assert!(matches!(
            verify(&from, &to).await,
            Err(CopyError::Mismatch(_))
        ));
    }
}

pub async fn a_copy_into_a_store_that_is_not_empty_is_refused_and_writes_nothing(site: &dyn Site) {
    let from = SledSite::new().await;
    let from = from.open().await;
    filled(&from).await;
    let to = site.open().await;
    to.catalog()
        .put("connection", "other", b"{}")
        .await
        .unwrap();
    match copy(&from, &to, &|_| {}).await {
        Err(e @ CopyError::TargetNotEmpty(_)) => {
            assert!(e.to_string().contains("1 catalog document"), "{e}");
            assert!(e.to_string().contains("empty store"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(to.catalog().kinds().await.unwrap(), ["connection"]);
    assert!(
        to.log()
            .list(&RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(to.hub_bulk().streams().await.unwrap().is_empty());

    // A run alone, or a stream alone, is enough to refuse.
    let other = PgSite::new().await;
    let other = other.open().await;
    other
        .log()
        .append(run_id(1), vec![scheduled("wf", "c", "t")])
        .await
        .unwrap();
    assert!(matches!(
        copy(&from, &other, &|_| {}).await,
        Err(CopyError::TargetNotEmpty(_))
    ));
}
