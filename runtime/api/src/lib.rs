//! Sluice's gRPC control API (`proto/sluice/v1/api.proto`): the server over an
//! [`Engine`](sluice_engine::Engine), and the generated client for the CLI and other
//! programs.
//!
//! Modules: `auth` (bearer tokens, read-only scope), `status` (engine errors to gRPC
//! status codes), `convert` (engine and store types to API messages), one module per
//! service, and `server` (serving them with health and reflection). The API never
//! returns or logs a connection's secrets.

mod auth;
mod connections;
mod connectors;
mod convert;
mod metrics_http;
mod nodes;
mod rate_limits;
mod records;
mod runs;
mod server;
mod status;
mod workflows;

/// The generated messages, clients and servers of `sluice.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sluice.v1");
}

/// Encoded descriptors of the API's protobuf files, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

pub use auth::{Scope, Tokens};
pub use metrics_http::serve_metrics;
pub use server::{ApiServer, ServeError, Tls};
