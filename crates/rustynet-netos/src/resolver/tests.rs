use std::os::unix::fs::symlink;

use super::*;

const ORIGINAL: &str = "# from dhcp\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp.example\noptions edns0\n";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip")
}

fn magic() -> (Vec<IpAddr>, Vec<String>) {
    (
        vec![ip("100.100.100.100")],
        vec!["mesh.rustynet.internal".to_owned()],
    )
}

fn setup(original: Option<&str>) -> (tempfile::TempDir, ResolvConf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("resolv.conf");
    if let Some(text) = original {
        fs::write(&path, text).expect("write original");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let conf =
        ResolvConf::new(&path).with_resolved_upstream(dir.path().join("resolved-upstream.conf"));
    (dir, conf)
}

#[test]
fn parses_nameservers_and_search() {
    let parsed = parse_resolv_conf(
        "; comment\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\nnameserver bogus\n\
         domain old.example\nsearch a.example b.example # trailing\n nameserver 192.0.2.2\n",
    );
    assert_eq!(parsed.nameservers, vec![ip("192.0.2.1"), ip("192.0.2.2")]);
    assert_eq!(parsed.search, vec!["a.example", "b.example"]);
}

#[test]
fn take_over_and_restore_round_trip_byte_for_byte() {
    let (_dir, mut conf) = setup(Some(ORIGINAL));
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");

    let live = fs::read_to_string(conf.path()).expect("read live");
    assert!(live.starts_with(MARKER), "{live}");
    assert_eq!(parse_resolv_conf(&live).nameservers, ns);
    // Our suffix first, then the original search domains and options.
    assert_eq!(
        parse_resolv_conf(&live).search,
        vec!["mesh.rustynet.internal", "corp.example"]
    );
    assert_eq!(parse_resolv_conf(&live).options, vec!["options edns0"]);
    assert_eq!(
        fs::read_to_string(conf.backup_path()).expect("backup"),
        ORIGINAL
    );
    let mode = fs::metadata(conf.backup_path())
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640, "backup keeps the original's mode");
    assert!(conf.is_taken_over().expect("check"));
    assert_eq!(
        conf.original_nameservers().expect("originals"),
        vec![ip("192.0.2.53"), ip("2001:db8::53")]
    );

    // Taking over again must not back up our own file over the original.
    conf.take_over(&[ip("100.100.100.101")], &[])
        .expect("take over again");
    assert_eq!(
        fs::read_to_string(conf.backup_path()).expect("backup"),
        ORIGINAL
    );

    assert!(conf.restore().expect("restore"));
    assert_eq!(fs::read_to_string(conf.path()).expect("read"), ORIGINAL);
    assert_eq!(
        fs::metadata(conf.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert!(!conf.backup_path().exists());
    assert!(
        !conf.restore().expect("restore twice"),
        "nothing left to restore"
    );
}

#[test]
fn symlinked_resolv_conf_is_replaced_not_written_through() {
    let (dir, mut conf) = setup(None);
    let target = dir.path().join("stub-resolv.conf");
    fs::write(&target, "nameserver 127.0.0.53\n").expect("write target");
    symlink(&target, conf.path()).expect("symlink");
    fs::write(
        dir.path().join("resolved-upstream.conf"),
        "nameserver 198.51.100.53\n",
    )
    .expect("upstream");

    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    assert!(
        fs::symlink_metadata(conf.path()).expect("meta").is_file(),
        "live file is ours, not the link"
    );
    assert_eq!(
        fs::read_to_string(&target).expect("target"),
        "nameserver 127.0.0.53\n",
        "target untouched"
    );
    assert_eq!(
        fs::read_link(conf.backup_path()).expect("backup is a link"),
        target
    );
    // Only resolved's stub in the original: the real upstreams are reported.
    assert_eq!(
        conf.original_nameservers().expect("originals"),
        vec![ip("198.51.100.53")]
    );

    assert!(conf.restore().expect("restore"));
    assert_eq!(fs::read_link(conf.path()).expect("link restored"), target);
}

#[test]
fn absent_original_is_restored_as_absent() {
    let (_dir, mut conf) = setup(None);
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    assert!(conf.path().exists());
    assert_eq!(
        conf.original_nameservers().expect("originals"),
        Vec::<IpAddr>::new()
    );
    assert!(conf.restore().expect("restore"));
    assert!(!conf.path().exists() && !conf.backup_path().exists());
}

#[test]
fn repair_after_crash_restores_original() {
    let (_dir, mut conf) = setup(Some(ORIGINAL));
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    // A new daemon process starts with a fresh configurator.
    let mut fresh = ResolvConf::new(conf.path());
    assert_eq!(
        fresh.repair_stale().expect("repair"),
        RepairOutcome::Restored
    );
    assert_eq!(fs::read_to_string(conf.path()).expect("read"), ORIGINAL);
    assert_eq!(
        fresh.repair_stale().expect("repair again"),
        RepairOutcome::Clean
    );
}

#[test]
fn someone_elses_newer_file_wins_over_a_stale_backup() {
    let (_dir, mut conf) = setup(Some(ORIGINAL));
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    let newer = "nameserver 203.0.113.53\n";
    fs::write(conf.path(), newer).expect("dhcp rewrites the file");
    assert!(!conf.restore().expect("restore"), "their file is kept");
    assert_eq!(fs::read_to_string(conf.path()).expect("read"), newer);
    assert!(!conf.backup_path().exists());

    conf.take_over(&ns, &search).expect("take over");
    fs::write(conf.path(), newer).expect("dhcp rewrites the file again");
    assert_eq!(
        conf.repair_stale().expect("repair"),
        RepairOutcome::DiscardedStaleBackup
    );
    assert_eq!(fs::read_to_string(conf.path()).expect("read"), newer);
}

#[test]
fn marker_without_backup_is_reported_not_guessed() {
    let (_dir, mut conf) = setup(Some(ORIGINAL));
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    fs::remove_file(conf.backup_path()).expect("lose backup");
    assert_eq!(
        conf.repair_stale().expect("repair"),
        RepairOutcome::MarkerWithoutBackup
    );
    assert!(matches!(
        conf.take_over(&ns, &search),
        Err(ResolverError::BackupMissing(_))
    ));
}

#[test]
fn invalid_input_writes_nothing() {
    let (_dir, mut conf) = setup(Some(ORIGINAL));
    let evil = vec!["corp.example\nnameserver 203.0.113.66".to_owned()];
    assert!(matches!(
        conf.take_over(&[ip("100.100.100.100")], &evil),
        Err(ResolverError::InvalidName(_))
    ));
    assert!(matches!(
        conf.take_over(&[], &[]),
        Err(ResolverError::NoNameservers)
    ));
    assert_eq!(fs::read_to_string(conf.path()).expect("read"), ORIGINAL);
    assert!(!conf.backup_path().exists());
}

#[test]
fn no_temp_files_are_left_behind() {
    let (dir, mut conf) = setup(Some(ORIGINAL));
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    conf.restore().expect("restore");
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["resolv.conf"]);
}

#[test]
fn fake_records_calls() {
    let fake = FakeResolver::new(vec![ip("192.0.2.53")]);
    let mut r = fake.clone();
    let (ns, search) = magic();
    r.take_over(&ns, &search).expect("take over");
    assert!(r.is_taken_over().expect("check"));
    assert_eq!(
        r.original_nameservers().expect("originals"),
        vec![ip("192.0.2.53")]
    );
    assert!(r.restore().expect("restore"));
    assert_eq!(
        fake.calls(),
        vec![ResolverCall::TakeOver(ns, search), ResolverCall::Restore]
    );
    assert!(fake.installed().is_none());
}

#[test]
fn in_place_mode_writes_the_same_inode_and_restores_the_bytes() {
    use std::os::unix::fs::MetadataExt;
    let (dir, conf) = setup(Some(ORIGINAL));
    let backup = dir.path().join("state").join("resolv.conf.backup");
    fs::create_dir_all(backup.parent().expect("parent")).expect("state dir");
    let mut conf = conf.in_place(&backup);
    assert!(conf.is_in_place());
    let inode = fs::metadata(conf.path()).expect("meta").ino();
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    assert_eq!(fs::metadata(conf.path()).expect("meta").ino(), inode);
    assert_eq!(fs::read_to_string(&backup).expect("backup"), ORIGINAL);
    assert!(conf.is_taken_over().expect("check"));
    assert_eq!(
        conf.original_nameservers().expect("originals"),
        vec![ip("192.0.2.53"), ip("2001:db8::53")]
    );
    // A crash, then a fresh configurator with the same backup path.
    let mut fresh = ResolvConf::new(conf.path()).in_place(&backup);
    assert_eq!(
        fresh.repair_stale().expect("repair"),
        RepairOutcome::Restored
    );
    assert_eq!(fs::read_to_string(conf.path()).expect("read"), ORIGINAL);
    assert_eq!(fs::metadata(conf.path()).expect("meta").ino(), inode);
    assert!(!backup.exists());
    conf.take_over(&ns, &search).expect("take over again");
    assert!(conf.restore().expect("restore"));
    assert_eq!(fs::read_to_string(conf.path()).expect("read"), ORIGINAL);
    assert_eq!(
        fs::metadata(conf.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
}

#[test]
fn unwritable_errors_are_told_apart() {
    let ro = ResolverError::Io {
        path: "/etc/resolv.conf".into(),
        source: io::Error::from_raw_os_error(libc::EROFS),
    };
    assert!(ro.is_unwritable());
    let busy = ResolverError::Io {
        path: "/etc/resolv.conf".into(),
        source: io::Error::from_raw_os_error(libc::EBUSY),
    };
    assert!(!busy.is_unwritable());
    assert!(!ResolverError::NoNameservers.is_unwritable());
}

#[test]
fn injected_original_search_domains_are_dropped() {
    let (_dir, mut conf) = setup(Some(
        "nameserver 192.0.2.53\nsearch ok.example bad_\u{7f}x\n",
    ));
    let (ns, search) = magic();
    conf.take_over(&ns, &search).expect("take over");
    let live = fs::read_to_string(conf.path()).expect("read");
    assert_eq!(
        parse_resolv_conf(&live).search,
        vec!["mesh.rustynet.internal", "ok.example"]
    );
}
