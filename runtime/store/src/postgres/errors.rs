//! What a PostgreSQL error means for the caller: try again now (a serialization
//! failure, a deadlock, two nodes creating the same row), wait for the database (it
//! went away or is restarting), or give up.
//!
//! Owns that classification and the wording of errors; it never retries anything
//! itself.

use std::error::Error as _;

use tokio_postgres::error::SqlState;

/// What to do about a failed statement or transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Another transaction got in the way: run the transaction again.
    Retry,
    /// The database cannot be reached: wait, then run it again.
    Unavailable,
    /// Anything else: report it.
    Fatal,
}

/// The class of a driver error.
pub(crate) fn classify(e: &tokio_postgres::Error) -> Class {
    if let Some(code) = e.code() {
        return classify_code(code);
    }
    if e.is_closed() {
        return Class::Unavailable;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return Class::Unavailable;
        }
        source = s.source();
    }
    // Errors without a code that are not I/O: the connection's setup (refused,
    // TLS) or a value that did not convert. The first kind is by far the usual one.
    if describe(e).contains("connect") {
        Class::Unavailable
    } else {
        Class::Fatal
    }
}

fn classify_code(code: &SqlState) -> Class {
    if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::UNIQUE_VIOLATION
    {
        Class::Retry
    } else if code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
    {
        Class::Unavailable
    } else {
        Class::Fatal
    }
}

/// The class of a failure to get a pooled connection.
pub(crate) fn classify_pool(e: &deadpool_postgres::PoolError) -> Class {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        deadpool_postgres::PoolError::Closed => Class::Fatal,
        _ => Class::Unavailable,
    }
}

/// A driver error with its causes, on one line (the driver's own message is only
/// its kind, such as "db error").
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !out.contains(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        source = s.source();
    }
    out
}

/// A pool error with its causes, on one line.
pub(crate) fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => describe(other),
    }
}
