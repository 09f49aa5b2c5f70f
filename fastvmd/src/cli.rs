//! The `fastvmd` command line: definitions, [`main`] (what the binary
//! runs) and the `vmm` entry point. A library module so that other binaries
//! of the workspace (the nested Linux test's `fastvmd` build) run the same
//! program.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::vmm::config::{DEFAULT_CMDLINE, NicConfig, RestoreConfig, VmConfig};
use crate::vmm::exit::{EXIT_ERROR, ExitEvent};
use crate::vmm::exit_record::ExitRecord;
use crate::vmm::jail::early::Handed;
use crate::vmm::jail::ids::DEFAULT_ID_RANGE;
use crate::vmm::jail::{self, JailError, JailIds};
use crate::vmm::machine;
use crate::vmm::machine::restore_kvm::KvmThread;
use clap::{Args, Parser, Subcommand};

/// The whole `fastvmd` program: `fastvmd vmm --restore` is recognised
/// before clap parses anything (a restore starts its KVM thread first).
pub fn main() -> ExitCode {
    if let Some((vmm, early_kvm, confined)) = vmm_command() {
        crate::vmm::log_cap::install(vmm.args.log_max_bytes);
        init_tracing_with(|| crate::vmm::log_cap::CappedStderr);
        return run_vmm(vmm.args, early_kvm, confined);
    }
    let args = Cli::parse();
    init_tracing();
    if matches!(args.command, Command::Serve(_) | Command::Vmm(_)) {
        // What the daemon and its monitors write is theirs alone.
        crate::private_files::set_umask();
    }
    match args.command {
        Command::Serve(serve) => run_serve(serve),
        Command::Call(call) => run_call(call),
        Command::Vmm(vmm) => {
            crate::vmm::log_cap::install(vmm.log_max_bytes);
            let confined = confine_early(&handed_of(&vmm), &vmm.dir, vmm.no_jail);
            run_vmm(vmm, None, confined)
        }
        Command::Bench(bench) => match crate::bench::run(bench) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fastvmd bench: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Image(ImageCommand::Build(build)) => run_image_build(build),
        Command::Host => {
            println!("{}", crate::vmm::host::detect().describe());
            ExitCode::SUCCESS
        }
    }
}

/// FastVM: KVM microVMs, fast.
#[derive(Debug, Parser)]
#[command(name = "fastvmd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the API over HTTP and the local socket, VMs in
    /// monitor processes. Prints the first API key on the very first start.
    Serve(ServeArgs),
    #[command(about = VMM_ABOUT, long_about = VMM_LONG_ABOUT)]
    Vmm(VmmArgs),
    /// Call any operation of a running daemon over its local socket.
    #[command(after_help = crate::call::HELP)]
    Call(CallArgs),
    /// Measure boot, snapshots and the API (with the test guest) and print a
    /// Markdown table.
    Bench(crate::bench::BenchArgs),
    /// Say what kind of KVM host this is and which guests it can run.
    Host,
    /// The Linux guest image (kernel + root filesystem).
    #[command(subcommand)]
    Image(ImageCommand),
}

/// `fastvmd image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the guest kernel (from Debian's linux-source) and the root
    /// filesystem (busybox-static + guest-agent as /sbin/init), cached by
    /// the hash of their inputs; does nothing when they are up to date.
    Build(ImageBuildArgs),
}

