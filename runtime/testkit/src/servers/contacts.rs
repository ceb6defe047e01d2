//! The "contacts" API of the shared benchmark data set, served in process: pages of
//! 1,000 records at `/contacts/page-N.json`, each `{"data": [...], "next": "/contacts/page-(N+1).json" | null}`,
//! ids 1..=N without gaps, `updated_at` strictly increasing, ~240-byte records.
//! Every field is a pure function of the id, so a test knows exactly what a sync
//! must have landed. Requests are counted, so tests can tell how many pages were
//! fetched.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Records per page, as in the shared data set.
pub const PAGE_SIZE: u64 = 1000;

/// State of a contacts server.
pub struct Contacts {
    /// Records served in all.
    pub records: u64,
    /// Pages requested so far.
    pub requests: AtomicU64,
}

/// A router serving `records` contacts.
pub fn router(records: u64) -> (Router, Arc<Contacts>) {
    let state = Arc::new(Contacts {
        records,
        requests: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/contacts/{page}", get(page))
        .with_state(state.clone());
    (app, state)
}

async fn page(State(state): State<Arc<Contacts>>, Path(page): Path<String>) -> impl IntoResponse {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let n = page
        .strip_prefix("page-")
        .and_then(|p| p.strip_suffix(".json"))
        .and_then(|p| p.parse::<u64>().ok());
    let pages = state.records.div_ceil(PAGE_SIZE);
    let Some(n) = n.filter(|n| *n >= 1 && *n <= pages.max(1)) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            "no such page".to_string(),
        );
    };
    let first = (n - 1) * PAGE_SIZE + 1;
    let last = (n * PAGE_SIZE).min(state.records);
    let mut body = String::with_capacity(250 * PAGE_SIZE as usize);
    body.push_str("{\"data\":[");
    for id in first..=last {
        if id > first {
            body.push(',');
        }
        body.push_str(&record(id));
    }
    body.push_str("],\"next\":");
    if n < pages {
        let _ = write!(body, "\"/contacts/page-{}.json\"", n + 1);
    } else {
        body.push_str("null");
    }
    body.push('}');
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
}

const FIRST: [&str; 8] = [
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
];
const LAST: [&str; 8] = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
];
const COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "NL", "SE", "ES", "IT"];

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The JSON text of contact `id`.
pub fn record(id: u64) -> String {
    let h = mix(id);
    let first = FIRST[(h % 8) as usize];
    let last = LAST[((h >> 8) % 8) as usize];
    let secs = id * 57;
    format!(
        "{{\"id\":{id},\"updated_at\":\"2024-01-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"email\":\"{}.{}{id}@example.com\",\"first_name\":\"{first}\",\"last_name\":\"{last}\",\"company\":\"Hooli Labs\",\"country\":\"{}\",\"score\":{}.{:02},\"tags\":[\"trial\",\"b2b\"],\"active\":{}}}",
        1 + secs / 86_400 % 28,
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        id % 1000,
        first.to_lowercase(),
        last.to_lowercase(),
        COUNTRIES[((h >> 16) % 8) as usize],
        (h >> 24) % 100,
        (h >> 32) % 100,
        (h >> 40).is_multiple_of(2)
    )
}

/// The `rest` connector's configuration for a contacts server at `addr`: one stream,
/// `contacts`, paged by the `next` link, incremental by `updated_at`.
pub fn rest_config(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "base_url": format!("http://{addr}"),
        "streams": [{
            "name": "contacts",
            "path": "/contacts/page-1.json",
            "records_path": "data",
            "primary_key": ["id"],
            "cursor_field": "updated_at",
            "pagination": {"style": "next_link", "path": "next"}
        }]
    })
}
