//! The socket front end driven through a real socket over a real service
//! (no VMs are created, so the monitor binary is never run).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fastvm_proto::socket::{ServerFrame, SocketEvent, SocketRequest, SocketResponse, encode_frame};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{SOCKET_FILE, bind, serve};
use crate::service::{Service, ServiceConfig};
use crate::store::NewVm;
use crate::supervisor::GuestChoice;

struct Daemon {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    service: Service,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn daemon() -> Daemon {
    daemon_with(|_| {}).await
}

/// A daemon whose config `adjust` changed first.
async fn daemon_with(adjust: impl FnOnce(&mut ServiceConfig)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(
        dir.path().join("home"),
        GuestChoice::Test,
        "/nonexistent/fastvmd".into(),
    );
    adjust(&mut config);
    let service = Service::open(config).await.unwrap().service;
    let path = dir.path().join(SOCKET_FILE);
    let listener = bind(&path).unwrap();
    let server = tokio::spawn(serve(listener, service.clone()));
    Daemon {
        _dir: dir,
        path,
        service,
        server,
    }
}

struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    async fn connect(d: &Daemon) -> Client {
        let (r, w) = UnixStream::connect(&d.path).await.unwrap().into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
        }
    }

    async fn send_line(&mut self, line: &[u8]) {
        self.writer.write_all(line).await.unwrap();
    }

    async fn send(&mut self, mut req: SocketRequest) -> u64 {
        self.next_id += 1;
        req.id = self.next_id;
        self.send_line(&encode_frame(&req).unwrap()).await;
        req.id
    }

    async fn frame(&mut self) -> ServerFrame {
        self.frame_within(Duration::from_secs(10)).await
    }

    async fn frame_within(&mut self, wait: Duration) -> ServerFrame {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        tokio::time::timeout(wait, read)
            .await
            .unwrap_or_else(|_| panic!("a frame within {wait:?}"))
            .unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    async fn response(&mut self) -> SocketResponse {
        self.response_within(Duration::from_secs(10)).await
    }

    async fn response_within(&mut self, wait: Duration) -> SocketResponse {
        match self.frame_within(wait).await {
            ServerFrame::Response(r) => r,
            ServerFrame::Event(e) => panic!("expected a response, got {e:?}"),
        }
    }

    async fn call(&mut self, req: SocketRequest) -> SocketResponse {
        self.call_within(req, Duration::from_secs(10)).await
    }

    /// [`Client::call`] for an operation that may take `wait`.
    async fn call_within(&mut self, req: SocketRequest, wait: Duration) -> SocketResponse {
        let id = self.send(req).await;
        let resp = self.response_within(wait).await;
        assert_eq!(resp.id, id);
        resp
    }
}

fn req(op: &str) -> SocketRequest {
    SocketRequest::new(0, op)
}

