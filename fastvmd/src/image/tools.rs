//! The host programs and files the image build needs, and the Debian
//! package that provides each, so a missing one is named with the exact
//! `apt-get install` line.

use std::path::{Path, PathBuf};

use super::ImageError;

/// A program looked up on `PATH`, and its package.
pub const KERNEL_TOOLS: [(&str, &str); 8] = [
    ("gcc", "gcc"),
    ("make", "make"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("perl", "perl"),
];
/// Header files the kernel's host tools include (objtool needs libelf).
pub const KERNEL_HEADERS: [(&str, &str); 1] = [("/usr/include/gelf.h", "libelf-dev")];
/// Programs the root filesystem needs.
pub const ROOTFS_TOOLS: [(&str, &str); 2] = [("mkfs.ext4", "e2fsprogs"), ("dpkg-query", "dpkg")];
/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// Package of [`BUSYBOX`].
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Where `linux-source` puts its tarballs.
pub const LINUX_SOURCE_DIR: &str = "/usr/src";
/// Package providing the kernel source.
pub const LINUX_SOURCE_PACKAGE: &str = "linux-source";

/// Finds `tool` on `PATH` (also in the sbin directories, where mkfs lives).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Fails with the package to install for the first program or file missing.
pub fn require(
    programs: &[(&str, &'static str)],
    files: &[(&str, &'static str)],
) -> Result<(), ImageError> {
    for (tool, package) in programs {
        if which(tool).is_none() {
            return Err(ImageError::MissingTool {
                tool: (*tool).to_string(),
                package,
            });
        }
    }
    for (file, package) in files {
        if !Path::new(file).exists() {
            return Err(ImageError::MissingTool {
                tool: (*file).to_string(),
                package,
            });
        }
    }
    Ok(())
}

/// The installed version of a Debian package.
pub fn package_version(package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !version.is_empty()).then_some(version)
}

/// The newest `linux-source-<ver>.tar.xz` in [`LINUX_SOURCE_DIR`] and the
/// name of its package (`linux-source-<ver>`).
pub fn linux_source_tarball() -> Result<(PathBuf, String), ImageError> {
    let missing = || ImageError::MissingTool {
        tool: format!("{LINUX_SOURCE_DIR}/linux-source-*.tar.xz"),
        package: LINUX_SOURCE_PACKAGE,
    };
    let dir = std::fs::read_dir(LINUX_SOURCE_DIR).map_err(|_| missing())?;
    let mut found: Vec<(PathBuf, String)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".tar.xz")?;
            stem.starts_with("linux-source-")
                .then(|| (e.path(), stem.to_string()))
        })
        .collect();
    found.sort_by(|a, b| version_order(&a.1, &b.1));
    found.pop().ok_or_else(missing)
}

/// Orders `linux-source-6.1` before `linux-source-6.12` (numerically).
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    nums(a).cmp(&nums(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let err = require(&[("sh", "dash"), ("no-such-tool-xyz", "xyz-utils")], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no-such-tool-xyz not found: install it with `apt-get install xyz-utils`"
        );
        let err = require(&[], &[("/no/such/header.h", "libfoo-dev")]).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install libfoo-dev"),
            "{err}"
        );
        assert!(require(&[("sh", "dash")], &[("/", "base-files")]).is_ok());
    }

    #[test]
    fn source_versions_order_numerically() {
        use std::cmp::Ordering::Less;
        assert_eq!(version_order("linux-source-6.1", "linux-source-6.12"), Less);
        assert_eq!(version_order("linux-source-5.10", "linux-source-6.1"), Less);
    }
}
