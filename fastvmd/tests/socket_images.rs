//! Named images over a real daemon's socket: `listImages`, `importImage`
//! (admin only; an API key, even the default org's, gets 403) and
//! `deleteImage`; createVM with `image` on the test guest is a 400; the
//! HTTP API has no images.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use fastvmd::image::oci::archive;
use serde_json::{Value, json};

struct Conn {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next: u64,
}

impl Conn {
    fn open(d: &Daemon) -> Conn {
        let s = UnixStream::connect(d.data_dir.join("fastvmd.sock")).expect("fastvmd.sock");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        Conn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
            next: 1,
        }
    }

    /// Sends `frame` and reads its answer: (status, body).
    fn call(&mut self, mut frame: Value) -> (u16, Value) {
        let id = self.next;
        self.next += 1;
        frame["id"] = json!(id);
        let mut line = frame.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).expect("an answer");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON frame");
        assert_eq!(answer["id"], id);
        (
            answer["status"].as_u64().unwrap() as u16,
            answer["body"].clone(),
        )
    }
}

/// What `fastvmd image build` leaves in `cache`, with made-up contents.
fn fake_built_image(cache: &Path) {
    let dir = cache.join(fastvmd::image::CURRENT);
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        fastvmd::image::VMLINUX,
        fastvmd::image::ROOTFS,
        fastvmd::image::KERNEL_CONFIG,
    ] {
        std::fs::write(dir.join(file), b"made up").unwrap();
    }
    std::fs::write(dir.join(fastvmd::image::AGENT), b"\x7fELF the agent").unwrap();
}

#[test]
fn named_images_over_the_daemons_socket() {
    if std::env::var_os(fastvmd::image::CACHE_ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!(
            "SKIP named_images_over_the_daemons_socket: ${} points the daemon at a shared \
             image cache",
            fastvmd::image::CACHE_ENV
        );
        return;
    }
    let d = Daemon::start();
    let mut c = Conn::open(&d);
    let (status, list) = c.call(json!({"op": "listImages"}));
    assert_eq!((status, list), (200, json!({"images": []})));
    let (status, list) = c.call(json!({"op": "listImages", "apiKey": d.key}));
    assert_eq!((status, list), (200, json!({"images": []})));

    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app.tar");
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app/hello"]},
    });
    let layer = archive::tar_of(&[("app/hello", b"#!/bin/sh\necho hi\n", 0o755)]).unwrap();
    std::fs::write(&app, archive::docker_save(config, &layer).unwrap()).unwrap();
    let import = |name: &str, path: &Path| json!({"op": "importImage", "body": {"name": name, "path": path}});

    let mut keyed = import("demo", &app);
    keyed["apiKey"] = json!(d.key);
    let (status, err) = c.call(keyed);
    assert_eq!(status, 403, "{err}");

    fake_built_image(&d.data_dir.join("images"));
    let bad = tmp.path().join("bad.tar");
    std::fs::write(&bad, b"not a tar").unwrap();
    let (status, err) = c.call(import("bad", &bad));
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("not a container image"),
        "{err}"
    );

    // The HTTP API is the contract's alone.
    let (status, _) = d.call("GET", "/v1/images", None);
    assert_eq!(status, 404);

    let tools = ["mkfs.ext4", "debugfs", "e2fsck"];
    if !tools
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok())
    {
        eprintln!("SKIP named_images_over_the_daemons_socket (import): e2fsprogs missing");
        return;
    }
    let (status, image) = c.call(import("demo", &app));
    assert_eq!(status, 201, "{image}");
    assert_eq!(
        (&image["name"], &image["source"]),
        (&json!("demo"), &json!("app.tar"))
    );
    let (status, err) = c.call(import("demo", &app));
    assert_eq!(status, 409, "{err}");
    let (status, list) = c.call(json!({"op": "listImages", "apiKey": d.key}));
    assert_eq!((status, list), (200, json!({"images": [image]})));

    // The test guest boots no named image.
    let create = json!({"op": "createVM", "body": {"machineType": "c1m2", "image": "demo"}});
    let (status, err) = c.call(create);
    if common::can_run_vms("named_images_over_the_daemons_socket (createVM)") {
        assert_eq!(status, 400, "{err}");
        assert!(
            err["error"].as_str().unwrap().contains("Linux guest"),
            "{err}"
        );
    }

    let (status, body) = c.call(json!({"op": "deleteImage", "body": {"name": "demo"}}));
    assert_eq!((status, body), (204, json!({})));
    let (status, _) = c.call(json!({"op": "deleteImage", "body": {"name": "demo"}}));
    assert_eq!(status, 404);
    let (status, list) = c.call(json!({"op": "listImages"}));
    assert_eq!((status, list), (200, json!({"images": []})));
}
