//! The dashboard's state, kept apart from drawing so it can be tested without
//! a terminal: the daemon's objects as last seen, the view, selection, sort,
//! filter, the open overlay (form, prompt, confirmation...), and the status
//! line. Input handling lives in [`keys`] and [`mouse`]; it turns keys into
//! state changes and [`Command`]s for the socket client.

pub mod copy;
pub mod exec;
pub mod forms;
pub mod keys;
pub mod mouse;
pub mod table;

#[cfg(test)]
mod copy_tests;
#[cfg(test)]
mod exec_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use fastvm_proto::api::{
    ImageList, OrgQuotaUsage, SnapshotObject, Uuid, VmInstance, parse_rfc3339,
};
use fastvm_proto::socket::{EventKind, EventOp, SocketEvent, SocketResponse};
use time::OffsetDateTime;

use crate::client::{ClientEvent, Command, Purpose};
use crate::console::ConsolePane;
pub use copy::{CopyField, CopyForm, CopyView};
pub use exec::{ExecState, ExecView};
pub use forms::{CreateForm, DEFAULT_IMAGE, FormField, TextInput};
pub use table::{SNAPSHOT_COLUMNS, Sort, VM_COLUMNS};

/// The top-level views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The VM table.
    Vms,
    /// The snapshot table.
    Snapshots,
    /// Quota gauges.
    Quotas,
}

impl View {
    /// Every view, in tab order.
    pub const ALL: [View; 3] = [View::Vms, View::Snapshots, View::Quotas];

    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Vms => "VMs",
            View::Snapshots => "Snapshots",
            View::Quotas => "Quotas",
        }
    }
}

/// The connection to the daemon, as the dashboard knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Not connected yet.
    Connecting,
    /// Connected and watching.
    Connected,
    /// The connection failed or dropped; the client retries.
    Down(String),
}

/// What a text prompt is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptKind {
    /// Rename the VM with this id.
    RenameVm(Uuid),
    /// Rename the snapshot with this id.
    RenameSnapshot(Uuid),
    /// Snapshot the VM with this id; the text is the optional name.
    Snapshot(Uuid),
    /// Run a command in the VM with this id.
    Exec(Uuid),
}

/// A one-line text prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// What Enter does.
    pub kind: PromptKind,
    /// Title shown on the prompt.
    pub title: String,
    /// The text typed so far.
    pub input: TextInput,
}

/// What a confirmation confirms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmKind {
    /// Delete the VM with this id.
    DeleteVm(Uuid),
    /// Delete the snapshot with this id.
    DeleteSnapshot(Uuid),
}

/// A yes/no question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// What `y` does.
    pub kind: ConfirmKind,
    /// The question.
    pub question: String,
}

/// The command palette: typed text and the highlighted entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Palette {
    /// Text typed after `:`.
    pub input: TextInput,
    /// Index into the matching entries.
    pub selected: usize,
}

/// What has the keyboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Tables: navigation and action keys.
    Normal,
    /// Typing the `/` filter.
    Filter,
    /// The `?` help overlay.
    Help,
    /// The `:` command palette.
    Palette(Palette),
    /// The create-VM form.
    Form(CreateForm),
    /// A one-line prompt (rename, snapshot name, exec command).
    Prompt(Prompt),
    /// A yes/no confirmation.
    Confirm(Confirm),
    /// The exec output pane.
    Exec(ExecView),
    /// The file-copy form.
    CopyForm(CopyForm),
    /// A file copy running, with its progress.
    Copy(CopyView),
    /// The firewall of the VM with this id.
    Firewall(Uuid),
    /// Keys go raw to the console pane.
    Console,
}

/// The status line's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// Shown as an error (red).
    pub error: bool,
}

/// Most live events kept while updates are paused; beyond it the oldest are
/// dropped and a re-list is asked for on resume.
pub const MAX_PAUSED_EVENTS: usize = 10_000;

