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

use super::render::{self, Render};
use super::{Client, PageArgs, decode_limit, next_page_hint};

/// Connections: list, check.
#[derive(Subcommand)]
pub enum ConnectionsCommand {
    /// List connections.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
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
    let mut api = decode_limit!(ConnectionsClient::new(client.channel()));
    match command {
        ConnectionsCommand::List { tenant, page } => {
            let tenant = tenant.unwrap_or_default();
            let (list, next) = page
                .collect(|page_size, page_token| {
                    let mut api = api.clone();
                    let request = client.request(pb::ListConnectionsRequest {
                        tenant: tenant.clone(),
                        page_size,
                        page_token,
                    });
                    async move {
                        let r = api.list_connections(request).await?.into_inner();
                        Ok((r.connections, r.next_page_token))
                    }
                })
                .await?;
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
            next_page_hint(out, &next);
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
