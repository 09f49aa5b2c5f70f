//! Port forwards end to end against a live daemon (the test guest's echo
//! service on port 7 and HTTP responder on port 80): the socket's
//! `forwardPort`, `listForwards`, `closeForward`, and `fastvmd
//! port-forward` until Ctrl-C.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::Daemon;
use common::socket::Conn;
use serde_json::{Value, json};

fn running_vm(d: &Daemon, name: &str) -> String {
    let body = json!({"machineType": "c1m2", "name": name});
    let (status, vm) = d.call("POST", "/v1/vms", Some(&body));
    assert_eq!(status, 201, "{vm}");
    vm["id"].as_str().unwrap().to_string()
}

/// An HTTP GET through `addr`; the whole answer.
fn http_get(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn forwards_reach_guest_services_and_go_with_their_vm() {
    if !common::can_run_vms("forwards_reach_guest_services_and_go_with_their_vm") {
        return;
    }
    let d = Daemon::start();
    let id = running_vm(&d, "web");
    let mut c = Conn::open(&d, Duration::from_secs(20));
    let (status, http) =
        c.call(json!({"op": "forwardPort", "params": {"id": id}, "body": {"guestPort": 80}}));
    assert_eq!(status, 201, "{http}");
    let addr = http["hostAddress"].as_str().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{http}");
    for _ in 0..3 {
        let answer = http_get(&addr);
        assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer}");
        assert!(answer.ends_with("hello from guest\r\n"), "{answer}");
    }

    // Echo, both ways at once on one connection.
    let (status, echo) =
        c.call(json!({"op": "forwardPort", "params": {"id": id}, "body": {"guestPort": 7}}));
    assert_eq!(status, 201, "{echo}");
    let mut s = TcpStream::connect(echo["hostAddress"].as_str().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; data.len()];
    std::thread::scope(|scope| {
        let mut w = s.try_clone().unwrap();
        let data = &data;
        scope.spawn(move || w.write_all(data).unwrap());
        s.read_exact(&mut back).unwrap();
    });
    assert!(back == data);

    let (status, list) = c.call(json!({"op": "listForwards"}));
    assert_eq!(status, 200, "{list}");
    let forwards = list["forwards"].as_array().unwrap();
    assert_eq!(forwards.len(), 2, "{list}");
    let web = forwards.iter().find(|f| f["guestPort"] == 80).unwrap();
    assert_eq!(web["connections"], 3, "{list}");

    // A taken host port is a conflict; a port 0 guest port a bad request.
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let (status, body) = c.call(json!({"op": "forwardPort", "params": {"id": id}, "body": {"guestPort": 80, "hostPort": port}}));
    assert_eq!(status, 409, "{body}");
    let (status, body) =
        c.call(json!({"op": "forwardPort", "params": {"id": id}, "body": {"guestPort": 0}}));
    assert_eq!(status, 400, "{body}");

    // Nothing listens on 9 in the guest: the connection is closed.
    let (_, none) =
        c.call(json!({"op": "forwardPort", "params": {"id": id}, "body": {"guestPort": 9}}));
    let mut s = TcpStream::connect(none["hostAddress"].as_str().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);

    // Closed, it listens no more; unknown, 404.
    let fid = http["id"].as_str().unwrap();
    let (status, body) = c.call(json!({"op": "closeForward", "params": {"id": fid}}));
    assert_eq!(status, 200, "{body}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still listening after closeForward"
    );
    let (status, _) = c.call(json!({"op": "closeForward", "params": {"id": fid}}));
    assert_eq!(status, 404);

    // The VM's forwards go with it.
    let (status, _) = d.call("DELETE", &format!("/v1/vms/{id}"), None);
    assert_eq!(status, 200);
    let (_, list) = c.call(json!({"op": "listForwards"}));
    assert_eq!(list["forwards"], json!([]), "{list}");
    assert!(TcpStream::connect(echo["hostAddress"].as_str().unwrap()).is_err());
}

#[test]
fn fastvmd_port_forward_holds_until_interrupted() {
    if !common::can_run_vms("fastvmd_port_forward_holds_until_interrupted") {
        return;
    }
    let d = Daemon::start();
    running_vm(&d, "site");
    let mut child = Command::new(common::fastvmd_bin())
        .args(["port-forward", "--socket"])
        .arg(d.data_dir.join("fastvmd.sock"))
        .args(["site", "80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    assert!(http_get(&addr).ends_with("hello from guest\r\n"));
    // SAFETY: kill sends SIGINT to the child just spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut c = Conn::open(&d, Duration::from_secs(20));
    let (_, list): (u16, Value) = c.call(json!({"op": "listForwards"}));
    assert_eq!(list["forwards"], json!([]), "closed on Ctrl-C: {list}");
}
