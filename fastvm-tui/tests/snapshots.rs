//! Snapshot tests of every view and overlay, drawn on ratatui's TestBackend
//! and compared with the checked-in `snapshots/*.snap` files by insta. A
//! mismatch or a missing snapshot fails the test (insta only writes
//! `.snap.new` files for review; `INSTA_UPDATE=always` accepts new output).

use fastvm_proto::api::{
    FirewallMode, FirewallPolicy, FirewallProtocol, FirewallRule, OrgQuotaUsage, OrgQuotaValues,
    SnapshotObject, SnapshotStatus, Uuid, VmInstance, VmStatus, parse_rfc3339,
};
use fastvm_proto::exec_channel::exit_status;
use fastvm_proto::socket::SocketResponse;
use fastvm_tui::app::{App, CopyView, ExecView, Mode, View};
use fastvm_tui::client::ExecEvent;
use fastvm_tui::client::{ClientEvent, CopyDirection, CopyRequest, Purpose};
use fastvm_tui::console::ConsolePane;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use serde_json::json;

fn id(n: u8) -> Uuid {
    Uuid::from_bytes([n * 17; 16])
}

fn vm(n: u8, name: &str, machine: &str, status: VmStatus) -> VmInstance {
    let cpu = machine[1..2].parse().unwrap();
    VmInstance {
        id: id(n),
        name: name.into(),
        org_id: "default".into(),
        machine_name: machine.into(),
        source_name: Some("test".into()),
        firewall: FirewallPolicy::default(),
        cpu,
        memory_mib: cpu as u64 * 2048,
        disk_gib: 10,
        public_ipv6: (n % 2 == 1).then(|| format!("2001:db8::{n}")),
        status,
        created_at: format!("2026-11-28T09:{:02}:00Z", 10 + n),
        deleted_at: None,
    }
}

fn fixture() -> App {
    let mut app = App::new("/run/fastvm/fastvmd.sock");
    app.now = parse_rfc3339("2026-11-28T10:00:00Z").unwrap();
    let mut web = vm(1, "web", "c2m4", VmStatus::Running);
    web.firewall = FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![
            FirewallRule {
                protocol: FirewallProtocol::Tcp,
                port_start: 443,
                port_end: None,
                source_cidrs: None,
                description: Some("https".into()),
            },
            FirewallRule {
                protocol: FirewallProtocol::Udp,
                port_start: 6000,
                port_end: Some(6010),
                source_cidrs: Some(vec!["2001:db8::/32".into()]),
                description: None,
            },
        ],
    };
    let vms = vec![
        web,
        vm(2, "db", "c4m8", VmStatus::Provisioning),
        vm(3, "batch", "c1m2", VmStatus::Error),
        vm(4, "old", "c1m2", VmStatus::Stopped),
    ];
    let snaps = vec![
        SnapshotObject {
            id: id(10),
            name: "web-golden".into(),
            org_id: "default".into(),
            vm_id: id(1),
            firewall: FirewallPolicy::default(),
            status: SnapshotStatus::Ready,
            created_at: "2026-11-28T09:40:00Z".into(),
        },
        SnapshotObject {
            id: id(11),
            name: "db-nightly".into(),
            org_id: "default".into(),
            vm_id: id(2),
            firewall: FirewallPolicy::default(),
            status: SnapshotStatus::Creating,
            created_at: "2026-11-28T09:59:30Z".into(),
        },
    ];
    let quotas = OrgQuotaUsage {
        org_id: "default".into(),
        limits: OrgQuotaValues {
            vcpu: 16,
            memory_mib: 32768,
            disk_gib: 500,
            snapshot_count: 2,
        },
        usage: OrgQuotaValues {
            vcpu: 8,
            memory_mib: 16384,
            disk_gib: 40,
            snapshot_count: 2,
        },
    };
    app.on_client(ClientEvent::Connected);
    for (purpose, body) in [
        (Purpose::ListVms, json!(vms)),
        (Purpose::ListSnapshots, json!(snaps)),
        (Purpose::Quotas, json!(quotas)),
    ] {
        app.on_client(ClientEvent::Answer {
            purpose,
            response: SocketResponse {
                id: 2,
                status: 200,
                body,
            },
        });
    }
    app
}

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn render(app: &mut App, width: u16, height: u16) -> String {
    app.size = (width, height);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| fastvm_tui::ui::draw(frame, app))
        .unwrap();
    terminal.backend().to_string()
}

#[test]
fn vms_view_with_detail() {
    let mut app = fixture();
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&mut app, 140, 24));
}

#[test]
fn vms_view_narrow_sorted_by_status_reversed() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('3'));
    insta::assert_snapshot!(render(&mut app, 100, 24));
}

#[test]
fn vms_view_filtered() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('/'));
    for c in "db".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    insta::assert_snapshot!(render(&mut app, 100, 20));
}

#[test]
fn snapshots_view() {
    let mut app = fixture();
    key(&mut app, KeyCode::Tab);
    insta::assert_snapshot!(render(&mut app, 140, 20));
}

