//! One monitor process: how it is started, found and stopped.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::SupervisorError;
use super::control_client::ControlClient;
use crate::net::tap::Tap;
use crate::socket_wait::SocketWatch;
use crate::vmm::MONITOR_PROGRAM;
use crate::vmm::cli::VmmArgs;
use crate::vmm::control::Request;
use crate::vmm::exit_record::{EXIT_RECORD, ExitRecord};
use crate::vmm::jail::{JailIds, vm_files};
use crate::vmm::machine::CONTROL_SOCKET;

/// Name of the monitor's log (its stderr) in the VM directory.
pub const MONITOR_LOG: &str = "monitor.log";
/// Name of a booted VM's disk in its directory (restores create the same).
pub const DISK_FILE: &str = "disk";
/// The VM's ingress policy as its monitor reads it at start.
pub const FIREWALL_FILE: &str = "firewall.json";
/// How long a monitor may take to answer its first status request.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    /// VM id: the directory name.
    pub id: String,
    /// Boot this kernel, or restore this snapshot directory.
    pub source: MonitorSource,
    /// Disk size in GiB (a sparse file; for restores, grow-only).
    pub disk_gib: u64,
    /// The guest's vsock CID.
    pub vsock_cid: u32,
    /// The VM's NIC, when the host gives VMs a network.
    pub nic: Option<NicSpec>,
    /// The VM's cgroup limits (none: no cgroup).
    pub limits: Option<super::cgroups::ResourceLimits>,
    /// The ingress policy, as the API's JSON (the snapshot's is kept when
    /// absent on a restore).
    pub firewall_json: Option<String>,
}

/// A VM's NIC: its tap, MAC and address.
#[derive(Debug, Clone)]
pub struct NicSpec {
    pub tap: String,
    pub mac: crate::net::addr::Mac,
    pub addr: std::net::Ipv6Addr,
    /// The VM's IPv4 address and its gateway, when it has one.
    pub ipv4: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
}

/// Where the VM comes from.
#[derive(Debug, Clone)]
pub enum MonitorSource {
    Boot {
        kernel: PathBuf,
        cmdline: String,
        vcpus: u8,
        memory_mib: u64,
        /// The disk starts as a copy of this image (reflink or sparse copy);
        /// empty when `None`.
        base_disk: Option<PathBuf>,
    },
    Restore {
        snapshot: PathBuf,
    },
}

fn prepare_err(path: &Path) -> impl FnOnce(std::io::Error) -> SupervisorError + '_ {
    move |source| SupervisorError::Prepare {
        path: path.display().to_string(),
        source,
    }
}

