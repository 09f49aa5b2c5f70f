//! Connection setup and teardown: host CONNECT handshake, guest-initiated
//! connects, RSTs.

use super::*;

#[test]
fn host_connect_request_response_and_data() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    // The host client connects before the driver is up.
    let mut s = host_connect(&path, "CONNECT 5000\n");
    std::thread::sleep(Duration::from_millis(50));
    activate(&mut dev, &mem, &g);

    let (req, data) = g.recv(&mut dev);
    assert_eq!(req.op, OP_REQUEST);
    assert_eq!(req.type_, TYPE_STREAM);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, CID));
    assert_eq!(req.dst_port, 5000);
    assert!(req.src_port >= 1 << 30, "host port {}", req.src_port);
    assert!(req.buf_alloc > 0);
    assert!(data.is_empty());
    let local = req.src_port;

    g.send(&mut dev, ghdr(OP_RESPONSE, 5000, local), &[]);
    assert_eq!(read_line(&mut s), format!("OK {local}\n"));

    s.write_all(b"hello").unwrap();
    let (rw, data) = g.recv(&mut dev);
    assert_eq!(rw.op, OP_RW);
    assert_eq!((rw.src_port, rw.dst_port), (local, 5000));
    assert_eq!(data, b"hello");

    g.send(&mut dev, ghdr(OP_RW, 5000, local), b"world");
    assert_eq!(read_exact(&mut s, 5), b"world");
}

#[test]
fn guest_rst_closes_host_stream() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let mut s = host_connect(&path, "CONNECT 77\n");
    let (req, _) = g.recv(&mut dev);
    assert_eq!(req.op, OP_REQUEST);
    g.send(&mut dev, ghdr(OP_RST, 77, req.src_port), &[]);
    expect_closed(&mut s);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn bad_connect_lines_close_host_stream() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    for line in [
        "HELLO\n",
        "CONNECT abc\n",
        "CONNECT \n",
        "CONNECT 99999999999\n",
        "CONNECT 1 2\n",
    ] {
        let mut s = host_connect(&path, line);
        expect_closed(&mut s);
    }
    // Overlong line without a newline.
    let mut s = host_connect(&path, &"x".repeat(100));
    expect_closed(&mut s);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn response_timeout_closes_host_stream() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = active_guest(&mut dev, &mem);
    let mut s = host_connect(&path, "CONNECT 80\n");
    let (req, _) = g.recv(&mut dev);
    assert_eq!(req.op, OP_REQUEST);
    let start = Instant::now();
    expect_closed(&mut s);
    assert!(start.elapsed() >= Duration::from_millis(1500));
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (req.src_port, 80));
}

#[test]
fn guest_connect_to_missing_socket_gets_rst() {
    let mem = memory();
    let Setup { _dir, mut dev, .. } = setup();
    let mut g = active_guest(&mut dev, &mem);
    g.send(&mut dev, ghdr(OP_REQUEST, 1234, 9999), &[]);
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
    assert_eq!((rst.src_cid, rst.dst_cid), (HOST_CID, CID));
    assert_eq!((rst.src_port, rst.dst_port), (9999, 1234));
}

#[test]
fn guest_connect_to_host_listener() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut name = path.clone().into_os_string();
    name.push("_7000");
    let listener = UnixListener::bind(&name).unwrap();
    let mut g = active_guest(&mut dev, &mem);

    g.send(&mut dev, ghdr(OP_REQUEST, 1500, 7000), &[]);
    let (resp, _) = g.recv(&mut dev);
    assert_eq!(resp.op, OP_RESPONSE);
    assert_eq!((resp.src_port, resp.dst_port), (7000, 1500));
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();

    g.send(&mut dev, ghdr(OP_RW, 1500, 7000), b"ping");
    assert_eq!(read_exact(&mut s, 4), b"ping");
    s.write_all(b"pong").unwrap();
    let (rw, data) = g.recv(&mut dev);
    assert_eq!(rw.op, OP_RW);
    assert_eq!(data, b"pong");

    // Host closes: the guest is told with a SHUTDOWN, answers RST.
    drop(s);
    let (shut, _) = g.recv(&mut dev);
    assert_eq!(shut.op, OP_SHUTDOWN);
    assert_eq!(shut.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    g.send(&mut dev, ghdr(OP_RST, 1500, 7000), &[]);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn guest_connect_to_a_full_listener_is_refused_at_once() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut name = path.clone().into_os_string();
    name.push("_7100");
    // A listener that never accepts, its backlog filled: a blocking connect
    // would wait on it forever, holding the backend thread.
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&name).unwrap())
        .unwrap();
    listener.listen(0).unwrap();
    let mut held = Vec::new();
    loop {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        if s.connect(&socket2::SockAddr::unix(&name).unwrap()).is_err() {
            break;
        }
        held.push(s);
        assert!(held.len() < 64, "the backlog never filled");
    }
    let mut g = active_guest(&mut dev, &mem);
    let started = std::time::Instant::now();
    g.send(&mut dev, ghdr(OP_REQUEST, 1600, 7100), &[]);
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (7100, 1600));
    assert!(
        started.elapsed() < WAIT,
        "refused after {:?}",
        started.elapsed()
    );
    // The backend is free for the next connection.
    let mut other = path.clone().into_os_string();
    other.push("_7101");
    let _ready = UnixListener::bind(&other).unwrap();
    g.send(&mut dev, ghdr(OP_REQUEST, 1601, 7101), &[]);
    let (resp, _) = g.recv(&mut dev);
    assert_eq!(resp.op, OP_RESPONSE);
}

#[test]
fn unknown_connection_gets_rst() {
    let mem = memory();
    let Setup { _dir, mut dev, .. } = setup();
    let mut g = active_guest(&mut dev, &mem);
    g.send(&mut dev, ghdr(OP_RW, 1111, 2222), b"data");
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (2222, 1111));
    // An RST for an unknown connection is not answered.
    g.send(&mut dev, ghdr(OP_RST, 1111, 2222), &[]);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}
