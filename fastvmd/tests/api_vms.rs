//! The HTTP API on a real daemon: the VM lifecycle end to end, every body
//! checked against openapi.yaml.

mod common;

use std::time::Duration;

use common::can_run_vms;
use common::daemon::Daemon;
use common::schema::{assert_array_of, assert_schema};
use serde_json::json;

#[test]
fn vm_lifecycle_over_http() {
    if !can_run_vms("vm_lifecycle_over_http") {
        return;
    }
    let d = Daemon::start();
    let (status, body) = d.call("GET", "/v1/vms", None);
    assert_eq!(status, 200);
    assert_array_of("VMInstance", &body);
    assert_eq!(body, json!([]));

    let (status, vm) = d.call(
        "POST",
        "/v1/vms",
        Some(&json!({"machineType": "c1m2", "name": "web"})),
    );
    assert_eq!(status, 201, "{vm}");
    assert_schema("VMInstance", &vm);
    assert_eq!(
        (vm["status"].as_str(), vm["cpu"].as_u64()),
        (Some("running"), Some(1))
    );
    assert_eq!(vm["firewall"], json!({"mode": "restricted", "ingress": []}));
    let id = vm["id"].as_str().unwrap().to_string();

    let (status, got) = d.call("GET", &format!("/v1/vms/{id}"), None);
    assert_eq!((status, &got["name"]), (200, &json!("web")));
    assert_schema("VMInstance", &got);
    let (status, list) = d.call("GET", "/v1/vms", None);
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));

    let (status, renamed) = d.call(
        "PATCH",
        &format!("/v1/vms/{id}"),
        Some(&json!({"name": "api"})),
    );
    assert_eq!((status, &renamed["name"]), (200, &json!("api")));
    let (status, err) = d.call(
        "PATCH",
        &format!("/v1/vms/{id}"),
        Some(&json!({"name": "x".repeat(65)})),
    );
    assert_eq!(status, 400);
    assert_schema("ErrorResponse", &err);
    assert!(err["error"].as_str().unwrap().starts_with("name"), "{err}");

    let (status, out) = d.call(
        "POST",
        &format!("/v1/vms/{id}/exec"),
        Some(&json!({"command": ["echo", "over", "http"]})),
    );
    assert_eq!(status, 200, "{out}");
    assert_schema("ExecVMResponse", &out);
    assert_eq!(out["stdout"], "over http\n");
    let (status, out) = d.call(
        "POST",
        &format!("/v1/vms/{id}/exec"),
        Some(&json!({"command": ["sleep", "5000"], "timeoutSec": 1})),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (&out["timedOut"], &out["exitCode"]),
        (&json!(true), &json!(124))
    );
    let (status, _) = d.call(
        "POST",
        &format!("/v1/vms/{id}/exec"),
        Some(&json!({"command": []})),
    );
    assert_eq!(status, 400);
    // The schema sets no maximum: a longer deadline is run as the longest.
    let (status, out) = d.call(
        "POST",
        &format!("/v1/vms/{id}/exec"),
        Some(&json!({"command": ["echo", "long"], "timeoutSec": 100000})),
    );
    assert_eq!((status, out["exitCode"].as_i64()), (200, Some(0)), "{out}");
    let (status, _) = d.call(
        "POST",
        &format!("/v1/vms/{id}/exec"),
        Some(&json!({"command": ["echo"], "timeoutSec": 0})),
    );
    assert_eq!(status, 400);

    let policy = json!({"mode": "restricted", "ingress": [
        {"protocol": "tcp", "portStart": 80, "portEnd": 443, "sourceCidrs": ["2001:db8::/32"]}
    ]});
    let (status, vm) = d.call("PUT", &format!("/v1/vms/{id}/firewall"), Some(&policy));
    assert_eq!(status, 200, "{vm}");
    assert_schema("VMInstance", &vm);
    assert_eq!(vm["firewall"]["ingress"][0]["portEnd"], 443);
    let (status, vm) = d.call(
        "PATCH",
        &format!("/v1/vms/{id}/firewall"),
        Some(&json!({"mode": "open"})),
    );
    assert_eq!((status, &vm["firewall"]["mode"]), (200, &json!("open")));
    assert_eq!(
        vm["firewall"]["ingress"][0]["portStart"], 80,
        "patch keeps the rules"
    );
    for bad in [
        json!({"mode": "restricted", "ingress": [{"protocol": "icmp", "portStart": 1}]}),
        json!({"mode": "restricted", "ingress": [{"protocol": "tcp", "portStart": 0}]}),
        json!({"mode": "restricted", "ingress": [{"protocol": "tcp", "portStart": 90, "portEnd": 80}]}),
        json!({"mode": "restricted", "ingress": [{"protocol": "tcp", "portStart": 1, "sourceCidrs": ["10.0.0.0/8"]}]}),
        json!({"mode": "restricted", "ingress": [{"protocol": "tcp", "portStart": 1, "description": "d".repeat(257)}]}),
    ] {
        let (status, err) = d.call("PUT", &format!("/v1/vms/{id}/firewall"), Some(&bad));
        assert_eq!(status, 400, "{bad} -> {err}");
        assert_schema("ErrorResponse", &err);
    }

    let (status, quotas) = d.call("GET", "/v1/org/quotas", None);
    assert_eq!(status, 200);
    assert_schema("OrgQuotaUsage", &quotas);
    assert_eq!(quotas["usage"]["vcpu"], 1);

    let (status, snap) = d.call(
        "POST",
        "/v1/snapshots",
        Some(&json!({"vmId": id, "name": "s1"})),
    );
    assert_eq!(status, 201, "{snap}");
    assert_schema("SnapshotObject", &snap);
    assert_eq!(snap["status"], "ready");
    assert_eq!(
        snap["firewall"]["mode"], "open",
        "the snapshot captures the firewall"
    );
    let snap_id = snap["id"].as_str().unwrap().to_string();
    let (status, snaps) = d.call("GET", "/v1/snapshots", None);
    assert_eq!(status, 200);
    assert_array_of("SnapshotObject", &snaps);
    let (status, renamed) = d.call(
        "PATCH",
        &format!("/v1/snapshots/{snap_id}"),
        Some(&json!({"name": "s2"})),
    );
    assert_eq!((status, &renamed["name"]), (200, &json!("s2")));

    let (status, clone) = d.call(
        "POST",
        "/v1/vms",
        Some(&json!({"snapshotId": snap_id, "diskGiB": 20})),
    );
    assert_eq!(status, 201, "{clone}");
    assert_schema("VMInstance", &clone);
    assert_eq!(
        (
            clone["diskGiB"].as_u64(),
            clone["firewall"]["mode"].as_str()
        ),
        (Some(20), Some("open"))
    );
    let clone_name = clone["name"].as_str().unwrap();
    assert!(
        clone_name.starts_with("s2-") && clone_name.len() == 9,
        "a clone without a name is named after its snapshot: {clone_name:?}"
    );
    let clone_id = clone["id"].as_str().unwrap();
    let (status, out) = d.call(
        "POST",
        &format!("/v1/vms/{clone_id}/exec"),
        Some(&json!({"command": ["echo", "clone"]})),
    );
    assert_eq!((status, &out["stdout"]), (200, &json!("clone\n")));
    let (status, _) = d.call(
        "POST",
        "/v1/vms",
        Some(&json!({"snapshotId": snap_id, "diskGiB": 9})),
    );
    assert_eq!(status, 400);

    let (status, del) = d.call("DELETE", &format!("/v1/snapshots/{snap_id}"), None);
    assert_eq!(status, 200);
    assert_schema("DeleteResponse", &del);
    for vm in [&id, &clone_id.to_string()] {
        let (status, del) = d.call("DELETE", &format!("/v1/vms/{vm}"), None);
        assert_eq!(status, 200, "{del}");
        assert_schema("DeleteResponse", &del);
        assert_eq!(del["deleted"], true);
        let (status, _) = d.call("GET", &format!("/v1/vms/{vm}"), None);
        assert_eq!(status, 404);
    }
    assert!(d.monitor_pids().is_empty(), "monitors stopped");
    let (_, quotas) = d.call("GET", "/v1/org/quotas", None);
    assert_eq!(quotas["usage"]["vcpu"], 0);
}

