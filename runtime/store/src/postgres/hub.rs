//! The hub on PostgreSQL: [`PgHub`] reads it; [`write_batch`] and
//! [`complete_refresh`] write it inside the committer's transaction.
//!
//! Tables (see `migrations/0001_initial.sql`): `hub_streams` (a row per stream, locked
//! by its writers), `hub_batches` (a row per committed batch), `hub_changes` (the
//! change feed, every version with its data) and `hub_records` (each record's latest
//! state, narrow). A batch is classified against `hub_records` by one indexed read of
//! its keys, then written with a statement per table over arrays (`unnest`), never a
//! statement per record. A record seen unchanged costs no write of its own: a full
//! refresh keeps the hashes of the keys it saw unchanged in its batch rows, and the
//! refresh's completion compares them with the records it did not write.
//!
//! Feed positions are `batch << 24 | index + 1`, taken from the stream's row under its
//! lock: a writer of a stream waits for the one before it to commit, so positions grow
//! in commit order and a reader never skips a change that a slower transaction
//! commits later.
//!
//! It must never write outside the caller's transaction, nor keep a record's data
//! anywhere but its change.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use async_trait::async_trait;
use deadpool_postgres::{Pool, Transaction};
use serde_json::Value;
use uuid::Uuid;

use super::copy_in::{CHANGES, RECORDS, copy_rows};
use super::errors::describe;
use super::pool::{Reader, read};
use crate::hub::{BatchOutcome, Change, ChangeKind, Hub, HubError, MAX_BATCH_RECORDS, Record};
use sluice_model::CheckpointCommitted;

/// Bits of a feed position that number a change inside its batch.
const INDEX_BITS: u32 = 24;

/// One parsed record of a batch.
pub(crate) struct Parsed {
    /// Where its line is in the batch's bytes.
    pub line: Range<usize>,
    /// The primary key: a JSON array of the key fields' values.
    pub pk: String,
    pub pk_hash: u128,
    pub content_hash: u128,
}

/// A batch to write, parsed.
pub(crate) struct BatchWork {
    pub connection: String,
    pub stream: String,
    /// The batch's NDJSON; every line is valid UTF-8 JSON (checked when parsed).
    pub records: Vec<u8>,
    pub parsed: Vec<Parsed>,
    pub checkpoint: String,
    pub attempt: u32,
    pub generation: u64,
    pub incremental: bool,
}

/// A full refresh to complete.
pub(crate) struct RefreshWork {
    pub connection: String,
    pub stream: String,
    pub generation: u64,
    pub checkpoint: String,
    pub attempt: u32,
}

/// Stream ids by (connection, stream), as the committer learned them (ids never
/// change).
pub(crate) type StreamIds = HashMap<(String, String), i64>;

/// The stream's row as its writer locked it.
struct Locked {
    id: i64,
    next_batch: i64,
}

/// Locks the stream's row (creating it if new).
async fn lock_stream(
    tx: &Transaction<'_>,
    ids: &mut StreamIds,
    connection: &str,
    stream: &str,
) -> Result<Locked, tokio_postgres::Error> {
    let key = (connection.to_owned(), stream.to_owned());
    if let Some(&id) = ids.get(&key) {
        let lock = tx
            .prepare_cached("SELECT next_batch FROM hub_streams WHERE id = $1 FOR UPDATE")
            .await?;
        if let Some(row) = tx.query_opt(&lock, &[&id]).await? {
            return Ok(Locked {
                id,
                next_batch: row.try_get(0)?,
            });
        }
    }
    let create = tx
        .prepare_cached(
            "INSERT INTO hub_streams (connection, stream) VALUES ($1, $2) \
             ON CONFLICT (connection, stream) DO NOTHING",
        )
        .await?;
    tx.execute(&create, &[&connection, &stream]).await?;
    let lock = tx
        .prepare_cached(
            "SELECT id, next_batch FROM hub_streams WHERE connection = $1 AND stream = $2 \
             FOR UPDATE",
        )
        .await?;
    let row = tx.query_one(&lock, &[&connection, &stream]).await?;
    let locked = Locked {
        id: row.try_get(0)?,
        next_batch: row.try_get(1)?,
    };
    ids.insert(key, locked.id);
    Ok(locked)
}

fn position(batch: i64, index: usize) -> i64 {
    (batch << INDEX_BITS) | (index as i64 + 1)
}

const KIND_CREATED: i16 = 1;
const KIND_UPDATED: i16 = 2;
const KIND_DELETED: i16 = 3;

