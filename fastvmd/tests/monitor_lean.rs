//! The monitor program carries none of the daemon: `fastvm-vmm` links no
//! HTTP, SQLite, async runtime or terminal code (the daemon's binary, built
//! from the same workspace, does; which shows the check can see them).

use std::path::Path;

/// A mark each of the daemon's big parts leaves in a binary that links it
/// (a symbol or a path in its messages).
const DAEMON_ONLY: &[(&str, &str)] = &[
    ("SQLite", "sqlite3_prepare"),
    ("axum (HTTP)", "axum::"),
    ("hyper (HTTP)", "hyper::"),
    ("tokio", "tokio::"),
    ("tungstenite (WebSocket)", "tungstenite::"),
];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_monitor_program_links_nothing_of_the_daemon() {
    let monitor = read(env!("CARGO_BIN_EXE_fastvm-vmm"));
    let daemon = read(env!("CARGO_BIN_EXE_fastvmd"));
    for (part, mark) in DAEMON_ONLY {
        assert!(contains(&daemon, mark), "the daemon should link {part}");
        assert!(
            !contains(&monitor, mark),
            "fastvm-vmm links {part} ({mark:?} found)"
        );
    }
    assert!(
        monitor.len() * 2 < daemon.len(),
        "fastvm-vmm is {} bytes, fastvmd {}",
        monitor.len(),
        daemon.len()
    );
}

#[test]
fn the_monitor_program_explains_itself() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fastvm-vmm"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: fastvm-vmm"), "{help}");
    assert!(help.contains("--restore"), "{help}");
}

/// Runs `fastvmd serve` from a directory holding a link to the daemon and
/// `monitor` (a script) as its `fastvm-vmm`, or none; returns its stderr.
fn serve_beside(monitor: Option<&str>) -> String {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Path::new(env!("CARGO_BIN_EXE_fastvmd"));
    // Beside the real binary, so a hard link works (same file system).
    let dir = tempfile::tempdir_in(daemon.parent().unwrap()).unwrap();
    let linked = dir.path().join("fastvmd");
    std::fs::hard_link(daemon, &linked).unwrap();
    if let Some(script) = monitor {
        let path = dir.path().join("fastvm-vmm");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new(&linked)
        .args([
            "serve",
            "--guest",
            "test",
            "--listen",
            "127.0.0.1:0",
            "--ipv4-range",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_daemon_refuses_a_missing_or_stale_monitor_program() {
    let stale = serve_beside(Some(
        "#!/bin/sh\necho 'fastvm-vmm 0.0.1 (build 0000000000000000)'\n",
    ));
    assert!(stale.contains("is from another build"), "{stale}");
    assert!(stale.contains("cargo build -p fastvmd"), "{stale}");
    let missing = serve_beside(None);
    assert!(missing.contains("is not next to"), "{missing}");
}
