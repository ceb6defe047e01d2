//! [`PgBudgets`]: the shared rate-limit budgets on PostgreSQL, in the tables
//! `rate_keys` (a key's pause, and the row a change of its holdings locks) and
//! `rate_holds` (each node's holding of a key).
//!
//! Owns the SQL of [`SharedBudgets`]. A change of a holding is one short
//! transaction: lock the key's row (publishing a pause with the same upsert), then,
//! in a statement of its own so that it sees every change committed before the lock
//! was taken, count the other holders' unexpired slots and upsert this holder's row
//! with what is left. It never waits out a database that is away: the limiter
//! syncs again within a poll, and stops sending while it cannot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::errors::{Class, classify, classify_pool, describe, describe_pool};
use crate::StoreError;
use crate::budgets::{HoldRequest, Holding, SharedBudgets};

/// The database's clock, in Unix milliseconds, as of the transaction's start (never
/// earlier than the node's sending of it).
macro_rules! now_ms {
    () => {
        "floor(extract(epoch FROM now()) * 1000)::int8"
    };
}

/// Lock the key's row and publish a pause ($4 ms from now; 0 for none); returns how
/// long the key is still paused (ms, maybe negative) and the clock.
const LOCK_KEY: &str = concat!(
    "INSERT INTO rate_keys AS k (connector, credential, endpoint, paused_until_ms) \
     VALUES ($1, $2, $3, CASE WHEN $4::int8 > 0 THEN ",
    now_ms!(),
    " + $4::int8 ELSE 0 END) \
     ON CONFLICT (connector, credential, endpoint) \
     DO UPDATE SET paused_until_ms = greatest(k.paused_until_ms, excluded.paused_until_ms) \
     RETURNING k.paused_until_ms - ",
    now_ms!(),
    ", ",
    now_ms!()
);

/// How long the key is still paused (ms, maybe negative), without a write.
const READ_PAUSE: &str = concat!(
    "SELECT paused_until_ms - ",
    now_ms!(),
    " FROM rate_keys WHERE connector = $1 AND credential = $2 AND endpoint = $3"
);

/// With the key's row locked: this holder gets at most $6 slots of the limit $7 that
/// the other holders' unexpired rows (at the clock $5) leave, until $5 + $9 ms.
const HOLD: &str = "WITH others AS ( \
         SELECT coalesce(sum(slots), 0)::int8 AS held, \
                (count(*) FILTER (WHERE slots > 0 OR wanting))::int8 AS holders, \
                coalesce(bool_or(wanting), false) AS wanting \
         FROM rate_holds \
         WHERE connector = $1 AND credential = $2 AND endpoint = $3 \
           AND holder <> $4 AND until_ms > $5) \
     INSERT INTO rate_holds AS h \
         (connector, credential, endpoint, holder, slots, wanting, until_ms) \
     SELECT $1, $2, $3, $4, greatest(0, least($6::int8, $7::int8 - others.held))::int4, \
            $8, $5 + $9::int8 \
     FROM others \
     ON CONFLICT (connector, credential, endpoint, holder) DO UPDATE \
         SET slots = excluded.slots, wanting = excluded.wanting, until_ms = excluded.until_ms \
     RETURNING h.slots, (SELECT holders FROM others), (SELECT wanting FROM others)";

/// Rows of the key that count for nothing any more.
const SWEEP: &str = "DELETE FROM rate_holds \
     WHERE connector = $1 AND credential = $2 AND endpoint = $3 AND until_ms <= $4";

/// Every this many holds of a client, it deletes the key's expired rows.
const SWEEP_EVERY: u64 = 64;

/// Times a hold runs again after another transaction got in its way.
const RETRIES: u32 = 5;

/// One node's client of the shared budgets of a PostgreSQL store.
pub struct PgBudgets {
    pool: Pool,
    holder: Uuid,
    holds: AtomicU64,
}

