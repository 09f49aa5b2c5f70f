//! Tests of the atomic snapshot directory and restore-side validation.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

const MIB: usize = 1 << 20;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct State {
    vcpus: Vec<[u64; 4]>,
    note: String,
}

fn state() -> State {
    State {
        vcpus: vec![[1, 2, 3, 4], [5, 6, 7, 8]],
        note: "devices".into(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A complete snapshot (4 MiB memory, vmstate, 1 MiB sparse disk) at
/// `parent/snap`.
fn make_snapshot(parent: &Path) -> PathBuf {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 * MIB)]).unwrap();
    mem.write_slice(b"hello", GuestAddress(0x1000)).unwrap();
    let disk = parent.join("vm-disk");
    let f = File::create(&disk).unwrap();
    f.set_len(MIB as u64).unwrap();
    f.write_all_at(b"disk data", 4096).unwrap();

    let writer = SnapshotWriter::begin(&parent.join("snap")).unwrap();
    assert!(writer.temp_dir().starts_with(parent));
    let temp_name = writer.temp_dir().file_name().unwrap().to_string_lossy();
    assert_eq!(temp_name, format!(".snap.tmp-{}", std::process::id()));
    write_memory(&mem, &writer.memory_path()).unwrap();
    write_vmstate(&writer.vmstate_path(), &encode_state(&state()).unwrap()).unwrap();
    clone_disk(&disk, &writer.disk_path()).unwrap();
    let manifest = Manifest::for_host(4, 2, "console=ttyS0", "vmlinux");
    writer.commit(manifest).unwrap()
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Manifest)) {
    let path = dir.join(MANIFEST_FILE);
    let mut m: Manifest = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    fs::write(&path, m.to_json()).unwrap();
}

#[test]
fn commit_then_open_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_snapshot(tmp.path());
    assert_eq!(dir, tmp.path().join("snap"));
    // Only the final directory is left (plus the test's source disk).
    assert_eq!(names(tmp.path()), ["snap", "vm-disk"]);
    assert_eq!(names(&dir), ["disk", "manifest.json", "memory", "vmstate"]);

    let reader = SnapshotReader::open(&dir).unwrap();
    let m = reader.manifest();
    assert_eq!(m.format_version, MANIFEST_FORMAT_VERSION);
    assert_eq!(m.cpu_fingerprint, cpu_fingerprint());
    assert_eq!((m.memory_mib, m.vcpus), (4, 2));
    assert_eq!(m.files["memory"], 4 * MIB as u64);
    assert_eq!(m.files["disk"], MIB as u64);
    assert_eq!(
        m.files["vmstate"],
        fs::metadata(dir.join("vmstate")).unwrap().len()
    );
    assert_eq!(reader.decode_state::<State>().unwrap(), state());
    assert_eq!(reader.disk_path(), Some(dir.join("disk")));
    assert_eq!(reader.memory_path(), dir.join("memory"));
    let mem = map_memory(&reader.memory_path(), &[(GuestAddress(0), 4 * MIB)]).unwrap();
    let mut got = [0u8; 5];
    mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
    assert_eq!(&got, b"hello");
}

#[test]
fn existing_target_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("snap");
    fs::create_dir(&target).unwrap();
    let err = SnapshotWriter::begin(&target).unwrap_err();
    assert!(matches!(err, SnapshotError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(names(tmp.path()), ["snap"]);
    assert!(matches!(
        SnapshotWriter::begin(Path::new("/")),
        Err(SnapshotError::BadTarget { .. })
    ));
}

#[test]
fn target_appearing_before_commit_is_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("snap");
    let writer = SnapshotWriter::begin(&target).unwrap();
    fs::write(writer.memory_path(), b"").unwrap();
    fs::write(writer.vmstate_path(), wrap_vmstate(b"")).unwrap();
    fs::create_dir(&target).unwrap();
    let err = writer.commit(Manifest::for_host(0, 1, "", "")).unwrap_err();
    assert!(matches!(err, SnapshotError::Exists { .. }), "{err}");
    assert_eq!(names(tmp.path()), ["snap"]);
    assert!(names(&target).is_empty());
}

