//! The source side of the contract: the [`Source`] trait and its bridge to the WIT
//! exports.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::__private::source_world::exports::sluice::connector::limits as wit_limits;
use crate::__private::source_world::exports::sluice::connector::source as wit_source;
use crate::__private::wit;
use crate::error::parse_config;
use crate::{Batch, Result};

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every record, every time. A complete refresh lets Sluice detect deletions.
    FullRefresh,
    /// Only records changed since the checkpoint.
    Incremental,
}

impl From<wit::SyncMode> for SyncMode {
    fn from(m: wit::SyncMode) -> Self {
        match m {
            wit::SyncMode::FullRefresh => SyncMode::FullRefresh,
            wit::SyncMode::Incremental => SyncMode::Incremental,
        }
    }
}

impl From<SyncMode> for wit::SyncMode {
    fn from(m: SyncMode) -> Self {
        match m {
            SyncMode::FullRefresh => wit::SyncMode::FullRefresh,
            SyncMode::Incremental => wit::SyncMode::Incremental,
        }
    }
}

/// A stream a source can read: its name, the schema of one record, its primary key,
/// its cursor field and the modes it supports.
#[derive(Debug, Clone)]
pub struct StreamDescriptor {
    /// Unique within the connector.
    pub name: String,
    /// JSON Schema of one record.
    pub json_schema: serde_json::Value,
    /// Top-level fields forming the primary key.
    pub primary_key: Vec<String>,
    /// The field incremental reads advance by.
    pub cursor_field: Option<String>,
    /// Supported sync modes.
    pub sync_modes: Vec<SyncMode>,
}

impl StreamDescriptor {
    /// A full-refresh stream without a primary key.
    pub fn new(name: impl Into<String>, json_schema: serde_json::Value) -> Self {
        Self {
            name: name.into(),
            json_schema,
            primary_key: Vec::new(),
            cursor_field: None,
            sync_modes: vec![SyncMode::FullRefresh],
        }
    }

    /// Set the primary key fields.
    pub fn primary_key<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.primary_key = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Make the stream incremental by `field` (it then supports both modes).
    pub fn incremental_by(mut self, field: impl Into<String>) -> Self {
        self.cursor_field = Some(field.into());
        self.sync_modes = vec![SyncMode::FullRefresh, SyncMode::Incremental];
        self
    }
}

impl From<StreamDescriptor> for wit::StreamDescriptor {
    fn from(d: StreamDescriptor) -> Self {
        wit::StreamDescriptor {
            name: d.name,
            json_schema: d.json_schema.to_string(),
            primary_key: d.primary_key,
            cursor_field: d.cursor_field,
            sync_modes: d.sync_modes.into_iter().map(Into::into).collect(),
        }
    }
}

/// A source connector.
///
/// Configuration arrives as JSON and is parsed into [`Source::Config`]; a parse
/// failure becomes an error of kind `config` naming the field and position.
pub trait Source: 'static {
    /// The configuration, deserialized from the connection's config JSON.
    type Config: serde::de::DeserializeOwned;
    /// The reader of one stream.
    type Reader: StreamReader;

    /// JSON Schema of [`Source::Config`].
    fn spec() -> serde_json::Value;

    /// Test that the configuration can reach the system.
    fn check(config: &Self::Config) -> Result<()>;

    /// The streams this configuration can read.
    fn discover(config: &Self::Config) -> Result<Vec<StreamDescriptor>>;

    /// Start reading `stream`, after `checkpoint` if given.
    fn open(
        config: Self::Config,
        stream: &str,
        mode: SyncMode,
        checkpoint: Option<&str>,
    ) -> Result<Self::Reader>;

    /// The rate limits the API this configuration reaches enforces. Sluice keeps
    /// every run that shares a credential within them; a connection may override
    /// each. The default declares none (Sluice still follows `429`s and rate-limit
    /// headers). Must not make requests.
    fn rate_limits(config: &Self::Config) -> Result<Vec<RateLimit>> {
        let _ = config;
        Ok(Vec::new())
    }
}

/// A rate limit of an API: at most `requests` per `per_ms` milliseconds, at most
/// `concurrent` requests in flight, or both, for requests to `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// `host`, `host:port` or `*.domain`, optionally followed by a path prefix.
    pub endpoint: String,
    /// Requests allowed in any interval of `per_ms`.
    pub requests: Option<u32>,
    /// The interval, in milliseconds.
    pub per_ms: u64,
    /// Requests allowed in flight at once.
    pub concurrent: Option<u32>,
}

impl RateLimit {
    /// At most `requests` in any interval of `per`, for `endpoint`.
    pub fn per(endpoint: impl Into<String>, requests: u32, per: std::time::Duration) -> Self {
        Self {
            endpoint: endpoint.into(),
            requests: Some(requests),
            per_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX),
            concurrent: None,
        }
    }

    /// At most `n` requests to `endpoint` in flight at once.
    pub fn concurrent(endpoint: impl Into<String>, n: u32) -> Self {
        Self {
            endpoint: endpoint.into(),
            requests: None,
            per_ms: 1000,
            concurrent: Some(n),
        }
    }

    /// This limit, also at most `n` in flight.
    pub fn and_concurrent(mut self, n: u32) -> Self {
        self.concurrent = Some(n);
        self
    }
}

/// Reads one stream in batches.
pub trait StreamReader: 'static {
    /// The next batch of at most `max_records` records, or `None` when the stream is
    /// exhausted. Each batch should carry a checkpoint that resumes after it.
    fn next(&mut self, max_records: u32) -> Result<Option<Batch>>;
}

#[doc(hidden)]
pub struct SourceExport<S>(PhantomData<S>);

#[doc(hidden)]
pub struct ReaderExport<R>(RefCell<R>);

impl<S: Source> wit_source::Guest for SourceExport<S> {
    type Reader = ReaderExport<S::Reader>;

    fn spec() -> String {
        S::spec().to_string()
    }

    fn check(config: String) -> Result<(), wit::ConnectorError> {
        let config = parse_config::<S::Config>(&config)?;
        Ok(S::check(&config)?)
    }

    fn discover(config: String) -> Result<Vec<wit::StreamDescriptor>, wit::ConnectorError> {
        let config = parse_config::<S::Config>(&config)?;
        Ok(S::discover(&config)?.into_iter().map(Into::into).collect())
    }

    fn open(
        config: String,
        stream: String,
        mode: wit::SyncMode,
        checkpoint: Option<String>,
    ) -> Result<wit_source::Reader, wit::ConnectorError> {
        let config = parse_config::<S::Config>(&config)?;
        let reader = S::open(config, &stream, mode.into(), checkpoint.as_deref())?;
        Ok(wit_source::Reader::new(ReaderExport(RefCell::new(reader))))
    }
}

impl<S: Source> wit_limits::Guest for SourceExport<S> {
    fn rate_limits(config: String) -> Result<Vec<wit_limits::RateLimit>, wit::ConnectorError> {
        let config = parse_config::<S::Config>(&config)?;
        Ok(S::rate_limits(&config)?
            .into_iter()
            .map(|r| wit_limits::RateLimit {
                endpoint: r.endpoint,
                requests: r.requests,
                per_ms: r.per_ms,
                concurrent: r.concurrent,
            })
            .collect())
    }
}

impl<R: StreamReader> wit_source::GuestReader for ReaderExport<R> {
    fn next(&self, max_records: u32) -> Result<Option<wit::Batch>, wit::ConnectorError> {
        let mut reader = self.0.borrow_mut();
        Ok(reader.next(max_records)?.map(Into::into))
    }
}
