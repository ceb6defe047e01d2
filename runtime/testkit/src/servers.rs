//! Local HTTP servers that stand in for third-party APIs: real servers on loopback,
//! never mocks of the host. Each module is one API: a router to [`serve`] and its
//! state, for a test to change or inspect.

pub mod contacts;
pub mod limited_api;
pub mod ndjson_sink;
pub mod pages;
pub mod tickets;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

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

/// A server's state, even after a handler panicked while holding it: a test then
/// fails on its own assertion rather than on a poisoned lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
