//! The embedded store under faults, with real `sluice` processes and real sled files:
//! it is never left unopenable and never opens missing what it held.
//!
//! - `sled_kills_aimed_at_store_open_…`: on a store with completed runs, `sluice run`
//!   is started again and again and SIGKILLed while it opens the store — three times
//!   in four the moment sled's snapshot file (`snap.<lsn>.generating`, written at
//!   every open that finds the log grown) appears, else at a random moment of the
//!   measured open time. Such a kill lands in sled's fsync of the file, after its one
//!   write; two of three files so left are cut (empty, or half) to what a kill during
//!   the write or a power cut leaves, which sled 0.34 took for its newest snapshot and
//!   refused to open past forever. After each kill a clone of the store as the kill
//!   left it opens and holds every completed run and record, and the next process
//!   faces the leftover itself. At least [`KILLS`] kills, of which at least
//!   [`IN_WINDOW`] must leave an unfinished snapshot, so the test cannot pass without
//!   testing that moment.
//! - `sled_damage_to_a_stopped_store_…`: a stopped store with completed runs (half
//!   its log past sled's last snapshot, as in a node that ran a while), cloned per
//!   trial, gets 16 flipped bytes at a random place of a random file (`db`, `conf`,
//!   `snap.*`, `high-water`, `blobs/*`) or a file cut at a random length. Then a
//!   `sluice` process starts on one clone and the store is opened and read whole on
//!   another: each trial either opens holding every run (summary and events), every
//!   catalog document and every stream (cursor, counts, digests of feed and live
//!   records) as before, or the node refuses to start with an error that says the
//!   store is damaged or rolled back. Anything else fails the test, naming the file,
//!   offset and damage of each such trial, after a table of verdicts per kind of file
//!   and damage. `SLUICE_FAULT_TRIALS` sets the number of trials (40);
//!   `SLUICE_FAULT_WITHOUT_MARK=1` removes the store's high-water mark from each
//!   damaged clone, to see the silent rollbacks of sled alone fail the test.
//!
//! Random choices come from a seed that is printed; `SLUICE_FAULT_SEED` replays them.
//! (The store is made anew, with other run ids and times, so a replayed damage
//! usually, not always, comes to the same verdict.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test"
)]

#[allow(
    dead_code,
    reason = "shared with the crash tests; these tests need only part of it"
)]
mod crash_support;
mod store_faults_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crash_support::{Backend, TestStore, sluice_run};
use sluice_store::RunId;
use sluice_store::log::StatusKind;
use sluice_store::sled::durable::MARK_FILE;
use sluice_testkit::process::stderr;
use store_faults_support::{
    BLOBS, BaseStore, Holdings, Opened, SHOP, TINY, TINY_RECORDS, check_base, clone_store,
    holdings, make_base_store, names_damage, open_within, output_or_hang, seed, store_files,
    unfinished_snapshots,
};

/// The tests take the machine one at a time: the kills aim at moments of a
/// millisecond or two.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Longest a `sluice` process or an open of the store may take before the test calls
/// it hung (generous: a debug build on a busy machine).
const PATIENCE: Duration = Duration::from_secs(120);

/// Kills at store open, at least.
const KILLS: usize = 50;
/// Kills that must land while sled's snapshot file was unfinished, at least.
const IN_WINDOW: usize = 10;
/// Processes started at most before the test gives up reaching [`KILLS`].
const MAX_TRIES: usize = 400;
/// One try in this many kills at a random moment of the open time instead of at
/// the sight of the snapshot file.
const TIMED_EVERY: u32 = 4;

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// When a try's kill is due.
#[derive(Clone, Copy, Debug)]
enum Aim {
    /// As soon as an unfinished snapshot appears (none: the process runs to its end).
    AtSnapshot,
    /// This long after the process started (unless it ended first).
    After(Duration),
}

/// What one `sluice run` under an aimed kill came to.
struct Try {
    /// The process was killed (else it ended by itself, with this output).
    output: Option<Output>,
    /// When a snapshot file this process wrote was first seen unfinished, from its
    /// start.
    seen: Option<Duration>,
    /// The unfinished snapshot (name, bytes) this process left behind, killed.
    left: Option<(String, u64)>,
}

