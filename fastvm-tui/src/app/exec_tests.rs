//! The exec pane without a terminal: the stream it asks for, output
//! appended as it arrives, the bound, the status, Ctrl-C and Esc.

use fastvm_proto::api::VmStatus;
use fastvm_proto::exec_channel::{SIGNAL, exit_status};
use fastvm_proto::socket::SocketResponse;
use ratatui::crossterm::event::KeyCode;
use serde_json::json;

use super::tests::{ctrl, id, key, loaded, type_text, vm};
use super::*;
use crate::client::{ClientEvent, Command, ExecEvent};
use crate::exec_output::MAX_LINES;

/// An app with the exec pane open on `command`; the commands it sent.
fn exec_app(command: &str) -> (App, Vec<Command>) {
    let mut app = loaded(&[vm(1, "a", VmStatus::Running)]);
    app.on_key(key(KeyCode::Char('e')));
    type_text(&mut app, command);
    let cmds = app.on_key(key(KeyCode::Enter));
    (app, cmds)
}

fn view(app: &App) -> &ExecView {
    match &app.mode {
        Mode::Exec(view) => view,
        other => panic!("exec pane closed: {other:?}"),
    }
}

fn report(app: &mut App, session: u64, event: ExecEvent) {
    app.on_client(ClientEvent::Exec { session, event });
}

fn stdout(text: &str) -> ExecEvent {
    ExecEvent::Output {
        stderr: false,
        bytes: text.as_bytes().to_vec(),
    }
}

#[test]
fn the_prompt_starts_a_stream_of_the_argv() {
    let (app, cmds) = exec_app("echo 'a b' c");
    assert_eq!(
        cmds,
        [Command::StartExec {
            session: 1,
            vm_id: id(1).to_string(),
            body: json!({"command": ["echo", "a b", "c"], "tty": false}),
        }]
    );
    assert_eq!(view(&app).state, ExecState::Starting);
}

#[test]
fn output_is_appended_as_it_arrives_then_the_status_shows() {
    let (mut app, _) = exec_app("tick 3 1000");
    report(&mut app, 1, ExecEvent::Started);
    assert_eq!(view(&app).state, ExecState::Running);
    report(&mut app, 1, stdout("tick 1\n"));
    assert_eq!(view(&app).output.text(), "tick 1\n");
    report(&mut app, 1, stdout("tick 2\nti"));
    report(
        &mut app,
        1,
        ExecEvent::Output {
            stderr: true,
            bytes: b"warning\n".to_vec(),
        },
    );
    assert_eq!(view(&app).output.text(), "tick 1\ntick 2\nwarning\nti\n");
    report(&mut app, 1, stdout("ck 3\n"));
    report(&mut app, 1, ExecEvent::Status(exit_status(3, true)));
    let v = view(&app);
    assert_eq!(
        v.state,
        ExecState::Finished {
            exit_code: Some(3),
            timed_out: true,
            message: None
        }
    );
    assert_eq!(v.output.text(), "tick 1\ntick 2\nwarning\ntick 3\n");
}

#[test]
fn output_beyond_the_bound_drops_the_oldest_lines() {
    let (mut app, _) = exec_app("yes");
    report(&mut app, 1, ExecEvent::Started);
    let chunk: String = (0..MAX_LINES + 10).map(|i| format!("{i}\n")).collect();
    report(&mut app, 1, stdout(&chunk));
    let v = view(&app);
    assert_eq!(v.output.dropped(), 10);
    assert_eq!(v.output.lines().next().unwrap().text, "10");
}

#[test]
fn ctrl_c_sends_sigint_and_the_pane_says_interrupted_then_130() {
    let (mut app, _) = exec_app("sleep 60000");
    report(&mut app, 1, ExecEvent::Started);
    let cmds = app.on_key(ctrl('c'));
    assert_eq!(
        cmds,
        [Command::ExecMessage {
            channel: SIGNAL,
            bytes: br#"{"Signal":2}"#.to_vec(),
        }]
    );
    assert!(!app.quit, "Ctrl-C in the exec pane must not quit");
    assert_eq!(view(&app).state, ExecState::Interrupted);
    report(&mut app, 1, ExecEvent::Status(exit_status(130, false)));
    let v = view(&app);
    assert!(v.interrupted);
    assert!(matches!(
        v.state,
        ExecState::Finished {
            exit_code: Some(130),
            ..
        }
    ));
    // Once ended, Ctrl-C sends nothing more.
    assert_eq!(app.on_key(ctrl('c')), []);
}

#[test]
fn esc_closes_the_pane_and_the_connection_and_later_reports_are_ignored() {
    let (mut app, _) = exec_app("sleep 60000");
    report(&mut app, 1, ExecEvent::Started);
    assert_eq!(app.on_key(key(KeyCode::Esc)), [Command::CloseExec]);
    assert_eq!(app.mode, Mode::Normal);
    report(&mut app, 1, stdout("late\n"));
    assert_eq!(app.mode, Mode::Normal);

    // A new pane is a new session: the old one's reports do not reach it.
    app.on_key(key(KeyCode::Char('e')));
    type_text(&mut app, "echo x");
    let cmds = app.on_key(key(KeyCode::Enter));
    assert!(matches!(&cmds[..], [Command::StartExec { session: 2, .. }]));
    report(&mut app, 1, stdout("stale\n"));
    report(&mut app, 2, stdout("x\n"));
    assert_eq!(view(&app).output.text(), "x\n");
}

#[test]
fn a_refused_start_shows_the_error_in_the_pane() {
    let (mut app, _) = exec_app("x");
    let refusal = SocketResponse::error(1, 409, "VM is not running");
    report(&mut app, 1, ExecEvent::Refused(refusal));
    assert_eq!(
        view(&app).state,
        ExecState::Failed("error 409: VM is not running".into())
    );
    assert_eq!(app.on_key(key(KeyCode::Enter)), [Command::CloseExec]);
}

#[test]
fn a_connection_lost_mid_command_says_so() {
    let (mut app, _) = exec_app("sleep 60000");
    report(&mut app, 1, ExecEvent::Started);
    report(&mut app, 1, ExecEvent::Closed(None));
    assert!(matches!(&view(&app).state, ExecState::Failed(why) if why.contains("before")));
}

#[test]
fn scrolling_back_and_following_again() {
    let (mut app, _) = exec_app("tick 100 1");
    app.on_key(key(KeyCode::Char('k')));
    app.on_key(key(KeyCode::PageUp));
    assert_eq!(view(&app).scroll_back, 11);
    app.on_key(key(KeyCode::Char('j')));
    assert_eq!(view(&app).scroll_back, 10);
    app.on_key(key(KeyCode::Char('G')));
    assert_eq!(view(&app).scroll_back, 0);
}
