//! The guest kernel: `make tinyconfig`, the project's fragment merged on
//! top (`scripts/kconfig/merge_config.sh`), `make olddefconfig`, a check
//! that every required option survived, then `make vmlinux`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ImageError, KERNEL_CONFIG, VMLINUX, io_err};

/// Kernel architecture passed to make.
const ARCH: &str = "ARCH=x86_64";
/// How often a long step reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// One required setting of the fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// `CONFIG_X=y`: must be built in.
    Enabled(String),
    /// `# CONFIG_X is not set`: must be neither `y` nor `m`.
    Disabled(String),
}

/// The settings a fragment requires, in order.
pub fn required_options(fragment: &str) -> Vec<Required> {
    fragment
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            if let Some(name) = line.strip_suffix("=y").filter(|n| n.starts_with("CONFIG_")) {
                return Some(Required::Enabled(name.to_string()));
            }
            let name = line.strip_prefix("# ")?.strip_suffix(" is not set")?;
            name.starts_with("CONFIG_")
                .then(|| Required::Disabled(name.to_string()))
        })
        .collect()
}

/// The requirements of `fragment` that the final `.config` does not meet,
/// each as `CONFIG_X` (wanted `=y`) or `CONFIG_X (must be unset)`.
pub fn missing_options(fragment: &str, dot_config: &str) -> Vec<String> {
    let value_of = |name: &str| {
        let prefix = format!("{name}=");
        dot_config
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
    };
    required_options(fragment)
        .into_iter()
        .filter_map(|req| match req {
            Required::Enabled(name) => (value_of(&name).as_deref() != Some("y")).then_some(name),
            Required::Disabled(name) => matches!(value_of(&name).as_deref(), Some("y" | "m"))
                .then(|| format!("{name} (must be unset)")),
        })
        .collect()
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` with its output appended to `log`; reports progress every
/// [`PROGRESS_EVERY`] with the log's last line.
pub fn run_logged(
    step: &str,
    cmd: &mut Command,
    log: &Path,
    progress: &dyn Fn(&str),
) -> Result<(), ImageError> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| ImageError::Step {
            step: step.to_string(),
            detail: format!("cannot start {:?}: {e}", cmd.get_program()),
        })?;
    let start = Instant::now();
    let mut next_report = start + PROGRESS_EVERY;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(ImageError::Step {
                    step: step.to_string(),
                    detail: format!("{status}; log {}:\n{}", log.display(), log_tail(log, 20)),
                });
            }
            Ok(None) => {}
            Err(e) => {
                return Err(ImageError::Step {
                    step: step.to_string(),
                    detail: e.to_string(),
                });
            }
        }
        if Instant::now() >= next_report {
            next_report += PROGRESS_EVERY;
            progress(&format!(
                "{step}: {}s, {}",
                start.elapsed().as_secs(),
                log_tail(log, 1).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where and how to build the kernel.
#[derive(Debug, Clone)]
pub struct KernelBuild<'a> {
    /// `/usr/src/linux-source-<ver>.tar.xz`.
    pub tarball: &'a Path,
    /// `linux-source-<ver>`: the package and the tarball's top directory.
    pub package: &'a str,
    /// The package's Debian version.
    pub version: &'a str,
    /// The config fragment.
    pub fragment: &'a str,
    /// Scratch space for the source tree (a later build with the same
    /// tree rebuilds incrementally unless the caller removes it).
    pub work_dir: PathBuf,
    /// Parallel make jobs.
    pub jobs: usize,
}

impl KernelBuild<'_> {
    /// Builds `vmlinux` and its `.config` into `out_dir` (which must not exist).
    pub fn build(&self, out_dir: &Path, progress: &dyn Fn(&str)) -> Result<(), ImageError> {
        let work = &self.work_dir;
        fs::create_dir_all(work).map_err(io_err(work))?;
        let log = work.join("build.log");
        let _ = fs::remove_file(&log);
        let tree = work.join(self.package);
        if !tree.join("Makefile").is_file() {
            // Extract next to it and rename, so an interrupted extraction
            // never looks like a source tree.
            progress(&format!("kernel: extracting {}", self.tarball.display()));
            let _ = fs::remove_dir_all(&tree);
            let staging = work.join("extract.tmp");
            let _ = fs::remove_dir_all(&staging);
            fs::create_dir_all(&staging).map_err(io_err(&staging))?;
            run_logged(
                "extract the kernel source",
                Command::new("tar")
                    .arg("-xf")
                    .arg(self.tarball)
                    .arg("-C")
                    .arg(&staging),
                &log,
                progress,
            )?;
            let extracted = staging.join(self.package);
            fs::rename(&extracted, &tree).map_err(io_err(&extracted))?;
            let _ = fs::remove_dir_all(&staging);
        }
        let fragment_path = work.join("fastvm.config");
        fs::write(&fragment_path, self.fragment).map_err(io_err(&fragment_path))?;
        progress("kernel: configuring (tinyconfig + fragment)");
        let make = || {
            let mut c = Command::new("make");
            c.current_dir(&tree).arg(ARCH);
            c
        };
        run_logged("make tinyconfig", make().arg("tinyconfig"), &log, progress)?;
        run_logged(
            "merge the config fragment",
            Command::new("sh")
                .current_dir(&tree)
                .arg("scripts/kconfig/merge_config.sh")
                .args(["-m", ".config"])
                .arg(&fragment_path),
            &log,
            progress,
        )?;
        run_logged(
            "make olddefconfig",
            make().arg("olddefconfig"),
            &log,
            progress,
        )?;
        let dot_config_path = tree.join(".config");
        let dot_config = fs::read_to_string(&dot_config_path).map_err(io_err(&dot_config_path))?;
        let missing = missing_options(self.fragment, &dot_config);
        if !missing.is_empty() {
            return Err(ImageError::MissingOptions(missing));
        }
        progress(&format!(
            "kernel: building vmlinux with {} jobs (several minutes; log {})",
            self.jobs,
            log.display()
        ));
        run_logged(
            "make vmlinux",
            make().arg(format!("-j{}", self.jobs)).arg("vmlinux"),
            &log,
            progress,
        )?;
        let tmp = out_dir.with_extension("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let vmlinux = tree.join("vmlinux");
        fs::copy(&vmlinux, tmp.join(VMLINUX)).map_err(io_err(&vmlinux))?;
        fs::write(tmp.join(KERNEL_CONFIG), &dot_config).map_err(io_err(&tmp))?;
        fs::rename(&tmp, out_dir).map_err(io_err(out_dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_fragment_requires_the_guest_essentials() {
        let req = required_options(super::super::key::KERNEL_FRAGMENT);
        for name in [
            "CONFIG_VIRTIO_MMIO",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
            "CONFIG_VIRTIO_BLK",
            "CONFIG_VIRTIO_NET",
            "CONFIG_VIRTIO_VSOCKETS",
            "CONFIG_SERIAL_8250_CONSOLE",
            "CONFIG_EXT4_FS",
            "CONFIG_DEVTMPFS",
            "CONFIG_KVM_GUEST",
        ] {
            assert!(req.contains(&Required::Enabled(name.into())), "{name}");
        }
        assert!(req.contains(&Required::Disabled("CONFIG_MODULES".into())));
    }

    /// A stand-in source tarball whose Makefile and merge script do just
    /// what the steps need, to check the orchestration without a real build.
    fn fake_source(dir: &Path) -> PathBuf {
        let tree = dir.join("src/linux-source-fake");
        fs::create_dir_all(tree.join("scripts/kconfig")).unwrap();
        fs::write(
            tree.join("Makefile"),
            "tinyconfig:\n\techo CONFIG_TINY=y > .config\nolddefconfig:\n\t@true\n\
             vmlinux:\n\techo kernel > vmlinux\n",
        )
        .unwrap();
        fs::write(
            tree.join("scripts/kconfig/merge_config.sh"),
            "#!/bin/sh\n# -m .config FRAGMENT\ncat \"$3\" >> \"$2\"\n",
        )
        .unwrap();
        let tarball = dir.join("linux-source-fake.tar.xz");
        let ok = Command::new("tar")
            .arg("-cJf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir.join("src"))
            .arg("linux-source-fake")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        tarball
    }

    #[test]
    fn the_steps_run_in_order_and_the_result_is_checked() {
        if super::super::tools::which("make").is_none() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP the_steps_run_in_order_and_the_result_is_checked: make is not installed"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tarball = fake_source(dir.path());
        let build = |fragment: &'static str, out: &str| {
            KernelBuild {
                tarball: &tarball,
                package: "linux-source-fake",
                version: "1",
                fragment,
                work_dir: dir.path().join("work"),
                jobs: 1,
            }
            .build(&dir.path().join(out), &|_| {})
        };
        build("CONFIG_A=y\n", "good").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("good").join(VMLINUX)).unwrap(),
            "kernel\n"
        );
        let config = fs::read_to_string(dir.path().join("good").join(KERNEL_CONFIG)).unwrap();
        assert_eq!(config, "CONFIG_TINY=y\nCONFIG_A=y\n");
        assert!(!dir.path().join("work/extract.tmp").exists());

        // The tree is reused; a requirement the config breaks fails the build.
        match build("CONFIG_A=y\n# CONFIG_TINY is not set\n", "bad") {
            Err(ImageError::MissingOptions(names)) => {
                assert_eq!(names, vec!["CONFIG_TINY (must be unset)"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("bad").exists());
    }

    #[test]
    fn missing_and_forbidden_options_are_named() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=y\n";
        let config = "CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=y\n# CONFIG_D is not set\n";
        assert_eq!(
            missing_options(fragment, config),
            vec!["CONFIG_B", "CONFIG_C (must be unset)", "CONFIG_D"]
        );
        let good = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_D=y\n# CONFIG_C is not set\n";
        assert!(missing_options(fragment, good).is_empty());
        // A prefix of another option's name does not count.
        assert_eq!(
            missing_options("CONFIG_A=y\n", "CONFIG_AB=y\n"),
            vec!["CONFIG_A"]
        );
    }
}