/// Starts `sluice run --workflow tiny` on the base store and kills it as `aim` says,
/// watching the store's directory all the while (no sleeping: the snapshot file
/// lives for about a millisecond).
fn aimed_try(base: &BaseStore, data: &Path, aim: Aim) -> Try {
    // A leftover of an earlier kill is the new process's to remove: only a snapshot
    // file seen after the directory had none is this process's.
    let mut fresh = unfinished_snapshots(data).is_empty();
    let started = Instant::now();
    let mut child = sluice_run(&base.definitions, &base.store, &["--workflow", TINY])
        .spawn()
        .expect("start sluice");
    let mut seen = None;
    loop {
        if child.try_wait().expect("poll sluice").is_some() {
            let output = child.wait_with_output().expect("sluice's output");
            return Try {
                output: Some(output),
                seen,
                left: None,
            };
        }
        let unfinished = unfinished_snapshots(data);
        if unfinished.is_empty() {
            fresh = true;
        } else if fresh && seen.is_none() {
            seen = Some(started.elapsed());
        }
        let due = match aim {
            Aim::AtSnapshot => seen.is_some(),
            Aim::After(delay) => started.elapsed() >= delay,
        };
        if due {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "sluice run of one tiny workflow did not end within {PATIENCE:?}"
        );
    }
    child.kill().expect("SIGKILL sluice");
    child.wait().expect("reap sluice");
    let left = fresh
        .then(|| unfinished_snapshots(data).into_iter().next())
        .flatten();
    Try {
        output: None,
        seen,
        left,
    }
}

/// Opens a clone of the store in `data` as it is (the original stays as the kill left
/// it, for the next process to face) and checks it holds the base store's runs and
/// records unchanged, every `tiny` run that completed before still completed, and at
/// most one `tiny` run in flight; adds the newly completed ones to `completed`.
fn check_after_kill(
    data: &Path,
    scratch: &Path,
    base: &Holdings,
    completed: &mut BTreeSet<RunId>,
    what: &str,
) {
    clone_store(data, scratch, None);
    let now = match open_within(scratch, PATIENCE, async |store| holdings(store).await) {
        Opened::Read(Ok(now)) => now,
        Opened::Read(Err(e)) => panic!("{what}: the store opened, but reading it failed: {e}"),
        Opened::Refused(e) => panic!("{what}: the store no longer opens: {e}"),
        Opened::Panicked(e) => panic!("{what}: opening the store panicked: {e}"),
        Opened::Hung => panic!("{what}: opening the store did not end within {PATIENCE:?}"),
    };
    std::fs::remove_dir_all(scratch).expect("remove the clone");
    for (id, run) in base.runs.iter().filter(|(_, r)| r.summary.workflow != TINY) {
        assert_eq!(now.runs.get(id), Some(run), "{what}: run {id} changed");
    }
    for (key, facts) in base.streams.iter().filter(|(k, _)| k.0 == SHOP) {
        assert_eq!(now.streams.get(key), Some(facts), "{what}: stream {key:?}");
    }
    let tiny = &now.streams[&(TINY.to_owned(), "users".to_owned())];
    assert_eq!(
        (tiny.live, tiny.live_listed),
        (TINY_RECORDS, TINY_RECORDS),
        "{what}: {tiny:?}"
    );
    let mut in_flight = 0;
    for (id, run) in now.runs.iter().filter(|(_, r)| r.summary.workflow == TINY) {
        if run.summary.status == StatusKind::Completed {
            assert_eq!(run.records, TINY_RECORDS, "{what}: run {id}");
            completed.insert(*id);
        } else {
            assert!(
                !completed.contains(id),
                "{what}: run {id} had completed, is {:?}",
                run.summary.status
            );
            in_flight += 1;
        }
    }
    for id in completed.iter() {
        assert!(
            now.runs.contains_key(id),
            "{what}: completed run {id} is gone"
        );
    }
    assert!(in_flight <= 1, "{what}: {in_flight} tiny runs in flight");
}

/// The tiny run's process, ended by itself, succeeded and reported it completed.
fn assert_completed(output: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("\"status\":\"completed\""),
        "{what}: sluice run failed: {stdout}\n{}",
        stderr(output)
    );
}

