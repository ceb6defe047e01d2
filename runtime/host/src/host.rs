//! The connector host: one engine, one linker and one component cache per process.
//! Loading a connector compiles it once (or loads it from the cache), checks that it
//! implements the contract and pre-instantiates it, so each attempt only pays for a
//! fresh store and an instantiation.

use std::path::Path;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use crate::HostError;
use crate::bindings::{self, DESTINATION_INTERFACE, LIMITS_INTERFACE, SOURCE_INTERFACE};
use crate::cache::{ComponentCache, Provenance, digest};
use crate::connector::Connector;
use crate::egress::Egress;
use crate::engine::{EpochTicker, HostSettings, build_engine};
use crate::shared::HostInner;
use crate::state::State;

/// Runs connectors. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

impl Host {
    /// A host with the given settings. Call once per process.
    pub fn new(settings: HostSettings) -> Result<Self, HostError> {
        let engine = build_engine(&settings)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::source::wasi::logging::logging::add_to_linker::<State, HasSelf<State>>(
            &mut linker,
            |s| s,
        )?;
        let cache = ComponentCache::new(&engine, settings.cache_dir.clone());
        let ticker = EpochTicker::start(&engine)?;
        Ok(Self {
            inner: Arc::new(HostInner {
                engine,
                linker,
                cache,
                egress: Arc::new(Egress::new()),
                instances: Arc::new(tokio::sync::Semaphore::new(
                    usize::try_from(settings.max_instances).unwrap_or(usize::MAX),
                )),
                _ticker: ticker,
            }),
        })
    }

    /// The node's rate limiter, shared by every connector request.
    pub fn limiter(&self) -> &std::sync::Arc<sluice_limiter::Limiter> {
        self.inner.egress.limiter()
    }

    /// The process's wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Load a connector from a `.wasm` file.
    pub fn load_file(&self, path: &Path) -> Result<Connector, HostError> {
        let wasm = std::fs::read(path).map_err(|e| HostError::Compile {
            what: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(self.load(&wasm)?.named(name))
    }

    /// Load a connector from the bytes of a component.
    pub fn load(&self, wasm: &[u8]) -> Result<Connector, HostError> {
        let digest = digest(wasm);
        let (component, provenance) = self.inner.cache.get(&digest, wasm)?;
        self.prepare(digest, component, provenance)
    }

    /// Compile `wasm` without any cache (for benchmarks of cold compilation).
    pub fn compile_uncached(&self, wasm: &[u8]) -> Result<Connector, HostError> {
        let digest = digest(wasm);
        let component = self.inner.cache.compile(&digest, wasm)?;
        self.prepare(digest, component, Provenance::Compiled)
    }

    /// Forget the in-memory compiled form of `digest`, so the next load comes from
    /// disk (for benchmarks of cache loads).
    pub fn forget(&self, digest: &str) {
        self.inner.cache.forget(digest);
    }

    fn prepare(
        &self,
        digest: String,
        component: wasmtime::component::Component,
        provenance: Provenance,
    ) -> Result<Connector, HostError> {
        let engine = &self.inner.engine;
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let has_source = exports.iter().any(|n| n == SOURCE_INTERFACE);
        let has_destination = exports.iter().any(|n| n == DESTINATION_INTERFACE);
        let not_a_connector = |reason: String| HostError::NotAConnector {
            digest: digest.clone(),
            reason,
        };
        if !has_source && !has_destination {
            return Err(not_a_connector(format!(
                "it exports [{}], but a connector exports {SOURCE_INTERFACE} or {DESTINATION_INTERFACE}",
                exports.join(", ")
            )));
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| not_a_connector(format!("it cannot be linked: {e:#}")))?;
        let pre_for_limits = pre.clone();
        let source = if has_source {
            let pre = bindings::source::SourceContractPre::new(pre.clone())
                .map_err(|e| not_a_connector(format!("its source export does not match: {e:#}")))?;
            Some(pre)
        } else {
            None
        };
        let destination = if has_destination {
            let pre = bindings::destination::DestinationConnectorPre::new(pre).map_err(|e| {
                not_a_connector(format!("its destination export does not match: {e:#}"))
            })?;
            Some(pre)
        } else {
            None
        };
        // Optional: sources built before the interface existed declare no limits.
        let limits = if has_source && exports.iter().any(|n| n == LIMITS_INTERFACE) {
            let pre = bindings::limits::DeclaresLimitsPre::new(pre_for_limits)
                .map_err(|e| not_a_connector(format!("its limits export does not match: {e:#}")))?;
            Some(pre)
        } else {
            None
        };
        Ok(Connector::new(
            self.inner.clone(),
            digest,
            provenance,
            source,
            destination,
            limits,
        ))
    }
}
