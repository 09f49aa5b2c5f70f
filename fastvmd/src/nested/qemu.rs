//! Runs L1 under QEMU's software emulation with AMD SVM: the kernel log on
//! the first serial line (a file), the payload's output on the second,
//! read as it arrives; a deadline ends a run that hangs.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::initramfs::EXIT_MARK;
use super::{NestedError, QEMU, which};

/// Results kept from one run; lines past this are still handed on.
const MAX_RESULTS: usize = 16 << 20;

/// The emulated CPU: every TCG feature, with SVM and nested paging.
pub const CPU: &str = "max,+svm,+npt";

/// One L1 boot.
#[derive(Debug, Clone)]
pub struct L1Machine {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Where the two serial logs are written.
    pub workdir: PathBuf,
    /// The run is ended (QEMU killed) after this long.
    pub timeout: Duration,
}

/// What an L1 run left.
#[derive(Debug)]
pub struct L1Outcome {
    /// Everything the payload wrote to the results line.
    pub results: String,
    /// The payload's exit status, when it ended (`L1 EXIT <n>`).
    pub payload_exit: Option<i32>,
    /// QEMU's exit status; `None` when the deadline killed it.
    pub qemu_exit: Option<ExitStatus>,
    /// The console log (kernel messages, payload stderr).
    pub console: PathBuf,
    pub elapsed: Duration,
}

impl L1Outcome {
    /// The last `lines` lines of the console log.
    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The oldest QEMU whose emulated SVM runs L2 guests: 7.2 (Debian 12's)
/// boots L1 but locks its CPUs up once a guest runs; 10.0 is tested.
pub const MIN_QEMU_MAJOR: u32 = 10;

/// Why QEMU cannot run nested Linux here, or `None`.
pub fn unavailable() -> Option<String> {
    let install = "install it with `apt-get install qemu-system-x86` (on Debian 12: \
                   `apt-get install -t bookworm-backports qemu-system-x86`)";
    if which(QEMU).is_none() {
        return Some(format!("{QEMU} not found: {install}"));
    }
    let version = Command::new(QEMU).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&version.stdout);
    match major_version(&text) {
        Some(major) if major >= MIN_QEMU_MAJOR => None,
        found => Some(format!(
            "{QEMU} {} cannot run guests under emulated SVM (needs {MIN_QEMU_MAJOR} or newer): \
             {install}",
            found.map_or_else(|| "of unknown version".to_string(), |m| m.to_string())
        )),
    }
}

/// The major version in `qemu --version` output
/// (`QEMU emulator version 10.0.2 (...)`).
fn major_version(text: &str) -> Option<u32> {
    let rest = text.split("version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl L1Machine {
    /// Boots L1 and waits for it to power off (or the deadline), handing
    /// each line of the results to `on_line` as it arrives.
    pub fn run(&self, on_line: &mut dyn FnMut(&str)) -> Result<L1Outcome, NestedError> {
        if let Some(why) = unavailable() {
            return Err(NestedError::Missing(why));
        }
        let console = self.workdir.join("l1-console.log");
        let results = self.workdir.join("l1-results.log");
        for f in [&console, &results] {
            std::fs::write(f, b"").map_err(|e| NestedError::step("L1 logs", e))?;
        }
        // A file, not a pipe: QEMU never blocks on what nobody reads.
        let stderr_path = self.workdir.join("qemu-stderr.log");
        let stderr_file =
            std::fs::File::create(&stderr_path).map_err(|e| NestedError::step("L1 logs", e))?;
        let started = Instant::now();
        let child = Command::new(QEMU)
            .args(["-accel", "tcg,thread=multi", "-cpu", CPU, "-machine", "q35"])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args([
                "-append",
                "console=ttyS0 panic=-1 loglevel=4 mitigations=off",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", results.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file)
            .spawn()
            .map_err(|e| NestedError::step(QEMU, e))?;
        let mut qemu = Killer(child);
        let mut reader = LineReader::open(&results)?;
        let mut text = String::new();
        let mut payload_exit = None;
        let deadline = started + self.timeout;
        let qemu_exit = loop {
            let exited = qemu.0.try_wait().map_err(|e| NestedError::step(QEMU, e))?;
            for line in reader.lines() {
                if let Some(code) = line.strip_prefix(EXIT_MARK) {
                    payload_exit = code.trim().parse().ok();
                }
                on_line(&line);
                if text.len() < MAX_RESULTS {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            if let Some(status) = exited {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if let Some(status) = qemu_exit
            && !status.success()
            && text.is_empty()
        {
            let stderr = std::fs::read(&stderr_path).unwrap_or_default();
            let stderr = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(4096)..]);
            return Err(NestedError::step(
                QEMU,
                format!("{status}: {}", stderr.trim()),
            ));
        }
        Ok(L1Outcome {
            results: text,
            payload_exit,
            qemu_exit,
            console,
            elapsed: started.elapsed(),
        })
    }
}

/// Whole lines appended to a file since the last look.
struct LineReader {
    file: std::fs::File,
    pos: u64,
    partial: Vec<u8>,
}

impl LineReader {
    fn open(path: &Path) -> Result<Self, NestedError> {
        let file = std::fs::File::open(path).map_err(|e| NestedError::step("L1 results", e))?;
        Ok(LineReader {
            file,
            pos: 0,
            partial: Vec::new(),
        })
    }

    fn lines(&mut self) -> Vec<String> {
        let mut buf = Vec::new();
        if self.file.seek(SeekFrom::Start(self.pos)).is_ok()
            && let Ok(n) = self.file.read_to_end(&mut buf)
        {
            self.pos += n as u64;
        }
        self.partial.extend_from_slice(&buf);
        // A line longer than this is cut into pieces of it.
        const MAX_LINE: usize = 64 << 10;
        if self.partial.len() > MAX_LINE && !self.partial[..MAX_LINE].contains(&b'\n') {
            self.partial.insert(MAX_LINE, b'\n');
        }
        let mut out = Vec::new();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line);
            out.push(line.trim_end_matches(['\n', '\r']).to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_major_version() {
        let debian = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n";
        assert_eq!(major_version(debian), Some(10));
        assert_eq!(
            major_version("QEMU emulator version 7.2.22 (Debian)"),
            Some(7)
        );
        assert_eq!(major_version("something else"), None);
    }
}
