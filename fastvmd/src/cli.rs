//! The `fastvmd` command line: definitions, [`main`] (what the binary
//! runs) and the `vmm` entry point. A library module so that other binaries
//! of the workspace (the nested Linux test's `fastvmd` build) run the same
//! program.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::vmm::cli::{VMM_ABOUT, VMM_LONG_ABOUT, VmmArgs};
use crate::vmm::exit::EXIT_ERROR;
use crate::vmm::jail::ids::DEFAULT_ID_RANGE;
use clap::{Args, Parser, Subcommand};

/// The whole `fastvmd` program: `fastvmd vmm ARGS` is the monitor
/// ([`crate::vmm::cli::run`]), recognised before clap parses anything (a
/// monitor jails itself first, and a restore starts its KVM thread first).
pub fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "vmm") {
        argv.remove(0);
        argv[0] = "fastvmd vmm".into();
        return crate::vmm::cli::run(argv);
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
        Command::Vmm(vmm) => crate::vmm::cli::run_parsed(vmm),
        Command::Bench(bench) => match crate::bench::run(bench) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fastvmd bench: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Image(ImageCommand::Build(build)) => run_image_build(build),
        Command::Image(ImageCommand::Import(import)) => crate::image_cli::run_import(import),
        Command::Image(ImageCommand::Ls(cache)) => crate::image_cli::run_list(cache),
        Command::Image(ImageCommand::Rm(remove)) => crate::image_cli::run_remove(remove),
        Command::Vm { command, socket } => crate::user_cli::run_vm(command, &socket),
        Command::Snapshot { command, socket } => crate::user_cli::run_snapshot(command, &socket),
        Command::Exec { args, socket } => crate::user_cli::exec::run(args, &socket),
        Command::Cp { args, socket } => crate::user_cli::cp::run(args, &socket),
        Command::Console { args, socket } => crate::user_cli::console::run(args, &socket),
        Command::PortForward { args, socket } => crate::user_cli::port_forward::run(args, &socket),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "fastvmd",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
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
    /// VMs of a running daemon: ls, create, rm, rename (by id, id prefix
    /// or name).
    Vm {
        #[command(subcommand)]
        command: crate::user_cli::VmCommand,
        #[command(flatten)]
        socket: crate::user_cli::SocketArg,
    },
    /// Snapshots of a running daemon: create, ls, rm.
    Snapshot {
        #[command(subcommand)]
        command: crate::user_cli::SnapshotCommand,
        #[command(flatten)]
        socket: crate::user_cli::SocketArg,
    },
    /// Run a command in a VM with its output as it comes (`-i` for stdin,
    /// `-t` for a terminal): `fastvmd exec dev -it -- sh`. Exits with the
    /// command's status (125 when it could not be run).
    Exec {
        #[command(flatten)]
        args: crate::user_cli::exec::ExecArgs,
        #[command(flatten)]
        socket: crate::user_cli::SocketArg,
    },
    /// Copy a file into a VM or out of one: `fastvmd cp ./app.tar
    /// dev:/srv/app.tar`, `fastvmd cp dev:/etc/os-release .` (`-` for
    /// stdin or stdout).
    Cp {
        #[command(flatten)]
        args: crate::user_cli::cp::CpArgs,
        #[command(flatten)]
        socket: crate::user_cli::SocketArg,
    },
    /// This terminal on a VM's serial console (raw mode; Ctrl-] leaves).
    Console {
        #[command(flatten)]
        args: crate::user_cli::console::ConsoleArgs,
        #[command(flatten)]
        socket: crate::user_cli::SocketArg,
    },
    /// Forward a port of this host (127.0.0.1) into a VM through its agent
    /// until Ctrl-C: `fastvmd port-forward dev 8080:80`.
    PortForward {
        #[command(flatten)]
        args: crate::user_cli::port_forward::PortForwardArgs,
        #[command(flatten)]
        socket: crate::user_cli::SocketArg,
    },
    /// Print a shell completion script (e.g. `fastvmd completions bash >
    /// /etc/bash_completion.d/fastvmd`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `fastvmd image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the guest kernel (from Debian's linux-source) and the root
    /// filesystem (busybox-static + guest-agent as /sbin/init), cached by
    /// the hash of their inputs; does nothing when they are up to date.
    Build(ImageBuildArgs),
    /// Turn a container image (`docker save` archive or OCI image layout,
    /// a directory or a tar, or `-` for a tar on stdin) into a named image:
    /// its layers applied in order into an ext4 root file system with
    /// guest-agent as /sbin/init; its Entrypoint, Cmd, Env, WorkingDir and
    /// User kept as the defaults commands run with.
    Import(crate::image_cli::ImportArgs),
    /// List the images: the built default and every imported one.
    Ls(crate::image_cli::CacheArgs),
    /// Remove an imported image.
    Rm(crate::image_cli::RemoveArgs),
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
    /// Keep the kernel's source and object tree (about 1.6 GB) in the
    /// cache after a build, so a changed config rebuilds incrementally;
    /// by default it is removed once the kernel is built.
    #[arg(long)]
    pub keep_kernel_tree: bool,
    /// Also build a full userland as a named image: `debian` installs
    /// Debian (debootstrap minbase with python3, git, curl, ca-certificates
    /// and iproute2) from the host's apt mirror as the image `debian`
    /// (`"image": "debian"` in createVM). Needs root and the mirror.
    #[arg(long, value_enum, value_name = "USERLAND")]
    pub userland: Option<Userland>,
    /// The Debian suite for --userland (default: the host's codename).
    #[arg(long, value_name = "SUITE", requires = "userland")]
    pub suite: Option<String>,
    /// The Debian mirror for --userland (default: the host's apt mirror).
    #[arg(long, value_name = "URL", requires = "userland")]
    pub mirror: Option<String>,
}