fn kind_code(kind: ChangeKind) -> i16 {
    match kind {
        ChangeKind::Created => KIND_CREATED,
        ChangeKind::Updated => KIND_UPDATED,
        ChangeKind::Deleted => KIND_DELETED,
    }
}

fn kind_of(code: i16) -> Result<ChangeKind, HubError> {
    match code {
        KIND_CREATED => Ok(ChangeKind::Created),
        KIND_UPDATED => Ok(ChangeKind::Updated),
        KIND_DELETED => Ok(ChangeKind::Deleted),
        other => Err(HubError::Corrupt(format!("unknown change kind {other}"))),
    }
}

/// A record's state before or during a batch.
#[derive(Clone, Copy)]
struct Prev {
    version: i64,
    content_hash: u128,
    deleted: bool,
}

/// A record's state after a batch.
struct Final<'a> {
    pk: &'a str,
    version: i64,
    content_hash: u128,
    position: i64,
}

const EXISTING: &str = "SELECT pk, version, content_hash, deleted FROM hub_records \
     WHERE stream_id = $1 AND pk = ANY($2)";

// Keys with a row: updated, or created again after a deletion.
const UPDATE_RECORDS: &str = "UPDATE hub_records AS r SET version = u.version, \
     content_hash = u.hash, position = u.position, \
     first_seen_ms = CASE WHEN r.deleted THEN $6 ELSE r.first_seen_ms END, \
     last_seen_ms = $6, last_seen_generation = greatest(r.last_seen_generation, $7), \
     deleted = false \
     FROM unnest($2::text[], $3::int8[], $4::uuid[], $5::int8[]) AS u(pk, version, hash, position) \
     WHERE r.stream_id = $1 AND r.pk = u.pk";

const INSERT_BATCH: &str = "INSERT INTO hub_batches (stream_id, batch, generation, at_ms, source_cursor, seen) \
     VALUES ($1, $2, $3, $4, $5, $6)";

const UPDATE_STREAM: &str = "UPDATE hub_streams SET next_batch = $2, live = live + $3, \
     cursor = CASE WHEN $4 THEN $5 ELSE cursor END WHERE id = $1";

/// Classifies and writes a batch; returns its `CheckpointCommitted` and what it did.
pub(crate) async fn write_batch(
    tx: &Transaction<'_>,
    ids: &mut StreamIds,
    w: &BatchWork,
    time_ms: i64,
) -> Result<(CheckpointCommitted, BatchOutcome), tokio_postgres::Error> {
    let stream = lock_stream(tx, ids, &w.connection, &w.stream).await?;
    let generation = i64::try_from(w.generation).unwrap_or(i64::MAX);
    let mut outcome = BatchOutcome::default();
    let mut next_batch = stream.next_batch;
    let mut live = 0i64;
    if !w.parsed.is_empty() {
        let batch = stream.next_batch;
        next_batch += 1;
        let pks: Vec<&str> = w.parsed.iter().map(|p| p.pk.as_str()).collect();
        let existing = tx.prepare_cached(EXISTING).await?;
        let mut prev: HashMap<String, Prev> = HashMap::with_capacity(w.parsed.len());
        for row in tx.query(&existing, &[&stream.id, &pks]).await? {
            let hash: Uuid = row.try_get(2)?;
            prev.insert(
                row.try_get(0)?,
                Prev {
                    version: row.try_get(1)?,
                    content_hash: hash.as_u128(),
                    deleted: row.try_get(3)?,
                },
            );
        }
        let mut changes = Changes::default();
        let mut finals: HashMap<&str, Final<'_>> = HashMap::with_capacity(w.parsed.len());
        let mut seen: Vec<u8> = Vec::new();
        for r in &w.parsed {
            let before = finals
                .get(r.pk.as_str())
                .map(|f| Prev {
                    version: f.version,
                    content_hash: f.content_hash,
                    deleted: false,
                })
                .or_else(|| prev.get(&r.pk).copied());
            let kind = match before {
                Some(p) if !p.deleted && p.content_hash == r.content_hash => {
                    outcome.unchanged += 1;
                    if w.generation > 0 && !finals.contains_key(r.pk.as_str()) {
                        seen.extend_from_slice(&r.pk_hash.to_be_bytes());
                    }
                    continue;
                }
                Some(p) if !p.deleted => {
                    outcome.updated += 1;
                    ChangeKind::Updated
                }
                _ => {
                    outcome.created += 1;
                    live += 1;
                    ChangeKind::Created
                }
            };
            let version = before.map_or(1, |p| p.version + 1);
            let at = position(batch, changes.position.len());
            let data = std::str::from_utf8(w.records.get(r.line.clone()).unwrap_or_default())
                .unwrap_or_default();
            changes.push(at, kind, &r.pk, version, data);
            finals.insert(
                &r.pk,
                Final {
                    pk: &r.pk,
                    version,
                    content_hash: r.content_hash,
                    position: at,
                },
            );
        }
        let (mut fresh, mut known) = (Records::default(), Records::default());
        for f in finals.values() {
            if prev.contains_key(f.pk) {
                known.push(f);
            } else {
                fresh.push(f);
            }
        }
        let update_records = tx.prepare_cached(UPDATE_RECORDS).await?;
        let insert_batch = tx.prepare_cached(INSERT_BATCH).await?;
        let seen = (!seen.is_empty()).then_some(seen);
        let (a, b, c) = tokio::join!(
            copy_changes(tx, stream.id, &changes),
            async {
                let mut written = copy_records(tx, stream.id, &fresh, time_ms, generation).await?;
                if !known.pk.is_empty() {
                    written += tx
                        .execute(
                            &update_records,
                            &[
                                &stream.id,
                                &known.pk,
                                &known.version,
                                &known.hash,
                                &known.position,
                                &time_ms,
                                &generation,
                            ],
                        )
                        .await?;
                }
                Ok::<u64, tokio_postgres::Error>(written)
            },
            async {
                tx.execute(
                    &insert_batch,
                    &[
                        &stream.id,
                        &batch,
                        &generation,
                        &time_ms,
                        &w.checkpoint,
                        &seen,
                    ],
                )
                .await
            }
        );
        a?;
        b?;
        c?;
    }
    let update = tx.prepare_cached(UPDATE_STREAM).await?;
    tx.execute(
        &update,
        &[
            &stream.id,
            &next_batch,
            &live,
            &w.incremental,
            &w.checkpoint,
        ],
    )
    .await?;
    let event = CheckpointCommitted {
        stream: w.stream.clone(),
        checkpoint: w.checkpoint.clone(),
        records: outcome.created + outcome.updated + outcome.unchanged,
        bytes: w.records.len() as u64,
        created: outcome.created,
        updated: outcome.updated,
        unchanged: outcome.unchanged,
        attempt: w.attempt,
        deleted: 0,
    };
    Ok((event, outcome))
}

