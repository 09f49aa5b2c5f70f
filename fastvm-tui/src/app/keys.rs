//! The keymap: what each key does in each mode, as state changes plus
//! [`Command`]s for the socket client. The help overlay and the command
//! palette are generated from the same tables.

use fastvm_proto::api::{
    CreateSnapshotRequest, FirewallMode, PatchVmFirewallRequest, UpdateSnapshotRequest,
    UpdateVmRequest, VmStatus,
};
use fastvm_proto::socket::Op;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;

use super::table::{short_id, vm_label};
use super::{
    App, Confirm, ConfirmKind, CreateForm, FormField, Mode, Palette, Prompt, PromptKind, TextInput,
    View,
};
use crate::client::{Command, Purpose};
use crate::console::{ConsolePane, is_escape, key_bytes};

/// Something the user can do, by key or from the palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Show a view.
    Show(View),
    /// Next view.
    NextView,
    /// Create a VM (from the selected snapshot in the snapshot view).
    Create,
    /// Rename the selected VM or snapshot.
    Rename,
    /// Delete the selected VM or snapshot (asks first).
    Delete,
    /// Snapshot the selected VM.
    Snapshot,
    /// Run a command in the selected VM.
    Exec,
    /// Copy a file into or out of the selected VM.
    Copy,
    /// Open the selected VM's console.
    Console,
    /// Show the selected VM's firewall.
    Firewall,
    /// Pause or resume live updates.
    Pause,
    /// Re-list everything.
    Refresh,
    /// Filter the table.
    Filter,
    /// The help overlay.
    Help,
    /// Quit.
    Quit,
}

/// Palette entries: name, what it does, the action.
pub const PALETTE: &[(&str, &str, Action)] = &[
    ("vms", "show VMs", Action::Show(View::Vms)),
    ("snapshots", "show snapshots", Action::Show(View::Snapshots)),
    ("quotas", "show quotas", Action::Show(View::Quotas)),
    ("create", "create a VM (form)", Action::Create),
    ("rename", "rename the selection", Action::Rename),
    ("delete", "delete the selection", Action::Delete),
    ("snapshot", "snapshot the selected VM", Action::Snapshot),
    ("exec", "run a command in the selected VM", Action::Exec),
    (
        "copy",
        "copy a file into or out of the selected VM",
        Action::Copy,
    ),
    ("console", "open the selected VM's console", Action::Console),
    (
        "firewall",
        "show the selected VM's firewall",
        Action::Firewall,
    ),
    ("pause", "pause or resume live updates", Action::Pause),
    ("refresh", "re-list everything", Action::Refresh),
    ("filter", "filter the table", Action::Filter),
    ("help", "show every key", Action::Help),
    ("quit", "leave fastvm-tui", Action::Quit),
];

/// Key help: section, keys, what they do.
pub const HELP: &[(&str, &str, &str)] = &[
    ("Global", "?", "this help"),
    ("Global", ":", "command palette"),
    ("Global", "q / Ctrl-c", "quit"),
    ("Global", "Tab / Shift-Tab", "next / previous view"),
    ("Global", "p", "pause / resume live updates"),
    ("Global", "Ctrl-r", "re-list everything"),
    ("Tables", "j k / ↑ ↓", "move; PgUp PgDn g G jump"),
    ("Tables", "/", "filter (Enter keeps, Esc clears)"),
    ("Tables", "1-9", "sort by column; again to reverse"),
    ("Tables", "mouse", "click selects or sorts, wheel scrolls"),
    ("VMs", "c", "create (form)"),
    ("VMs", "r / d", "rename / delete (asks first)"),
    ("VMs", "s", "snapshot"),
    ("VMs", "e", "exec a command (output live)"),
    ("Exec", "Ctrl-c / Esc", "interrupt (SIGINT) / close"),
    ("VMs", "t", "copy a file in or out (Esc cancels)"),
    ("VMs", "Enter / o", "open the console (Ctrl-] leaves)"),
    ("VMs", "f", "firewall (m toggles the mode)"),
    ("Snapshots", "c", "create a VM from the snapshot"),
    ("Snapshots", "r / d", "rename / delete (asks first)"),
];

