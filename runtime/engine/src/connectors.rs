//! Resolving a connection's connector reference to a loaded component.
//!
//! Owns the map from first-party names to their components (embedded in the
//! binary, or `.wasm` files for tests and benchmarks), a cache of loaded
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

/// Where a first-party connector's component comes from.
#[derive(Clone)]
pub enum Component {
    /// The component's bytes, compiled into the binary: a binary copied anywhere
    /// still has its first-party connectors.
    Embedded(&'static [u8]),
    /// A `.wasm` file, read when the connector is first loaded (tests and
    /// benchmarks, which run where the components were built).
    File(PathBuf),
}

impl std::fmt::Debug for Component {
    // Not the bytes: a component is megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Component::Embedded(wasm) => write!(f, "Embedded({} bytes)", wasm.len()),
            Component::File(file) => f.debug_tuple("File").field(file).finish(),
        }
    }
}

impl From<&'static [u8]> for Component {
    fn from(wasm: &'static [u8]) -> Self {
        Component::Embedded(wasm)
    }
}

impl From<PathBuf> for Component {
    fn from(file: PathBuf) -> Self {
        Component::File(file)
    }
}

/// A connector registered through the API, as references resolve it.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    /// Its component file.
    pub file: PathBuf,
    /// The version given when it was registered.
    pub version: String,
    /// `sha256:<hex>` of its component.
    pub digest: String,
}

/// The first bytes of every WebAssembly binary: a file without them is refused
/// before compiling, so no parser ever quotes a file that is not a component.
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Named connectors and loaded components.
pub struct Connectors {
    host: Host,
    named: HashMap<String, Component>,
    /// Connectors registered through the API, by name.
    registered: RwLock<HashMap<String, Registration>>,
    loaded: Mutex<HashMap<String, Connector>>,
    /// Rate limits connectors declared, by (digest, config).
    declared: Mutex<Declarations>,
    discovered: Mutex<Discoveries>,
}

impl Connectors {
    /// Resolves references through `host`; `named` maps first-party names to their
    /// components: embedded bytes (`&'static [u8]`) or files (`PathBuf`).
    pub fn new<C: Into<Component>>(
        host: Host,
        named: impl IntoIterator<Item = (String, C)>,
    ) -> Self {
        Connectors {
            host,
            named: named.into_iter().map(|(n, c)| (n, c.into())).collect(),
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

    /// The first-party connectors: name and component, by name.
    pub fn first_party(&self) -> Vec<(String, Component)> {
        let mut out: Vec<_> = self
            .named
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether `name` is a first-party connector.
    pub fn is_first_party(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }

    /// Resolves `name` to `registration` from now on (a registered connector);
    /// `None` forgets it. Loaded components of that name (and every digest reference)
    /// are dropped, so the next load reads the new file.
    pub(crate) fn set_registered(&self, name: &str, registration: Option<Registration>) {
        if let Ok(mut r) = self.registered.write() {
            match registration {
                Some(f) => r.insert(name.to_owned(), f),
                None => r.remove(name),
            };
        }
        let versioned = format!("{name}@");
        self.cache()
            .retain(|k, _| k != name && !k.starts_with(&versioned) && !k.starts_with("sha256:"));
    }

    /// The registered connector a `name@version` or `sha256:<hex>` reference names.
    fn registered_by_version_or_digest(&self, reference: &str) -> Option<Registration> {
        let registered = self.registered.read().ok()?;
        if reference.starts_with("sha256:") {
            return registered.values().find(|r| r.digest == reference).cloned();
        }
        let (name, version) = reference.rsplit_once('@')?;
        registered
            .get(name)
            .filter(|r| r.version == version)
            .cloned()
    }

    /// The first-party connector whose component has the digest `reference`.
    fn first_party_by_digest(&self, reference: &str) -> Option<String> {
        if !reference.starts_with("sha256:") {
            return None;
        }
        self.named
            .keys()
            .find(|name| self.load(name).is_ok_and(|c| c.digest() == reference))
            .cloned()
    }

    /// Checks that `reference` names a connector of the registry: a first-party or
    /// registered name, `name@version` of a registered one, or the `sha256:<hex>`
    /// digest of either. Never looks at the node's files, so a reference given
    /// through the API can only name what the node offers; the error says what is
    /// accepted and echoes nothing but the reference.
    pub fn check_registry_reference(&self, reference: &str) -> Result<(), String> {
        let registered_name = self
            .registered
            .read()
            .ok()
            .is_some_and(|r| r.contains_key(reference));
        if self.named.contains_key(reference)
            || registered_name
            || self.registered_by_version_or_digest(reference).is_some()
            || self.first_party_by_digest(reference).is_some()
        {
            return Ok(());
        }
        let mut names: Vec<&str> = self.named.keys().map(String::as_str).collect();
        names.sort_unstable();
        Err(format!(
            "not a first-party or registered connector: name one by `name`, `name@version` \
             or `sha256:<digest>` (first-party: {}; `sluice connectors list` shows the \
             registered ones), never by a file path",
            names.join(", ")
        ))
    }

    /// The connector a reference names: a registered name, a first-party name,
    /// `name@version` or `sha256:<digest>` of a registered (or first-party) one, or a
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
        let loaded = match (registered, self.named.get(reference)) {
            (Some(r), _) => self.load_file(reference, &r.file),
            (None, Some(Component::Embedded(wasm))) => self.host.load(wasm),
            (None, Some(Component::File(file))) => self.load_file(reference, file),
            (None, None) => {
                if let Some(r) = self.registered_by_version_or_digest(reference) {
                    self.load_file(reference, &r.file)
                } else if let Some(name) = self.first_party_by_digest(reference) {
                    self.load(&name)
                } else {
                    self.load_file(reference, Path::new(reference))
                }
            }
        };
        let connector = loaded?.named(reference);
        self.cache().insert(reference.to_owned(), connector.clone());
        Ok(connector)
    }

    /// The component in `file`, which `reference` named.
    fn load_file(&self, reference: &str, file: &Path) -> Result<Connector, HostError> {
        let mut magic = [0u8; 4];
        let is_wasm = std::fs::File::open(file)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| &magic == WASM_MAGIC);
        if file.is_file() && !is_wasm {
            return Err(HostError::Compile {
                what: reference.to_owned(),
                message: "not a WebAssembly component (the file does not start with `\\0asm`)"
                    .into(),
            });
        }
        if !file.is_file() {
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
        self.host.load_file(file)
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
    fn embedded_and_file_components_load_alike() {
        let host = Host::new(sluice_host::HostSettings {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap();
        let sample = sluice_artifacts::first_party("sample").unwrap();
        let connectors = Connectors::new(host, [("sample".to_string(), sample.wasm)]);
        let embedded = connectors.load("sample").unwrap();
        assert_eq!(embedded.name(), "sample");
        let file = connectors.load(sluice_artifacts::SAMPLE).unwrap();
        assert_eq!(embedded.digest(), file.digest());
        assert!(connectors.is_first_party("sample"));
        assert!(matches!(
            connectors.first_party().as_slice(),
            [(name, Component::Embedded(_))] if name == "sample"
        ));
        let Err(missing) = connectors.load("no-such-connector") else {
            panic!("loaded a connector that does not exist");
        };
        assert!(
            missing.to_string().contains("those are: sample"),
            "{missing}"
        );
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