/// The whole dashboard state.
pub struct App {
    /// The daemon socket path, for messages.
    pub socket_path: String,
    /// Connection state.
    pub conn: ConnState,
    /// VMs, in arrival order (views sort them).
    pub vms: Vec<VmInstance>,
    /// Snapshots, in arrival order.
    pub snapshots: Vec<SnapshotObject>,
    /// The org's quotas, once known.
    pub quotas: Option<OrgQuotaUsage>,
    /// Whether the VM list has been loaded since the last (re)connect.
    pub vms_loaded: bool,
    /// Whether the snapshot list has been loaded since the last (re)connect.
    pub snapshots_loaded: bool,
    /// Events that arrived before the list they change; applied after it.
    early_events: Vec<SocketEvent>,
    /// The current view.
    pub view: View,
    /// Selected VM (kept by id so live reordering does not move it).
    pub selected_vm: Option<Uuid>,
    /// Selected snapshot.
    pub selected_snapshot: Option<Uuid>,
    /// VM table sort.
    pub vm_sort: Sort,
    /// Snapshot table sort.
    pub snapshot_sort: Sort,
    /// The `/` filter (case-insensitive substring of name, id, status...).
    pub filter: TextInput,
    /// Live updates paused (`p`): events wait in `paused_events`.
    pub paused: bool,
    /// Events received while paused.
    pub paused_events: VecDeque<SocketEvent>,
    /// Paused events were dropped: re-list on resume.
    pub paused_overflow: bool,
    /// What has the keyboard.
    pub mode: Mode,
    /// The status line.
    pub status: Option<Status>,
    /// The console pane, while attached (or just closed, showing why).
    pub console: Option<ConsolePane>,
    /// Terminal size (columns, rows), for layout-dependent input (mouse).
    pub size: (u16, u16),
    /// The time ages are computed against (set on each tick).
    pub now: OffsetDateTime,
    /// Scroll state of the VM table (kept by the drawing code).
    pub vm_table: ratatui::widgets::TableState,
    /// Scroll state of the snapshot table.
    pub snapshot_table: ratatui::widgets::TableState,
    /// Set when the user asked to quit.
    pub quit: bool,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// Exec sessions started so far (the last one's number).
    pub exec_sessions: u64,
    /// File copies started so far (the last one's number).
    pub copy_sessions: u64,
}

impl App {
    /// A fresh dashboard for the daemon at `socket_path`.
    pub fn new(socket_path: impl Into<String>) -> App {
        App {
            socket_path: socket_path.into(),
            conn: ConnState::Connecting,
            vms: Vec::new(),
            snapshots: Vec::new(),
            quotas: None,
            vms_loaded: false,
            snapshots_loaded: false,
            early_events: Vec::new(),
            view: View::Vms,
            selected_vm: None,
            selected_snapshot: None,
            vm_sort: Sort::default(),
            snapshot_sort: Sort::default(),
            filter: TextInput::default(),
            paused: false,
            paused_events: VecDeque::new(),
            paused_overflow: false,
            mode: Mode::Normal,
            status: None,
            console: None,
            size: (120, 40),
            now: OffsetDateTime::now_utc(),
            vm_table: Default::default(),
            snapshot_table: Default::default(),
            quit: false,
            dirty: true,
            exec_sessions: 0,
            copy_sessions: 0,
        }
    }

