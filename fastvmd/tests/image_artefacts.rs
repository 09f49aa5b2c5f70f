//! The artefacts of `fastvmd image build`, checked where they were built
//! (the image cache: `$FASTVM_IMAGE_CACHE`, else `<data dir>/images`): the
//! kernel's `.config` has every option the fragment requires, the agent is
//! static and serves the protocol, the root filesystem holds init, busybox
//! and the agent, and its userland runs under its own init (PID 1 of fresh
//! namespaces, chrooted into the extracted tree). Skipped, with the reason,
//! where no image was built.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fastvm_proto::agent::{Decoder, ExecRequest, Frame, encode};
use fastvmd::image::{self, Image, elf, kernel, key, tools};

fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

fn cache() -> PathBuf {
    image::cache_dir(&fastvmd::serve::default_data_dir())
}

fn current_image(test: &str) -> Option<Image> {
    match Image::current(&cache()) {
        Ok(img) => Some(img),
        Err(e) => {
            skip(test, &e.to_string());
            None
        }
    }
}

/// The kernel built from this tree's fragment and the installed source.
fn kernel_dir(test: &str) -> Option<PathBuf> {
    let Ok((_, package)) = tools::linux_source_tarball() else {
        skip(
            test,
            "linux-source is not installed, so no kernel was built here",
        );
        return None;
    };
    let version = tools::package_version(&package).unwrap_or_else(|| "unknown".into());
    let dir = cache().join(format!(
        "kernel-{}",
        key::kernel_key(&package, &version, key::KERNEL_FRAGMENT)
    ));
    if dir.join(image::VMLINUX).is_file() {
        Some(dir)
    } else {
        skip(
            test,
            &format!("{} is not built; run `fastvmd image build`", dir.display()),
        );
        None
    }
}

#[test]
fn kernel_config_has_every_required_option() {
    let Some(dir) = kernel_dir("kernel_config_has_every_required_option") else {
        return;
    };
    let config = std::fs::read_to_string(dir.join(image::KERNEL_CONFIG)).unwrap();
    let missing = kernel::missing_options(key::KERNEL_FRAGMENT, &config);
    assert!(
        missing.is_empty(),
        "missing from the built .config: {missing:?}"
    );
    assert!(config.contains("CONFIG_VIRTIO_VSOCKETS=y"));
    assert!(config.contains("# CONFIG_MODULES is not set"));
}

#[test]
fn vmlinux_is_an_x86_64_linux_kernel() {
    let Some(dir) = kernel_dir("vmlinux_is_an_x86_64_linux_kernel") else {
        return;
    };
    let vmlinux = std::fs::read(dir.join(image::VMLINUX)).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([vmlinux[18], vmlinux[19]]),
        62,
        "EM_X86_64"
    );
    assert!(
        vmlinux.windows(14).any(|w| w == b"Linux version "),
        "no Linux banner in vmlinux"
    );
}

#[test]
fn agent_in_the_image_is_static_and_serves_the_protocol() {
    let test = "agent_in_the_image_is_static_and_serves_the_protocol";
    let Some(img) = current_image(test) else {
        return;
    };
    let bytes = std::fs::read(&img.agent).unwrap();
    let linkage = elf::linkage(&bytes).unwrap();
    assert!(linkage.is_static(), "{linkage:?}");

    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("agent.sock");
    let mut child = Command::new(&img.agent)
        .arg("--unix")
        .arg(&sock)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the image's agent never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let result = exchange(stream, &ExecRequest::new(["echo", "static"]));
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Frame::ExecResult(r) => assert_eq!((r.exit_code, r.stdout.as_str()), (0, "static\n")),
        other => panic!("{other:?}"),
    }
}

/// Reads `Ready`, sends one exec, returns the reply.
fn exchange(mut stream: UnixStream, req: &ExecRequest) -> Frame {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    let mut next = |stream: &mut UnixStream, dec: &mut Decoder| loop {
        if let Some(f) = dec.next_frame().unwrap() {
            return f;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "agent closed");
        dec.push(&buf[..n]);
    };
    assert!(matches!(next(&mut stream, &mut dec), Frame::Ready(_)));
    stream
        .write_all(&encode(&Frame::Exec(req.clone())).unwrap())
        .unwrap();
    next(&mut stream, &mut dec)
}

/// Runs a debugfs request against the image, read-only.
fn debugfs(rootfs: &Path, request: &str) -> String {
    let out = Command::new(tools::which("debugfs").expect("debugfs (e2fsprogs)"))
        .args(["-R", request])
        .arg(rootfs)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs {request}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rootfs_holds_init_busybox_and_the_agent() {
    let Some(img) = current_image("rootfs_holds_init_busybox_and_the_agent") else {
        return;
    };
    let meta = std::fs::metadata(&img.rootfs).unwrap();
    assert_eq!(meta.len(), image::ROOTFS_SIZE_GIB << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < 64 << 20,
        "the image is not sparse: {} bytes allocated",
        meta.blocks() * 512
    );

    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("init");
    debugfs(
        &img.rootfs,
        &format!("dump -p /sbin/init {}", init.display()),
    );
    assert_eq!(
        std::fs::read(&init).unwrap(),
        std::fs::read(&img.agent).unwrap(),
        "/sbin/init is the agent"
    );
    let busybox = tmp.path().join("busybox");
    debugfs(
        &img.rootfs,
        &format!("dump -p /bin/busybox {}", busybox.display()),
    );
    let bb = std::fs::read(&busybox).unwrap();
    assert!(elf::linkage(&bb).unwrap().is_static(), "busybox is static");
    let sh = debugfs(&img.rootfs, "stat /bin/sh");
    assert!(
        sh.contains("/bin/busybox"),
        "/bin/sh links to busybox: {sh}"
    );
    let etc = debugfs(&img.rootfs, "ls /etc");
    for name in ["hostname", "passwd", "profile"] {
        assert!(etc.contains(name), "/etc/{name} missing: {etc}");
    }
}

/// `unshare` and its child (PID 1 of the new namespaces), killed on drop.
struct Namespaced(std::process::Child);

impl Drop for Namespaced {
    fn drop(&mut self) {
        let pid = self.0.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for init in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kills the namespace init this test started.
            unsafe { libc::kill(init, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rootfs_userland_runs_under_its_own_init() {
    let test = "rootfs_userland_runs_under_its_own_init";
    let Some(img) = current_image(test) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root for namespaces and chroot");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        skip(test, "unshare (util-linux) is not installed");
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    debugfs(&img.rootfs, &format!("rdump / {}", root.display()));
    let _init = Namespaced(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--uts", "--net"])
            .args(["--propagation", "private", "chroot"])
            .arg(&root)
            .args(["/sbin/init", "--unix", "/agent.sock", "--console", "none"])
            .spawn()
            .unwrap(),
    );
    let sock = root.join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(Instant::now() < deadline, "the image's init never listened");
        std::thread::sleep(Duration::from_millis(10));
    };
    let script = "echo $0; readlink /bin/sh; hostname; cat /proc/1/comm; \
                  awk '{print $2}' /proc/mounts | grep -c -x -E '/(proc|sys|dev|tmp|run)'";
    match exchange(stream, &ExecRequest::new(["sh", "-c", script])) {
        Frame::ExecResult(r) => {
            assert_eq!(r.exit_code, 0, "{r:?}");
            assert_eq!(r.stdout, "sh\n/bin/busybox\nfastvm\ninit\n5\n", "{r:?}");
        }
        other => panic!("{other:?}"),
    }
}
