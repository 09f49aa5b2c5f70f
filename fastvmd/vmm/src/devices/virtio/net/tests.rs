//! virtio-net over a real tap in a network namespace of the test's own:
//! frames sent into the tap from an AF_PACKET socket reach the guest's RX
//! buffers only when the policy lets them, a policy change applies to the
//! next frame, and TX frames come out of the tap. Over a seqpacket stand-in
//! for the tap: a reply passes a restricted policy only once the guest sent
//! what it answers, and a restored device has no flows.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastvm_proto::api::{FirewallMode, FirewallPolicy, FirewallProtocol, FirewallRule};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::Queue;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{Net, NetState};
use crate::devices::virtio::{GuestMemory, Interrupt, VirtioDevice, VirtioDeviceState};
use crate::net::addr::Mac;
use crate::net::firewall::LivePolicy;
use crate::net::firewall::test_frames::{GUEST4, REMOTE4, tcp};
use crate::net::tap::{Tap, VNET_HDR_LEN};

const RX_QUEUE: u64 = 0;
const TX_QUEUE: u64 = 0x8000;
const BUFFERS: u64 = 0x10_0000;
const BUF_LEN: u32 = 2048;
const RX_BUFFERS: u16 = 8;
const TAP: &str = "fvmt0";

fn tcp22_only() -> FirewallPolicy {
    FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![FirewallRule {
            protocol: FirewallProtocol::Tcp,
            port_start: 22,
            port_end: None,
            source_cidrs: None,
            description: None,
        }],
    }
}

/// An Ethernet frame to `dst_mac` carrying IPv6 + a TCP SYN to `port`.
fn tcp_frame(dst_mac: Mac, port: u16) -> Vec<u8> {
    let mut f = dst_mac.0.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 9, 0x86, 0xdd]);
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8] = 0x20;
    ip[9] = 0x01;
    ip[24] = 0xfd;
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[12] = 5 << 4;
    f.extend_from_slice(&tcp);
    f
}

fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

/// Sets IFF_UP on `name` and returns its index (in this thread's namespace).
fn link_up(name: &str) -> io::Result<i32> {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        value: i32,
        _pad: [u8; 20],
    }
    // SAFETY: plain socket creation; the fd is owned right away.
    let sock = unsafe {
        OwnedFd::from_raw_fd(check(
            libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0),
            "socket",
        )?)
    };
    let mut req = IfReq {
        name: [0; 16],
        value: 0,
        _pad: [0; 20],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS/SIOCGIFINDEX read and write a
    // `struct ifreq`, which `req` is (name, then the int/short union).
    unsafe {
        check(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req),
            "SIOCGIFFLAGS",
        )?;
        req.value |= libc::IFF_UP;
        check(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req),
            "SIOCSIFFLAGS",
        )?;
        check(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req),
            "SIOCGIFINDEX",
        )?;
    }
    Ok(req.value)
}

/// An AF_PACKET socket on interface `index`: what it sends, the tap reads.
fn packet_socket(index: i32) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation; the fd is owned right away.
    let fd = unsafe {
        OwnedFd::from_raw_fd(check(
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(proto),
            ),
            "AF_PACKET socket",
        )?)
    };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set below follow.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index;
    // SAFETY: `addr` is a sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(bound, "bind")?;
    Ok(fd)
}

fn send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: `frame` is valid for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
}

