//! The same operations over the daemon's local Unix socket: default-org
//! callers, API-key callers, admin ops, `watch` and `attachConsole`; bodies
//! checked against openapi.yaml.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::can_run_vms;
use common::daemon::Daemon;
use common::schema::{assert_array_of, assert_schema};
use common::socket::Conn;
use serde_json::json;

#[test]
fn operations_admin_and_isolation_over_the_socket() {
    let d = Daemon::start_with(&["--quota-vcpu", "1"]);
    let mut c = Conn::open(&d, Duration::from_secs(30));
    let (status, quotas) = c.call(json!({"op": "getOrgQuotas"}));
    assert_eq!(status, 200);
    assert_schema("OrgQuotaUsage", &quotas);
    assert_eq!(
        quotas["limits"]["vcpu"], 1,
        "--quota-vcpu is the default limit"
    );
    let (status, vms) = c.call(json!({"op": "listVMs"}));
    assert_eq!(status, 200);
    assert_array_of("VMInstance", &vms);
    let (status, err) = c.call(json!({"op": "getVM", "params": {"id": "nope"}}));
    assert_eq!(status, 400);
    assert_schema("ErrorResponse", &err);
    let (status, _) = c.call(json!({"op": "noSuchOp"}));
    assert_eq!(status, 404);

    // Admin: a second org and its key; that key sees only its own org.
    let (status, org) = c.call(json!({"op": "createOrg", "body": {"name": "acme"}}));
    assert_eq!(status, 200, "{org}");
    let key = org["apiKey"]["key"].as_str().unwrap().to_string();
    let (status, q) = c.call(json!({"op": "getOrgQuotas", "apiKey": key}));
    assert_eq!((status, &q["orgId"]), (200, &org["id"]));
    let (status, _) = c.call(json!({"op": "createOrg", "apiKey": key, "body": {"name": "x"}}));
    assert_eq!(status, 403, "admin ops are for the local default org");
    let (status, _) = c.call(json!({"op": "listVMs", "apiKey": "hlm_wrong"}));
    assert_eq!(status, 401);

    if !can_run_vms("operations_admin_and_isolation_over_the_socket (VM part)") {
        return;
    }
    let mut watcher = Conn::open(&d, Duration::from_secs(30));
    let (status, _) = watcher.call(json!({"op": "watch"}));
    assert_eq!(status, 200);

    let (status, vm) = c.call(json!({"op": "createVM", "body": {"machineType": "c1m2"}}));
    assert_eq!(status, 201, "{vm}");
    assert_schema("VMInstance", &vm);
    let id = vm["id"].as_str().unwrap().to_string();
    let (status, err) = c.call(json!({"op": "createVM", "body": {"machineType": "c1m2"}}));
    assert_eq!(status, 403, "{err}");
    let (status, out) = c
        .call(json!({"op": "execVM", "params": {"id": id}, "body": {"command": ["echo", "sock"]}}));
    assert_eq!(status, 200);
    assert_schema("ExecVMResponse", &out);
    assert_eq!(out["stdout"], "sock\n");
    let (status, _) = c.call(json!({"op": "getVM", "apiKey": key, "params": {"id": id}}));
    assert_eq!(status, 404, "another org's VM");

    // The watcher saw the VM appear and become running.
    let mut saw_running = false;
    for _ in 0..20 {
        let event = watcher.read();
        if event["event"] == "vm" {
            assert_schema("VMInstance", &event["data"]);
            if event["data"]["id"] == id.as_str() && event["data"]["status"] == "running" {
                saw_running = true;
                break;
            }
        }
    }
    assert!(saw_running, "watch reported the new VM running");

    // attachConsole: 101, then raw bytes both ways.
    let mut console = Conn::open(&d, Duration::from_secs(30));
    let (status, _) = console.call(json!({"op": "attachConsole", "params": {"id": id}}));
    assert_eq!(status, 101);
    console.writer.write_all(b"over-the-socket").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("over-the-socket") {
        let n = console.reader.read(&mut buf).expect("console bytes");
        assert!(n > 0, "console closed early");
        seen.extend_from_slice(&buf[..n]);
    }

    let (status, del) = c.call(json!({"op": "deleteVM", "params": {"id": id}}));
    assert_eq!(status, 200);
    assert_schema("DeleteResponse", &del);
}
