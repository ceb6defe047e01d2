//! Shared support for Sluice's end-to-end tests: local HTTP servers that stand in
//! for third-party APIs. Real servers on loopback, never mocks of the host.

pub mod contacts;
pub mod limited_api;

use std::net::SocketAddr;

/// Serve `app` on an ephemeral loopback port; the server lives until the runtime ends.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("cannot bind a loopback port for a test server: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("test server has no address: {e}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

pub mod ndjson_sink;
pub mod nodes;
pub mod pages;
pub mod sled_files;
pub mod tickets;
