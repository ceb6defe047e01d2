//! Dispatch: the runs this node holds — waiting in the ready queue or being driven —
//! and the ready queue that decides which starts next within the limits.
//!
//! Owns only in-memory bookkeeping, rebuilt from the log on start: the durable queue
//! is the log itself (runs whose status is scheduled or waiting for a retry). It never
//! appends events and never drives a run; the engine does both.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sluice_scheduler::{Aging, Candidate, Limits, OverlapPolicy, ReadyQueue};
use sluice_store::{RunId, RunState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;

/// A run this node holds.
pub(crate) struct Held {
    pub workflow: String,
    pub cancel: CancellationToken,
    pub progress: watch::Sender<Progress>,
    pub candidate: Candidate,
    /// Driven now, rather than waiting in the queue.
    pub driving: bool,
    /// Driven and holding its slot (a run whose work is over gives it back before
    /// its end is durable, see [`Dispatch::free_slot`]).
    pub slot: bool,
    /// The run's state when it was queued, if the queuer had it: the driver uses it
    /// instead of folding the log again, if the log has not moved since.
    pub known: Option<RunState>,
}

/// A run taken from the queue to be driven.
pub(crate) struct Ready {
    pub run: RunId,
    pub cancel: CancellationToken,
    pub progress: watch::Sender<Progress>,
    pub candidate: Candidate,
    pub known: Option<RunState>,
}

pub(crate) struct Dispatch {
    held: Mutex<HashMap<RunId, Held>>,
    /// Held runs by workflow, so a fire finds its workflow's runs without a scan.
    by_workflow: Mutex<HashMap<String, Vec<RunId>>>,
    queue: Mutex<ReadyQueue>,
}

pub(crate) fn run_of(candidate: &Candidate) -> RunId {
    RunId(candidate.id.to_be_bytes())
}

pub(crate) fn id_of(run: RunId) -> u128 {
    u128::from_be_bytes(run.0)
}

/// The group a workflow's runs queue in: runs of one workflow never overlap, unless
/// its policy allows it.
pub(crate) fn overlap_group(overlap: OverlapPolicy, workflow: &str) -> Option<String> {
    (overlap != OverlapPolicy::AllowAll).then(|| workflow.to_owned())
}

impl Dispatch {
    pub(crate) fn new(limits: Limits, aging: Aging) -> Self {
        Dispatch {
            held: Mutex::new(HashMap::new()),
            by_workflow: Mutex::new(HashMap::new()),
            queue: Mutex::new(ReadyQueue::new(limits, aging)),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<RunId, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn by_workflow(&self) -> MutexGuard<'_, HashMap<String, Vec<RunId>>> {
        self.by_workflow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops a run from the workflow index.
    fn unindex(&self, workflow: &str, run: RunId) {
        let mut index = self.by_workflow();
        if let Some(runs) = index.get_mut(workflow) {
            runs.retain(|r| *r != run);
            if runs.is_empty() {
                index.remove(workflow);
            }
        }
    }

    fn queue(&self) -> MutexGuard<'_, ReadyQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a run this node does not hold yet; returns false if it already does.
    pub(crate) fn hold(
        &self,
        workflow: &str,
        candidate: Candidate,
        known: Option<RunState>,
    ) -> bool {
        let run = run_of(&candidate);
        let mut held = self.held();
        if held.contains_key(&run) {
            return false;
        }
        let (tx, _) = watch::channel(Progress::new(run));
        self.queue().push(candidate.clone());
        self.by_workflow()
            .entry(workflow.to_owned())
            .or_default()
            .push(run);
        held.insert(
            run,
            Held {
                workflow: workflow.to_owned(),
                cancel: CancellationToken::new(),
                progress: tx,
                candidate,
                driving: false,
                slot: false,
                known,
            },
        );
        true
    }

    /// Takes every run that may start at `now_ms`; returns them and when to look
    /// again (the next due time of a waiting run, if any is in the future).
    pub(crate) fn take_ready(&self, now_ms: i64) -> (Vec<Ready>, Option<i64>) {
        let mut held = self.held();
        let mut queue = self.queue();
        // Most passes start a few runs; a burst grows it.
        let mut ready = Vec::with_capacity(16);
        while let Some(candidate) = queue.pop_ready(now_ms) {
            let run = run_of(&candidate);
            match held.get_mut(&run) {
                Some(h) => {
                    h.driving = true;
                    h.slot = true;
                    ready.push(Ready {
                        run,
                        cancel: h.cancel.clone(),
                        progress: h.progress.clone(),
                        candidate,
                        known: h.known.take(),
                    });
                }
                // Forgotten while queued (cancelled): give the slot back.
                None => queue.finished(&candidate),
            }
        }
        (ready, queue.next_due_after(now_ms))
    }

    /// A driven run whose work is over gives back its slot, so that the next run can
    /// start while its end is made durable; it stays held (and its overlap group busy)
    /// until [`Dispatch::release`]. Returns whether a slot was given back.
    pub(crate) fn free_slot(&self, candidate: &Candidate) -> bool {
        let mut held = self.held();
        let Some(h) = held.get_mut(&run_of(candidate)).filter(|h| h.slot) else {
            return false;
        };
        h.slot = false;
        self.queue().release_slot(candidate);
        true
    }

    /// Gives back what a driven run still holds: its slot, if [`Dispatch::free_slot`]
    /// did not, and its group.
    fn finish(queue: &mut ReadyQueue, held: Option<&mut Held>, candidate: &Candidate) {
        match held {
            Some(h) if !h.slot => queue.release_group(candidate),
            Some(h) => {
                h.slot = false;
                queue.finished(candidate);
            }
            None => queue.finished(candidate),
        }
    }

    /// A driven run gives back its slot and waits again until `due_ms`.
    pub(crate) fn requeue(&self, candidate: &Candidate, due_ms: i64) {
        let run = run_of(candidate);
        let mut held = self.held();
        let mut queue = self.queue();
        Self::finish(&mut queue, held.get_mut(&run), candidate);
        if let Some(h) = held.get_mut(&run) {
            h.driving = false;
            h.candidate.due_ms = due_ms;
            queue.push(h.candidate.clone());
        }
    }

    /// A driven run gives back its slot and leaves the node.
    pub(crate) fn release(&self, candidate: &Candidate) -> Option<Held> {
        let run = run_of(candidate);
        let mut held = self.held();
        let mut gone = held.remove(&run);
        Self::finish(&mut self.queue(), gone.as_mut(), candidate);
        if let Some(h) = &gone {
            self.unindex(&h.workflow, run);
        }
        gone
    }

    /// Takes a waiting (not driven) run out of the queue and the node.
    pub(crate) fn unqueue(&self, run: RunId) -> Option<Held> {
        let mut held = self.held();
        if held.get(&run).is_none_or(|h| h.driving) {
            return None;
        }
        self.queue().remove(id_of(run));
        let gone = held.remove(&run);
        if let Some(h) = &gone {
            self.unindex(&h.workflow, run);
        }
        gone
    }

    /// The cancellation token of a driven run.
    pub(crate) fn driving(&self, run: RunId) -> Option<CancellationToken> {
        self.held()
            .get(&run)
            .filter(|h| h.driving)
            .map(|h| h.cancel.clone())
    }

    /// Live progress of a held run.
    pub(crate) fn watch(&self, run: RunId) -> Option<watch::Receiver<Progress>> {
        self.held().get(&run).map(|h| h.progress.subscribe())
    }

    /// The workflow's runs held here: (run, whether it is driven).
    pub(crate) fn of_workflow(&self, workflow: &str) -> Vec<(RunId, bool)> {
        let held = self.held();
        let runs = self
            .by_workflow()
            .get(workflow)
            .cloned()
            .unwrap_or_default();
        runs.into_iter()
            .filter_map(|run| held.get(&run).map(|h| (run, h.driving)))
            .collect()
    }

    /// Whether the node holds `run` (waiting or driven).
    pub(crate) fn holds(&self, run: RunId) -> bool {
        self.held().contains_key(&run)
    }

    /// The runs waiting in the queue (not driven).
    pub(crate) fn waiting(&self) -> Vec<RunId> {
        self.held()
            .iter()
            .filter(|(_, h)| !h.driving)
            .map(|(run, _)| *run)
            .collect()
    }

    /// The runs being driven.
    pub(crate) fn driven(&self) -> Vec<RunId> {
        self.held()
            .iter()
            .filter(|(_, h)| h.driving)
            .map(|(run, _)| *run)
            .collect()
    }

    /// Runs waiting and runs driven.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let q = self.queue();
        (q.waiting(), q.running())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn candidate(id: u128, group: &str) -> Candidate {
        Candidate {
            id,
            tenant: "acme".into(),
            connector: "sample".into(),
            priority: 0,
            due_ms: 0,
            group: Some(group.into()),
        }
    }

    fn started(d: &Dispatch) -> Vec<u128> {
        d.take_ready(0).0.iter().map(|r| r.candidate.id).collect()
    }

    /// A run whose work is over frees its slot for another workflow's run at once, but
    /// its own workflow's next run waits until it is released; nothing is given back
    /// twice.
    #[test]
    fn a_freed_slot_goes_to_another_workflow_until_the_run_is_released() {
        let d = Dispatch::new(
            Limits {
                slots: 1,
                ..Limits::default()
            },
            Aging::default(),
        );
        let (first, next, other) = (candidate(1, "wf"), candidate(2, "wf"), candidate(3, "b"));
        for c in [&first, &next, &other] {
            assert!(d.hold(c.group.as_deref().unwrap(), c.clone(), None));
        }
        assert_eq!(started(&d), vec![1]);
        assert!(d.free_slot(&first));
        assert!(!d.free_slot(&first), "a slot is given back once");
        assert_eq!(
            started(&d),
            vec![3],
            "run 2 waits for run 1 of its workflow"
        );
        assert!(d.release(&first).is_some());
        assert_eq!(started(&d), Vec::<u128>::new(), "run 3 holds the one slot");
        d.release(&other);
        assert_eq!(started(&d), vec![2]);
        d.release(&next);
        assert_eq!(d.counts(), (0, 0));
    }
}
