//! `listImages`, `importImage` and `deleteImage` through a real socket, on
//! an image cache of the test's own: who may call them, what bad input
//! answers, and that no host path but the one given comes back.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::oci::archive;
use crate::store::VmRow;

use super::*;

/// Long enough for an import (mkfs.ext4, debugfs, e2fsck) on a busy host.
const IMPORT_WAIT: Duration = Duration::from_secs(120);

/// A daemon with an image cache of its own, and that cache.
async fn image_daemon() -> (Daemon, PathBuf) {
    let d = daemon_with(|c| c.image_cache = c.data_dir.with_file_name("cache")).await;
    let cache = d.service.inner.config.image_cache.clone();
    (d, cache)
}

/// What `fastvmd image build` leaves in `cache`, with made-up contents:
/// an import takes its guest-agent from there.
fn fake_built_image(cache: &Path) {
    use crate::image::{AGENT, CURRENT, KERNEL_CONFIG, ROOTFS, VMLINUX};
    let dir = cache.join(CURRENT);
    std::fs::create_dir_all(&dir).unwrap();
    for file in [VMLINUX, ROOTFS, KERNEL_CONFIG] {
        std::fs::write(dir.join(file), b"made up").unwrap();
    }
    std::fs::write(dir.join(AGENT), b"\x7fELF the agent").unwrap();
}

/// A one-layer `docker save` archive of a small app.
fn app_archive() -> Vec<u8> {
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/app/hello"], "Env": ["GREETING=hi"], "WorkingDir": "/app",
                   "User": "nobody"},
    });
    let layer = archive::tar_of(&[("app/hello", b"#!/bin/sh\necho hi\n", 0o755)]).unwrap();
    archive::docker_save(config, &layer).unwrap()
}

/// Whether the tools an import runs are installed (e2fsprogs).
fn can_import() -> bool {
    ["mkfs.ext4", "debugfs", "e2fsck"]
        .iter()
        .all(|tool| Command::new(tool).arg("-V").output().is_ok())
}

fn keyed(mut req: SocketRequest, key: &str) -> SocketRequest {
    req.api_key = Some(key.into());
    req
}

fn import(name: &str, path: &Path) -> SocketRequest {
    req("importImage").body(json!({"name": name, "path": path}))
}

fn delete(name: &str) -> SocketRequest {
    req("deleteImage").body(json!({"name": name}))
}

/// Image `demo` in `cache` as an import leaves it (an empty root file
/// system, `info` as its image.json); returns its directory.
fn place_demo(cache: &Path, info: &Value) -> PathBuf {
    let dir = cache.join("named/demo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rootfs.ext4"), b"").unwrap();
    std::fs::write(dir.join("image.json"), info.to_string()).unwrap();
    dir
}

/// A VM of `org_id` booted from image `demo`, stored as createVM would.
fn vm_of_demo(d: &Daemon, org_id: &str, name: &str, status: &str) -> VmRow {
    d.service
        .inner
        .store
        .create_vm_within_quota(NewVm {
            org_id: org_id.to_string(),
            name: name.into(),
            machine_name: "c1m2".into(),
            source_name: Some("demo".into()),
            source_snapshot_id: None,
            vcpus: 1,
            memory_mib: 2048,
            disk_gib: 10,
            status: status.parse().unwrap(),
            firewall_json: r#"{"mode":"open"}"#.into(),
            public_ipv6: None,
            run_json: "{}".into(),
        })
        .unwrap()
}

