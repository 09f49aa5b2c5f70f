//! The file-copy action without a terminal: the form and what it refuses,
//! the copy it asks for in each direction, progress, the outcome on the
//! status line, and Esc cancelling.

use std::path::Path;
use std::time::Duration;

use fastvm_proto::api::VmStatus;
use ratatui::crossterm::event::KeyCode;

use super::copy::{format_bytes, format_rate};
use super::keys::{HELP, palette_matches};
use super::tests::{ctrl, id, key, loaded, type_text, vm};
use super::*;
use crate::client::{ClientEvent, Command, CopyDirection, CopyEvent, CopyRequest};

/// An app with one running VM `a`, its copy form open.
fn form_app() -> App {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_key(key(KeyCode::Char('t')));
    assert!(matches!(app.mode, Mode::CopyForm(_)), "{:?}", app.mode);
    app
}

fn form(app: &App) -> &CopyForm {
    match &app.mode {
        Mode::CopyForm(f) => f,
        other => panic!("the copy form is closed: {other:?}"),
    }
}

fn progress(app: &App) -> &CopyView {
    match &app.mode {
        Mode::Copy(v) => v,
        other => panic!("no copy running: {other:?}"),
    }
}

/// Fills the form (local path focused first) and presses Enter.
fn submit(app: &mut App, local: &str, guest: &str) -> Vec<Command> {
    type_text(app, local);
    app.on_key(key(KeyCode::Tab));
    type_text(app, guest);
    app.on_key(key(KeyCode::Enter))
}

/// Switches the open form to a download (from the local path field).
fn to_download(app: &mut App) {
    app.on_key(key(KeyCode::Up));
    assert_eq!(form(app).focus, CopyField::Direction);
    app.on_key(key(KeyCode::Char(' ')));
    assert_eq!(form(app).direction, CopyDirection::Download);
    app.on_key(key(KeyCode::Tab));
    assert_eq!(form(app).focus, CopyField::Local);
}

fn report(app: &mut App, session: u64, event: CopyEvent) {
    app.on_client(ClientEvent::Copy { session, event });
}

fn status(app: &App) -> (String, bool) {
    let s = app.status.as_ref().expect("a status line");
    (s.text.clone(), s.error)
}

fn local_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn t_opens_the_form_only_on_a_running_vm() {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running), vm(2, "b", VmStatus::Stopped)]);
    app.selected_vm = Some(id(2));
    assert!(app.on_key(key(KeyCode::Char('t'))).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    let (text, error) = status(&app);
    assert!(error && text.contains("b is not running"), "{text}");

    app.selected_vm = Some(id(1));
    app.on_key(key(KeyCode::Char('t')));
    let f = form(&app);
    assert_eq!((f.vm_id, f.vm_name.as_str()), (id(1), "a"));
    assert_eq!(f.direction, CopyDirection::Upload);
    assert_eq!(f.focus, CopyField::Local);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal, "Esc closes the form");

    // The palette's `copy` opens it too; the help lists the key.
    app.on_key(key(KeyCode::Char(':')));
    type_text(&mut app, "copy");
    app.on_key(key(KeyCode::Enter));
    assert!(matches!(app.mode, Mode::CopyForm(_)));
    assert_eq!(palette_matches("copy").len(), 1);
    assert!(
        HELP.iter()
            .any(|(_, k, what)| *k == "t" && what.contains("copy"))
    );
}

#[test]
fn the_form_refuses_a_relative_or_directory_vm_path_and_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = local_file(tmp.path(), "app.bin", b"12345");
    let cases = [
        (file.as_str(), "", "VM path: type"),
        (file.as_str(), "tmp/app.bin", "is not absolute"),
        (file.as_str(), "/tmp/", "VM path: names a directory"),
        ("", "/tmp/app.bin", "local path: type"),
        (
            "/no/such/file",
            "/tmp/app.bin",
            "/no/such/file does not exist",
        ),
    ];
    for (local, guest, wanted) in cases {
        let mut app = form_app();
        assert!(submit(&mut app, local, guest).is_empty(), "{local} {guest}");
        let error = form(&app).error.clone().unwrap_or_default();
        assert!(error.contains(wanted), "{local:?} {guest:?}: {error}");
    }
    let mut app = form_app();
    let dir = tmp.path().to_str().unwrap();
    assert!(submit(&mut app, dir, "/tmp/x").is_empty());
    let error = form(&app).error.clone().unwrap_or_default();
    assert!(error.contains("is a directory"), "{error}");

    // Fixing the field and submitting again starts the copy.
    app.on_key(key(KeyCode::BackTab));
    app.on_key(ctrl('u'));
    type_text(&mut app, &file);
    let cmds = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Command::StartCopy {
            session: 1,
            request: CopyRequest {
                direction: CopyDirection::Upload,
                vm_id: id(1).to_string(),
                local: file.clone().into(),
                guest: "/tmp/x".into(),
            },
        }]
    );
    let v = progress(&app);
    assert!(!v.started);
    assert_eq!(v.what(), "into a:/tmp/x");
}

