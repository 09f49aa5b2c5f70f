//! State updates and input handling, without drawing.

use fastvm_proto::api::{
    FirewallPolicy, ImageList, ImageSummary, OrgQuotaUsage, OrgQuotaValues, SnapshotObject,
    SnapshotStatus, Uuid, VmInstance, VmStatus,
};
use fastvm_proto::socket::{EventKind, EventOp, Op, SocketEvent, SocketResponse};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::{Value, json};

use super::*;
use crate::client::{ClientEvent, Command, Purpose};
use crate::console::key_bytes;

pub(super) fn id(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

pub(super) fn vm(n: u8, name: &str, status: VmStatus) -> VmInstance {
    VmInstance {
        id: id(n),
        name: name.into(),
        org_id: "org".into(),
        machine_name: "c1m2".into(),
        source_name: Some("test".into()),
        firewall: FirewallPolicy::default(),
        cpu: 1,
        memory_mib: 2048,
        disk_gib: 10 + n as u64,
        public_ipv6: None,
        status,
        created_at: format!("2026-11-28T10:00:{:02}Z", n),
        deleted_at: None,
    }
}

fn snap(n: u8, name: &str, vm_id: Uuid) -> SnapshotObject {
    SnapshotObject {
        id: id(n),
        name: name.into(),
        org_id: "org".into(),
        vm_id,
        firewall: FirewallPolicy::default(),
        status: SnapshotStatus::Ready,
        created_at: "2026-11-28T10:01:00Z".into(),
    }
}

fn answer(purpose: Purpose, status: u16, body: Value) -> ClientEvent {
    ClientEvent::Answer {
        purpose,
        response: SocketResponse {
            id: 9,
            status,
            body,
        },
    }
}

fn vm_event(op: EventOp, v: &VmInstance) -> ClientEvent {
    ClientEvent::Event(SocketEvent {
        id: 1,
        event: EventKind::Vm,
        op,
        data: serde_json::to_value(v).unwrap(),
    })
}

pub(super) fn loaded(vms: &[VmInstance]) -> App {
    let mut app = App::new("/tmp/test.sock");
    app.on_client(ClientEvent::Connected);
    app.on_client(answer(Purpose::ListVms, 200, json!(vms)));
    app.on_client(answer(Purpose::ListSnapshots, 200, json!([])));
    app
}

pub(super) fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub(super) fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

pub(super) fn type_text(app: &mut App, text: &str) -> Vec<Command> {
    text.chars()
        .flat_map(|c| app.on_key(key(KeyCode::Char(c))))
        .collect()
}

fn names(app: &App) -> Vec<String> {
    app.visible_vms().iter().map(|v| v.name.clone()).collect()
}

#[test]
fn list_then_events_create_update_delete() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_client(vm_event(
        EventOp::Created,
        &vm(2, "b", VmStatus::Provisioning),
    ));
    assert_eq!(names(&app), ["a", "b"]);
    app.on_client(vm_event(EventOp::Updated, &vm(2, "b", VmStatus::Running)));
    assert_eq!(app.vm(id(2)).unwrap().status, VmStatus::Running);
    app.on_client(vm_event(EventOp::Deleted, &vm(1, "a", VmStatus::Deleting)));
    assert_eq!(names(&app), ["b"]);
}

#[test]
fn events_before_the_list_are_applied_after_it() {
    let mut app = App::new("s");
    app.on_client(ClientEvent::Connected);
    app.on_client(vm_event(EventOp::Updated, &vm(1, "a", VmStatus::Running)));
    app.on_client(vm_event(
        EventOp::Created,
        &vm(2, "b", VmStatus::Provisioning),
    ));
    assert!(app.vms.is_empty(), "nothing shown before the list");
    // The list was taken before the update: the update must win.
    app.on_client(answer(
        Purpose::ListVms,
        200,
        json!([vm(1, "a", VmStatus::Provisioning)]),
    ));
    assert_eq!(app.vm(id(1)).unwrap().status, VmStatus::Running);
    assert_eq!(names(&app), ["a", "b"]);
}

