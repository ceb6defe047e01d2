//! The shared rate-limit budgets of a PostgreSQL store ([`SharedBudgets`]): several
//! clients (nodes) on one schema never hold more of a key than its limit, however
//! their changes interleave; expired holdings count for nothing; a pause one client
//! publishes reaches the others. A store open in one process only has none.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed expectation fails the test"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_store::budgets::{BudgetKey, HoldRequest, SharedBudgets};
use sluice_store::postgres::PgStore;
use sluice_store::{Store, StoreError};
use sluice_testkit::pg::TestSchema;

fn key(endpoint: &str) -> BudgetKey {
    BudgetKey {
        connector: "rest".into(),
        credential: "acme".into(),
        endpoint: endpoint.into(),
    }
}

fn ask(key: &BudgetKey, limit: u32, hold: u32, hold_for: Duration) -> HoldRequest {
    HoldRequest {
        key: key.clone(),
        limit,
        hold,
        wanting: false,
        hold_for,
        pause: None,
    }
}

async fn store(schema: &TestSchema) -> Store {
    let backend = PgStore::connect(schema.url()).await.unwrap();
    Store::with_backend(Arc::new(backend), std::env::temp_dir())
}

/// The sum of the key's unexpired holdings, as the database has it.
async fn held_in_database(schema: &TestSchema, key: &BudgetKey) -> i64 {
    let (client, connection) = tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT coalesce(sum(slots), 0)::int8 FROM rate_holds \
             WHERE connector = $1 AND credential = $2 AND endpoint = $3 \
               AND until_ms > floor(extract(epoch FROM now()) * 1000)::int8",
            &[&key.connector, &key.credential, &key.endpoint],
        )
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    row.get(0)
}

/// A small deterministic generator: the test's interleavings come from the
/// scheduler, its requests from a seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n.max(1))) as u32
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_one_schema_never_hold_more_than_the_limit() {
    let schema = TestSchema::create().await;
    // Three nodes, each with its own store (pool), two clients each.
    let mut clients: Vec<Arc<dyn SharedBudgets>> = Vec::new();
    for _ in 0..3 {
        let store = store(&schema).await;
        for _ in 0..2 {
            clients.push(store.shared_budgets().expect("PostgreSQL shares budgets"));
        }
    }
    let k = key("api.example.com");
    let limit = 20;
    // What each client surely holds: while its call runs, the smaller of what it
    // held and what it asks for. Their sum never exceeds the limit.
    let surely = Arc::new(Mutex::new(vec![0u32; clients.len()]));
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let (client, surely, k) = (client.clone(), surely.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            let mut granted = 0;
            for _ in 0..150 {
                let hold = rng.below(limit + 1);
                {
                    let mut s = surely.lock().unwrap();
                    s[i] = s[i].min(hold);
                }
                let mut request = ask(&k, limit, hold, Duration::from_secs(600));
                request.wanting = rng.below(2) == 0;
                let holding = client.hold(&request).await.unwrap();
                assert!(holding.held <= hold, "never more than asked");
                assert!(holding.holders >= 1);
                let mut s = surely.lock().unwrap();
                s[i] = holding.held;
                let sum: u32 = s.iter().sum();
                assert!(sum <= limit, "{sum} held of {limit}: {s:?}");
                granted += u64::from(holding.held);
            }
            granted
        }));
    }
    let watcher = {
        let (schema_url, k) = (schema.url().to_owned(), k.clone());
        tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&schema_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let task = tokio::spawn(connection);
            let mut most = 0i64;
            for _ in 0..200 {
                let row = client
                    .query_one(
                        "SELECT coalesce(sum(slots), 0)::int8 FROM rate_holds \
                         WHERE connector = $1 AND credential = $2 AND endpoint = $3",
                        &[&k.connector, &k.credential, &k.endpoint],
                    )
                    .await
                    .unwrap();
                most = most.max(row.get::<_, i64>(0));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            drop(client);
            let _ = task.await;
            most
        })
    };
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    assert!(granted > 0, "the clients got slots");
    let most = watcher.await.unwrap();
    assert!(
        most <= i64::from(limit),
        "the database held {most} of {limit}"
    );
    // Nothing is lost: asking one after the other, the clients get it all.
    for client in &clients {
        client
            .hold(&ask(&k, limit, 0, Duration::from_secs(600)))
            .await
            .unwrap();
    }
    let mut total = 0;
    for client in &clients {
        total += client
            .hold(&ask(&k, limit, 7, Duration::from_secs(600)))
            .await
            .unwrap()
            .held;
    }
    assert_eq!(total, limit);
    assert_eq!(held_in_database(&schema, &k).await, i64::from(limit));
}

