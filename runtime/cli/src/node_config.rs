//! The node's settings from a JSON file (`sluice serve --config F`, or
//! `SLUICE_CONFIG`), below the environment and flags: a setting given by a flag or an
//! environment variable wins over the file, which wins over the default.
//!
//! Owns reading and checking the file and applying it to the parsed arguments. An
//! unknown key or a wrong type is an error naming the file and the key, never ignored.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::serve_cmd::ServeArgs;

/// What a config file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    store: Option<String>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    slots: Option<usize>,
    per_tenant: Option<usize>,
    tokens: Option<Vec<String>>,
    read_tokens: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tokens_file: Option<PathBuf>,
    /// API tokens with roles and tenants, as in a tokens file.
    api_tokens: Option<Vec<sluice_api::TokenEntry>>,
    metrics_token: Option<String>,
    secrets_key_file: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("config file {}: not a valid node config", path.display()))
    }
}

/// Whether the user gave `id` by a flag or the environment (not the default).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills in from `config` every setting the user did not give.
pub fn apply(args: &mut ServeArgs, matches: &ArgMatches, config: NodeConfig) {
    macro_rules! fill {
        ($field:ident) => {
            if let Some(v) = config.$field
                && !given(matches, stringify!($field))
            {
                args.$field = v;
            }
        };
        ($field:ident, optional) => {
            if let Some(v) = config.$field
                && !given(matches, stringify!($field))
            {
                args.$field = Some(v);
            }
        };
    }
    fill!(store, optional);
    fill!(data_dir);
    fill!(listen);
    fill!(metrics_listen);
    fill!(slots);
    fill!(per_tenant, optional);
    fill!(tokens);
    fill!(read_tokens);
    fill!(tls_cert, optional);
    fill!(tls_key, optional);
    fill!(tokens_file, optional);
    fill!(metrics_token, optional);
    // Not a flag: the file's entries add to the tokens file's.
    if let Some(entries) = config.api_tokens {
        args.api_tokens = entries;
    }
    if let Some(v) = config.secrets_key_file
        && !given(matches, "secrets_key_file")
    {
        args.secrets.secrets_key_file = Some(v);
    }
}