#[test]
fn pause_queues_events_and_resume_applies_them() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Provisioning)]);
    app.on_key(key(KeyCode::Char('p')));
    assert!(app.paused);
    app.on_client(vm_event(EventOp::Updated, &vm(1, "a", VmStatus::Running)));
    app.on_client(vm_event(EventOp::Created, &vm(2, "b", VmStatus::Running)));
    assert_eq!(app.vm(id(1)).unwrap().status, VmStatus::Provisioning);
    assert_eq!(app.paused_events.len(), 2);
    assert!(app.on_key(key(KeyCode::Char('p'))).is_empty());
    assert!(!app.paused);
    assert_eq!(app.vm(id(1)).unwrap().status, VmStatus::Running);
    assert_eq!(names(&app), ["a", "b"]);
}

#[test]
fn quota_events_replace_the_quotas() {
    let mut app = loaded(&[]);
    let q = OrgQuotaUsage {
        org_id: "org".into(),
        limits: OrgQuotaValues {
            vcpu: 8,
            ..Default::default()
        },
        usage: OrgQuotaValues {
            vcpu: 3,
            ..Default::default()
        },
    };
    app.on_client(ClientEvent::Event(SocketEvent {
        id: 1,
        event: EventKind::Quota,
        op: EventOp::Updated,
        data: serde_json::to_value(&q).unwrap(),
    }));
    assert_eq!(app.quotas, Some(q));
}

#[test]
fn sort_by_column_and_again_reverses() {
    let mut app = loaded(&[
        vm(1, "b", VmStatus::Running),
        vm(2, "c", VmStatus::Error),
        vm(3, "a", VmStatus::Provisioning),
    ]);
    assert_eq!(names(&app), ["a", "b", "c"]);
    app.on_key(key(KeyCode::Char('1')));
    assert_eq!(names(&app), ["c", "b", "a"]);
    app.on_key(key(KeyCode::Char('3'))); // status
    assert_eq!(names(&app), ["c", "a", "b"]);
    app.on_key(key(KeyCode::Char('7'))); // disk: 11, 12, 13 GiB
    assert_eq!(names(&app), ["b", "c", "a"]);
    app.on_key(key(KeyCode::Char('7')));
    assert_eq!(names(&app), ["a", "c", "b"]);
}

#[test]
fn filter_narrows_rows_and_esc_clears_it() {
    let mut app = loaded(&[
        vm(1, "web-1", VmStatus::Running),
        vm(2, "db", VmStatus::Running),
        vm(3, "web-2", VmStatus::Error),
    ]);
    app.on_key(key(KeyCode::Char('/')));
    type_text(&mut app, "WEB");
    assert_eq!(names(&app), ["web-1", "web-2"]);
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(names(&app), ["web-1", "web-2"], "Enter keeps the filter");
    app.on_key(key(KeyCode::Char('/')));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(names(&app).len(), 3);
    // A status matches too.
    app.filter = TextInput::with("error");
    assert_eq!(names(&app), ["web-2"]);
}

#[test]
fn selection_follows_the_vm_when_rows_reorder() {
    let mut app = loaded(&[vm(1, "b", VmStatus::Running), vm(2, "c", VmStatus::Running)]);
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected_vm().unwrap().name, "c");
    app.on_client(vm_event(EventOp::Created, &vm(3, "a", VmStatus::Running)));
    assert_eq!(app.selected_vm().unwrap().name, "c");
    assert_eq!(app.selected_index(), Some(2));
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.selected_vm().unwrap().name, "a");
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.selected_vm().unwrap().name, "a", "clamped at the top");
}

#[test]
fn delete_asks_first() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    assert!(app.on_key(key(KeyCode::Char('d'))).is_empty());
    assert!(matches!(&app.mode, Mode::Confirm(c) if c.question.contains("Delete VM a")));
    assert!(app.on_key(key(KeyCode::Char('n'))).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    app.on_key(key(KeyCode::Char('d')));
    let cmds = app.on_key(key(KeyCode::Char('y')));
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Action("VM deleted".into()),
            Op::DeleteVm,
            Some(id(1).to_string()),
            None
        )]
    );
}

