//! The kubelet's atomic-writer protocol, step by step, on real files and symlinks.
//!
//! A ConfigMap (or Secret, downward-API, projected) volume is never written in place. The
//! kubelet projects every update with `(*AtomicWriter).Write` from kubernetes
//! `pkg/volume/util/atomic_writer.go`; [`AtomicWriter::write`] mirrors that function and its
//! helpers (`pathsToRemove`, `shouldWritePayload`, `newTimestampDir`, `writePayloadToDir`,
//! `createUserVisibleFiles`, `removeUserVisiblePaths`) as of the v1.30 line (read from
//! v1.30.9). Older releases differ: they created the user-visible links *before* the `..data`
//! swap, and returned early on an unchanged payload (the fix for kubernetes issue 121472 made
//! that path still recreate missing links).
//!
//! On disk, after a write of `{a, conf/x}`:
//!
//! ```text
//! <target>/..2024_05_01_12_34_56.3411785962/a        real files, mode 0644, dir mode 0755
//! <target>/..2024_05_01_12_34_56.3411785962/conf/x
//! <target>/..data -> ..2024_05_01_12_34_56.3411785962    relative target
//! <target>/a      -> ..data/a
//! <target>/conf   -> ..data/conf                          only the top-level name is linked
//! ```
//!
//! `Write`, numbered as in the Go source:
//!
//! 1. validate the payload (relative, no `..` element, not starting with `..`, name and path
//!    length limits) and clean the paths;
//! 2. read the `..data` link: the current timestamped dir (none on the first write);
//! 3. if there is one, walk it: every path in it that is not in the new payload (nor a parent
//!    dir of one) is to be removed later ([`Step::StaleLinksRemoved`]);
//! 4. if no payload file is new or different (bytes only, not modes) and nothing is to be
//!    removed, skip steps 5–9 *and* step 12 (`oldTsDir = ""`), but still run 10 and 11;
//! 5. `os.MkdirTemp(target, "..2006_01_02_15_04_05.")` with the UTC wall clock, then chmod
//!    0755 ([`Step::TimestampDirCreated`]);
//! 6. write every file into it, chmod to the file mode ([`Step::TimestampDirWritten`]);
//! 7. `setPerms` (fsGroup ownership) on the new dir: not modelled, a no-op without fsGroup;
//! 8. `symlink(<new dir name>, "..data_tmp")`: relative ([`Step::DataTmpLinked`]);
//! 9. `rename("..data_tmp", "..data")`: the one atomic switch ([`Step::DataSwapped`]);
//! 10. for each payload path, if `readlink(<top-level name>)` is ENOENT, create
//!     `<name> -> ..data/<name>` ([`Step::VisibleLinksCreated`]);
//! 11. remove each top-level (no `/`) path from step 3 ([`Step::StaleLinksRemoved`]);
//! 12. `RemoveAll` the previous timestamped dir ([`Step::OldDirRemoved`]).
//!
//! Failure handling is mirrored too: a failed symlink in 8 removes the new dir; a failed
//! rename in 9 removes `..data_tmp` and the new dir; a failure in 6 leaves the new dir behind;
//! errors in 11 are collected (every path is tried) and stop the write before 12.
#![allow(dead_code)] // Test support: not every test uses every item.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `dataDirName`: the symlink to the current timestamped dir.
pub const DATA_DIR_NAME: &str = "..data";
/// `newDataDirName`: the symlink renamed over [`DATA_DIR_NAME`].
pub const NEW_DATA_DIR_NAME: &str = "..data_tmp";
/// The mode of projected files: a ConfigMap volume's `defaultMode`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// The mode `newTimestampDir` sets on a new timestamped dir, whatever the umask.
pub const TIMESTAMP_DIR_MODE: u32 = 0o755;

const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;
/// `os.MkdirTemp` gives up after this many name collisions.
const MKDIR_TEMP_TRIES: u32 = 10_000;

/// One step of the kubelet's `Write`, reported to [`AtomicWriter::write_with`] after it is
/// done. Steps 1–4 and 7 change nothing on disk and have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// (5) The new `..YYYY_MM_DD_hh_mm_ss.<random>` dir exists, empty, mode 0755.
    TimestampDirCreated,
    /// (6) Every payload file is in the new dir with its mode. Nothing visible changed yet.
    TimestampDirWritten,
    /// (8) `..data_tmp -> <new dir name>` exists; `..data` still names the old dir.
    DataTmpLinked,
    /// (9) `..data_tmp` was renamed over `..data`: readers now see the new payload.
    DataSwapped,
    /// (10) `<name> -> ..data/<name>` exists for every top-level payload name. Runs even when
    /// the payload is unchanged.
    VisibleLinksCreated,
    /// (11) The top-level links of names no longer in the payload are gone. Runs even when the
    /// payload is unchanged (with nothing to remove).
    StaleLinksRemoved,
    /// (12) The previous timestamped dir is gone. Only when there was one and it was replaced.
    OldDirRemoved,
}