#[tokio::test]
async fn an_expired_holding_counts_for_nothing_and_a_renewed_one_stays() {
    let schema = TestSchema::create().await;
    let store = store(&schema).await;
    let (a, b) = (
        store.shared_budgets().unwrap(),
        store.shared_budgets().unwrap(),
    );
    let k = key("api.example.com");
    let short = Duration::from_millis(300);
    assert_eq!(a.hold(&ask(&k, 10, 10, short)).await.unwrap().held, 10);
    let refused = b.hold(&ask(&k, 10, 4, short)).await.unwrap();
    assert_eq!(refused.held, 0);
    assert_eq!(refused.holders, 2, "a holder, and this one");
    // Renewed in time, a holding stays whole.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(a.hold(&ask(&k, 10, 10, short)).await.unwrap().held, 10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.hold(&ask(&k, 10, 4, short)).await.unwrap().held, 0);
    // Not renewed, it lapses and the slots go to another.
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    assert_eq!(b.hold(&ask(&k, 10, 4, short)).await.unwrap().held, 4);
    assert_eq!(a.hold(&ask(&k, 10, 10, short)).await.unwrap().held, 6);
}

#[tokio::test]
async fn a_client_that_wants_slots_is_told_to_the_holders() {
    let schema = TestSchema::create().await;
    let store = store(&schema).await;
    let (a, b) = (
        store.shared_budgets().unwrap(),
        store.shared_budgets().unwrap(),
    );
    let k = key("api.example.com");
    let long = Duration::from_secs(60);
    let first = a.hold(&ask(&k, 10, 8, long)).await.unwrap();
    assert_eq!(
        (first.held, first.holders, first.others_wanting),
        (8, 1, false)
    );
    let wanting = HoldRequest {
        wanting: true,
        ..ask(&k, 10, 5, long)
    };
    let second = b.hold(&wanting).await.unwrap();
    assert_eq!((second.held, second.holders), (2, 2));
    let told = a.hold(&ask(&k, 10, 5, long)).await.unwrap();
    assert_eq!((told.held, told.holders, told.others_wanting), (5, 2, true));
    // Given back, the slots go to the one that wants them.
    assert_eq!(b.hold(&wanting).await.unwrap().held, 5);
    // Keys are apart.
    let other = key("other.example.com");
    assert_eq!(b.hold(&ask(&other, 10, 10, long)).await.unwrap().held, 10);
}

#[tokio::test]
async fn a_pause_one_client_publishes_reaches_the_others_and_only_grows() {
    let schema = TestSchema::create().await;
    let (one, two) = (store(&schema).await, store(&schema).await);
    let (a, b) = (one.shared_budgets().unwrap(), two.shared_budgets().unwrap());
    let k = key("api.example.com");
    assert_eq!(b.paused(&k).await.unwrap(), None, "an unknown key");
    a.pause(&k, Duration::from_secs(30)).await.unwrap();
    let paused = b.paused(&k).await.unwrap().expect("paused");
    assert!(
        paused > Duration::from_secs(25) && paused <= Duration::from_secs(30),
        "{paused:?}"
    );
    // A shorter pause does not shorten it; a hold tells it too.
    b.pause(&k, Duration::from_secs(1)).await.unwrap();
    let holding = b
        .hold(&ask(&k, 10, 3, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(holding.held, 3);
    assert!(holding.paused_for.expect("paused") > Duration::from_secs(25));
    assert_eq!(
        a.paused(&key("other.example.com")).await.unwrap(),
        None,
        "another key"
    );
}

#[tokio::test]
async fn a_key_a_backend_cannot_store_is_refused() {
    let schema = TestSchema::create().await;
    let store = store(&schema).await;
    let client = store.shared_budgets().unwrap();
    let bad = BudgetKey {
        endpoint: "api\0example".into(),
        ..key("x")
    };
    let refused = client
        .hold(&ask(&bad, 10, 1, Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Invalid(_)), "{refused}");
}

#[tokio::test]
async fn a_store_open_in_one_process_shares_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.shared_budgets().is_none());
}
