//! Writes staged in memory against sled trees, applied as one durable unit.
//!
//! Owns the write-ahead record that makes a group of writes to several trees atomic
//! without a sled transaction. sled runs every transaction and every batch under one
//! global write lock that each other sled call waits on, and a transactional insert
//! reads the key first; measured on the log's committer, the lock wait and those reads
//! took as long as the writes themselves. Instead, [`Staged`] collects the writes
//! (reading its own writes, then the tree), and [`Staged::apply`]:
//!
//! 0. inserts the writes staged *ahead* ([`StagedTree::insert_ahead`]): bulky values
//!    (hub segments) that nothing reads until a write of the group points at them, so
//!    that they need not be copied into the record as well;
//! 1. inserts the rest of the group as one value into the `write_ahead` tree (one key:
//!    atomic);
//! 2. applies each of those writes with a plain insert or remove;
//! 3. removes the write-ahead record.
//!
//! sled's log is sequential and recovers a prefix of it, so after a crash either the
//! record is gone (and every write before its removal is there), or it is the last
//! thing recovered and none of its group's writes is missing something later: opening
//! ([`recover`]) applies it again (every write is a put or a remove, so that is
//! idempotent). Readers may see a group half applied while [`Staged::apply`] runs,
//! as before a flush they may see writes that a crash would undo; nothing that reads
//! its own acknowledged writes is affected.
//!
//! It must never be used by two writers at once on the same trees: the caller (the
//! log's committer) is the only one.

use std::collections::BTreeMap;

use prost::Message;

use crate::codec::v1;

/// The tree holding at most one write-ahead record per writer.
pub(crate) use crate::sled::layout::WRITE_AHEAD;
use crate::sled::layout::WRITE_AHEAD_KEY;

/// A key's staged value: `None` removes it.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One tree's staged writes.
#[derive(Clone, Default)]
struct TreeWrites {
    /// Applied before the write-ahead record, not part of it.
    ahead: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Part of the write-ahead record.
    group: Writes,
}

/// Writes to a set of trees, staged in memory.
pub(crate) struct Staged<'t> {
    trees: &'t [sled::Tree],
    writes: Vec<TreeWrites>,
}

/// One tree's view of a [`Staged`] group: reads see the group's own writes first.
pub(crate) struct StagedTree<'a> {
    tree: &'a sled::Tree,
    writes: &'a mut TreeWrites,
}

impl StagedTree<'_> {
    /// The key's value as the group would leave it.
    pub(crate) fn get(&self, key: &[u8]) -> sled::Result<Option<Vec<u8>>> {
        if let Some(staged) = self.writes.group.get(key) {
            return Ok(staged.clone());
        }
        if let Some(ahead) = self.writes.ahead.get(key) {
            return Ok(Some(ahead.clone()));
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Stages an insert.
    pub(crate) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.group.insert(key.into(), Some(value.into()));
    }

    /// Stages an insert to be written before the group's record, outside it. Only for
    /// a key no reader looks at until another write of the group makes it reachable:
    /// after a crash before the record, it is an orphan that the next write of the
    /// same key replaces.
    pub(crate) fn insert_ahead(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.ahead.insert(key.into(), value.into());
    }
}

impl<'t> Staged<'t> {
    /// An empty group over `trees`.
    pub(crate) fn new(trees: &'t [sled::Tree]) -> Self {
        Staged {
            trees,
            writes: vec![TreeWrites::default(); trees.len()],
        }
    }

    /// The trees, as given to [`Staged::new`] (reads there miss the staged writes).
    pub(crate) fn trees(&self) -> &'t [sled::Tree] {
        self.trees
    }

    /// Stages an insert into tree `i` (its index in the trees given to
    /// [`Staged::new`]; ignored if there is no such tree).
    pub(crate) fn insert(&mut self, i: usize, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        if let Some(w) = self.writes.get_mut(i) {
            w.group.insert(key.into(), Some(value.into()));
        }
    }

    /// Stages a removal from tree `i`.
    pub(crate) fn remove(&mut self, i: usize, key: impl Into<Vec<u8>>) {
        if let Some(w) = self.writes.get_mut(i) {
            w.group.insert(key.into(), None);
        }
    }

    /// Views of the trees from `first` on, in order.
    pub(crate) fn trees_from(&mut self, first: usize) -> Vec<StagedTree<'_>> {
        self.trees
            .iter()
            .zip(self.writes.iter_mut())
            .skip(first)
            .map(|(tree, writes)| StagedTree { tree, writes })
            .collect()
    }

    /// Makes the group's writes take effect together (see the module doc); `ahead` is
    /// the `write_ahead` tree. Not flushed: the caller flushes.
    pub(crate) fn apply(self, ahead: &sled::Tree) -> sled::Result<()> {
        for (tree, writes) in self.trees.iter().zip(&self.writes) {
            for (key, value) in &writes.ahead {
                tree.insert(key.as_slice(), value.as_slice())?;
            }
        }
        // The record takes the writes (no copy of a value): they are applied from it.
        let mut targets = Vec::new();
        let mut record = v1::StoredWriteGroup::default();
        for (i, (tree, writes)) in self.trees.iter().zip(self.writes).enumerate() {
            if writes.group.is_empty() {
                continue;
            }
            let name = String::from_utf8_lossy(&tree.name()).into_owned();
            for (key, value) in writes.group {
                targets.push(i);
                record.writes.push(v1::StoredWrite {
                    tree: name.clone(),
                    key,
                    value,
                });
            }
        }
        if record.writes.is_empty() {
            return Ok(());
        }
        ahead.insert(WRITE_AHEAD_KEY, record.encode_to_vec())?;
        for (i, write) in targets.into_iter().zip(record.writes) {
            let Some(tree) = self.trees.get(i) else {
                continue;
            };
            match write.value {
                Some(v) => tree.insert(write.key, v)?,
                None => tree.remove(write.key)?,
            };
        }
        ahead.remove(WRITE_AHEAD_KEY)?;
        Ok(())
    }
}

impl Staged<'_> {
    /// Applies a group over a single tree as one sled batch (atomic on its own, no
    /// write-ahead record needed).
    pub(crate) fn apply_to_one_tree(self) -> sled::Result<()> {
        for (tree, writes) in self.trees.iter().zip(self.writes) {
            let mut batch = sled::Batch::default();
            for (key, value) in writes.ahead {
                batch.insert(key, value);
            }
            for (key, value) in writes.group {
                match value {
                    Some(v) => batch.insert(key, v),
                    None => batch.remove(key),
                }
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }
}

/// Errors of [`recover`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoverError {
    #[error("{}", super::open::describe(.0))]
    Storage(#[from] sled::Error),
    #[error("the write-ahead record cannot be read: {0}")]
    Corrupt(String),
}

/// Applies a write-ahead record left by a crash (see the module doc) and removes it;
/// returns how many writes it applied.
pub(crate) fn recover(db: &sled::Db) -> Result<usize, RecoverError> {
    let ahead = db.open_tree(WRITE_AHEAD)?;
    let mut applied = 0;
    for entry in ahead.iter() {
        let (key, raw) = entry?;
        let record = v1::StoredWriteGroup::decode(raw.as_ref())
            .map_err(|e| RecoverError::Corrupt(e.to_string()))?;
        for w in record.writes {
            let tree = db.open_tree(w.tree.as_bytes())?;
            match w.value {
                Some(v) => tree.insert(w.key, v)?,
                None => tree.remove(w.key)?,
            };
            applied += 1;
        }
        ahead.remove(key)?;
    }
    if applied > 0 {
        db.flush()?;
    }
    Ok(applied)
}
