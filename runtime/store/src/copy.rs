//! Copying a whole store to another, of any backend (a node's embedded store to
//! PostgreSQL, so its data survives the move to a cluster, or back), and verifying
//! the copy: [`copy`] and [`verify`].
//!
//! Works through the storage contract alone, so it copies between any two backends:
//!
//! - the catalog: every document of every kind ([`crate::Catalog::kinds`]);
//! - the runs: every event of every run with its time, appended in order
//!   ([`crate::RunLog::enqueue_at`], many queued at once so that group commit writes
//!   them together), so run history, listings and summaries are the source's; and
//!   each run's connector log lines and requests;
//! - the hub: every stream's change feed, paged (bounded memory: two pages at a time,
//!   the next read while the last is written), imported as it is
//!   ([`crate::HubBulk::import`]: same kinds, keys, versions and data, in order), and
//!   its incremental cursor; live records and counts follow from the changes;
//! - the registered connectors' components, files beside the store, when the two
//!   stores keep their files in different directories.
//!
//! What the target gives the copy itself: feed positions (a reader of the feed starts
//! again from 0 on the copy) and the records' first and last seen times and refresh
//! generation, which become the copy's time (see [`crate::HubBulk::import`]).
//!
//! The target must be empty: [`copy`] refuses one that holds a document, a run or a
//! hub stream, before writing anything. It then verifies what it wrote ([`verify`]):
//! the same documents; the same runs with the same summaries (last seq, status,
//! times) and events; for every stream the same cursor, live count, number of feed
//! entries and SHA-256 digest of the feed's (kind, key, version, data) in order, and
//! the same live records (number and digest of key, version, content hash and data,
//! each read from the records, not the feed). Neither store may be written during a
//! copy (stop the node first): a source that moved is reported as a mismatch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_model::RunId;

use crate::hub::{Change, ChangeKind, Record, StreamImport};
use crate::log::{Appending, RunFilter, RunSummary, now_unix_ms};
use crate::run_logs::LogFilter;
use crate::{Store, StoreError};

/// Feed entries read (and imported) at once, to start with: the size of a page then
/// follows its bytes, between [`MIN_PAGE`] and [`MAX_PAGE`] entries.
const PAGE: usize = 8_192;
const MIN_PAGE: usize = 64;
const MAX_PAGE: usize = 65_536;
/// A page of more bytes than this halves the next one; of less than a quarter of it,
/// doubles it.
const PAGE_BYTES: usize = 16 << 20;
/// Feed entries looked at per page when reading live records.
const LIVE_PAGE: usize = 16_384;
/// Feed entries read at once when verifying.
const VERIFY_PAGE: usize = 65_536;
/// Run appends queued and not yet acknowledged, at most.
const IN_FLIGHT_APPENDS: usize = 1_024;
/// Where a store keeps registered connectors' components, beside it.
const COMPONENTS_DIR: &str = "components";

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target holds data already; nothing was written.
    #[error("the target store is not empty (it holds {0}): copy only into an empty store")]
    TargetNotEmpty(String),
    /// Reading the source failed.
    #[error("reading the source: {0}")]
    Source(#[source] StoreError),
    /// Writing or reading the target failed.
    #[error("writing the target: {0}")]
    Target(#[source] StoreError),
    /// The copy differs from the source (or the source moved during the copy).
    #[error("the copy differs from the source: {0}")]
    Mismatch(String),
    /// Copying the components beside the store failed.
    #[error("copying connector components: {0}")]
    Files(String),
}

fn source(e: impl Into<StoreError>) -> CopyError {
    CopyError::Source(e.into())
}

fn target(e: impl Into<StoreError>) -> CopyError {
    CopyError::Target(e.into())
}

/// What a copy is doing, for a caller that shows progress.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// The catalog is copied.
    Catalog {
        /// Documents copied.
        documents: usize,
    },
    /// The runs are copied.
    Runs {
        /// Runs copied.
        runs: usize,
        /// Their events.
        events: u64,
    },
    /// A stream is being copied.
    Stream {
        /// The connection.
        connection: &'a str,
        /// The stream.
        stream: &'a str,
        /// Feed entries copied so far.
        changes: u64,
    },
    /// The copy is being verified.
    Verifying,
}

/// What one stream holds, as [`verify`] compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFacts {
    /// The connection.
    pub connection: String,
    /// The stream.
    pub stream: String,
    /// Its incremental cursor.
    pub cursor: Option<String>,
    /// Live records, as the hub counts them.
    pub live: u64,
    /// Live records, as listed one by one.
    pub live_listed: u64,
    /// Entries of the change feed.
    pub changes: u64,
    /// SHA-256 of the feed's (kind, primary key, version, data), in order.
    pub feed_digest: String,
    /// SHA-256 of the live records' (primary key, version, content hash, data), in
    /// feed order.
    pub live_digest: String,
}

