//! The monitor's build id: a hash of everything its code is made from (this
//! crate's sources, the shared protocol crate's, the lock file, the
//! profile and target). The daemon links this crate too, so it can tell
//! whether the `fastvm-vmm` beside it comes from the same build.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn files_under(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for entry in entries {
            files_under(&entry, out);
        }
    } else if path.is_file() {
        out.push(path.to_path_buf());
    }
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest.join("../..");
    let inputs = [
        manifest.join("src"),
        manifest.join("Cargo.toml"),
        workspace.join("fastvm-proto/src"),
        workspace.join("fastvm-proto/Cargo.toml"),
        workspace.join("Cargo.lock"),
    ];
    let mut hasher = DefaultHasher::new();
    for var in ["PROFILE", "TARGET", "OPT_LEVEL", "CARGO_ENCODED_RUSTFLAGS"] {
        hasher.write(std::env::var(var).unwrap_or_default().as_bytes());
        println!("cargo:rerun-if-env-changed={var}");
    }
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
        let mut files = Vec::new();
        files_under(input, &mut files);
        for file in files {
            hasher.write(
                file.strip_prefix(&workspace)
                    .unwrap_or(&file)
                    .as_os_str()
                    .as_encoded_bytes(),
            );
            hasher.write(&std::fs::read(&file).unwrap_or_default());
        }
    }
    println!("cargo:rustc-env=FASTVM_VMM_BUILD={:016x}", hasher.finish());
}