#[test]
fn a_download_into_a_directory_takes_the_vm_files_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let mut app = form_app();
    to_download(&mut app);
    let cmds = submit(&mut app, dir, "/etc/os-release");
    let [Command::StartCopy { request, .. }] = &cmds[..] else {
        panic!("no copy started: {cmds:?}")
    };
    assert_eq!(request.direction, CopyDirection::Download);
    assert_eq!(request.local, tmp.path().join("os-release"));

    // A file name in an existing directory is used as it is.
    let mut app = form_app();
    to_download(&mut app);
    let named = tmp.path().join("copy.txt");
    let cmds = submit(&mut app, named.to_str().unwrap(), "/etc/os-release");
    assert!(
        matches!(&cmds[..], [Command::StartCopy { request, .. }] if request.local == named),
        "{cmds:?}"
    );

    // A download needs its directory; the local file need not exist.
    let mut app = form_app();
    to_download(&mut app);
    let missing = tmp.path().join("no-dir/x");
    assert!(submit(&mut app, missing.to_str().unwrap(), "/etc/os-release").is_empty());
    let error = form(&app).error.clone().unwrap_or_default();
    assert!(error.contains("no-dir does not exist"), "{error}");
}

#[test]
fn a_home_relative_path_is_expanded() {
    let Some(home) = std::env::var_os("HOME").filter(|h| Path::new(h).is_dir()) else {
        return;
    };
    let mut app = form_app();
    to_download(&mut app);
    let cmds = submit(&mut app, "~", "/srv/data.bin");
    assert!(
        matches!(&cmds[..], [Command::StartCopy { request, .. }]
            if request.local == Path::new(&home).join("data.bin")),
        "{cmds:?}"
    );
}

#[test]
fn progress_shows_bytes_of_the_total_then_success_goes_to_the_status_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = local_file(tmp.path(), "a.bin", &[7u8; 10]);
    let mut app = form_app();
    submit(&mut app, &file, "/tmp/a.bin");
    report(
        &mut app,
        1,
        CopyEvent::Started {
            total: Some(4 << 20),
        },
    );
    assert!(progress(&app).started);
    assert_eq!(progress(&app).ratio(), Some(0.0));
    report(
        &mut app,
        1,
        CopyEvent::Progress {
            bytes: 1 << 20,
            elapsed: Duration::from_millis(500),
        },
    );
    let v = progress(&app);
    assert_eq!(v.ratio(), Some(0.25));
    assert_eq!(v.progress_text(), "1.0 MiB of 4.0 MiB · 2.0 MiB/s");
    report(
        &mut app,
        1,
        CopyEvent::Done {
            bytes: 4 << 20,
            elapsed: Duration::from_secs(2),
        },
    );
    assert_eq!(app.mode, Mode::Normal);
    let (text, error) = status(&app);
    assert!(!error, "{text}");
    assert_eq!(
        text,
        format!("copied {file} into a:/tmp/a.bin: 4.0 MiB (4194304 bytes) in 2.0 s, 2.0 MiB/s")
    );
}

#[test]
fn a_failure_shows_the_daemons_message() {
    let tmp = tempfile::tempdir().unwrap();
    let mut app = form_app();
    to_download(&mut app);
    submit(&mut app, tmp.path().to_str().unwrap(), "/missing");
    report(
        &mut app,
        1,
        CopyEvent::Failed("error 404: no file at /missing".into()),
    );
    assert_eq!(app.mode, Mode::Normal);
    let (text, error) = status(&app);
    assert!(error);
    assert_eq!(
        text,
        "copy out of a:/missing failed: error 404: no file at /missing"
    );
}

#[test]
fn esc_cancels_a_running_copy_and_its_late_reports_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let file = local_file(tmp.path(), "a.bin", b"x");
    let mut app = form_app();
    submit(&mut app, &file, "/tmp/a.bin");
    report(&mut app, 1, CopyEvent::Started { total: Some(1) });
    // Other keys leave it running.
    assert!(app.on_key(key(KeyCode::Char('q'))).is_empty());
    assert!(!app.quit);
    assert!(matches!(app.mode, Mode::Copy(_)));
    assert_eq!(app.on_key(key(KeyCode::Esc)), [Command::CancelCopy]);
    assert_eq!(app.mode, Mode::Normal);
    let (text, _) = status(&app);
    assert!(
        text.contains("cancelled; nothing written in the VM"),
        "{text}"
    );
    report(
        &mut app,
        1,
        CopyEvent::Done {
            bytes: 1,
            elapsed: Duration::from_secs(1),
        },
    );
    assert_eq!(status(&app).0, text, "a cancelled copy's report is ignored");

    // Ctrl-C cancels too, rather than quitting; a new copy is a new session.
    app.on_key(key(KeyCode::Char('t')));
    let cmds = submit(&mut app, &file, "/tmp/b.bin");
    assert!(matches!(&cmds[..], [Command::StartCopy { session: 2, .. }]));
    assert_eq!(app.on_key(ctrl('c')), [Command::CancelCopy]);
    assert!(!app.quit);
}

#[test]
fn pasted_text_goes_to_the_focused_field() {
    let mut app = form_app();
    app.on_paste("/tmp/pasted\n");
    app.on_key(key(KeyCode::Tab));
    app.on_paste("/srv/x");
    let f = form(&app);
    assert_eq!(
        (f.local.text.as_str(), f.guest.text.as_str()),
        ("/tmp/pasted", "/srv/x")
    );
}

#[test]
fn sizes_and_rates_read_well() {
    assert_eq!(format_bytes(0), "0 B");
    assert_eq!(format_bytes(1023), "1023 B");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(5 << 20), "5.0 MiB");
    assert_eq!(format_bytes(3 << 30), "3.0 GiB");
    assert_eq!(format_rate(1 << 20, Duration::from_millis(50)), None);
    assert_eq!(
        format_rate(3 << 20, Duration::from_secs(2)).as_deref(),
        Some("1.5 MiB/s")
    );
}
