//! [`HubBulk`] on PostgreSQL: the hub's streams, a stream's live records in feed
//! order, and a stream's history imported as it is.
//!
//! An import is one transaction of its own (not the committer's: it carries no run
//! event): it locks the stream's row as every writer does, reads the state of the
//! records it touches, checks every change against it before anything is written,
//! then writes the changes and the rows of records new to the stream with `COPY`
//! (binary), and the others' new state, a batch row per batch and the stream's row
//! with a statement per table over arrays (`unnest`): never a statement per record. The rows are the ones `hub` writes, with the same meaning (positions
//! `batch << 24 | index + 1`, a batch per at most [`MAX_BATCH_RECORDS`] changes), so
//! every reader and writer takes them as its own. It must never classify a change
//! (the kind given is the kind stored). An import that a conflict or a database
//! gone away stopped runs again, for up to [`IMPORT_PATIENCE`]; one whose COMMIT
//! went unanswered is first looked for (its stream's next batch tells whether it
//! landed), so it never lands twice. After an import that doubled its stream's
//! batches it analyzes the hub's tables ([`doubles`]), so that the reads right after
//! a bulk import are planned for the tables' real size.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::copy_in::{CHANGES, RECORDS, copy_rows};
use super::errors::{Class, classify, classify_pool, describe, describe_pool};
use super::pool::read;
use super::store::PgStore;
use crate::StoreError;
use crate::hub::{
    Change, ChangeKind, HubBulk, HubError, MAX_BATCH_RECORDS, Record, StreamImport, import_refusal,
};

/// Bits of a feed position that number a change inside its batch.
const INDEX_BITS: u32 = 24;

fn position(batch: i64, index: usize) -> i64 {
    (batch << INDEX_BITS) | (index as i64 + 1)
}