#[test]
fn sled_kills_aimed_at_store_open_never_leave_a_store_that_will_not_open() {
    let _one = one_at_a_time();
    let began = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed("kills at store open"));
    let root = tempfile::tempdir().expect("tempdir");
    let base = make_base_store(root.path());
    let data = root.path().join("store");
    let scratch = root.path().join("check");
    let mut completed = BTreeSet::new();
    clone_store(&data, &scratch, None);
    let reference = match open_within(&scratch, PATIENCE, async |s| holdings(s).await) {
        Opened::Read(Ok(h)) => h,
        other => panic!("the base store does not read back: {other:?}"),
    };
    std::fs::remove_dir_all(&scratch).expect("remove the clone");
    check_base(&reference, &base.runs);
    let made = began.elapsed();

    // How long after its start a process writes the snapshot: the span timed kills
    // aim at. Each of these runs grows the log, so the next open snapshots again.
    let mut open_time = Duration::ZERO;
    for i in 0..3 {
        let t = aimed_try(&base, &data, Aim::After(PATIENCE));
        assert_completed(t.output.as_ref().expect("ran to its end"), "calibration");
        let seen = t.seen.unwrap_or_else(|| {
            panic!("calibration run {i}: sled wrote no snapshot at open (none seen)")
        });
        open_time = open_time.max(seen);
    }
    eprintln!("a snapshot file appears {open_time:.1?} after a process starts, at most");

    let (mut tries, mut kills, mut ended) = (0, 0, 0);
    // Kills that left an unfinished snapshot: try, file, bytes, bytes after the cut.
    let mut landed: Vec<(usize, String, u64, u64)> = Vec::new();
    let mut timed = 0;
    while kills < KILLS {
        assert!(
            tries < MAX_TRIES,
            "{tries} processes started, only {kills} killed"
        );
        tries += 1;
        let aim = if rng.u32(0..TIMED_EVERY) == 0 {
            let max = u64::try_from(open_time.as_micros() * 3 / 2).expect("a short time");
            Aim::After(Duration::from_micros(rng.u64(0..=max)))
        } else {
            Aim::AtSnapshot
        };
        let what = format!("try {tries} ({aim:?})");
        let t = aimed_try(&base, &data, aim);
        if let Some(output) = &t.output {
            // Ended before its kill was due: it opened the store (with whatever
            // the last kill left) and completed its run.
            assert_completed(output, &what);
            ended += 1;
        } else {
            kills += 1;
            timed += usize::from(matches!(aim, Aim::After(_)));
            if let Some((name, bytes)) = &t.left {
                // A kill lands in sled's fsync of the snapshot, after its one write
                // of a kilobyte or two: the file is whole, only not renamed. Two of
                // three such files are cut — empty, or half — to what a kill during
                // the write (or a power cut before the fsync) leaves, which sled
                // 0.34 refuses to open past; the next process faces the file.
                let cut = match landed.len() % 3 {
                    0 => *bytes,
                    1 => 0,
                    _ => bytes / 2,
                };
                if cut != *bytes {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(data.join(name))
                        .expect("open the unfinished snapshot");
                    file.set_len(cut).expect("cut the unfinished snapshot");
                }
                landed.push((tries, name.clone(), *bytes, cut));
            }
        }
        check_after_kill(&data, &scratch, &reference, &mut completed, &what);
    }
    let out = output_or_hang(
        sluice_run(&base.definitions, &base.store, &["--workflow", TINY]),
        PATIENCE,
    )
    .expect("the last sluice run ends");
    assert_completed(&out, "the last run");
    check_after_kill(&data, &scratch, &reference, &mut completed, "the end");
    assert!(
        unfinished_snapshots(&data).is_empty(),
        "an unfinished snapshot is left after a clean run: {:?}",
        unfinished_snapshots(&data)
    );
    let empty = landed.iter().filter(|l| l.2 == 0).count();
    let cut = landed.iter().filter(|l| l.3 < l.2).count();
    eprintln!(
        "{tries} processes: {kills} killed ({timed} at a random moment of the first \
         {:.1?}), {ended} ended by themselves; {} kills left an unfinished snapshot \
         ({empty} of them empty; {cut} cut shorter by the test): {landed:?}; {} tiny \
         runs completed; store made in {made:.1?}, {:.1?} in all",
        open_time * 3 / 2,
        landed.len(),
        completed.len(),
        began.elapsed()
    );
    assert!(
        landed.len() >= IN_WINDOW,
        "only {} of {kills} kills landed while a snapshot was unfinished (want {IN_WINDOW})",
        landed.len()
    );
}

