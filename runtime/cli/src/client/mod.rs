//! `sluice runs|workflows|connectors|connections|rate-limits|nodes …`: client commands over
//! the gRPC API of a running node (`sluice serve`).
//!
//! This module owns what every client command shares: the flags naming the node
//! and the caller ([`ClientArgs`]), the one connection to the node with its token,
//! and the dispatch of a command to the module of its service (one per service of
//! `runtime/api`). Output goes through [`render`]: human tables by default, `--json`
//! for scripts (one JSON document, or one per line for streams, on stdout). The
//! server's address and token come from flags, else the environment
//! (`SLUICE_SERVER`, `SLUICE_TOKEN`). Errors keep the server's message; the exit
//! code tells the gRPC status apart (see `exit`).
//!
//! It never holds state between commands and never decides anything the server
//! decides: a client command is one or a few API calls and their output.

mod connections;
mod connectors;
mod nodes;
mod rate_limits;
mod render;
mod runs;
mod workflows;

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use render::Render;

/// Where the node is and who calls it.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The node's API address.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SERVER",
        default_value = "http://127.0.0.1:7600"
    )]
    server: String,
    /// API token (sent as `authorization: Bearer <token>`).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` server.
    #[arg(long, global = true, env = "SLUICE_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

/// Which page of a list to print. Every list call of the API is paged: a table ends
/// with a `next page: --page-token …` line when more follow (on stderr with
/// `--json`, so stdout stays one document); `--all` follows every page.
#[derive(Args, Clone, Default)]
pub struct PageArgs {
    /// Items per page (0 or none: the server's default; the server caps it).
    #[arg(long)]
    limit: Option<u32>,
    /// Continue from the `next page` a previous listing printed.
    #[arg(long)]
    page_token: Option<String>,
    /// Every page, one after another.
    #[arg(long, conflicts_with = "page_token")]
    all: bool,
}

impl PageArgs {
    /// The items of the page asked for (or of every page with `--all`), and the
    /// token of the page after them (empty: none). `fetch` makes one call for
    /// (page size, page token).
    async fn collect<T, F, Fut>(&self, mut fetch: F) -> anyhow::Result<(Vec<T>, String)>
    where
        F: FnMut(u32, String) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
    {
        let mut token = self.page_token.clone().unwrap_or_default();
        let mut items = Vec::new();
        loop {
            let (page, next) = fetch(self.limit.unwrap_or(0), token).await?;
            items.extend(page);
            if !self.all || next.is_empty() {
                return Ok((items, next));
            }
            token = next;
        }
    }
}

/// Tells people how to read the page after this one, when there is one.
fn next_page_hint(out: Render, next: &str) {
    if next.is_empty() {
        return;
    }
    let hint = format!("next page: --page-token {next}  (or --all for every page)");
    if out.json() {
        eprintln!("{hint}");
    } else {
        println!("{hint}");
    }
}

/// The client commands, one per service of the node's API.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Runs of a node, over its API: list, get, watch, cancel, retry.
    Runs {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// Workflows of a node, over its API: list, trigger, pause, resume, upcoming.
    Workflows {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: workflows::WorkflowsCommand,
    },
    /// Connectors of a node, over its API: register, list, get, remove.
    Connectors {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: connectors::ConnectorsCommand,
    },
    /// Connections of a node, over its API: list, check.
    Connections {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: connections::ConnectionsCommand,
    },
    /// The node's rate limiter, over its API: each key's budget and counters, each
    /// host's circuit breaker.
    RateLimits {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: rate_limits::RateLimitsFilter,
    },
    /// The nodes sharing the store, over a node's API: list, drain.
    Nodes {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: nodes::NodesCommand,
    },
}

impl ClientCommand {
    fn args(&self) -> &ClientArgs {
        match self {
            ClientCommand::Runs { client, .. }
            | ClientCommand::Workflows { client, .. }
            | ClientCommand::Connectors { client, .. }
            | ClientCommand::Connections { client, .. }
            | ClientCommand::RateLimits { client, .. }
            | ClientCommand::Nodes { client, .. } => client,
        }
    }
}

/// Run one client command: connect to the node, then call its service.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    let args = command.args();
    let client = Client::connect(args).await?;
    let out = Render::new(args.json);
    match command {
        ClientCommand::Runs { command, .. } => runs::run(&client, out, command).await,
        ClientCommand::Workflows { command, .. } => workflows::run(&client, out, command).await,
        ClientCommand::Connectors { command, .. } => connectors::run(&client, out, command).await,
        ClientCommand::Connections { command, .. } => connections::run(&client, out, command).await,
        ClientCommand::RateLimits { filter, .. } => rate_limits::run(&client, out, filter).await,
        ClientCommand::Nodes { command, .. } => nodes::run(&client, out, command).await,
    }
}

/// A generated client that decodes answers up to the server's encoding limit
/// ([`sluice_api::CLIENT_MAX_DECODING_BYTES`]), not tonic's 4 MiB default.
macro_rules! decode_limit {
    ($client:expr) => {
        $client.max_decoding_message_size(sluice_api::CLIENT_MAX_DECODING_BYTES)
    };
}
pub(crate) use decode_limit;

/// A connection to the node and the token each request carries.
struct Client {
    channel: Channel,
    token: Option<MetadataValue<Ascii>>,
}

impl Client {
    async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
        let mut endpoint = Channel::from_shared(args.server.clone())
            .with_context(|| format!("--server `{}` is not a URL", args.server))?
            .connect_timeout(Duration::from_secs(5));
        if args.server.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &args.ca_cert {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("reading the CA certificate {}", ca.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .context("setting up TLS to the server")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the Sluice API at {}", args.server))?;
        let token = match &args.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .context("the token holds characters a header cannot carry")?,
            ),
            None => None,
        };
        Ok(Client { channel, token })
    }

    /// The channel a service's generated client is built on (cheap to clone: one
    /// connection under it). Clients built on it should decode answers up to
    /// [`sluice_api::CLIENT_MAX_DECODING_BYTES`] (see [`decode_limit`]).
    fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `message` as a request carrying the token.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(t) = &self.token {
            request.metadata_mut().insert("authorization", t.clone());
        }
        request
    }
}