fn last_log_line(dir: &Path) -> String {
    vm_files::read_tail(&dir.join(MONITOR_LOG), 16 << 10)
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .and_then(|log| {
            log.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no output".into())
}

/// Starts the monitor in `dir`, jailed as `ids`, and waits for it to answer
/// on its control socket. The daemon makes the VM's tap (the monitor has no
/// capability to) and hands it over as the monitor's stdin, and the
/// monitors' network namespace as its stdout: descriptors passed that way
/// need no fork of the daemon.
pub fn start(
    exe: &Path,
    dir: &Path,
    spec: &MonitorSpec,
    ids: JailIds,
    cgroups: &[PathBuf],
) -> Result<u32, SupervisorError> {
    fs::create_dir_all(dir).map_err(prepare_err(dir))?;
    // How an earlier monitor here ended says nothing about this one.
    ExitRecord::remove(dir).map_err(|e| SupervisorError::Prepare {
        path: dir.join(EXIT_RECORD).display().to_string(),
        source: std::io::Error::other(e),
    })?;
    let log = vm_files::open_regular(
        &dir.join(MONITOR_LOG),
        OpenOptions::new().create(true).append(true),
    )
    .map_err(prepare_err(dir))?;
    let mut args = VmmArgs::new(dir.to_path_buf());
    args.vsock_cid = Some(u64::from(spec.vsock_cid));
    args.uid = Some(ids.uid);
    args.gid = Some(ids.gid);
    args.cgroup = cgroups.to_vec();
    let mut cmd = Command::new(exe);
    let netns = super::netns::shared()
        .and_then(|ns| {
            ns.try_clone_to_owned()
                .map_err(|e| format!("monitors' network namespace: {e}"))
        })
        .map_err(SupervisorError::Network)?;
    args.netns_fd = Some(1);
    cmd.stdout(Stdio::from(netns));
    cmd.stdin(Stdio::null());
    if let Some(nic) = &spec.nic {
        let tap = Tap::open(&nic.tap).map_err(|e| SupervisorError::Network(e.to_string()))?;
        args.tap = Some(nic.tap.clone());
        args.tap_fd = Some(0);
        args.mac = Some(nic.mac);
        cmd.stdin(Stdio::from(tap.into_fd()));
    }
    // A booted VM without a NIC has no policy to enforce; a clone's
    // snapshot may have a NIC even when this start gives it no tap.
    let restore = matches!(spec.source, MonitorSource::Restore { .. });
    if let Some(policy) = spec
        .firewall_json
        .as_ref()
        .filter(|_| spec.nic.is_some() || restore)
    {
        // Handed as a file in the VM directory, never on the command line.
        let file = dir.join(FIREWALL_FILE);
        vm_files::open_regular(
            &file,
            OpenOptions::new().create(true).truncate(true).write(true),
        )
        .and_then(|mut f| f.write_all(policy.as_bytes()))
        .map_err(prepare_err(&file))?;
        args.firewall_file = Some(FIREWALL_FILE.into());
    }
    match &spec.source {
        MonitorSource::Boot {
            kernel,
            cmdline,
            vcpus,
            memory_mib,
            base_disk,
        } => {
            let disk = dir.join(DISK_FILE);
            if let Some(base) = base_disk
                && !disk.exists()
            {
                crate::vmm::snapshot::disk::clone_disk(base, &disk).map_err(prepare_err(&disk))?;
            }
            let file = vm_files::open_regular(
                &disk,
                OpenOptions::new().create(true).truncate(false).write(true),
            )
            .map_err(prepare_err(&disk))?;
            let len = file.metadata().map_err(prepare_err(&disk))?.len();
            // Grow to the requested size, never shrink a copied image.
            // A size past what a file can be fails here (EFBIG), whole.
            file.set_len(len.max(spec.disk_gib.saturating_mul(1 << 30)))
                .map_err(prepare_err(&disk))?;
            args.cmdline = match &spec.nic {
                Some(nic) => {
                    let mut words =
                        format!("{cmdline} {}", crate::net::addr::guest_cmdline(nic.addr));
                    if let Some((addr4, gateway4)) = nic.ipv4 {
                        words.push(' ');
                        words.push_str(&crate::vmm::net::addr4::guest_cmdline(addr4, gateway4));
                    }
                    words
                }
                None => cmdline.clone(),
            };
            args.kernel = Some(kernel.clone());
            args.vcpus = Some(*vcpus);
            args.memory_mib = Some(*memory_mib);
            args.disk = Some(disk);
        }
        MonitorSource::Restore { snapshot } => {
            args.restore = Some(snapshot.clone());
            args.disk_gib = Some(spec.disk_gib);
        }
    }
    cmd.args(args.to_args());
    // Watched before the monitor starts: waiting for its control socket
    // then costs no CPU the starting monitor could use.
    let mut watch = SocketWatch::new(dir).map_err(prepare_err(dir))?;
    let mut child = cmd
        .stderr(log)
        // Its own process group: a Ctrl-C or the daemon's death leaves VMs running.
        .process_group(0)
        .spawn()
        .map_err(SupervisorError::Spawn)?;
    // The tap is the monitor's alone now: it goes away with the monitor.
    drop(cmd);
    let pid = child.id();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let connected = watch.connect(CONTROL_SOCKET, deadline, || {
            child.try_wait().ok().flatten().map(|s| s.to_string())
        });
        // The status call waits for the monitor to serve its socket.
        let ready = connected.ok().map(|stream| {
            super::peer::ensure_monitor(&stream, dir)?;
            ControlClient::from_stream(stream).and_then(|mut c| c.call(&Request::Status))
        });
        if matches!(ready, Some(Ok(_))) {
            break;
        }
        // A reaped child keeps answering try_wait with its status.
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SupervisorError::StartFailed(format!(
                "{} ({status})",
                last_log_line(dir)
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SupervisorError::StartTimeout(START_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Reap it when it ends, so it never lingers as a zombie.
    let _ = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
        });
    Ok(pid)
}

pub use crate::vmm::lockdir::monitor_pid;

/// The monitor program, [`MONITOR_PROGRAM`] next to this executable (for a
/// test binary in cargo's `deps/`, next to that directory), refused unless
/// it comes from the same build as this one: the daemon never runs a
/// monitor found anywhere else, nor a stale one.
pub fn monitor_program() -> Result<PathBuf, String> {
    static FOUND: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| find_monitor_program().and_then(|exe| same_build(&exe).map(|()| exe)))
        .clone()
}

/// Whether `exe --version` names this build ([`crate::vmm::VERSION`]).
fn same_build(exe: &Path) -> Result<(), String> {
    let out = Command::new(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let said = String::from_utf8_lossy(&out.stdout);
    if said.trim() == format!("{MONITOR_PROGRAM} {}", crate::vmm::VERSION) {
        return Ok(());
    }
    Err(format!(
        "{} is from another build ({:?}, this daemon is {}): build both with \
         `cargo build -p fastvmd` (`cargo run` builds only the binary it runs)",
        exe.display(),
        said.trim(),
        crate::vmm::VERSION
    ))
}

fn find_monitor_program() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let here = me.parent().unwrap_or(Path::new("/"));
    let mut places = vec![here];
    if here.file_name().is_some_and(|n| n == "deps") {
        places.extend(here.parent());
    }
    places
        .iter()
        .map(|dir| dir.join(MONITOR_PROGRAM))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "the monitor program {MONITOR_PROGRAM} is not next to {} (build it with \
                 `cargo build -p fastvmd`, or install it beside fastvmd)",
                me.display()
            )
        })
}