/// The stored code of a change's kind (as `hub` stores it).
fn kind_code(kind: ChangeKind) -> i16 {
    match kind {
        ChangeKind::Created => 1,
        ChangeKind::Updated => 2,
        ChangeKind::Deleted => 3,
    }
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, HubError> {
    row.try_get(i).map_err(|e| HubError::Corrupt(describe(&e)))
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Storage(describe(&e))
}

const STREAMS: &str = "SELECT connection, stream FROM hub_streams ORDER BY connection COLLATE \"C\", stream COLLATE \"C\"";

const STREAM: &str = "SELECT id, refreshed_generation, refreshed_at_ms FROM hub_streams \
     WHERE connection = $1 AND stream = $2";

/// The next `$3` changes after `$2`, and for those that are their live record's
/// latest change, the record. Each change's record is looked up by its key
/// (`LATERAL`: an index probe per change, whatever the planner thinks of the
/// tables' sizes, never a scan of every record per page).
const LIVE: &str = "SELECT p.position, coalesce(r.position = p.position AND NOT r.deleted, false), \
     p.pk, r.version, r.content_hash, b.source_cursor, r.first_seen_ms, r.last_seen_ms, \
     r.last_seen_generation, CASE WHEN r.position = p.position AND NOT r.deleted THEN p.data END \
     FROM (SELECT position, pk, data FROM hub_changes \
           WHERE stream_id = $1 AND position > $2 ORDER BY position LIMIT $3) p \
     LEFT JOIN LATERAL (SELECT version, content_hash, position, deleted, first_seen_ms, \
           last_seen_ms, last_seen_generation FROM hub_records \
           WHERE stream_id = $1 AND pk = p.pk) r ON true \
     LEFT JOIN LATERAL (SELECT source_cursor FROM hub_batches \
           WHERE stream_id = $1 AND batch = p.position >> 24) b ON true \
     ORDER BY p.position";

const PRIOR: &str = "SELECT pk, version, deleted, content_hash, position, first_seen_ms, \
     last_seen_ms, last_seen_generation FROM hub_records WHERE stream_id = $1 AND pk = ANY($2)";

const UPSERT_RECORDS: &str = "INSERT INTO hub_records (stream_id, pk, version, content_hash, \
     position, first_seen_ms, last_seen_ms, last_seen_generation, deleted) \
     SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::uuid[], $5::int8[], $6::int8[], \
     $7::int8[], $8::int8[], $9::bool[]) \
     ON CONFLICT (stream_id, pk) DO UPDATE SET version = excluded.version, \
     content_hash = excluded.content_hash, position = excluded.position, \
     first_seen_ms = excluded.first_seen_ms, last_seen_ms = excluded.last_seen_ms, \
     last_seen_generation = excluded.last_seen_generation, deleted = excluded.deleted";

const INSERT_BATCHES: &str = "INSERT INTO hub_batches (stream_id, batch, generation, at_ms) \
     SELECT $1, b, $3, $3 FROM unnest($2::int8[]) AS b";

const UPDATE_STREAM: &str = "UPDATE hub_streams SET next_batch = $2, live = live + $3, \
     cursor = coalesce($4, cursor) WHERE id = $1";

/// Brings the statistics of the hub's tables up to date.
const ANALYZE: &str = "ANALYZE hub_changes, hub_records, hub_batches, hub_streams";

/// Whether an import that wrote `batches` of its stream doubled the stream's batches
/// (from 4 on). A bulk import leaves the planner's statistics far behind the tables
/// (autovacuum catches up only later), and a plan made for a near-empty table reads
/// and sorts a whole stream to page through it; analyzing whenever a stream doubles
/// keeps them within a factor of two of the truth at a cost of a few samples per
/// stream.
fn doubles(batches: Range<i64>) -> bool {
    let (before, after) = (batches.start - 1, batches.end - 1);
    after >= 4 && (before < 4 || before.leading_zeros() != after.leading_zeros())
}

/// A record's state as the import leaves it (the columns of `hub_records`).
#[derive(Clone, Copy)]
struct State {
    version: i64,
    deleted: bool,
    content_hash: u128,
    position: i64,
    first_seen_ms: i64,
    last_seen_ms: i64,
    last_seen_generation: i64,
}

impl State {
    /// The state after `change`, written at `position` at time (and generation) `at`.
    fn after(prev: Option<&State>, change: &Change, position: i64, at: i64) -> State {
        let version = i64::try_from(change.version).unwrap_or(i64::MAX);
        match change.kind {
            ChangeKind::Created | ChangeKind::Updated => State {
                version,
                deleted: false,
                content_hash: crate::records::hash128(
                    change.data.as_deref().unwrap_or_default().as_bytes(),
                ),
                position,
                first_seen_ms: match (change.kind, prev) {
                    (ChangeKind::Updated, Some(p)) => p.first_seen_ms,
                    _ => at,
                },
                last_seen_ms: at,
                last_seen_generation: prev.map_or(at, |p| p.last_seen_generation.max(at)),
            },
            ChangeKind::Deleted => State {
                version,
                deleted: true,
                content_hash: 0,
                position,
                first_seen_ms: prev.map_or(at, |p| p.first_seen_ms),
                last_seen_ms: prev.map_or(at, |p| p.last_seen_ms),
                last_seen_generation: prev.map_or(0, |p| p.last_seen_generation),
            },
        }
    }
}

/// The rows an import writes, as columns.
#[derive(Default)]
struct Columns<'a> {
    position: Vec<i64>,
    kind: Vec<i16>,
    pk: Vec<&'a str>,
    version: Vec<i64>,
    data: Vec<Option<&'a str>>,
}

/// The records' new state, as columns.
#[derive(Default)]
struct RecordColumns<'a> {
    pk: Vec<&'a str>,
    version: Vec<i64>,
    hash: Vec<Uuid>,
    position: Vec<i64>,
    first_seen: Vec<i64>,
    last_seen: Vec<i64>,
    generation: Vec<i64>,
    deleted: Vec<bool>,
}

impl<'a> RecordColumns<'a> {
    fn push(&mut self, pk: &'a str, s: &State) {
        self.pk.push(pk);
        self.version.push(s.version);
        self.hash.push(Uuid::from_u128(s.content_hash));
        self.position.push(s.position);
        self.first_seen.push(s.first_seen_ms);
        self.last_seen.push(s.last_seen_ms);
        self.generation.push(s.last_seen_generation);
        self.deleted.push(s.deleted);
    }
}

/// Writes the changes with `COPY` (binary): the cheapest way into a table.
async fn copy_changes(
    tx: &Transaction<'_>,
    stream_id: i64,
    rows: &Columns<'_>,
) -> Result<(), tokio_postgres::Error> {
    copy_rows(tx, CHANGES, rows.position.len(), |i| {
        [
            &stream_id,
            &rows.position[i],
            &rows.kind[i],
            &rows.pk[i],
            &rows.version[i],
            &rows.data[i],
        ]
    })
    .await?;
    Ok(())
}

