//! What the daemon and its monitors write is private: `umask 077`, the
//! data directory and every directory under it 0700, the store, VM disks,
//! monitor logs and every file of a snapshot 0600.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::can_run_vms;
use common::daemon::Daemon;
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every entry under `dir` (not following links): directories 0700,
/// files 0600; sockets may be stricter, never looser.
fn assert_private_tree(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            assert_private_tree(&path);
        } else if kind.is_file() || kind.is_socket_like() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is {:o}: group or others may use it",
                path.display(),
                mode(&path)
            );
        }
    }
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_socket()
    }
}

#[test]
fn the_data_directory_and_everything_in_it_is_private() {
    if !can_run_vms("the_data_directory_and_everything_in_it_is_private") {
        return;
    }
    let d = Daemon::start();
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let (status, snap) = d.call("POST", "/v1/snapshots", Some(&json!({"vmId": id})));
    assert_eq!(status, 201, "{snap}");
    let snap_id = snap["id"].as_str().unwrap();

    for file in [
        d.data_dir.join("fastvm.db"),
        d.data_dir.join("jwt.secret"),
        d.data_dir.join("vms").join(&id).join("monitor.log"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let snap_dir = d.data_dir.join("snapshots").join(snap_id);
    for name in ["memory", "vmstate", "manifest.json"] {
        assert_eq!(mode(&snap_dir.join(name)), 0o600, "snapshot {name}");
    }
    assert_private_tree(&d.data_dir);
}

#[test]
fn a_data_directory_left_open_is_closed_at_start() {
    if !can_run_vms("a_data_directory_left_open_is_closed_at_start") {
        return;
    }
    let mut d = Daemon::start();
    d.kill9();
    for dir in ["", "vms", "snapshots"] {
        let path = d.data_dir.join(dir);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let db = d.data_dir.join("fastvm.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart();
    for dir in ["", "vms", "snapshots"] {
        assert_eq!(mode(&d.data_dir.join(dir)), 0o700, "{dir:?}");
    }
    assert_eq!(mode(&db), 0o600);
}
