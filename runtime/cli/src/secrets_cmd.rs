//! The node's secrets key and `sluice secrets …`: where a node's key comes from
//! (`--secrets-key-file`, `SLUICE_SECRETS_KEY`, or for the embedded store a key file
//! generated beside it on first start), the check that every stored secret opens
//! with it before the node serves, and the commands that generate a key, re-seal a
//! store's secrets under a new one, and show how they are held.
//!
//! Owns the arguments and the messages; sealing is the engine's. It never prints a
//! key or a secret, only key ids.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sluice_engine::Engine;
use sluice_engine::secrets::{KEY_FILE_NAME, Keyring, SealState, SecretsKey, SecretsPolicy};
use sluice_store::Location;

use crate::run_cmd::{location, open_store};

/// The environment variable that holds the key itself (not a path).
pub const KEY_ENV: &str = "SLUICE_SECRETS_KEY";

/// Where a node's secrets key comes from.
#[derive(Args, Clone, Default)]
pub struct SecretsKeyArgs {
    /// File of the key that seals connections' secrets in the store: 32 random bytes
    /// as 64 hex characters or base64 (`sluice secrets generate-key FILE`). Or give
    /// the key itself in `SLUICE_SECRETS_KEY`. Without either, a node on the embedded
    /// store generates `<data dir>/secrets.key`; nodes sharing a PostgreSQL store
    /// need the same key on every node to hold secrets.
    #[arg(long, env = "SLUICE_SECRETS_KEY_FILE")]
    pub(crate) secrets_key_file: Option<PathBuf>,
    /// File of a key being rotated out: secrets it sealed still open (repeatable;
    /// comma-separated in the environment).
    #[arg(
        long = "secrets-previous-key-file",
        env = "SLUICE_SECRETS_PREVIOUS_KEY_FILES",
        value_delimiter = ','
    )]
    pub(crate) secrets_previous_key_files: Vec<PathBuf>,
}