fn error(resp: &SocketResponse) -> &str {
    resp.error_message()
        .unwrap_or_else(|| panic!("not an error: {resp:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_0600_and_lists_and_quotas_answer() {
    let d = daemon().await;
    let mode = std::fs::metadata(&d.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut c = Client::connect(&d).await;
    let resp = c.call(req("listVMs")).await;
    assert_eq!((resp.status, resp.body), (200, json!([])));
    let resp = c.call(req("getOrgQuotas")).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body["orgId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(c.call(req("getLivez")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_params_and_bodies_are_400_and_unknown_ops_404() {
    let d = daemon().await;
    let mut c = Client::connect(&d).await;
    c.send_line(b"not json\n").await;
    let resp = c.response().await;
    assert_eq!((resp.id, resp.status), (0, 400));
    c.send_line(b"{\"id\":41,\"op\":5}\n").await;
    let resp = c.response().await;
    assert_eq!((resp.id, resp.status), (41, 400));

    let resp = c.call(req("frobnicate")).await;
    assert_eq!(resp.status, 404);
    assert!(error(&resp).contains("frobnicate"));

    let resp = c.call(req("getVM")).await;
    assert_eq!(resp.status, 400);
    assert!(error(&resp).contains("params.id"), "{resp:?}");
    let resp = c.call(req("getVM").param("id", "not-a-uuid")).await;
    assert_eq!(resp.status, 400);

    let id = "6f1c2a3b-0000-4000-8000-000000000001";
    let resp = c
        .call(req("updateVM").param("id", id).body(json!({"name": 5})))
        .await;
    assert_eq!(resp.status, 400);
    assert!(error(&resp).contains("invalid type"), "{resp:?}");
    let resp = c.call(req("updateVM").param("id", id)).await;
    assert!(error(&resp).contains("missing field `name`"), "{resp:?}");
    let resp = c.call(req("getVM").param("id", id)).await;
    assert_eq!(resp.status, 404);
    let resp = c.call(req("attachConsole").param("id", id)).await;
    assert_eq!(resp.status, 404);
    // The connection still works after all of that.
    assert_eq!(c.call(req("listVMs")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_requests_in_flight_are_each_answered() {
    let d = daemon().await;
    let mut c = Client::connect(&d).await;
    let a = c.send(req("listVMs")).await;
    let b = c.send(req("getOrgQuotas")).await;
    let z = c.send(req("listSnapshots")).await;
    let mut ids = vec![];
    for _ in 0..3 {
        let resp = c.response().await;
        assert_eq!(resp.status, 200);
        ids.push(resp.id);
    }
    ids.sort();
    assert_eq!(ids, vec![a, b, z]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ops_orgs_keys_revocation_and_tokens() {
    let d = daemon().await;
    let mut c = Client::connect(&d).await;
    let mut forbidden = req("createOrg").body(json!({"name": "x"}));
    forbidden.api_key = Some("hlm_whatever".into());
    assert_eq!(c.call(forbidden).await.status, 403);

    let resp = c.call(req("createOrg").body(json!({"nom": "x"}))).await;
    assert!(error(&resp).contains("missing field `name`"), "{resp:?}");

    let org = c.call(req("createOrg").body(json!({"name": "acme"}))).await;
    assert_eq!(org.status, 200, "{org:?}");
    let org_id = org.body["id"].as_str().unwrap().to_string();
    assert_eq!(org.body["apiKey"]["orgId"], org_id.as_str());
    let key = c
        .call(req("createApiKey").body(json!({"orgId": org_id})))
        .await;
    assert_eq!(key.status, 200, "{key:?}");
    let (key_id, secret) = (
        key.body["id"].as_str().unwrap().to_string(),
        key.body["key"].as_str().unwrap().to_string(),
    );

    let mut as_acme = req("getOrgQuotas");
    as_acme.api_key = Some(secret.clone());
    let resp = c.call(as_acme.clone()).await;
    assert_eq!(
        (resp.status, &resp.body["orgId"]),
        (200, &Value::from(org_id.clone()))
    );
    let mut admin_as_acme = req("mintToken").body(json!({"orgId": org_id}));
    admin_as_acme.api_key = Some(secret);
    assert_eq!(c.call(admin_as_acme).await.status, 403);

    let resp = c
        .call(req("revokeApiKey").param("id", key_id.clone()))
        .await;
    assert_eq!((resp.status, &resp.body["revoked"]), (200, &json!(true)));
    assert_eq!(c.call(as_acme).await.status, 401);
    let resp = c
        .call(req("revokeApiKey").body(json!({"keyId": "nope"})))
        .await;
    assert_eq!(resp.status, 404);

    let resp = c
        .call(req("mintToken").body(json!({"orgId": org_id})))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert!(resp.body["expiresAt"].as_str().is_some());
    let too_long = json!({"orgId": org_id, "ttlSec": 31 * 24 * 3600});
    assert_eq!(c.call(req("mintToken").body(too_long)).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gets_its_orgs_quota_events_only() {
    let d = daemon().await;
    let mut admin = Client::connect(&d).await;
    let own = admin.call(req("getOrgQuotas")).await.body["orgId"].clone();
    let other = admin
        .call(req("createOrg").body(json!({"name": "other"})))
        .await;
    let other_id = other.body["id"].clone();

    let mut w = Client::connect(&d).await;
    let mut vm_only = Client::connect(&d).await;
    let watch_id = w.send(req("watch")).await;
    let resp = w.response().await;
    assert_eq!(
        (resp.id, resp.status, resp.body),
        (watch_id, 200, json!({}))
    );
    let resp = vm_only
        .call(req("watch").body(json!({"events": ["vm"]})))
        .await;
    assert_eq!(resp.status, 200);

    let limits = json!({"vcpu": 3, "memoryMiB": 4096, "diskGiB": 50, "snapshotCount": 2});
    let set = |org: &Value| req("setQuotaLimits").body(json!({"orgId": org, "limits": limits}));
    assert_eq!(admin.call(set(&other_id)).await.status, 200);
    assert_eq!(admin.call(set(&own)).await.status, 200);

    let ServerFrame::Event(SocketEvent { id, data, .. }) = w.frame().await else {
        panic!("expected an event");
    };
    assert_eq!(
        (id, &data["orgId"], &data["limits"]["vcpu"]),
        (watch_id, &own, &json!(3))
    );
    // The vm-only watcher saw nothing; its connection still answers first.
    assert_eq!(vm_only.call(req("getLivez")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_console_splices_bytes_both_ways() {
    let d = daemon().await;
    let mut c = Client::connect(&d).await;
    let org_id = c.call(req("getOrgQuotas")).await.body["orgId"]
        .as_str()
        .unwrap()
        .to_string();
    let new_vm = |status: &str| NewVm {
        org_id: org_id.clone(),
        name: "dev".into(),
        machine_name: "c1m2".into(),
        source_name: None,
        source_snapshot_id: None,
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 10,
        status: status.parse().unwrap(),
        firewall_json: r#"{"mode":"open"}"#.into(),
        public_ipv6: None,
        run_json: "{}".into(),
    };
    let store = &d.service.inner.store;
    let stopped = store.create_vm_within_quota(new_vm("stopped")).unwrap();
    let resp = c.call(req("attachConsole").param("id", stopped.id)).await;
    assert_eq!(resp.status, 409, "{resp:?}");

    let vm = store.create_vm_within_quota(new_vm("running")).unwrap();
    // A running VM whose monitor is gone: 502, and the connection closes.
    let resp = c
        .call(req("attachConsole").param("id", vm.id.clone()))
        .await;
    assert_eq!(resp.status, 502, "{resp:?}");

    // A fake monitor console that echoes what it gets.
    crate::supervisor::peer::ACCEPT_FAKE_MONITORS.store(true, std::sync::atomic::Ordering::Relaxed);
    let dir = d.service.inner.supervisor.vm_dir(&vm.id);
    std::fs::create_dir_all(&dir).unwrap();
    let console = tokio::net::UnixListener::bind(dir.join("console.sock")).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = console.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let mut c = Client::connect(&d).await;
    // Bytes sent right behind the frame reach the console too.
    let mut frame = encode_frame(&req("attachConsole").param("id", vm.id)).unwrap();
    frame.extend_from_slice(b"early ");
    c.send_line(&frame).await;
    let resp = c.response().await;
    assert_eq!(resp.status, 101, "{resp:?}");
    c.send_line(b"hello").await;
    let mut got = vec![0u8; 11];
    let read = c.reader.read_exact(&mut got);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"early hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_client_exit_statuses() {
    use std::process::ExitCode;

    use crate::call::{CallError, call};
    let d = daemon().await;
    let path = d.path.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(call(&path, "listVMs", None).unwrap(), ExitCode::SUCCESS);
        assert_eq!(
            call(&path, "getVM", Some(r#"{"id":"x"}"#)).unwrap(),
            ExitCode::from(1)
        );
        assert_eq!(call(&path, "nope", None).unwrap(), ExitCode::from(1));
        let missing = path.with_file_name("missing.sock");
        assert!(matches!(
            call(&missing, "listVMs", None),
            Err(CallError::Connect { .. })
        ));
    })
    .await
    .unwrap();
}

mod images;