/// Trials of damage, each on a fresh clone of the stopped store; `SLUICE_FAULT_TRIALS`
/// asks for more (or fewer).
const TRIALS: usize = 40;

/// `SLUICE_FAULT_WITHOUT_MARK=1`: the damaged clones lose the store's high-water
/// mark file too, so the store opens as sled alone would (a store without the file
/// is vouched for only from then on) — to see that this test fails on the silent
/// rollbacks sled makes of damage in its log.
fn without_mark() -> bool {
    std::env::var_os("SLUICE_FAULT_WITHOUT_MARK").is_some()
}

fn trials() -> usize {
    std::env::var("SLUICE_FAULT_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(TRIALS)
}
/// Bytes flipped by one damage.
const FLIPPED: u64 = 16;

/// What is done to a file.
#[derive(Clone, Debug)]
enum Harm {
    /// 16 bytes from `at` XORed with these (each not 0).
    Flip { at: u64, xor: Vec<u8> },
    /// Cut to `len` bytes.
    Truncate { len: u64 },
}

/// One trial's damage: a file of the store (relative to it), its size, and the harm.
#[derive(Clone, Debug)]
struct Damage {
    file: PathBuf,
    size: u64,
    harm: Harm,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.harm {
            Harm::Flip { at, xor } => write!(
                f,
                "{} ({} bytes): {} bytes flipped at {at}",
                self.file.display(),
                self.size,
                xor.len()
            ),
            Harm::Truncate { len } => write!(
                f,
                "{} ({} bytes): cut to {len}",
                self.file.display(),
                self.size
            ),
        }
    }
}

/// The kind of store file `rel` is, as the summary groups them.
fn file_kind(rel: &Path) -> &'static str {
    let name = rel.to_string_lossy();
    if rel.starts_with(BLOBS) {
        "blobs/*"
    } else if name.starts_with("snap.") {
        "snap.*"
    } else {
        match name.as_ref() {
            "db" => "db",
            "conf" => "conf",
            "high-water" => "high-water",
            _ => "other",
        }
    }
}

/// Picks the damage of a trial: a kind of file (`db` three times as likely as the
/// others, as it holds the log), a file of that kind, and a flip or a cut, at a place
/// uniform over the file.
fn pick_damage(rng: &mut fastrand::Rng, files: &[(PathBuf, u64)]) -> Damage {
    let mut kinds: Vec<&str> = files
        .iter()
        .map(|(f, _)| file_kind(f))
        .filter(|k| *k != "other")
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut weighted: Vec<&str> = kinds.clone();
    if kinds.contains(&"db") {
        weighted.extend(["db", "db"]);
    }
    let kind = weighted[rng.usize(..weighted.len())];
    let of_kind: Vec<_> = files.iter().filter(|(f, _)| file_kind(f) == kind).collect();
    let (file, size) = of_kind[rng.usize(..of_kind.len())].clone();
    let harm = if rng.bool() && size > 0 {
        let n = FLIPPED.min(size);
        Harm::Flip {
            at: rng.u64(0..=size - n),
            xor: (0..n).map(|_| rng.u8(1..=255)).collect(),
        }
    } else {
        Harm::Truncate {
            len: rng.u64(0..size.max(1)),
        }
    };
    Damage { file, size, harm }
}

/// Does `damage` to the clone in `dir`.
fn apply(dir: &Path, damage: &Damage) {
    use std::os::unix::fs::FileExt;
    let path = dir.join(&damage.file);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the file to damage");
    match &damage.harm {
        Harm::Flip { at, xor } => {
            let mut bytes = vec![0; xor.len()];
            file.read_exact_at(&mut bytes, *at).expect("read the bytes");
            for (b, x) in bytes.iter_mut().zip(xor) {
                *b ^= x;
            }
            file.write_all_at(&bytes, *at).expect("flip the bytes");
        }
        Harm::Truncate { len } => file.set_len(*len).expect("cut the file"),
    }
    file.sync_all().expect("sync the damaged file");
}

