//! `fastvmd image import | ls | rm` as a user runs them, on `docker save`
//! archives this test writes: the image lands in the cache with the agent
//! as /sbin/init and the image's run defaults kept; a bad archive fails
//! with the reason and leaves nothing behind; stdin works; `rm` removes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fastvmd::image::oci::archive;

/// A one-layer `docker save` tar holding `files` (name, content, mode).
fn docker_save(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let files: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(name, text, mode)| (*name, text.as_bytes(), *mode))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/app/hello"], "Env": ["GREETING=hi"], "WorkingDir": "/app",
                   "User": "nobody"},
    });
    archive::docker_save(config, &archive::tar_of(&files).unwrap()).unwrap()
}

fn fastvmd(cache: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastvmd"))
        .arg("image")
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn an_archive_imports_lists_and_is_removed() {
    if Command::new("debugfs").arg("-V").output().is_err() {
        println!("SKIP: debugfs and mkfs.ext4 (e2fsprogs) are not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("app.tar");
    std::fs::write(
        &archive,
        docker_save(&[("app/hello", "#!/bin/sh\necho hi\n", 0o755)]),
    )
    .unwrap();
    let agent = tmp.path().join("agent");
    std::fs::write(&agent, b"\x7fELF the agent").unwrap();
    let agent_arg = agent.to_str().unwrap();

    let import = |name: &str, file: &str, stdin: Option<&[u8]>| {
        fastvmd(&cache, &["import", name, file, "--agent", agent_arg], stdin)
    };
    let out = import("demo", archive.to_str().unwrap(), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("import: layer 1/1 l/layer.tar"),
        "{}",
        text(&out.stderr)
    );
    let dir = cache.join("named/demo");
    let rootfs = dir.join("rootfs.ext4");
    assert!(text(&out.stdout).contains(&rootfs.display().to_string()));
    assert_eq!(debugfs(&rootfs, "cat /app/hello"), "#!/bin/sh\necho hi\n");
    assert_eq!(debugfs(&rootfs, "cat /sbin/init"), "\x7fELF the agent");
    assert!(debugfs(&rootfs, "stat /sbin/init").contains("Mode:  0755"));
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/run"] {
        assert!(
            debugfs(&rootfs, &format!("stat {dir}")).contains("Type: directory"),
            "{dir}"
        );
    }
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("image.json")).unwrap()).unwrap();
    assert_eq!(info["run"]["cmd"], serde_json::json!(["/app/hello"]));
    assert_eq!(info["run"]["env"], serde_json::json!(["GREETING=hi"]));
    assert_eq!(info["run"]["workingDir"], "/app");
    assert_eq!(info["run"]["user"], "nobody");
    let names: Vec<String> = std::fs::read_dir(cache.join("named"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["demo"], "no work directory left");

    // The name is taken; stdin works for another.
    let again = import("demo", archive.to_str().unwrap(), None);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("an image named demo exists"),
        "{}",
        text(&again.stderr)
    );
    let bytes = std::fs::read(&archive).unwrap();
    let piped = import("piped", "-", Some(&bytes));
    assert!(piped.status.success(), "{}", text(&piped.stderr));

    let ls = fastvmd(&cache, &["ls"], None);
    let listing = text(&ls.stdout);
    assert!(
        listing.contains("demo\t1\t") && listing.contains("piped\t1\tstandard input"),
        "{listing}"
    );

    let rm = fastvmd(&cache, &["rm", "demo"], None);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    assert!(!dir.exists());
    assert!(!text(&fastvmd(&cache, &["ls"], None).stdout).contains("demo"));
}

#[test]
fn a_bad_archive_fails_with_the_reason_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let agent = tmp.path().join("agent");
    std::fs::write(&agent, b"agent").unwrap();
    let bad = tmp.path().join("bad.tar");
    std::fs::write(&bad, b"this is not a tar archive at all").unwrap();
    let out = fastvmd(
        &cache,
        &[
            "import",
            "bad",
            bad.to_str().unwrap(),
            "--agent",
            agent.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a container image"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(cache.join("named")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    let out = fastvmd(&cache, &["import", "Bad/Name", "x", "--agent", "x"], None);
    assert!(
        text(&out.stderr).contains("\"Bad/Name\" is not an image name"),
        "{}",
        text(&out.stderr)
    );
}
