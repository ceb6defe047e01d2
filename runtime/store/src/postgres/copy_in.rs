//! Rows into a table with `COPY … FROM STDIN (FORMAT binary)`: the server parses no
//! statement and no arrays, the cheapest way into a table. Owns nothing else.

use deadpool_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// Writes `rows` rows, the `i`th given by `row(i)`, with the `COPY` statement `copy`
/// whose columns have `types`; returns how many rows were written.
pub(crate) async fn copy_rows<'a, const N: usize>(
    tx: &Transaction<'_>,
    copy: &str,
    types: [Type; N],
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
