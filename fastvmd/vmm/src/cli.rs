//! The monitor's command line: `fastvm-vmm ARGS` (the binary the daemon
//! starts) and `fastvmd vmm ARGS` (the same program inside the daemon's
//! binary, for running a VM by hand) both end in [`run`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{DEFAULT_CMDLINE, NicConfig, RestoreConfig, VmConfig};
use crate::exit::{EXIT_ERROR, ExitEvent};
use crate::exit_record::ExitRecord;
use crate::jail::early::Handed;
use crate::jail::ids::DEFAULT_ID_RANGE;
use crate::jail::{self, JailError, JailIds};
use crate::machine;
use crate::machine::restore_kvm::KvmThread;
use clap::{Args, Parser};

/// The whole `fastvm-vmm` program.
pub fn main() -> ExitCode {
    run(std::env::args_os().collect())
}

/// Runs the monitor with `argv` (`argv[0]` names the program). The jail's
/// first step ([`crate::jail::early`]) is taken at once, while the process
/// has one thread; a restore's KVM work needs nothing from the arguments,
/// so it starts before they are parsed.
pub fn run(argv: Vec<OsString>) -> ExitCode {
    let (vmm, early_kvm, confined) = start(argv);
    crate::log_cap::install(vmm.args.log_max_bytes);
    init_tracing_with(|| crate::log_cap::CappedStderr);
    run_vmm(vmm.args, early_kvm, confined)
}

/// Runs the monitor from arguments already parsed (the process has one
/// thread: nothing else has started yet).
pub fn run_parsed(args: VmmArgs) -> ExitCode {
    set_private_umask();
    crate::log_cap::install(args.log_max_bytes);
    init_tracing_with(|| crate::log_cap::CappedStderr);
    let confined = confine_early(&handed_of(&args), &args.dir, args.no_jail);
    run_vmm(args, None, confined)
}

/// `umask 077`: what the monitor writes is the VM's alone.
pub fn set_private_umask() {
    // SAFETY: umask only replaces the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
}

/// What `--help` says first.
pub const VMM_ABOUT: &str =
    "Run one VM in this process (the monitor). Normally started by `fastvmd serve`";
/// What `--help` says in full.
pub const VMM_LONG_ABOUT: &str = "Run one VM in this process (the monitor). Normally started by \
`fastvmd serve`.\n\nCreates control.sock, console.sock and (with --vsock-cid) vsock.sock in DIR. \
Exit status: 0 stopped by the host (control `stop`, SIGTERM), 10 guest powered off, 11 guest \
rebooted, 12 guest crashed, 1 error.";

/// The monitor's arguments as a program of their own.
#[derive(Debug, Parser)]
#[command(name = "fastvm-vmm", version = crate::VERSION, about = VMM_ABOUT, long_about = VMM_LONG_ABOUT)]
pub struct VmmCommand {
    #[command(flatten)]
    pub args: VmmArgs,
}

/// Takes the jail's first step and starts a restore's KVM thread, then
/// parses `argv`.
fn start(argv: Vec<OsString>) -> (VmmCommand, Option<KvmThread>, Result<(), JailError>) {
    set_private_umask();
    let args = argv.get(1..).unwrap_or_default();
    let only_help = args
        .iter()
        .any(|a| ["-h", "--help", "-V", "--version"].iter().any(|h| a == h));
    let confined = match prescan_value(args, "--dir") {
        Some(dir) if !only_help => confine_early(
            &prescan_handed(args),
            Path::new(&dir),
            args.iter().any(|a| a == "--no-jail"),
        ),
        // clap reports what is missing.
        _ => Ok(()),
    };
    let restore = args
        .iter()
        .any(|a| a == "--restore" || a.as_encoded_bytes().starts_with(b"--restore="));
    // On failure the restore starts its thread itself and reports why.
    let early = (restore && confined.is_ok())
        .then(machine::restore::start_kvm)
        .and_then(Result::ok);
    (VmmCommand::parse_from(argv), early, confined)
}

/// The value of `--name V` or `--name=V` before clap has parsed anything.
fn prescan_value(args: &[OsString], name: &str) -> Option<OsString> {
    prescan_values(args, name).into_iter().next()
}

/// Every value of a repeated `--name V` or `--name=V`.
fn prescan_values(args: &[OsString], name: &str) -> Vec<OsString> {
    let mut values = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == name {
            values.extend(it.next().cloned());
            continue;
        }
        let bytes = arg.as_encoded_bytes();
        if let Some(value) = bytes
            .strip_prefix(name.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
        {
            // SAFETY: split off an OsString's bytes right after an ASCII '='.
            values.push(unsafe { OsString::from_encoded_bytes_unchecked(value.to_vec()) });
        }
    }
    values
}

