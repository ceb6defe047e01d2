//! How client commands print: the one renderer of the client.
//!
//! Owns the choice between a table for people and JSON for scripts (`--json`), the
//! table style, how times look, and the shapes shared by several services (a run's
//! summary, a run in detail, definitions as documents). Service modules hand it
//! their rows, JSON values and the lines people read; the choice between them is
//! made here, and no service module builds a table of its own.
//!
//! It never calls the API and never fails: what it is given is printed as it is.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};
use sluice_api::pb;

/// Prints for people or, with `--json`, for scripts.
#[derive(Clone, Copy)]
pub(super) struct Render {
    json: bool,
}

impl Render {
    pub(super) fn new(json: bool) -> Render {
        Render { json }
    }

    /// Whether output is JSON.
    pub(super) fn json(self) -> bool {
        self.json
    }

    /// A list: one JSON document (`json`, built only when printed), or a table.
    pub(super) fn list(
        self,
        json: impl FnOnce() -> Value,
        header: &[&str],
        rows: impl IntoIterator<Item = Vec<String>>,
    ) {
        if self.json {
            println!("{}", json());
        } else {
            print_table(header, rows);
        }
    }

    /// One result: `json` printed as it is, or `human` for people.
    pub(super) fn show<J: std::fmt::Display>(self, json: impl FnOnce() -> J, human: impl FnOnce()) {
        if self.json {
            println!("{}", json());
        } else {
            human();
        }
    }

    /// Many results: one JSON document per line (`json`, consumed only when
    /// printed), or `human` for people.
    pub(super) fn lines(self, json: impl IntoIterator<Item = Value>, human: impl FnOnce()) {
        if self.json {
            for v in json {
                println!("{v}");
            }
        } else {
            human();
        }
    }

    /// A line only people need: in JSON the exit code says it (scripts get no
    /// output to parse).
    pub(super) fn note(self, text: impl std::fmt::Display) {
        if !self.json {
            println!("{text}");
        }
    }

    /// Run summaries: a JSON array, or a table.
    pub(super) fn summaries(self, runs: &[pb::RunSummary]) {
        let rows = runs.iter().map(|r| {
            vec![
                r.run_id.clone(),
                r.workflow.clone(),
                r.tenant.clone(),
                r.status.clone(),
                time(r.created_at_unix_ms),
                time(r.updated_at_unix_ms),
            ]
        });
        self.list(
            || Value::Array(runs.iter().map(summary_json).collect()),
            &["run", "workflow", "tenant", "status", "created", "updated"],
            rows,
        );
    }

    /// A run with its streams: a JSON object, or lines and a table.
    pub(super) fn run(self, r: &pb::Run) {
        self.show(|| run_json(r), || print_run(r));
    }
}

/// Prints a table in the client's one style.
pub(super) fn print_table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    println!("{}", table(header, rows));
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t
}

/// A time from the API (Unix ms) for people, in UTC; `-` for none (0).
pub(super) fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Definitions (JSON documents from the API) as one JSON array; a document that
/// does not parse is left out rather than failing the listing.
pub(super) fn definitions<'a>(docs: impl Iterator<Item = &'a str>) -> Value {
    Value::Array(docs.filter_map(|d| serde_json::from_str(d).ok()).collect())
}

fn summary_json(s: &pb::RunSummary) -> Value {
    json!({
        "run_id": s.run_id, "workflow": s.workflow, "connection": s.connection,
        "tenant": s.tenant, "priority": s.priority, "status": s.status,
        "created_at_unix_ms": s.created_at_unix_ms, "updated_at_unix_ms": s.updated_at_unix_ms,
    })
}

fn run_json(r: &pb::Run) -> Value {
    let streams: Vec<Value> = r
        .streams
        .iter()
        .map(|s| {
            json!({
                "stream": s.stream, "records": s.records, "batches": s.batches,
                "created": s.created, "updated": s.updated, "unchanged": s.unchanged,
                "deleted": s.deleted, "complete": s.complete, "checkpoint": s.checkpoint,
            })
        })
        .collect();
    json!({
        "summary": r.summary.as_ref().map(summary_json),
        "attempts": r.attempts,
        "last_error_kind": r.last_error_kind, "last_error": r.last_error,
        "dead_letter_kind": r.dead_letter_kind, "dead_letter_message": r.dead_letter_message,
        "retry_at_unix_ms": r.retry_at_unix_ms,
        "started_at_unix_ms": r.started_at_unix_ms, "finished_at_unix_ms": r.finished_at_unix_ms,
        "streams": streams,
        "events": r.events.len(),
    })
}

/// A run with its streams, for people.
pub(super) fn print_run(r: &pb::Run) {
    let s = r.summary.clone().unwrap_or_default();
    println!(
        "run {}  workflow {}  tenant {}",
        s.run_id, s.workflow, s.tenant
    );
    println!(
        "status {}  attempts {}  started {}  finished {}",
        s.status,
        r.attempts,
        time(r.started_at_unix_ms),
        time(r.finished_at_unix_ms)
    );
    if !r.dead_letter_message.is_empty() {
        println!(
            "dead-lettered ({}): {}",
            r.dead_letter_kind, r.dead_letter_message
        );
    } else if !r.last_error.is_empty() {
        println!("last error ({}): {}", r.last_error_kind, r.last_error);
    }
    let rows = r.streams.iter().map(|p| {
        vec![
            p.stream.clone(),
            p.records.to_string(),
            p.created.to_string(),
            p.updated.to_string(),
            p.unchanged.to_string(),
            p.deleted.to_string(),
            if p.complete { "yes" } else { "no" }.to_owned(),
        ]
    });
    print_table(
        &[
            "stream",
            "records",
            "created",
            "updated",
            "unchanged",
            "deleted",
            "complete",
        ],
        rows,
    );
}
