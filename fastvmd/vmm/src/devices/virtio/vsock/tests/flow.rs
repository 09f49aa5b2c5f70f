//! Data flow, credit, shutdown, resets and hostile input.

use super::*;

#[test]
fn credit_limits_host_to_guest() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let mut s = host_connect(&path, "CONNECT 42\n");
    let (req, _) = g.recv(&mut dev);
    let local = req.src_port;
    let mut resp = ghdr(OP_RESPONSE, 42, local);
    resp.buf_alloc = 100;
    g.send(&mut dev, resp, &[]);
    assert_eq!(read_line(&mut s), format!("OK {local}\n"));

    let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    s.write_all(&payload).unwrap();
    let mut got = Vec::new();
    while got.len() < 100 {
        let (rw, data) = g.recv(&mut dev);
        assert_eq!(rw.op, OP_RW);
        got.extend(data);
    }
    assert_eq!(got.len(), 100, "device exceeded the guest's credit");
    g.expect_quiet(&mut dev, Duration::from_millis(300));

    // The guest consumed 100 bytes.
    let mut upd = ghdr(OP_CREDIT_UPDATE, 42, local);
    upd.buf_alloc = 100;
    upd.fwd_cnt = 100;
    g.send(&mut dev, upd, &[]);
    while got.len() < 200 {
        let (rw, data) = g.recv(&mut dev);
        assert_eq!(rw.op, OP_RW);
        got.extend(data);
    }
    assert_eq!(got.len(), 200);
    g.expect_quiet(&mut dev, Duration::from_millis(300));
    assert_eq!(got, payload[..200]);

    // CREDIT_REQUEST is answered with our credit.
    let mut creq = ghdr(OP_CREDIT_REQUEST, 42, local);
    creq.buf_alloc = 100;
    creq.fwd_cnt = 100;
    g.send(&mut dev, creq, &[]);
    let (cu, _) = g.recv(&mut dev);
    assert_eq!(cu.op, OP_CREDIT_UPDATE);
    assert!(cu.buf_alloc > 0);
}

#[test]
fn guest_shutdown_closes_host_after_drain() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let (mut s, local) = establish(&mut g, &mut dev, &path, 90);
    g.send(&mut dev, ghdr(OP_RW, 90, local), b"bye");
    let mut shut = ghdr(OP_SHUTDOWN, 90, local);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(&mut dev, shut, &[]);
    assert_eq!(read_exact(&mut s, 3), b"bye");
    expect_closed(&mut s);
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
}

#[test]
fn transport_reset_event_drops_connections() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    let desc = SplitDescriptor::new(EV_BASE, 8, 2, 0);
    g.evq
        .add_desc_chains(&[RawDescriptor::from(desc)], 0)
        .unwrap();
    mem.write_obj(0xffff_ffffu32, GuestAddress(EV_BASE))
        .unwrap();
    activate(&mut dev, &mem, &g);
    let (mut s, _) = establish(&mut g, &mut dev, &path, 91);

    dev.send_transport_reset();
    assert_eq!(g.evq.used().idx().load(), 1);
    let elem = g.evq.used().ring().ref_at(0).unwrap().load();
    assert_eq!((elem.id(), elem.len()), (0, 4));
    let ev: u32 = mem.read_obj(GuestAddress(EV_BASE)).unwrap();
    assert_eq!(ev, EVENT_TRANSPORT_RESET);
    expect_closed(&mut s);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn malformed_tx_packets_are_dropped() {
    let mem = memory();
    let Setup { _dir, mut dev, .. } = setup();
    let mut g = active_guest(&mut dev, &mem);
    // Too short for a header.
    g.send_raw(&mut dev, &[0u8; 10], 0);
    // Write-only TX descriptor.
    g.send_raw(&mut dev, &ghdr(OP_RW, 1, 2).to_bytes(), 2);
    // Header claims far more payload than there is.
    let mut h = ghdr(OP_RW, 1, 2);
    h.len = 1 << 30;
    g.send_raw(&mut dev, &h.to_bytes(), 0);
    let mut h = ghdr(OP_RW, 1, 2);
    h.len = 1000;
    g.send_raw(&mut dev, &h.to_bytes(), 0);
    // Wrong CIDs are dropped silently.
    let mut h = ghdr(OP_RW, 1, 2);
    h.src_cid = 77;
    g.send_raw(&mut dev, &h.to_bytes(), 0);
    assert_eq!(g.txq.used().idx().load(), 5, "every TX buffer returned");
    g.expect_quiet(&mut dev, Duration::from_millis(100));
    // Still serving: an unknown connection gets its RST.
    g.send(&mut dev, ghdr(OP_RW, 3, 4), b"x");
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
}

#[test]
fn config_and_identity() {
    let Setup { _dir, dev, .. } = setup();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.features(), 1 << 32);
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    let mut cfg = [0xaau8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..8], &CID.to_le_bytes());
    assert_eq!(&cfg[8..], &[0; 4]);
    assert!(Vsock::new(2, _dir.path().join("other")).is_err());
}

#[test]
fn bulk_data_both_ways_with_credit_updates() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let (s, local) = establish(&mut g, &mut dev, &path, 95);

    // Host -> guest: 200 KiB while the guest advertises 64 KiB and returns
    // credit as it consumes.
    let payload: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut writer = s.try_clone().unwrap();
    let expected = payload.clone();
    let t = std::thread::spawn(move || writer.write_all(&payload).unwrap());
    let mut got = Vec::new();
    let mut advertised = 0usize;
    while got.len() < expected.len() {
        let (rw, data) = g.recv(&mut dev);
        assert_eq!(rw.op, OP_RW);
        got.extend(data);
        assert!(
            got.len() - advertised <= 64 * 1024,
            "beyond the guest's credit"
        );
        if got.len() - advertised >= 16 * 1024 {
            let mut upd = ghdr(OP_CREDIT_UPDATE, 95, local);
            upd.fwd_cnt = got.len() as u32;
            g.send(&mut dev, upd, &[]);
            advertised = got.len();
        }
    }
    t.join().unwrap();
    assert_eq!(got, expected);

    // Guest -> host: 128 KiB before the host reads anything (within our
    // advertised buffer), then the host reads it all.
    let chunk: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8).collect();
    for _ in 0..32 {
        g.send(&mut dev, ghdr(OP_RW, 95, local), &chunk);
    }
    let mut s = s;
    for _ in 0..32 {
        assert_eq!(read_exact(&mut s, chunk.len()), chunk);
    }
    // Consuming that much makes the device advertise its fwd_cnt.
    let end = Instant::now() + WAIT;
    loop {
        let (h, _) = g.recv(&mut dev);
        if h.fwd_cnt == 128 * 1024 {
            break;
        }
        assert!(Instant::now() < end, "no credit update");
    }
}

#[test]
fn device_reset_closes_host_streams() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let (mut s, _) = establish(&mut g, &mut dev, &path, 96);
    dev.reset();
    expect_closed(&mut s);
    // The listener survives a reset: a new client waits for activation.
    let _s2 = host_connect(&path, "CONNECT 97\n");
}
