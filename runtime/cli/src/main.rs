//! `sluice`: the command line of Sluice.
//!
//! `sluice connector …` runs a connector `.wasm` directly, with no server: what a
//! connector author uses to try `spec`, `check`, `discover` and `read`.
//!
//! Exit codes scripts can rely on: 0 success; 1 any other failure; 2 bad usage;
//! 3 the connector reported an error; 4 the connector broke the sandbox or the
//! contract (trap, panic, limit, disallowed host, malformed output); 5 a run ended
//! without completing (dead-lettered or cancelled); over the API: 2 the server
//! found the request invalid, 6 not found, 7 not allowed (missing, unknown or
//! read-only token), 8 the server cannot be reached or is unavailable.
//!
//! `sluice run FILE` defines connections and workflows from a JSON file and runs
//! them in the foreground against the embedded store; `sluice serve FILE` keeps a
//! node running: schedules fire, runs resume, and the gRPC API serves
//! `sluice runs|workflows|connectors|connections|rate-limits …`.

mod client;
mod connector_cmd;
mod exit;
mod node_config;
mod run_cmd;
mod secrets_cmd;
mod serve_cmd;
mod store_cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Sluice: durable integration syncs, with sandboxed WebAssembly connectors.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info` or `sluice_host=debug` (also `RUST_LOG`).
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a connector component directly, without a server.
    #[command(subcommand)]
    Connector(connector_cmd::ConnectorCommand),
    /// Define connections and workflows from a file and run them in the foreground.
    Run(run_cmd::RunArgs),
    /// Run a node until stopped: resume runs, run each workflow, follow schedules,
    /// serve the gRPC API.
    #[command(alias = "server")]
    Serve(Box<serve_cmd::ServeArgs>),
    /// The key that seals connections' secrets in the store: generate one, re-seal
    /// every stored secret with a new one, show how they are held.
    #[command(subcommand)]
    Secrets(secrets_cmd::SecretsCommand),
    /// Work on a store without running a node (`sluice store migrate`).
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    // `runs`, `workflows`, `connectors`, `connections`, `rate-limits`: each
    // variant's own doc is its help.
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// mimalloc: the embedded store allocates and frees on every insert and wasmtime on every
/// instance; glibc's allocator cost the scheduler benchmark ~10% more CPU per run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Serve(args) = &mut cli.command
        && let Some(path) = args.config.clone()
    {
        let serve = matches
            .subcommand_matches("serve")
            .cloned()
            .unwrap_or_default();
        match node_config::NodeConfig::read(&path) {
            Ok(config) => node_config::apply(args, &serve, config),
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Connector(cmd) => connector_cmd::run(cmd).await,
            Command::Run(args) => run_cmd::run(args).await,
            Command::Serve(args) => serve_cmd::run(*args).await,
            Command::Store(command) => store_cmd::run(command).await,
            Command::Secrets(command) => secrets_cmd::run(command).await,
            Command::Client(command) => client::run(command).await,
        }
    });
    // Work still on blocking threads (a storage call that does not return, on a store
    // that stopped writing) must not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.chain().find_map(|c| c.downcast_ref::<tonic::Status>()) {
                Some(status) => eprintln!("error: {} ({:?})", status.message(), status.code()),
                None => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::from(exit::code_for(&e))
        }
    }
}
