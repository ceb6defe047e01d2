//! `sluice connections …`: the client of the node's `Connections` service: list,
//! check.
//!
//! Owns the connection commands' flags, the requests they make and the connection
//! table. It prints only through [`Render`]; it never shows a secret's value (the
//! server sends only secret names) and never runs a connector itself: the node
//! runs the check.

use clap::Subcommand;
use serde_json::json;
use sluice_api::pb;
use sluice_api::pb::connections_client::ConnectionsClient;

use super::Client;
use super::render::{self, Render};

/// Connections: list, check.
#[derive(Subcommand)]
pub enum ConnectionsCommand {
    /// List connections.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Run the connector's check against the connection.
    Check { connection: String },
}

/// `sluice connections …`
pub(super) async fn run(
    client: &Client,
    out: Render,
    command: ConnectionsCommand,
) -> anyhow::Result<()> {
    let mut api = ConnectionsClient::new(client.channel());
    match command {
        ConnectionsCommand::List { tenant } => {
            let list = api
                .list_connections(client.request(pb::ListConnectionsRequest {
                    tenant: tenant.unwrap_or_default(),
                }))
                .await?
                .into_inner()
                .connections;
            let rows = list.iter().map(|c| {
                vec![
                    c.name.clone(),
                    c.tenant.clone(),
                    c.connector.clone(),
                    c.secret_names.join(", "),
                ]
            });
            out.list(
                || render::definitions(list.iter().map(|c| c.definition_json.as_str())),
                &["connection", "tenant", "connector", "secrets"],
                rows,
            );
        }
        ConnectionsCommand::Check { connection } => {
            let r = api
                .check_connection(client.request(pb::GetConnectionRequest { name: connection }))
                .await?
                .into_inner();
            out.show(
                || json!({"ok": r.ok, "message": r.message, "error_kind": r.error_kind}),
                || {
                    if r.ok {
                        println!("ok");
                    } else {
                        println!("failed ({}): {}", r.error_kind, r.message);
                    }
                },
            );
            if !r.ok {
                anyhow::bail!("the check failed");
            }
        }
    }
    Ok(())
}
