//! Errors from the HTTP API are always the JSON error schema with the right
//! status; credentials are checked; orgs are isolated.

mod common;

use std::time::Duration;

use common::can_run_vms;
use common::daemon::Daemon;
use common::schema::assert_schema;
use fastvmd::auth;
use fastvmd::store::Store;
use serde_json::json;

fn assert_json_error(status: u16, ctype: &str, body: &serde_json::Value, want: u16) {
    assert_eq!(status, want, "{body}");
    assert_eq!(ctype, "application/json", "{body}");
    assert_schema("ErrorResponse", body);
}

/// A POST announcing a 2 MiB body: the daemon answers before reading it, so
/// this speaks HTTP/1.1 by hand and reads the answer first.
fn oversized_post(d: &Daemon, path: &str) -> (u16, String, serde_json::Value) {
    use std::io::{Read, Write};
    let addr = d.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        d.key,
        2 << 20
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Send the body a piece at a time until the daemon answers (it may
    // answer early, or only once more than the limit has arrived).
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if sent < 2 << 20 && bytes.is_empty() && stream.write_all(&[b' '; 64 << 10]).is_ok() {
            sent += 64 << 10;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) if bytes.is_empty() => continue,
            Err(_) => break,
        }
    }
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or("")
        .to_string();
    (
        status,
        ctype,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn malformed_requests_get_json_errors() {
    let d = Daemon::start();
    let key = d.key.clone();
    let auth = [("X-API-Key", key.as_str())];
    let json_auth = [
        ("X-API-Key", key.as_str()),
        ("Content-Type", "application/json"),
    ];

    let (s, c, b) = d.raw("GET", "/no/such/route", &auth, Vec::new());
    assert_json_error(s, &c, &b, 404);
    let (s, c, b) = d.raw("PUT", "/v1/vms", &auth, Vec::new());
    assert_json_error(s, &c, &b, 405);
    let (s, c, b) = d.raw("POST", "/v1/vms", &json_auth, b"{not json".to_vec());
    assert_json_error(s, &c, &b, 400);
    let (s, c, b) = d.raw(
        "POST",
        "/v1/vms",
        &[("X-API-Key", key.as_str()), ("Content-Type", "text/plain")],
        b"{}".to_vec(),
    );
    assert_json_error(s, &c, &b, 400);
    assert!(b["error"].as_str().unwrap().contains("Content-Type"), "{b}");
    let (s, c, b) = oversized_post(&d, "/v1/vms");
    assert_json_error(s, &c, &b, 413);
    let (s, c, b) = d.raw("GET", "/v1/vms/not-a-uuid", &auth, Vec::new());
    assert_json_error(s, &c, &b, 400);
    assert!(b["error"].as_str().unwrap().contains("id"), "{b}");
    let (s, c, b) = d.raw(
        "GET",
        "/v1/vms/8d7b7c6e-2d6f-4b7a-9c1f-0a0b0c0d0e0f",
        &auth,
        Vec::new(),
    );
    assert_json_error(s, &c, &b, 404);
    for body in [
        json!({}),
        json!({"machineType": "c1m2", "snapshotId": "8d7b7c6e-2d6f-4b7a-9c1f-0a0b0c0d0e0f"}),
        json!({"machineType": "c9m99"}),
        json!({"machineType": "c1m2", "diskGiB": 5}),
        json!({"machineType": "c1m2", "name": "n".repeat(65)}),
    ] {
        let (s, c, b) = d.raw("POST", "/v1/vms", &json_auth, body.to_string().into_bytes());
        assert_json_error(s, &c, &b, 400);
    }
    // A schema-valid size of any magnitude is the quota's to refuse (403),
    // not the JSON decoder's; null where the schema says integer is a 400.
    for huge in [
        "1000000",
        "18446744073709551615",
        "100000000000000000000000000000",
    ] {
        let body = format!(r#"{{"machineType":"c1m2","diskGiB":{huge}}}"#);
        let (s, c, b) = d.raw("POST", "/v1/vms", &json_auth, body.into_bytes());
        assert_json_error(s, &c, &b, 403);
        assert!(b["error"].as_str().unwrap().contains("diskGiB"), "{b}");
    }
    let body = r#"{"machineType":"c1m2","diskGiB":null}"#;
    let (s, c, b) = d.raw("POST", "/v1/vms", &json_auth, body.as_bytes().to_vec());
    assert_json_error(s, &c, &b, 400);
    // An unknown source snapshot is bad input for createVM (the contract has no 404 there).
    let (s, c, b) = d.raw(
        "POST",
        "/v1/vms",
        &json_auth,
        json!({"snapshotId": "8d7b7c6e-2d6f-4b7a-9c1f-0a0b0c0d0e0f"})
            .to_string()
            .into_bytes(),
    );
    assert_json_error(s, &c, &b, 400);
    assert!(
        b["error"].as_str().unwrap().starts_with("snapshotId"),
        "{b}"
    );
    let (s, c, b) = d.raw(
        "POST",
        "/v1/snapshots",
        &json_auth,
        json!({"vmId": "8d7b7c6e-2d6f-4b7a-9c1f-0a0b0c0d0e0f"})
            .to_string()
            .into_bytes(),
    );
    assert_json_error(s, &c, &b, 404);
    // Health endpoints need no credentials; the contract is served.
    let (s, _, _) = d.raw("GET", "/healthz", &[], Vec::new());
    assert_eq!(s, 200);
    let (s, c, b) = d.raw("GET", "/openapi.yaml", &[], Vec::new());
    assert_eq!((s, c.as_str()), (200, "application/yaml"));
    assert!(b.as_str().unwrap().contains("operationId: createVM"));
}

#[test]
fn credentials_are_checked_and_orgs_isolated() {
    let d = Daemon::start();
    for (headers, needle) in [
        (vec![], "missing credentials"),
        (vec![("X-API-Key", "hlm_short")], "malformed"),
        (
            vec![(
                "X-API-Key",
                "hlm_0000000000000000000000000000000000000000000000000000000000000000",
            )],
            "unknown API key",
        ),
        (vec![("Authorization", "Bearer not.a.jwt")], "JWT"),
        (vec![("Authorization", "Basic abc")], "Bearer"),
    ] {
        let (s, c, b) = d.raw("GET", "/v1/vms", &headers, Vec::new());
        assert_json_error(s, &c, &b, 401);
        assert!(
            b["error"].as_str().unwrap().contains(needle),
            "{headers:?}: {b}"
        );
    }

    // A second org, made directly in the store the daemon uses.
    let store = Store::open(d.data_dir.join("fastvm.db")).unwrap();
    let other = store.create_org("other").unwrap();
    let (other_key, hash, prefix) = auth::generate_api_key();
    let key_row = store.insert_api_key(&other.id, &hash, &prefix).unwrap();
    let secret = auth::load_or_create_secret(&d.data_dir.join("jwt.secret")).unwrap();

    // JWTs: valid, expired, for the other org.
    let jwt = auth::mint_jwt(&secret, &other.id, Duration::from_secs(60));
    let bearer = format!("Bearer {jwt}");
    let (s, _, b) = d.raw(
        "GET",
        "/v1/org/quotas",
        &[("Authorization", bearer.as_str())],
        Vec::new(),
    );
    assert_eq!((s, b["orgId"].as_str()), (200, Some(other.id.as_str())));
    let expired = format!(
        "Bearer {}",
        auth::mint_jwt(&secret, &other.id, Duration::ZERO)
    );
    std::thread::sleep(Duration::from_millis(1100));
    let (s, c, b) = d.raw(
        "GET",
        "/v1/vms",
        &[("Authorization", expired.as_str())],
        Vec::new(),
    );
    assert_json_error(s, &c, &b, 401);
    assert!(b["error"].as_str().unwrap().contains("expired"), "{b}");

    if can_run_vms("credentials_are_checked_and_orgs_isolated (VM part)") {
        let (s, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
        assert_eq!(s, 201, "{vm}");
        let id = vm["id"].as_str().unwrap();
        for (method, path) in [
            ("GET", format!("/v1/vms/{id}")),
            ("DELETE", format!("/v1/vms/{id}")),
            ("POST", format!("/v1/vms/{id}/console-token")),
        ] {
            let (s, b) = d.call_with(Some(&other_key), method, &path, None);
            assert_eq!(s, 404, "{method} {path} from another org: {b}");
        }
        let (s, b) = d.call_with(Some(&other_key), "GET", "/v1/vms", None);
        assert_eq!((s, b), (200, json!([])));
        let (s, b) = d.call_with(
            Some(&other_key),
            "POST",
            "/v1/snapshots",
            Some(&json!({"vmId": id})),
        );
        assert_eq!(s, 404, "{b}");
        let (s, _) = d.call("GET", &format!("/v1/vms/{id}"), None);
        assert_eq!(s, 200, "still there for its owner");
        // A console request without its session is a 400, upgrade or not.
        let (s, c, b) = d.raw("GET", &format!("/v1/vms/{id}/console/ws"), &[], Vec::new());
        assert_json_error(s, &c, &b, 400);
        assert!(b["error"].as_str().unwrap().contains("session"), "{b}");
        // An empty program is answered like a missing one: exit 127.
        let (s, out) = d.call(
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(&json!({"command": [""]})),
        );
        assert_eq!((s, &out["exitCode"]), (200, &json!(127)), "{out}");
        assert!(!out["stderr"].as_str().unwrap().is_empty(), "{out}");
    }

    // Revoked keys stop working at once.
    assert!(store.revoke_api_key(&key_row.id).unwrap());
    let (s, c, b) = d.raw(
        "GET",
        "/v1/vms",
        &[("X-API-Key", other_key.as_str())],
        Vec::new(),
    );
    assert_json_error(s, &c, &b, 401);
    assert!(b["error"].as_str().unwrap().contains("revoked"), "{b}");
}
