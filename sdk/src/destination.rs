//! The destination side of the contract: the [`Destination`] trait and its bridge
//! to the WIT exports.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::__private::destination_world::exports::sluice::connector::destination as wit_dest;
use crate::__private::wit;
use crate::error::parse_config;
use crate::{Result, StreamDescriptor, SyncMode};

/// A destination connector.
pub trait Destination: 'static {
    /// The configuration, deserialized from the connection's config JSON.
    type Config: serde::de::DeserializeOwned;
    /// The writer of one stream.
    type Writer: Writer;

    /// JSON Schema of [`Destination::Config`].
    fn spec() -> serde_json::Value;

    /// Test that the configuration can reach the system.
    fn check(config: &Self::Config) -> Result<()>;

    /// Start writing records of `stream`.
    fn open_writer(config: Self::Config, stream: StreamDescriptor) -> Result<Self::Writer>;
}

/// Writes records of one stream.
pub trait Writer: 'static {
    /// Write a batch of NDJSON records (one JSON object per line). Return how many
    /// records are durably written so far, in total.
    fn write(&mut self, ndjson: &[u8]) -> Result<u64>;
    /// Make everything written durable; return the total durably written.
    fn flush(&mut self) -> Result<u64>;
}

#[doc(hidden)]
pub struct DestinationExport<D>(PhantomData<D>);

#[doc(hidden)]
pub struct WriterExport<W>(RefCell<W>);

impl<D: Destination> wit_dest::Guest for DestinationExport<D> {
    type Writer = WriterExport<D::Writer>;

    fn spec() -> String {
        D::spec().to_string()
    }

    fn check(config: String) -> Result<(), wit::ConnectorError> {
        let config = parse_config::<D::Config>(&config)?;
        Ok(D::check(&config)?)
    }

    fn open_writer(
        config: String,
        stream: wit::StreamDescriptor,
    ) -> Result<wit_dest::Writer, wit::ConnectorError> {
        let config = parse_config::<D::Config>(&config)?;
        let json_schema = serde_json::from_str(&stream.json_schema)
            .map_err(|e| crate::Error::schema(format!("stream schema: {e}")))?;
        let descriptor = StreamDescriptor {
            name: stream.name,
            json_schema,
            primary_key: stream.primary_key,
            cursor_field: stream.cursor_field,
            sync_modes: stream.sync_modes.into_iter().map(SyncMode::from).collect(),
        };
        let writer = D::open_writer(config, descriptor)?;
        Ok(wit_dest::Writer::new(WriterExport(RefCell::new(writer))))
    }
}

impl<W: Writer> wit_dest::GuestWriter for WriterExport<W> {
    fn write(&self, records: Vec<u8>) -> Result<wit::WriteAck, wit::ConnectorError> {
        let durable_records = self.0.borrow_mut().write(&records)?;
        Ok(wit::WriteAck { durable_records })
    }

    fn flush(&self) -> Result<wit::WriteAck, wit::ConnectorError> {
        let durable_records = self.0.borrow_mut().flush()?;
        Ok(wit::WriteAck { durable_records })
    }
}
