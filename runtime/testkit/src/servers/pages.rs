//! A small paged JSON API whose data set and failures a test changes while it runs.
//!
//! `GET /items?page=N[&updated_since=T]` answers
//! `{"data": [...], "next": "/items?page=N+1[&updated_since=T]" | null}` with pages of
//! [`PAGE_SIZE`] records, in the order the test set them; `updated_since` keeps only
//! records whose `updated_at` sorts after `T` (text order; RFC 3339 times of one zone
//! sort by time). A script of statuses makes chosen requests fail: each request takes
//! the next entry (`None` serves the page, `Some(status)` answers that status), and once
//! the script is spent every request answers the `always` status, if set. Requests are
//! counted.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

/// Records per page.
pub const PAGE_SIZE: usize = 1000;

/// A paged API's data and behaviour.
#[derive(Default)]
pub struct Pages {
    inner: Mutex<Inner>,
    requests: AtomicU64,
}

#[derive(Default)]
struct Inner {
    records: Vec<Value>,
    script: VecDeque<Option<u16>>,
    always: Option<u16>,
}

impl Pages {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        super::lock(&self.inner)
    }

    /// Replaces the data set.
    pub fn set_records(&self, records: Vec<Value>) {
        self.lock().records = records;
    }

    /// The next requests, in order: `None` serves the page, `Some(status)` fails.
    pub fn script(&self, script: impl IntoIterator<Item = Option<u16>>) {
        self.lock().script = script.into_iter().collect();
    }

    /// The status every request answers once the script is spent (`None`: serve).
    pub fn always(&self, status: Option<u16>) {
        self.lock().always = status;
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A router serving `records`.
pub fn router(records: Vec<Value>) -> (Router, Arc<Pages>) {
    let state = Arc::new(Pages::default());
    state.set_records(records);
    let app = Router::new()
        .route("/items", get(page))
        .with_state(state.clone());
    (app, state)
}

/// `updated_at` of a record changed `t` seconds after 2024-01-01T00:00:00Z (`t` under
/// a day).
pub fn timestamp(t: u64) -> String {
    format!(
        "2024-01-01T{:02}:{:02}:{:02}Z",
        t / 3600 % 24,
        t / 60 % 60,
        t % 60
    )
}

/// Item `id`, last changed at `t` (see [`timestamp`]).
pub fn item(id: u64, t: u64) -> Value {
    json!({"id": id, "updated_at": timestamp(t), "name": format!("item {id} at {t}")})
}

async fn page(
    State(state): State<Arc<Pages>>,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let inner = &mut *state.lock();
    let failure = match inner.script.pop_front() {
        Some(step) => step,
        None => inner.always,
    };
    if let Some(status) = failure {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            [(header::CONTENT_TYPE, "text/plain")],
            "failing on purpose".to_string(),
        );
    }
    let since = query.get("updated_since");
    let selected: Vec<&Value> = inner
        .records
        .iter()
        .filter(|r| since.is_none_or(|s| r["updated_at"].as_str().is_some_and(|u| u > s.as_str())))
        .collect();
    let n = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let pages = selected.len().div_ceil(PAGE_SIZE).max(1);
    let data: Vec<&Value> = selected
        .iter()
        .skip((n - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .copied()
        .collect();
    let next = (n < pages).then(|| match since {
        Some(s) => format!("/items?page={}&updated_since={s}", n + 1),
        None => format!("/items?page={}", n + 1),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"data": data, "next": next}).to_string(),
    )
}
