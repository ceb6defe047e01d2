//! A declarative REST/JSON source: each configured stream is an endpoint returning
//! pages of JSON records, read with one of the SDK's pagination styles.
//!
//! This crate owns the mapping from configuration to requests ([`config`]), the
//! raw-JSON reading of pages that keeps large syncs fast ([`raw`]), the reader and
//! its resume position ([`reader`]) and the checkpoint format ([`checkpoint`]).

pub mod checkpoint;
pub mod config;
pub mod raw;
pub mod reader;

use sluice_sdk::prelude::*;

use crate::config::Config;
use crate::reader::{Fetcher, RestReader};

/// The REST source.
pub struct RestSource;

impl Source for RestSource {
    type Config = Config;
    type Reader = RestReader;

    fn spec() -> serde_json::Value {
        config::spec()
    }

    fn check(config: &Config) -> Result<()> {
        config.validate()?;
        let stream = config
            .streams
            .first()
            .ok_or_else(|| Error::config("no streams configured"))?;
        let first = stream.pagination.first(&config.stream_url(stream)?);
        Fetcher::new(config, stream).fetch(&first)?;
        Ok(())
    }

    fn discover(config: &Config) -> Result<Vec<StreamDescriptor>> {
        config.validate()?;
        Ok(config
            .streams
            .iter()
            .map(|s| {
                let schema = s
                    .json_schema
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"}));
                let d = StreamDescriptor::new(&s.name, schema).primary_key(&s.primary_key);
                match &s.cursor_field {
                    Some(field) => d.incremental_by(field),
                    None => d,
                }
            })
            .collect())
    }

    fn open(
        config: Config,
        stream: &str,
        mode: SyncMode,
        checkpoint: Option<&str>,
    ) -> Result<RestReader> {
        RestReader::open(&config, stream, mode, checkpoint)
    }

    fn rate_limits(config: &Config) -> Result<Vec<sluice_sdk::RateLimit>> {
        config.rate_limits()
    }
}

sluice_sdk::export_source!(RestSource);
