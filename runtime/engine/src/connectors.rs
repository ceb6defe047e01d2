//! Resolving a connection's connector reference to a loaded component.
//!
//! Owns the map from first-party names to their `.wasm` files, a cache of loaded
//! connectors by reference, and what connectors answered that depends only on their
//! component and config (declared rate limits; recent discoveries). It runs a
//! connector only to ask those; it compiles (through the host's on-disk cache) and
//! hands out [`Connector`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_host::limiter::RateLimitRule;
use sluice_host::{Connector, Grant, Host, HostError, StreamDescriptor};

/// Declarations kept before the cache starts over (configs are small, but a node
/// may see many).
const MAX_DECLARATIONS: usize = 10_000;

/// Declared rate limits by (component digest, config).
type Declarations = HashMap<(String, String), Arc<[RateLimitRule]>>;

/// How long a discovery is reused for runs of the same component and config. A run
/// with trivial work would otherwise spend a whole instance (and the parsing of every
/// stream's JSON Schema) on it; a stream that appeared since is not missed, because a
/// discovery lacking a stream a run needs is asked again.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// Recent discoveries by (component digest, config).
type Discoveries = HashMap<(String, String), (Instant, Arc<[StreamDescriptor]>)>;

/// Whether a discovery made `age` ago answers a run needing the streams `needed`.
fn reusable(age: Duration, offered: &[StreamDescriptor], needed: &[&str]) -> bool {
    age < DISCOVERY_TTL && needed.iter().all(|n| offered.iter().any(|d| d.name == *n))
}

/// Named connectors and loaded components.
pub struct Connectors {
    host: Host,
    named: HashMap<String, PathBuf>,
    /// Connectors registered through the API, by name: their component files.
    registered: RwLock<HashMap<String, PathBuf>>,
    loaded: Mutex<HashMap<String, Connector>>,
    /// Rate limits connectors declared, by (digest, config).
    declared: Mutex<Declarations>,
    discovered: Mutex<Discoveries>,
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
            discovered: Mutex::new(HashMap::new()),
        }
    }

    /// The streams `connector` offers for `config`, discovered under `grant` at most
    /// [`DISCOVERY_TTL`] ago and naming every stream of `needed`.
    pub(crate) async fn discover(
        &self,
        connector: &Connector,
        grant: &Arc<Grant>,
        config: &str,
        needed: &[&str],
    ) -> Result<Arc<[StreamDescriptor]>, HostError> {
        let key = (connector.digest().to_owned(), config.to_owned());
        let hit = self.discovered_lock().get(&key).cloned();
        if let Some((at, streams)) = hit
            && reusable(at.elapsed(), &streams, needed)
        {
            return Ok(streams);
        }
        let streams: Arc<[StreamDescriptor]> = connector.discover(grant, config).await?.into();
        let mut discovered = self.discovered_lock();
        if discovered.len() >= MAX_DECLARATIONS {
            discovered.clear();
        }
        discovered.insert(key, (Instant::now(), streams.clone()));
        Ok(streams)
    }

    fn discovered_lock(&self) -> std::sync::MutexGuard<'_, Discoveries> {
        self.discovered.lock().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamDescriptor {
        StreamDescriptor {
            name: name.into(),
            json_schema: serde_json::json!({"type": "object"}),
            primary_key: vec!["id".into()],
            cursor_field: None,
            sync_modes: vec![sluice_host::SyncMode::FullRefresh],
        }
    }

    #[test]
    fn a_discovery_is_reused_while_recent_and_naming_every_stream_needed() {
        let offered = [stream("users"), stream("orders")];
        let young = Duration::from_secs(1);
        assert!(reusable(young, &offered, &["users", "orders"]));
        assert!(reusable(young, &offered, &[]));
        // A stream it does not name may have appeared since: ask again.
        assert!(!reusable(young, &offered, &["users", "tickets"]));
        assert!(!reusable(DISCOVERY_TTL, &offered, &["users"]));
    }
}