/// Writes a batch's feed rows by binary `COPY` (their positions are new: only
/// appended).
async fn copy_changes(
    tx: &Transaction<'_>,
    stream: i64,
    changes: &Changes<'_>,
) -> Result<u64, tokio_postgres::Error> {
    copy_rows(tx, CHANGES, changes.position.len(), |i| {
        [
            &stream,
            &changes.position[i],
            &changes.kind[i],
            &changes.pk[i],
            &changes.version[i],
            &changes.data[i],
        ]
    })
    .await
}

/// Writes a batch's new records (the batch's read found no row for them, and the
/// stream's lock keeps it so) by binary `COPY`.
async fn copy_records(
    tx: &Transaction<'_>,
    stream: i64,
    records: &Records<'_>,
    time_ms: i64,
    generation: i64,
) -> Result<u64, tokio_postgres::Error> {
    copy_rows(tx, RECORDS, records.pk.len(), |i| {
        [
            &stream,
            &records.pk[i],
            &records.version[i],
            &records.hash[i],
            &records.position[i],
            &time_ms,
            &time_ms,
            &generation,
            &false,
        ]
    })
    .await
}

/// The feed rows of a batch, as columns.
#[derive(Default)]
struct Changes<'a> {
    position: Vec<i64>,
    kind: Vec<i16>,
    pk: Vec<&'a str>,
    version: Vec<i64>,
    data: Vec<&'a str>,
}

impl<'a> Changes<'a> {
    fn push(&mut self, position: i64, kind: ChangeKind, pk: &'a str, version: i64, data: &'a str) {
        self.position.push(position);
        self.kind.push(kind_code(kind));
        self.pk.push(pk);
        self.version.push(version);
        self.data.push(data);
    }
}

/// The record rows of a batch, as columns.
#[derive(Default)]
struct Records<'a> {
    pk: Vec<&'a str>,
    version: Vec<i64>,
    hash: Vec<Uuid>,
    position: Vec<i64>,
}

impl<'a> Records<'a> {
    fn push(&mut self, f: &Final<'a>) {
        self.pk.push(f.pk);
        self.version.push(f.version);
        self.hash.push(Uuid::from_u128(f.content_hash));
        self.position.push(f.position);
    }
}

const SEEN: &str = "SELECT seen FROM hub_batches WHERE stream_id = $1 AND generation = $2 \
     AND seen IS NOT NULL";