fn prescan_handed(args: &[OsString]) -> Handed {
    let fd = |name| {
        prescan_value(args, name)
            .and_then(|v| v.to_str().and_then(|v| v.parse::<i32>().ok()))
            .filter(|fd| *fd >= 0)
    };
    Handed {
        tap_fd: fd("--tap-fd"),
        tap_name: prescan_value(args, "--tap").and_then(|v| v.into_string().ok()),
        netns_fd: fd("--netns-fd"),
        cgroups: prescan_values(args, "--cgroup")
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    }
}

fn handed_of(args: &VmmArgs) -> Handed {
    Handed {
        tap_fd: args.tap_fd,
        tap_name: args.tap.clone(),
        netns_fd: args.netns_fd,
        cgroups: args.cgroup.clone(),
    }
}

/// The jail's first step (or, with `--no-jail`, only what it also does:
/// the tap opened, `dir` entered).
fn confine_early(handed: &Handed, dir: &Path, no_jail: bool) -> Result<(), JailError> {
    let start = std::time::Instant::now();
    let tap = if no_jail {
        jail::early::unconfined(handed, dir)?
    } else {
        let tap = jail::early::confine_process(handed, dir)?;
        jail::add_cost(start.elapsed());
        tap
    };
    if let Some(tap) = tap {
        jail::keep_early_tap(tap);
    }
    Ok(())
}

/// Arguments of the monitor (`fastvm-vmm`, `fastvmd vmm`): what the daemon
/// builds ([`VmmArgs::new`], [`VmmArgs::to_args`]) and the monitor parses,
/// one type for both sides.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct VmmArgs {
    /// Directory for the VM's sockets and lock (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Guest kernel: ELF vmlinux or bzImage (or the test guest ELF).
    #[arg(long, value_name = "PATH", required_unless_present = "restore")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk loaded next to the kernel.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; virtio-mmio device entries are appended.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Number of vCPUs (1-32).
    #[arg(long, value_name = "N", required_unless_present = "restore")]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB (at least 16, at most the host's RAM).
    #[arg(long, value_name = "M", required_unless_present = "restore")]
    pub memory_mib: Option<u64>,
    /// Start from this snapshot directory instead of booting (vCPUs, memory
    /// and command line come from the snapshot; the clone gets its own
    /// copy-on-write disk in DIR).
    #[arg(
        long,
        value_name = "SNAPDIR",
        conflicts_with_all = ["kernel", "initrd", "vcpus", "memory_mib", "disk"]
    )]
    pub restore: Option<PathBuf>,
    /// With --restore: grow the clone's disk to N GiB (never shrinks).
    #[arg(long, value_name = "N", requires = "restore")]
    pub disk_gib: Option<u64>,
    /// Raw disk image served as virtio-blk (read-write).
    #[arg(long, value_name = "PATH")]
    pub disk: Option<PathBuf>,
    /// Guest vsock CID (3 or more); enables virtio-vsock and DIR/vsock.sock.
    /// With --restore: the clone's new CID (default: the snapshot's).
    #[arg(long, value_name = "CID")]
    pub vsock_cid: Option<u64>,
    /// Give the VM a virtio-net NIC on this tap (opened, or created when
    /// missing; needs CAP_NET_ADMIN). With --restore: the clone's tap.
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// The NIC's MAC (default: random, 02:xx:...). With --restore: the
    /// clone's new MAC (default: the snapshot's).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<crate::net::addr::Mac>,
    /// The NIC's ingress policy as the API's FirewallPolicy JSON (default:
    /// restricted, no rules). With --restore: default the snapshot's.
    #[arg(long, value_name = "JSON", value_parser = parse_policy)]
    pub firewall: Option<fastvm_proto::api::FirewallPolicy>,
    /// The NIC's ingress policy read from FILE (FirewallPolicy JSON, at most
    /// 1 MiB; relative to DIR), as the daemon gives it: a policy on a
    /// command line is capped by the kernel and readable by every process.
    #[arg(long, value_name = "FILE", conflicts_with = "firewall")]
    pub firewall_file: Option<PathBuf>,
    /// Tell the guest its IPv6 address: appends `fastvm.ip6=ADDR/128
    /// fastvm.gw6=fe80::1` to the command line.
    #[arg(long, value_name = "ADDR", conflicts_with = "restore")]
    pub ip6: Option<std::net::Ipv6Addr>,
    /// The tap as an open descriptor (a tap with vnet headers) instead of
    /// opening --tap by name; --tap, when given too, must name it.
    #[arg(long, value_name = "FD")]
    pub tap_fd: Option<i32>,
    /// Join this network namespace (an open nsfs descriptor) instead of
    /// making a new empty one.
    #[arg(long, value_name = "FD")]
    pub netns_fd: Option<i32>,
    /// Join this cgroup (a directory with `cgroup.procs`) before anything
    /// else; repeat for each cgroup v1 hierarchy.
    #[arg(long, value_name = "DIR")]
    pub cgroup: Vec<PathBuf>,
    /// The unprivileged uid the jailed monitor runs as (default: from
    /// 900000000 up, by vsock CID).
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// The unprivileged gid the jailed monitor runs as (default: the uid).
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Cap of what the monitor logs on stderr (monitor.log): a line that
    /// would pass it empties the file first, with a note.
    #[arg(long, value_name = "BYTES", default_value_t = crate::log_cap::DEFAULT_LOG_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// What a syscall off a thread's seccomp allow list does: kill the
    /// monitor, or (for finding what a list lacks) pass and be logged in
    /// the kernel's audit log.
    #[arg(long, value_enum, default_value_t = crate::seccomp::SeccompMode::Kill)]
    pub seccomp: crate::seccomp::SeccompMode,
    /// Run unconfined: no namespaces, no uid change, capabilities kept.
    /// For debugging only; the daemon never does this.
    #[arg(long)]
    pub no_jail: bool,
}

