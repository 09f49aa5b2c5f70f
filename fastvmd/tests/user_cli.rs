//! `fastvmd vm ...`, `fastvmd snapshot ...` and `fastvmd completions`
//! against a live daemon (the test guest): tables and JSON, names and id
//! prefixes, errors that say what is wrong, and the exit statuses.

mod common;

use std::process::{Command, Output};

use common::can_run_vms;
use common::daemon::Daemon;
use serde_json::Value;

/// Runs `fastvmd ARGS` against `d`'s socket.
fn fastvmd(d: &Daemon, args: &[&str]) -> Output {
    Command::new(common::fastvmd_bin())
        .args(args)
        .arg("--socket")
        .arg(d.data_dir.join("fastvmd.sock"))
        .env_remove("FASTVM_SOCKET")
        .output()
        .expect("run fastvmd")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(d: &Daemon, args: &[&str]) -> String {
    let out = fastvmd(d, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn vms_and_snapshots_by_name_and_prefix() {
    if !can_run_vms("vms_and_snapshots_by_name_and_prefix") {
        return;
    }
    let d = Daemon::start();
    assert_eq!(
        ok(&d, &["vm", "ls"]),
        "ID  NAME  STATUS  TYPE  CPU/MEM/DISK  SOURCE  IPV6\n"
    );

    let created = ok(&d, &["vm", "create", "--name", "dev", "--json"]);
    let dev: Value = serde_json::from_str(&created).unwrap();
    let dev_id = dev["id"].as_str().unwrap().to_string();
    assert_eq!(dev["status"], "running", "{dev}");
    let table = ok(
        &d,
        &[
            "vm",
            "create",
            "--name",
            "ci",
            "--type",
            "c2m4",
            "--disk-gib",
            "12",
        ],
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("ci") && l.contains("2/4096M/12G")),
        "{table}"
    );

    let listed = ok(&d, &["vm", "ls"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.contains(&dev_id[..8]), "{listed}");
    let json: Value = serde_json::from_str(&ok(&d, &["vm", "ls", "--json"])).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");

    // A snapshot of dev, by name; a clone of it, by the snapshot's name.
    let snap = ok(&d, &["snapshot", "create", "dev", "--name", "base"]);
    assert!(snap.contains("base") && snap.contains("ready"), "{snap}");
    assert!(ok(&d, &["snapshot", "ls"]).contains(&dev_id[..8]));
    let clone = ok(
        &d,
        &[
            "vm",
            "create",
            "--snapshot",
            "base",
            "--name",
            "c1",
            "--json",
        ],
    );
    let clone: Value = serde_json::from_str(&clone).unwrap();
    assert_eq!(clone["sourceName"], "base", "{clone}");

    // Rename by id prefix; the old name is gone, the new one works.
    let clone_id = clone["id"].as_str().unwrap();
    let renamed = ok(&d, &["vm", "rename", &clone_id[..8], "c-one"]);
    assert_eq!(renamed, format!("renamed {clone_id}: c1 -> c-one\n"));
    let out = fastvmd(&d, &["vm", "rename", "c1", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "no VM has the id, id prefix or name \"c1\"\n");

    // A server-side refusal comes back as the daemon said it.
    let too_long = "n".repeat(65);
    let out = fastvmd(&d, &["vm", "rename", "c-one", &too_long]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error 400: "), "{}", stderr(&out));

    // rm goes on past a name it cannot find and says which.
    let out = fastvmd(&d, &["vm", "rm", "dev", "nope", "c-one"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "nope: no VM has the id, id prefix or name \"nope\"\n"
    );
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    assert!(ok(&d, &["snapshot", "rm", "base"]).starts_with("deleted "));
    ok(&d, &["vm", "rm", "ci"]);
    assert_eq!(ok(&d, &["vm", "ls", "--json"]).trim(), "[]");
}

#[test]
fn an_unreachable_daemon_and_completions() {
    let out = Command::new(common::fastvmd_bin())
        .args(["vm", "ls", "--socket", "/nonexistent/fastvmd.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot connect to /nonexistent/fastvmd.sock"),
        "{}",
        stderr(&out)
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(common::fastvmd_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(
            script.contains("snapshot") && script.contains("rename"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn console_carries_keys_both_ways_and_ctrl_close_bracket_leaves() {
    if !can_run_vms("console_carries_keys_both_ways_and_ctrl_close_bracket_leaves") {
        return;
    }
    use std::io::{Read, Write};
    let d = Daemon::start();
    ok(&d, &["vm", "create", "--name", "tty"]);
    let mut child = Command::new(common::fastvmd_bin())
        .args(["console", "tty", "--socket"])
        .arg(d.data_dir.join("fastvmd.sock"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The test guest's console echoes what it is sent.
    stdin.write_all(b"typed-into-the-console").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("typed-into-the-console") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the console ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // Ctrl-] leaves; nothing after it reaches the guest.
    stdin.write_all(b"\x1dafter").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let out = fastvmd(&d, &["console", "nosuchvm"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
