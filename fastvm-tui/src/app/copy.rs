//! The file-copy action on the selected VM: a form (direction, local path,
//! VM path) checked before anything is sent, then a small progress overlay
//! while the copy runs on a connection of its own (bytes moved of the
//! total, MiB/s). Esc cancels a running copy; its outcome, or the daemon's
//! error, goes to the status line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fastvm_proto::api::{FileRequest, Uuid, VmStatus};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::keys::edit;
use super::{App, Mode, TextInput};
use crate::client::{Command, CopyDirection, CopyEvent, CopyRequest, destination};

/// The copy form's fields, in focus order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyField {
    /// Into or out of the VM.
    Direction,
    /// The local file (or, for a download, a directory to put it in).
    Local,
    /// The absolute path in the VM.
    Guest,
}

impl CopyField {
    /// Every field, in focus order.
    pub const ALL: [CopyField; 3] = [CopyField::Direction, CopyField::Local, CopyField::Guest];
}

/// The copy form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyForm {
    /// The VM's id.
    pub vm_id: Uuid,
    /// The VM's name, for titles and messages.
    pub vm_name: String,
    /// Which way.
    pub direction: CopyDirection,
    /// Local path field.
    pub local: TextInput,
    /// VM path field.
    pub guest: TextInput,
    /// Focused field.
    pub focus: CopyField,
    /// Why the last submit was refused.
    pub error: Option<String>,
}

impl CopyForm {
    /// An empty form for a copy into the VM, the local path focused.
    pub fn new(vm_id: Uuid, vm_name: String) -> CopyForm {
        CopyForm {
            vm_id,
            vm_name,
            direction: CopyDirection::Upload,
            local: TextInput::default(),
            guest: TextInput::default(),
            focus: CopyField::Local,
            error: None,
        }
    }

    /// Moves focus to the next (`forward`) or previous field.
    pub fn cycle_focus(&mut self, forward: bool) {
        let n = CopyField::ALL.len();
        let i = CopyField::ALL
            .iter()
            .position(|f| *f == self.focus)
            .unwrap_or(0);
        let next = if forward { i + 1 } else { i + n - 1 };
        self.focus = CopyField::ALL[next % n];
    }

    /// The focused text field, if the focus is on one.
    pub fn focused_input(&mut self) -> Option<&mut TextInput> {
        match self.focus {
            CopyField::Local => Some(&mut self.local),
            CopyField::Guest => Some(&mut self.guest),
            CopyField::Direction => None,
        }
    }

    /// The copy this form describes, or why it cannot run: the VM path
    /// must be an absolute file path, an upload's local file must exist,
    /// and a download's local directory too (an existing directory takes
    /// the file under its name in the VM).
    pub fn request(&self) -> Result<CopyRequest, String> {
        let guest = self.guest.text.trim();
        if guest.is_empty() {
            return Err("VM path: type the file's absolute path in the VM, e.g. /tmp/file".into());
        }
        if !guest.starts_with('/') {
            return Err(format!(
                "VM path: {guest:?} is not absolute; it must start with /"
            ));
        }
        let checked = FileRequest {
            path: guest.to_string(),
            mode: None,
        };
        checked
            .validate()
            .map_err(|e| format!("VM path: {}", e.message))?;
        let typed = self.local.text.trim();
        if typed.is_empty() {
            return Err("local path: type a path on this machine".into());
        }
        let local = expand_home(typed);
        let local = match self.direction {
            CopyDirection::Upload => {
                check_upload_source(&local)?;
                local
            }
            CopyDirection::Download => {
                let target = destination(&local, guest);
                check_download_target(&target)?;
                target
            }
        };
        Ok(CopyRequest {
            direction: self.direction,
            vm_id: self.vm_id.to_string(),
            local,
            guest: guest.to_string(),
        })
    }
}

/// `~` and `~/...` as under `$HOME`; anything else as typed.
fn expand_home(typed: &str) -> PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    match (typed.strip_prefix('~'), home) {
        (Some(""), Some(home)) => PathBuf::from(home),
        (Some(rest), Some(home)) if rest.starts_with('/') => {
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(typed),
    }
}

/// An upload's local file must be an existing regular file.
fn check_upload_source(local: &Path) -> Result<(), String> {
    let shown = local.display();
    match std::fs::metadata(local) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("local path: {shown} does not exist"))
        }
        Err(e) => Err(format!("local path: {shown}: {e}")),
        Ok(m) if m.is_dir() => Err(format!(
            "local path: {shown} is a directory; one file is copied at a time"
        )),
        Ok(m) if !m.is_file() => Err(format!("local path: {shown} is not a regular file")),
        Ok(_) => Ok(()),
    }
}

/// A download's target must be in an existing directory and not be one.
fn check_download_target(target: &Path) -> Result<(), String> {
    if target.is_dir() {
        return Err(format!(
            "local path: {} is a directory of that name",
            target.display()
        ));
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "local path: the directory {} does not exist",
            dir.display()
        ));
    }
    Ok(())
}

/// A running copy, as the progress overlay shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyView {
    /// The copy whose reports this overlay shows.
    pub session: u64,
    /// The VM's name.
    pub vm_name: String,
    /// What is copied where.
    pub request: CopyRequest,
    /// The daemon accepted the copy.
    pub started: bool,
    /// Bytes to move, once known.
    pub total: Option<u64>,
    /// Bytes moved so far.
    pub bytes: u64,
    /// Time since the copy began, as last reported.
    pub elapsed: Duration,
}

