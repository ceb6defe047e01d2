//! Compile each component once: an in-memory map and an on-disk cache of compiled
//! artifacts, both keyed by the component's content digest and the engine's
//! compatibility hash.
//!
//! The on-disk cache is trusted: loading an artifact maps native code into the
//! process, so only this module writes there, atomically (temporary file + rename).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::HostError;

/// The content digest of a component: `sha256:<hex>`.
pub fn digest(wasm: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(wasm)))
}

/// How a component was obtained, for benchmarks and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Already compiled in this process.
    Memory,
    /// Loaded from the on-disk cache.
    Disk,
    /// Compiled now.
    Compiled,
}

/// Compiled components by digest.
pub struct ComponentCache {
    engine: Engine,
    dir: Option<PathBuf>,
    engine_tag: String,
    loaded: Mutex<HashMap<String, Component>>,
}

impl ComponentCache {
    /// A cache for `engine`, persisted under `dir` if given.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            engine: engine.clone(),
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The compiled form of `wasm`, whose digest is `digest`.
    pub fn get(&self, digest: &str, wasm: &[u8]) -> Result<(Component, Provenance), HostError> {
        if let Some(c) = self.lock().get(digest) {
            return Ok((c.clone(), Provenance::Memory));
        }
        let path = self.artifact_path(digest);
        if let Some(path) = &path
            && path.exists()
        {
            match self.load(path) {
                Ok(c) => {
                    self.lock().insert(digest.to_string(), c.clone());
                    return Ok((c, Provenance::Disk));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled component");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let component = self.compile(digest, wasm)?;
        if let Some(path) = &path
            && let Err(e) = self.store(path, &component)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
        }
        self.lock().insert(digest.to_string(), component.clone());
        Ok((component, Provenance::Compiled))
    }

    /// Compile without consulting or filling any cache.
    pub fn compile(&self, what: &str, wasm: &[u8]) -> Result<Component, HostError> {
        Component::new(&self.engine, wasm).map_err(|e| HostError::Compile {
            what: what.to_string(),
            message: format!("{e:#}"),
        })
    }

    /// Drop the in-memory entry of `digest` (the on-disk artifact stays).
    pub fn forget(&self, digest: &str) {
        self.lock().remove(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        let name = digest.replace(':', "-");
        Some(
            self.dir
                .as_ref()?
                .join(format!("{name}-{}.cwasm", self.engine_tag)),
        )
    }

    #[allow(unsafe_code)]
    fn load(&self, path: &Path) -> Result<Component, HostError> {
        // SAFETY: `deserialize_file` trusts the file to be an artifact that this
        // wasmtime version and configuration produced. Only `store` writes this
        // directory, atomically, and the file name carries the engine's
        // compatibility hash, so a mismatched engine never looks for it.
        unsafe { Component::deserialize_file(&self.engine, path) }
            .map_err(|e| HostError::Internal(format!("cannot load {}: {e:#}", path.display())))
    }

    fn store(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Unique per writer: two compiles of one component may race in one process.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}
