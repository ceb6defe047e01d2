//! Where the repository's WebAssembly components are, once built.
//!
//! The build script of this crate builds every component (first-party connectors,
//! the example connector and the test components) with
//! `cargo build --profile connector --target wasm32-wasip2`, so a plain `cargo test`
//! or `cargo run` on a fresh clone has them. This crate holds paths only; it never
//! loads or runs a component.

use std::path::Path;

macro_rules! components {
    ($($(#[$doc:meta])* $name:ident = $env:literal;)*) => {
        $( $(#[$doc])* pub const $name: &str = env!($env); )*

        /// Every component: (name, path).
        pub const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

components! {
    /// `connectors/sample`: the deterministic synthetic source.
    SAMPLE = "SLUICE_WASM_SAMPLE";
    /// `connectors/rest`: the declarative REST/JSON source.
    REST = "SLUICE_WASM_REST";
    /// `connectors/http-post`: the NDJSON-over-HTTP destination.
    HTTP_POST = "SLUICE_WASM_HTTP_POST";
    /// `examples/tickets-source`: the example third-party source.
    TICKETS_SOURCE = "SLUICE_WASM_TICKETS_SOURCE";
    /// `tests/components/hostile`: a source that misbehaves on request.
    TEST_HOSTILE = "SLUICE_WASM_TEST_HOSTILE";
    /// `tests/components/probe`: the boundary benchmark component.
    TEST_PROBE = "SLUICE_WASM_TEST_PROBE";
    /// `tests/components/not-a-connector`: a WASI command, not a connector.
    TEST_NOT_A_CONNECTOR = "SLUICE_WASM_TEST_NOT_A_CONNECTOR";
}

/// The path of a first-party connector by its registry name (`sample`, `rest`,
/// `http-post`).
pub fn first_party(name: &str) -> Option<&'static Path> {
    let path = match name {
        "sample" => SAMPLE,
        "rest" => REST,
        "http-post" => HTTP_POST,
        _ => return None,
    };
    Some(Path::new(path))
}