impl VmmArgs {
    /// Arguments for a monitor in `dir` with nothing else set (what clap
    /// gives when only `--dir` is passed).
    pub fn new(dir: PathBuf) -> VmmArgs {
        VmmArgs {
            dir,
            kernel: None,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            vcpus: None,
            memory_mib: None,
            restore: None,
            disk_gib: None,
            disk: None,
            vsock_cid: None,
            tap: None,
            mac: None,
            firewall: None,
            firewall_file: None,
            ip6: None,
            tap_fd: None,
            netns_fd: None,
            cgroup: Vec::new(),
            uid: None,
            gid: None,
            log_max_bytes: crate::log_cap::DEFAULT_LOG_MAX_BYTES,
            seccomp: crate::seccomp::SeccompMode::Kill,
            no_jail: false,
        }
    }

    /// The command line that parses back into these arguments (after the
    /// program name).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let mut arg = |name: &str, value: OsString| {
            out.push(name.into());
            out.push(value);
        };
        arg("--dir", self.dir.clone().into());
        let paths = [
            ("--kernel", &self.kernel),
            ("--initrd", &self.initrd),
            ("--restore", &self.restore),
            ("--disk", &self.disk),
        ];
        for (name, path) in paths {
            if let Some(path) = path {
                arg(name, path.clone().into());
            }
        }
        if self.cmdline != DEFAULT_CMDLINE {
            arg("--cmdline", self.cmdline.clone().into());
        }
        let numbers = [
            ("--vcpus", self.vcpus.map(u64::from)),
            ("--memory-mib", self.memory_mib),
            ("--disk-gib", self.disk_gib),
            ("--vsock-cid", self.vsock_cid),
            ("--uid", self.uid.map(u64::from)),
            ("--gid", self.gid.map(u64::from)),
        ];
        for (name, number) in numbers {
            if let Some(n) = number {
                arg(name, n.to_string().into());
            }
        }
        for (name, fd) in [("--tap-fd", self.tap_fd), ("--netns-fd", self.netns_fd)] {
            if let Some(fd) = fd {
                arg(name, fd.to_string().into());
            }
        }
        if let Some(tap) = &self.tap {
            arg("--tap", tap.into());
        }
        if let Some(mac) = self.mac {
            arg("--mac", mac.to_string().into());
        }
        if let Some(policy) = &self.firewall {
            let json = serde_json::to_string(policy).unwrap_or_default();
            arg("--firewall", json.into());
        }
        if let Some(file) = &self.firewall_file {
            arg("--firewall-file", file.into());
        }
        if let Some(ip6) = self.ip6 {
            arg("--ip6", ip6.to_string().into());
        }
        for group in &self.cgroup {
            arg("--cgroup", group.clone().into());
        }
        if self.log_max_bytes != crate::log_cap::DEFAULT_LOG_MAX_BYTES {
            arg("--log-max-bytes", self.log_max_bytes.to_string().into());
        }
        if self.seccomp != crate::seccomp::SeccompMode::Kill {
            arg("--seccomp", "log".into());
        }
        if self.no_jail {
            out.push("--no-jail".into());
        }
        out
    }

    /// The ids to drop to, `None` with --no-jail.
    fn jail(&self) -> Result<Option<(JailIds, crate::seccomp::SeccompMode)>, String> {
        if self.no_jail {
            return Ok(None);
        }
        let uid = match self.uid {
            Some(uid) => uid,
            None => {
                let cid = self.vsock_cid.unwrap_or(3);
                DEFAULT_ID_RANGE
                    .for_cid(cid)
                    .unwrap_or(JailIds {
                        uid: DEFAULT_ID_RANGE.start,
                        gid: DEFAULT_ID_RANGE.start,
                    })
                    .uid
            }
        };
        let gid = self.gid.unwrap_or(uid);
        if uid == 0 || gid == 0 {
            return Err("--uid and --gid must not be 0 (root)".into());
        }
        Ok(Some((JailIds { uid, gid }, self.seccomp)))
    }
}

