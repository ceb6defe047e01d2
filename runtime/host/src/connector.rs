//! A loaded connector: its digest, its pre-instantiated exports, and the calls of
//! the contract. Every call runs in a fresh store under the caller's [`Grant`]; a
//! reader or writer keeps its store for its whole life.

use std::sync::Arc;

use wasmtime::Store;

use sluice_limiter::{RateLimitRule, validate_rules};

use crate::HostError;
use crate::bindings::destination::DestinationConnectorPre;
use crate::bindings::limits::DeclaresLimitsPre;
use crate::bindings::source::SourceContractPre;
use crate::bindings::{DESTINATION_INTERFACE, SOURCE_INTERFACE, wit};
use crate::cache::Provenance;
use crate::call::guarded;
use crate::destination::DestinationWriter;
use crate::limits::Grant;
use crate::shared::HostInner;
use crate::source::SourceReader;
use crate::state::{State, new_store};

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Every record, every time.
    FullRefresh,
    /// Only records changed since the checkpoint.
    Incremental,
}

impl From<SyncMode> for wit::SyncMode {
    fn from(m: SyncMode) -> Self {
        match m {
            SyncMode::FullRefresh => wit::SyncMode::FullRefresh,
            SyncMode::Incremental => wit::SyncMode::Incremental,
        }
    }
}

/// A stream a source offers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamDescriptor {
    /// Unique within the connector.
    pub name: String,
    /// JSON Schema of one record.
    pub json_schema: serde_json::Value,
    /// Top-level fields forming the primary key.
    pub primary_key: Vec<String>,
    /// The field incremental reads advance by.
    pub cursor_field: Option<String>,
    /// Supported modes.
    pub sync_modes: Vec<SyncMode>,
}

impl StreamDescriptor {
    fn from_wit(call: &'static str, d: wit::StreamDescriptor) -> Result<Self, HostError> {
        let json_schema =
            serde_json::from_str(&d.json_schema).map_err(|e| HostError::MalformedOutput {
                call,
                reason: format!(
                    "stream {:?} has a JSON Schema that is not JSON: {e}",
                    d.name
                ),
            })?;
        Ok(Self {
            name: d.name,
            json_schema,
            primary_key: d.primary_key,
            cursor_field: d.cursor_field,
            sync_modes: d
                .sync_modes
                .into_iter()
                .map(|m| match m {
                    wit::SyncMode::FullRefresh => SyncMode::FullRefresh,
                    wit::SyncMode::Incremental => SyncMode::Incremental,
                })
                .collect(),
        })
    }

    pub(crate) fn to_wit(&self) -> wit::StreamDescriptor {
        wit::StreamDescriptor {
            name: self.name.clone(),
            json_schema: self.json_schema.to_string(),
            primary_key: self.primary_key.clone(),
            cursor_field: self.cursor_field.clone(),
            sync_modes: self.sync_modes.iter().map(|m| (*m).into()).collect(),
        }
    }
}

/// A connector ready to run.
#[derive(Clone)]
pub struct Connector {
    host: Arc<HostInner>,
    digest: String,
    name: Arc<str>,
    provenance: Provenance,
    source: Option<SourceContractPre<State>>,
    destination: Option<DestinationConnectorPre<State>>,
    limits: Option<DeclaresLimitsPre<State>>,
}

impl Connector {
    pub(crate) fn new(
        host: Arc<HostInner>,
        digest: String,
        provenance: Provenance,
        source: Option<SourceContractPre<State>>,
        destination: Option<DestinationConnectorPre<State>>,
        limits: Option<DeclaresLimitsPre<State>>,
    ) -> Self {
        let name = Arc::from(digest.as_str());
        Self {
            host,
            digest,
            name,
            provenance,
            source,
            destination,
            limits,
        }
    }