#[test]
fn console_over_websocket_with_one_time_tokens() {
    if !can_run_vms("console_over_websocket_with_one_time_tokens") {
        return;
    }
    let d = Daemon::start();
    let (_, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    let name = vm["name"].as_str().unwrap();
    assert!(
        name.starts_with("c1m2-") && name.len() == 11,
        "a VM without a name is named after its machine type: {name:?}"
    );
    let id = vm["id"].as_str().unwrap();
    let (status, token) = d.call("POST", &format!("/v1/vms/{id}/console-token"), None);
    assert_eq!(status, 200);
    assert_schema("ConsoleTokenResponse", &token);
    let path = token["websocketPath"].as_str().unwrap();
    let url = format!("{}{path}", d.base.replace("http://", "ws://"));

    let (mut ws, _) = tungstenite::connect(&url).expect("websocket");
    ws.send(tungstenite::Message::Text("typed-over-ws".into()))
        .unwrap();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("typed-over-ws") && std::time::Instant::now() < deadline {
        if let Ok(tungstenite::Message::Binary(b)) = ws.read() {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    assert!(
        seen.contains("fastvm-test-guest ready"),
        "history first: {seen}"
    );
    assert!(seen.contains("typed-over-ws"), "echo: {seen}");

    // The token was spent.
    let again = tungstenite::connect(&url);
    match again {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("reused token accepted: {:?}", other.map(|_| ())),
    }
    // Without an upgrade: 426 with the JSON error body.
    let (status, ctype, body) = d.raw("GET", path, &[], Vec::new());
    assert_eq!((status, ctype.as_str()), (426, "application/json"));
    assert_schema("ErrorResponse", &body);

    // The socket closes when the VM goes.
    let (_, token) = d.call("POST", &format!("/v1/vms/{id}/console-token"), None);
    let url = format!(
        "{}{}",
        d.base.replace("http://", "ws://"),
        token["websocketPath"].as_str().unwrap()
    );
    let (mut ws, _) = tungstenite::connect(&url).expect("websocket");
    d.call("DELETE", &format!("/v1/vms/{id}"), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break true,
            Ok(_) if std::time::Instant::now() < deadline => continue,
            Ok(_) => break false,
        }
    };
    assert!(closed, "websocket closed after the VM was deleted");
    let (status, err) = d.call("POST", &format!("/v1/vms/{id}/console-token"), None);
    assert_eq!(status, 404, "{err}");
}