const NOT_WRITTEN: &str = "SELECT pk, version FROM hub_records WHERE stream_id = $1 \
     AND NOT deleted AND last_seen_generation < $2";

const INSERT_DELETIONS: &str = "INSERT INTO hub_changes (stream_id, position, kind, pk, version) \
     SELECT $1, u.position, 3, u.pk, u.version FROM unnest($2::int8[], $3::text[], $4::int8[]) \
     AS u(position, pk, version)";

const MARK_DELETED: &str = "UPDATE hub_records AS r SET deleted = true, version = u.version, \
     position = u.position, content_hash = '00000000-0000-0000-0000-000000000000' \
     FROM unnest($2::int8[], $3::text[], $4::int8[]) AS u(position, pk, version) \
     WHERE r.stream_id = $1 AND r.pk = u.pk";

const REFRESHED: &str = "UPDATE hub_streams SET next_batch = $2, live = live - $3, \
     refreshed_generation = greatest(refreshed_generation, $4), refreshed_at_ms = $5 \
     WHERE id = $1";

const FORGET_SEEN: &str = "UPDATE hub_batches SET seen = NULL WHERE stream_id = $1 \
     AND generation <= $2 AND seen IS NOT NULL";

/// Marks deleted every live record of the stream that refresh `generation` did not
/// see; returns how many.
pub(crate) async fn complete_refresh(
    tx: &Transaction<'_>,
    ids: &mut StreamIds,
    w: &RefreshWork,
    time_ms: i64,
) -> Result<u64, tokio_postgres::Error> {
    let stream = lock_stream(tx, ids, &w.connection, &w.stream).await?;
    let generation = i64::try_from(w.generation).unwrap_or(i64::MAX);
    let seen_rows = tx.prepare_cached(SEEN).await?;
    let mut seen: HashSet<u128> = HashSet::new();
    for row in tx.query(&seen_rows, &[&stream.id, &generation]).await? {
        let bytes: &[u8] = row.try_get(0)?;
        for chunk in bytes.chunks_exact(16) {
            let mut hash = [0u8; 16];
            hash.copy_from_slice(chunk);
            seen.insert(u128::from_be_bytes(hash));
        }
    }
    let not_written = tx.prepare_cached(NOT_WRITTEN).await?;
    let mut gone: Vec<(String, i64)> = Vec::new();
    for row in tx.query(&not_written, &[&stream.id, &generation]).await? {
        let pk: String = row.try_get(0)?;
        if !seen.contains(&crate::records::hash128(pk.as_bytes())) {
            gone.push((pk, row.try_get::<_, i64>(1)? + 1));
        }
    }
    let mut next_batch = stream.next_batch;
    for chunk in gone.chunks(MAX_BATCH_RECORDS) {
        let batch = next_batch;
        next_batch += 1;
        let positions: Vec<i64> = (0..chunk.len()).map(|i| position(batch, i)).collect();
        let pks: Vec<&str> = chunk.iter().map(|(pk, _)| pk.as_str()).collect();
        let versions: Vec<i64> = chunk.iter().map(|(_, v)| *v).collect();
        let insert = tx.prepare_cached(INSERT_DELETIONS).await?;
        let mark = tx.prepare_cached(MARK_DELETED).await?;
        let record_batch = tx.prepare_cached(INSERT_BATCH).await?;
        let no_cursor: Option<&str> = None;
        let no_seen: Option<Vec<u8>> = None;
        let (a, b, c) = tokio::join!(
            async {
                tx.execute(&insert, &[&stream.id, &positions, &pks, &versions])
                    .await
            },
            async {
                tx.execute(&mark, &[&stream.id, &positions, &pks, &versions])
                    .await
            },
            async {
                tx.execute(
                    &record_batch,
                    &[
                        &stream.id,
                        &batch,
                        &generation,
                        &time_ms,
                        &no_cursor,
                        &no_seen,
                    ],
                )
                .await
            }
        );
        a?;
        b?;
        c?;
    }
    let deleted = gone.len() as i64;
    let refreshed = tx.prepare_cached(REFRESHED).await?;
    let forget = tx.prepare_cached(FORGET_SEEN).await?;
    let (a, b) = tokio::join!(
        async {
            tx.execute(
                &refreshed,
                &[&stream.id, &next_batch, &deleted, &generation, &time_ms],
            )
            .await
        },
        async { tx.execute(&forget, &[&stream.id, &generation]).await }
    );
    a?;
    b?;
    Ok(gone.len() as u64)
}

/// Reads of the hub on PostgreSQL.
#[derive(Clone)]
pub struct PgHub {
    reader: Reader,
}

