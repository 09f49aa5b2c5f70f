//! `fastvmd image build` as a user runs it: a missing tool is named with
//! its package before any work starts, and a second build with unchanged
//! inputs reuses everything.

use std::io::Write;
use std::process::Command;

use fastvmd::image::{self, key, tools};

fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

#[test]
fn a_missing_tool_is_named_with_its_package() {
    let cache = tempfile::tempdir().unwrap();
    let empty_bin = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fastvmd"))
        .args(["image", "build", "--cache-dir"])
        .arg(cache.path())
        .env("PATH", empty_bin.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gcc not found: install it with `apt-get install gcc`"),
        "{stderr}"
    );
    // Nothing was built.
    assert!(!cache.path().join(image::CURRENT).exists());
}

#[test]
fn a_second_build_reuses_the_cache() {
    let test = "a_second_build_reuses_the_cache";
    let cache = image::cache_dir(&fastvmd::serve::default_data_dir());
    // Only where the kernel for this fragment is already built: a cold
    // cache would start a kernel build from inside the tests.
    let Ok((_, package)) = tools::linux_source_tarball() else {
        skip(test, "linux-source is not installed");
        return;
    };
    let version = tools::package_version(&package).unwrap_or_else(|| "unknown".into());
    let kernel = cache.join(format!(
        "kernel-{}",
        key::kernel_key(&package, &version, key::KERNEL_FRAGMENT)
    ));
    if !kernel.join(image::VMLINUX).is_file() {
        skip(test, &format!("{} is not built", kernel.display()));
        return;
    }
    let build = || {
        let out = Command::new(env!("CARGO_BIN_EXE_fastvmd"))
            .args(["image", "build", "--cache-dir"])
            .arg(&cache)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let (first, _) = build();
    let (second, log) = build();
    assert!(log.contains("kernel: cached"), "{log}");
    assert!(log.contains("rootfs: cached"), "{log}");
    assert!(log.contains("(kernel cached, rootfs cached)"), "{log}");
    assert_eq!(first, second, "the same image both times");
}
