//! An endpoint that receives NDJSON POSTs, as `connectors/http-post` sends them,
//! served in process.
//!
//! `POST /ingest` checks the bearer token, the `application/x-ndjson` content type
//! and, for any request with records, the `x-sluice-stream` header; it keeps every
//! accepted request with its records in arrival order. An empty body is a
//! reachability probe and needs no stream header. `POST /status/{code}` answers
//! `code` to anything.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::Value;

use super::lock;

/// Content type of NDJSON bodies.
pub const NDJSON: &str = "application/x-ndjson";
/// Header naming the stream of the records.
pub const STREAM_HEADER: &str = "x-sluice-stream";

/// One accepted request.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `x-sluice-stream` header, if sent.
    pub stream: Option<String>,
    /// The records, in order.
    pub records: Vec<Value>,
}

/// State of a sink.
pub struct Sink {
    /// The token every request must carry as `Authorization: Bearer <token>`.
    pub token: String,
    received: Mutex<Vec<Received>>,
    refused: Mutex<Vec<String>>,
}

impl Sink {
    /// The accepted requests so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// Why requests were refused, oldest first.
    pub fn refused(&self) -> Vec<String> {
        lock(&self.refused).clone()
    }

    /// Every record of the accepted requests, in arrival order.
    pub fn records(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .flat_map(|r| r.records)
            .collect()
    }

    fn refuse(&self, status: StatusCode, why: String) -> (StatusCode, String) {
        lock(&self.refused).push(why.clone());
        (status, why)
    }
}

/// A router whose `/ingest` requires `token`.
pub fn router(token: &str) -> (Router, Arc<Sink>) {
    let state = Arc::new(Sink {
        token: token.to_string(),
        received: Mutex::new(Vec::new()),
        refused: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/ingest", post(ingest))
        .route("/status/{code}", post(status))
        .with_state(state.clone());
    (app, state)
}

async fn ingest(
    State(sink): State<Arc<Sink>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = format!("Bearer {}", sink.token);
    if text(header::AUTHORIZATION.as_str()) != Some(bearer.as_str()) {
        return sink.refuse(StatusCode::UNAUTHORIZED, "bad token".into());
    }
    if text(header::CONTENT_TYPE.as_str()) != Some(NDJSON) {
        let got = text(header::CONTENT_TYPE.as_str()).map(str::to_owned);
        return sink.refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {got:?}"),
        );
    }
    let stream = text(STREAM_HEADER).map(str::to_owned);
    if !body.is_empty() && stream.is_none() {
        return sink.refuse(StatusCode::BAD_REQUEST, "records without a stream".into());
    }
    let mut records = Vec::new();
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) if v.is_object() => records.push(v),
            _ => {
                return sink.refuse(
                    StatusCode::BAD_REQUEST,
                    format!("line {} is not an object", n + 1),
                );
            }
        }
    }
    if !body.is_empty() && body.last() != Some(&b'\n') {
        return sink.refuse(
            StatusCode::BAD_REQUEST,
            "body does not end in a newline".into(),
        );
    }
    lock(&sink.received).push(Received { stream, records });
    (StatusCode::OK, "ok".into())
}

async fn status(Path(code): Path<u16>) -> impl IntoResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, format!("answering {code} on purpose"))
}
