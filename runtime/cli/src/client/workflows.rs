//! `sluice workflows …`: the client of the node's `Workflows` service: list,
//! trigger, pause, resume, delete, upcoming fires.
//!
//! Owns the workflow commands' flags, the requests they make and the workflow
//! table. It prints only through [`Render`] and never edits a definition itself:
//! the server changes workflows, this module only asks.

use clap::Subcommand;
use serde_json::json;
use sluice_api::pb;
use sluice_api::pb::workflows_client::WorkflowsClient;

use super::render::{self, Render};
use super::{Client, PageArgs, decode_limit, next_page_hint};

/// Workflows: list, trigger, pause, resume, upcoming fires.
#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// List workflows.
    List {
        /// Only workflows of this connection.
        #[arg(long)]
        connection: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Start a run now.
    Trigger { workflow: String },
    /// Stop the workflow's schedule from firing.
    Pause { workflow: String },
    /// Let the workflow's schedule fire again (missed fires follow its catch-up).
    Resume { workflow: String },
    /// Delete the workflow and its schedule (refused while a run is in flight); its
    /// runs stay, with their history.
    Delete { workflow: String },
    /// The next fires of the workflow's schedule.
    Upcoming {
        workflow: String,
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
}

const HEADER: [&str; 4] = ["workflow", "connection", "priority", "paused"];

fn row(w: &pb::Workflow) -> Vec<String> {
    vec![
        w.name.clone(),
        w.connection.clone(),
        w.priority.to_string(),
        w.paused.to_string(),
    ]
}

/// One workflow: its definition as the server sent it, or a one-row table.
fn show(out: Render, w: &pb::Workflow) {
    out.show(
        || &w.definition_json,
        || render::print_table(&HEADER, [row(w)]),
    );
}

/// `sluice workflows …`
pub(super) async fn run(
    client: &Client,
    out: Render,
    command: WorkflowsCommand,
) -> anyhow::Result<()> {
    let mut api = decode_limit!(WorkflowsClient::new(client.channel()));
    let by_name = |name: String| client.request(pb::GetWorkflowRequest { name });
    match command {
        WorkflowsCommand::List { connection, page } => {
            let connection = connection.unwrap_or_default();
            let (list, next) = page
                .collect(|page_size, page_token| {
                    let mut api = api.clone();
                    let request = client.request(pb::ListWorkflowsRequest {
                        connection: connection.clone(),
                        page_size,
                        page_token,
                    });
                    async move {
                        let r = api.list_workflows(request).await?.into_inner();
                        Ok((r.workflows, r.next_page_token))
                    }
                })
                .await?;
            out.list(
                || render::definitions(list.iter().map(|w| w.definition_json.as_str())),
                &HEADER,
                list.iter().map(row),
            );
            next_page_hint(out, &next);
        }
        WorkflowsCommand::Trigger { workflow } => {
            let s = api.trigger_workflow(by_name(workflow)).await?.into_inner();
            out.summaries(&[s]);
        }
        WorkflowsCommand::Pause { workflow } => {
            show(
                out,
                &api.pause_workflow(by_name(workflow)).await?.into_inner(),
            );
        }
        WorkflowsCommand::Resume { workflow } => {
            show(
                out,
                &api.resume_workflow(by_name(workflow)).await?.into_inner(),
            );
        }
        WorkflowsCommand::Delete { workflow } => {
            api.delete_workflow(by_name(workflow.clone())).await?;
            out.note(format_args!("deleted {workflow}"));
        }
        WorkflowsCommand::Upcoming { workflow, count } => {
            let fires = api
                .list_upcoming_fires(client.request(pb::ListUpcomingFiresRequest {
                    name: workflow,
                    count,
                }))
                .await?
                .into_inner()
                .fire_at_unix_ms;
            out.show(
                || json!(fires),
                || {
                    for f in &fires {
                        println!("{}", render::time(*f));
                    }
                },
            );
        }
    }
    Ok(())
}