/// How a damaged store fared.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// It opened holding everything as before (the `sluice` process started too).
    Intact,
    /// It was refused, both by the process and by an open (or the read after it),
    /// naming the damage: the refusal's gist.
    Refused(String),
    /// A node started on it, and reading what it held then failed naming the damage:
    /// not served wrong, but not refused at start either.
    Late(String),
    /// It opened with something missing or different, or the process started where
    /// the open refused: the damage went unreported.
    Silent(String),
    /// It was refused or failed without saying the store is damaged, or panicked,
    /// or hung.
    Unexplained(String),
}

impl Verdict {
    /// The verdicts, in the summary's order.
    const LABELS: [&str; 5] = [
        "intact",
        "refused",
        "FOUND LATE",
        "SILENT LOSS",
        "UNEXPLAINED",
    ];

    fn column(&self) -> usize {
        match self {
            Verdict::Intact => 0,
            Verdict::Refused(_) => 1,
            Verdict::Late(_) => 2,
            Verdict::Silent(_) => 3,
            Verdict::Unexplained(_) => 4,
        }
    }

    fn label(&self) -> &'static str {
        Self::LABELS[self.column()]
    }

    /// What the verdict says beyond its label.
    fn detail(&self) -> Option<&str> {
        match self {
            Verdict::Intact => None,
            Verdict::Refused(why)
            | Verdict::Late(why)
            | Verdict::Silent(why)
            | Verdict::Unexplained(why) => Some(why),
        }
    }

    fn passes(&self) -> bool {
        matches!(self, Verdict::Intact | Verdict::Refused(_))
    }
}

/// The gist of a process's error output: where it panicked and why, else the first
/// line that names the damage, else its last line.
fn gist(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let line = if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        lines[i..lines.len().min(i + 2)].join(" ")
    } else {
        lines
            .iter()
            .find(|l| names_damage(l))
            .or_else(|| lines.iter().rev().find(|l| !l.trim().is_empty()))
            .map_or_else(String::new, |l| (*l).to_owned())
    };
    line.chars().take(300).collect()
}

/// One trial: the damage done to two clones of `golden`; a `sluice run` of no
/// workflow (`--resume-only`: a node starting) on one, an open and full read of the
/// other, compared with `before`.
fn trial(golden: &Path, work: &Path, empty: &Path, before: &Holdings, damage: &Damage) -> Verdict {
    let (a, b) = (work.join("process"), work.join("open"));
    clone_store(golden, &a, Some(&damage.file));
    apply(&a, damage);
    if without_mark() {
        let _ = std::fs::remove_file(a.join(MARK_FILE));
    }
    clone_store(&a, &b, Some(&damage.file));

    let node = TestStore::create(Backend::Sled, a.clone());
    let process = output_or_hang(sluice_run(empty, &node, &["--resume-only"]), PATIENCE);
    let opened = open_within(&b, PATIENCE, async |s| holdings(s).await);
    std::fs::remove_dir_all(work).expect("remove the trial's clones");

    // `Some(refusal)` when the node refused to start, naming the damage.
    let refusal = match &process {
        None => return Verdict::Unexplained(format!("sluice hung past {PATIENCE:?}")),
        Some(out) if out.status.success() => None,
        Some(out) if names_damage(&stderr(out)) => Some(gist(&stderr(out))),
        Some(out) => {
            return Verdict::Unexplained(format!(
                "sluice failed ({}) without naming damage: {}",
                out.status,
                gist(&stderr(out))
            ));
        }
    };
    match (opened, refusal) {
        (Opened::Read(Ok(now)), refusal) => {
            let lost = before.differences(&now);
            match (lost.is_empty(), refusal) {
                (true, None) => Verdict::Intact,
                (false, _) => Verdict::Silent(lost.join("; ")),
                (true, Some(refusal)) => Verdict::Unexplained(format!(
                    "sluice refused ({refusal}) a store that opens intact"
                )),
            }
        }
        // The node refused by name what the store cannot give back whole.
        (Opened::Read(Err(_)) | Opened::Refused(_), Some(refusal)) => Verdict::Refused(refusal),
        (Opened::Read(Err(e)), None) if names_damage(&e) => {
            Verdict::Late(format!("a node started; reading the store then fails: {e}"))
        }
        (Opened::Read(Err(e)), None) => Verdict::Silent(format!(
            "a node started; reading the store then fails without naming damage: {e}"
        )),
        (Opened::Refused(e), None) => Verdict::Silent(format!(
            "a node started where an open is refused ({})",
            gist(&e)
        )),
        (Opened::Panicked(e), _) => Verdict::Unexplained(format!("opening panicked: {e}")),
        (Opened::Hung, _) => Verdict::Unexplained(format!("opening hung past {PATIENCE:?}")),
    }
}

