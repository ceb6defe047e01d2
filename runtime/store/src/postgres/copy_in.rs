//! Rows into a table with `COPY … FROM STDIN (FORMAT binary)`: the server parses no
//! statement and no arrays, the cheapest way into a table. Owns nothing else.

use deadpool_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// A `COPY` statement and the types of its columns.
pub(crate) type Table<const N: usize> = (&'static str, [Type; N]);

/// The change feed's rows.
pub(crate) const CHANGES: Table<6> = (
    "COPY hub_changes (stream_id, position, kind, pk, version, data) FROM STDIN (FORMAT binary)",
    [
        Type::INT8,
        Type::INT8,
        Type::INT2,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
    ],
);

/// The records' rows.
pub(crate) const RECORDS: Table<9> = (
    "COPY hub_records (stream_id, pk, version, content_hash, position, first_seen_ms, \
     last_seen_ms, last_seen_generation, deleted) FROM STDIN (FORMAT binary)",
    [
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::UUID,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::BOOL,
    ],
);

/// Writes `rows` rows into `table`, the `i`th given by `row(i)`; returns how many
/// rows were written.
pub(crate) async fn copy_rows<'a, const N: usize>(
    tx: &Transaction<'_>,
    (copy, types): Table<N>,
    rows: usize,
    row: impl Fn(usize) -> [&'a (dyn ToSql + Sync); N],
) -> Result<u64, tokio_postgres::Error> {
    if rows == 0 {
        return Ok(0);
    }
    let sink = tx.copy_in(copy).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    for i in 0..rows {
        writer.as_mut().write(&row(i)).await?;
    }
    writer.finish().await
}
