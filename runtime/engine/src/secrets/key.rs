//! The node's secrets key: 32 random bytes, read from a file or the environment,
//! named by a key id that is safe to show, and what is derived from it (the key of
//! credential labels). A [`Keyring`] is the key a node seals with plus, during a
//! rotation, the previous keys it still opens.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Generate, Key};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::SecretsError;

/// Bytes of a secrets key.
pub const KEY_LEN: usize = 32;
/// The name of the key file a node without a configured key generates beside its
/// embedded store.
pub const KEY_FILE_NAME: &str = "secrets.key";
/// The longest key file read: a key with surrounding whitespace fits many times.
const MAX_KEY_FILE_BYTES: u64 = 4096;
/// Bytes of the keyed hash shown as a key's id (8 hex characters: enough to tell
/// keys apart, too few to say anything about the key).
const KEY_ID_BYTES: usize = 4;
/// Bytes of the keyed hash in a credential label.
const LABEL_BYTES: usize = 8;
/// What each derived value is for; a derivation never doubles as another.
const KEY_ID_CONTEXT: &[u8] = b"sluice/secrets-key-id/v1";
const LABEL_CONTEXT: &[u8] = b"sluice/credential-label/v1";

type HmacSha256 = Hmac<Sha256>;

fn keyed_hash(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    for part in parts {
        // Length-prefixed, so that no two lists of parts hash alike.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC accepts keys of every length")
}

/// A secrets key. Its `Debug` shows only its id.
#[derive(Clone)]
pub struct SecretsKey {
    bytes: [u8; KEY_LEN],
    id: String,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey({})", self.id)
    }
}

impl PartialEq for SecretsKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.bytes == other.bytes
    }
}