#[test]
fn create_form_builds_the_request() {
    let snaps = [snap(9, "base", id(1))];
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_client(answer(Purpose::ListSnapshots, 200, json!(snaps)));
    app.on_key(key(KeyCode::Char('c')));
    type_text(&mut app, "dev");
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Right)); // c2m4
    app.on_key(key(KeyCode::Tab)); // image: default
    app.on_key(key(KeyCode::Tab));
    type_text(&mut app, "x");
    assert!(
        app.on_key(key(KeyCode::Enter)).is_empty(),
        "bad disk: no request"
    );
    assert!(matches!(&app.mode, Mode::Form(f) if f.error.as_deref().unwrap().contains("disk")));
    app.on_key(key(KeyCode::Backspace));
    type_text(&mut app, "20");
    let cmds = app.on_key(key(KeyCode::Enter));
    let body = json!({"name": "dev", "machineType": "c2m4", "diskGiB": 20});
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Created,
            Op::CreateVm,
            None,
            Some(body)
        )]
    );
    // From the snapshot view, the form starts on the selected snapshot.
    app.view = View::Snapshots;
    app.on_key(key(KeyCode::Char('c')));
    let cmds = app.on_key(key(KeyCode::Enter));
    let body = json!({"snapshotId": id(9)});
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Created,
            Op::CreateVm,
            None,
            Some(body)
        )]
    );
}

fn image(name: &str) -> ImageSummary {
    ImageSummary {
        name: name.into(),
        source: format!("{name}.tar"),
        layers: 1,
        rootfs_bytes: 10 << 30,
        run: Default::default(),
        created_ms: 1,
    }
}

fn images_answer(names: &[&str]) -> ClientEvent {
    let list = ImageList {
        images: names.iter().map(|n| image(n)).collect(),
    };
    answer(Purpose::ListImages, 200, json!(list))
}

fn form(app: &App) -> &CreateForm {
    match &app.mode {
        Mode::Form(f) => f,
        other => panic!("not the form: {other:?}"),
    }
}

#[test]
fn create_form_offers_the_daemons_images() {
    let mut app = loaded(&[]);
    let cmds = app.on_key(key(KeyCode::Char('c')));
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::ListImages,
            Op::ListImages,
            None,
            None
        )],
        "the images are asked for when the form opens"
    );
    assert_eq!(form(&app).image_label(), DEFAULT_IMAGE);
    app.on_client(images_answer(&["web", "alpine"]));
    assert_eq!(form(&app).images, ["alpine", "web"]);

    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Tab));
    assert_eq!(form(&app).focus, FormField::Image);
    type_text(&mut app, "zz"); // not a text field
    app.on_key(key(KeyCode::Right));
    assert_eq!(form(&app).image_label(), "alpine");
    app.on_key(key(KeyCode::Right));
    app.on_key(key(KeyCode::Right));
    assert_eq!(form(&app).image_label(), DEFAULT_IMAGE, "wraps");
    app.on_key(key(KeyCode::Left));
    assert_eq!(form(&app).image_label(), "web");
    // A later list keeps the choice while it is there.
    app.on_client(images_answer(&["web", "alpine", "busybox"]));
    assert_eq!(form(&app).image_label(), "web");
    app.on_client(images_answer(&["alpine"]));
    assert_eq!(form(&app).image_label(), DEFAULT_IMAGE);
    app.on_client(images_answer(&["web", "alpine"]));
    app.on_key(key(KeyCode::Left));
    let cmds = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Created,
            Op::CreateVm,
            None,
            Some(json!({"machineType": "c1m2", "image": "web"}))
        )]
    );

    // The default image: no `image` member.
    app.on_key(key(KeyCode::Char('c')));
    app.on_client(images_answer(&["web"]));
    let cmds = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Created,
            Op::CreateVm,
            None,
            Some(json!({"machineType": "c1m2"}))
        )]
    );
}

