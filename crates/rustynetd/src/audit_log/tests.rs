#![allow(clippy::unwrap_used)]
use super::*;

fn write(log: &mut AuditLog, n: u64) {
    for g in 0..n {
        log.append(
            "control_trusted",
            "dataplane_applied",
            "applied",
            g,
            1_000 + g as i64,
        )
        .unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn broken_line(result: Result<Verified, AuditError>) -> (usize, String) {
    match result {
        Err(AuditError::Broken { line, why, .. }) => (line, why),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[test]
fn appended_entries_chain_from_genesis_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut log = AuditLog::new(&path);
    write(&mut log, 3);
    let entries: Vec<Entry> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries[0].prev, GENESIS);
    assert_eq!(entries[0].seq, 0);
    assert_eq!(entries[1].prev, entries[0].hash);
    assert_eq!(entries[2].prev, entries[1].hash);
    let ok = verify(&chain_files(&path)).unwrap();
    assert_eq!((ok.entries, ok.first_seq, ok.last_seq), (3, 0, 2));
    assert_eq!(ok.last_hash, entries[2].hash);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_reopened_log_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write(&mut AuditLog::new(&path), 2);
    // A new writer (the daemon restarted) picks up seq and hash.
    write(&mut AuditLog::new(&path), 2);
    let ok = verify(&chain_files(&path)).unwrap();
    assert_eq!((ok.entries, ok.last_seq), (4, 3));
}

#[test]
fn a_torn_last_line_is_cut_off_by_the_next_writer_and_named_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write(&mut AuditLog::new(&path), 2);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"seq\":2,\"ti").unwrap();
    let (line, why) = broken_line(verify(&chain_files(&path)));
    assert_eq!(line, 3);
    assert!(why.contains("incomplete"), "{why}");
    write(&mut AuditLog::new(&path), 1);
    let ok = verify(&chain_files(&path)).unwrap();
    assert_eq!((ok.entries, ok.last_seq), (3, 2));
}

#[test]
fn a_tampered_middle_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write(&mut AuditLog::new(&path), 5);
    let mut l = lines(&path);
    l[2] = l[2].replace("\"applied\"", "\"nothing to see\"");
    put(&path, &l);
    let (line, why) = broken_line(verify(&chain_files(&path)));
    assert_eq!(line, 3);
    assert!(why.contains("altered"), "{why}");
}

#[test]
fn a_rehashed_tampered_entry_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write(&mut AuditLog::new(&path), 5);
    let mut l = lines(&path);
    let mut e: Entry = serde_json::from_str(&l[1]).unwrap();
    e.reason = "forged".into();
    e.hash = e.expected_hash();
    l[1] = serde_json::to_string(&e).unwrap();
    put(&path, &l);
    let (line, why) = broken_line(verify(&chain_files(&path)));
    assert_eq!(line, 3, "{why}");
    assert!(why.contains("does not follow"), "{why}");
}

#[test]
fn a_deleted_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write(&mut AuditLog::new(&path), 5);
    let mut l = lines(&path);
    l.remove(2);
    put(&path, &l);
    let (line, why) = broken_line(verify(&chain_files(&path)));
    assert_eq!(line, 3);
    assert!(why.contains("seq 3 does not follow seq 1"), "{why}");
}

#[test]
fn reordered_entries_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write(&mut AuditLog::new(&path), 5);
    let mut l = lines(&path);
    l.swap(3, 4);
    put(&path, &l);
    let (line, _) = broken_line(verify(&chain_files(&path)));
    assert_eq!(line, 4);
}

#[test]
fn a_first_entry_not_from_genesis_and_garbage_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write(&mut AuditLog::new(&path), 3);
    let mut l = lines(&path);
    l.remove(0);
    let mut e: Entry = serde_json::from_str(&l[0]).unwrap();
    e.seq = 0;
    e.hash = e.expected_hash();
    l[0] = serde_json::to_string(&e).unwrap();
    put(&path, &l);
    let (line, why) = broken_line(verify(&chain_files(&path)));
    assert_eq!(line, 1);
    assert!(why.contains("genesis"), "{why}");
    put(&path, &["not json".to_owned()]);
    let (line, why) = broken_line(verify(&chain_files(&path)));
    assert_eq!(line, 1);
    assert!(why.contains("not an audit entry"), "{why}");
}

#[test]
fn a_missing_or_empty_log_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    assert!(matches!(
        verify(&chain_files(&path)),
        Err(AuditError::Missing(_))
    ));
    std::fs::write(&path, "").unwrap();
    assert!(matches!(
        verify(&chain_files(&path)),
        Err(AuditError::Missing(_))
    ));
}

#[test]
fn rotation_bounds_the_files_and_chains_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    // About three entries per file, two rotated files kept.
    let mut log = AuditLog::with_limits(&path, 800, 2);
    write(&mut log, 20);
    let files = chain_files(&path);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(!rotated(&path, 3).exists());
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 800);
    }
    let ok = verify(&files).unwrap();
    assert_eq!(ok.last_seq, 19);
    assert!(ok.first_seq > 0, "the oldest entries rotated away");
    // The current file's first entry chains to the previous file's last.
    let older: Entry = serde_json::from_str(lines(&files[1]).last().unwrap()).unwrap();
    let newer: Entry = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(newer.prev, older.hash);
    // A reopened writer continues across a fresh rotation too.
    write(&mut AuditLog::with_limits(&path, 800, 2), 4);
    assert_eq!(verify(&chain_files(&path)).unwrap().last_seq, 23);
    // Removing a rotated file in the middle breaks the chain at the next one.
    std::fs::remove_file(rotated(&path, 1)).unwrap();
    let result = verify(&chain_files(&path));
    let Err(AuditError::Broken { file, line, .. }) = result else {
        panic!("expected a broken chain, got {result:?}");
    };
    assert_eq!((file, line), (path.clone(), 1));
}

#[test]
fn transitions_are_recorded_with_their_states_and_reason() {
    use rustynet_proto::ipc::DataplaneState;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut log = AuditLog::new(&path);
    log.record(
        &[Transition {
            from_state: DataplaneState::DataplaneApplied,
            to_state: DataplaneState::FailClosed,
            reason: "signed map expired".into(),
            generation: 7,
        }],
        42,
    )
    .unwrap();
    let e: Entry = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(
        (
            e.from_state.as_str(),
            e.to_state.as_str(),
            e.reason.as_str(),
            e.generation,
            e.time
        ),
        (
            "dataplane_applied",
            "fail_closed",
            "signed map expired",
            7,
            42
        )
    );
}
