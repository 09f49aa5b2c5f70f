//! The service's failure paths against scripted monitors
//! ([`super::fake_machines`]), through [`Service::call`] as the front ends
//! use it, on a real SQLite store: a monitor that dies while starting, an
//! agent that never answers, a snapshot and a firewall change that fail,
//! an exec past its timeout, a delete racing a create. Store failures are
//! injected into that same store with SQLite triggers that fail one write.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::fake_machines::{FakeMachines, Gate, Script};
use super::operation::{Operation, Reply};
use super::{Caller, Service, ServiceConfig};
use crate::supervisor::{GuestChoice, Readiness};

struct Setup {
    tmp: tempfile::TempDir,
    service: Service,
    fake: Arc<FakeMachines>,
    caller: Caller,
}

fn setup(script: Script, max_execs_per_org: usize) -> Setup {
    setup_with(script, max_execs_per_org, GuestChoice::Test)
}

fn setup_with(script: Script, max_execs_per_org: usize, guest: GuestChoice) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(tmp.path().into(), guest, "/bin/false".into());
    config.network = false;
    config.image_cache = tmp.path().join("images");
    config.max_execs_per_org = max_execs_per_org;
    let fake = Arc::new(FakeMachines::new(&tmp.path().join("vms"), script));
    let service = Service::open_with_machines(config, fake.clone()).unwrap();
    let org = service.inner.store.default_org().unwrap().unwrap();
    let caller = Caller {
        org_id: org.id,
        admin: false,
    };
    Setup {
        tmp,
        service,
        fake,
        caller,
    }
}

impl Setup {
    /// Runs `op`; its status and JSON body (or error body).
    async fn call(&self, op: Operation) -> (u16, Value) {
        match self.service.call(&self.caller, op).await {
            Ok(Reply::Json { status, body }) => (status, body),
            Ok(other) => panic!("not a JSON answer: {other:?}"),
            Err(e) => (e.status(), e.body()),
        }
    }

    /// Makes every later write of `column` of table `table` fail, as a
    /// full or failing disk would.
    fn fail_writes_of(&self, table: &str, column: &str) {
        let db = rusqlite::Connection::open(self.tmp.path().join("fastvm.db")).unwrap();
        db.execute_batch(&format!(
            "CREATE TRIGGER fail_{column} BEFORE UPDATE OF {column} ON {table} \
             BEGIN SELECT RAISE(FAIL, 'disk I/O error'); END;"
        ))
        .unwrap();
    }

    async fn create(&self) -> (u16, Value) {
        let req = serde_json::from_value(json!({"machineType": "c1m2"})).unwrap();
        self.call(Operation::CreateVm(req)).await
    }

    async fn get(&self, id: &str) -> Value {
        let (status, vm) = self.call(Operation::GetVm { id: id.into() }).await;
        assert_eq!(status, 200, "{vm}");
        vm
    }

    async fn usage(&self) -> Value {
        let (status, quotas) = self.call(Operation::GetOrgQuotas).await;
        assert_eq!(status, 200, "{quotas}");
        quotas["usage"].clone()
    }

    async fn running_vm(&self) -> String {
        let (status, vm) = self.create().await;
        assert_eq!(
            (status, vm["status"].as_str()),
            (201, Some("running")),
            "{vm}"
        );
        vm["id"].as_str().unwrap().to_string()
    }

