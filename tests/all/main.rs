//! Sluice's end-to-end tests, in one binary so the crate graph is linked once: one
//! module per area, each testing through the real pieces (components compiled to
//! WebAssembly, the host, the engine over a store of its own, the gRPC
//! server on a TCP port) against local servers from `sluice-testkit`. Run one area
//! with `cargo test -p sluice-tests --test all engine::`. The store is sled unless
//! `SLUICE_TEST_STORE=postgres` runs every test on a PostgreSQL schema of its own.
//!
//! The crash tests, which SIGKILL a real `sluice` process, are a test of
//! `runtime/cli` (`tests/crash.rs`): only a test of the package that owns the binary
//! is told where cargo built it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod api_paging;
mod api_tenants;
mod connector_contract;
mod engine;
mod hostile;
mod hostile_egress;
mod hostile_footprint;
mod hostile_outputs;
mod rate_limits;
mod rest_connector;
mod schedules;
mod scheduling;
