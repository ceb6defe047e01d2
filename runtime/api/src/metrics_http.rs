//! `GET /metrics`: the node's metrics for Prometheus, on a plain HTTP port of its own
//! (scrapers speak HTTP/1, not gRPC). Read-only and holding nothing.
//!
//! Optionally protected by a metrics token of its own (`--metrics-token`): then a
//! scrape must send `Authorization: Bearer <token>` or gets 401. API tokens are not
//! accepted there: the metrics name every tenant's connections, which a token
//! limited to tenants must not see, and a scraper needs no power over the API. The
//! token is compared as a SHA-256 digest, never logged.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use sluice_engine::Engine;
use tokio::net::TcpListener;

#[derive(Clone)]
struct Metrics {
    engine: Engine,
    /// SHA-256 of the token a scrape must send, when one is required.
    token: Option<Arc<[u8; 32]>>,
}

fn authorized(expected: &[u8; 32], headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            let got: [u8; 32] = Sha256::digest(t.trim().as_bytes()).into();
            &got == expected
        })
}

async fn metrics(State(state): State<Metrics>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.token
        && !authorized(expected, &headers)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this endpoint requires `Authorization: Bearer <metrics token>`\n",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.engine.metrics_text().await,
    )
        .into_response()
}

/// Serves `/metrics` on `listener` until `shutdown` completes, open to every scraper.
pub async fn serve_metrics(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_metrics_with_token(engine, listener, None, shutdown).await
}

/// Serves `/metrics` on `listener` until `shutdown` completes; with `token`, only to
/// scrapes bearing it.
pub async fn serve_metrics_with_token(
    engine: Engine,
    listener: TcpListener,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = token
        .filter(|t| !t.trim().is_empty())
        .map(|t| Arc::new(Sha256::digest(t.trim().as_bytes()).into()));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Metrics { engine, token });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
