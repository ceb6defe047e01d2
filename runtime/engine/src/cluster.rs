//! The node among the nodes sharing a store (a cluster): its record, the heartbeat
//! that keeps it live, which workflows it owns, and the sweep that finds the work
//! other nodes left.
//!
//! Owns the node records (catalog documents of kind `node`, one per node id), their
//! reading as live, draining, lost or stopped, the rendezvous hash that gives each
//! workflow one owner among the live nodes (the owner fires its schedules and picks
//! up its runs that no node drives), and drain requests. Correctness never rests on
//! it: the store refuses a second run for a fire, an exclusive start while the
//! workflow is held, and every append of an attempt that lost its lease, so two
//! nodes that disagree about membership for a moment only waste a little work. It
//! must never append to a run's log itself: takeovers and adoptions go through the
//! engine's queue and driver like any other run.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_model::{RunId, StatusKind};

use crate::clock::now_unix_ms;

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// The node's name, for people (its id is unique per process start).
    pub name: String,
    /// Where its API listens, as other nodes and clients reach it.
    pub address: String,
    /// How often the node renews its record.
    pub heartbeat: Duration,
    /// A node whose record was not renewed for this long is lost: its workflows move
    /// to other nodes (its runs move as their leases expire).
    pub node_timeout: Duration,
    /// How often the node looks for runs to take over or pick up, and for
    /// definitions other nodes changed.
    pub sweep: Duration,
    /// Runs the node drives at once (shown in its record).
    pub slots: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            name: String::new(),
            address: String::new(),
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(10),
            sweep: Duration::from_secs(1),
            slots: 8,
        }
    }
}

/// A node as its record in the store says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Unique per process start; the `worker` of the attempts it runs.
    pub id: String,
    /// Its name, for people.
    pub name: String,
    /// Its API's address.
    pub address: String,
    /// The Sluice version it runs.
    pub version: String,
    /// The newest store schema version it knows.
    pub schema_version: i64,
    /// When it started (Unix ms).
    pub started_at_unix_ms: i64,
    /// When it last renewed this record (Unix ms).
    pub heartbeat_at_unix_ms: i64,
    /// It drains: it starts nothing new and leaves once its runs are over.
    pub draining: bool,
    /// It stopped cleanly.
    pub stopped: bool,
    /// Runs it drives at once.
    pub slots: u32,
}

/// What a node is, from its record and the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Heartbeating; owns workflows and picks up runs.
    Live,
    /// Heartbeating, finishing its runs; starts nothing new.
    Draining,
    /// Its heartbeat is older than the node timeout: its runs move as their leases
    /// expire.
    Lost,
    /// It stopped cleanly.
    Stopped,
}

impl NodeState {
    /// The state's name in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
            NodeState::Stopped => "stopped",
        }
    }
}

impl NodeRecord {
    /// The node's state at `now_ms`, lost once silent for `timeout`.
    pub fn state(&self, now_ms: i64, timeout: Duration) -> NodeState {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        if self.stopped {
            NodeState::Stopped
        } else if now_ms.saturating_sub(self.heartbeat_at_unix_ms) > timeout_ms {
            NodeState::Lost
        } else if self.draining {
            NodeState::Draining
        } else {
            NodeState::Live
        }
    }
}

/// A node as listed: its record, its state and the runs it drives.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Its record.
    pub record: NodeRecord,
    /// Its state now.
    pub state: NodeState,
    /// Runs whose current attempt it holds.
    pub runs: Vec<RunId>,
}

/// A stable 64-bit hash (FNV-1a): every node, of any build, computes the same owner.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // FNV-1a's last bytes reach only its low bits: a finalizer (murmur3's fmix64)
    // spreads them, so names that differ at the end go to different owners.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The node owning `workflow` among `owners` (rendezvous hashing: when a node joins
/// or leaves, only the workflows it gains or loses move).
pub(crate) fn owner<'a>(owners: &'a [String], workflow: &str) -> Option<&'a str> {
    owners
        .iter()
        .max_by_key(|id| fnv(&[id.as_bytes(), workflow.as_bytes()]))
        .map(String::as_str)
}

