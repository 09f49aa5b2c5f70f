//! The exec pane: a command streaming through `execStream`, its output as it
//! arrives, Ctrl-C sending SIGINT to it, and its exit code once it ends.

use fastvm_proto::api::{ExecStreamRequest, Uuid};
use fastvm_proto::exec_channel::{SIGNAL, SignalRequest, exit_code_of};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;

use super::{App, Mode};
use crate::client::{Command, ExecEvent};
use crate::exec_output::{ExecOutput, Stream};

/// The signal Ctrl-C sends (SIGINT).
pub const INTERRUPT_SIGNAL: i32 = 2;

/// Rows a page key scrolls.
const PAGE: usize = 10;

/// Where the command is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecState {
    /// Asked for; the daemon has not answered yet.
    Starting,
    /// Running, output streaming.
    Running,
    /// Ctrl-C sent; waiting for the command to end.
    Interrupted,
    /// Ended with this status.
    Finished {
        /// The exit code, when the status carries one.
        exit_code: Option<i32>,
        /// The command's deadline ended it.
        timed_out: bool,
        /// The status's message, when it has no exit code.
        message: Option<String>,
    },
    /// Refused, or the connection failed (why).
    Failed(String),
}

impl ExecState {
    /// The command may still run.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            ExecState::Starting | ExecState::Running | ExecState::Interrupted
        )
    }
}

/// The exec output pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecView {
    /// VM name, for the title.
    pub vm_name: String,
    /// The command line as typed.
    pub command: String,
    /// The session whose reports this pane shows.
    pub session: u64,
    /// Where the command is.
    pub state: ExecState,
    /// What it printed, bounded.
    pub output: ExecOutput,
    /// Rows scrolled up from the end (0 follows new output).
    pub scroll_back: usize,
    /// Ctrl-C was sent to the command.
    pub interrupted: bool,
}

impl ExecView {
    /// A pane for `command`, starting.
    pub fn new(vm_name: String, command: String, session: u64) -> ExecView {
        ExecView {
            vm_name,
            command,
            session,
            state: ExecState::Starting,
            output: ExecOutput::default(),
            scroll_back: 0,
            interrupted: false,
        }
    }

    /// Applies one report of this pane's session.
    pub fn on_event(&mut self, event: ExecEvent) {
        match event {
            ExecEvent::Started => {
                if self.state == ExecState::Starting {
                    self.state = ExecState::Running;
                }
            }
            ExecEvent::Output { stderr, bytes } => {
                let stream = if stderr {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                self.output.push(stream, &bytes);
            }
            ExecEvent::Status(status) => {
                self.output.flush();
                self.state = finished(&status);
            }
            ExecEvent::Refused(resp) => {
                let msg = resp.error_message().unwrap_or("no message");
                self.state = ExecState::Failed(format!("error {}: {msg}", resp.status));
            }
            ExecEvent::Closed(why) => {
                self.output.flush();
                if self.state.is_live() {
                    let why = why.unwrap_or_else(|| {
                        "the connection ended before the command's status".into()
                    });
                    self.state = ExecState::Failed(why);
                }
            }
        }
    }
}

/// The state a final `Status` puts the pane in.
fn finished(status: &Value) -> ExecState {
    let exit_code = exit_code_of(status);
    ExecState::Finished {
        exit_code,
        timed_out: status.get("timedOut").and_then(Value::as_bool) == Some(true),
        message: exit_code
            .is_none()
            .then(|| status.get("message").and_then(Value::as_str))
            .flatten()
            .map(str::to_string),
    }
}

impl App {
    /// Opens the exec pane on `command` in the VM and starts it.
    pub(super) fn start_exec(
        &mut self,
        vm_id: Uuid,
        vm_name: String,
        text: String,
        command: Vec<String>,
    ) -> Vec<Command> {
        self.exec_sessions += 1;
        let session = self.exec_sessions;
        self.mode = Mode::Exec(ExecView::new(vm_name, text, session));
        let body = ExecStreamRequest {
            command,
            ..ExecStreamRequest::default()
        };
        vec![Command::StartExec {
            session,
            vm_id: vm_id.to_string(),
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }]
    }

    /// A report of exec session `session`; ignored unless its pane is open.
    pub(super) fn on_exec_event(&mut self, session: u64, event: ExecEvent) {
        match &mut self.mode {
            Mode::Exec(view) if view.session == session => view.on_event(event),
            _ => {}
        }
    }

    /// A key in the exec pane.
    pub(super) fn exec_key(&mut self, mut view: ExecView, key: KeyEvent) -> Vec<Command> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => {
                let live = view.state.is_live();
                self.mode = Mode::Exec(view);
                return if live {
                    self.interrupt_exec()
                } else {
                    Vec::new()
                };
            }
            KeyCode::Esc | KeyCode::Char('q') => return vec![Command::CloseExec],
            KeyCode::Enter if !view.state.is_live() => return vec![Command::CloseExec],
            KeyCode::Up | KeyCode::Char('k') => {
                view.scroll_back = view.scroll_back.saturating_add(1)
            }
            KeyCode::Down | KeyCode::Char('j') => {
                view.scroll_back = view.scroll_back.saturating_sub(1)
            }
            KeyCode::PageUp => view.scroll_back = view.scroll_back.saturating_add(PAGE),
            KeyCode::PageDown => view.scroll_back = view.scroll_back.saturating_sub(PAGE),
            KeyCode::Home | KeyCode::Char('g') => view.scroll_back = usize::MAX,
            KeyCode::End | KeyCode::Char('G') => view.scroll_back = 0,
            _ => {}
        }
        self.mode = Mode::Exec(view);
        Vec::new()
    }

    /// Sends SIGINT to the running command; the pane says so.
    fn interrupt_exec(&mut self) -> Vec<Command> {
        let Mode::Exec(view) = &mut self.mode else {
            return Vec::new();
        };
        view.state = ExecState::Interrupted;
        view.interrupted = true;
        let signal = SignalRequest {
            signal: INTERRUPT_SIGNAL,
        };
        vec![Command::ExecMessage {
            channel: SIGNAL,
            bytes: serde_json::to_vec(&signal).unwrap_or_default(),
        }]
    }
}