/// Inserts the rows of records new to the stream with `COPY` (binary).
async fn copy_records(
    tx: &Transaction<'_>,
    stream_id: i64,
    rows: &RecordColumns<'_>,
) -> Result<(), tokio_postgres::Error> {
    copy_rows(tx, RECORDS, rows.pk.len(), |i| {
        [
            &stream_id,
            &rows.pk[i],
            &rows.version[i],
            &rows.hash[i],
            &rows.position[i],
            &rows.first_seen[i],
            &rows.last_seen[i],
            &rows.generation[i],
            &rows.deleted[i],
        ]
    })
    .await?;
    Ok(())
}

/// Creates the stream's row if new and locks it; returns its id and next batch.
async fn lock_stream(
    tx: &Transaction<'_>,
    connection: &str,
    stream: &str,
) -> Result<(i64, i64), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO hub_streams (connection, stream) VALUES ($1, $2) \
         ON CONFLICT (connection, stream) DO NOTHING",
        &[&connection, &stream],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT id, next_batch FROM hub_streams WHERE connection = $1 AND stream = $2 \
             FOR UPDATE",
            &[&connection, &stream],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The state of the records with these keys before the import.
async fn prior<'k>(
    tx: &Transaction<'_>,
    stream_id: i64,
    pks: &[&'k str],
) -> Result<HashMap<&'k str, State>, tokio_postgres::Error> {
    let mut out = HashMap::with_capacity(pks.len());
    let by_text: HashMap<&str, &'k str> = pks.iter().map(|pk| (*pk, *pk)).collect();
    let statement = tx.prepare_cached(PRIOR).await?;
    for row in tx.query(&statement, &[&stream_id, &pks]).await? {
        let pk: &str = row.try_get(0)?;
        let Some(key) = by_text.get(pk) else {
            continue;
        };
        let hash: Uuid = row.try_get(3)?;
        out.insert(
            *key,
            State {
                version: row.try_get(1)?,
                deleted: row.try_get(2)?,
                content_hash: hash.as_u128(),
                position: row.try_get(4)?,
                first_seen_ms: row.try_get(5)?,
                last_seen_ms: row.try_get(6)?,
                last_seen_generation: row.try_get(7)?,
            },
        );
    }
    Ok(out)
}

impl PgStore {
    /// Writes an import in the transaction `tx`; returns the batches it wrote, or
    /// `Ok(Err(why))` if a change does not follow its record's state (then nothing may
    /// be committed).
    async fn import_in(
        tx: &Transaction<'_>,
        import: &StreamImport,
    ) -> Result<Result<Range<i64>, String>, tokio_postgres::Error> {
        let (stream_id, first_batch) = lock_stream(tx, &import.connection, &import.stream).await?;
        let at = import.at_unix_ms;
        let mut pks: Vec<&str> = import
            .changes
            .iter()
            .map(|c| c.primary_key.as_str())
            .collect();
        pks.sort_unstable();
        pks.dedup();
        let mut states = prior(tx, stream_id, &pks).await?;
        let existed: HashSet<&str> = states.keys().copied().collect();
        let mut changes = Columns::default();
        let mut batches = Vec::new();
        let mut live = 0i64;
        for (chunk, batch) in import.changes.chunks(MAX_BATCH_RECORDS).zip(first_batch..) {
            batches.push(batch);
            for (index, c) in chunk.iter().enumerate() {
                let prev = states.get(c.primary_key.as_str());
                let seen = prev.map(|p| (unsigned(p.version), !p.deleted));
                if let Some(why) = import_refusal(seen, c) {
                    return Ok(Err(why));
                }
                let at_position = position(batch, index);
                let next = State::after(prev, c, at_position, at);
                states.insert(c.primary_key.as_str(), next);
                live += match c.kind {
                    ChangeKind::Created => 1,
                    ChangeKind::Updated => 0,
                    ChangeKind::Deleted => -1,
                };
                changes.position.push(at_position);
                changes.kind.push(kind_code(c.kind));
                changes.pk.push(&c.primary_key);
                changes.version.push(next.version);
                changes.data.push(c.data.as_deref());
            }
        }
        // The records' new state: rows to insert for keys new to the stream, to update
        // for the others (only those this import changed: all were read for it).
        let mut inserted = RecordColumns::default();
        let mut updated = RecordColumns::default();
        for (pk, s) in &states {
            let rows = if existed.contains(pk) {
                &mut updated
            } else {
                &mut inserted
            };
            rows.push(pk, s);
        }
        let next_batch = first_batch + batches.len() as i64;
        copy_changes(tx, stream_id, &changes).await?;
        copy_records(tx, stream_id, &inserted).await?;
        let upsert_records = tx.prepare_cached(UPSERT_RECORDS).await?;
        let insert_batches = tx.prepare_cached(INSERT_BATCHES).await?;
        let update_stream = tx.prepare_cached(UPDATE_STREAM).await?;
        let (b, c, d) = tokio::join!(
            async {
                if updated.pk.is_empty() {
                    return Ok(0);
                }
                tx.execute(
                    &upsert_records,
                    &[
                        &stream_id,
                        &updated.pk,
                        &updated.version,
                        &updated.hash,
                        &updated.position,
                        &updated.first_seen,
                        &updated.last_seen,
                        &updated.generation,
                        &updated.deleted,
                    ],
                )
                .await
            },
            async {
                if batches.is_empty() {
                    return Ok(0);
                }
                tx.execute(&insert_batches, &[&stream_id, &batches, &at])
                    .await
            },
            async {
                tx.execute(
                    &update_stream,
                    &[&stream_id, &next_batch, &live, &import.cursor],
                )
                .await
            }
        );
        b?;
        c?;
        d?;
        Ok(Ok(first_batch..next_batch))
    }
}

