//! Pause/resume quiescing, state save, and restore with a new CID through
//! the virtio-mmio transport followed by the transport reset event.

use std::sync::mpsc::channel;

use virtio_bindings::virtio_mmio::*;

use super::*;
use crate::devices::BusDevice;
use crate::devices::virtio::VirtioDeviceState;
use crate::devices::virtio::mmio::{MmioTransport, TransportState};
use crate::devices::virtio::vsock::VsockState;

/// Collects `n` bytes of RW payload, skipping credit updates.
fn recv_data(g: &mut Guest<'_>, dev: &mut Vsock, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let (hdr, data) = g.recv(dev);
        if hdr.op == OP_RW {
            got.extend(data);
        } else {
            assert_eq!(hdr.op, OP_CREDIT_UPDATE, "unexpected {hdr:?}");
        }
    }
    got
}

#[test]
fn pause_stops_data_movement_until_resume() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let (mut s, local) = establish(&mut g, &mut dev, &path, 77);

    dev.pause();
    let rx_used = g.rxq.used().idx().load();
    let tx_used = g.txq.used().idx().load();
    s.write_all(b"while paused").unwrap();
    g.send(&mut dev, ghdr(OP_RW, 77, local), b"ping");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(g.rxq.used().idx().load(), rx_used, "RX moved while paused");
    assert_eq!(
        g.txq.used().idx().load(),
        tx_used,
        "TX completed while paused"
    );
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 4];
    assert!(
        s.read(&mut b).is_err(),
        "guest data reached the host while paused"
    );
    // A second pause is harmless and the state is readable while paused.
    dev.pause();
    assert_eq!(dev.queue_states().len(), 3);

    dev.resume();
    assert_eq!(recv_data(&mut g, &mut dev, 12), b"while paused");
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_exact(&mut s, 4), b"ping");
}

#[test]
fn drop_while_paused_does_not_hang() {
    let Setup { _dir, mut dev, .. } = setup();
    dev.pause();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        drop(dev);
        let _ = tx.send(());
    });
    rx.recv_timeout(WAIT)
        .expect("dropping a paused device hung");
}

#[test]
fn save_state_tracks_host_ports() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let (_s, local) = establish(&mut g, &mut dev, &path, 77);
    let state = dev.save_state();
    assert_eq!(dev.save(), VirtioDeviceState::Vsock(state.clone()));
    assert_eq!(state.guest_cid, CID);
    assert_eq!(state.next_local_port, local + 1);
    assert!(!state.pending_reset_event);
    let back: VsockState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(back, state);
}

fn wr(t: &mut MmioTransport, off: u32, v: u32) {
    t.write(u64::from(off), &v.to_le_bytes());
}

/// Drives the transport to DRIVER_OK with the guest's three queues.
fn bring_up(t: &mut MmioTransport, g: &Guest<'_>) {
    wr(t, VIRTIO_MMIO_STATUS, 1);
    wr(t, VIRTIO_MMIO_STATUS, 3);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    wr(t, VIRTIO_MMIO_STATUS, 0b1011);
    for (i, q) in [&g.rxq, &g.txq, &g.evq].into_iter().enumerate() {
        wr(t, VIRTIO_MMIO_QUEUE_SEL, i as u32);
        wr(t, VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
        wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, q.desc_table_addr().0 as u32);
        wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, q.avail_addr().0 as u32);
        wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, q.used_addr().0 as u32);
        wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    wr(t, VIRTIO_MMIO_STATUS, 0b1111);
    assert!(t.is_activated());
}