/// Entries of `cache/named`, hidden ones (work directories) included.
fn named_entries(cache: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cache.join("named")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_listed_to_every_caller_and_imported_by_the_admin() {
    let (d, cache) = image_daemon().await;
    let tmp = d._dir.path().to_path_buf();
    let host = tmp.to_str().unwrap().to_string();
    let mut c = Client::connect(&d).await;
    let resp = c.call(req("listImages")).await;
    assert_eq!((resp.status, resp.body), (200, json!({"images": []})));
    let org = c.call(req("createOrg").body(json!({"name": "acme"}))).await;
    let key = org.body["apiKey"]["key"].as_str().unwrap().to_string();
    let resp = c.call(keyed(req("listImages").body(json!({})), &key)).await;
    assert_eq!((resp.status, resp.body), (200, json!({"images": []})));
    let resp = c.call(keyed(req("listImages"), "hlm_wrong")).await;
    assert_eq!(resp.status, 401, "{resp:?}");

    let inputs = tmp.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    let app = inputs.join("app.tar");
    std::fs::write(&app, app_archive()).unwrap();

    // Only the admin imports.
    let resp = c.call(keyed(import("demo", &app), &key)).await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert!(error(&resp).starts_with("importImage: admin"), "{resp:?}");

    // The guest-agent comes from the built guest image.
    let resp = c.call(import("demo", &app)).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(error(&resp).contains("fastvmd image build"), "{resp:?}");
    assert!(!error(&resp).contains(&host), "{resp:?}");
    fake_built_image(&cache);

    // Bad input: 400 with a message, nothing left behind.
    let resp = c
        .call(req("importImage").body(json!({"name": "demo"})))
        .await;
    assert_eq!(resp.status, 400);
    assert!(error(&resp).contains("missing field `path`"), "{resp:?}");
    let resp = c.call(import("Demo!", &app)).await;
    assert_eq!(resp.status, 400);
    assert!(error(&resp).starts_with("name: "), "{resp:?}");
    let resp = c.call(import("demo", Path::new("in/app.tar"))).await;
    assert_eq!(resp.status, 400);
    assert!(error(&resp).contains("absolute path"), "{resp:?}");
    let missing = inputs.join("missing.tar");
    let resp = c.call(import("demo", &missing)).await;
    assert_eq!(resp.status, 400);
    assert!(
        error(&resp).contains(missing.to_str().unwrap()),
        "the path given is named: {resp:?}"
    );
    let bad = inputs.join("bad.tar");
    std::fs::write(&bad, b"this is not a tar archive at all").unwrap();
    let resp = c.call_within(import("bad", &bad), IMPORT_WAIT).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(error(&resp).contains("not a container image"), "{resp:?}");
    assert!(!error(&resp).contains(cache.to_str().unwrap()), "{resp:?}");
    let no_image = inputs.join("empty");
    std::fs::create_dir(&no_image).unwrap();
    let resp = c.call_within(import("bad", &no_image), IMPORT_WAIT).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(error(&resp).contains("manifest.json"), "{resp:?}");
    assert_eq!(named_entries(&cache), Vec::<String>::new());

    if !can_import() {
        println!("SKIP (import part): mkfs.ext4, debugfs and e2fsck (e2fsprogs) are needed");
        return;
    }
    let resp = c.call_within(import("demo", &app), IMPORT_WAIT).await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let created = resp.body["createdMs"].as_i64().unwrap();
    assert!(created > 0);
    assert_eq!(
        resp.body,
        json!({
            "name": "demo", "source": "app.tar", "layers": 1, "rootfsBytes": 10u64 << 30,
            "createdMs": created,
            "run": {"entrypoint": [], "cmd": ["/app/hello"], "env": ["GREETING=hi"],
                    "workingDir": "/app", "user": "nobody"},
        })
    );
    assert!(cache.join("named/demo/rootfs.ext4").is_file());
    let summary = resp.body;

    let resp = c.call_within(import("demo", &app), IMPORT_WAIT).await;
    assert_eq!(resp.status, 409, "{resp:?}");
    assert!(error(&resp).contains("demo exists"), "{resp:?}");
    assert_eq!(named_entries(&cache), ["demo"]);

    for who in [None, Some(key.as_str())] {
        let list = match who {
            Some(key) => keyed(req("listImages"), key),
            None => req("listImages"),
        };
        let resp = c.call(list).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, json!({"images": [summary]}));
        assert!(!resp.body.to_string().contains(&host));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_deleted_by_the_admin_and_not_while_a_vm_uses_it() {
    let (d, cache) = image_daemon().await;
    // An image as an import leaves it, from a file named with its path.
    let info = json!({
        "name": "demo", "source": "/srv/in/app.tar", "layers": 2, "rootfsBytes": 1024,
        "createdMs": 5,
        "run": {"entrypoint": [], "cmd": [], "env": [], "workingDir": null, "user": null},
    });
    let dir = place_demo(&cache, &info);

    let mut c = Client::connect(&d).await;
    let resp = c.call(req("listImages")).await;
    assert_eq!(
        resp.body,
        json!({"images": [{
            "name": "demo", "source": "app.tar", "layers": 2, "rootfsBytes": 1024,
            "createdMs": 5, "run": {"entrypoint": [], "cmd": [], "env": []},
        }]})
    );

    let org = c.call(req("createOrg").body(json!({"name": "acme"}))).await;
    let key = org.body["apiKey"]["key"].as_str().unwrap().to_string();
    let resp = c.call(keyed(delete("demo"), &key)).await;
    assert_eq!(resp.status, 403, "{resp:?}");
    let resp = c.call(req("deleteImage")).await;
    assert_eq!(resp.status, 400);
    assert!(error(&resp).contains("missing field `name`"), "{resp:?}");
    let resp = c.call(delete("../named")).await;
    assert_eq!(resp.status, 400);
    assert!(error(&resp).starts_with("name: "), "{resp:?}");
    let resp = c.call(delete("nope")).await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(error(&resp), "image nope not found");

    // A VM of another org booted from it: 409 naming the VM.
    let store = &d.service.inner.store;
    let org_id = org.body["id"].as_str().unwrap();
    let vm = vm_of_demo(&d, org_id, "uses-demo", "running");
    let resp = c.call(delete("demo")).await;
    assert_eq!(resp.status, 409, "{resp:?}");
    assert!(error(&resp).contains(&vm.id), "{resp:?}");
    assert!(dir.join("image.json").is_file(), "still there");

    assert!(store.mark_vm_deleted(&vm.id).unwrap());
    let resp = c.call(delete("demo")).await;
    assert_eq!((resp.status, resp.body), (204, json!({})));
    assert!(!dir.exists());
    let resp = c.call(delete("demo")).await;
    assert_eq!(resp.status, 404, "{resp:?}");
    let resp = c.call(req("listImages")).await;
    assert_eq!((resp.status, resp.body), (200, json!({"images": []})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_waits_for_a_create_that_found_the_image() {
    let (d, cache) = image_daemon().await;
    let info = json!({
        "name": "demo", "source": "app.tar", "layers": 1, "rootfsBytes": 1024,
        "createdMs": 5, "run": {},
    });
    let dir = place_demo(&cache, &info);

    // A createVM that has found the image and not yet stored its VM.
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let service = d.service.clone();
    let creating = std::thread::spawn(move || {
        let _found = service.inner.image_use.read().unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held.recv().unwrap();
    let mut c = Client::connect(&d).await;
    let deleting = tokio::spawn(async move { c.call(delete("demo")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!deleting.is_finished(), "the delete did not wait");
    assert!(dir.join("image.json").is_file(), "removed under a create");
    let org = d.service.inner.store.default_org().unwrap().unwrap().id;
    let vm = vm_of_demo(&d, &org, "from-demo", "provisioning");
    release.send(()).unwrap();
    creating.join().unwrap();
    let resp = deleting.await.unwrap();
    assert_eq!(resp.status, 409, "{resp:?}");
    assert!(error(&resp).contains(&vm.id), "{resp:?}");
    assert!(dir.join("image.json").is_file());
}