#[async_trait]
impl HubBulk for PgStore {
    async fn streams(&self) -> Result<Vec<(String, String)>, HubError> {
        let rows = read!(self.reader, c, async { c.query(STREAMS, &[]).await })
            .map_err(HubError::Storage)?;
        let mut out = rows
            .iter()
            .map(|r| Ok((column(r, 0)?, column(r, 1)?)))
            .collect::<Result<Vec<(String, String)>, HubError>>()?;
        out.sort();
        Ok(out)
    }

    async fn live_records(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Record>, u64), HubError> {
        let row = read!(self.reader, c, async {
            c.query_opt(STREAM, &[&connection, &stream]).await
        })
        .map_err(HubError::Storage)?;
        let Some(row) = row else {
            return Ok((Vec::new(), after));
        };
        let (stream_id, refreshed_generation, refreshed_at_ms): (i64, i64, i64) =
            (column(&row, 0)?, column(&row, 1)?, column(&row, 2)?);
        let from = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = read!(self.reader, c, async {
            let live = c.prepare_cached(LIVE).await?;
            c.query(&live, &[&stream_id, &from, &limit]).await
        })
        .map_err(HubError::Storage)?;
        let mut out = Vec::new();
        let mut next = after;
        for row in &rows {
            next = unsigned(column(row, 0)?);
            if !column::<bool>(row, 1)? {
                continue;
            }
            let hash: Uuid = column(row, 4)?;
            let mut last_seen_ms: i64 = column(row, 7)?;
            let mut last_seen_generation: i64 = column(row, 8)?;
            // As `Hub::get` says: a live record a completed refresh did not delete
            // was seen by it.
            if refreshed_generation > last_seen_generation {
                last_seen_generation = refreshed_generation;
                last_seen_ms = last_seen_ms.max(refreshed_at_ms);
            }
            out.push(Record {
                primary_key: column(row, 2)?,
                version: unsigned(column(row, 3)?),
                content_hash: hash.as_u128(),
                source_cursor: column(row, 5)?,
                first_seen_ms: unsigned(column(row, 6)?),
                last_seen_ms: unsigned(last_seen_ms),
                last_seen_generation: unsigned(last_seen_generation),
                data: column::<Option<String>>(row, 9)?.unwrap_or_default(),
            });
        }
        Ok((out, next))
    }