    /// The same connector, named `name` in logs.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Arc::from(name.into());
        self
    }

    /// Content digest, `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The name used in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the compiled code came from.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// Whether it exports `sluice:connector/source`.
    pub fn is_source(&self) -> bool {
        self.source.is_some()
    }

    /// Whether it exports `sluice:connector/destination`.
    pub fn is_destination(&self) -> bool {
        self.destination.is_some()
    }

    async fn instantiate_source(
        &self,
        store: &mut Store<State>,
    ) -> Result<crate::bindings::source::SourceContract, HostError> {
        let pre = self.source_pre()?;
        guarded(store, "instantiate", async |s| {
            Ok(Ok(pre.instantiate_async(s).await?))
        })
        .await
    }

    async fn instantiate_destination(
        &self,
        store: &mut Store<State>,
    ) -> Result<crate::bindings::destination::DestinationConnector, HostError> {
        let pre = self.destination_pre()?;
        guarded(store, "instantiate", async |s| {
            Ok(Ok(pre.instantiate_async(s).await?))
        })
        .await
    }

    /// A store for one instance of the connector, once the pool has a slot for it:
    /// past the pool's size, a run's connector waits here rather than failing.
    pub(crate) async fn store(&self, grant: &Arc<Grant>) -> Store<State> {
        let slot = Arc::clone(&self.host.instances).acquire_owned().await.ok();
        let mut state = State::new(grant.clone(), self.host.egress.clone(), self.name.clone());
        state.slot = slot;
        new_store(&self.host.engine, state)
    }

    fn source_pre(&self) -> Result<&SourceContractPre<State>, HostError> {
        self.source
            .as_ref()
            .ok_or_else(|| HostError::MissingExport {
                digest: self.digest.clone(),
                interface: SOURCE_INTERFACE,
            })
    }

    fn destination_pre(&self) -> Result<&DestinationConnectorPre<State>, HostError> {
        self.destination
            .as_ref()
            .ok_or_else(|| HostError::MissingExport {
                digest: self.digest.clone(),
                interface: DESTINATION_INTERFACE,
            })
    }

    /// Create a store and instantiate the connector, then drop both: the fixed
    /// cost of an attempt (for benchmarks and readiness checks).
    pub async fn instantiate_only(&self, grant: &Arc<Grant>) -> Result<(), HostError> {
        let mut store = self.store(grant).await;
        if self.source.is_some() {
            self.instantiate_source(&mut store).await?;
        } else {
            self.instantiate_destination(&mut store).await?;
        }
        Ok(())
    }

    /// The JSON Schema of the connector's configuration (of its source side when it
    /// has both).
    pub async fn spec(&self) -> Result<serde_json::Value, HostError> {
        let grant = Arc::new(Grant::default());
        let mut store = self.store(&grant).await;
        let call = "spec";
        let text = if self.source.is_some() {
            let c = self.instantiate_source(&mut store).await?;
            guarded(&mut store, call, async |s| {
                Ok(Ok(c.sluice_connector_source().call_spec(s).await?))
            })
            .await?
        } else {
            let c = self.instantiate_destination(&mut store).await?;
            guarded(&mut store, call, async |s| {
                Ok(Ok(c.sluice_connector_destination().call_spec(s).await?))
            })
            .await?
        };
        serde_json::from_str(&text).map_err(|e| {
            HostError::MalformedOutput {
                call,
                reason: format!("spec is not JSON: {e}"),
            }
            .sealed(&grant)
        })
    }

    /// The rate limits the connector declares for `config`; none when it does not
    /// export `sluice:connector/limits` (components older than the interface).
    pub async fn declared_limits(
        &self,
        grant: &Arc<Grant>,
        config: &str,
    ) -> Result<Vec<RateLimitRule>, HostError> {
        let Some(pre) = &self.limits else {
            return Ok(Vec::new());
        };
        let call = "limits.rate-limits";
        let mut store = self.store(grant).await;
        let c = guarded(&mut store, "instantiate", async |s| {
            Ok(Ok(pre.instantiate_async(s).await?))
        })
        .await?;
        let declared = guarded(&mut store, call, async |s| {
            c.sluice_connector_limits()
                .call_rate_limits(s, config)
                .await
        })
        .await?;
        let rules: Vec<RateLimitRule> = declared
            .into_iter()
            .map(|r| RateLimitRule {
                endpoint: r.endpoint,
                requests: r.requests,
                per_ms: r.per_ms,
                concurrent: r.concurrent,
            })
            .collect();
        validate_rules(&rules, "rate-limits").map_err(|e| {
            HostError::MalformedOutput {
                call,
                reason: e.to_string(),
            }
            .sealed(grant)
        })?;
        Ok(rules)
    }

    /// Validate `config` and test that the system is reachable.
    pub async fn check(&self, grant: &Arc<Grant>, config: &str) -> Result<(), HostError> {
        let mut store = self.store(grant).await;
        if self.source.is_some() {
            let c = self.instantiate_source(&mut store).await?;
            guarded(&mut store, "source.check", async |s| {
                c.sluice_connector_source().call_check(s, config).await
            })
            .await
        } else {
            let c = self.instantiate_destination(&mut store).await?;
            guarded(&mut store, "destination.check", async |s| {
                c.sluice_connector_destination().call_check(s, config).await
            })
            .await
        }
    }

    /// The streams `config` can read.
    pub async fn discover(
        &self,
        grant: &Arc<Grant>,
        config: &str,
    ) -> Result<Vec<StreamDescriptor>, HostError> {
        let call = "source.discover";
        let mut store = self.store(grant).await;
        let c = self.instantiate_source(&mut store).await?;
        let streams = guarded(&mut store, call, async |s| {
            c.sluice_connector_source().call_discover(s, config).await
        })
        .await?;
        streams
            .into_iter()
            .map(|d| StreamDescriptor::from_wit(call, d).map_err(|e| e.sealed(grant)))
            .collect()
    }

    /// Start reading `stream`, after `checkpoint` if given.
    pub async fn open(
        &self,
        grant: &Arc<Grant>,
        config: &str,
        stream: &str,
        mode: SyncMode,
        checkpoint: Option<&str>,
    ) -> Result<SourceReader, HostError> {
        let mut store = self.store(grant).await;
        let c = self.instantiate_source(&mut store).await?;
        let reader = guarded(&mut store, "source.open", async |s| {
            c.sluice_connector_source()
                .call_open(s, config, stream, mode.into(), checkpoint)
                .await
        })
        .await?;
        Ok(SourceReader::new(store, c, reader))
    }

    /// Start writing records of `stream` to the destination.
    pub async fn open_writer(
        &self,
        grant: &Arc<Grant>,
        config: &str,
        stream: &StreamDescriptor,
    ) -> Result<DestinationWriter, HostError> {
        let mut store = self.store(grant).await;
        let c = self.instantiate_destination(&mut store).await?;
        let descriptor = stream.to_wit();
        let writer = guarded(&mut store, "destination.open-writer", async |s| {
            c.sluice_connector_destination()
                .call_open_writer(s, config, &descriptor)
                .await
        })
        .await?;
        Ok(DestinationWriter::new(store, c, writer))
    }
}
