//! The scenario's steps, in order: create, exec, streams (live output, a
//! terminal, a 100 MiB file both ways, a port forward), console, network and
//! firewall, disks grown at boot and under a running clone, snapshot and
//! clone, a daemon crash and restart, delete; and
//! throughout, no VM ever reported `error`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::vm::{self, exec, sh};
use super::{DATA_DIR, Daemon, FASTVMD, Runner, Watch};

/// How long a Linux VM may take to become running under TCG.
const BOOT_WAIT: Duration = Duration::from_secs(240);
/// The exec output cap (stdout and stderr each).
const OUTPUT_CAP: usize = fastvm_proto::agent::DEFAULT_OUTPUT_CAP as usize;

/// The first VM's disk: larger than its image's file system, which the
/// agent grows at boot.
const A_DISK_GIB: u64 = 20;
/// Its clone's disk, larger again: grown while the restored guest runs.
const B_DISK_GIB: u64 = 22;

/// What later steps need from earlier ones.
struct Vm {
    id: String,
    addr: String,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn create(d: &Daemon, body: Value) -> Result<Vm, String> {
    let vm = d.expect("POST", "/v1/vms", Some(&body), 201)?;
    let id = vm["id"].as_str().ok_or("no id")?.to_string();
    let vm = vm::wait_running(d, &id, BOOT_WAIT)?;
    let addr = vm["publicIpv6"]
        .as_str()
        .ok_or_else(|| format!("VM {id} has no publicIpv6: {vm}"))?
        .to_string();
    Ok(Vm { id, addr })
}

/// `df` in VM `id` shows a root file system of nearly `disk_gib` GiB
/// (ext4 keeps a little for itself), within `wait`.
fn root_fs_reaches(d: &Daemon, id: &str, disk_gib: u64, wait: Duration) -> Result<(), String> {
    let want_kib = (disk_gib << 20) * 95 / 100;
    let deadline = std::time::Instant::now() + wait;
    loop {
        let out = sh(d, id, "df -k /")?;
        let kib: u64 = out
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("df: {out:?}"))?;
        if kib >= want_kib {
            println!("info: root file system of {id}: {kib} KiB on a {disk_gib} GiB disk");
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "root file system is {kib} KiB on a {disk_gib} GiB disk: {out}"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// VM `vm` has the IPv4 /32 of its MAC, the gateway on its link and the
/// default route through it, and reaches the gateway (the tap in L1).
fn ipv4_is_up(d: &Daemon, vm: &Vm) -> Result<std::net::Ipv4Addr, String> {
    let range: fastvmd::vmm::net::addr4::Ipv4Range = fastvmd::vmm::net::addr4::DEFAULT_RANGE
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mac: fastvmd::net::addr::Mac = sh(d, &vm.id, "cat /sys/class/net/eth0/address")?
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let want = range.address(mac).ok_or("the MAC has no IPv4 address")?;
    let addrs = sh(d, &vm.id, "ip -4 addr show dev eth0; ip -4 route")?;
    check(addrs.contains(&format!("inet {want}/32")), || {
        format!("eth0 lacks {want}/32: {addrs}")
    })?;
    let gateway = range.gateway();
    check(
        addrs.contains(&format!("default via {gateway} dev eth0")),
        || format!("no default route via {gateway}: {addrs}"),
    )?;
    let ping = sh(
        d,
        &vm.id,
        &format!("ping -c 1 -W 10 {gateway} && echo reached"),
    )?;
    check(ping.contains("reached"), || {
        format!("ping {gateway}: {ping}")
    })?;
    println!("info: IPv4 {want}/32 via {gateway}");
    Ok(want)
}

/// eth0 of VM `vm` is up, has its address, and L1 reaches it.
fn network_is_up(d: &Daemon, vm: &Vm) -> Result<String, String> {
    let state = sh(d, &vm.id, "cat /sys/class/net/eth0/operstate")?;
    check(state.trim() == "up", || format!("eth0 is {state:?}"))?;
    let addrs = sh(d, &vm.id, "ip -6 addr show dev eth0")?;
    check(addrs.contains(&vm.addr), || {
        format!("eth0 lacks {}: {addrs}", vm.addr)
    })?;
    check(vm::ping6_until(&vm.addr, Duration::from_secs(20)), || {
        format!("{} does not answer ping6 in open mode", vm.addr)
    })?;
    Ok(sh(d, &vm.id, "cat /sys/class/net/eth0/address")?
        .trim()
        .to_string())
}

pub(super) fn run_all(r: &mut Runner) {
    let mut daemon = None;
    if !r.step("daemon-start", || {
        daemon = Some(Daemon::start(Path::new(FASTVMD), Path::new(DATA_DIR))?);
        Ok(())
    }) {
        return;
    }
    let Some(mut d) = daemon else { return };
    let watch = Watch::start(d.socket_path());
    std::thread::sleep(Duration::from_millis(200));

    let mut a = None;
    r.step("create", || {
        a = Some(create(
            &d,
            json!({"machineType": "c1m2", "name": "linux-a", "diskGiB": A_DISK_GIB,
                "firewall": {"mode": "open"}}),
        )?);
        Ok(())
    });
    let Some(a) = a else { return };
    exec_steps(r, &d, &a.id);
    r.step("exec-stream-live", || {
        super::streams::live_output(&d, &a.id)
    });
    r.step("exec-stream-tty", || super::streams::tty_shell(&d, &a.id));
    r.step("exec-stream-disconnect", || {
        super::streams::disconnect_kills(&d, &a.id)
    });
    r.step("port-forward", || super::streams::forward(&d, &a.id));
    r.step("grown-disk", || {
        root_fs_reaches(&d, &a.id, A_DISK_GIB, Duration::ZERO)
    });
    r.step("console", || console(&d, &a.id));
    let mut mac_a = String::new();
    r.step("network", || {
        mac_a = network_is_up(&d, &a)?;
        Ok(())
    });
    let mut v4 = None;
    r.step("ipv4", || {
        v4 = Some(ipv4_is_up(&d, &a)?);
        Ok(())
    });
    r.step("firewall", || firewall(&d, &a));
    r.step("egress", || {
        let v4 = v4.ok_or("no IPv4 address")?;
        super::egress::egress(&d, &a.id, &a.addr, &v4.to_string())
    });
    r.step("guest-kernel-log", || {
        let log = sh(&d, &a.id, "dmesg")?;
        for line in log.lines().filter(|l| l.contains("x86/fpu")) {
            println!("info: guest {line}");
        }
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("XSAVE consistency problem") || l.contains("WARNING"))
            .collect();
        check(bad.is_empty(), || format!("guest kernel warns: {bad:?}"))
    });

    let mut snapshot = String::new();
    r.step("snapshot", || {
        sh(&d, &a.id, "echo before > /root/marker && sync")?;
        let snap = d.expect("POST", "/v1/snapshots", Some(&json!({"vmId": a.id})), 201)?;
        check(snap["status"] == "ready", || format!("snapshot: {snap}"))?;
        snapshot = snap["id"].as_str().unwrap_or_default().to_string();
        Ok(())
    });
    let mut b = None;
    r.step("clone", || {
        // Long enough that a clone keeping the snapshot's clock shows it.
        std::thread::sleep(Duration::from_secs(5));
        b = Some(create(
            &d,
            json!({"snapshotId": snapshot, "name": "linux-b", "diskGiB": B_DISK_GIB,
                "firewall": {"mode": "open"}}),
        )?);
        Ok(())
    });
    let Some(b) = b else { return };
    r.step("clone-identity", || clone_identity(&d, &a, &b, &mac_a));
    // The clone's disk grew after its kernel had booted: the kernel hears
    // of it from the device, the agent from the kernel.
    r.step("clone-grown-disk", || {
        root_fs_reaches(&d, &b.id, B_DISK_GIB, Duration::from_secs(30))
    });
    r.step("diverge", || {
        sh(&d, &a.id, "echo a-after > /root/marker")?;
        let got = sh(&d, &b.id, "cat /root/marker; echo b > /root/marker")?;
        check(got == "before\n", || format!("clone read {got:?}"))?;
        let got = sh(&d, &a.id, "cat /root/marker")?;
        check(got == "a-after\n", || format!("original read {got:?}"))
    });
    r.step("jailed", || {
        for vm in [&a, &b] {
            super::jail::check_monitor(&d.vm_dir(&vm.id))?;
        }
        Ok(())
    });

    r.step("daemon-restart", || {
        d.restart()?;
        for vm in [&a, &b] {
            let got = d.expect("GET", &format!("/v1/vms/{}", vm.id), None, 200)?;
            check(got["status"] == "running", || {
                format!("after restart: {got}")
            })?;
            let out = sh(&d, &vm.id, "echo still-here")?;
            check(out == "still-here\n", || {
                format!("exec after restart: {out:?}")
            })?;
        }
        Ok(())
    });
    r.step("delete", || {
        for vm in [&a, &b] {
            d.expect("DELETE", &format!("/v1/vms/{}", vm.id), None, 200)?;
        }
        let monitors = vm::monitor_processes();
        check(monitors.is_empty(), || {
            format!("monitors left: {monitors:?}")
        })?;
        let taps = vm::taps();
        check(taps.is_empty(), || {
            format!(
                "taps left: {taps:?}; /dev/net/tun held by {:?}",
                vm::tun_holders()
            )
        })?;
        for vm in [&a, &b] {
            let dir = d.vm_dir(&vm.id);
            check(!dir.exists(), || format!("{} left", dir.display()))?;
        }
        Ok(())
    });
    r.step("imported-image", || imported_image(&d));
    r.step("debian-userland", || debian_userland(&d));
    // On a VM of its own, once the others are gone: the 100 MiB it takes
    // in stays allocated in its disk file, which L1 has little room for.
    r.step("file-round-trip", || {
        let vm = create(&d, json!({"machineType": "c1m2", "name": "linux-files"}))?;
        super::streams::file_round_trip(&d, &vm.id, "linux-files")?;
        d.expect("DELETE", &format!("/v1/vms/{}", vm.id), None, 200)?;
        Ok(())
    });
    r.step("never-error", || {
        let errors = watch.errors();
        check(errors.is_empty(), || {
            let detail: Vec<String> = errors
                .iter()
                .map(|id| format!("{id}: {:?}", watch.statuses(id)))
                .collect();
            format!("watch reported error for {detail:?}")
        })
    });
    r.step("seccomp-clean", || {
        let records = super::jail::seccomp_records();
        check(records.is_empty(), || {
            format!("syscalls off a monitor's allow list: {records:#?}")
        })
    });
}

/// A VM of the demo container image (`fastvmd image import`, done on
/// the host): it boots with the agent as its only program of ours, has
/// a network without any tool of its own, runs the image's own binaries,
/// and has no shell.
fn imported_image(d: &Daemon) -> Result<(), String> {
    use fastvmd::nested::demo_image::{BUSYBOX, ENV, MARKER, NAME, USER, WORKING_DIR};
    let vm = create(
        d,
        json!({"machineType": "c1m2", "image": NAME, "firewall": {"mode": "open"}}),
    )?;
    let info = d.expect("GET", &format!("/v1/vms/{}", vm.id), None, 200)?;
    check(info["sourceName"] == NAME, || format!("sourceName: {info}"))?;
    // The image has neither `ip` nor a shell: its network is the agent's.
    check(vm::ping6_until(&vm.addr, Duration::from_secs(20)), || {
        format!("{} (an image without `ip`) does not answer ping6", vm.addr)
    })?;
    let marker = format!("/{}", MARKER.0);
    let out = vm::exec(d, &vm.id, json!({"command": [BUSYBOX, "cat", marker]}))?;
    check(out["exitCode"] == 0 && out["stdout"] == MARKER.1, || {
        format!("the image's file: {out}")
    })?;
    // Commands run with the image's Env, WorkingDir and User.
    let run = |args: &[&str]| -> Result<String, String> {
        let mut command = vec![BUSYBOX];
        command.extend_from_slice(args);
        let out = vm::exec(d, &vm.id, json!({ "command": command }))?;
        check(out["exitCode"] == 0, || format!("{args:?}: {out}"))?;
        Ok(out["stdout"].as_str().unwrap_or_default().to_string())
    };
    let env = run(&["env"])?;
    check(env.lines().any(|l| l == ENV), || format!("env: {env}"))?;
    let pwd = run(&["pwd"])?;
    check(pwd.trim() == WORKING_DIR, || format!("pwd: {pwd}"))?;
    let ids = run(&["id", "-u"])? + &run(&["id", "-g"])?;
    let (uid, gid) = USER.split_once(':').unwrap_or((USER, USER));
    check(ids == format!("{uid}\n{gid}\n"), || format!("id: {ids:?}"))?;
    let out = vm::exec(d, &vm.id, json!({"command": ["/bin/sh", "-c", "true"]}))?;
    check(out["exitCode"] == 127, || {
        format!("/bin/sh in an image without one: {out}")
    })?;
    let note = "this image has no shell";
    let seen = console_until(d, &vm.id, None, note)?;
    check(seen.contains(note), || {
        format!("the console does not say so: {seen:?}")
    })?;
    d.expect("DELETE", &format!("/v1/vms/{}", vm.id), None, 200)?;
    Ok(())
}

/// A VM of the Debian userland (`fastvmd image build --userland debian`):
/// a normal Linux, with Python, git and curl.
fn debian_userland(d: &Daemon) -> Result<(), String> {
    let name = fastvmd::image::userland::NAME;
    let vm = create(
        d,
        json!({"machineType": "c1m2", "image": name, "firewall": {"mode": "open"}}),
    )?;
    let info = d.expect("GET", &format!("/v1/vms/{}", vm.id), None, 200)?;
    check(info["sourceName"] == name, || format!("sourceName: {info}"))?;
    let python = sh(d, &vm.id, "python3 -c 'print(6*7)'")?;
    check(python == "42\n", || format!("python3: {python:?}"))?;
    let git = sh(d, &vm.id, "git --version")?;
    check(git.starts_with("git version "), || format!("git: {git:?}"))?;
    let tools = sh(
        d,
        &vm.id,
        "curl --version | head -1; ls /etc/ssl/certs | wc -l",
    )?;
    check(tools.starts_with("curl "), || format!("curl: {tools:?}"))?;
    println!("info: {name}: {} / {}", python.trim(), git.trim());
    root_fs_reaches(
        d,
        &vm.id,
        fastvm_proto::api::DEFAULT_DISK_GIB,
        Duration::ZERO,
    )?;
    // Its network came from the agent alone (no `ip` of the image's used).
    network_is_up(d, &vm)?;
    d.expect("DELETE", &format!("/v1/vms/{}", vm.id), None, 200)?;
    Ok(())
}

fn exec_steps(r: &mut Runner, d: &Daemon, id: &str) {
    r.step("exec-echo", || {
        let out = exec(d, id, json!({"command": ["echo", "hello", "world"]}))?;
        check(
            out["stdout"] == "hello world\n" && out["exitCode"] == 0,
            || out.to_string(),
        )
    });
    r.step("exec-exit-code-and-stderr", || {
        let out = exec(
            d,
            id,
            json!({"command": ["sh", "-c", "echo out; echo err >&2; exit 7"]}),
        )?;
        check(
            out["exitCode"] == 7 && out["stdout"] == "out\n" && out["stderr"] == "err\n",
            || out.to_string(),
        )?;
        let out = exec(d, id, json!({"command": ["no-such-program"]}))?;
        check(out["exitCode"] == 127, || out.to_string())
    });
    r.step("exec-output-cap", || {
        let mib = |n: usize| {
            json!({"command": ["sh", "-c", format!("head -c {} /dev/zero | tr '\\0' x", n << 20)]})
        };
        let out = exec(d, id, mib(1))?;
        let len = out["stdout"].as_str().map_or(0, str::len);
        check(len == 1 << 20 && out["stdoutTruncated"] == false, || {
            format!("1 MiB: {len} bytes, truncated {}", out["stdoutTruncated"])
        })?;
        let out = exec(d, id, mib(OUTPUT_CAP / (1 << 20) + 1))?;
        let len = out["stdout"].as_str().map_or(0, str::len);
        check(len == OUTPUT_CAP && out["stdoutTruncated"] == true, || {
            format!("past the cap: {len} bytes, truncated {}", out["stdoutTruncated"])
        })
    });
    r.step("exec-timeout-kills-tree", || {
        let out = exec(
            d,
            id,
            json!({"command": ["sh", "-c", "sleep 300 & sleep 300 & wait"], "timeoutSec": 2}),
        )?;
        check(out["timedOut"] == true, || out.to_string())?;
        let count = "n=0; for c in /proc/[0-9]*/comm; do read x < $c 2>/dev/null && \
                     [ \"$x\" = sleep ] && n=$((n+1)); done; echo $n";
        for _ in 0..20 {
            if sh(d, id, count)? == "0\n" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!(
            "sleep processes left: {}",
            sh(d, id, count)?.trim()
        ))
    });
}

fn console(d: &Daemon, id: &str) -> Result<(), String> {
    let seen = console_until(d, id, Some("echo con$((40+2))sole\n"), "con42sole")?;
    check(seen.contains("con42sole"), || {
        format!("the console shell did not answer: {seen:?}")
    })
}

/// Opens VM `id`'s console over the WebSocket, sends `input` if any, and
/// reads (the replayed history first) until `want` shows or 30 s pass;
/// what it read.
fn console_until(d: &Daemon, id: &str, input: Option<&str>, want: &str) -> Result<String, String> {
    let token = d.expect("POST", &format!("/v1/vms/{id}/console-token"), None, 200)?;
    let path = token["websocketPath"].as_str().ok_or("no websocketPath")?;
    let url = format!("ws://{}{path}", super::daemon::LISTEN);
    let (mut ws, _) = tungstenite::connect(&url).map_err(|e| format!("{url}: {e}"))?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    }
    if let Some(input) = input {
        ws.send(tungstenite::Message::Text(input.into()))
            .map_err(|e| e.to_string())?;
    }
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(want) && std::time::Instant::now() < deadline {
        if let Ok(tungstenite::Message::Binary(b)) = ws.read() {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    Ok(seen)
}

fn firewall(d: &Daemon, vm: &Vm) -> Result<(), String> {
    sh(
        d,
        &vm.id,
        "for p in 8000 8001; do setsid nc -ll -p $p -e echo port-$p \
         </dev/null >/dev/null 2>&1 & done; sleep 1",
    )?;
    let open = vm::tcp_read(&vm.addr, 8000, Duration::from_secs(10))?;
    check(open.trim() == "port-8000", || {
        format!("open mode, 8000: {open:?}")
    })?;
    let policy = json!({"mode": "restricted", "ingress": [{"protocol": "tcp", "portStart": 8000}]});
    d.expect(
        "PUT",
        &format!("/v1/vms/{}/firewall", vm.id),
        Some(&policy),
        200,
    )?;
    check(!vm::ping6(&vm.addr, 2), || {
        "ping6 answered in restricted mode".into()
    })?;
    let allowed = vm::tcp_read(&vm.addr, 8000, Duration::from_secs(10))?;
    check(allowed.trim() == "port-8000", || {
        format!("allowed port 8000: {allowed:?}")
    })?;
    let blocked = vm::tcp_read(&vm.addr, 8001, Duration::from_secs(3));
    check(blocked.is_err(), || {
        format!("port 8001 answered: {blocked:?}")
    })?;
    d.expect(
        "PUT",
        &format!("/v1/vms/{}/firewall", vm.id),
        Some(&json!({"mode": "open"})),
        200,
    )?;
    check(vm::ping6_until(&vm.addr, Duration::from_secs(10)), || {
        "no ping6 after opening again".into()
    })
}

fn clone_identity(d: &Daemon, a: &Vm, b: &Vm, mac_a: &str) -> Result<(), String> {
    check(a.addr != b.addr, || {
        format!("clone kept the address {}", a.addr)
    })?;
    let mac_b = network_is_up(d, b)?;
    check(mac_b != mac_a, || format!("clone kept the MAC {mac_a}"))?;
    let (cid_a, cid_b) = (
        vm::monitor_cid(&d.vm_dir(&a.id))?,
        vm::monitor_cid(&d.vm_dir(&b.id))?,
    );
    check(cid_a != cid_b, || format!("clone kept vsock CID {cid_a}"))?;
    let guest: i64 = sh(d, &b.id, "date +%s")?
        .trim()
        .parse()
        .map_err(|e| format!("date: {e}"))?;
    let host = now_secs();
    check((guest - host).abs() <= 2, || {
        format!("clone clock {guest}, L1 clock {host}")
    })?;
    let log = std::fs::read_to_string(d.vm_dir(&b.id).join(fastvmd::supervisor::MONITOR_LOG))
        .unwrap_or_default();
    let bad: Vec<&str> = log.lines().filter(|l| l.contains("bad CIDs")).collect();
    check(bad.is_empty(), || format!("clone's monitor: {bad:?}"))
}
