//! The sealed form of a connection's secrets, as the catalog stores it:
//! `sealed:v1:<key id>:<base64 of nonce ‖ ciphertext>`, the secrets' JSON encrypted
//! with XChaCha20-Poly1305 under the node's key, a random 24-byte nonce per seal, and
//! the connection's name as associated data (a sealed value moved to another
//! connection does not open). The format's version and the key's id travel with each
//! value, so values sealed by older nodes or older keys stay readable.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{Keyring, SecretsError, SecretsKey};

/// What every sealed value starts with. Secrets as users write them are a JSON
/// object, never a string, so a string in their place is always a sealed value.
pub(crate) const SEALED_PREFIX: &str = "sealed:";
/// The format this node writes.
const FORMAT: &str = "v1";
/// Bytes of an XChaCha20 nonce.
const NONCE_LEN: usize = 24;
/// Binds a value to what it seals, and to the connection.
const AAD_CONTEXT: &[u8] = b"sluice/connection-secrets/v1\0";

fn aad(connection: &str) -> Vec<u8> {
    [AAD_CONTEXT, connection.as_bytes()].concat()
}

fn cipher(key: &SecretsKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.bytes().into())
}

/// Seals `secrets` of `connection` under `key`.
pub(crate) fn seal(
    key: &SecretsKey,
    connection: &str,
    secrets: &serde_json::Value,
) -> Result<String, SecretsError> {
    let failed = |message: String| SecretsError::Format {
        connection: connection.to_owned(),
        message,
    };
    let plain = serde_json::to_vec(secrets).map_err(|e| failed(e.to_string()))?;
    let nonce = XNonce::try_generate()
        .map_err(|e| failed(format!("no randomness from the system: {e}")))?;
    let sealed = cipher(key)
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: &aad(connection),
            },
        )
        .map_err(|_| failed("encryption failed".into()))?;
    let body = [nonce.as_slice(), &sealed].concat();
    Ok(format!(
        "{SEALED_PREFIX}{FORMAT}:{}:{}",
        key.id(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(body)
    ))
}

/// The format and key id of a sealed value, and its body.
fn parts(text: &str) -> Option<(&str, &str, &str)> {
    let rest = text.strip_prefix(SEALED_PREFIX)?;
    let mut parts = rest.splitn(3, ':');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// The id of the key a sealed value names.
pub(crate) fn sealed_key_id(text: &str) -> Option<&str> {
    parts(text).map(|(_, id, _)| id)
}

/// Opens the sealed `text` of `connection` with the keyring's key it names.
pub(crate) fn open(
    keyring: Option<&Keyring>,
    connection: &str,
    text: &str,
) -> Result<serde_json::Value, SecretsError> {
    let format = |message: String| SecretsError::Format {
        connection: connection.to_owned(),
        message,
    };
    let (version, id, body) = parts(text).ok_or_else(|| format("not a sealed value".into()))?;
    if version != FORMAT {
        return Err(format(format!(
            "sealed in format {version}, which this node does not read (a newer version \
             of Sluice wrote it)"
        )));
    }
    let key = keyring
        .and_then(|k| k.find(id))
        .ok_or_else(|| SecretsError::UnknownKey {
            connection: connection.to_owned(),
            sealed_with: id.to_owned(),
            have: keyring.map_or_else(|| "no secrets key".to_owned(), Keyring::ids),
        })?;
    let tampered = || SecretsError::Tampered {
        connection: connection.to_owned(),
        key: id.to_owned(),
    };
    let body = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(body)
        .map_err(|_| tampered())?;
    if body.len() < NONCE_LEN {
        return Err(tampered());
    }
    let (nonce, sealed) = body.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| tampered())?;
    let plain = cipher(key)
        .decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: &aad(connection),
            },
        )
        .map_err(|_| tampered())?;
    serde_json::from_slice(&plain).map_err(|_| tampered())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sealed_secrets_open_with_their_key_only_for_their_connection() {
        let key = SecretsKey::from_bytes([3; 32]);
        let other = SecretsKey::from_bytes([4; 32]);
        let secrets = serde_json::json!({"auth": {"token": "canary-token-123"}});
        let sealed = seal(&key, "c", &secrets).unwrap();
        assert!(!sealed.contains("canary"), "{sealed}");
        assert_eq!(sealed_key_id(&sealed), Some(key.id()));
        // A fresh nonce each time.
        assert_ne!(sealed, seal(&key, "c", &secrets).unwrap());
        let ring = Keyring::new(key.clone());
        assert_eq!(open(Some(&ring), "c", &sealed).unwrap(), secrets);
        let e = open(Some(&ring), "d", &sealed).unwrap_err();
        assert!(matches!(e, SecretsError::Tampered { .. }), "{e}");
        let e = open(Some(&Keyring::new(other.clone())), "c", &sealed).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains(key.id()) && message.contains(other.id()),
            "{message}"
        );
        let e = open(None, "c", &sealed).unwrap_err();
        assert!(e.to_string().contains("no secrets key"), "{e}");
        let rotating = Keyring::new(other).with_previous(key);
        assert_eq!(open(Some(&rotating), "c", &sealed).unwrap(), secrets);
        let mut altered = sealed.clone();
        altered.replace_range(sealed.len() - 2.., "AA");
        assert!(matches!(
            open(Some(&ring), "c", &altered),
            Err(SecretsError::Tampered { .. })
        ));
        let newer = sealed.replacen("sealed:v1:", "sealed:v9:", 1);
        assert!(
            open(Some(&ring), "c", &newer)
                .unwrap_err()
                .to_string()
                .contains("v9")
        );
    }
}
