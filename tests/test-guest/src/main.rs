//! FastVM test guest: a freestanding ELF the monitor boots with the Linux
//! 64-bit boot path. A few instructions at CPL 0 ([`entry`]) switch to CPL 3;
//! from there it checks the boot data, echoes the serial console and serves
//! the guest agent protocol on vsock, all by polling on one thread. With
//! nothing to do it waits on the monitor's idle port instead of spinning.

#![no_std]
#![no_main]

extern crate alloc;

mod agent;
mod bad_queue;
mod boot;
mod cpu;
mod devices;
mod entry;
mod hal;
mod io;
mod net;
mod rt;

use alloc::string::String;

use test_guest::cmdline;
use test_guest::commands::{Disk, Memory};
use test_guest::files::FileStore;
use test_guest::network::Network;
use virtio_drivers::transport::DeviceType;

use crate::agent::{Agent, Context};
use crate::devices::BlkDisk;
use crate::io::Serial;

/// The line the host waits for before talking to the guest.
const READY_LINE: &str = "fastvm-test-guest ready";

/// Rust entry at CPL 3, called from [`entry`] with the boot_params address.
pub extern "C" fn rust_main(zero_page: u64) -> ! {
    entry::install_idt();
    Serial::init();
    // SAFETY: the monitor passes the 4 KiB boot_params page in RSI; nothing writes it.
    let zp = unsafe { core::slice::from_raw_parts(zero_page as *const u8, 4096) };
    rt::init_heap(zp);
    let line = boot::run(zp);
    let (mut disk, mut agent, mut net) = open_devices(&line);
    println!("{READY_LINE}");

    let mut memory = Memory::new();
    let mut files = FileStore::default();
    let mut epoch = 0;
    loop {
        let mut busy = false;
        for _ in 0..64 {
            match Serial::try_get() {
                Some(b) => {
                    Serial::put(b);
                    busy = true;
                }
                None => break,
            }
        }
        // The earliest timer, and the periodic identity checks that are due
        // with it (a clone found by the monitor's epoch otherwise).
        let mut timer: Option<u64> = None;
        let mut checks_due = u64::MAX;
        if let Some(net) = net.as_mut() {
            net.poll();
        }
        if let Some(agent) = agent.as_mut() {
            let mut ctx = Context {
                memory: &mut memory,
                disk: disk.as_mut().map(|d| d as &mut dyn Disk),
                files: &mut files,
                net: net.as_mut().map(|n| n as &mut dyn Network),
            };
            agent.poll(&mut ctx);
            if agent.power_off_at.is_some_and(|t| cpu::now() >= t) {
                io::power_off();
            }
            busy |= agent.progressed();
            timer = earliest(timer, agent.next_timer());
            checks_due = checks_due.min(agent.cid_check_due());
        }
        // After the agent: its programs may have given the stack work.
        if let Some(net) = net.as_mut() {
            timer = earliest(timer, net.next_timer());
            checks_due = checks_due.min(net.mac_check_due());
        }
        let now = cpu::now();
        if busy || timer.is_some_and(|t| t <= now) {
            core::hint::spin_loop();
        } else if let Some(t) = timer {
            io::idle(cpu::micros_until(t.min(checks_due.max(now))));
        } else {
            let seen = io::idle_until_event();
            if seen != epoch {
                epoch = seen;
                if let Some(agent) = agent.as_mut() {
                    agent.check_cid_now();
                }
                if let Some(net) = net.as_mut() {
                    net.check_mac_now();
                }
            }
        }
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Opens every announced virtio-mmio device the guest drives and prints a
/// `boot-check virtio` line.
fn open_devices(line: &str) -> (Option<BlkDisk>, Option<Agent>, Option<net::Net>) {
    let mut disk = None;
    let mut agent = None;
    let mut nic = None;
    let net_config = test_guest::netcfg::parse(line);
    let mut problems = String::new();
    let announced = cmdline::virtio_mmio_devices(line);
    for dev in &announced {
        let opened = devices::transport(dev).and_then(|t| match devices::kind(&t) {
            DeviceType::Block if disk.is_none() => BlkDisk::open(dev, t).map(|d| disk = Some(d)),
            DeviceType::Socket if agent.is_none() => {
                devices::open_vsock(t).map(|v| agent = Some(Agent::new(dev.base, v)))
            }
            DeviceType::Network if nic.is_none() => match &net_config {
                Ok(config) => net::Net::open(dev.base, t, *config).map(|n| nic = Some(n)),
                Err(why) => {
                    println!("net: {why}; NIC unused");
                    Ok(())
                }
            },
            _ => Ok(()),
        });
        if let Err(e) = opened {
            problems.push_str(&alloc::format!(" {:#x}: {e};", dev.base));
        }
    }
    let summary = alloc::format!(
        "devices={} block={} vsock={}",
        announced.len(),
        disk.as_ref().map_or(0, |d: &BlkDisk| d.size_bytes() >> 20),
        agent.as_ref().map_or(0, |a: &Agent| a.cid()),
    );
    if problems.is_empty() {
        println!("boot-check virtio ok {summary}");
    } else {
        println!("boot-check virtio FAIL{problems} {summary}");
    }
    (disk, agent, nic)
}
