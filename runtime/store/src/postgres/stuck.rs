//! Sessions stuck on a client that stopped: found and ended while they block others.
//!
//! A node frozen (SIGSTOP, a VM paused) or cut off in the middle of a statement — a
//! COPY of a hub batch waiting for its next row — leaves its server session *active*,
//! waiting on the client, holding the locks of its transaction. The server's
//! `idle_in_transaction_session_timeout` does not apply to an active statement, and
//! TCP keepalive does not fire while the frozen machine's kernel still answers. Every
//! other node's commit for those runs would wait as long as the freeze.
//!
//! So a lock wait of this store that lasts past [`WATCH_AFTER`] looks, every
//! [`WATCH_EVERY`], for the sessions blocking someone in this database that have been
//! waiting on their client for longer than [`STUCK_MS`], and ends them. The stuck
//! node's transaction rolls back (nothing of it was committed, so nothing is lost);
//! thawed, its attempt is fenced like any other late one.
//!
//! It must never end a session that is working: only one waiting on its client for
//! longer than a healthy node ever makes the server wait mid-statement.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::connect::IDLE_IN_TRANSACTION_MS;

/// How long a lock wait lasts before the watch starts.
pub(crate) const WATCH_AFTER: Duration = Duration::from_secs(2);

/// How often a lasting lock wait looks for stuck sessions.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How long a session waits on its client mid-statement before it counts as stuck:
/// the same bound the server keeps for a session idle inside a transaction.
pub(crate) const STUCK_MS: u64 = IDLE_IN_TRANSACTION_MS;

/// Ends the sessions of this database that block another session and have waited on
/// their client, inside a statement, for longer than `STUCK_MS`.
const END_STUCK_BLOCKERS: &str = "\
    SELECT blocker.pid, pg_terminate_backend(blocker.pid) \
    FROM pg_stat_activity waiter \
    CROSS JOIN LATERAL unnest(pg_blocking_pids(waiter.pid)) AS b(pid) \
    JOIN pg_stat_activity blocker ON blocker.pid = b.pid \
    WHERE waiter.datname = current_database() \
      AND waiter.wait_event_type = 'Lock' \
      AND blocker.state = 'active' \
      AND blocker.wait_event_type = 'Client' \
      AND blocker.wait_event IN ('ClientRead', 'ClientWrite') \
      AND blocker.state_change < now() - make_interval(secs => $1::float8 / 1000)";

/// `work` (a statement that may wait on row locks), watched: while it waits past
/// [`WATCH_AFTER`], stuck sessions blocking this database are ended.
pub(crate) async fn watched<F: Future>(pool: &Pool, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    let start = tokio::time::Instant::now() + WATCH_AFTER;
    let mut ticks = tokio::time::interval_at(start, WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => {
                // Its own task: `work` keeps being polled while the watch waits for a
                // connection.
                let pool = pool.clone();
                tokio::spawn(async move { end_stuck_blockers(&pool).await });
            }
        }
    }
}

/// Ends the stuck sessions blocking others; logs what it ended.
async fn end_stuck_blockers(pool: &Pool) {
    let client = match tokio::time::timeout(WATCH_EVERY, pool.get()).await {
        Ok(Ok(client)) => client,
        // The pool is busy or the database away: the next tick tries again.
        _ => return,
    };
    let stuck_ms = STUCK_MS as f64;
    match client.query(END_STUCK_BLOCKERS, &[&stuck_ms]).await {
        Ok(rows) => {
            for row in rows {
                let pid: i32 = row.get(0);
                tracing::warn!(
                    pid,
                    waited_ms = STUCK_MS,
                    "ended a database session stuck on its client while holding locks \
                     others wait for (a node frozen or cut off mid-statement)"
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "looking for stuck sessions failed"),
    }
}