impl SecretsKey {
    /// The key of these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let id = format!(
            "k-{}",
            hex::encode(&keyed_hash(&bytes, &[KEY_ID_CONTEXT])[..KEY_ID_BYTES])
        );
        SecretsKey { bytes, id }
    }

    /// A new random key.
    pub fn generate() -> Result<Self, SecretsError> {
        let key = Key::<XChaCha20Poly1305>::try_generate().map_err(|e| SecretsError::KeyFile {
            path: "(new key)".into(),
            message: format!("no randomness from the system: {e}"),
        })?;
        let mut bytes = [0; KEY_LEN];
        bytes.copy_from_slice(key.as_slice());
        Ok(Self::from_bytes(bytes))
    }

    /// Parses a key written as 64 hex characters or as base64 (standard or URL-safe,
    /// padded or not); surrounding whitespace is ignored. `source_name` says where the
    /// text came from, for the error.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN {
            hex::decode(text).ok()
        } else {
            let unpadded = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(unpadded)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
                .ok()
        };
        bytes
            .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
            .map(Self::from_bytes)
            .ok_or_else(|| SecretsError::KeyFormat {
                source_name: source_name.to_owned(),
            })
    }

    /// Reads a key file (see [`SecretsKey::parse`]).
    pub fn read_file(path: &Path) -> Result<Self, SecretsError> {
        let file_error = |message: String| SecretsError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| file_error(e.to_string()))?
            .len();
        if len > MAX_KEY_FILE_BYTES {
            return Err(file_error(format!(
                "{len} bytes is too long for a key file (at most {MAX_KEY_FILE_BYTES})"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        Self::parse(&text, &format!("the file {}", path.display()))
    }

    /// Writes the key to a new file readable by its owner only, as hex; an existing
    /// file is never overwritten.
    pub fn write_new_file(&self, path: &Path) -> Result<(), SecretsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file_error = |e: std::io::Error| SecretsError::KeyFile {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(file_error)?;
        file.write_all(format!("{}\n", self.to_hex()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(file_error)
    }

    /// The key as 64 hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// The key's id (`k-` and 8 hex characters of a keyed hash): safe to show and
    /// store, the same on every node given the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The key of credential labels derived from this key: the same on every node
    /// that has the key.
    pub(crate) fn label_key(&self) -> LabelKey {
        LabelKey(keyed_hash(&self.bytes, &[LABEL_CONTEXT]))
    }
}

/// The key a node seals with and the previous keys it still opens (during a
/// rotation).
#[derive(Debug, Clone, PartialEq)]
pub struct Keyring {
    current: SecretsKey,
    previous: Vec<SecretsKey>,
}

impl Keyring {
    /// A keyring of one key.
    pub fn new(current: SecretsKey) -> Self {
        Keyring {
            current,
            previous: Vec::new(),
        }
    }

    /// Also opens what `key` sealed (a key being rotated out).
    pub fn with_previous(mut self, key: SecretsKey) -> Self {
        if key != self.current && !self.previous.contains(&key) {
            self.previous.push(key);
        }
        self
    }

    /// The key new secrets are sealed with.
    pub fn current(&self) -> &SecretsKey {
        &self.current
    }

    /// The key of `id`, if the keyring has it.
    pub fn find(&self, id: &str) -> Option<&SecretsKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id() == id)
    }

    /// The keys' ids, for messages: the current one first.
    pub fn ids(&self) -> String {
        let mut ids = format!("{} (sealing)", self.current.id());
        for k in &self.previous {
            ids.push_str(&format!(", {} (previous)", k.id()));
        }
        ids
    }
}

/// The key of credential labels.
#[derive(Clone)]
pub(crate) struct LabelKey([u8; 32]);

impl LabelKey {
    /// A key of this process alone, for an engine given no secrets key: its labels
    /// are stable while the process lives, and shared with no other node.
    pub(crate) fn of_process() -> LabelKey {
        static KEY: std::sync::OnceLock<LabelKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| {
            let bytes = SecretsKey::generate().map_or_else(
                // Without system randomness, a per-process value still keeps the
                // label from being a plain hash of the secret.
                |_| {
                    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
                    keyed_hash(seed.as_bytes(), &[LABEL_CONTEXT])
                },
                |k| *k.bytes(),
            );
            LabelKey(keyed_hash(&bytes, &[LABEL_CONTEXT]))
        })
        .clone()
    }
}

/// The label of a credential made of `values` (a connection's resolved secret
/// values): `secrets:` and 16 hex characters of a keyed hash, equal for equal values
/// on every node with the same key, and telling nothing about the values to anyone
/// without the key.
pub(crate) fn credential_label(key: &LabelKey, values: &[String]) -> String {
    let mut sorted: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    sorted.sort_unstable();
    let hash = keyed_hash(&key.0, &sorted);
    format!("secrets:{}", hex::encode(&hash[..LABEL_BYTES]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_key_reads_as_hex_or_base64_and_its_id_tells_nothing() {
        let key = SecretsKey::from_bytes([7; KEY_LEN]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7; KEY_LEN]);
        assert_eq!(SecretsKey::parse(&key.to_hex(), "t").unwrap(), key);
        assert_eq!(SecretsKey::parse(&format!(" {b64}\n"), "t").unwrap(), key);
        assert!(
            key.id().starts_with("k-") && key.id().len() == 10,
            "{}",
            key.id()
        );
        assert!(!key.to_hex().contains(&key.id()[2..]));
        assert_eq!(format!("{key:?}"), format!("SecretsKey({})", key.id()));
        let e = SecretsKey::parse("abcd", "SLUICE_SECRETS_KEY").unwrap_err();
        assert!(e.to_string().contains("SLUICE_SECRETS_KEY"), "{e}");
        assert_ne!(
            SecretsKey::generate().unwrap(),
            SecretsKey::generate().unwrap()
        );
    }

    #[test]
    fn a_key_file_is_new_and_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        let key = SecretsKey::generate().unwrap();
        key.write_new_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SecretsKey::read_file(&path).unwrap(), key);
        assert!(
            SecretsKey::generate()
                .unwrap()
                .write_new_file(&path)
                .is_err()
        );
        assert_eq!(SecretsKey::read_file(&path).unwrap(), key);
    }

    #[test]
    fn labels_are_keyed_and_ignore_order() {
        let a = SecretsKey::from_bytes([1; KEY_LEN]).label_key();
        let b = SecretsKey::from_bytes([2; KEY_LEN]).label_key();
        let values = vec!["tok".to_owned(), "user".to_owned()];
        let swapped = vec!["user".to_owned(), "tok".to_owned()];
        assert_eq!(
            credential_label(&a, &values),
            credential_label(&a, &swapped)
        );
        assert_ne!(credential_label(&a, &values), credential_label(&b, &values));
        let joined = vec!["tok\nuser".to_owned()];
        assert_ne!(credential_label(&a, &values), credential_label(&a, &joined));
        let label = credential_label(&a, &values);
        assert!(
            label.starts_with("secrets:") && label.len() == 8 + 16,
            "{label}"
        );
    }
}
