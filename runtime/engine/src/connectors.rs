//! Resolving a connection's connector reference to a loaded component.
//!
//! Owns the map from first-party names to their `.wasm` files and a cache of loaded
//! connectors by reference. It never runs a connector: it only compiles (through the
//! host's on-disk cache) and hands out [`Connector`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sluice_host::limiter::RateLimitRule;
use sluice_host::{Connector, Grant, Host, HostError};

/// Declarations kept before the cache starts over (configs are small, but a node
/// may see many).
const MAX_DECLARATIONS: usize = 10_000;

/// Declared rate limits by (component digest, config).
type Declarations = HashMap<(String, String), Arc<[RateLimitRule]>>;

/// Named connectors and loaded components.
pub struct Connectors {
    host: Host,
    named: HashMap<String, PathBuf>,
    /// Connectors registered through the API, by name: their component files.
    registered: RwLock<HashMap<String, PathBuf>>,
    loaded: Mutex<HashMap<String, Connector>>,
    /// Rate limits connectors declared, by (digest, config).
    declared: Mutex<Declarations>,
}

impl Connectors {
    /// Resolves references through `host`; `named` maps first-party names to files.
    pub fn new(host: Host, named: impl IntoIterator<Item = (String, PathBuf)>) -> Self {
        Connectors {
            host,
            named: named.into_iter().collect(),
            registered: RwLock::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            declared: Mutex::new(HashMap::new()),
        }
    }

    /// The rate limits `connector` declares for `config`, asked once per component
    /// and config (a declaration depends on nothing else), under `grant`.
    pub async fn declared_limits(
        &self,
        connector: &Connector,
        grant: &Grant,
        config: &str,
    ) -> Result<Arc<[RateLimitRule]>, HostError> {
        let key = (connector.digest().to_owned(), config.to_owned());
        if let Some(rules) = self.declared_lock().get(&key) {
            return Ok(rules.clone());
        }
        let grant = Arc::new(grant.clone());
        let rules: Arc<[RateLimitRule]> = connector.declared_limits(&grant, config).await?.into();
        let mut declared = self.declared_lock();
        if declared.len() >= MAX_DECLARATIONS {
            declared.clear();
        }
        declared.insert(key, rules.clone());
        Ok(rules)
    }

    fn declared_lock(&self) -> std::sync::MutexGuard<'_, Declarations> {
        self.declared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host connectors run in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The first-party connectors: name and file.
    pub fn first_party(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<_> = self
            .named
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        out.sort();
        out
    }

    /// Whether `name` is a first-party connector.
    pub fn is_first_party(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }

    /// Resolves `name` to `file` from now on (a registered connector); `None` forgets
    /// it. A loaded component of that name is dropped, so the next load reads `file`.
    pub(crate) fn set_registered(&self, name: &str, file: Option<PathBuf>) {
        if let Ok(mut r) = self.registered.write() {
            match file {
                Some(f) => r.insert(name.to_owned(), f),
                None => r.remove(name),
            };
        }
        self.cache().remove(name);
    }

    /// The connector a reference names: a registered name, a first-party name or a
    /// `.wasm` path.
    pub fn load(&self, reference: &str) -> Result<Connector, HostError> {
        if let Some(c) = self.cache().get(reference) {
            return Ok(c.clone());
        }
        let registered = self
            .registered
            .read()
            .ok()
            .and_then(|r| r.get(reference).cloned());
        let path = match registered.or_else(|| self.named.get(reference).cloned()) {
            Some(p) => p,
            None => Path::new(reference).to_path_buf(),
        };
        if !path.is_file() {
            let mut names: Vec<&str> = self.named.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(HostError::Compile {
                what: reference.to_owned(),
                message: format!(
                    "no such file, and not a first-party connector (those are: {})",
                    names.join(", ")
                ),
            });
        }
        let connector = self.host.load_file(&path)?.named(reference);
        self.cache().insert(reference.to_owned(), connector.clone());
        Ok(connector)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connector>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}
