//! Tests of the atomic writer: the on-disk state after each kubelet step.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::atomic_writer::{
    AtomicWriter, DATA_DIR_NAME, NEW_DATA_DIR_NAME, Step, is_timestamp_dir_name,
    timestamp_dir_prefix,
};

fn payload(items: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

/// Every entry of `dir`, hidden ones included.
fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn link(dir: &Path, name: &str) -> String {
    fs::read_link(dir.join(name))
        .unwrap()
        .into_os_string()
        .into_string()
        .unwrap()
}

fn ts_dirs(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| is_timestamp_dir_name(n))
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// What a reader opening `target/name` gets: the bytes, or the error kind.
fn read(dir: &Path, name: &str) -> Result<Vec<u8>, io::ErrorKind> {
    fs::read(dir.join(name)).map_err(|e| e.kind())
}

#[test]
fn first_write_step_by_step() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_owned();
    let mut writer = AtomicWriter::new(&t);
    let mut seen = Vec::new();
    let report = writer
        .write_with(&payload(&[("a", b"A1"), ("b", b"B1")]), |step| {
            seen.push(step);
            let ts = ts_dirs(&t);
            assert_eq!(ts.len(), 1, "{step:?}: one timestamped dir");
            let ts = ts[0].clone();
            let ts_path = t.join(&ts);
            match step {
                Step::TimestampDirCreated => {
                    assert_eq!(entries(&t), set(&[&ts]));
                    assert!(entries(&ts_path).is_empty());
                    assert_eq!(mode(&ts_path), 0o755);
                }
                Step::TimestampDirWritten => {
                    assert_eq!(entries(&t), set(&[&ts]));
                    assert_eq!(entries(&ts_path), set(&["a", "b"]));
                    assert_eq!(fs::read(ts_path.join("a")).unwrap(), b"A1");
                    assert_eq!(mode(&ts_path.join("a")), 0o644);
                }
                Step::DataTmpLinked => {
                    assert_eq!(entries(&t), set(&[&ts, NEW_DATA_DIR_NAME]));
                    assert_eq!(link(&t, NEW_DATA_DIR_NAME), ts, "relative link to the dir");
                }
                Step::DataSwapped => {
                    assert_eq!(entries(&t), set(&[&ts, DATA_DIR_NAME]));
                    assert_eq!(link(&t, DATA_DIR_NAME), ts);
                    assert_eq!(
                        read(&t, "a"),
                        Err(io::ErrorKind::NotFound),
                        "not linked yet"
                    );
                }
                Step::VisibleLinksCreated | Step::StaleLinksRemoved => {
                    assert_eq!(entries(&t), set(&[&ts, DATA_DIR_NAME, "a", "b"]));
                    assert_eq!(link(&t, "a"), "..data/a");
                    assert_eq!(link(&t, "b"), "..data/b");
                    assert_eq!(read(&t, "a"), Ok(b"A1".to_vec()));
                    assert_eq!(read(&t, "b"), Ok(b"B1".to_vec()));
                }
                Step::OldDirRemoved => panic!("no old dir on the first write"),
            }
        })
        .unwrap();
    assert_eq!(seen, Step::ALL[..6]);
    assert!(report.changed);
    assert_eq!(report.old_dir, None);
    assert!(is_timestamp_dir_name(&report.new_dir), "{}", report.new_dir);
    assert_eq!(ts_dirs(&t), std::slice::from_ref(&report.new_dir));
    assert_eq!(writer.current_dir().unwrap(), Some(report.new_dir));
}