    async fn exec(&self, id: &str, command: &[&str], timeout_sec: u64) -> (u16, Value) {
        let req = serde_json::from_value(json!({"command": command, "timeoutSec": timeout_sec}));
        let op = Operation::ExecVm {
            id: id.into(),
            req: req.unwrap(),
        };
        self.call(op).await
    }
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_that_dies_while_starting_leaves_an_error_vm_holding_no_quota() {
    let s = setup(
        Script {
            start_fails: Some("exit 1: cannot open /dev/kvm".into()),
            ..Script::default()
        },
        8,
    );
    let (status, body) = s.create().await;
    assert_eq!(status, 502, "{body}");
    assert!(error(&body).contains("cannot open <path>"), "{body}");
    let (_, vms) = s.call(Operation::ListVms).await;
    let vm = &vms.as_array().unwrap()[0];
    assert_eq!(vm["status"], "error", "{vm}");
    assert_eq!(s.usage().await["vcpu"], 0);
    let id = vm["id"].as_str().unwrap();
    assert!(s.fake.calls().contains(&format!("destroy {id}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_answers_is_provisioning_then_error() {
    let s = setup(
        Script {
            readiness: Readiness::NotReady("no answer".into()),
            ..Script::default()
        },
        8,
    );
    let (status, vm) = s.create().await;
    assert_eq!((status, vm["status"].as_str()), (201, Some("provisioning")));
    assert_eq!(s.usage().await["vcpu"], 1);
    let id = vm["id"].as_str().unwrap();
    // The background wait gives up (after 1.2 s, here) and says so.
    let mut status = String::new();
    for _ in 0..500 {
        status = s.get(id).await["status"].as_str().unwrap().to_string();
        if status != "provisioning" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, "error");
    assert_eq!(s.usage().await["vcpu"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_is_an_error_row_that_frees_its_quota() {
    let s = setup(
        Script {
            snapshot_fails: Some("no space left on device".into()),
            ..Script::default()
        },
        8,
    );
    let id = s.running_vm().await;
    let snap = || {
        let req = serde_json::from_value(json!({"vmId": id})).unwrap();
        Operation::CreateSnapshot(req)
    };
    let (status, body) = s.call(snap()).await;
    assert_eq!(status, 502, "{body}");
    assert!(error(&body).contains("no space left"), "{body}");
    let (_, list) = s.call(Operation::ListSnapshots).await;
    assert_eq!(list[0]["status"], "error", "{list}");
    assert_eq!(s.usage().await["snapshotCount"], 0);
    assert_eq!(s.get(&id).await["status"], "running");
    // The failed one holds no claim on the VM: the next may run.
    s.fake.script.lock().unwrap().snapshot_fails = None;
    let (status, body) = s.call(snap()).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("ready")));
    assert_eq!(s.usage().await["snapshotCount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewall_change_the_monitor_refuses_keeps_the_previous_policy() {
    let s = setup(Script::default(), 8);
    let id = s.running_vm().await;
    let before = s.get(&id).await["firewall"].clone();
    let policy = json!({"mode": "restricted", "ingress": [
        {"protocol": "tcp", "portStart": 22, "sourceCidrs": ["::/0"]}
    ]});
    let replace = || Operation::ReplaceVmFirewall {
        id: id.clone(),
        policy: serde_json::from_value(policy.clone()).unwrap(),
    };

    s.fake.script.lock().unwrap().firewall_failures = 1;
    let (status, body) = s.call(replace()).await;
    assert_eq!(status, 502, "{body}");
    assert!(error(&body).contains("not applied"), "{body}");
    assert!(
        error(&body).contains("previous policy stays in force"),
        "{body}"
    );
    assert_eq!(s.get(&id).await["firewall"], before);
    let calls = s.fake.calls();
    let pushed: Vec<_> = calls
        .iter()
        .filter(|c| c.starts_with("set_firewall"))
        .collect();
    let old_rules = before["ingress"].as_array().unwrap().len();
    assert_eq!(
        pushed,
        [
            &format!("set_firewall {id} 1 rules"),
            &format!("set_firewall {id} {old_rules} rules"),
        ]
    );

    s.fake.script.lock().unwrap().firewall_failures = 2;
    let (status, body) = s.call(replace()).await;
    assert_eq!(status, 502, "{body}");
    assert!(error(&body).contains("re-applying it failed too"), "{body}");
    assert_eq!(s.get(&id).await["firewall"], before);

    let (status, vm) = s.call(replace()).await;
    assert_eq!(status, 200, "{vm}");
    assert_eq!(vm["firewall"], policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_past_its_timeout_answers_timed_out_and_frees_its_slot() {
    let s = Arc::new(setup(
        Script {
            exec_takes: Duration::from_secs(5),
            ..Script::default()
        },
        1,
    ));
    let id = s.running_vm().await;
    let long = {
        let (s, id) = (s.clone(), id.clone());
        tokio::spawn(async move { s.exec(&id, &["sleep", "5"], 1).await })
    };
    // The org's one slot is taken meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = s.exec(&id, &["echo", "second"], 1).await;
    assert_eq!(status, 429, "{body}");

    let (status, result) = long.await.unwrap();
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        (result["timedOut"].as_bool(), result["exitCode"].as_i64()),
        (Some(true), Some(124))
    );

    s.fake.script.lock().unwrap().exec_takes = Duration::ZERO;
    let (status, result) = s.exec(&id, &["echo", "third"], 1).await;
    assert_eq!(
        (status, result["stdout"].as_str()),
        (200, Some("echo third\n"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_while_the_monitor_starts_answers_the_create_409_and_stops_it() {
    let s = Arc::new(setup(Script::default(), 8));
    let (gate, entered_rx, release_tx) = Gate::new(None);
    *s.fake.start_gate.lock().unwrap() = Some(gate);
    let create = {
        let s = s.clone();
        tokio::spawn(async move { s.create().await })
    };
    let id = tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    let (status, body) = s.call(Operation::DeleteVm { id: id.clone() }).await;
    assert_eq!(status, 200, "{body}");
    release_tx.send(()).unwrap();

    let (status, body) = create.await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        error(&body).contains("deleted while it was being created"),
        "{body}"
    );
    let calls = s.fake.calls();
    assert_eq!(calls.last(), Some(&format!("destroy {id}")), "{calls:?}");
    assert!(!crate::supervisor::Machines::is_alive(&*s.fake, &id));
    let (_, vms) = s.call(Operation::ListVms).await;
    assert_eq!(vms, json!([]));
    assert_eq!(s.usage().await["vcpu"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_record_the_monitor_stops_it() {
    let s = setup(Script::default(), 8);
    s.fail_writes_of("vms", "monitor_pid");
    let (status, body) = s.create().await;
    assert_eq!(status, 500, "{body}");
    let (_, vms) = s.call(Operation::ListVms).await;
    let vm = &vms.as_array().unwrap()[0];
    assert_eq!(vm["status"], "error", "{vm}");
    let id = vm["id"].as_str().unwrap();
    assert_eq!(
        s.fake.calls(),
        [format!("start {id}"), format!("destroy {id}")],
        "the monitor that could not be recorded is stopped"
    );
    assert_eq!(s.usage().await["vcpu"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_firewall_change_hangs_holds_up_no_other_vm() {
    let s = Arc::new(setup(Script::default(), 8));
    let (a, b) = (s.running_vm().await, s.running_vm().await);
    let (gate, entered, release) = Gate::new(Some(&a));
    *s.fake.firewall_gate.lock().unwrap() = Some(gate);
    let change = |id: &str| Operation::ReplaceVmFirewall {
        id: id.to_string(),
        policy: serde_json::from_value(json!({"mode": "open", "ingress": []})).unwrap(),
    };
    let held = {
        let (s, op) = (s.clone(), change(&a));
        tokio::spawn(async move { s.call(op).await })
    };
    let held_vm = tokio::task::spawn_blocking(move || entered.recv().unwrap())
        .await
        .unwrap();
    assert_eq!(held_vm, a);
    // Another change of the same VM waits for its turn.
    let waiting = {
        let (s, op) = (s.clone(), change(&a));
        tokio::spawn(async move { s.call(op).await })
    };
    // Another VM's change goes through meanwhile.
    let (status, body) = s.call(change(&b)).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "a second change of {a} ran beside the first"
    );

    *s.fake.firewall_gate.lock().unwrap() = None;
    release.send(()).unwrap();
    for change in [held, waiting] {
        let (status, body) = change.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let pushes_of_a = s
        .fake
        .calls()
        .iter()
        .filter(|c| c.starts_with(&format!("set_firewall {a}")))
        .count();
    assert_eq!(pushes_of_a, 2);
}

/// Puts a named image `name` with a root file system of `bytes` (sparse)
/// and run defaults `run` in the setup's image cache.
fn put_image(s: &Setup, name: &str, bytes: u64, run: Value) -> std::path::PathBuf {
    let dir = s.tmp.path().join("images/named").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let info = json!({"name": name, "source": "test", "layers": 1, "rootfsBytes": bytes,
                      "run": run, "createdMs": 0});
    std::fs::write(dir.join("image.json"), info.to_string()).unwrap();
    let rootfs = dir.join("rootfs.ext4");
    std::fs::File::create(&rootfs)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    rootfs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_boots_the_named_image_it_asks_for() {
    let s = setup_with(Script::default(), 8, GuestChoice::Linux);
    let rootfs = put_image(&s, "python", 4 << 30, json!({}));
    let create = |body: Value| Operation::CreateVm(serde_json::from_value(body).unwrap());

    let (status, vm) = s
        .call(create(json!({"machineType": "c1m2", "image": "python"})))
        .await;
    assert_eq!(status, 201, "{vm}");
    assert_eq!(vm["sourceName"], "python");
    assert_eq!(
        s.fake.base_disks.lock().unwrap().last(),
        Some(&Some(rootfs))
    );
    let (status, vm) = s.call(create(json!({"machineType": "c1m2"}))).await;
    assert_eq!((status, vm["sourceName"].as_str()), (201, Some("linux")));

    let (status, body) = s
        .call(create(json!({"machineType": "c1m2", "image": "ruby"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("no image named ruby"), "{body}");
    let (status, body) = s
        .call(create(json!({"machineType": "c1m2", "image": "../etc"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("not an image name"), "{body}");
    put_image(&s, "huge", 11 << 30, json!({}));
    let (status, body) = s
        .call(create(json!({"machineType": "c1m2", "image": "huge"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("at least 11 GiB"), "{body}");
    let (status, vm) = s
        .call(create(
            json!({"machineType": "c1m2", "image": "huge", "diskGiB": 11}),
        ))
        .await;
    assert_eq!(status, 201, "{vm}");
    let snapshot = "9e2c6f44-7c4c-4a59-9d1c-0b6f3c2d8e11";
    let (status, body) = s
        .call(create(json!({"snapshotId": snapshot, "image": "python"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("machineType only"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_guest_boots_no_named_image() {
    let s = setup(Script::default(), 8);
    put_image(&s, "python", 1 << 30, json!({}));
    let req = serde_json::from_value(json!({"machineType": "c1m2", "image": "python"}));
    let (status, body) = s.call(Operation::CreateVm(req.unwrap())).await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("with the Linux guest"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_with_the_images_env_workdir_and_user_and_so_do_clones() {
    let s = setup_with(Script::default(), 8, GuestChoice::Linux);
    put_image(
        &s,
        "app",
        1 << 30,
        json!({"env": ["GREETING=hi", "PATH=/app/bin"], "workingDir": "/app", "user": "app"}),
    );
    let req = serde_json::from_value(json!({"machineType": "c1m2", "image": "app"})).unwrap();
    let (status, vm) = s.call(Operation::CreateVm(req)).await;
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let sent = |s: &Setup| s.fake.last_exec.lock().unwrap().take().unwrap();
    assert_eq!(s.exec(&id, &["pwd"], 5).await.0, 200);
    let request = sent(&s);
    assert_eq!(request.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(
        request.env.get("PATH").map(String::as_str),
        Some("/app/bin")
    );
    assert_eq!(request.cwd.as_deref(), Some("/app"));
    assert_eq!(request.user.as_deref(), Some("app"));

    let snap = serde_json::from_value(json!({"vmId": id})).unwrap();
    let (status, snap) = s.call(Operation::CreateSnapshot(snap)).await;
    assert_eq!(status, 201, "{snap}");
    let clone = serde_json::from_value(json!({"snapshotId": snap["id"]})).unwrap();
    let (status, clone) = s.call(Operation::CreateVm(clone)).await;
    assert_eq!(status, 201, "{clone}");
    assert_eq!(
        s.exec(clone["id"].as_str().unwrap(), &["pwd"], 5).await.0,
        200
    );
    assert_eq!(
        sent(&s).user.as_deref(),
        Some("app"),
        "the clone keeps its image's user"
    );

    // A VM of the default image runs commands as the agent does: root, /.
    let req = serde_json::from_value(json!({"machineType": "c1m2"})).unwrap();
    let (_, plain) = s.call(Operation::CreateVm(req)).await;
    assert_eq!(
        s.exec(plain["id"].as_str().unwrap(), &["pwd"], 5).await.0,
        200
    );
    let request = sent(&s);
    assert_eq!(
        (request.user, request.cwd, request.env.len()),
        (None, None, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_an_agent_without_streams_is_a_conflict_that_frees_its_slot() {
    let s = setup(Script::default(), 1);
    let id = s.running_vm().await;
    let stream = |command: &str| Operation::ExecStream {
        id: id.clone(),
        req: serde_json::from_value(json!({"command": [command]})).unwrap(),
    };
    for _ in 0..2 {
        let (status, body) = s.call(stream("sh")).await;
        assert_eq!(status, 409, "{body}");
        assert!(error(&body).contains("no streaming exec"), "{body}");
    }
    let (status, body) = s.call(stream("")).await;
    assert_eq!(status, 409, "{body}");
    let bad = Operation::ExecStream {
        id: id.clone(),
        req: serde_json::from_value(json!({"command": ["x"], "timeoutSec": 0})).unwrap(),
    };
    let (status, body) = s.call(bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("timeoutSec"), "{body}");
}
