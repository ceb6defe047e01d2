//! Per-run logs on PostgreSQL ([`PgRunLogs`]): the `run_logs` table, JSON entries in
//! the order they were appended, at most [`MAX_ENTRIES_PER_RUN`] per run.
//!
//! It never holds secrets (the host redacts what it records before it gets here) and
//! it is not part of a run's state.

use async_trait::async_trait;
use uuid::Uuid;

use super::pool::{Reader, read};
use crate::StoreError;
use crate::run_logs::{LogEntry, LogFilter, MAX_ENTRIES_PER_RUN, RunLogs};
use sluice_model::RunId;

/// The per-run logs of a PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgRunLogs {
    reader: Reader,
}

impl PgRunLogs {
    pub(crate) fn new(reader: Reader) -> Self {
        PgRunLogs { reader }
    }
}

const APPEND: &str = "INSERT INTO run_logs (run_id, entry) \
     SELECT $1, u.entry FROM unnest($2::text[]) WITH ORDINALITY AS u(entry, i) ORDER BY u.i";

/// Drops the run's entries older than its newest `$2`.
const TRIM: &str = "DELETE FROM run_logs WHERE run_id = $1 AND n <= \
     (SELECT n FROM run_logs WHERE run_id = $1 ORDER BY n DESC OFFSET $2 LIMIT 1)";

#[async_trait]
impl RunLogs for PgRunLogs {
    async fn append(&self, run: RunId, entries: &[LogEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let id = Uuid::from_bytes(run.0);
        let lines = entries
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::storage)?;
        let keep = MAX_ENTRIES_PER_RUN as i64;
        read!(self.reader, c, async {
            let append = c.prepare_cached(APPEND).await?;
            let trim = c.prepare_cached(TRIM).await?;
            c.execute(&append, &[&id, &lines]).await?;
            c.execute(&trim, &[&id, &keep]).await
        })
        .map_err(StoreError::Storage)?;
        Ok(())
    }

    async fn read(&self, run: RunId, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        let id = Uuid::from_bytes(run.0);
        let rows = read!(self.reader, c, async {
            c.query(
                "SELECT entry FROM run_logs WHERE run_id = $1 ORDER BY n",
                &[&id],
            )
            .await
        })
        .map_err(StoreError::Storage)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let line: &str = row.try_get(0).map_err(StoreError::storage)?;
            let Ok(entry) = serde_json::from_str::<LogEntry>(line) else {
                continue;
            };
            if filter.matches(&entry) {
                out.push(entry);
            }
        }
        filter.keep_newest(&mut out);
        Ok(out)
    }
}