#[test]
fn update_step_by_step_removes_stale_link_and_old_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_owned();
    let mut writer = AtomicWriter::new(&t);
    let first = writer
        .write(&payload(&[("a", b"A1"), ("b", b"B1")]))
        .unwrap();
    let old = first.new_dir.clone();

    let mut seen = Vec::new();
    let mut new_dir = String::new();
    let report = writer
        .write_with(&payload(&[("a", b"A2"), ("c", b"C2")]), |step| {
            seen.push(step);
            if new_dir.is_empty() {
                new_dir = ts_dirs(&t).into_iter().find(|d| *d != old).unwrap();
            }
            let new = new_dir.as_str();
            match step {
                Step::TimestampDirCreated | Step::TimestampDirWritten => {
                    assert_eq!(entries(&t), set(&[&old, new, DATA_DIR_NAME, "a", "b"]));
                    assert_eq!(link(&t, DATA_DIR_NAME), old);
                    assert_eq!(read(&t, "a"), Ok(b"A1".to_vec()));
                    assert_eq!(read(&t, "b"), Ok(b"B1".to_vec()));
                    assert_eq!(read(&t, "c"), Err(io::ErrorKind::NotFound));
                    if step == Step::TimestampDirWritten {
                        assert_eq!(entries(&t.join(new)), set(&["a", "c"]));
                    }
                }
                Step::DataTmpLinked => {
                    let want = set(&[&old, new, DATA_DIR_NAME, NEW_DATA_DIR_NAME, "a", "b"]);
                    assert_eq!(entries(&t), want);
                    assert_eq!(link(&t, NEW_DATA_DIR_NAME), new);
                    assert_eq!(link(&t, DATA_DIR_NAME), old);
                    assert_eq!(read(&t, "a"), Ok(b"A1".to_vec()));
                }
                Step::DataSwapped => {
                    assert_eq!(entries(&t), set(&[&old, new, DATA_DIR_NAME, "a", "b"]));
                    assert_eq!(link(&t, DATA_DIR_NAME), new);
                    assert_eq!(read(&t, "a"), Ok(b"A2".to_vec()));
                    // b's link is still there but dangles; c is not linked yet.
                    assert_eq!(link(&t, "b"), "..data/b");
                    assert_eq!(read(&t, "b"), Err(io::ErrorKind::NotFound));
                    assert_eq!(read(&t, "c"), Err(io::ErrorKind::NotFound));
                }
                Step::VisibleLinksCreated => {
                    assert_eq!(entries(&t), set(&[&old, new, DATA_DIR_NAME, "a", "b", "c"]));
                    assert_eq!(link(&t, "c"), "..data/c");
                    assert_eq!(read(&t, "c"), Ok(b"C2".to_vec()));
                }
                Step::StaleLinksRemoved => {
                    assert_eq!(entries(&t), set(&[&old, new, DATA_DIR_NAME, "a", "c"]));
                    assert_eq!(entries(&t.join(&old)), set(&["a", "b"]), "old dir intact");
                }
                Step::OldDirRemoved => {
                    assert_eq!(entries(&t), set(&[new, DATA_DIR_NAME, "a", "c"]));
                }
            }
        })
        .unwrap();
    assert_eq!(seen, Step::ALL);
    assert!(report.changed);
    assert_eq!(report.old_dir.as_deref(), Some(old.as_str()));
    assert_eq!(report.new_dir, new_dir);
    assert_eq!(read(&t, "a"), Ok(b"A2".to_vec()));
}

#[test]
fn unchanged_payload_is_not_written_but_visible_links_are_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut writer = AtomicWriter::new(t);
    let p = payload(&[("a", b"A"), ("b", b"B")]);
    let first = writer.write(&p).unwrap();
    let before = entries(t);

    let mut seen = Vec::new();
    let again = writer.write_with(&p, |s| seen.push(s)).unwrap();
    assert!(!again.changed);
    assert_eq!(again.new_dir, first.new_dir);
    assert_eq!(again.old_dir, None);
    assert_eq!(seen, [Step::VisibleLinksCreated, Step::StaleLinksRemoved]);
    assert_eq!(entries(t), before);
    assert_eq!(link(t, DATA_DIR_NAME), first.new_dir);

    // kubernetes#121472: a lost visible link comes back without a new timestamped dir.
    fs::remove_file(t.join("a")).unwrap();
    let restored = writer.write(&p).unwrap();
    assert!(!restored.changed);
    assert_eq!(entries(t), before);
    assert_eq!(read(t, "a"), Ok(b"A".to_vec()));
}

#[test]
fn dropping_a_key_is_a_change_even_with_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut writer = AtomicWriter::new(t);
    let first = writer.write(&payload(&[("a", b"A"), ("b", b"B")])).unwrap();
    let second = writer.write(&payload(&[("a", b"A")])).unwrap();
    assert!(second.changed);
    assert_eq!(second.old_dir, Some(first.new_dir));
    assert_eq!(entries(t), set(&[&second.new_dir, DATA_DIR_NAME, "a"]));
}

#[test]
fn a_mode_change_alone_is_not_a_change() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = payload(&[("a", b"A")]);
    let first = AtomicWriter::new(t).write(&p).unwrap();
    let second = AtomicWriter::new(t)
        .with_file_mode(0o600)
        .write(&p)
        .unwrap();
    assert!(!second.changed, "shouldWriteFile compares bytes only");
    assert_eq!(mode(&t.join(&first.new_dir).join("a")), 0o644);
}

#[test]
fn file_mode_is_exact_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let report = AtomicWriter::new(t)
        .with_file_mode(0o666)
        .write(&payload(&[("a", b"A")]))
        .unwrap();
    assert_eq!(mode(&t.join(&report.new_dir).join("a")), 0o666);
    assert_eq!(mode(&t.join(&report.new_dir)), 0o755);
}