/// What [`verify`] found equal on both sides.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// Catalog kinds.
    pub kinds: usize,
    /// Catalog documents.
    pub documents: usize,
    /// Runs.
    pub runs: usize,
    /// Their events.
    pub events: u64,
    /// Every hub stream.
    pub streams: Vec<StreamFacts>,
}

/// What [`copy`] did.
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// What was verified equal on both sides after the copy.
    pub verified: Verified,
    /// Per-run log entries copied.
    pub run_log_entries: u64,
    /// Connector components copied beside the target (0 when both stores keep their
    /// files in one directory).
    pub components: usize,
    /// Time to copy the catalog and the runs.
    pub runs_elapsed: Duration,
    /// Time to copy the hub.
    pub hub_elapsed: Duration,
    /// Time to verify.
    pub verify_elapsed: Duration,
}

impl CopyReport {
    /// Records copied: live records of every stream.
    pub fn live_records(&self) -> u64 {
        self.verified.streams.iter().map(|s| s.live).sum()
    }

    /// Feed entries copied, of every stream.
    pub fn changes(&self) -> u64 {
        self.verified.streams.iter().map(|s| s.changes).sum()
    }
}

/// Copies everything `from` holds into `to`, which must be empty, then verifies the
/// copy (see the module doc). `progress` hears what is being done.
pub async fn copy(
    from: &Store,
    to: &Store,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<CopyReport, CopyError> {
    ensure_empty(to).await?;
    let began = Instant::now();
    let mut report = CopyReport {
        components: copy_components(from.dir(), to.dir())?,
        ..CopyReport::default()
    };
    let documents = copy_catalog(from, to).await?;
    progress(Progress::Catalog { documents });
    report.run_log_entries = copy_runs(from, to, progress).await?;
    report.runs_elapsed = began.elapsed();

    let began = Instant::now();
    let at = now_unix_ms();
    let mut copied = BTreeMap::new();
    for (connection, stream) in from.hub_bulk().streams().await.map_err(source)? {
        let facts = copy_stream(from, to, &connection, &stream, at, progress).await?;
        copied.insert((connection, stream), facts);
    }
    report.hub_elapsed = began.elapsed();

    progress(Progress::Verifying);
    let began = Instant::now();
    report.verified = verify(from, to).await?;
    // What the copy read must be what the source holds now: else it moved meanwhile.
    for s in &report.verified.streams {
        let read = copied.get(&(s.connection.clone(), s.stream.clone()));
        if read.is_none_or(|(changes, digest)| *changes != s.changes || *digest != s.feed_digest)
            && s.changes > 0
        {
            return Err(CopyError::Mismatch(format!(
                "stream `{}` of connection `{}` changed in the source during the copy",
                s.stream, s.connection
            )));
        }
    }
    report.verify_elapsed = began.elapsed();
    Ok(report)
}

/// Refuses a target that holds a catalog document, a run or a hub stream.
async fn ensure_empty(to: &Store) -> Result<(), CopyError> {
    let mut held = Vec::new();
    let mut documents = 0;
    for kind in to.catalog().kinds().await.map_err(target)? {
        documents += to.catalog().list(&kind).await.map_err(target)?.len();
    }
    if documents > 0 {
        held.push(format!("{documents} catalog document(s)"));
    }
    let one = RunFilter {
        limit: 1,
        ..RunFilter::default()
    };
    if !to.log().list(&one).await.map_err(target)?.is_empty() {
        held.push("runs".to_owned());
    }
    let streams = to.hub_bulk().streams().await.map_err(target)?;
    if !streams.is_empty() {
        held.push(format!("{} hub stream(s)", streams.len()));
    }
    if held.is_empty() {
        Ok(())
    } else {
        Err(CopyError::TargetNotEmpty(held.join(", ")))
    }
}

/// Copies every catalog document; returns how many.
async fn copy_catalog(from: &Store, to: &Store) -> Result<usize, CopyError> {
    let mut documents = 0;
    for kind in from.catalog().kinds().await.map_err(source)? {
        for (name, document) in from.catalog().list(&kind).await.map_err(source)? {
            to.catalog()
                .put(&kind, &name, &document)
                .await
                .map_err(target)?;
            documents += 1;
        }
    }
    Ok(documents)
}

/// An append queued on the target, with the seqs it must get.
struct Queued {
    run: RunId,
    seqs: Vec<u64>,
    appending: Appending,
}

impl Queued {
    async fn landed(self) -> Result<(), CopyError> {
        let seqs = self.appending.await.map_err(target)?;
        if seqs != self.seqs {
            return Err(CopyError::Mismatch(format!(
                "run {}'s events landed at seqs {seqs:?}, not {:?}",
                self.run, self.seqs
            )));
        }
        Ok(())
    }
}

/// Copies every run's events (events of one time in one append) and its log entries;
/// returns how many log entries.
async fn copy_runs(
    from: &Store,
    to: &Store,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<u64, CopyError> {
    let runs = from
        .log()
        .list(&RunFilter::default())
        .await
        .map_err(source)?;
    let mut queued: VecDeque<Queued> = VecDeque::new();
    let (mut events, mut entries) = (0u64, 0u64);
    for (n, summary) in runs.iter().enumerate() {
        let run = summary.run_id;
        let read = from.log().read(run).await.map_err(source)?;
        events += read.len() as u64;
        let mut rest = read.as_slice();
        while let Some(first) = rest.first() {
            let same = rest
                .iter()
                .take_while(|e| e.at_unix_ms == first.at_unix_ms)
                .count();
            let (group, after) = rest.split_at(same);
            rest = after;
            let appending = to
                .log()
                .enqueue_at(
                    run,
                    first.at_unix_ms,
                    group.iter().map(|e| e.kind.clone()).collect(),
                )
                .await
                .map_err(target)?;
            queued.push_back(Queued {
                run,
                seqs: group.iter().map(|e| e.seq).collect(),
                appending,
            });
            while queued.len() > IN_FLIGHT_APPENDS {
                if let Some(q) = queued.pop_front() {
                    q.landed().await?;
                }
            }
        }
        let lines = from
            .run_logs()
            .read(run, &LogFilter::default())
            .await
            .map_err(source)?;
        if !lines.is_empty() {
            to.run_logs().append(run, &lines).await.map_err(target)?;
            entries += lines.len() as u64;
        }
        if (n + 1) % 100 == 0 {
            progress(Progress::Runs {
                runs: n + 1,
                events,
            });
        }
    }
    while let Some(q) = queued.pop_front() {
        q.landed().await?;
    }
    progress(Progress::Runs {
        runs: runs.len(),
        events,
    });
    Ok(entries)
}

/// A feed digest being computed.
#[derive(Default)]
struct FeedDigest {
    hash: Sha256,
    changes: u64,
}

fn put(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_be_bytes());
    hash.update(bytes);
}

impl FeedDigest {
    fn add(&mut self, c: &Change) {
        self.hash.update([match c.kind {
            ChangeKind::Created => 1u8,
            ChangeKind::Updated => 2,
            ChangeKind::Deleted => 3,
        }]);
        put(&mut self.hash, c.primary_key.as_bytes());
        self.hash.update(c.version.to_be_bytes());
        match &c.data {
            Some(data) => {
                self.hash.update([1]);
                put(&mut self.hash, data.as_bytes());
            }
            None => self.hash.update([0]),
        }
        self.changes += 1;
    }

    fn finish(self) -> (u64, String) {
        (self.changes, hex(&self.hash.finalize()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The size of the page after one of `bytes` bytes read with `limit`.
fn next_limit(limit: usize, bytes: usize) -> usize {
    if bytes > PAGE_BYTES {
        (limit / 2).max(MIN_PAGE)
    } else if bytes < PAGE_BYTES / 4 {
        (limit * 2).min(MAX_PAGE)
    } else {
        limit
    }
}

/// Copies one stream's feed (reading the next page while the last is written) and
/// cursor; returns the number and digest of the feed entries read.
async fn copy_stream(
    from: &Store,
    to: &Store,
    connection: &str,
    stream: &str,
    at_unix_ms: i64,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<(u64, String), CopyError> {
    let import = |changes: Vec<Change>, cursor: Option<String>| StreamImport {
        connection: connection.to_owned(),
        stream: stream.to_owned(),
        changes,
        cursor,
        at_unix_ms,
    };
    let mut digest = FeedDigest::default();
    let mut limit = PAGE;
    let (mut page, mut after) = from
        .hub()
        .feed(connection, stream, 0, limit)
        .await
        .map_err(source)?;
    while !page.is_empty() {
        let mut bytes = 0;
        for c in &page {
            digest.add(c);
            bytes += c.primary_key.len() + c.data.as_ref().map_or(0, String::len);
        }
        limit = next_limit(limit, bytes / page.len().max(1) * limit);
        let (written, read) = tokio::join!(
            to.hub_bulk().import(import(page, None)),
            from.hub().feed(connection, stream, after, limit)
        );
        written.map_err(target)?;
        (page, after) = read.map_err(source)?;
        progress(Progress::Stream {
            connection,
            stream,
            changes: digest.changes,
        });
    }
    let cursor = from
        .hub()
        .stream_cursor(connection, stream)
        .await
        .map_err(source)?;
    if cursor.is_some() {
        to.hub_bulk()
            .import(import(Vec::new(), cursor))
            .await
            .map_err(target)?;
    }
    Ok(digest.finish())
}

/// Copies the files of `from/components` missing from `to/components` (named by
/// their content's digest, so a file of the same name is the same file); returns how
/// many. Nothing when both are one directory.
fn copy_components(from: &Path, to: &Path) -> Result<usize, CopyError> {
    let (src, dst) = (from.join(COMPONENTS_DIR), to.join(COMPONENTS_DIR));
    let Ok(entries) = std::fs::read_dir(&src) else {
        return Ok(0);
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(from, to) {
        return Ok(0);
    }
    let files =
        |e: std::io::Error, what: &Path| CopyError::Files(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(&dst).map_err(|e| files(e, &dst))?;
    let mut copied = 0;
    for entry in entries {
        let entry = entry.map_err(|e| files(e, &src))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let into = dst.join(entry.file_name());
        if into.exists() {
            continue;
        }
        // Written aside, then renamed: a node never sees half a component.
        let part = dst.join(format!(".{}.part", entry.file_name().to_string_lossy()));
        std::fs::copy(&path, &part).map_err(|e| files(e, &path))?;
        std::fs::rename(&part, &into).map_err(|e| files(e, &into))?;
        copied += 1;
    }
    Ok(copied)
}

/// Checks that `to` holds what `from` holds (see the module doc); returns what was
/// compared. Reads both stores whole, a page at a time.
pub async fn verify(from: &Store, to: &Store) -> Result<Verified, CopyError> {
    let mut verified = Verified::default();
    verify_catalog(from, to, &mut verified).await?;
    verify_runs(from, to, &mut verified).await?;
    let mut streams: BTreeSet<(String, String)> = BTreeSet::new();
    streams.extend(from.hub_bulk().streams().await.map_err(source)?);
    streams.extend(to.hub_bulk().streams().await.map_err(target)?);
    for (connection, stream) in streams {
        let (a, b) = tokio::join!(
            stream_facts(from, &connection, &stream),
            stream_facts(to, &connection, &stream)
        );
        let (a, b) = (a.map_err(source)?, b.map_err(target)?);
        if a != b {
            return Err(CopyError::Mismatch(format!(
                "stream `{stream}` of connection `{connection}`: the source holds {a:?}, \
                 the copy {b:?}"
            )));
        }
        if a.live != a.live_listed {
            return Err(CopyError::Mismatch(format!(
                "stream `{stream}` of connection `{connection}` counts {} live records and \
                 lists {}",
                a.live, a.live_listed
            )));
        }
        // A stream with nothing in it is not worth a line of the report.
        if a.changes > 0 || a.cursor.is_some() {
            verified.streams.push(a);
        }
    }
    Ok(verified)
}

async fn verify_catalog(from: &Store, to: &Store, v: &mut Verified) -> Result<(), CopyError> {
    let kinds = from.catalog().kinds().await.map_err(source)?;
    let theirs = to.catalog().kinds().await.map_err(target)?;
    if kinds != theirs {
        return Err(CopyError::Mismatch(format!(
            "catalog kinds {kinds:?} became {theirs:?}"
        )));
    }
    for kind in &kinds {
        let a = from.catalog().list(kind).await.map_err(source)?;
        let b = to.catalog().list(kind).await.map_err(target)?;
        if a != b {
            return Err(CopyError::Mismatch(format!(
                "the catalog's documents of kind `{kind}` differ"
            )));
        }
        v.documents += a.len();
    }
    v.kinds = kinds.len();
    Ok(())
}

async fn verify_runs(from: &Store, to: &Store, v: &mut Verified) -> Result<(), CopyError> {
    let all = RunFilter::default();
    let by_id = |runs: Vec<RunSummary>| -> BTreeMap<RunId, RunSummary> {
        runs.into_iter().map(|s| (s.run_id, s)).collect()
    };
    let a = by_id(from.log().list(&all).await.map_err(source)?);
    let b = by_id(to.log().list(&all).await.map_err(target)?);
    if a.len() != b.len() {
        return Err(CopyError::Mismatch(format!(
            "the source holds {} runs, the copy {}",
            a.len(),
            b.len()
        )));
    }
    for (run, summary) in &a {
        if b.get(run) != Some(summary) {
            return Err(CopyError::Mismatch(format!(
                "run {run}: the source's summary is {summary:?}, the copy's {:?}",
                b.get(run)
            )));
        }
        let (x, y) = tokio::join!(from.log().read(*run), to.log().read(*run));
        let (x, y) = (x.map_err(source)?, y.map_err(target)?);
        if x != y {
            return Err(CopyError::Mismatch(format!("run {run}'s events differ")));
        }
        v.events += x.len() as u64;
    }
    v.runs = a.len();
    Ok(())
}

/// What `store` holds of one stream: cursor, counts and digests (the feed and the
/// live records read side by side).
pub async fn stream_facts(
    store: &Store,
    connection: &str,
    stream: &str,
) -> Result<StreamFacts, StoreError> {
    let (feed, live, cursor, count) = tokio::join!(
        feed_digest(store, connection, stream),
        live_digest(store, connection, stream),
        store.hub().stream_cursor(connection, stream),
        store.hub().count(connection, stream),
    );
    let ((changes, feed_digest), (live_listed, live_digest)) = (feed?, live?);
    Ok(StreamFacts {
        connection: connection.to_owned(),
        stream: stream.to_owned(),
        cursor: cursor?,
        live: count?,
        live_listed,
        changes,
        feed_digest,
        live_digest,
    })
}

/// The number and digest of the stream's feed entries.
async fn feed_digest(
    store: &Store,
    connection: &str,
    stream: &str,
) -> Result<(u64, String), StoreError> {
    let mut feed = FeedDigest::default();
    let mut after = 0;
    loop {
        let (page, next) = store
            .hub()
            .feed(connection, stream, after, VERIFY_PAGE)
            .await?;
        if page.is_empty() {
            return Ok(feed.finish());
        }
        page.iter().for_each(|c| feed.add(c));
        after = next;
    }
}

/// The number and digest of the stream's live records, as listed.
async fn live_digest(
    store: &Store,
    connection: &str,
    stream: &str,
) -> Result<(u64, String), StoreError> {
    let mut live = Sha256::new();
    let mut listed = 0u64;
    let mut after = 0;
    loop {
        let (records, next) = store
            .hub_bulk()
            .live_records(connection, stream, after, LIVE_PAGE)
            .await?;
        if next == after {
            return Ok((listed, hex(&live.finalize())));
        }
        for r in &records {
            add_record(&mut live, r);
        }
        listed += records.len() as u64;
        after = next;
    }
}

fn add_record(hash: &mut Sha256, r: &Record) {
    put(hash, r.primary_key.as_bytes());
    hash.update(r.version.to_be_bytes());
    hash.update(r.content_hash.to_be_bytes());
    put(hash, r.data.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_follows_its_bytes_within_bounds() {
        assert_eq!(next_limit(8_192, 1 << 20), 16_384);
        assert_eq!(next_limit(MAX_PAGE, 1 << 20), MAX_PAGE);
        assert_eq!(next_limit(16_384, PAGE_BYTES / 2), 16_384);
        assert_eq!(next_limit(16_384, PAGE_BYTES * 2), 8_192);
        assert_eq!(next_limit(MIN_PAGE, PAGE_BYTES * 2), MIN_PAGE);
    }

    #[test]
    fn the_feed_digest_tells_kind_key_version_and_data_apart() {
        let c = |kind, pk: &str, version, data: Option<&str>| Change {
            cursor: 0,
            kind,
            primary_key: pk.into(),
            version,
            data: data.map(str::to_owned),
        };
        let digest = |changes: &[Change]| {
            let mut d = FeedDigest::default();
            changes.iter().for_each(|x| d.add(x));
            d.finish()
        };
        let base = digest(&[c(ChangeKind::Created, "[1]", 1, Some("{}"))]);
        for other in [
            c(ChangeKind::Updated, "[1]", 1, Some("{}")),
            c(ChangeKind::Created, "[2]", 1, Some("{}")),
            c(ChangeKind::Created, "[1]", 2, Some("{}")),
            c(ChangeKind::Created, "[1]", 1, Some("{ }")),
            c(ChangeKind::Created, "[1]", 1, None),
        ] {
            assert_ne!(digest(&[other]), base);
        }
        // Cursors are the store's own: they do not count.
        let mut moved = c(ChangeKind::Created, "[1]", 1, Some("{}"));
        moved.cursor = 99;
        assert_eq!(digest(&[moved]), base);
        assert_eq!(base.0, 1);
    }
}