    async fn import(&self, import: StreamImport) -> Result<(), StoreError> {
        if import.changes.is_empty() && import.cursor.is_none() {
            return Ok(());
        }
        for name in [&import.connection, &import.stream] {
            if name.contains('\0') {
                return Err(StoreError::Invalid(
                    "connection and stream names may not contain NUL".into(),
                ));
            }
        }
        let refused = |why: String| {
            StoreError::Invalid(format!(
                "import into stream `{}` of connection `{}`: {why}",
                import.stream, import.connection
            ))
        };
        if let Some(c) = import.changes.iter().find(|c| {
            c.primary_key.contains('\0') || c.data.as_deref().is_some_and(|d| d.contains('\0'))
        }) {
            return Err(refused(format!(
                "change to {} holds a NUL, which PostgreSQL text cannot",
                c.primary_key
            )));
        }
        let began = Instant::now();
        let mut failures = 0u32;
        loop {
            let failure = match self.attempt(&import).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(why)) => return Err(refused(why)),
                Err(failure) => failure,
            };
            let (class, message) = match &failure {
                Failure::Db(e) => (classify(e), describe(e)),
                Failure::Pool(e) => (classify_pool(e), describe_pool(e)),
                Failure::InDoubt { error, .. } => (Class::Unavailable, describe(error)),
            };
            if let Failure::InDoubt { landed_at, .. } = failure
                && self.landed(&import, landed_at).await?
            {
                return Ok(());
            }
            if class == Class::Fatal || began.elapsed() >= IMPORT_PATIENCE {
                return Err(StoreError::Storage(message));
            }
            failures += 1;
            tracing::warn!(error = %message, "an import into the store failed; trying it again");
            tokio::time::sleep(Duration::from_millis((50u64 << failures.min(6)).min(2_000))).await;
        }
    }
}

/// How long an import waits for a database that went away (or keeps getting in its
/// way) before it gives up.
const IMPORT_PATIENCE: Duration = Duration::from_secs(60);

/// Why one attempt of an import failed.
enum Failure {
    Db(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    /// COMMIT was sent and its answer lost: the import landed if its stream's next
    /// batch is `landed_at` (0: nothing tells, as for a cursor alone, which is safe
    /// to write again).
    InDoubt {
        error: tokio_postgres::Error,
        landed_at: i64,
    },
}

impl PgStore {
    /// One attempt: the import in a transaction of its own, then the tables analyzed
    /// if it doubled its stream; `Ok(Err(why))` if it was refused.
    async fn attempt(&self, import: &StreamImport) -> Result<Result<(), String>, Failure> {
        let mut client = self.reader.pool().get().await.map_err(Failure::Pool)?;
        let tx = client.transaction().await.map_err(Failure::Db)?;
        let batches = match Self::import_in(&tx, import).await.map_err(Failure::Db)? {
            Ok(batches) => batches,
            // Dropping the transaction rolls it back: nothing was written.
            Err(why) => return Ok(Err(why)),
        };
        let landed_at = if batches.is_empty() { 0 } else { batches.end };
        tx.commit()
            .await
            .map_err(|error| Failure::InDoubt { error, landed_at })?;
        if doubles(batches) {
            // Statistics only: an import that landed is not failed by them.
            if let Err(e) = client.batch_execute(ANALYZE).await {
                tracing::debug!(error = %describe(&e), "analyzing the hub's tables failed");
            }
        }
        Ok(Ok(()))
    }

    /// Whether an import whose COMMIT went unanswered landed: its stream's next batch
    /// moved to `landed_at` (an import writes a stream alone, so nothing else moves
    /// it there).
    async fn landed(&self, import: &StreamImport, landed_at: i64) -> Result<bool, StoreError> {
        if landed_at == 0 {
            return Ok(false);
        }
        let (connection, stream) = (&import.connection, &import.stream);
        let row = read!(self.reader, c, async {
            c.query_opt(
                "SELECT next_batch FROM hub_streams WHERE connection = $1 AND stream = $2",
                &[connection, stream],
            )
            .await
        })
        .map_err(StoreError::Storage)?;
        let next: i64 = match row {
            Some(row) => row.try_get(0).map_err(db)?,
            None => 0,
        };
        Ok(next >= landed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_analyzed_each_time_a_stream_doubles_from_four_batches() {
        let analyzed: Vec<i64> = (1..=70).filter(|&b| doubles(b..b + 1)).collect();
        assert_eq!(analyzed, [4, 8, 16, 32, 64]);
        assert!(doubles(1..40), "one import of many batches");
        assert!(!doubles(1..3));
        assert!(!doubles(9..12));
    }
}
