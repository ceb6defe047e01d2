//! Host-side bindings of the `sluice:connector` worlds, generated from `wit/`.
#![allow(missing_docs)]

/// The `source-contract` world: what the host requires of a source.
pub mod source {
    wasmtime::component::bindgen!({
        world: "source-contract",
        path: "../../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

/// The `destination-connector` world; shares the types of [`source`].
pub mod destination {
    wasmtime::component::bindgen!({
        world: "destination-connector",
        path: "../../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "sluice:connector/types": super::source::sluice::connector::types,
            "wasi:logging/logging": super::source::wasi::logging::logging,
        },
    });
}

/// The `declares-limits` world: a source's optional rate-limit declaration.
pub mod limits {
    wasmtime::component::bindgen!({
        world: "declares-limits",
        path: "../../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "sluice:connector/types": super::source::sluice::connector::types,
        },
    });
}

pub use source::sluice::connector::types as wit;
pub use source::wasi::logging::logging as wit_logging;

/// The interface names a connector may export.
pub const SOURCE_INTERFACE: &str = "sluice:connector/source@0.1.0";
/// The optional interface a source declares its API's rate limits with.
pub const LIMITS_INTERFACE: &str = "sluice:connector/limits@0.1.0";
/// See [`SOURCE_INTERFACE`].
pub const DESTINATION_INTERFACE: &str = "sluice:connector/destination@0.1.0";
