//! Reads through the pool, patient with a database that is briefly away.
//!
//! Owns the read-side retry policy: a read that fails because the database cannot be
//! reached (restarting, a dropped connection) or because another transaction got in
//! the way is tried again for up to [`READ_PATIENCE`]; anything else is reported at
//! once. It never writes.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use super::errors::{Class, classify, classify_pool, describe, describe_pool};

/// How long a read waits for the database before it gives up.
pub(crate) const READ_PATIENCE: Duration = Duration::from_secs(30);

/// Runs reads on pooled connections.
#[derive(Clone)]
pub(crate) struct Reader {
    pool: Pool,
    /// The store's URL without its password.
    url: String,
}

impl Reader {
    pub(crate) fn new(pool: Pool, url: String) -> Self {
        Reader { pool, url }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The first of a read's attempts.
    pub(crate) fn attempts(&self) -> Attempts<'_> {
        Attempts {
            reader: self,
            began: Instant::now(),
            failures: 0,
        }
    }
}

/// Why one attempt of a read failed.
pub(crate) enum Failure {
    Db(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
}

/// The attempts of one read, and the patience left for it.
pub(crate) struct Attempts<'r> {
    reader: &'r Reader,
    began: Instant,
    failures: u32,
}

impl Attempts<'_> {
    /// After a failed attempt: waits and returns `Ok` if the read should be tried
    /// again, or the failure described with the store's URL.
    pub(crate) async fn again(&mut self, failure: Failure) -> Result<(), String> {
        let (class, message) = match &failure {
            Failure::Db(e) => (classify(e), describe(e)),
            Failure::Pool(e) => (classify_pool(e), describe_pool(e)),
        };
        self.failures += 1;
        if class == Class::Fatal || self.began.elapsed() >= READ_PATIENCE {
            return Err(format!("{message} (store {})", self.reader.url));
        }
        tracing::debug!(store = %self.reader.url, error = %message, "read failed; trying again");
        tokio::time::sleep(Duration::from_millis(
            (25u64 << self.failures.min(6)).min(1_000),
        ))
        .await;
        Ok(())
    }
}

/// `read!(reader, client, future)`: evaluates `future` (which may use `client`, a
/// pooled connection) until it succeeds, again while the database is away (see
/// [`Attempts::again`]); gives `Result<T, String>`.
macro_rules! read {
    ($reader:expr, $client:ident, $body:expr) => {{
        let reader: &$crate::postgres::pool::Reader = &$reader;
        let mut attempts = reader.attempts();
        loop {
            let failure = match reader.pool().get().await {
                Ok(pooled) => {
                    let $client: &deadpool_postgres::Client = &pooled;
                    match $body.await {
                        Ok(value) => break Ok(value),
                        Err(e) => $crate::postgres::pool::Failure::Db(e),
                    }
                }
                Err(e) => $crate::postgres::pool::Failure::Pool(e),
            };
            if let Err(message) = attempts.again(failure).await {
                break Err(message);
            }
        }
    }};
}
pub(crate) use read;