#[test]
fn nested_paths_link_only_the_top_level_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut writer = AtomicWriter::new(t);
    let first = writer
        .write(&payload(&[
            ("conf/x.toml", b"X"),
            ("conf/deep/y.toml", b"Y"),
            ("top", b"T"),
        ]))
        .unwrap();
    assert_eq!(
        entries(t),
        set(&[&first.new_dir, DATA_DIR_NAME, "conf", "top"])
    );
    assert_eq!(link(t, "conf"), "..data/conf");
    assert_eq!(read(t, "conf/x.toml"), Ok(b"X".to_vec()));
    assert_eq!(read(t, "conf/deep/y.toml"), Ok(b"Y".to_vec()));

    // Dropping a nested file leaves the top-level link alone.
    let second = writer
        .write(&payload(&[("conf/x.toml", b"X"), ("top", b"T")]))
        .unwrap();
    assert!(second.changed);
    assert_eq!(
        entries(t),
        set(&[&second.new_dir, DATA_DIR_NAME, "conf", "top"])
    );
    assert_eq!(read(t, "conf/deep/y.toml"), Err(io::ErrorKind::NotFound));
    assert_eq!(entries(&t.join("conf")), set(&["x.toml"]));

    // Dropping the whole dir removes its link.
    let third = writer.write(&payload(&[("top", b"T")])).unwrap();
    assert_eq!(entries(t), set(&[&third.new_dir, DATA_DIR_NAME, "top"]));
}

#[test]
fn paths_are_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let report = AtomicWriter::new(t)
        .write(&payload(&[("./a", b"A"), ("d//e/", b"E")]))
        .unwrap();
    assert_eq!(entries(t), set(&[&report.new_dir, DATA_DIR_NAME, "a", "d"]));
    assert_eq!(read(t, "d/e"), Ok(b"E".to_vec()));
}

#[test]
fn invalid_paths_are_rejected_before_anything_is_touched() {
    let long = "x".repeat(256);
    let too_long = "a/".repeat(2049);
    for bad in [
        "",
        "/abs",
        "a/../b",
        "..",
        "..foo",
        "..data",
        "./..data",
        ".",
        long.as_str(),
        too_long.as_str(),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let err = AtomicWriter::new(tmp.path())
            .write(&payload(&[("ok", b"1"), (bad, b"2")]))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        assert!(entries(tmp.path()).is_empty(), "{bad:?}");
    }
    // A name of exactly 255 bytes, and ".." inside a name, are fine.
    let tmp = tempfile::tempdir().unwrap();
    let ok = "y".repeat(255);
    AtomicWriter::new(tmp.path())
        .write(&payload(&[(ok.as_str(), b"1"), ("a..b", b"2")]))
        .unwrap();
}

#[test]
fn a_leftover_data_tmp_link_fails_the_update_and_cleans_the_new_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut writer = AtomicWriter::new(t);
    let first = writer.write(&payload(&[("a", b"A1")])).unwrap();
    symlink("nowhere", t.join(NEW_DATA_DIR_NAME)).unwrap();
    let mut seen = Vec::new();
    let err = writer
        .write_with(&payload(&[("a", b"A2")]), |s| seen.push(s))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(seen, [Step::TimestampDirCreated, Step::TimestampDirWritten]);
    assert_eq!(
        entries(t),
        set(&[&first.new_dir, DATA_DIR_NAME, NEW_DATA_DIR_NAME, "a"])
    );
    assert_eq!(read(t, "a"), Ok(b"A1".to_vec()));
}

#[test]
fn an_existing_visible_link_is_kept_wherever_it_points() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::write(t.join("elsewhere"), b"E").unwrap();
    symlink("elsewhere", t.join("a")).unwrap();
    AtomicWriter::new(t)
        .write(&payload(&[("a", b"A")]))
        .unwrap();
    assert_eq!(link(t, "a"), "elsewhere");
    assert_eq!(read(t, "a"), Ok(b"E".to_vec()));
}

#[test]
#[should_panic(expected = "does not exist")]
fn the_target_dir_must_exist() {
    let tmp = tempfile::tempdir().unwrap();
    AtomicWriter::new(&tmp.path().join("missing"));
}