impl CopyView {
    /// `into web:/tmp/x` or `out of web:/tmp/x`.
    pub fn what(&self) -> String {
        format!(
            "{} {}:{}",
            self.request.direction.preposition(),
            self.vm_name,
            self.request.guest
        )
    }

    /// The fraction moved, when the total is known (1 for an empty file).
    pub fn ratio(&self) -> Option<f64> {
        match self.total? {
            0 => Some(1.0),
            t => Some((self.bytes as f64 / t as f64).clamp(0.0, 1.0)),
        }
    }

    /// `1.5 MiB of 4.0 MiB · 3.2 MiB/s` (parts that are not known yet left out).
    pub fn progress_text(&self) -> String {
        let mut text = format_bytes(self.bytes);
        if let Some(total) = self.total {
            text.push_str(&format!(" of {}", format_bytes(total)));
        }
        if let Some(rate) = format_rate(self.bytes, self.elapsed) {
            text.push_str(&format!(" · {rate}"));
        }
        text
    }
}

/// Bytes in the largest binary unit that keeps a whole part: `512 B`,
/// `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The rate of `bytes` over `elapsed` in MiB/s; none before a first tenth
/// of a second has passed (too short to say).
pub fn format_rate(bytes: u64, elapsed: Duration) -> Option<String> {
    let secs = elapsed.as_secs_f64();
    (secs >= 0.1).then(|| format!("{:.1} MiB/s", bytes as f64 / (1 << 20) as f64 / secs))
}

impl App {
    /// Opens the copy form on the selected VM (which must be running).
    pub(super) fn open_copy_form(&mut self) {
        let Some((id, name)) = self.vm_for_action() else {
            return;
        };
        if self.vm(id).is_some_and(|vm| vm.status != VmStatus::Running) {
            self.error(format!(
                "{name} is not running; copying files needs a running VM"
            ));
            return;
        }
        self.mode = Mode::CopyForm(CopyForm::new(id, name));
    }

    /// A key in the copy form.
    pub(super) fn copy_form_key(&mut self, mut form: CopyForm, key: KeyEvent) -> Vec<Command> {
        let toggles = matches!(
            key.code,
            KeyCode::Left | KeyCode::Right | KeyCode::Char(' ')
        );
        match key.code {
            KeyCode::Esc => return Vec::new(),
            KeyCode::Enter => match form.request() {
                Ok(request) => return self.start_copy(form.vm_name, request),
                Err(e) => form.error = Some(e),
            },
            KeyCode::Tab | KeyCode::Down => form.cycle_focus(true),
            KeyCode::BackTab | KeyCode::Up => form.cycle_focus(false),
            _ if toggles && form.focus == CopyField::Direction => {
                form.direction = form.direction.toggled();
                form.error = None;
            }
            _ => {
                if let Some(input) = form.focused_input() {
                    edit(input, &key);
                }
            }
        }
        self.mode = Mode::CopyForm(form);
        Vec::new()
    }

    /// Opens the progress overlay and starts the copy.
    fn start_copy(&mut self, vm_name: String, request: CopyRequest) -> Vec<Command> {
        self.copy_sessions += 1;
        let session = self.copy_sessions;
        self.mode = Mode::Copy(CopyView {
            session,
            vm_name,
            request: request.clone(),
            started: false,
            total: None,
            bytes: 0,
            elapsed: Duration::ZERO,
        });
        vec![Command::StartCopy { session, request }]
    }

    /// A key while a copy runs: Esc (or Ctrl-C) cancels it.
    pub(super) fn copy_key(&mut self, view: CopyView, key: KeyEvent) -> Vec<Command> {
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if key.code != KeyCode::Esc && !ctrl_c {
            self.mode = Mode::Copy(view);
            return Vec::new();
        }
        let left = match view.request.direction {
            CopyDirection::Upload => "nothing written in the VM",
            CopyDirection::Download => "nothing written locally",
        };
        self.info(format!("copy {} cancelled; {left}", view.what()));
        vec![Command::CancelCopy]
    }

    /// A report of copy `session`; ignored unless its overlay is open (a
    /// cancelled copy's last reports).
    pub(super) fn on_copy_event(&mut self, session: u64, event: CopyEvent) {
        let view = match &mut self.mode {
            Mode::Copy(view) if view.session == session => view,
            _ => return,
        };
        match event {
            CopyEvent::Started { total } => {
                view.started = true;
                view.total = total;
            }
            CopyEvent::Progress { bytes, elapsed } => {
                view.bytes = bytes;
                view.elapsed = elapsed;
            }
            CopyEvent::Done { bytes, elapsed } => {
                let what = view.what();
                let local = view.request.local.display().to_string();
                let rate =
                    format_rate(bytes, elapsed).map_or_else(String::new, |r| format!(", {r}"));
                let (from, to) = match view.request.direction {
                    CopyDirection::Upload => (format!("{local} "), String::new()),
                    CopyDirection::Download => (String::new(), format!(" to {local}")),
                };
                self.mode = Mode::Normal;
                self.info(format!(
                    "copied {from}{what}{to}: {} ({bytes} bytes) in {:.1} s{rate}",
                    format_bytes(bytes),
                    elapsed.as_secs_f64()
                ));
            }
            CopyEvent::Failed(why) => {
                let what = view.what();
                self.mode = Mode::Normal;
                self.error(format!("copy {what} failed: {why}"));
            }
        }
    }
}