fn is_press(key: &KeyEvent) -> bool {
    key.kind != KeyEventKind::Release
}

/// Applies a text-editing key to `input`; true when the key was one.
pub fn edit(input: &mut TextInput, key: &KeyEvent) -> bool {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('u') if ctrl => input.clear(),
        KeyCode::Char('a') if ctrl => input.home(),
        KeyCode::Char('e') if ctrl => input.end(),
        KeyCode::Char(c) if !ctrl => input.insert(c),
        KeyCode::Backspace => input.backspace(),
        KeyCode::Delete => input.delete(),
        KeyCode::Left => input.left(),
        KeyCode::Right => input.right(),
        KeyCode::Home => input.home(),
        KeyCode::End => input.end(),
        _ => return false,
    }
    true
}

/// Palette entries matching `query` (substring of the name, in table order).
pub fn palette_matches(query: &str) -> Vec<&'static (&'static str, &'static str, Action)> {
    let q = query.trim().to_lowercase();
    PALETTE
        .iter()
        .filter(|(name, _, _)| name.contains(&q))
        .collect()
}

impl App {
    /// Handles one key press; returns the commands it causes.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if !is_press(&key) {
            return Vec::new();
        }
        self.dirty = true;
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let keeps_ctrl_c = matches!(self.mode, Mode::Console | Mode::Exec(_) | Mode::Copy(_));
        if ctrl && key.code == KeyCode::Char('c') && !keeps_ctrl_c {
            self.quit = true;
            return Vec::new();
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(key),
            Mode::Console => self.console_key(key),
            Mode::Help => {
                if !matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter
                ) {
                    self.mode = Mode::Help;
                }
                Vec::new()
            }
            Mode::Filter => {
                match key.code {
                    KeyCode::Esc => self.filter.clear(),
                    KeyCode::Enter => {}
                    _ => {
                        edit(&mut self.filter, &key);
                        self.mode = Mode::Filter;
                    }
                }
                Vec::new()
            }
            Mode::Palette(p) => self.palette_key(p, key),
            Mode::Form(f) => self.form_key(f, key),
            Mode::Prompt(p) => self.prompt_key(p, key),
            Mode::Confirm(c) => self.confirm_key(c, key),
            Mode::Exec(view) => self.exec_key(view, key),
            Mode::CopyForm(form) => self.copy_form_key(form, key),
            Mode::Copy(view) => self.copy_key(view, key),
            Mode::Firewall(id) => match key.code {
                KeyCode::Char('m') => {
                    self.mode = Mode::Firewall(id);
                    self.toggle_firewall_mode(id)
                }
                KeyCode::Esc | KeyCode::Char('q' | 'f') => Vec::new(),
                _ => {
                    self.mode = Mode::Firewall(id);
                    Vec::new()
                }
            },
        }
    }

    fn normal_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let page = (self.size.1 as isize / 2).max(1);
        let action = match key.code {
            KeyCode::Char('r') if ctrl => Action::Refresh,
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') => Action::Help,
            KeyCode::Char(':') => {
                self.mode = Mode::Palette(Palette::default());
                return Vec::new();
            }
            KeyCode::Char('/') => Action::Filter,
            KeyCode::Tab => Action::NextView,
            KeyCode::BackTab => {
                self.view = View::ALL[(view_index(self.view) + 2) % 3];
                return Vec::new();
            }
            KeyCode::Esc => {
                self.filter.clear();
                self.status = None;
                return Vec::new();
            }
            KeyCode::Char('p') => Action::Pause,
            KeyCode::Char('c') => Action::Create,
            KeyCode::Char('r') => Action::Rename,
            KeyCode::Char('d') | KeyCode::Delete => Action::Delete,
            KeyCode::Char('s') => Action::Snapshot,
            KeyCode::Char('e') => Action::Exec,
            KeyCode::Char('t') => Action::Copy,
            KeyCode::Char('o') | KeyCode::Enter => Action::Console,
            KeyCode::Char('f') => Action::Firewall,
            KeyCode::Down | KeyCode::Char('j') => return self.moved(1),
            KeyCode::Up | KeyCode::Char('k') => return self.moved(-1),
            KeyCode::PageDown => return self.moved(page),
            KeyCode::PageUp => return self.moved(-page),
            KeyCode::Home | KeyCode::Char('g') => {
                self.select_index(0);
                return Vec::new();
            }
            KeyCode::End | KeyCode::Char('G') => {
                self.select_index(usize::MAX);
                return Vec::new();
            }
            KeyCode::Char(c @ '1'..='9') => {
                self.sort_by(c as usize - '1' as usize);
                return Vec::new();
            }
            _ => return Vec::new(),
        };
        self.perform(action)
    }

    fn moved(&mut self, delta: isize) -> Vec<Command> {
        self.move_selection(delta);
        Vec::new()
    }

    /// Does `action` (from a key or the palette).
    pub fn perform(&mut self, action: Action) -> Vec<Command> {
        self.dirty = true;
        match action {
            Action::Show(v) => self.view = v,
            Action::NextView => self.view = View::ALL[(view_index(self.view) + 1) % 3],
            Action::Quit => self.quit = true,
            Action::Help => self.mode = Mode::Help,
            Action::Filter => self.mode = Mode::Filter,
            Action::Pause => return self.toggle_pause(),
            Action::Refresh => {
                self.info("re-listing");
                return vec![Command::Resync];
            }
            Action::Create => {
                let preselect = match self.view {
                    View::Snapshots => self.selected_snapshot().map(|s| s.id),
                    _ => None,
                };
                self.mode = Mode::Form(CreateForm::new(&self.snapshots, preselect));
                return vec![Command::call(
                    Purpose::ListImages,
                    Op::ListImages,
                    None,
                    None,
                )];
            }
            Action::Rename => self.start_rename(),
            Action::Delete => self.start_delete(),
            Action::Snapshot => {
                if let Some(vm) = self.vm_for_action() {
                    self.mode = Mode::Prompt(Prompt {
                        kind: PromptKind::Snapshot(vm.0),
                        title: format!("snapshot of {} (name, optional)", vm.1),
                        input: TextInput::default(),
                    });
                }
            }
            Action::Exec => {
                if let Some(vm) = self.vm_for_action() {
                    self.mode = Mode::Prompt(Prompt {
                        kind: PromptKind::Exec(vm.0),
                        title: format!("exec in {} (command and arguments)", vm.1),
                        input: TextInput::default(),
                    });
                }
            }
            Action::Copy => self.open_copy_form(),
            Action::Console => return self.open_console(),
            Action::Firewall => {
                if let Some(vm) = self.vm_for_action() {
                    self.mode = Mode::Firewall(vm.0);
                }
            }
        }
        Vec::new()
    }

    /// The selected VM's id and name, or an error on the status line.
    pub(super) fn vm_for_action(&mut self) -> Option<(fastvm_proto::api::Uuid, String)> {
        if self.view != View::Vms {
            self.error("select a VM in the VMs view first");
            return None;
        }
        match self.selected_vm() {
            Some(vm) => Some((vm.id, vm_label(vm))),
            None => {
                self.error("no VM selected");
                None
            }
        }
    }

    fn start_rename(&mut self) {
        let (kind, name) = match self.view {
            View::Vms => match self.selected_vm() {
                Some(vm) => (PromptKind::RenameVm(vm.id), vm.name.clone()),
                None => return self.error("no VM selected"),
            },
            View::Snapshots => match self.selected_snapshot() {
                Some(s) => (PromptKind::RenameSnapshot(s.id), s.name.clone()),
                None => return self.error("no snapshot selected"),
            },
            View::Quotas => return,
        };
        self.mode = Mode::Prompt(Prompt {
            kind,
            title: format!("rename {name} to"),
            input: TextInput::with(name),
        });
    }

    fn start_delete(&mut self) {
        let confirm = match self.view {
            View::Vms => match self.selected_vm() {
                Some(vm) => Confirm {
                    kind: ConfirmKind::DeleteVm(vm.id),
                    question: format!("Delete VM {} ({})?", vm.name, short_id(&vm.id)),
                },
                None => return self.error("no VM selected"),
            },
            View::Snapshots => match self.selected_snapshot() {
                Some(s) => Confirm {
                    kind: ConfirmKind::DeleteSnapshot(s.id),
                    question: format!("Delete snapshot {} ({})?", s.name, short_id(&s.id)),
                },
                None => return self.error("no snapshot selected"),
            },
            View::Quotas => return,
        };
        self.mode = Mode::Confirm(confirm);
    }

    fn open_console(&mut self) -> Vec<Command> {
        let Some((id, name)) = self.vm_for_action() else {
            return Vec::new();
        };
        if self.vm(id).is_some_and(|vm| vm.status != VmStatus::Running) {
            self.error(format!(
                "{name} is not running; the console needs a running VM"
            ));
            return Vec::new();
        }
        self.console = Some(ConsolePane::new(id.to_string(), name));
        self.mode = Mode::Console;
        vec![Command::AttachConsole(id.to_string())]
    }

    fn console_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if is_escape(&key) {
            self.console = None;
            return vec![Command::DetachConsole];
        }
        self.mode = Mode::Console;
        let bytes = key_bytes(&key);
        if bytes.is_empty() {
            return Vec::new();
        }
        vec![Command::ConsoleInput(bytes)]
    }

    fn palette_key(&mut self, mut p: Palette, key: KeyEvent) -> Vec<Command> {
        match key.code {
            KeyCode::Esc => Vec::new(),
            KeyCode::Enter => {
                let found = palette_matches(&p.input.text);
                match found.get(p.selected) {
                    Some((_, _, action)) => self.perform(*action),
                    None => {
                        self.error(format!("no command {:?}", p.input.text));
                        Vec::new()
                    }
                }
            }
            KeyCode::Down | KeyCode::Tab => {
                let n = palette_matches(&p.input.text).len();
                p.selected = if n == 0 { 0 } else { (p.selected + 1) % n };
                self.mode = Mode::Palette(p);
                Vec::new()
            }
            KeyCode::Up | KeyCode::BackTab => {
                let n = palette_matches(&p.input.text).len();
                p.selected = if n == 0 { 0 } else { (p.selected + n - 1) % n };
                self.mode = Mode::Palette(p);
                Vec::new()
            }
            _ => {
                if edit(&mut p.input, &key) {
                    p.selected = 0;
                }
                self.mode = Mode::Palette(p);
                Vec::new()
            }
        }
    }

    fn form_key(&mut self, mut form: CreateForm, key: KeyEvent) -> Vec<Command> {
        match key.code {
            KeyCode::Esc => return Vec::new(),
            KeyCode::Enter => match form.request() {
                Ok(req) => {
                    let body = serde_json::to_value(&req).unwrap_or(Value::Null);
                    self.info("creating VM...");
                    return vec![Command::call(
                        Purpose::Created,
                        Op::CreateVm,
                        None,
                        Some(body),
                    )];
                }
                Err(e) => form.error = Some(e),
            },
            KeyCode::Tab | KeyCode::Down => form.cycle_focus(true),
            KeyCode::BackTab | KeyCode::Up => form.cycle_focus(false),
            KeyCode::Left if form.focus == FormField::Source => form.cycle_source(false),
            KeyCode::Right | KeyCode::Char(' ') if form.focus == FormField::Source => {
                form.cycle_source(true)
            }
            KeyCode::Left if form.focus == FormField::Image => form.cycle_image(false),
            KeyCode::Right | KeyCode::Char(' ') if form.focus == FormField::Image => {
                form.cycle_image(true)
            }
            _ => {
                if let Some(input) = form.focused_input() {
                    edit(input, &key);
                }
            }
        }
        self.mode = Mode::Form(form);
        Vec::new()
    }

    fn prompt_key(&mut self, mut prompt: Prompt, key: KeyEvent) -> Vec<Command> {
        match key.code {
            KeyCode::Esc => Vec::new(),
            KeyCode::Enter => self.submit_prompt(prompt),
            _ => {
                edit(&mut prompt.input, &key);
                self.mode = Mode::Prompt(prompt);
                Vec::new()
            }
        }
    }

    fn submit_prompt(&mut self, prompt: Prompt) -> Vec<Command> {
        let text = prompt.input.text.trim().to_string();
        let call = |purpose, op, id: String, body: Value| {
            vec![Command::call(purpose, op, Some(id), Some(body))]
        };
        match prompt.kind {
            PromptKind::RenameVm(id) => {
                let body = json(&UpdateVmRequest { name: text.clone() });
                call(
                    Purpose::Action(format!("renamed VM to {text}")),
                    Op::UpdateVm,
                    id.to_string(),
                    body,
                )
            }
            PromptKind::RenameSnapshot(id) => {
                let body = json(&UpdateSnapshotRequest { name: text.clone() });
                call(
                    Purpose::Action(format!("renamed snapshot to {text}")),
                    Op::UpdateSnapshot,
                    id.to_string(),
                    body,
                )
            }
            PromptKind::Snapshot(vm_id) => {
                let req = CreateSnapshotRequest {
                    vm_id,
                    name: (!text.is_empty()).then(|| text.clone()),
                };
                self.info("taking snapshot...");
                vec![Command::call(
                    Purpose::Action("snapshot taken".into()),
                    Op::CreateSnapshot,
                    None,
                    Some(json(&req)),
                )]
            }
            PromptKind::Exec(vm_id) => {
                let command = match shlex::split(&text) {
                    Some(argv) if !argv.is_empty() => argv,
                    _ => {
                        self.error("exec: type a command (quotes must be closed)");
                        self.mode = Mode::Prompt(prompt);
                        return Vec::new();
                    }
                };
                let vm_name = self.vm(vm_id).map_or_else(|| short_id(&vm_id), vm_label);
                self.start_exec(vm_id, vm_name, text, command)
            }
        }
    }

    fn confirm_key(&mut self, confirm: Confirm, key: KeyEvent) -> Vec<Command> {
        match key.code {
            KeyCode::Char('y' | 'Y') => match confirm.kind {
                ConfirmKind::DeleteVm(id) => {
                    self.info("deleting VM...");
                    vec![Command::call(
                        Purpose::Action("VM deleted".into()),
                        Op::DeleteVm,
                        Some(id.to_string()),
                        None,
                    )]
                }
                ConfirmKind::DeleteSnapshot(id) => vec![Command::call(
                    Purpose::Action("snapshot deleted".into()),
                    Op::DeleteSnapshot,
                    Some(id.to_string()),
                    None,
                )],
            },
            KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Vec::new(),
            _ => {
                self.mode = Mode::Confirm(confirm);
                Vec::new()
            }
        }
    }

    fn toggle_firewall_mode(&mut self, id: fastvm_proto::api::Uuid) -> Vec<Command> {
        let Some(vm) = self.vm(id) else {
            return Vec::new();
        };
        let mode = match vm.firewall.mode {
            FirewallMode::Open => FirewallMode::Restricted,
            FirewallMode::Restricted => FirewallMode::Open,
        };
        let patch = PatchVmFirewallRequest {
            mode: Some(mode),
            ingress: None,
        };
        vec![Command::call(
            Purpose::Action(format!("firewall mode set to {mode}")),
            Op::PatchVmFirewall,
            Some(id.to_string()),
            Some(json(&patch)),
        )]
    }
}

fn view_index(v: View) -> usize {
    View::ALL.iter().position(|x| *x == v).unwrap_or(0)
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