#[test]
fn failure_before_commit_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("snap");
    {
        let writer = SnapshotWriter::begin(&target).unwrap();
        fs::write(writer.memory_path(), b"partial").unwrap();
        // Dropped, e.g. because writing vmstate failed.
    }
    assert!(names(tmp.path()).is_empty());
    // Commit refuses a snapshot without vmstate, and cleans up too.
    let writer = SnapshotWriter::begin(&target).unwrap();
    fs::write(writer.memory_path(), b"").unwrap();
    let err = writer.commit(Manifest::for_host(0, 1, "", "")).unwrap_err();
    assert!(matches!(err, SnapshotError::MissingFile { ref name, .. } if name == "vmstate"));
    assert!(names(tmp.path()).is_empty());
}

/// Opens the snapshot after `edit` and returns the refusal.
fn refusal(edit: impl FnOnce(&Path)) -> SnapshotError {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_snapshot(tmp.path());
    edit(&dir);
    SnapshotReader::open(&dir).unwrap_err()
}

#[test]
fn missing_or_garbled_manifest() {
    let err = refusal(|d| fs::remove_file(d.join(MANIFEST_FILE)).unwrap());
    assert!(matches!(err, SnapshotError::ManifestParse { .. }), "{err}");
    let err = refusal(|d| fs::write(d.join(MANIFEST_FILE), b"{}").unwrap());
    assert!(matches!(err, SnapshotError::ManifestParse { .. }), "{err}");
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[test]
fn unknown_manifest_version() {
    let err = refusal(|d| edit_manifest(d, |m| m.format_version = 99));
    assert!(
        matches!(err, SnapshotError::ManifestVersion { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn other_cpu() {
    let err = refusal(|d| edit_manifest(d, |m| m.cpu_fingerprint = "OtherCPU-1-2-3-x".into()));
    assert!(matches!(err, SnapshotError::CpuMismatch { .. }), "{err}");
    assert!(err.to_string().contains("OtherCPU-1-2-3-x"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_snapshot(tmp.path());
    assert!(matches!(
        SnapshotReader::open_for(&dir, "elsewhere"),
        Err(SnapshotError::CpuMismatch { .. })
    ));
}

#[test]
fn memory_shorter_than_manifest() {
    let err = refusal(|d| {
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("memory"))
            .unwrap();
        f.set_len(MIB as u64).unwrap();
    });
    assert_eq!(
        err.to_string(),
        "memory is 1048576 bytes, manifest says 4194304"
    );
}

#[test]
fn truncated_vmstate_and_disk() {
    let err = refusal(|d| {
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("vmstate"))
            .unwrap();
        f.set_len(10).unwrap();
    });
    assert!(
        matches!(err, SnapshotError::FileSize { ref name, actual: 10, .. } if name == "vmstate"),
        "{err}"
    );
    let err = refusal(|d| {
        let f = OpenOptions::new().write(true).open(d.join("disk")).unwrap();
        f.set_len(4096).unwrap();
    });
    assert!(
        matches!(err, SnapshotError::FileSize { ref name, actual: 4096, .. } if name == "disk"),
        "{err}"
    );
}

#[test]
fn missing_files() {
    for name in ["memory", "vmstate", "disk"] {
        let err = refusal(|d| fs::remove_file(d.join(name)).unwrap());
        assert!(
            matches!(err, SnapshotError::MissingFile { name: ref n, .. } if n == name),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn required_files_must_be_listed() {
    for name in ["memory", "vmstate"] {
        let err = refusal(|d| {
            edit_manifest(d, |m| {
                m.files.remove(name);
            })
        });
        assert!(
            matches!(err, SnapshotError::Unlisted { name: ref n } if n == name),
            "{err}"
        );
    }
    // Without a disk entry the snapshot simply has no disk.
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_snapshot(tmp.path());
    edit_manifest(&dir, |m| {
        m.files.remove("disk");
    });
    assert_eq!(SnapshotReader::open(&dir).unwrap().disk_path(), None);
}

#[test]
fn file_names_must_be_plain() {
    for bad in ["../vm-disk", "/etc/passwd", "a/b", ".", "manifest.json"] {
        let err = refusal(|d| {
            edit_manifest(d, |m| {
                m.files.insert(bad.into(), 0);
            })
        });
        assert!(
            matches!(err, SnapshotError::BadFileName { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn corrupted_vmstate() {
    let err = refusal(|d| {
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("vmstate"))
            .unwrap();
        f.write_all_at(&[0xff], 30).unwrap();
    });
    assert!(matches!(err, SnapshotError::StateChecksum { .. }), "{err}");
    let err = refusal(|d| {
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("vmstate"))
            .unwrap();
        f.write_all_at(b"NOTSTATE", 0).unwrap();
    });
    assert!(matches!(err, SnapshotError::StateMagic { .. }), "{err}");
}
