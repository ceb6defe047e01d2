//! [`Trigger`]: why a run started.

use std::fmt;

/// Why a run started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Someone asked for it (CLI, API, `sluice run`); also the trigger of runs whose
    /// log does not say.
    #[default]
    Manual,
    /// A cron schedule fired.
    Cron,
    /// An interval schedule fired.
    Interval,
    /// A webhook arrived.
    Webhook,
    /// The run was created to recover work found after a restart.
    Recovery,
}

impl Trigger {
    /// A stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Cron => "cron",
            Trigger::Interval => "interval",
            Trigger::Webhook => "webhook",
            Trigger::Recovery => "recovery",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