/// A userland `fastvmd image build` can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Userland {
    /// Debian from its packages, as the image `debian`.
    Debian,
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
        keep_kernel_tree: args.keep_kernel_tree,
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
            match args.userland {
                None => ExitCode::SUCCESS,
                Some(Userland::Debian) => {
                    build_debian(&opts.cache, &built.image.agent, args.suite, args.mirror)
                }
            }
        }
        Err(e) => {
            eprintln!("fastvmd image build: error: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

/// `--userland debian`: the `debian` image, with the built image's agent.
fn build_debian(
    cache: &std::path::Path,
    agent: &std::path::Path,
    suite: Option<String>,
    mirror: Option<String>,
) -> ExitCode {
    use crate::image::userland;
    let start = std::time::Instant::now();
    let progress = |line: &str| eprintln!("image: {line}");
    let made = std::fs::read(agent)
        .map_err(crate::image::io_err(agent))
        .and_then(|agent| {
            let source = match (suite, mirror) {
                (Some(suite), Some(mirror)) => userland::Source { suite, mirror },
                (suite, mirror) => {
                    let host = userland::Source::of_host()?;
                    userland::Source {
                        suite: suite.unwrap_or(host.suite),
                        mirror: mirror.unwrap_or(host.mirror),
                    }
                }
            };
            userland::build(cache, &source, &agent, &progress)
        });
    match made {
        Ok(made) => {
            eprintln!(
                "image: {} {} in {:.1}s (createVM with \"image\": \"{}\")",
                userland::NAME,
                if made { "ready" } else { "up to date" },
                start.elapsed().as_secs_f64(),
                userland::NAME
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fastvmd image build --userland: error: {e}");
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
    /// The range VMs get an IPv4 address from (one /32 each, given to the
    /// guest like its IPv6), NATed to the outside by the host's nftables;
    /// `off`: VMs have no IPv4.
    #[arg(long, value_name = "CIDR|off", default_value = crate::vmm::net::addr4::DEFAULT_RANGE)]
    pub ipv4_range: crate::vmm::net::addr4::Ipv4Setting,
    /// Run this instead of `fastvm-vmm` (next to this binary) as each VM's
    /// monitor; for tests that wrap the monitor.
    #[arg(long, value_name = "PATH", hide = true)]
    pub monitor_exe: Option<PathBuf>,
    /// The uids/gids jailed monitors run as, START:COUNT: the VM with vsock
    /// CID c runs as START + c - 3 (at most COUNT VMs at once).
    #[arg(long, value_name = "START:COUNT", default_value_t = DEFAULT_ID_RANGE)]
    pub jail_ids: crate::vmm::jail::ids::IdRange,
    /// Seconds an HTTP client has to send a request's headers; a
    /// keep-alive connection idle this long is closed too.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Seconds an HTTP client has to send a request's body (408 past it).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,
    /// HTTP connections open at once, WebSocket consoles included; past it
    /// a new connection is answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Execs one org may have running at once; past it execVM answers 429.
    /// A running exec holds no thread while it waits on its guest.
    #[arg(long, value_name = "N", default_value_t = crate::service::exec_slots::DEFAULT_PER_ORG as u64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_execs_per_org: u64,
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
        ipv4_range: args.ipv4_range.0,
        monitor_exe: args.monitor_exe,
        jail_ids: args.jail_ids,
        max_execs_per_org: args.max_execs_per_org as usize,
        http: crate::http_server::HttpLimits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout),
            body_timeout: std::time::Duration::from_secs(args.body_timeout),
            max_connections: args.max_connections as usize,
        },
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

/// Logs to stderr; `RUST_LOG` sets the level (default: warnings).
pub fn init_tracing() {
    crate::vmm::cli::init_tracing_with(std::io::stderr);
}