impl PgBudgets {
    /// A new holder (its holdings apart from every other client's) on `pool`.
    pub(crate) fn new(pool: Pool) -> Self {
        PgBudgets {
            pool,
            holder: Uuid::new_v4(),
            holds: AtomicU64::new(0),
        }
    }

    /// One try of a hold.
    async fn try_hold(&self, request: &HoldRequest, pause_ms: i64) -> Result<Holding, Failure> {
        let key = &request.key;
        let mut client = self.pool.get().await.map_err(Failure::Pool)?;
        if request.limit == 0 && pause_ms == 0 {
            let read = client.prepare_cached(READ_PAUSE).await?;
            let row = client
                .query_opt(&read, &[&key.connector, &key.credential, &key.endpoint])
                .await?;
            let paused_ms: Option<i64> = match row {
                Some(row) => row.try_get(0)?,
                None => None,
            };
            return Ok(Holding {
                paused_for: paused_ms.and_then(positive_ms),
                ..Holding::default()
            });
        }
        let hold = i64::from(request.hold);
        let limit = i64::from(request.limit);
        let hold_ms = millis(request.hold_for);
        let sweep = self.holds.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(LOCK_KEY).await?;
        let row = tx
            .query_one(
                &lock,
                &[&key.connector, &key.credential, &key.endpoint, &pause_ms],
            )
            .await?;
        let paused_ms: i64 = row.try_get(0)?;
        let now_ms: i64 = row.try_get(1)?;
        let mut holding = Holding {
            paused_for: positive_ms(paused_ms),
            ..Holding::default()
        };
        if request.limit > 0 {
            if sweep {
                let statement = tx.prepare_cached(SWEEP).await?;
                tx.execute(
                    &statement,
                    &[&key.connector, &key.credential, &key.endpoint, &now_ms],
                )
                .await?;
            }
            let statement = tx.prepare_cached(HOLD).await?;
            let row = tx
                .query_one(
                    &statement,
                    &[
                        &key.connector,
                        &key.credential,
                        &key.endpoint,
                        &self.holder,
                        &now_ms,
                        &hold,
                        &limit,
                        &request.wanting,
                        &hold_ms,
                    ],
                )
                .await?;
            let held: i32 = row.try_get(0)?;
            let others: i64 = row.try_get(1)?;
            holding.held = u32::try_from(held).unwrap_or(0);
            holding.holders = u32::try_from(others).unwrap_or(u32::MAX).saturating_add(1);
            holding.others_wanting = row.try_get(2)?;
        }
        tx.commit().await?;
        Ok(holding)
    }
}

/// Why one try of a hold failed.
enum Failure {
    Db(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

/// Whole milliseconds of `d`, as the database stores them.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// A number of milliseconds still to go, if any.
fn positive_ms(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

#[async_trait]
impl SharedBudgets for PgBudgets {
    async fn hold(&self, request: &HoldRequest) -> Result<Holding, StoreError> {
        request.key.check()?;
        for (what, n) in [("limit", request.limit), ("hold", request.hold)] {
            if i32::try_from(n).is_err() {
                return Err(StoreError::Invalid(format!(
                    "a rate-limit holding's {what} is at most {}: {n}",
                    i32::MAX
                )));
            }
        }
        // A pause under a millisecond is no pause; one of days is the API's word.
        let pause_ms = request.pause.map_or(0, |p| millis(p).max(1));
        let mut tries = 0;
        loop {
            tries += 1;
            let (class, message) = match self.try_hold(request, pause_ms).await {
                Ok(holding) => return Ok(holding),
                Err(Failure::Db(e)) => (classify(&e), describe(&e)),
                Err(Failure::Pool(e)) => (classify_pool(&e), describe_pool(&e)),
            };
            if class != Class::Retry || tries > RETRIES {
                return Err(StoreError::Storage(format!(
                    "sharing the rate-limit budget of {}/{}: {message}",
                    request.key.connector, request.key.endpoint
                )));
            }
            tracing::debug!(error = %message, "a rate-limit holding ran into another transaction; again");
        }
    }
}
