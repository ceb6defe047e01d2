//! Structured logging through `wasi:logging`. The host attaches each line to the
//! run and stream being read, so a message needs no run ids of its own.

use crate::__private::source_world::wasi::logging::logging::{Level, log};

/// Log `message` at `level` with a `context` (a short tag such as `"http"`).
pub fn emit(level: Level, context: &str, message: &str) {
    log(level, context, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    emit(Level::Debug, "", message);
}

/// Log at info level.
pub fn info(message: &str) {
    emit(Level::Info, "", message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    emit(Level::Warn, "", message);
}

/// Log at error level.
pub fn error(message: &str) {
    emit(Level::Error, "", message);
}

pub use crate::__private::source_world::wasi::logging::logging::Level as LogLevel;