/// Largest policy file `--firewall-file` reads.
pub const MAX_POLICY_FILE: u64 = 1 << 20;

/// The policy in `file` (not followed if a link, regular, bounded).
fn read_policy_file(file: &Path) -> Result<fastvm_proto::api::FirewallPolicy, String> {
    let bytes = jail::vm_files::read_capped(file, MAX_POLICY_FILE)
        .map_err(|e| format!("--firewall-file {}: {e}", file.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("--firewall-file {}: not UTF-8", file.display()))?;
    parse_policy(&text).map_err(|e| format!("--firewall-file {}: {e}", file.display()))
}

fn parse_policy(s: &str) -> Result<fastvm_proto::api::FirewallPolicy, String> {
    let policy: fastvm_proto::api::FirewallPolicy =
        serde_json::from_str(s).map_err(|e| format!("not a FirewallPolicy: {e}"))?;
    fastvm_proto::api::validate_firewall_policy(&policy).map_err(|e| e.to_string())?;
    Ok(policy)
}

/// Logs through `writer`; `RUST_LOG` sets the level (default: warnings).
pub fn init_tracing_with<W>(writer: impl Fn() -> W + Send + Sync + 'static)
where
    W: std::io::Write + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .try_init();
}

/// Runs the monitor and turns its ending into an exit status, also left in
/// the VM directory as its exit record (`vmm::exit_record`) for the daemon.
pub fn run_vmm(
    args: VmmArgs,
    early: Option<KvmThread>,
    confined: Result<(), JailError>,
) -> ExitCode {
    let dir = args.dir.clone();
    let outcome = confined
        .map_err(|e| e.to_string())
        .and_then(|()| run_machine(args, early));
    let (code, reason) = match outcome {
        Ok(event) => {
            vmm_says(format_args!("fastvm-vmm: {}", event.describe()));
            (event.exit_code(), event.describe())
        }
        Err(e) => {
            vmm_says(format_args!("fastvm-vmm: error: {e}"));
            (EXIT_ERROR, format!("error: {e}"))
        }
    };
    // Inside the jail the VM directory is `/`, and its lock is ours.
    // Outside: no record in a directory that never existed (bad --dir),
    // nor in one another live monitor holds (this one was refused its lock).
    let record_dir = if jail::is_jailed() {
        Some(PathBuf::from("/"))
    } else {
        let owner = crate::lockdir::monitor_pid(&dir);
        (dir.is_dir() && owner.is_none_or(|pid| pid == std::process::id())).then_some(dir)
    };
    if let Some(dir) = record_dir
        && let Err(e) = (ExitRecord { code, reason }).write(&dir)
    {
        vmm_says(format_args!(
            "fastvm-vmm: cannot leave the exit record: {e}"
        ));
    }
    ExitCode::from(code as u8)
}

/// Runs the VM described by `args` until it ends.
fn run_machine(args: VmmArgs, early: Option<KvmThread>) -> Result<ExitEvent, String> {
    let mut args = args;
    if let Some(file) = args.firewall_file.take() {
        args.firewall = Some(read_policy_file(&file)?);
    }
    let tap = match (args.tap.clone(), jail::early_tap_name()) {
        (Some(asked), Some(handed)) if asked != handed => {
            return Err(format!("--tap {asked}, but --tap-fd is tap {handed}"));
        }
        (asked, handed) => asked.or(handed),
    };
    if args.restore.is_none() && tap.is_none() && (args.mac.is_some() || args.firewall.is_some()) {
        return Err("--mac and --firewall describe a NIC: give --tap too".into());
    }
    let jail = args.jail()?;
    if let Some((ids, seccomp)) = jail {
        jail::root::prepare(ids, seccomp);
    }
    // The first step entered the VM directory: the monitor names what is
    // in it relatively, which stays true inside the jail, where it is `/`.
    let dir = PathBuf::from(".");
    let outcome = match args.restore {
        Some(snapshot) => machine::restore_and_run(
            &RestoreConfig {
                snapshot,
                dir,
                disk_gib: args.disk_gib,
                vsock_cid: args.vsock_cid,
                tap,
                mac: args.mac,
                firewall: args.firewall,
            },
            early,
            jail,
        ),
        None => machine::boot_and_run(
            &VmConfig {
                nic: match tap {
                    Some(tap) => match args.mac.map_or_else(crate::net::addr::Mac::random, Ok) {
                        Ok(mac) => Some(NicConfig {
                            tap: Some(tap),
                            mac,
                            firewall: args.firewall.unwrap_or_default(),
                        }),
                        Err(e) => return Err(format!("cannot make a MAC: {e}")),
                    },
                    None => None,
                },
                cmdline: match args.ip6 {
                    Some(addr) => {
                        format!("{} {}", args.cmdline, crate::net::addr::guest_cmdline(addr))
                    }
                    None => args.cmdline,
                },
                dir,
                // clap makes these present when --restore is absent.
                kernel: args.kernel.unwrap_or_default(),
                initrd: args.initrd,
                vcpus: args.vcpus.unwrap_or_default(),
                memory_mib: args.memory_mib.unwrap_or_default(),
                disk: args.disk,
                vsock_cid: args.vsock_cid,
            },
            jail,
        ),
    };
    outcome.map_err(|e| e.to_string())
}

/// A line on the monitor's stderr, within its cap ([`crate::log_cap`]).
fn vmm_says(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(crate::log_cap::CappedStderr, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &VmmArgs) -> VmmArgs {
        let argv = std::iter::once(OsString::from("fastvm-vmm")).chain(args.to_args());
        VmmCommand::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .args
    }

    fn every_field_of_a_boot() -> VmmArgs {
        let mut a = VmmArgs::new("/var/lib/fastvm/vms/a b".into());
        a.kernel = Some("/images/vmlinux".into());
        a.initrd = Some("/images/initrd".into());
        a.cmdline = "console=ttyS0 quiet".into();
        a.vcpus = Some(2);
        a.memory_mib = Some(512);
        a.disk = Some("disk".into());
        a.vsock_cid = Some(7);
        a.tap = Some("fvm7".into());
        a.mac = Some(crate::net::addr::Mac([2, 0, 0, 0, 0, 7]));
        a.firewall = Some(
            serde_json::from_str(
                r#"{"mode":"restricted","ingress":[{"protocol":"tcp","portStart":22}]}"#,
            )
            .unwrap(),
        );
        a.ip6 = Some("fd00::7".parse().unwrap());
        a.tap_fd = Some(0);
        a.netns_fd = Some(1);
        a.cgroup = vec![
            "/sys/fs/cgroup/memory/fastvm/a".into(),
            "/sys/fs/cgroup/pids/fastvm/a".into(),
        ];
        a.uid = Some(900_000_004);
        a.gid = Some(900_000_005);
        a.log_max_bytes = 4096;
        a.seccomp = crate::seccomp::SeccompMode::Log;
        a.no_jail = true;
        a
    }

    #[test]
    fn what_the_daemon_builds_the_monitor_parses_back() {
        let boot = every_field_of_a_boot();
        assert_eq!(parsed(&boot), boot);
        let mut restore = VmmArgs::new("vm".into());
        restore.restore = Some("/snapshots/s1".into());
        restore.disk_gib = Some(20);
        restore.vsock_cid = Some(9);
        restore.firewall_file = Some("firewall.json".into());
        assert_eq!(parsed(&restore), restore);
        let bare = VmmArgs::new("vm".into());
        let mut bare_boot = bare.clone();
        bare_boot.kernel = Some("k".into());
        bare_boot.vcpus = Some(1);
        bare_boot.memory_mib = Some(64);
        assert_eq!(parsed(&bare_boot), bare_boot);
    }

    #[test]
    fn the_early_prescan_reads_what_clap_reads() {
        let boot = every_field_of_a_boot();
        let argv = boot.to_args();
        let early = prescan_handed(&argv);
        let late = handed_of(&boot);
        assert_eq!(
            (early.tap_fd, early.tap_name, early.netns_fd, early.cgroups),
            (late.tap_fd, late.tap_name, late.netns_fd, late.cgroups)
        );
        assert_eq!(prescan_value(&argv, "--dir"), Some(boot.dir.into()));
    }
}