fn recv(fd: &OwnedFd, deadline: Instant) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            buf.truncate(n as usize);
            return buf;
        }
        assert!(Instant::now() < deadline, "nothing came out of the tap");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` on a thread in a new network namespace, or prints SKIP.
fn in_own_netns(test: &'static str, f: impl FnOnce() + Send + 'static) {
    let outcome = std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: unshare only changes this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot make a network namespace: {}",
                io::Error::last_os_error()
            ));
        }
        // No IPv6 on new links: the kernel's own router solicitations and
        // MLD reports would mix with the test's frames.
        std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
            .map_err(|e| format!("disable_ipv6: {e}"))?;
        if let Err(e) = std::fs::metadata("/dev/net/tun") {
            return Err(format!("/dev/net/tun: {e}"));
        }
        f();
        Ok(())
    })
    .join()
    .expect("test thread panicked");
    if let Err(why) = outcome {
        eprintln!("SKIP {test}: {why}");
    }
}

/// Activates `net` on queues in `mem`, the RX queue holding
/// `RX_BUFFERS` buffers of `BUF_LEN`: the RX and TX mocks and the interrupt.
fn activated<'a>(
    net: &mut Net,
    mem: &'a GuestMemory,
) -> (
    MockSplitQueue<'a, GuestMemory>,
    MockSplitQueue<'a, GuestMemory>,
    Arc<Interrupt>,
) {
    let rx_mock = MockSplitQueue::create(mem, GuestAddress(RX_QUEUE), 16);
    let tx_mock = MockSplitQueue::create(mem, GuestAddress(TX_QUEUE), 16);
    let rx_descs: Vec<RawDescriptor> = (0..RX_BUFFERS)
        .map(|i| {
            let addr = BUFFERS + u64::from(i) * 0x1000;
            SplitDescriptor::new(addr, BUF_LEN, VRING_DESC_F_WRITE as u16, 0).into()
        })
        .collect();
    rx_mock.add_desc_chains(&rx_descs, 0).unwrap();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let queues: Vec<Queue> = vec![
        rx_mock.create_queue().unwrap(),
        tx_mock.create_queue().unwrap(),
    ];
    net.activate(mem.clone(), queues, irq.clone(), 0).unwrap();
    (rx_mock, tx_mock, irq)
}

#[test]
fn receive_path_enforces_the_live_policy_and_tx_reaches_the_tap() {
    in_own_netns(
        "receive_path_enforces_the_live_policy_and_tx_reaches_the_tap",
        || {
            let tap = Tap::open(TAP).expect("open tap");
            let index = link_up(TAP).expect("link up");
            let wire = packet_socket(index).expect("packet socket");
            let mac: Mac = "02:aa:bb:cc:dd:01".parse().unwrap();
            let policy = LivePolicy::new(tcp22_only()).unwrap();
            let mut net = Net::new(mac, Some(tap), policy.clone()).unwrap();
            let mut config = [0u8; 8];
            net.read_config(0, &mut config);
            assert_eq!(&config[..6], &mac.0);
            assert_eq!(u16::from_le_bytes([config[6], config[7]]), 1, "link up");

            let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
            let (rx_mock, tx_mock, irq) = activated(&mut net, &mem);
            let counters = net.handle().counters;

            // Blocked: TCP 23, an ARP frame; allowed: TCP 22.
            send(&wire, &tcp_frame(mac, 23));
            let mut arp = mac.0.to_vec();
            arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 9, 0x08, 0x06]);
            arp.resize(60, 0);
            send(&wire, &arp);
            let allowed = tcp_frame(mac, 22);
            send(&wire, &allowed);
            wait_for("three frames judged", || {
                let (p, d, _) = counters.read();
                p + d == 3
            });
            assert_eq!(counters.read(), (1, 2, 0));
            assert_eq!(rx_mock.used().idx().load(), 1, "one frame delivered");
            let used = rx_mock.used().ring().ref_at(0).unwrap().load();
            assert_eq!(used.len() as usize, VNET_HDR_LEN + allowed.len());
            let mut got = vec![0u8; used.len() as usize];
            mem.read_slice(
                &mut got,
                GuestAddress(BUFFERS + u64::from(used.id()) * 0x1000),
            )
            .unwrap();
            assert_eq!(&got[VNET_HDR_LEN..], &allowed[..]);
            assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers");
            assert!(irq.status() & Interrupt::VRING != 0);

            // A new policy applies to the very next frame.
            policy
                .set(FirewallPolicy {
                    mode: FirewallMode::Open,
                    ingress: Vec::new(),
                })
                .unwrap();
            send(&wire, &tcp_frame(mac, 23));
            wait_for("the open policy", || counters.read().0 == 2);
            policy.set(FirewallPolicy::default()).unwrap();
            send(&wire, &tcp_frame(mac, 22));
            wait_for("the closed policy", || counters.read().1 == 3);
            assert_eq!(rx_mock.used().idx().load(), 2);

            // TX: header + frame from the guest come out of the tap as a frame.
            let out = tcp_frame("02:00:00:00:00:09".parse().unwrap(), 8080);
            let mut buf = vec![0u8; VNET_HDR_LEN];
            buf.extend_from_slice(&out);
            mem.write_slice(&buf, GuestAddress(BUFFERS + 0x10_000))
                .unwrap();
            let tx_desc: RawDescriptor =
                SplitDescriptor::new(BUFFERS + 0x10_000, buf.len() as u32, 0, 0).into();
            tx_mock.add_desc_chains(&[tx_desc], 0).unwrap();
            net.queue_notify(1);
            assert_eq!(tx_mock.used().idx().load(), 1);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let frame = recv(&wire, deadline);
                if frame == out {
                    break;
                }
            }
            assert_eq!(counters.read().2, 1);

            // Snapshot state: MAC and policy; a restore may replace either.
            let VirtioDeviceState::Net(state) = net.save() else {
                panic!("not a net state");
            };
            assert_eq!(state.mac, mac.0);
            assert_eq!(
                Net::saved_policy(&state).unwrap(),
                FirewallPolicy::default()
            );
            assert_eq!(net.queue_states().len(), 2);
        },
    );
}

#[test]
fn restore_takes_the_saved_policy_unless_given_one() {
    let state = NetState {
        mac: [2, 0, 0, 0, 0, 7],
        policy_json: serde_json::to_string(&tcp22_only()).unwrap(),
    };
    let kept = Net::restore(&state, None, None, None).unwrap();
    assert_eq!(kept.mac().0, state.mac);
    assert_eq!(kept.policy().policy(), tcp22_only());
    let mut config = [0u8; 8];
    kept.read_config(0, &mut config);
    assert_eq!(&config[6..], &[0, 0], "no tap: link down");
    let new_mac: Mac = "02:00:00:00:00:08".parse().unwrap();
    let given = Net::restore(&state, Some(new_mac), None, Some(FirewallPolicy::default())).unwrap();
    assert_eq!(given.mac(), new_mac);
    assert_eq!(given.policy().policy(), FirewallPolicy::default());
    let broken = NetState {
        policy_json: "{".into(),
        ..state
    };
    assert!(Net::restore(&broken, None, None, None).is_err());
}

/// `frame` with a zeroed virtio-net header in front, as a tap carries it.
fn with_vnet_header(frame: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; VNET_HDR_LEN];
    buf.extend_from_slice(frame);
    buf
}

#[test]
fn a_reply_passes_only_after_the_guest_sent_what_it_answers() {
    let (device_end, wire_end) = super::fuzz::frame_pair().expect("socketpair");
    // Declared before the device, so dropped after it.
    let wire = std::os::unix::net::UnixDatagram::from(wire_end);
    let tap = Tap::from_frame_socket(device_end, "fvmsock0");
    let mac: Mac = "02:aa:bb:cc:dd:02".parse().unwrap();
    let policy = LivePolicy::new(FirewallPolicy::default()).unwrap();
    let mut net = Net::new(mac, Some(tap), policy).unwrap();
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
    let (rx_mock, tx_mock, _irq) = activated(&mut net, &mem);
    let counters = net.handle().counters;
    let syn = with_vnet_header(&tcp((GUEST4, 40000), (REMOTE4, 443), 0x02));
    let syn_ack = with_vnet_header(&tcp((REMOTE4, 443), (GUEST4, 40000), 0x12));

    // Before the guest sent anything, the "reply" is dropped.
    wire.send(&syn_ack).unwrap();
    wait_for("the unsolicited reply judged", || counters.read().1 == 1);
    assert_eq!(counters.read(), (0, 1, 0));

    // The guest's SYN leaves through the TX queue and opens the flow.
    let at = BUFFERS + 0x10_000;
    mem.write_slice(&syn, GuestAddress(at)).unwrap();
    let tx_desc: RawDescriptor = SplitDescriptor::new(at, syn.len() as u32, 0, 0).into();
    tx_mock.add_desc_chains(&[tx_desc], 0).unwrap();
    net.queue_notify(1);
    let mut got = vec![0u8; 4096];
    let n = wire.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &syn[..], "the SYN on the wire");
    assert_eq!(net.flows_live(), 1);
    assert_eq!(counters.read_flows().live, 1);

    // Now the same reply passes into an RX buffer.
    wire.send(&syn_ack).unwrap();
    wait_for("the reply delivered", || counters.read().0 == 1);
    assert_eq!(rx_mock.used().idx().load(), 1);
    let used = rx_mock.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.len() as usize, syn_ack.len());
    let mut delivered = vec![0u8; syn_ack.len()];
    mem.read_slice(
        &mut delivered,
        GuestAddress(BUFFERS + u64::from(used.id()) * 0x1000),
    )
    .unwrap();
    assert_eq!(&delivered[VNET_HDR_LEN..], &syn_ack[VNET_HDR_LEN..]);
    assert_eq!(counters.read_flows().replies, 1);

    // A reply from another port of the same host is still dropped.
    let stranger = tcp((REMOTE4, 444), (GUEST4, 40000), 0x12);
    wire.send(&with_vnet_header(&stranger)).unwrap();
    wait_for("the stranger judged", || counters.read().1 == 2);
    assert_eq!(counters.read(), (1, 2, 1));

    // A snapshot carries no flow: the restored device starts empty.
    let VirtioDeviceState::Net(state) = net.save() else {
        panic!("not a net state");
    };
    let restored = Net::restore(&state, None, None, None).unwrap();
    assert_eq!(restored.flows_live(), 0);
    assert_eq!(restored.handle().counters.read_flows().live, 0);
    assert_eq!(net.flows_live(), 1, "the original keeps its flow");
}