#[test]
fn quotas_view() {
    let mut app = fixture();
    app.view = View::Quotas;
    app.paused = true;
    insta::assert_snapshot!(render(&mut app, 100, 20));
}

#[test]
fn help_overlay() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(render(&mut app, 100, 30));
}

#[test]
fn create_form() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('c'));
    for c in "api".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Left); // wraps to the last source: a snapshot
    insta::assert_snapshot!(render(&mut app, 100, 24));
}

#[test]
fn create_form_with_images() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('c'));
    let images = json!({"images": [
        {"name": "alpine", "source": "alpine.tar", "layers": 1, "rootfsBytes": 10u64 << 30,
         "run": {}, "createdMs": 1},
        {"name": "web", "source": "web.tar", "layers": 3, "rootfsBytes": 10u64 << 30,
         "run": {"cmd": ["/srv/web"]}, "createdMs": 2},
    ]});
    app.on_client(ClientEvent::Answer {
        purpose: Purpose::ListImages,
        response: SocketResponse {
            id: 3,
            status: 200,
            body: images,
        },
    });
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Left); // wraps to the last image
    insta::assert_snapshot!(render(&mut app, 100, 24));
}

#[test]
fn delete_confirmation() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('d'));
    insta::assert_snapshot!(render(&mut app, 100, 24));
}

#[test]
fn command_palette() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char(':'));
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&mut app, 100, 24));
}

#[test]
fn exec_output_pane() {
    let mut app = fixture();
    let mut view = ExecView::new("web".into(), "tick 3 1000".into(), 1);
    view.on_event(ExecEvent::Started);
    view.on_event(ExecEvent::Output {
        stderr: false,
        bytes: b"tick 1\ntick 2\n".to_vec(),
    });
    view.on_event(ExecEvent::Output {
        stderr: true,
        bytes: b"warning: short\n".to_vec(),
    });
    view.on_event(ExecEvent::Output {
        stderr: false,
        bytes: b"tick 3\n".to_vec(),
    });
    view.on_event(ExecEvent::Status(exit_status(0, false)));
    app.mode = Mode::Exec(view);
    insta::assert_snapshot!(render(&mut app, 100, 20));
}

#[test]
fn copy_form_with_an_error() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('G')); // web, the running one
    key(&mut app, KeyCode::Char('t'));
    for c in "./build/app.tar".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    for c in "srv/app.tar".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!(render(&mut app, 100, 24));
}

#[test]
fn copy_progress() {
    let mut app = fixture();
    app.mode = Mode::Copy(CopyView {
        session: 1,
        vm_name: "web".into(),
        request: CopyRequest {
            direction: CopyDirection::Download,
            vm_id: id(1).to_string(),
            local: "./logs/app.log".into(),
            guest: "/var/log/app.log".into(),
        },
        started: true,
        total: Some(8 << 20),
        bytes: 3 << 20,
        elapsed: std::time::Duration::from_millis(1500),
    });
    for w in 1..80 {
        for h in 0..12 {
            render(&mut app, w, h);
        }
    }
    insta::assert_snapshot!(render(&mut app, 100, 20));
}

#[test]
fn firewall_view() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('G')); // web, the one with rules
    key(&mut app, KeyCode::Char('f'));
    insta::assert_snapshot!(render(&mut app, 100, 24));
}

#[test]
fn console_pane() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('G')); // web, the running one
    key(&mut app, KeyCode::Char('o'));
    app.on_client(ClientEvent::ConsoleAttached);
    app.on_client(ClientEvent::ConsoleOutput(
        b"fastvm-test-guest ready\n$ echo hi\nhi\n$ ".to_vec(),
    ));
    insta::assert_snapshot!(render(&mut app, 100, 30));
}

#[test]
fn status_line_error_and_daemon_down() {
    let mut app = fixture();
    app.on_client(ClientEvent::Disconnected(
        "No such file or directory (os error 2)".into(),
    ));
    insta::assert_snapshot!(render(&mut app, 120, 16));
}

#[test]
fn terminal_too_small() {
    let mut app = fixture();
    insta::assert_snapshot!(render(&mut app, 40, 8));
}

#[test]
fn every_tiny_size_draws_without_panicking() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('o'));
    app.on_client(ClientEvent::ConsoleOutput(b"x\n".repeat(50)));
    let mut drawn = 0;
    for w in 1..70 {
        for h in 0..20 {
            render(&mut app, w, h);
            drawn += 1;
        }
    }
    assert_eq!(drawn, 69 * 20);
    // The console pane alone, in areas down to nothing.
    let mut pane = ConsolePane::new("id", "vm");
    pane.feed(&b"0123456789\n".repeat(30));
    let mut terminal = Terminal::new(TestBackend::new(12, 6)).unwrap();
    for (w, h) in [(0, 0), (1, 1), (2, 2), (3, 1), (12, 6)] {
        terminal
            .draw(|f| fastvm_tui::ui::draw_console(f, Rect::new(0, 0, w, h), &mut pane, true))
            .unwrap();
    }
    insta::assert_snapshot!(terminal.backend().to_string());
}