impl Step {
    /// Every step, in the order a full update runs them.
    pub const ALL: [Step; 7] = [
        Step::TimestampDirCreated,
        Step::TimestampDirWritten,
        Step::DataTmpLinked,
        Step::DataSwapped,
        Step::VisibleLinksCreated,
        Step::StaleLinksRemoved,
        Step::OldDirRemoved,
    ];

    /// The step's number in the comments of the Go `Write`.
    pub fn kubelet_step(self) -> u8 {
        match self {
            Step::TimestampDirCreated => 5,
            Step::TimestampDirWritten => 6,
            Step::DataTmpLinked => 8,
            Step::DataSwapped => 9,
            Step::VisibleLinksCreated => 10,
            Step::StaleLinksRemoved => 11,
            Step::OldDirRemoved => 12,
        }
    }
}

/// What one [`AtomicWriter::write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// The timestamped dir `..data` names after the write: the new one, or the current one
    /// when nothing changed.
    pub new_dir: String,
    /// The timestamped dir that was replaced and removed, if any.
    pub old_dir: Option<String>,
    /// Whether a new timestamped dir was published (steps 5–9 ran).
    pub changed: bool,
}

/// Projects payloads into a target dir exactly as the kubelet does. Like the Go type it
/// offers no concurrency guarantees: one writer per target dir.
#[derive(Debug)]
pub struct AtomicWriter {
    target_dir: PathBuf,
    file_mode: u32,
    random: RandomState,
    random_counter: u64,
}

