//! `fastvmd serve`: opens the data directory, re-adopts monitors, and serves
//! the API over HTTP and the local Unix socket until SIGTERM or SIGINT
//! (monitors keep running; a new daemon picks them up).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::service::{Service, ServiceConfig};
use crate::supervisor::GuestChoice;

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub socket: Option<PathBuf>,
    pub guest: GuestChoice,
    /// Quota limits of orgs that have none of their own.
    pub quota_defaults: crate::store::QuotaDefaults,
    /// Give VMs a NIC when the host allows it.
    pub network: bool,
    /// The /64 for VM addresses (default: a ULA kept in the data dir).
    pub ipv6_prefix: Option<crate::net::addr::Prefix>,
    /// The range VMs' IPv4 addresses come from (NATed); `None`: no IPv4.
    pub ipv4_range: Option<crate::vmm::net::addr4::Ipv4Range>,
    /// What to run as `fastvmd vmm` for each VM (default: this binary).
    pub monitor_exe: Option<PathBuf>,
    /// The ids jailed monitors run as.
    pub jail_ids: crate::vmm::jail::ids::IdRange,
    /// Execs one org may have running at once.
    pub max_execs_per_org: usize,
    /// How the HTTP front end bounds its clients.
    pub http: crate::http_server::HttpLimits,
}

/// The data directory: `FASTVM_HOME`, else `/var/lib/fastvm` for root, else
/// `~/.local/share/fastvm`.
pub fn default_data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("FASTVM_HOME") {
        return PathBuf::from(home);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/fastvm");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/fastvm")
}

/// A `key: value` line on stdout for scripts; a closed stdout is not an
/// error (the daemon keeps running when whoever started it stops reading).
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Descriptors the daemon keeps besides its HTTP connections (store,
/// sockets of monitors, local socket clients).
const OTHER_FILES: u64 = 1024;

/// Raises this process's open-file limit (soft, up to the hard one) so
/// `max_connections` HTTP connections fit beside everything else; returns
/// the connection cap that fits, with a note when it had to be lowered.
fn fit_connections(max_connections: usize) -> (usize, Option<String>) {
    let wanted = max_connections as u64 + OTHER_FILES;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which `limit` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (max_connections, None);
    }
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit; a soft limit up to the hard
        // one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur >= wanted {
        return (max_connections, None);
    }
    let fits = limit.rlim_cur.saturating_sub(OTHER_FILES).max(16) as usize;
    let note = format!(
        "this process may open {} files (ulimit -n): HTTP connections capped at {fits} \
         instead of {max_connections}",
        limit.rlim_cur
    );
    (fits, Some(note))
}

/// Runs the daemon until a termination signal.
pub async fn run(opts: ServeOptions) -> Result<(), String> {
    let mut opts = opts;
    let (fits, note) = fit_connections(opts.http.max_connections);
    opts.http.max_connections = fits;
    if let Some(note) = note {
        eprintln!("fastvmd: {note}");
    }
    let monitor_exe = match opts.monitor_exe.clone() {
        Some(exe) => exe,
        None => crate::supervisor::monitor_program()?,
    };
    let mut config = ServiceConfig::new(opts.data_dir.clone(), opts.guest, monitor_exe);
    config.quota_defaults = opts.quota_defaults;
    config.network = opts.network;
    config.ipv6_prefix = opts.ipv6_prefix;
    config.ipv4_range = opts.ipv4_range;
    config.jail_ids = opts.jail_ids;
    config.max_execs_per_org = opts.max_execs_per_org;
    let opened = Service::open(config).await.map_err(|e| e.to_string())?;
    let service = opened.service;
    announce(format_args!("data-dir: {}", opts.data_dir.display()));
    if let Some(key) = &opened.first_key {
        announce(format_args!("api-key: {}", key.key));
        eprintln!(
            "fastvmd: created the default organization; its API key above is shown only once"
        );
    }
    match &opened.unavailable {
        Some(why) => eprintln!("fastvmd: VMs cannot be created on this host: {why}"),
        None => eprintln!("fastvmd: host: {}", service.host().describe()),
    }
    match &opened.network {
        Ok(prefix) => {
            eprintln!("fastvmd: networking: VMs get IPv6 addresses from {prefix}");
            if !crate::net::host::ipv6_forwarding() {
                eprintln!(
                    "fastvmd: IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): VMs are \
                     reachable from this host only and have no IPv6 egress (the daemon leaves it \
                     off: turning it on stops a host taking router advertisements)"
                );
            }
        }
        Err(why) => eprintln!("fastvmd: networking off ({why}): VMs run without a NIC"),
    }
    let nat = match (&opened.network, opts.ipv4_range) {
        (Ok(prefix), Some(range)) => {
            let setup = crate::net::nat::set_up(&opts.data_dir, range, Some(*prefix));
            for note in &setup.notes {
                eprintln!("fastvmd: egress: {note}");
            }
            if let Some(nat) = &setup.nat {
                eprintln!(
                    "fastvmd: egress: VMs get IPv4 addresses from {range}, NATed to the outside \
                     (nftables table inet {})",
                    nat.table()
                );
            }
            setup.nat
        }
        _ => None,
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "fastvmd: not running as root: VM monitors cannot jail themselves \
             (namespaces, pivot_root, their own uid), so no VM can start"
        );
    }
    if let Some(why) = service.supervisor_cgroups_unavailable() {
        eprintln!(
            "fastvmd: cgroups unavailable ({why}): VMs run without memory, pids and CPU limits"
        );
    }
    if opened.adopted + opened.lost > 0 {
        eprintln!(
            "fastvmd: re-adopted {} running VM(s); {} VM(s) whose monitor had ended are marked",
            opened.adopted, opened.lost
        );
    }
    let swept = &opened.swept;
    if swept.recovered + swept.failed > 0 {
        eprintln!(
            "fastvmd: {} snapshot(s) left creating by a crash are ready, {} failed (now error)",
            swept.recovered, swept.failed
        );
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let socket_path = opts
        .socket
        .clone()
        .unwrap_or_else(|| opts.data_dir.join(crate::socket::SOCKET_FILE));
    let socket = crate::socket::bind(&socket_path)
        .map_err(|e| format!("cannot listen on {}: {e}", socket_path.display()))?;
    announce(format_args!("socket: {}", socket_path.display()));
    announce(format_args!("listening: http://{addr}"));
    let socket_task = tokio::spawn(crate::socket::serve(socket, service.clone()));
    service.spawn_watcher();
    let app = crate::api::app(service.clone());
    crate::http_server::serve(listener, app, opts.http, shutdown_signal()).await;
    socket_task.abort();
    if let Some(nat) = nat {
        // Running VMs keep their egress until they end.
        if service.vms_with_a_nic() == Some(0) {
            if let Err(e) = nat.remove() {
                eprintln!("fastvmd: egress: cannot remove the NAT table: {e}");
            }
        }
    }
    eprintln!("fastvmd: stopped; VMs keep running");
    Ok(())
}
