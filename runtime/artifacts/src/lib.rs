//! Where the repository's WebAssembly components are, once built.
//!
//! The build script of this crate builds every component (first-party connectors,
//! the example connector and the test components) with
//! `cargo build --profile connector --target wasm32-wasip2`, so a plain `cargo test`
//! or `cargo run` on a fresh clone has them. This crate holds paths and, for the
//! first-party connectors, the components themselves ([`FIRST_PARTY`], embedded at
//! compile time, so a binary copied anywhere still has them); it never loads or runs
//! a component.
//!
//! The paths point into this build's `target/wasm`: only tests and benchmarks,
//! which run where they were built, may read them. Whatever ships uses
//! [`FIRST_PARTY`].

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

/// A first-party connector, embedded in the binary that uses it.
#[derive(Debug)]
pub struct FirstParty {
    /// Its registry name: how connections and `--wasm` name it.
    pub name: &'static str,
    /// The component (`.wasm` bytes).
    pub wasm: &'static [u8],
    /// The file `wasm` was read from when this crate was compiled; it need not
    /// exist where the binary runs (its stem names the connector in logs).
    pub built_from: &'static str,
}

/// The first-party connectors, by registry name. A `static`, so each binary holds
/// one copy of the bytes, and only a binary that uses them.
pub static FIRST_PARTY: [FirstParty; 3] = [
    FirstParty {
        name: "sample",
        wasm: include_bytes!(env!("SLUICE_WASM_SAMPLE")),
        built_from: SAMPLE,
    },
    FirstParty {
        name: "rest",
        wasm: include_bytes!(env!("SLUICE_WASM_REST")),
        built_from: REST,
    },
    FirstParty {
        name: "http-post",
        wasm: include_bytes!(env!("SLUICE_WASM_HTTP_POST")),
        built_from: HTTP_POST,
    },
];

/// A first-party connector by its registry name (`sample`, `rest`, `http-post`).
pub fn first_party(name: &str) -> Option<&'static FirstParty> {
    FIRST_PARTY.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_party_connectors_are_embedded_components() {
        for c in &FIRST_PARTY {
            assert!(
                c.wasm.starts_with(b"\0asm"),
                "{} is not a WebAssembly binary ({} bytes)",
                c.name,
                c.wasm.len()
            );
            assert!(std::ptr::eq(first_party(c.name).unwrap(), c));
        }
        assert!(first_party("tickets-source").is_none());
    }
}