impl PgHub {
    pub(crate) fn new(pool: Pool, url: String) -> Self {
        PgHub {
            reader: Reader::new(pool, url),
        }
    }
}

fn storage(e: String) -> HubError {
    HubError::Storage(e)
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, HubError> {
    row.try_get(i).map_err(|e| HubError::Corrupt(describe(&e)))
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const GET: &str = "SELECT r.pk, r.version, r.content_hash, b.source_cursor, r.first_seen_ms, \
     r.last_seen_ms, r.last_seen_generation, c.data, s.refreshed_generation, s.refreshed_at_ms \
     FROM hub_streams s \
     JOIN hub_records r ON r.stream_id = s.id \
     JOIN hub_changes c ON c.stream_id = r.stream_id AND c.position = r.position \
     LEFT JOIN hub_batches b ON b.stream_id = r.stream_id AND b.batch = r.position >> 24 \
     WHERE s.connection = $1 AND s.stream = $2 AND r.pk = $3 AND NOT r.deleted";

// The stream's id as a scalar subquery (evaluated once, before the scan), so the
// feed is read in `hub_changes`' primary key order from the cursor on, never sorted.
const FEED: &str = "SELECT c.position, c.kind, c.pk, c.version, c.data FROM hub_changes c \
     WHERE c.stream_id = (SELECT id FROM hub_streams WHERE connection = $1 AND stream = $2) \
     AND c.position > $3 ORDER BY c.position LIMIT $4";

#[async_trait]
impl Hub for PgHub {
    async fn get(
        &self,
        connection: &str,
        stream: &str,
        primary_key: &[Value],
    ) -> Result<Option<Record>, HubError> {
        let pk =
            serde_json::to_string(primary_key).map_err(|e| HubError::Corrupt(e.to_string()))?;
        let row = read!(self.reader, c, async {
            let get = c.prepare_cached(GET).await?;
            c.query_opt(&get, &[&connection, &stream, &pk]).await
        })
        .map_err(storage)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hash: Uuid = column(&row, 2)?;
        let mut last_seen_ms: i64 = column(&row, 5)?;
        let mut last_seen_generation: i64 = column(&row, 6)?;
        // A live record that a completed refresh did not delete was seen by it; its
        // row is not written when it is seen unchanged.
        let refreshed_generation: i64 = column(&row, 8)?;
        if refreshed_generation > last_seen_generation {
            last_seen_generation = refreshed_generation;
            last_seen_ms = last_seen_ms.max(column(&row, 9)?);
        }
        Ok(Some(Record {
            primary_key: column(&row, 0)?,
            version: unsigned(column(&row, 1)?),
            content_hash: hash.as_u128(),
            source_cursor: column(&row, 3)?,
            first_seen_ms: unsigned(column(&row, 4)?),
            last_seen_ms: unsigned(last_seen_ms),
            last_seen_generation: unsigned(last_seen_generation),
            data: column::<Option<String>>(&row, 7)?.unwrap_or_default(),
        }))
    }

    async fn stream_cursor(
        &self,
        connection: &str,
        stream: &str,
    ) -> Result<Option<String>, HubError> {
        let row = read!(self.reader, c, async {
            c.query_opt(
                "SELECT cursor FROM hub_streams WHERE connection = $1 AND stream = $2",
                &[&connection, &stream],
            )
            .await
        })
        .map_err(storage)?;
        match row {
            Some(row) => column(&row, 0),
            None => Ok(None),
        }
    }

    async fn count(&self, connection: &str, stream: &str) -> Result<u64, HubError> {
        let row = read!(self.reader, c, async {
            c.query_opt(
                "SELECT live FROM hub_streams WHERE connection = $1 AND stream = $2",
                &[&connection, &stream],
            )
            .await
        })
        .map_err(storage)?;
        match row {
            Some(row) => Ok(unsigned(column(&row, 0)?)),
            None => Ok(0),
        }
    }

    async fn feed(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Change>, u64), HubError> {
        let from = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = read!(self.reader, c, async {
            let feed = c.prepare_cached(FEED).await?;
            c.query(&feed, &[&connection, &stream, &from, &limit]).await
        })
        .map_err(storage)?;
        let mut changes = Vec::with_capacity(rows.len());
        let mut next = after;
        for row in &rows {
            let cursor = unsigned(column(row, 0)?);
            changes.push(Change {
                cursor,
                kind: kind_of(column(row, 1)?)?,
                primary_key: column(row, 2)?,
                version: unsigned(column(row, 3)?),
                data: column(row, 4)?,
            });
            next = cursor;
        }
        Ok((changes, next))
    }
}
