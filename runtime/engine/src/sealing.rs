//! The node's secrets key as operators meet it: given to the engine at start, with
//! every stored secret checked to open with it (a node refuses to start rather than
//! fail each run later), and the re-sealing of a store's secrets under a new key
//! (`sluice secrets rotate`).
//!
//! Owns nothing of its own: the formats are module `secrets`', the catalog's
//! documents the definitions service's. It never returns or logs a secret's value.

use sluice_store::Store;

use crate::engine::Engine;
use crate::secrets::{Keyring, SealState, SecretsError, SecretsPolicy};

/// What a store holds of secrets, per connection, and what a re-seal changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSecrets {
    /// Every connection and how it held its secrets (before a re-seal).
    pub connections: Vec<(String, SealState)>,
    /// The connections whose secrets were sealed anew.
    pub resealed: Vec<String>,
}

impl StoredSecrets {
    /// The connections holding plaintext secrets.
    pub fn plaintext(&self) -> Vec<&str> {
        self.connections
            .iter()
            .filter(|(_, s)| *s == SealState::Plain)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

impl Engine {
    /// Keeps connections' secrets by `policy` from now on, after checking that every
    /// stored secret opens with it: else the error names the connection and the key
    /// its secrets were sealed with, and the policy is not changed.
    pub async fn use_secrets_policy(
        &self,
        policy: SecretsPolicy,
    ) -> Result<StoredSecrets, SecretsError> {
        let definitions = &self.inner.definitions;
        definitions.set_secrets_policy(policy);
        match definitions.check_stored_secrets().await {
            Ok(connections) => Ok(StoredSecrets {
                connections,
                resealed: Vec::new(),
            }),
            Err(e) => {
                // Refused: nothing sealed opens, and nothing new is stored in
                // plaintext by mistake.
                definitions.set_secrets_policy(SecretsPolicy::KeyRequired);
                Err(e)
            }
        }
    }
}

/// Seals again with `keyring`'s current key every secret of `store` that is not
/// sealed with it (plaintext ones too), opening each with any of the keyring's
/// keys. Run it with no node using an embedded store; nodes sharing a store keep
/// running if they have both keys.
pub async fn reseal_secrets(
    store: &Store,
    keyring: &Keyring,
) -> Result<StoredSecrets, SecretsError> {
    let (connections, resealed) = crate::definitions::reseal_stored(store, keyring).await?;
    Ok(StoredSecrets {
        connections,
        resealed,
    })
}

/// How `store`'s connections hold their secrets, without opening any.
pub async fn stored_secrets(store: &Store) -> Result<StoredSecrets, SecretsError> {
    Ok(StoredSecrets {
        connections: crate::definitions::seal_states(store).await?,
        resealed: Vec::new(),
    })
}