#[test]
fn a_snapshot_with_a_named_image_is_refused_in_the_form() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_client(answer(
        Purpose::ListSnapshots,
        200,
        json!([snap(9, "base", id(1))]),
    ));
    app.on_key(key(KeyCode::Char('c')));
    app.on_client(images_answer(&["web"]));
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Left)); // the last source: the snapshot
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Right)); // web
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert!(form(&app).error.as_deref().unwrap().starts_with("image: "));
    app.on_key(key(KeyCode::Left)); // default
    let cmds = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Created,
            Op::CreateVm,
            None,
            Some(json!({"snapshotId": id(9)}))
        )]
    );
}

#[test]
fn without_a_list_of_images_the_form_offers_the_default_quietly() {
    let mut app = loaded(&[]);
    app.on_key(key(KeyCode::Char('c')));
    app.on_client(answer(
        Purpose::ListImages,
        404,
        json!({"error": "unknown op \"listImages\""}),
    ));
    assert_eq!(app.status, None, "no error shown");
    assert!(form(&app).images.is_empty());
    app.on_client(answer(Purpose::ListImages, 200, json!({"unexpected": 1})));
    assert!(form(&app).images.is_empty());
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Right));
    assert_eq!(form(&app).image_label(), DEFAULT_IMAGE, "only the default");
    // An answer after the form closed changes nothing.
    app.on_key(key(KeyCode::Esc));
    app.on_client(images_answer(&["web"]));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.status, None);
}

#[test]
fn daemon_errors_go_to_the_status_line() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_client(answer(
        Purpose::Action("renamed".into()),
        400,
        json!({"error": "name: too long"}),
    ));
    let status = app.status.clone().unwrap();
    assert!(status.error);
    assert_eq!(status.text, "error 400: name: too long");
    app.on_client(ClientEvent::Disconnected("connection refused".into()));
    assert!(
        app.status
            .clone()
            .unwrap()
            .text
            .contains("connection refused")
    );
    assert!(matches!(app.conn, ConnState::Down(_)));
}

#[test]
fn a_lost_watch_asks_for_a_resync() {
    let mut app = loaded(&[]);
    let cmds = app.on_client(answer(Purpose::Watch, 410, json!({"error": "lagged"})));
    assert_eq!(cmds, [Command::Resync]);
}

#[test]
fn console_sends_raw_keys_and_escape_leaves() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running), vm(2, "b", VmStatus::Stopped)]);
    let cmds = app.on_key(key(KeyCode::Char('o')));
    assert_eq!(cmds, [Command::AttachConsole(id(1).to_string())]);
    assert_eq!(app.mode, Mode::Console);
    assert_eq!(
        app.on_key(key(KeyCode::Char('q'))),
        [Command::ConsoleInput(b"q".to_vec())],
        "q goes to the VM, it does not quit"
    );
    assert!(!app.quit);
    assert_eq!(app.on_key(ctrl('c')), [Command::ConsoleInput(vec![3])]);
    app.on_client(ClientEvent::ConsoleOutput(b"hello\nworld".to_vec()));
    let text = app.console.as_ref().unwrap().text();
    assert!(text.starts_with("hello\nworld"), "{text:?}");
    assert_eq!(app.on_key(ctrl(']')), [Command::DetachConsole]);
    assert!(app.console.is_none());
    assert_eq!(app.mode, Mode::Normal);
    // A stopped VM has no console.
    app.on_key(key(KeyCode::Down));
    assert!(app.on_key(key(KeyCode::Char('o'))).is_empty());
    assert!(app.status.clone().unwrap().error);
}

#[test]
fn console_closed_by_the_daemon_returns_to_the_table() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_key(key(KeyCode::Enter));
    app.on_client(ClientEvent::ConsoleClosed(Some(
        "error 409: not running".into(),
    )));
    assert!(app.console.is_none());
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.status.clone().unwrap().text.contains("409"));
}

#[test]
fn palette_runs_the_matching_command() {
    let mut app = loaded(&[]);
    app.on_key(key(KeyCode::Char(':')));
    type_text(&mut app, "snap");
    // "snapshots" and "snapshot" both match; Enter runs the first.
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Snapshots);
    app.on_key(key(KeyCode::Char(':')));
    type_text(&mut app, "zzz");
    app.on_key(key(KeyCode::Enter));
    assert!(app.status.clone().unwrap().error);
    app.on_key(key(KeyCode::Char(':')));
    type_text(&mut app, "quit");
    app.on_key(key(KeyCode::Enter));
    assert!(app.quit);
}