/// True while a monitor process holds `dir`.
pub fn alive(dir: &Path) -> bool {
    monitor_pid(dir).is_some()
}

/// Asks the monitor in `dir` to stop; kills it if it is still there after
/// `grace`.
pub fn stop(dir: &Path, grace: Duration) {
    let Some(pid) = monitor_pid(dir) else {
        return;
    };
    if let Ok(mut c) = ControlClient::connect_to_monitor(dir) {
        let _ = c.call(&Request::Stop);
    }
    let deadline = Instant::now() + grace;
    while !exited(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if alive(dir) {
        // SAFETY: sends SIGKILL to a pid just checked to be this VM's monitor.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// True once `pid` has released everything it held: gone, or a zombie. A
/// process that is still exiting has already lost its command line (so
/// [`alive`] says no) but may not have closed its descriptors yet (its tap
/// would outlive the VM for a moment).
fn exited(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('Z' | 'X') | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_that_exits_at_start_is_reported_with_its_last_words() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vm");
        let spec = MonitorSpec {
            id: "vm".into(),
            source: MonitorSource::Restore {
                snapshot: tmp.path().join("no-such-snapshot"),
            },
            disk_gib: 1,
            vsock_cid: 3,
            limits: None,
            nic: None,
            firewall_json: None,
        };
        // A monitor that says why and exits at once.
        let exe = tmp.path().join("failing-vmm");
        fs::write(
            &exe,
            "#!/bin/sh\necho \"refusing $1 at once\" >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(
            &exe,
            <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .unwrap();
        let started = Instant::now();
        let ids = JailIds {
            uid: 900_000_000,
            gid: 900_000_000,
        };
        let err = start(&exe, &dir, &spec, ids, &[]).unwrap_err();
        assert!(
            matches!(&err, SupervisorError::StartFailed(why) if why.contains("refusing --dir at once")),
            "{err}"
        );
        assert!(started.elapsed() < START_TIMEOUT, "{err}");
    }
}