#[test]
fn sled_damage_to_a_stopped_store_is_refused_by_name_or_harmless_never_silent() {
    let _one = one_at_a_time();
    let began = Instant::now();
    let seed = seed("damage to a stopped store");
    let mut rng = fastrand::Rng::with_seed(seed);
    let root = tempfile::tempdir().expect("tempdir");
    let base = make_base_store(root.path());
    let golden = root.path().join("store");
    let empty = root.path().join("empty.json");
    std::fs::write(&empty, r#"{"connections": [], "workflows": []}"#).expect("write");
    let reference = root.path().join("reference");
    clone_store(&golden, &reference, None);
    let before = match open_within(&reference, PATIENCE, async |s| holdings(s).await) {
        Opened::Read(Ok(h)) => h,
        other => panic!("the stopped store does not read back: {other:?}"),
    };
    check_base(&before, &base.runs);
    let files: Vec<_> = store_files(&golden)
        .into_iter()
        .filter(|(f, _)| file_kind(f) != "other")
        .collect();
    eprintln!(
        "store made in {:.1?}: {} files ({} blobs), db {} bytes",
        began.elapsed(),
        files.len(),
        files.iter().filter(|(f, _)| f.starts_with(BLOBS)).count(),
        files
            .iter()
            .find(|(f, _)| f == Path::new("db"))
            .map_or(0, |f| f.1)
    );

    let mut results: Vec<(Damage, Verdict, Duration)> = Vec::new();
    let trials = trials();
    for i in 0..trials {
        let damage = pick_damage(&mut rng, &files);
        let t = Instant::now();
        let verdict = trial(
            &golden,
            &root.path().join("trial"),
            &empty,
            &before,
            &damage,
        );
        let took = t.elapsed();
        eprintln!(
            "trial {i:>2}: {:<11} {damage} ({took:.1?}){}",
            verdict.label(),
            verdict
                .detail()
                .map(|why| format!("\n    {}", why.chars().take(400).collect::<String>()))
                .unwrap_or_default()
        );
        results.push((damage, verdict, took));
    }

    // The summary: per kind of file and harm, how many trials came to each verdict.
    let mut table: std::collections::BTreeMap<(&str, &str), [usize; 5]> = Default::default();
    for (damage, verdict, _) in &results {
        let harm = match damage.harm {
            Harm::Flip { .. } => "flip",
            Harm::Truncate { .. } => "cut",
        };
        table.entry((file_kind(&damage.file), harm)).or_default()[verdict.column()] += 1;
    }
    let mut header = format!("{:<12}{:<6}", "file", "harm");
    for label in Verdict::LABELS {
        header.push_str(&format!("{label:>13}"));
    }
    eprintln!("{header}");
    for ((kind, harm), n) in &table {
        let mut line = format!("{kind:<12}{harm:<6}");
        for count in n {
            line.push_str(&format!("{count:>13}"));
        }
        eprintln!("{line}");
    }
    let slowest = results.iter().map(|r| r.2).max().unwrap_or_default();
    eprintln!(
        "{trials} trials in {:.1?} (slowest {slowest:.1?}), seed {seed}",
        began.elapsed()
    );
    let bad: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, (_, v, _))| !v.passes())
        .map(|(i, (d, v, _))| format!("trial {i}: {} — {d}: {v:?}", v.label()))
        .collect();
    assert!(
        bad.is_empty(),
        "damage not refused by name (seed {seed}, replay with SLUICE_FAULT_SEED={seed}):\n{}",
        bad.join("\n")
    );
}
