//! Named images over a real daemon's socket: `listImages`, `importImage`
//! (admin only; an API key, even the default org's, gets 403) and
//! `deleteImage`; createVM with `image` on the test guest is a 400; the
//! HTTP API has no images.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::socket::Conn;
use fastvmd::image::oci::archive;
use serde_json::json;

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
    let d = Daemon::start();
    let mut c = Conn::open(&d, Duration::from_secs(120));
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
