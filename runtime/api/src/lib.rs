//! Sluice's gRPC control API (`proto/sluice/v1/api.proto`): the server over an
//! [`Engine`](sluice_engine::Engine), and the generated client for the CLI and other
//! programs.
//!
//! Modules: `auth` (bearer tokens: roles and tenants), `visible` (what of a tenant a
//! caller may see), `paging` (page sizes and tokens of every list call), `status`
//! (engine errors to gRPC status codes), `convert` (engine and store types to API
//! messages), one module per service, `server` (serving them with health and
//! reflection, and the message size limits) and `metrics_http` (`/metrics`). The API
//! never returns or logs a connection's secrets.

mod auth;
mod connections;
mod connectors;
mod convert;
mod metrics_http;
mod nodes;
mod paging;
mod rate_limits;
mod records;
mod runs;
mod server;
mod status;
mod visible;
mod workflows;

/// The generated messages, clients and servers of `sluice.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sluice.v1");
}

/// Encoded descriptors of the API's protobuf files, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

pub use auth::{Role, Scope, TokenEntry, Tokens, TokensError, token_sha256};
pub use metrics_http::{serve_metrics, serve_metrics_with_token};
pub use server::{
    ApiServer, CLIENT_MAX_DECODING_BYTES, MAX_COMPONENT_BYTES, MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES, ServeError, Tls,
};