    /// Sets the status line to an informational message.
    pub fn info(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: false,
        });
    }

    /// Sets the status line to an error.
    pub fn error(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: true,
        });
    }

    /// The VM with `id`.
    pub fn vm(&self, id: Uuid) -> Option<&VmInstance> {
        self.vms.iter().find(|v| v.id == id)
    }

    /// The snapshot with `id`.
    pub fn snapshot(&self, id: Uuid) -> Option<&SnapshotObject> {
        self.snapshots.iter().find(|s| s.id == id)
    }

    /// Applies one message from the socket client. Returns commands to send
    /// back (e.g. a re-list after a lagging watch).
    pub fn on_client(&mut self, event: ClientEvent) -> Vec<Command> {
        self.dirty = true;
        match event {
            ClientEvent::Connected => {
                self.conn = ConnState::Connected;
                self.vms_loaded = false;
                self.snapshots_loaded = false;
                self.early_events.clear();
                self.paused_events.clear();
                self.paused_overflow = false;
                if matches!(&self.status, Some(s) if s.text.starts_with("daemon")) {
                    self.status = None;
                }
                Vec::new()
            }
            ClientEvent::Disconnected(why) => {
                self.error(format!(
                    "daemon unreachable at {}: {why} (retrying)",
                    self.socket_path
                ));
                self.conn = ConnState::Down(why);
                Vec::new()
            }
            ClientEvent::Event(event) => {
                self.on_event(event);
                Vec::new()
            }
            ClientEvent::Answer { purpose, response } => self.on_answer(purpose, response),
            ClientEvent::ConsoleAttached => {
                if let Some(c) = &mut self.console {
                    c.attached = true;
                }
                Vec::new()
            }
            ClientEvent::ConsoleOutput(bytes) => {
                if let Some(c) = &mut self.console {
                    c.feed(&bytes);
                }
                Vec::new()
            }
            ClientEvent::Exec { session, event } => {
                self.on_exec_event(session, event);
                Vec::new()
            }
            ClientEvent::Copy { session, event } => {
                self.on_copy_event(session, event);
                Vec::new()
            }
            ClientEvent::ConsoleClosed(why) => {
                let name = self.console.take().map(|c| c.vm_name).unwrap_or_default();
                match why {
                    Some(why) => self.error(format!("console of {name}: {why}")),
                    None => self.info(format!("console of {name} closed")),
                }
                if self.mode == Mode::Console {
                    self.mode = Mode::Normal;
                }
                Vec::new()
            }
        }
    }

    /// A live event: applied now, or queued while paused or before the
    /// list it belongs to has loaded.
    pub fn on_event(&mut self, event: SocketEvent) {
        if self.paused {
            if self.paused_events.len() >= MAX_PAUSED_EVENTS {
                self.paused_events.pop_front();
                self.paused_overflow = true;
            }
            self.paused_events.push_back(event);
            return;
        }
        let loaded = match event.event {
            EventKind::Vm => self.vms_loaded,
            EventKind::Snapshot => self.snapshots_loaded,
            EventKind::Quota => true,
        };
        if !loaded {
            self.early_events.push(event);
            return;
        }
        self.apply_event(event);
    }

    /// Changes the stored objects by one event; undecodable data is ignored.
    fn apply_event(&mut self, event: SocketEvent) {
        match event.event {
            EventKind::Vm => {
                let Ok(vm) = serde_json::from_value::<VmInstance>(event.data) else {
                    return;
                };
                upsert_or_remove(&mut self.vms, vm, event.op, |v| v.id);
            }
            EventKind::Snapshot => {
                let Ok(snap) = serde_json::from_value::<SnapshotObject>(event.data) else {
                    return;
                };
                upsert_or_remove(&mut self.snapshots, snap, event.op, |s| s.id);
            }
            EventKind::Quota => {
                if let Ok(q) = serde_json::from_value::<OrgQuotaUsage>(event.data) {
                    self.quotas = Some(q);
                }
            }
        }
    }

    /// Toggles pausing live updates; resuming applies what was queued.
    /// Returns re-list commands when events were dropped meanwhile.
    pub fn toggle_pause(&mut self) -> Vec<Command> {
        self.paused = !self.paused;
        self.dirty = true;
        if self.paused {
            self.info("live updates paused (p to resume)");
            return Vec::new();
        }
        let queued: Vec<_> = self.paused_events.drain(..).collect();
        let n = queued.len();
        for event in queued {
            self.on_event(event);
        }
        self.info(format!("live updates resumed ({n} applied)"));
        if std::mem::take(&mut self.paused_overflow) {
            return relist();
        }
        Vec::new()
    }

    /// Applies the answer to one request.
    fn on_answer(&mut self, purpose: Purpose, resp: SocketResponse) -> Vec<Command> {
        if !resp.is_success() {
            let msg = resp.error_message().unwrap_or("no message").to_string();
            return self.on_failure(purpose, resp.status, msg);
        }
        match purpose {
            Purpose::Watch => {}
            Purpose::ListVms => {
                if let Ok(vms) = serde_json::from_value::<Vec<VmInstance>>(resp.body) {
                    self.vms = vms;
                    self.vms_loaded = true;
                    self.apply_early(EventKind::Vm);
                }
            }
            Purpose::ListSnapshots => {
                if let Ok(snaps) = serde_json::from_value::<Vec<SnapshotObject>>(resp.body) {
                    self.snapshots = snaps;
                    self.snapshots_loaded = true;
                    self.apply_early(EventKind::Snapshot);
                }
            }
            Purpose::Quotas => {
                if let Ok(q) = serde_json::from_value::<OrgQuotaUsage>(resp.body) {
                    self.quotas = Some(q);
                }
            }
            Purpose::ListImages => {
                if let (Mode::Form(form), Ok(list)) = (
                    &mut self.mode,
                    serde_json::from_value::<ImageList>(resp.body),
                ) {
                    form.set_images(list.images.into_iter().map(|i| i.name).collect());
                }
            }
            Purpose::Created => {
                if let Ok(vm) = serde_json::from_value::<VmInstance>(resp.body) {
                    self.info(format!("created VM {} ({})", vm.name, vm.status));
                    self.selected_vm = Some(vm.id);
                    if self.vms_loaded && !self.paused {
                        upsert_or_remove(&mut self.vms, vm, EventOp::Updated, |v| v.id);
                    }
                }
            }
            Purpose::Action(done) => self.info(done),
        }
        Vec::new()
    }

    /// An error answer: shown on the status line.
    fn on_failure(&mut self, purpose: Purpose, status: u16, msg: String) -> Vec<Command> {
        match purpose {
            Purpose::Watch => {
                self.error(format!("watch ended ({status}): {msg}; re-listing"));
                return vec![Command::Resync];
            }
            Purpose::ListVms | Purpose::ListSnapshots | Purpose::Quotas => {
                self.error(format!("cannot list ({status}): {msg}"));
            }
            // The form offers only the default image then; nothing to say.
            Purpose::ListImages => {}
            Purpose::Created | Purpose::Action(_) => self.error(format!("error {status}: {msg}")),
        }
        Vec::new()
    }

    /// Applies queued early events of `kind` after its list loaded.
    fn apply_early(&mut self, kind: EventKind) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_events)
            .into_iter()
            .partition(|e| e.event == kind);
        self.early_events = later;
        for event in now {
            self.apply_event(event);
        }
    }

    /// Sets the clock used for ages; marks dirty when a shown age may change.
    pub fn tick(&mut self, now: OffsetDateTime) {
        self.now = now;
        if self.view != View::Quotas && (!self.vms.is_empty() || !self.snapshots.is_empty()) {
            self.dirty = true;
        }
    }

    /// A human age (`42s`, `5m`, `3h`, `2d`) of an RFC 3339 time.
    pub fn age(&self, created_at: &str) -> String {
        let Ok(t) = parse_rfc3339(created_at) else {
            return "?".into();
        };
        format_age((self.now - t).whole_seconds().max(0))
    }
}

/// `secs` as the largest whole unit: `42s`, `5m`, `3h`, `2d`.
pub fn format_age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The requests that rebuild the dashboard's copy of the daemon's state.
pub fn relist() -> Vec<Command> {
    vec![Command::Resync]
}

/// Inserts, replaces or removes `item` in `list` by its key.
fn upsert_or_remove<T, K: PartialEq>(
    list: &mut Vec<T>,
    item: T,
    op: EventOp,
    key: impl Fn(&T) -> K,
) {
    let k = key(&item);
    let pos = list.iter().position(|x| key(x) == k);
    match (op, pos) {
        (EventOp::Deleted, Some(i)) => {
            list.remove(i);
        }
        (EventOp::Deleted, None) => {}
        (_, Some(i)) => list[i] = item,
        (_, None) => list.push(item),
    }
}