impl AtomicWriter {
    /// A writer for `target_dir`, which must exist (like a volume mount point).
    ///
    /// # Panics
    ///
    /// If `target_dir` does not exist (`NewAtomicWriter` returns that error).
    pub fn new(target_dir: &Path) -> Self {
        if fs::metadata(target_dir).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            panic!(
                "atomic writer target dir {} does not exist",
                target_dir.display()
            );
        }
        AtomicWriter {
            target_dir: target_dir.to_owned(),
            file_mode: DEFAULT_FILE_MODE,
            random: RandomState::new(),
            random_counter: 0,
        }
    }

    /// Projects files with `mode` instead of [`DEFAULT_FILE_MODE`] (a volume's `defaultMode`).
    pub fn with_file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }

    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// The timestamped dir `..data` names now, if any.
    pub fn current_dir(&self) -> io::Result<Option<String>> {
        read_data_link(&self.target_dir)
    }

    /// One whole update, exactly as the kubelet does it. Payload keys are relative paths
    /// (`"a"` or `"conf/a"`); an invalid key is `InvalidInput` and nothing is touched.
    pub fn write(&mut self, payload: &BTreeMap<String, Vec<u8>>) -> io::Result<WriteReport> {
        self.write_with(payload, |_| {})
    }

    /// [`write`](Self::write), calling `between(step)` after each step that ran, so a test can
    /// observe or race the intermediate states. A full update reports all of [`Step::ALL`]; the
    /// first write has no [`Step::OldDirRemoved`]; an unchanged payload reports only
    /// [`Step::VisibleLinksCreated`] and [`Step::StaleLinksRemoved`].
    pub fn write_with(
        &mut self,
        payload: &BTreeMap<String, Vec<u8>>,
        mut between: impl FnMut(Step),
    ) -> io::Result<WriteReport> {
        // (1)
        let payload = validate_payload(payload)?;

        // (2)
        let data_dir_path = self.target_dir.join(DATA_DIR_NAME);
        let current = read_data_link(&self.target_dir)?;
        let mut old_ts_dir = current.clone();
        let old_ts_path = current.as_deref().map(|d| go_join(&self.target_dir, d));

        let mut paths_to_remove = BTreeSet::new();
        let mut should_write = true;
        if let Some(old_ts_path) = &old_ts_path {
            // (3)
            paths_to_remove = stale_paths(&payload, old_ts_path);
            // (4)
            if !should_write_payload(&payload, old_ts_path)? && paths_to_remove.is_empty() {
                // Up to date, but the visible links are still (re)created below; and the
                // current dir must not be removed.
                should_write = false;
                old_ts_dir = None;
            }
        }

        let new_dir = match (should_write, current) {
            (false, Some(current)) => current,
            _ => {
                // (5)
                let ts_dir = self.new_timestamp_dir()?;
                let ts_dir_name = file_name(&ts_dir)?;
                between(Step::TimestampDirCreated);

                // (6)
                write_payload_to_dir(&payload, &ts_dir, self.file_mode)?;
                between(Step::TimestampDirWritten);

                // (7) setPerms: nil for a volume without fsGroup.

                // (8)
                let new_data_dir_path = self.target_dir.join(NEW_DATA_DIR_NAME);
                if let Err(e) = symlink(&ts_dir_name, &new_data_dir_path) {
                    let _ = fs::remove_dir_all(&ts_dir);
                    return Err(e);
                }
                between(Step::DataTmpLinked);

                // (9)
                if let Err(e) = fs::rename(&new_data_dir_path, &data_dir_path) {
                    let _ = fs::remove_file(&new_data_dir_path);
                    let _ = fs::remove_dir_all(&ts_dir);
                    return Err(e);
                }
                between(Step::DataSwapped);
                ts_dir_name
            }
        };

        // (10)
        create_user_visible_files(&payload, &self.target_dir)?;
        between(Step::VisibleLinksCreated);

        // (11)
        remove_user_visible_paths(&paths_to_remove, &self.target_dir)?;
        between(Step::StaleLinksRemoved);

        // (12)
        if let Some(old) = &old_ts_dir {
            remove_all(&go_join(&self.target_dir, old))?;
            between(Step::OldDirRemoved);
        }

        Ok(WriteReport {
            new_dir,
            old_dir: old_ts_dir,
            changed: should_write,
        })
    }

    /// `newTimestampDir`: `os.MkdirTemp(target, "..<UTC stamp>.")` (mode 0700, a decimal
    /// `uint32` appended, retried on a collision), then chmod 0755.
    fn new_timestamp_dir(&mut self) -> io::Result<PathBuf> {
        let prefix = timestamp_dir_prefix(SystemTime::now());
        let mut tries = 0;
        loop {
            let name = format!("{prefix}{}", self.next_random());
            let path = self.target_dir.join(name);
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(TIMESTAMP_DIR_MODE))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    tries += 1;
                    if tries >= MKDIR_TEMP_TRIES {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A random `uint32`, as `os.MkdirTemp` appends (std's per-process random hash keys).
    fn next_random(&mut self) -> u32 {
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.random_counter);
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        self.random_counter += 1;
        hasher.finish() as u32
    }
}

/// The prefix `newTimestampDir` gives `os.MkdirTemp`: Go's
/// `time.Now().UTC().Format("..2006_01_02_15_04_05.")`.
pub fn timestamp_dir_prefix(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

/// Whether `name` has the shape of a timestamped dir: `..YYYY_MM_DD_hh_mm_ss.` and 1–10
/// decimal digits (a `uint32`).
pub fn is_timestamp_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let bytes = rest.as_bytes();
    let stamp_ok = bytes.len() > 20
        && bytes[..19].iter().enumerate().all(|(i, b)| match i {
            4 | 7 | 10 | 13 | 16 => *b == b'_',
            _ => b.is_ascii_digit(),
        })
        && bytes[19] == b'.';
    let suffix = rest.get(20..).unwrap_or_default();
    stamp_ok
        && (1..=10).contains(&suffix.len())
        && suffix.bytes().all(|b| b.is_ascii_digit())
        && suffix
            .parse::<u64>()
            .is_ok_and(|n| n <= u64::from(u32::MAX))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `os.Readlink(target/..data)`: `None` if it does not exist; any other error (say `..data` is
/// not a symlink) is returned.
fn read_data_link(target_dir: &Path) -> io::Result<Option<String>> {
    match fs::read_link(target_dir.join(DATA_DIR_NAME)) {
        Ok(link) => link.into_os_string().into_string().map(Some).map_err(|l| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{DATA_DIR_NAME} -> {l:?} is not UTF-8"),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Go's `filepath.Join(dir, name)` for a link target: never replaces `dir`.
fn go_join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name.trim_start_matches('/'))
}

fn file_name(path: &Path) -> io::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other(format!("bad dir name {}", path.display())))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `validatePayload`: validates every key, returns the payload keyed by cleaned paths.
fn validate_payload(payload: &BTreeMap<String, Vec<u8>>) -> io::Result<BTreeMap<String, &[u8]>> {
    let mut clean = BTreeMap::new();
    for (key, data) in payload {
        validate_path(key)?;
        let cleaned = clean_path(key);
        // Go lets e.g. "./..data" through and would write a file named "..data"; refuse it.
        if cleaned == "." || cleaned.starts_with("..") {
            return Err(invalid(format!(
                "invalid path: {key:?} cleans to {cleaned:?}"
            )));
        }
        clean.insert(cleaned, data.as_slice());
    }
    Ok(clean)
}

/// `validatePath`.
fn validate_path(path: &str) -> io::Result<()> {
    if path.is_empty() {
        return Err(invalid(format!(
            "invalid path: must not be empty: {path:?}"
        )));
    }
    if path.starts_with('/') {
        return Err(invalid(format!(
            "invalid path: must be relative path: {path}"
        )));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(invalid(format!(
            "invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters"
        )));
    }
    for item in path.split('/') {
        if item == ".." {
            return Err(invalid(format!(
                "invalid path: must not contain '..': {path}"
            )));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(invalid(format!(
                "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            )));
        }
    }
    let first = path.split('/').next().unwrap_or_default();
    if first.starts_with("..") && first.len() > 2 {
        return Err(invalid(format!(
            "invalid path: must not start with '..': {path}"
        )));
    }
    Ok(())
}

/// `filepath.Clean` for a validated relative path (no `..` elements).
fn clean_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// `shouldWritePayload`: true if any payload file is missing from the old dir or has other
/// bytes. Modes are not compared. Like Go, only ENOENT counts as missing: another `lstat`
/// error (ENOTDIR when a file became a dir) falls through to a read, which fails.
fn should_write_payload(payload: &BTreeMap<String, &[u8]>, old_ts_dir: &Path) -> io::Result<bool> {
    for (path, data) in payload {
        let full = old_ts_dir.join(path);
        if fs::symlink_metadata(&full).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            return Ok(true);
        }
        if fs::read(&full)? != *data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `pathsToRemove`: every path in the old dir (walked without following links, errors
/// skipped) that is neither a payload path nor a parent dir of one.
fn stale_paths(payload: &BTreeMap<String, &[u8]>, old_ts_dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), &child, out);
            }
            out.insert(child);
        }
    }
    let mut paths = BTreeSet::new();
    walk(old_ts_dir, "", &mut paths);

    let mut new_paths = BTreeSet::new();
    for path in payload.keys() {
        let mut sub = path.as_str();
        loop {
            new_paths.insert(sub);
            match sub.rfind('/') {
                Some(slash) => sub = &sub[..slash],
                None => break,
            }
        }
    }
    paths.retain(|p| !new_paths.contains(p.as_str()));
    paths
}

/// `writePayloadToDir`: parent dirs with `MkdirAll(0777)` (umask applies), each file written
/// with `mode` and then chmod-ed to it.
fn write_payload_to_dir(
    payload: &BTreeMap<String, &[u8]>,
    dir: &Path,
    mode: u32,
) -> io::Result<()> {
    for (path, data) in payload {
        let full = dir.join(path);
        if let Some(base) = full.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777)
                .create(base)?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&full)?;
        file.write_all(data)?;
        drop(file);
        fs::set_permissions(&full, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// `createUserVisibleFiles`: for each payload path, its top-level name is linked to
/// `..data/<name>` if `readlink` says ENOENT. An existing link (wherever it points) or a
/// non-link (EINVAL) is left as it is.
fn create_user_visible_files(
    payload: &BTreeMap<String, &[u8]>,
    target_dir: &Path,
) -> io::Result<()> {
    for path in payload.keys() {
        let link_name = path.split('/').next().unwrap_or(path);
        let visible = target_dir.join(link_name);
        if fs::read_link(&visible).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            symlink(format!("{DATA_DIR_NAME}/{link_name}"), &visible)?;
        }
    }
    Ok(())
}

/// `removeUserVisiblePaths`: `os.Remove` of every top-level (no `/`) path; every one is tried
/// and the last error is returned.
fn remove_user_visible_paths(paths: &BTreeSet<String>, target_dir: &Path) -> io::Result<()> {
    let mut last_err = None;
    for path in paths.iter().filter(|p| !p.contains('/')) {
        if let Err(e) = go_remove(&target_dir.join(path)) {
            last_err = Some(e);
        }
    }
    last_err.map_or(Ok(()), Err)
}

/// Go's `os.Remove`: unlink, else rmdir; the rmdir error wins unless it is ENOTDIR.
fn go_remove(path: &Path) -> io::Result<()> {
    let unlink_err = match fs::remove_file(path) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() != io::ErrorKind::NotADirectory => Err(e),
        Err(_) => Err(unlink_err),
    }
}

/// Go's `os.RemoveAll`: a missing path is not an error.
fn remove_all(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
