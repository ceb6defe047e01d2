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

use super::Client;
use super::render::{self, Render};

/// Workflows: list, trigger, pause, resume, upcoming fires.
#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// List workflows.
    List,
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
    let mut api = WorkflowsClient::new(client.channel());
    let by_name = |name: String| client.request(pb::GetWorkflowRequest { name });
    match command {
        WorkflowsCommand::List => {
            let list = api
                .list_workflows(client.request(pb::ListWorkflowsRequest::default()))
                .await?
                .into_inner()
                .workflows;
            out.list(
                || render::definitions(list.iter().map(|w| w.definition_json.as_str())),
                &HEADER,
                list.iter().map(row),
            );
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