/// The key given by `file`, else by the environment.
fn given_key(file: Option<&Path>) -> anyhow::Result<Option<SecretsKey>> {
    if let Some(path) = file {
        if std::env::var_os(KEY_ENV).is_some() {
            bail!(
                "the secrets key is given twice: by a file ({}) and by {KEY_ENV}; give one",
                path.display()
            );
        }
        return Ok(Some(SecretsKey::read_file(path)?));
    }
    match std::env::var(KEY_ENV) {
        Ok(text) => Ok(Some(SecretsKey::parse(&text, KEY_ENV)?)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Ok(Some(SecretsKey::parse("", KEY_ENV)?)),
    }
}

/// The key file beside an embedded store: read, or generated on first start.
fn data_dir_key(data_dir: &Path) -> anyhow::Result<SecretsKey> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(KEY_FILE_NAME);
    if path.exists() {
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("the secrets key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: the secrets key file {} can be read by other users (mode {:o}): \
                 chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        return Ok(SecretsKey::read_file(&path)?);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let key = SecretsKey::generate()?;
    key.write_new_file(&path)?;
    eprintln!(
        "warning: generated the secrets key {} (key {}); it sits beside the data it \
         protects: keep a copy elsewhere and pass --secrets-key-file",
        path.display(),
        key.id()
    );
    Ok(key)
}

/// Gives `engine` its secrets key, after checking every stored secret opens with
/// it; on the embedded store, secrets still in plaintext or sealed with a previous
/// key are sealed with the current key now (no other process uses that store).
pub async fn unlock(
    engine: &Engine,
    args: &SecretsKeyArgs,
    location: &Location,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let embedded = matches!(location, Location::Dir(_));
    let key = match given_key(args.secrets_key_file.as_deref())? {
        Some(key) => Some(key),
        None if embedded => Some(data_dir_key(data_dir)?),
        None => None,
    };
    let keyring = match key {
        Some(key) => {
            let mut keyring = Keyring::new(key);
            for path in &args.secrets_previous_key_files {
                keyring = keyring.with_previous(SecretsKey::read_file(path)?);
            }
            Some(keyring)
        }
        None if !args.secrets_previous_key_files.is_empty() => {
            bail!("--secrets-previous-key-file needs the current key: pass --secrets-key-file too")
        }
        None => None,
    };
    let policy = keyring
        .clone()
        .map_or(SecretsPolicy::KeyRequired, SecretsPolicy::Sealed);
    let stored = engine
        .use_secrets_policy(policy)
        .await
        .context("checking the stored secrets against this node's key")?;
    let Some(keyring) = keyring else {
        let plain = stored.plaintext();
        if !plain.is_empty() {
            eprintln!(
                "warning: connection(s) {} hold secrets in plaintext in the store; give \
                 the nodes a key and run `sluice secrets rotate --new-key-file FILE`",
                plain.join(", ")
            );
        }
        return Ok(());
    };
    let current = keyring.current().id();
    let outdated = stored.connections.iter().any(|(_, s)| match s {
        SealState::Plain => true,
        SealState::Sealed(id) => id != current,
        SealState::Empty => false,
    });
    if embedded && outdated {
        let done = sluice_engine::reseal_secrets(engine.store(), &keyring)
            .await
            .context("sealing the stored secrets with this node's key")?;
        eprintln!(
            "sealed the secrets of {} connection(s) with key {current}",
            done.resealed.len()
        );
    } else if !stored.plaintext().is_empty() {
        eprintln!(
            "warning: connection(s) {} hold secrets in plaintext in the store; \
             `sluice secrets rotate --new-key-file FILE` seals them",
            stored.plaintext().join(", ")
        );
    }
    Ok(())
}

/// The store a command works on.
#[derive(Args)]
pub struct StoreArgs {
    /// Directory of the embedded store, and of the node's files beside any store.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    data_dir: PathBuf,
    /// The store: a `postgres://user:password@host:port/database` URL, or a
    /// directory for the embedded store (default: `--data-dir`).
    #[arg(long, env = "SLUICE_STORE", hide_env_values = true)]
    store: Option<String>,
}

/// Manage the secrets key that seals connections' secrets in the store.
#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Write a new random key to FILE (which must not exist), readable by its owner
    /// only, as 64 hex characters; print its id.
    GenerateKey {
        /// Where to write the key.
        file: PathBuf,
    },
    /// Seal every stored secret again with a new key (plaintext ones too). Stop the
    /// node of an embedded store first; nodes sharing a PostgreSQL store may keep
    /// running if they have both keys (`--secrets-key-file NEW
    /// --secrets-previous-key-file OLD`). Running it again finishes what a failed
    /// run left.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
        /// The key to seal with from now on.
        #[arg(long)]
        new_key_file: PathBuf,
        /// A key the secrets are sealed with now (repeatable). Default: the key in
        /// `SLUICE_SECRETS_KEY` and `<data dir>/secrets.key`, those that exist.
        #[arg(long = "old-key-file")]
        old_key_files: Vec<PathBuf>,
    },
    /// Show how each stored connection holds its secrets (sealed with which key id,
    /// or plaintext), opening none.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs the command.
pub async fn run(command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::GenerateKey { file } => {
            let key = SecretsKey::generate()?;
            key.write_new_file(&file)?;
            println!("wrote key {} to {}", key.id(), file.display());
            Ok(())
        }
        SecretsCommand::Status { store } => {
            let location = location(store.store.as_deref(), &store.data_dir);
            let opened = open_store(&location, &store.data_dir).await?;
            let stored = sluice_engine::stored_secrets(&opened).await?;
            for (name, state) in &stored.connections {
                println!("{name}\t{state}");
            }
            Ok(())
        }
        SecretsCommand::Rotate {
            store,
            new_key_file,
            old_key_files,
        } => {
            let location = location(store.store.as_deref(), &store.data_dir);
            let mut keyring = Keyring::new(SecretsKey::read_file(&new_key_file)?);
            if old_key_files.is_empty() {
                if let Some(key) = given_key(None)? {
                    keyring = keyring.with_previous(key);
                }
                let beside = store.data_dir.join(KEY_FILE_NAME);
                if beside.exists() {
                    keyring = keyring.with_previous(SecretsKey::read_file(&beside)?);
                }
            }
            for path in &old_key_files {
                keyring = keyring.with_previous(SecretsKey::read_file(path)?);
            }
            let opened = open_store(&location, &store.data_dir).await?;
            let done = sluice_engine::reseal_secrets(&opened, &keyring)
                .await
                .context("re-sealing the stored secrets")?;
            let new = keyring.current().id();
            for (name, state) in &done.connections {
                if done.resealed.contains(name) {
                    println!("{name}: {state} -> sealed with {new}");
                }
            }
            let skipped = done
                .connections
                .iter()
                .filter(|(_, s)| *s == SealState::Sealed(new.to_owned()))
                .count();
            println!(
                "sealed the secrets of {} connection(s) with key {new} ({skipped} already were); \
                 start the nodes with --secrets-key-file {}",
                done.resealed.len(),
                new_key_file.display()
            );
            Ok(())
        }
    }
}