#[test]
fn firewall_toggle_patches_the_mode() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_key(key(KeyCode::Char('f')));
    assert_eq!(app.mode, Mode::Firewall(id(1)));
    let cmds = app.on_key(key(KeyCode::Char('m')));
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Action("firewall mode set to open".into()),
            Op::PatchVmFirewall,
            Some(id(1).to_string()),
            Some(json!({"mode": "open"}))
        )]
    );
}

#[test]
fn rename_prompt_starts_with_the_current_name() {
    let mut app = loaded(&[vm(1, "old", VmStatus::Running)]);
    app.on_key(key(KeyCode::Char('r')));
    app.on_key(ctrl('u'));
    type_text(&mut app, "new");
    let cmds = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Command::call(
            Purpose::Action("renamed VM to new".into()),
            Op::UpdateVm,
            Some(id(1).to_string()),
            Some(json!({"name": "new"}))
        )]
    );
}

#[test]
fn keys_encode_like_a_terminal() {
    assert_eq!(key_bytes(&key(KeyCode::Enter)), b"\r");
    assert_eq!(key_bytes(&key(KeyCode::Backspace)), [0x7f]);
    assert_eq!(key_bytes(&key(KeyCode::Up)), b"\x1b[A");
    assert_eq!(key_bytes(&ctrl('d')), [4]);
    assert_eq!(key_bytes(&key(KeyCode::Char('é'))), "é".as_bytes());
    let alt_x = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::ALT);
    assert_eq!(key_bytes(&alt_x), b"\x1bx");
}

#[test]
fn console_screen_survives_tiny_and_zero_sizes() {
    let mut pane = crate::console::ConsolePane::new("id", "vm");
    for (rows, cols) in [(0, 0), (1, 1), (0, 5), (3, 0), (2, 2), (40, 200)] {
        pane.resize(rows, cols);
        pane.feed(b"line one\nline two\x1b[31mred\x1b[0m\r\n");
    }
    assert_eq!(pane.parser.screen().size(), (40, 200));
}

#[test]
fn ages_are_short() {
    assert_eq!(format_age(5), "5s");
    assert_eq!(format_age(125), "2m");
    assert_eq!(format_age(7300), "2h");
    assert_eq!(format_age(200_000), "2d");
    let mut app = App::new("s");
    app.now = parse_rfc3339("2026-11-28T10:05:00Z").unwrap();
    assert_eq!(app.age("2026-11-28T10:00:00Z"), "5m");
    assert_eq!(app.age("not a time"), "?");
}

#[test]
fn idle_ticks_redraw_only_when_ages_are_shown() {
    let mut app = loaded(&[]);
    app.dirty = false;
    app.tick(app.now);
    assert!(!app.dirty, "an empty table has no ages to refresh");
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.dirty = false;
    app.tick(app.now);
    assert!(app.dirty);
}

#[test]
fn mouse_selects_rows_sorts_columns_and_switches_tabs() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let click = |column, row| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    };
    let mut app = loaded(&[
        vm(1, "a", VmStatus::Running),
        vm(2, "b", VmStatus::Error),
        vm(3, "c", VmStatus::Provisioning),
    ]);
    app.size = (140, 30);
    // Row 0 is the tabs, row 1 the table border, row 2 its header.
    app.on_mouse(click(5, 4));
    assert_eq!(app.selected_vm().unwrap().name, "b");
    let scroll = MouseEvent {
        kind: MouseEventKind::ScrollDown,
        ..click(5, 4)
    };
    app.on_mouse(scroll);
    assert_eq!(app.selected_vm().unwrap().name, "c");
    // The NAME header sorts by name; again reverses.
    app.on_mouse(click(3, 2));
    assert_eq!(names(&app), ["c", "b", "a"]);
    // The "Snapshots" tab.
    app.on_mouse(click(9, 0));
    assert_eq!(app.view, View::Snapshots);
}