#[test]
fn timestamp_names_match_the_kubelet_format() {
    for (secs, want) in [
        (0, "..1970_01_01_00_00_00."),
        (951_782_400, "..2000_02_29_00_00_00."),
        (1_234_567_890, "..2009_02_13_23_31_30."),
        (1_709_251_199, "..2024_02_29_23_59_59."),
        (4_102_444_800, "..2100_01_01_00_00_00."),
    ] {
        let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(999);
        assert_eq!(timestamp_dir_prefix(at), want);
    }
    assert!(is_timestamp_dir_name("..2024_02_29_23_59_59.0"));
    assert!(is_timestamp_dir_name("..2024_02_29_23_59_59.4294967295"));
    assert!(!is_timestamp_dir_name("..2024_02_29_23_59_59.4294967296"));
    assert!(!is_timestamp_dir_name("..2024_02_29_23_59_59."));
    assert!(!is_timestamp_dir_name("..data"));
    assert!(!is_timestamp_dir_name("..2024_02_29_23_59_59.1é"));

    // Many writes in one second: distinct names, each a fresh MkdirTemp.
    let tmp = tempfile::tempdir().unwrap();
    let mut writer = AtomicWriter::new(tmp.path());
    let mut names = BTreeSet::new();
    for i in 0..50u32 {
        let report = writer.write(&payload(&[("a", &i.to_le_bytes())])).unwrap();
        assert!(is_timestamp_dir_name(&report.new_dir), "{}", report.new_dir);
        assert!(names.insert(report.new_dir));
    }
    assert_eq!(ts_dirs(tmp.path()).len(), 1);
}

/// A version's bytes: one repeated byte, a length that says which byte. A torn read can't
/// pass `check_whole`.
fn version(v: u8) -> Vec<u8> {
    vec![v; 64 * 1024 + usize::from(v)]
}

fn check_whole(bytes: &[u8]) -> u8 {
    let v = bytes[0];
    assert_eq!(bytes, version(v), "torn read");
    v
}

#[test]
fn a_reader_sees_whole_old_or_whole_new_bytes_at_every_step() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_owned();
    let mut writer = AtomicWriter::new(&t);
    writer
        .write(&payload(&[
            ("plugin.wasm", &version(1)),
            ("gone", &version(1)),
        ]))
        .unwrap();
    let mut seen = Vec::new();
    writer
        .write_with(
            &payload(&[("plugin.wasm", &version(2)), ("added", &version(2))]),
            |step| {
                let before_swap = step < Step::DataSwapped;
                let want = if before_swap { version(1) } else { version(2) };
                assert_eq!(read(&t, "plugin.wasm"), Ok(want), "{step:?}");
                // A dropped key reads old bytes until the swap, then is gone.
                match read(&t, "gone") {
                    Ok(b) => assert!(before_swap && b == version(1), "{step:?}"),
                    Err(e) => assert!(!before_swap && e == io::ErrorKind::NotFound, "{step:?}"),
                }
                // An added key is absent until its link exists, then new.
                match read(&t, "added") {
                    Ok(b) => assert!(step >= Step::VisibleLinksCreated && b == version(2)),
                    Err(e) => {
                        assert!(step < Step::VisibleLinksCreated, "{step:?}");
                        assert_eq!(e, io::ErrorKind::NotFound);
                    }
                }
                seen.push(step);
            },
        )
        .unwrap();
    assert_eq!(seen, Step::ALL);
}

#[test]
fn a_file_opened_before_the_old_dir_goes_still_reads_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_owned();
    let mut writer = AtomicWriter::new(&t);
    writer.write(&payload(&[("p", &version(1))])).unwrap();
    let mut open: Option<fs::File> = None;
    writer
        .write_with(&payload(&[("p", &version(2))]), |step| {
            if step == Step::DataTmpLinked {
                open = Some(fs::File::open(t.join("p")).unwrap());
            }
        })
        .unwrap();
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut open.unwrap(), &mut bytes).unwrap();
    assert_eq!(check_whole(&bytes), 1);
}

#[test]
fn concurrent_readers_never_see_torn_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let t: PathBuf = tmp.path().to_owned();
    let mut writer = AtomicWriter::new(&t);
    writer.write(&payload(&[("p", &version(0))])).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut whole, mut not_found) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                match fs::read(t.join("p")) {
                    Ok(bytes) => {
                        check_whole(&bytes);
                        whole += 1;
                    }
                    // Resolving `..data` to the old dir just before step 12 removes it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => not_found += 1,
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            (whole, not_found)
        })
    };
    for i in 1..=200u32 {
        writer
            .write(&payload(&[("p", &version((i % 251) as u8))]))
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (whole, not_found) = reader.join().unwrap();
    assert!(whole > 0);
    assert!(not_found <= whole, "{not_found} not found vs {whole} whole");
    assert_eq!(ts_dirs(&t).len(), 1);
}
