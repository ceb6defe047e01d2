//! The Sluice connector host.
//!
//! Runs connectors — WebAssembly components implementing `sluice:connector` — fast
//! and safely. One wasmtime [`Engine`](wasmtime::Engine) per process; each connector
//! compiled once and cached on disk by content digest; pre-instantiated; a fresh
//! store per attempt (or per reader/writer) under the limits of a [`Grant`]. A trap,
//! panic, infinite loop, memory bomb, disallowed host or malformed output fails
//! that call with a named [`HostError`]; the process keeps serving.
//!
//! This crate owns the sandbox and nothing else: it never stores records, never
//! schedules, never retries. Those belong to the engine.

mod activity;
mod batch;
mod bindings;
mod cache;
mod call;
mod connector;
mod destination;
mod dial;
mod egress;
mod engine;
mod error;
mod footprint;
mod host;
mod limits;
mod log_gate;
pub mod redact;
mod shared;
mod source;
mod state;

pub use activity::{Activity, LogLine, RequestRecord};
pub use batch::{Batch, BatchError, validate_ndjson, validate_records};
pub use cache::{Provenance, digest};
pub use connector::{Connector, StreamDescriptor, SyncMode};
pub use destination::DestinationWriter;
pub use dial::{AddressClass, AddressRefused, classify, parse_network};
pub use egress::EgressRefusal;
pub use engine::{EPOCH_TICK, HostSettings, default_cache_dir, engine_config};
pub use error::HostError;
pub use host::Host;
pub use ipnet::IpNet;
pub use limits::{ANONYMOUS, Grant, Limits, RateScope};
pub use sluice_limiter as limiter;
pub use sluice_model::FailureKind;
pub use source::SourceReader;