/// Arguments of `fastvmd image build`.
#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Image cache (default: $FASTVM_IMAGE_CACHE, else <data dir>/images).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Data directory whose images/ is the default cache (default:
    /// $FASTVM_HOME, /var/lib/fastvm as root, else ~/.local/share/fastvm).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use this static guest-agent binary instead of building it from the
    /// source tree.
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Parallel kernel build jobs (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// Runs `fastvmd image build`.
pub fn run_image_build(args: ImageBuildArgs) -> ExitCode {
    let data_dir = args.data_dir.unwrap_or_else(crate::serve::default_data_dir);
    let cache = args
        .cache_dir
        .unwrap_or_else(|| crate::image::cache_dir(&data_dir));
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let opts = crate::image::build::BuildOptions {
        cache,
        agent: args.agent,
        jobs: jobs.max(1),
    };
    let start = std::time::Instant::now();
    let progress = |line: &str| eprintln!("image: {line}");
    match crate::image::build::build(&opts, &progress) {
        Ok(built) => {
            println!("kernel: {}", built.image.vmlinux.display());
            println!("rootfs: {}", built.image.rootfs.display());
            println!(
                "current: {}",
                opts.cache.join(crate::image::CURRENT).display()
            );
            eprintln!(
                "image: ready in {:.1}s (kernel {}, rootfs {})",
                start.elapsed().as_secs_f64(),
                if built.kernel_cached {
                    "cached"
                } else {
                    "built"
                },
                if built.rootfs_cached {
                    "cached"
                } else {
                    "built"
                },
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fastvmd image build: error: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

/// Arguments of `fastvmd call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Operation: an OpenAPI operationId (listVMs, createVM, execVM, ...),
    /// watch, attachConsole, or an admin op (createOrg, createApiKey,
    /// revokeApiKey, setQuotaLimits, mintToken).
    pub op: String,
    /// JSON argument (see below).
    pub json: Option<String>,
    /// The daemon's socket (default: $FASTVM_SOCKET, else
    /// <data dir>/fastvmd.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Runs `fastvmd call`.
pub fn run_call(args: CallArgs) -> ExitCode {
    let socket = args
        .socket
        .or_else(|| std::env::var_os("FASTVM_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| crate::serve::default_data_dir().join(crate::socket::SOCKET_FILE));
    match crate::call::call(&socket, &args.op, args.json.as_deref()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fastvmd call: error: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

/// Arguments of `fastvmd serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Data directory (default: $FASTVM_HOME, /var/lib/fastvm as root,
    /// else ~/.local/share/fastvm).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Local socket (default: <data dir>/fastvmd.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Guest that new VMs boot: the Linux image, or the test guest.
    #[arg(long, value_enum, default_value = "linux")]
    pub guest: crate::supervisor::GuestChoice,
    /// Default quota of an org: vCPUs of its live VMs (`fastvmd call
    /// setQuotaLimits` sets one org's own).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub quota_vcpu: u64,
    /// Default quota of an org: MiB of memory of its live VMs.
    #[arg(long, value_name = "MIB", default_value_t = 32768)]
    pub quota_memory_mib: u64,
    /// Default quota of an org: GiB of disk of its live VMs.
    #[arg(long, value_name = "GIB", default_value_t = 500)]
    pub quota_disk_gib: u64,
    /// Default quota of an org: number of snapshots.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub quota_snapshots: u64,
    /// Run VMs without a NIC even when this host allows taps.
    #[arg(long)]
    pub no_net: bool,
    /// The IPv6 /64 VMs get addresses from (default: a ULA made at first
    /// start and kept in the data dir).
    #[arg(long, value_name = "PREFIX")]
    pub ipv6_prefix: Option<crate::net::addr::Prefix>,
    /// Run this instead of this binary as each VM's monitor (it is given
    /// `vmm ...`); for tests that wrap the monitor.
    #[arg(long, value_name = "PATH", hide = true)]
    pub monitor_exe: Option<PathBuf>,
    /// The uids/gids jailed monitors run as, START:COUNT: the VM with vsock
    /// CID c runs as START + c - 3 (at most COUNT VMs at once).
    #[arg(long, value_name = "START:COUNT", default_value_t = DEFAULT_ID_RANGE)]
    pub jail_ids: crate::vmm::jail::ids::IdRange,
}

/// Runs the daemon.
pub fn run_serve(args: ServeArgs) -> ExitCode {
    let opts = crate::serve::ServeOptions {
        listen: args.listen,
        data_dir: args.data_dir.unwrap_or_else(crate::serve::default_data_dir),
        socket: args.socket,
        guest: args.guest,
        quota_defaults: crate::store::QuotaDefaults(crate::store::QuotaValues {
            vcpu: args.quota_vcpu,
            memory_mib: args.quota_memory_mib,
            disk_gib: args.quota_disk_gib,
            snapshot_count: args.quota_snapshots,
        }),
        network: !args.no_net,
        ipv6_prefix: args.ipv6_prefix,
        monitor_exe: args.monitor_exe,
        jail_ids: args.jail_ids,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fastvmd serve: error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR as u8);
        }
    };
    match runtime.block_on(crate::serve::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastvmd serve: error: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

const VMM_ABOUT: &str =
    "Run one VM in this process (the monitor). Normally started by `fastvmd serve`";
const VMM_LONG_ABOUT: &str = "Run one VM in this process (the monitor). Normally started by \
`fastvmd serve`.\n\nCreates control.sock, console.sock and (with --vsock-cid) vsock.sock in DIR. \
Exit status: 0 stopped by the host (control `stop`, SIGTERM), 10 guest powered off, 11 guest \
rebooted, 12 guest crashed, 1 error.";

/// `fastvmd vmm` parsed on its own: a monitor starts without building the
/// parser of every other command (a fifth of a millisecond here).
#[derive(Debug, Parser)]
#[command(name = "vmm", bin_name = "fastvmd vmm", about = VMM_ABOUT, long_about = VMM_LONG_ABOUT)]
pub struct VmmCommand {
    #[command(flatten)]
    pub args: VmmArgs,
}

/// The arguments when they start with the `vmm` command. The jail's first
/// step ([`crate::vmm::jail::early`]) is taken at once, while the process
/// has one thread; a restore's KVM work needs nothing from the arguments,
/// so it starts before they are parsed.
pub fn vmm_command() -> Option<(VmmCommand, Option<KvmThread>, Result<(), JailError>)> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first()? != "vmm" {
        return None;
    }
    // What the monitor writes is the VM's alone.
    crate::private_files::set_umask();
    let only_help = args
        .iter()
        .any(|a| ["-h", "--help", "-V", "--version"].iter().any(|h| a == h));
    let confined = match prescan_value(&args, "--dir") {
        Some(dir) if !only_help => confine_early(
            &prescan_handed(&args),
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
    Some((VmmCommand::parse_from(args), early, confined))
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

/// Arguments of `fastvmd vmm`.
#[derive(Debug, Args)]
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
    #[arg(long, value_name = "BYTES", default_value_t = crate::vmm::log_cap::DEFAULT_LOG_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// What a syscall off a thread's seccomp allow list does: kill the
    /// monitor, or (for finding what a list lacks) pass and be logged in
    /// the kernel's audit log.
    #[arg(long, value_enum, default_value_t = crate::vmm::seccomp::SeccompMode::Kill)]
    pub seccomp: crate::vmm::seccomp::SeccompMode,
    /// Run unconfined: no namespaces, no uid change, capabilities kept.
    /// For debugging only; the daemon never does this.
    #[arg(long)]
    pub no_jail: bool,
}

impl VmmArgs {
    /// The ids to drop to, `None` with --no-jail.
    fn jail(&self) -> Result<Option<(JailIds, crate::vmm::seccomp::SeccompMode)>, String> {
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

fn parse_policy(s: &str) -> Result<fastvm_proto::api::FirewallPolicy, String> {
    let policy: fastvm_proto::api::FirewallPolicy =
        serde_json::from_str(s).map_err(|e| format!("not a FirewallPolicy: {e}"))?;
    fastvm_proto::api::validate_firewall_policy(&policy).map_err(|e| e.to_string())?;
    Ok(policy)
}

/// Logs to stderr; `RUST_LOG` sets the level (default: warnings).
pub fn init_tracing() {
    init_tracing_with(std::io::stderr);
}

/// Logs through `writer`; `RUST_LOG` sets the level (default: warnings).
fn init_tracing_with<W>(writer: impl Fn() -> W + Send + Sync + 'static)
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
            vmm_says(format_args!("fastvmd vmm: {}", event.describe()));
            (event.exit_code(), event.describe())
        }
        Err(e) => {
            vmm_says(format_args!("fastvmd vmm: error: {e}"));
            (EXIT_ERROR, format!("error: {e}"))
        }
    };
    // Inside the jail the VM directory is `/`, and its lock is ours.
    // Outside: no record in a directory that never existed (bad --dir),
    // nor in one another live monitor holds (this one was refused its lock).
    let record_dir = if jail::is_jailed() {
        Some(PathBuf::from("/"))
    } else {
        let owner = crate::supervisor::monitor_pid(&dir);
        (dir.is_dir() && owner.is_none_or(|pid| pid == std::process::id())).then_some(dir)
    };
    if let Some(dir) = record_dir
        && let Err(e) = (ExitRecord { code, reason }).write(&dir)
    {
        vmm_says(format_args!(
            "fastvmd vmm: cannot leave the exit record: {e}"
        ));
    }
    ExitCode::from(code as u8)
}

/// Runs the VM described by `args` until it ends.
fn run_machine(args: VmmArgs, early: Option<KvmThread>) -> Result<ExitEvent, String> {
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

/// A line on the monitor's stderr, within its cap ([`crate::vmm::log_cap`]).
fn vmm_says(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(crate::vmm::log_cap::CappedStderr, "{line}");
}
