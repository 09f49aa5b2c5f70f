//! [`unpack`] against images these tests make themselves: `docker save`
//! archives and OCI layouts (as a directory and as a tar) whose layers
//! add, replace and delete files (whiteouts, opaque directories), link
//! them (hard and symbolic), carry owners, set-id bits, extended
//! attributes and device nodes, come plain, gzip and zstd; and malicious
//! or broken ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use tar::{EntryType, Header};

use super::digest_of as sha;
use super::layers::Kind;
use super::*;

/// One entry of a layer the tests write.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a str, u32, u64),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str, u32, u32),
    /// A file with a `security.capability` attribute.
    Xattr(&'a str, &'a [u8]),
    /// A raw name, written as is (for `..`).
    Raw(&'a str),
}

fn header(kind: EntryType, mode: u32, uid: u64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// A layer's uncompressed tar.
fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(name, mode) => {
                let mut h = header(EntryType::Directory, *mode, 0, 0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            E::File(name, text, mode, uid) => {
                let mut h = header(EntryType::Regular, *mode, *uid, text.len() as u64);
                b.append_data(&mut h, name, text.as_bytes()).unwrap();
            }
            E::Link(name, target) => {
                let mut h = header(EntryType::Symlink, 0o777, 0, 0);
                b.append_link(&mut h, name, target).unwrap();
            }
            E::Hard(name, target) => {
                let mut h = header(EntryType::Link, 0o644, 0, 0);
                b.append_link(&mut h, name, target).unwrap();
            }
            E::Char(name, major, minor) => {
                let mut h = header(EntryType::Char, 0o666, 0, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            E::Xattr(name, value) => {
                b.append_pax_extensions([("SCHILY.xattr.security.capability", *value)])
                    .unwrap();
                let mut h = header(EntryType::Regular, 0o755, 0, 1);
                b.append_data(&mut h, name, &b"x"[..]).unwrap();
            }
            E::Raw(name) => {
                let mut h = header(EntryType::Regular, 0o644, 0, 4);
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, &b"evil"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 1).unwrap()
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/app/run"], "Cmd": ["--serve"],
                   "Env": ["PATH=/usr/bin:/bin", "MODE=test"],
                   "WorkingDir": "/app", "User": "1000:1000"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A `docker save` directory of `layers` (as stored, and uncompressed).
fn docker_save(dir: &Path, layers: &[(Vec<u8>, Vec<u8>)]) {
    let mut names = Vec::new();
    for (i, (stored, _)) in layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        std::fs::create_dir_all(dir.join(format!("layer{i}"))).unwrap();
        std::fs::write(dir.join(&name), stored).unwrap();
        names.push(name);
    }
    let diff_ids: Vec<String> = layers.iter().map(|(_, plain)| sha(plain)).collect();
    std::fs::write(dir.join("cfg.json"), config(&diff_ids)).unwrap();
    let manifest = json!([{"Config": "cfg.json", "RepoTags": ["app:1"], "Layers": names}]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

/// Writes `bytes` as a blob of OCI layout `dir`; its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    let path = dir.join("blobs/sha256").join(&digest[7..]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    digest
}

/// An OCI layout directory of `layers`, behind a multi-platform index.
fn oci_layout(dir: &Path, layers: &[(Vec<u8>, Vec<u8>)]) {
    let diff_ids: Vec<String> = layers.iter().map(|(_, plain)| sha(plain)).collect();
    let config = put_blob(dir, &config(&diff_ids));
    let descriptors: Vec<_> = layers
        .iter()
        .map(|(stored, _)| {
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                                  "digest": put_blob(dir, stored), "size": stored.len()})
        })
        .collect();
    let manifest = json!({"schemaVersion": 2, "config": {"digest": config, "size": 1},
                          "layers": descriptors});
    let manifest = put_blob(dir, manifest.to_string().as_bytes());
    let inner = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
         "platform": {"architecture": "amd64", "os": "linux"}}]});
    let inner = put_blob(dir, inner.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": inner}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// `dir` as a tar file beside it.
fn tar_of(dir: &Path) -> PathBuf {
    let out = dir.with_extension("tar");
    let mut b = tar::Builder::new(std::fs::File::create(&out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
    out
}

/// The three layers every format test uses: plain, gzip and zstd.
fn standard_layers(compress: fn(&[u8]) -> Vec<u8>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let base = layer(&[
        E::Dir("usr/", 0o755),
        E::Dir("usr/bin/", 0o755),
        E::Link("bin", "/usr/bin"),
        E::File("usr/bin/sh", "shell", 0o755, 0),
        E::File("usr/bin/passwd", "setuid", 0o4755, 0),
        E::Hard("usr/bin/sh-again", "usr/bin/sh"),
        E::Dir("etc/", 0o755),
        E::File("etc/old", "gone later", 0o644, 0),
        E::Dir("var/cache/", 0o755),
        E::File("var/cache/a", "lower", 0o644, 0),
        E::File("var/cache/b", "lower", 0o644, 0),
        E::Char("dev/null", 1, 3),
    ]);
    let middle = layer(&[
        E::File("etc/.wh.old", "", 0o644, 0),
        E::File("var/cache/c", "this layer", 0o644, 0),
        E::File("var/cache/.wh..wh..opq", "", 0o644, 0),
        // Through the link: lands in /usr/bin.
        E::File("bin/tool", "via link", 0o755, 0),
        E::Xattr("usr/bin/ping", b"\x01\x00\x00\x02"),
    ]);
    let top = layer(&[
        E::Dir("app/", 0o750),
        E::File("app/run", "#!/bin/sh\n", 0o755, 1000),
        E::File("usr/bin/sh", "new shell", 0o755, 0),
        E::Hard("app/run-again", "app/run"),
    ]);
    vec![
        (base.clone(), base),
        (gzip(&middle), middle),
        (compress(&top), top),
    ]
}

fn unpack_ok(input: &Path, work: &Path) -> Unpacked {
    std::fs::create_dir_all(work).unwrap();
    let mut seen = Vec::new();
    let unpacked = unpack(input, work, &mut |p| seen.push((p.index, p.count))).unwrap();
    assert_eq!(seen, [(1, 3), (2, 3), (3, 3)]);
    unpacked
}

/// Checks the tree the standard layers make.
fn check_standard(u: &Unpacked) {
    let root = u.tree.root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("usr/bin/sh"), "new shell");
    assert_eq!(read("usr/bin/tool"), "via link");
    assert_eq!(read("app/run"), "#!/bin/sh\n");
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("/usr/bin")
    );
    assert!(!root.join("etc/old").exists(), "whiteout");
    let cache: Vec<_> = std::fs::read_dir(root.join("var/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cache, ["c"], "opaque directory keeps only its own layer");
    // The hard link kept the first shell: the top layer replaced the name.
    assert_eq!(read("usr/bin/sh-again"), "shell");
    let meta: BTreeMap<_, _> = u.tree.meta.clone();
    assert_eq!(meta["/usr/bin/passwd"].mode, 0o4755);
    assert_eq!((meta["/app/run"].uid, meta["/app/run"].gid), (1000, 1000));
    assert_eq!(meta["/app"].kind, Kind::Dir);
    assert_eq!(meta["/app"].mode, 0o750);
    assert_eq!(
        meta["/dev/null"].kind,
        Kind::CharDevice { major: 1, minor: 3 }
    );
    assert_eq!(meta["/dev"].kind, Kind::Dir, "an implied parent");
    assert_eq!(
        meta["/usr/bin/ping"].xattrs,
        [(
            "security.capability".to_string(),
            b"\x01\x00\x00\x02".to_vec()
        )]
    );
    assert!(!meta.contains_key("/etc/old"));
    assert!(!meta.contains_key("/var/cache/a"));
    assert!(
        !meta.contains_key("/bin/tool"),
        "placed where the link leads"
    );
    // Nothing on the host is set-id or a device.
    use std::os::unix::fs::PermissionsExt;
    let host_mode = std::fs::metadata(root.join("usr/bin/passwd"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(host_mode & 0o7777, 0o600);
    assert!(std::fs::metadata(root.join("dev/null")).unwrap().is_file());
    assert_eq!(u.run.entrypoint, ["/app/run"]);
    assert_eq!(u.run.working_dir.as_deref(), Some("/app"));
    assert_eq!(u.run.user.as_deref(), Some("1000:1000"));
    assert_eq!(u.layers, 3);
}

#[test]
fn a_docker_save_directory_and_tar_import() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    docker_save(&image, &standard_layers(gzip));
    check_standard(&unpack_ok(&image, &tmp.path().join("w1")));
    check_standard(&unpack_ok(&tar_of(&image), &tmp.path().join("w2")));
}

#[test]
fn an_oci_layout_directory_and_tar_import_through_a_platform_index() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    oci_layout(&image, &standard_layers(zstd));
    check_standard(&unpack_ok(&image, &tmp.path().join("w1")));
    check_standard(&unpack_ok(&tar_of(&image), &tmp.path().join("w2")));
}

/// Unpacks a docker-save image of `layers`; the error's text.
fn refused(layers: Vec<Vec<u8>>) -> (String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let pairs: Vec<_> = layers.into_iter().map(|l| (l.clone(), l)).collect();
    docker_save(&image, &pairs);
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let err = unpack(&image, &work, &mut |_| {}).err().expect("refused");
    (err.to_string(), tmp)
}

#[test]
fn a_dot_dot_entry_is_refused_and_writes_nothing_outside() {
    let (err, tmp) = refused(vec![layer(&[E::Raw("../../outside")])]);
    assert!(err.contains("layer 1 of 1") && err.contains(".."), "{err}");
    assert!(!tmp.path().join("outside").exists());
    assert!(!tmp.path().parent().unwrap().join("outside").exists());
}

#[test]
fn a_link_that_leads_out_of_the_root_is_refused() {
    let (err, tmp) = refused(vec![
        layer(&[E::Link("etc", "../../../../../..")]),
        layer(&[E::File("etc/evil", "x", 0o644, 0)]),
    ]);
    assert!(
        err.contains("layer 2 of 2") && err.contains("escapes the image root"),
        "{err}"
    );
    assert!(!Path::new("/evil").exists());
    drop(tmp);
}

#[test]
fn a_truncated_or_altered_layer_is_refused() {
    let full = layer(&[E::File("big", &"x".repeat(10_000), 0o644, 0)]);
    let (err, _tmp) = refused(vec![full[..5_000].to_vec()]);
    assert!(err.contains("layer 1 of 1"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let other = layer(&[E::File("big", "y", 0o644, 0)]);
    docker_save(&image, &[(full.clone(), other)]);
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let err = unpack(&image, &work, &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("damaged or altered"), "{err}");
}

#[test]
fn what_is_not_an_image_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let err = unpack(&file, &work, &mut |_| {}).err().unwrap();
    assert!(matches!(err, ImportError::NotAnImage(_)), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = unpack(&empty, &tmp.path().join("work"), &mut |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[test]
fn a_manifest_naming_a_host_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).unwrap();
    let manifest = json!([{"Config": "/etc/passwd", "Layers": ["../../etc/shadow"]}]);
    std::fs::write(image.join("manifest.json"), manifest.to_string()).unwrap();
    let err = unpack(&image, tmp.path(), &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not name a file in the archive"), "{err}");
}

/// What `debugfs -R request` prints about `image`.
fn debugfs(image: &Path, request: &str) -> String {
    let out = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_tree_becomes_an_ext4_image_with_the_guest_attributes() {
    if std::process::Command::new("debugfs")
        .arg("-V")
        .output()
        .is_err()
    {
        println!("SKIP: debugfs (e2fsprogs) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    docker_save(&image, &standard_layers(gzip));
    let u = unpack_ok(&image, &tmp.path().join("work"));
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = tmp.path().join("rootfs.ext4");
    ext4::write(&u.tree, &out, 64 << 20, &scratch).unwrap();

    let passwd = debugfs(&out, "stat /usr/bin/passwd");
    assert!(passwd.contains("Mode:  04755"), "{passwd}");
    let run = debugfs(&out, "stat /app/run");
    assert!(run.contains("User:  1000   Group:  1000"), "{run}");
    assert!(run.contains("Links: 2"), "the hard link kept: {run}");
    let null = debugfs(&out, "stat /dev/null");
    assert!(null.contains("Type: character special"), "{null}");
    assert!(null.contains("Device major/minor number: 01:03"), "{null}");
    let ping = debugfs(&out, "ea_list /usr/bin/ping");
    assert!(ping.contains("security.capability"), "{ping}");
    assert_eq!(debugfs(&out, "cat /usr/bin/sh"), "new shell");
    assert!(debugfs(&out, "stat /bin").contains("Fast link dest: \"/usr/bin\""));
    let app = debugfs(&out, "stat /app");
    assert!(app.contains("Mode:  0750"), "{app}");
    assert!(debugfs(&out, "ls /var/cache").contains("c"));
    assert!(!debugfs(&out, "ls /var/cache").contains(" a "));
}

#[test]
fn a_name_debugfs_cannot_take_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let odd = layer(&[E::File("etc/a\"b", "x", 0o644, 0)]);
    docker_save(&image, &[(odd.clone(), odd)]);
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let u = unpack(&image, &work, &mut |_| {}).unwrap();
    let err = ext4::write(&u.tree, &tmp.path().join("fs"), 8 << 20, &work)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot be written to the image"), "{err}");
}
