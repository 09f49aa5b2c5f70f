//! The L1 kernel: Debian's `linux-image-*-amd64`, whose modules carry KVM
//! for AMD (`kvm-amd`), fetched with `apt-get download` and cached by
//! package name and version:
//!
//! ```text
//! <cache>/<package>_<version>/vmlinuz
//! <cache>/<package>_<version>/modules/<name>.ko   in MODULES order
//! ```
//!
//! With no package lists (no `apt-get update`) or no network, the newest
//! cached kernel is used.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{NestedError, run};

/// The meta package whose dependency names the current kernel package.
pub const META_PACKAGE: &str = "linux-image-amd64";
/// Modules L1 loads, in order (each after those it depends on): KVM for
/// AMD SVM, the tap device, veth (the link to a namespace standing for the
/// internet) and what `fastvmd`'s NAT table needs of netfilter.
pub const MODULES: &[&str] = &[
    "irqbypass",
    "kvm",
    "ccp",
    "kvm-amd",
    "tun",
    "veth",
    "crc32c_generic",
    "libcrc32c",
    "nfnetlink",
    "nf_tables",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nf_conntrack",
    "nf_nat",
    "nft_chain_nat",
    "nft_masq",
];

/// A cached L1 kernel.
#[derive(Debug, Clone)]
pub struct L1Kernel {
    /// `<package>_<version>`.
    pub name: String,
    /// The bootable kernel image.
    pub vmlinuz: PathBuf,
    /// The [`MODULES`], uncompressed, in load order.
    pub modules: Vec<PathBuf>,
}

impl L1Kernel {
    fn in_dir(dir: &Path) -> Option<L1Kernel> {
        let vmlinuz = dir.join("vmlinuz");
        let modules: Vec<PathBuf> = MODULES
            .iter()
            .map(|m| dir.join("modules").join(format!("{m}.ko")))
            .collect();
        let whole = vmlinuz.is_file() && modules.iter().all(|m| m.is_file());
        let name = dir.file_name()?.to_string_lossy().into_owned();
        whole.then_some(L1Kernel {
            name,
            vmlinuz,
            modules,
        })
    }
}

/// The kernel package apt would install now and its version, if the
/// package lists know it.
fn candidate() -> Option<(String, String)> {
    let deps = Command::new("apt-cache")
        .args(["depends", META_PACKAGE])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&deps.stdout);
    let package = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))?
        .to_string();
    let policy = Command::new("apt-cache")
        .args(["policy", &package])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&policy.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate: "))
        .find(|v| *v != "(none)")?
        .to_string();
    Some((package, version))
}

/// The newest complete kernel already in `cache`.
fn newest_cached(cache: &Path) -> Option<L1Kernel> {
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort();
    dirs.iter().rev().find_map(|(_, d)| L1Kernel::in_dir(d))
}

/// The L1 kernel in `cache`, downloading and unpacking the current package
/// first when it is not there. `progress` gets a line per long step.
pub fn fetch(cache: &Path, progress: &dyn Fn(&str)) -> Result<L1Kernel, NestedError> {
    let Some((package, version)) = candidate() else {
        return newest_cached(cache).ok_or_else(|| {
            NestedError::Missing(format!(
                "no L1 kernel: apt knows no {META_PACKAGE} (run `apt-get update`) and {} \
                 holds none",
                cache.display()
            ))
        });
    };
    let dir = cache.join(format!("{package}_{version}"));
    if let Some(kernel) = L1Kernel::in_dir(&dir) {
        return Ok(kernel);
    }
    progress(&format!("L1 kernel: apt-get download {package}={version}"));
    std::fs::create_dir_all(cache).map_err(|e| NestedError::step("L1 kernel cache", e))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(cache)
        .map_err(|e| NestedError::step("L1 kernel cache", e))?;
    let download = run(
        "apt-get download",
        Command::new("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(work.path()),
    );
    if let Err(e) = download {
        return newest_cached(cache).ok_or(NestedError::Missing(format!(
            "no L1 kernel: {e} (nothing cached in {})",
            cache.display()
        )));
    }
    let deb = std::fs::read_dir(work.path())
        .map_err(|e| NestedError::step("apt-get download", e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| NestedError::step("apt-get download", "no .deb appeared"))?;
    let tree = work.path().join("tree");
    run(
        "dpkg-deb -x",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
    )?;
    let staged = work.path().join("kernel");
    stage(&tree, &staged)?;
    if dir.exists() {
        // Staged by an older build with fewer modules.
        std::fs::remove_dir_all(&dir).map_err(|e| NestedError::step("L1 kernel cache", e))?;
    }
    match std::fs::rename(&staged, &dir) {
        Ok(()) => {}
        // Another run unpacked the same kernel meanwhile.
        Err(_) if L1Kernel::in_dir(&dir).is_some() => {}
        Err(e) => return Err(NestedError::step("L1 kernel cache", e)),
    }
    L1Kernel::in_dir(&dir)
        .ok_or_else(|| NestedError::step("L1 kernel cache", "incomplete after unpacking"))
}

/// Copies the kernel image and the [`MODULES`] (uncompressed) from an
/// unpacked package `tree` into `out`.
fn stage(tree: &Path, out: &Path) -> Result<(), NestedError> {
    let io = |e: std::io::Error| NestedError::step("L1 kernel unpack", e);
    std::fs::create_dir_all(out.join("modules")).map_err(io)?;
    let vmlinuz = std::fs::read_dir(tree.join("boot"))
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| NestedError::step("L1 kernel unpack", "no boot/vmlinuz-* in the package"))?;
    std::fs::copy(&vmlinuz, out.join("vmlinuz")).map_err(io)?;
    let all = find_files(&tree.join("lib/modules"));
    for module in MODULES {
        let found = all.iter().find_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let base = name.split(".ko").next()?;
            (base == *module && name.contains(".ko")).then(|| (p.clone(), name))
        });
        let Some((path, name)) = found else {
            return Err(NestedError::step(
                "L1 kernel unpack",
                format!("module {module} is not in the package"),
            ));
        };
        let dest = out.join("modules").join(format!("{module}.ko"));
        let decompress = match name.rsplit('.').next() {
            Some("xz") => Some("xz"),
            Some("zst") => Some("zstd"),
            _ => None,
        };
        match decompress {
            None => {
                std::fs::copy(&path, &dest).map_err(io)?;
            }
            Some(tool) => {
                let data = run(
                    "module decompress",
                    Command::new(tool).arg("-dc").arg(&path),
                )?;
                std::fs::write(&dest, data).map_err(io)?;
            }
        }
    }
    Ok(())
}

fn find_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(entry.path()),
                Ok(t) if t.is_file() => out.push(entry.path()),
                _ => {}
            }
        }
    }
    out
}
