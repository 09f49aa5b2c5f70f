//! Builds the freestanding test guest (`tests/test-guest`) with its own
//! cargo invocation and target directory, and places the ELF at
//! `<target>/test-guest/test-guest`, so a plain `cargo build` makes
//! `--guest test` and the VM tests work with no extra step.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The test guest is a freestanding ELF made with the host's toolchain
/// (its own link arguments make it static and position-dependent).
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The workspace target directory: the outermost ancestor of OUT_DIR
/// holding CACHEDIR.TAG (a target triple's directory has one too).
fn target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .filter(|p| p.join("CACHEDIR.TAG").exists())
        .last()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("target"))
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().expect("workspace root").to_path_buf();
    let guest = workspace.join("tests/test-guest");
    for watched in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={}", guest.join(watched).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("fastvm-proto/src").display()
    );

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest_dir = target_dir(&out_dir).join("test-guest");
    let build_dir = dest_dir.join("build");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&build_dir)
        // Named, so the layout is the same whatever `build.target` says.
        .arg("--target")
        .arg(GUEST_TARGET);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the test guest: {e}"));
    assert!(
        status.success(),
        "building the test guest (tests/test-guest) failed: {status}"
    );
    let built = build_dir.join(GUEST_TARGET).join("release/test-guest");
    let dest = dest_dir.join("test-guest");
    fs::copy(&built, &dest)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", built.display(), dest.display()));
    println!("cargo:rustc-env=FASTVM_TEST_GUEST={}", dest.display());
}
