//! Write Sluice connectors in Rust.
//!
//! A source connector is a type implementing [`Source`] plus one line,
//! [`export_source!`]; a destination is a [`Destination`] plus [`export_destination!`].
//! The SDK hides the generated WIT bindings: connectors see plain Rust types,
//! serde for configuration, an HTTP client over `wasi:http` ([`http`]) with the common
//! pagination styles ([`paginate`]), the `auth` object connectors accept for an API's
//! credential ([`auth`]), and structured logging ([`log`]).
//!
//! ```ignore
//! use sluice_sdk::prelude::*;
//!
//! struct Hello;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { count: u32 }
//!
//! impl Source for Hello {
//!     type Config = Config;
//!     type Reader = HelloReader;
//!     fn spec() -> serde_json::Value { serde_json::json!({"type": "object"}) }
//!     fn check(_: &Config) -> Result<()> { Ok(()) }
//!     fn discover(_: &Config) -> Result<Vec<StreamDescriptor>> {
//!         Ok(vec![StreamDescriptor::new("greetings", serde_json::json!({"type": "object"}))
//!             .primary_key(["id"])])
//!     }
//!     fn open(config: Config, _: &str, _: SyncMode, _: Option<&str>) -> Result<HelloReader> {
//!         Ok(HelloReader { left: config.count })
//!     }
//! }
//!
//! struct HelloReader { left: u32 }
//!
//! impl StreamReader for HelloReader {
//!     fn next(&mut self, _max: u32) -> Result<Option<Batch>> {
//!         if self.left == 0 { return Ok(None) }
//!         let mut batch = Batch::new();
//!         batch.push(&serde_json::json!({"id": self.left, "hello": "world"}))?;
//!         self.left -= 1;
//!         Ok(Some(batch.checkpoint(self.left.to_string())))
//!     }
//! }
//!
//! sluice_sdk::export_source!(Hello);
//! ```
//!
//! This crate must never depend on anything the host does not grant: no files,
//! sockets or environment variables.

// The generated bindings name this crate by its public name.
extern crate self as sluice_sdk;

pub mod auth;
mod batch;
mod destination;
mod error;
pub mod http;
pub mod log;
pub mod paginate;
mod source;

pub use auth::Auth;
pub use batch::Batch;
pub use destination::{Destination, Writer};
pub use error::{Error, ErrorKind, Result};
pub use source::{RateLimit, Source, StreamDescriptor, StreamReader, SyncMode};

/// Everything a connector usually needs, in one import.
pub mod prelude {
    pub use crate::{
        Batch, Destination, Error, ErrorKind, RateLimit, Result, Source, StreamDescriptor,
        StreamReader, SyncMode, Writer,
    };
}

/// Export a [`Source`] implementation as this component's `sluice:connector/source`.
///
/// Use it once per component, at the crate root: `sluice_sdk::export_source!(MySource);`
#[macro_export]
macro_rules! export_source {
    ($ty:ty) => {
        type __SluiceSourceExport = $crate::__private::SourceExport<$ty>;
        $crate::__private::source_world::export_source_world!(
            __SluiceSourceExport with_types_in $crate::__private::source_world
        );
    };
}

/// Export a [`Destination`] implementation as this component's
/// `sluice:connector/destination`.
///
/// Use it once per component, at the crate root: `sluice_sdk::export_destination!(MyDest);`
#[macro_export]
macro_rules! export_destination {
    ($ty:ty) => {
        type __SluiceDestinationExport = $crate::__private::DestinationExport<$ty>;
        $crate::__private::destination_world::export_destination_world!(
            __SluiceDestinationExport with_types_in $crate::__private::destination_world
        );
    };
}

/// Implementation details of the export macros. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::destination::DestinationExport;
    pub use crate::source::SourceExport;
    pub use wit_bindgen;

    /// Bindings for the `source-connector` world.
    #[allow(missing_docs, unsafe_code, clippy::all)]
    pub mod source_world {
        wit_bindgen::generate!({
            world: "source-connector",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "export_source_world",
            default_bindings_module: "sluice_sdk::__private::source_world",
            runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
            generate_all,
        });
    }

    /// Bindings for the `destination-connector` world; shares the types of
    /// [`source_world`].
    #[allow(missing_docs, unsafe_code, clippy::all)]
    pub mod destination_world {
        wit_bindgen::generate!({
            world: "destination-connector",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "export_destination_world",
            default_bindings_module: "sluice_sdk::__private::destination_world",
            runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
            with: {
                "sluice:connector/types@0.1.0": super::source_world::sluice::connector::types,
                "wasi:logging/logging@0.1.0-draft": super::source_world::wasi::logging::logging,
            },
        });
    }

    pub(crate) use source_world::sluice::connector::types as wit;
}
