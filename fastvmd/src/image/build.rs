//! `fastvmd image build`: checks the host tools first (naming the package
//! of any that is missing), then makes the agent, the kernel and the root
//! filesystem, reusing every cached artefact whose inputs did not change,
//! and finally points `<cache>/current` at the result.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::kernel::KernelBuild;
use super::{
    AGENT, CURRENT, Image, ImageError, KERNEL_CONFIG, ROOTFS, ROOTFS_SIZE_GIB, VMLINUX, io_err,
    key, rootfs, tools,
};

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The image cache directory.
    pub cache: PathBuf,
    /// A prebuilt static agent instead of building one from the workspace.
    pub agent: Option<PathBuf>,
    /// Parallel jobs for the kernel build.
    pub jobs: usize,
    /// Keep the kernel source tree after a build (incremental rebuilds)
    /// instead of removing it.
    pub keep_kernel_tree: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: Image,
    pub kernel_key: String,
    pub rootfs_key: String,
    pub kernel_cached: bool,
    pub rootfs_cached: bool,
}

/// Holds an exclusive lock on the cache while a build runs.
struct CacheLock(#[allow(dead_code)] fs::File);

fn lock_cache(cache: &Path) -> Result<CacheLock, ImageError> {
    let path = cache.join("build.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor we own; no memory involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err(&path)(std::io::Error::last_os_error()));
    }
    Ok(CacheLock(file))
}

/// Checks every tool and input before any long step.
fn preflight() -> Result<(PathBuf, String, String, String), ImageError> {
    tools::require(&tools::KERNEL_TOOLS, &tools::KERNEL_HEADERS)?;
    tools::require(
        &tools::ROOTFS_TOOLS,
        &[(tools::BUSYBOX, tools::BUSYBOX_PACKAGE)],
    )?;
    let (tarball, package) = tools::linux_source_tarball()?;
    let source_version = tools::package_version(&package).unwrap_or_else(|| "unknown".into());
    let busybox = fs::read(tools::BUSYBOX).map_err(io_err(Path::new(tools::BUSYBOX)))?;
    if !super::elf::linkage(&busybox).is_ok_and(|l| l.is_static()) {
        return Err(ImageError::MissingTool {
            tool: format!("a static {}", tools::BUSYBOX),
            package: tools::BUSYBOX_PACKAGE,
        });
    }
    let busybox_version = tools::package_version(tools::BUSYBOX_PACKAGE)
        .unwrap_or_else(|| format!("sha256-{}", key::hash_parts(&[("busybox", &busybox)])));
    Ok((tarball, package, source_version, busybox_version))
}

/// Replaces the symlink `link` with one to `target`, atomically.
fn replace_symlink(target: &Path, link: &Path) -> Result<(), ImageError> {
    let tmp = link.with_extension("new");
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).map_err(io_err(&tmp))?;
    fs::rename(&tmp, link).map_err(io_err(link))
}

/// Builds (or reuses) the image; `progress` gets one line per step.
pub fn build(opts: &BuildOptions, progress: &dyn Fn(&str)) -> Result<Built, ImageError> {
    let cache = &opts.cache;
    fs::create_dir_all(cache).map_err(io_err(cache))?;
    let (tarball, package, source_version, busybox_version) = preflight()?;
    let _lock = lock_cache(cache)?;
    let work = cache.join("build");

    let agent =
        super::agent_binary::obtain(opts.agent.as_deref(), &work.join("agent-target"), progress)?;

    let kernel_key = key::kernel_key(&package, &source_version, key::KERNEL_FRAGMENT);
    let kernel_dir = cache.join(format!("kernel-{kernel_key}"));
    let kernel_cached = kernel_dir.join(VMLINUX).is_file();
    if kernel_cached {
        progress(&format!("kernel: cached ({})", kernel_dir.display()));
    } else {
        KernelBuild {
            tarball: &tarball,
            package: &package,
            version: &source_version,
            fragment: key::KERNEL_FRAGMENT,
            work_dir: work.join(format!("{package}-{source_version}")),
            jobs: opts.jobs,
        }
        .build(&kernel_dir, progress)?;
        progress(&format!("kernel: built ({})", kernel_dir.display()));
    }
    // The source and object tree is of use only to rebuild this kernel
    // (also one an older build left behind).
    let tree = work.join(format!("{package}-{source_version}"));
    if !opts.keep_kernel_tree && tree.exists() {
        progress(&format!(
            "kernel: removing the build tree {}",
            tree.display()
        ));
        let _ = fs::remove_dir_all(&tree);
    }

    let rootfs_key = key::rootfs_key(&busybox_version, &agent, ROOTFS_SIZE_GIB);
    let rootfs_dir = cache.join(format!("rootfs-{rootfs_key}"));
    let rootfs_cached = rootfs_dir.join(ROOTFS).is_file();
    if rootfs_cached {
        progress(&format!("rootfs: cached ({})", rootfs_dir.display()));
    } else {
        let staging = work.join(format!("rootfs-{rootfs_key}"));
        let _ = fs::remove_dir_all(&staging);
        progress("rootfs: staging busybox, applets and /sbin/init");
        rootfs::stage(&staging, Path::new(tools::BUSYBOX), &agent)?;
        let log = work.join("rootfs.log");
        let _ = fs::remove_file(&log);
        rootfs::make_image(
            &staging,
            &rootfs_dir,
            &agent,
            ROOTFS_SIZE_GIB,
            &log,
            progress,
        )?;
        let _ = fs::remove_dir_all(&staging);
        progress(&format!("rootfs: built ({})", rootfs_dir.display()));
    }

    let image_key = key::image_key(&kernel_key, &rootfs_key);
    let image_name = format!("image-{image_key}");
    let image_dir = cache.join(&image_name);
    if !image_dir.is_dir() {
        let tmp = cache.join(format!("{image_name}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let kernel_rel = PathBuf::from("..").join(format!("kernel-{kernel_key}"));
        let rootfs_rel = PathBuf::from("..").join(format!("rootfs-{rootfs_key}"));
        for (dir, name) in [
            (&kernel_rel, VMLINUX),
            (&kernel_rel, KERNEL_CONFIG),
            (&rootfs_rel, ROOTFS),
            (&rootfs_rel, AGENT),
        ] {
            let link = tmp.join(name);
            symlink(dir.join(name), &link).map_err(io_err(&link))?;
        }
        fs::rename(&tmp, &image_dir).map_err(io_err(&image_dir))?;
    }
    replace_symlink(Path::new(&image_name), &cache.join(CURRENT))?;
    Ok(Built {
        image: Image::in_dir(&image_dir),
        kernel_key,
        rootfs_key,
        kernel_cached,
        rootfs_cached,
    })
}
