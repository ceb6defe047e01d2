//! `sluice connectors …`: the client of the node's `Connectors` service: register,
//! list, get, remove.
//!
//! Owns the connector commands' flags, the requests they make (reading a `.wasm`
//! file to register is the one file it reads) and the connector table. It prints
//! only through [`Render`] and never loads or runs a component: the node compiles
//! and checks what is registered.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use sluice_api::pb;
use sluice_api::pb::connectors_client::ConnectorsClient;

use super::render::{self, Render};
use super::{Client, PageArgs, decode_limit, next_page_hint};

/// The largest request: a registered component travels in one message.
const MAX_REQUEST_BYTES: usize = 128 << 20;

/// Connectors: register, list, get, remove.
#[derive(Subcommand)]
pub enum ConnectorsCommand {
    /// Register (or replace) a connector from a `.wasm` component.
    Register {
        name: String,
        file: std::path::PathBuf,
        #[arg(long, default_value = "")]
        version: String,
    },
    /// List first-party and registered connectors.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a connector with the JSON Schema of its config.
    Get { name: String },
    /// Remove a registered connector no connection uses.
    Remove { name: String },
}

const HEADER: [&str; 4] = ["connector", "version", "digest", "used by"];

/// Connectors: a JSON array, or a table.
fn list(out: Render, connectors: &[pb::ConnectorInfo]) {
    out.list(
        || connectors.iter().map(connector_json).collect(),
        &HEADER,
        connectors.iter().map(row),
    );
}

fn connector_json(c: &pb::ConnectorInfo) -> Value {
    json!({"name": c.name, "version": c.version, "digest": c.digest,
           "first_party": c.first_party, "used_by": c.used_by})
}

fn row(c: &pb::ConnectorInfo) -> Vec<String> {
    vec![
        c.name.clone(),
        if c.first_party {
            "first-party".to_owned()
        } else {
            c.version.clone()
        },
        c.digest.chars().take(19).collect(),
        c.used_by.join(", "),
    ]
}

/// `sluice connectors …`
pub(super) async fn run(
    client: &Client,
    out: Render,
    command: ConnectorsCommand,
) -> anyhow::Result<()> {
    let mut api = decode_limit!(ConnectorsClient::new(client.channel()))
        .max_encoding_message_size(MAX_REQUEST_BYTES);
    match command {
        ConnectorsCommand::Register {
            name,
            file,
            version,
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let info = api
                .register_connector(client.request(pb::RegisterConnectorRequest {
                    name,
                    version,
                    wasm,
                }))
                .await?
                .into_inner();
            list(out, &[info]);
        }
        ConnectorsCommand::List { page } => {
            let (connectors, next) = page
                .collect(|page_size, page_token| {
                    let mut api = api.clone();
                    let request = client.request(pb::ListConnectorsRequest {
                        page_size,
                        page_token,
                    });
                    async move {
                        let r = api.list_connectors(request).await?.into_inner();
                        Ok((r.connectors, r.next_page_token))
                    }
                })
                .await?;
            list(out, &connectors);
            next_page_hint(out, &next);
        }
        ConnectorsCommand::Get { name } => {
            let info = api
                .get_connector(client.request(pb::GetConnectorRequest { name }))
                .await?
                .into_inner();
            out.show(
                || &info.spec_json,
                || {
                    render::print_table(&HEADER, [row(&info)]);
                    let spec: Value = serde_json::from_str(&info.spec_json).unwrap_or(Value::Null);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&spec).unwrap_or_default()
                    );
                },
            );
        }
        ConnectorsCommand::Remove { name } => {
            api.remove_connector(client.request(pb::GetConnectorRequest { name: name.clone() }))
                .await?;
            out.note(format_args!("removed {name}"));
        }
    }
    Ok(())
}
