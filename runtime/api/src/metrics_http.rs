//! `GET /metrics`: the node's metrics for Prometheus, on a plain HTTP port of its own
//! (scrapers speak HTTP/1, not gRPC). Read-only and holding nothing.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use sluice_engine::Engine;
use tokio::net::TcpListener;

async fn metrics(State(engine): State<Engine>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        engine.metrics_text().await,
    )
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(engine);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