/// This node's view of the cluster, renewed by every sweep.
pub(crate) struct Membership {
    pub settings: ClusterSettings,
    pub record: RwLock<NodeRecord>,
    /// Live nodes that own workflows (not draining), this one included unless it
    /// drains.
    owners: RwLock<Vec<String>>,
    /// Runs in flight that this node does not hold, by workflow: (run, whether an
    /// attempt of it runs). A schedule's overlap decision counts them.
    elsewhere: RwLock<HashMap<String, Vec<(RunId, bool)>>>,
    /// Nodes already reported as knowing a newer store schema.
    newer: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Membership {
    pub(crate) fn new(settings: ClusterSettings, id: String, schema_version: i64) -> Self {
        let now = now_unix_ms();
        let record = NodeRecord {
            id: id.clone(),
            name: if settings.name.is_empty() {
                id.clone()
            } else {
                settings.name.clone()
            },
            address: settings.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version,
            started_at_unix_ms: now,
            heartbeat_at_unix_ms: now,
            draining: false,
            stopped: false,
            slots: u32::try_from(settings.slots).unwrap_or(u32::MAX),
        };
        Membership {
            settings,
            record: RwLock::new(record),
            owners: RwLock::new(vec![id]),
            elsewhere: RwLock::default(),
            newer: std::sync::Mutex::default(),
        }
    }

    /// Whether `node` is newly seen knowing a newer store schema than this node
    /// (reported once per node).
    pub(crate) fn first_seen_newer(&self, record: &NodeRecord) -> bool {
        let known = self.record.read().map_or(0, |r| r.schema_version);
        record.schema_version > known
            && self
                .newer
                .lock()
                .is_ok_and(|mut seen| seen.insert(record.id.clone()))
    }

    /// This node's id.
    pub(crate) fn id(&self) -> String {
        self.record.read().map(|r| r.id.clone()).unwrap_or_default()
    }

    /// Whether this node drains.
    pub(crate) fn draining(&self) -> bool {
        self.record.read().is_ok_and(|r| r.draining)
    }

    /// Whether this node owns `workflow`: it fires its schedules and picks up its
    /// runs that no node drives.
    pub(crate) fn owns(&self, workflow: &str) -> bool {
        if self.draining() {
            return false;
        }
        let me = self.id();
        self.owners
            .read()
            .is_ok_and(|o| owner(&o, workflow).is_none_or(|id| id == me))
    }

    /// The workflow's runs in flight that other nodes hold, as of the last sweep.
    pub(crate) fn elsewhere(&self, workflow: &str) -> Vec<(RunId, bool)> {
        self.elsewhere
            .read()
            .ok()
            .and_then(|m| m.get(workflow).cloned())
            .unwrap_or_default()
    }

    /// Takes in what a sweep read: every node's record and the runs in flight not
    /// held here.
    pub(crate) fn update(&self, records: &[NodeRecord], elsewhere: Vec<(String, RunId, bool)>) {
        let now = now_unix_ms();
        let me = self.id();
        let draining = self.draining();
        let mut owners: Vec<String> = records
            .iter()
            .filter(|r| r.id != me && r.state(now, self.settings.node_timeout) == NodeState::Live)
            .map(|r| r.id.clone())
            .collect();
        if !draining {
            owners.push(me);
        }
        owners.sort();
        if let Ok(mut o) = self.owners.write() {
            *o = owners;
        }
        let mut by_workflow: HashMap<String, Vec<(RunId, bool)>> = HashMap::new();
        for (workflow, run, running) in elsewhere {
            by_workflow
                .entry(workflow)
                .or_default()
                .push((run, running));
        }
        if let Ok(mut e) = self.elsewhere.write() {
            *e = by_workflow;
        }
    }
}

/// The runs of `summaries` each node drives (its id → runs).
pub(crate) fn driven_by(
    summaries: &[sluice_store::log::RunSummary],
) -> HashMap<String, Vec<RunId>> {
    let mut out: HashMap<String, Vec<RunId>> = HashMap::new();
    for s in summaries
        .iter()
        .filter(|s| s.status == StatusKind::Running && !s.worker.is_empty())
    {
        out.entry(s.worker.clone()).or_default().push(s.run_id);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn each_workflow_has_one_owner_and_a_leaving_node_moves_only_its_own() {
        let three = ids(3);
        let two: Vec<String> = three[..2].to_vec();
        let mut counts = HashMap::new();
        for w in 0..3_000 {
            let name = format!("wf-{w}");
            let before = owner(&three, &name).map(str::to_owned);
            let after = owner(&two, &name).map(str::to_owned);
            if before.as_deref() != Some("node-2") {
                assert_eq!(before, after, "{name} moved though its owner stayed");
            }
            *counts.entry(before).or_insert(0) += 1;
        }
        // Spread over every node, roughly evenly.
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c > 800), "{counts:?}");
        // Names that differ only at the end spread too.
        let short: HashSet<&str> = (0..6)
            .filter_map(|i| owner(&three, &format!("s{i}")))
            .collect();
        assert!(short.len() > 1, "s0..s5 all on one node");
        assert_eq!(owner(&[], "wf"), None);
    }

    #[test]
    fn a_silent_node_is_lost_and_a_stopped_one_is_stopped() {
        let record = NodeRecord {
            id: "a".into(),
            name: "a".into(),
            address: String::new(),
            version: String::new(),
            schema_version: 2,
            started_at_unix_ms: 0,
            heartbeat_at_unix_ms: 1_000,
            draining: false,
            stopped: false,
            slots: 8,
        };
        let timeout = Duration::from_secs(10);
        assert_eq!(record.state(11_000, timeout), NodeState::Live);
        assert_eq!(record.state(11_001, timeout), NodeState::Lost);
        let draining = NodeRecord {
            draining: true,
            ..record.clone()
        };
        assert_eq!(draining.state(2_000, timeout), NodeState::Draining);
        let stopped = NodeRecord {
            stopped: true,
            ..record
        };
        assert_eq!(stopped.state(2_000, timeout), NodeState::Stopped);
    }
}