/// Waits until the queue's used index reaches `idx`.
fn wait_used(q: &MockSplitQueue<'_, GuestMemory>, idx: u16) {
    let end = Instant::now() + WAIT;
    while q.used().idx().load() != idx {
        assert!(Instant::now() < end, "used index stuck below {idx}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn restore_with_new_cid_then_transport_reset() {
    let mem = memory();
    let Setup { _dir, path, dev } = setup();
    let g = Guest::new(&mem);
    g.post_rx_all();
    let mut t = MmioTransport::new(mem.clone(), Box::new(dev), Arc::new(irq_line()));
    bring_up(&mut t, &g);
    // The driver's event buffer, marked so a missing event shows.
    mem.write_obj(u64::MAX, GuestAddress(EV_BASE)).unwrap();
    let ev = SplitDescriptor::new(EV_BASE, 8, 2, 0);
    g.evq
        .add_desc_chains(&[RawDescriptor::from(ev)], 0)
        .unwrap();
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 2);
    assert_eq!(g.evq.used().idx().load(), 0, "no event is pending yet");

    t.pause_device();
    let state = t.save();
    assert_eq!(state.queue_states.len(), 3);
    let json = serde_json::to_string(&state).unwrap();
    let mut back: TransportState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    drop(t);
    let VirtioDeviceState::Vsock(vs) = &mut back.device else {
        panic!("not a vsock state: {:?}", back.device);
    };
    assert_eq!(vs.guest_cid, CID);
    vs.next_local_port = (1 << 30) + 100;

    let new_path = path.with_file_name("clone.sock");
    let dev = Vsock::restore(7, new_path.clone(), vs).unwrap();
    let reset = dev.reset_handle();
    let irq = Arc::new(irq_line());
    let mut r = MmioTransport::restore(mem.clone(), Box::new(dev), irq.clone(), &back).unwrap();
    let mut cid = [0u8; 8];
    r.read(0x100, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 7, "config shows the new CID");

    reset.send_transport_reset();
    wait_used(&g.evq, 1);
    let event: u32 = mem.read_obj(GuestAddress(EV_BASE)).unwrap();
    assert_eq!(event, EVENT_TRANSPORT_RESET);
    assert_ne!(irq.status() & Interrupt::VRING, 0);

    // A host connection waits until the driver has taken the reset: one
    // the guest accepted before would be reset on the guest's side alone.
    let _host = host_connect(&new_path, "CONNECT 9\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        g.rxq.used().idx().load(),
        0,
        "a connection request reached a driver that had not taken the reset"
    );
    // The driver takes it and posts its event buffer again.
    let ev = SplitDescriptor::new(EV_BASE, 8, 2, 0);
    g.evq
        .add_desc_chains(&[RawDescriptor::from(ev)], 1)
        .unwrap();
    r.write(u64::from(VIRTIO_MMIO_QUEUE_NOTIFY), &2u32.to_le_bytes());

    // The fresh listener serves the new CID from the saved host port on,
    // into the RX ring where the old device left it.
    wait_used(&g.rxq, 1);
    let mut raw = [0u8; HDR];
    let elem = g.rxq.used().ring().ref_at(0).unwrap().load();
    let addr = RX_BASE + u64::from(elem.id()) * SLOT;
    mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
    let req = Hdr::from_bytes(&raw);
    assert_eq!(req.op, OP_REQUEST);
    assert_eq!((req.dst_cid, req.dst_port), (7, 9));
    assert_eq!(req.src_port, (1 << 30) + 100);
}

#[test]
fn after_a_restore_the_old_identity_is_dropped_quietly_until_the_guest_takes_the_new_one() {
    let mem = memory();
    let Setup { _dir, path, dev } = setup();
    let state = dev.save_state();
    drop(dev);
    let mut dev = Vsock::restore(7, path.with_file_name("clone.sock"), &state).unwrap();
    let mut g = active_guest(&mut dev, &mem);
    let old = ghdr(OP_RST, 1024, 5000);
    g.send(&mut dev, old, b"");
    g.expect_quiet(&mut dev, Duration::from_millis(100));
    let drops = dev.cid_drops();
    assert_eq!((drops.previous_identity, drops.bad), (1, 0), "{drops:?}");

    // The guest speaks under CID 7: from now on CID 3 is just wrong.
    g.send(&mut dev, Hdr { src_cid: 7, ..old }, b"");
    g.send(&mut dev, old, b"");
    g.expect_quiet(&mut dev, Duration::from_millis(100));
    let drops = dev.cid_drops();
    assert_eq!((drops.previous_identity, drops.bad), (1, 1), "{drops:?}");
}

#[test]
fn a_device_restored_with_its_own_cid_has_no_previous_identity() {
    let mem = memory();
    let Setup { _dir, path, dev } = setup();
    let state = dev.save_state();
    drop(dev);
    let mut dev = Vsock::restore(CID, path.with_file_name("same.sock"), &state).unwrap();
    let mut g = active_guest(&mut dev, &mem);
    g.send(
        &mut dev,
        Hdr {
            src_cid: 9,
            ..ghdr(OP_RST, 1, 2)
        },
        b"",
    );
    g.expect_quiet(&mut dev, Duration::from_millis(100));
    assert_eq!(dev.cid_drops().bad, 1);
}

fn irq_line() -> Interrupt {
    Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())
}
