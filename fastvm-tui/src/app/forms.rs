//! Text input and the create-VM form: editing state and turning it into a
//! `CreateVMRequest`. The form offers the daemon's named images
//! (`listImages`, asked for when the form opens) besides its default one.

use fastvm_proto::api::{CreateVmRequest, MachineType, SnapshotObject, SnapshotStatus, Uuid};

/// A single-line text field with a cursor (in characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextInput {
    /// The text.
    pub text: String,
    /// Cursor position, in characters from the start.
    pub cursor: usize,
}

impl TextInput {
    /// A field holding `text`, cursor at the end.
    pub fn with(text: impl Into<String>) -> TextInput {
        let text = text.into();
        TextInput {
            cursor: text.chars().count(),
            text,
        }
    }

    fn byte_at(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    /// Inserts `c` at the cursor.
    pub fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if self.cursor == 0 {
            return;
        }
        self.cursor -= 1;
        let at = self.byte_at(self.cursor);
        self.text.remove(at);
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.text.chars().count() {
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    /// Moves the cursor left by one character.
    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// Moves the cursor right by one character.
    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.text.chars().count());
    }

    /// Moves the cursor to the start.
    pub fn home(&mut self) {
        self.cursor = 0;
    }

    /// Moves the cursor to the end.
    pub fn end(&mut self) {
        self.cursor = self.text.chars().count();
    }

    /// Empties the field.
    pub fn clear(&mut self) {
        *self = TextInput::default();
    }
}

/// Where a new VM comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Boot the base image on a machine type.
    Machine(MachineType),
    /// Restore a snapshot (id, name).
    Snapshot(Uuid, String),
}

impl Source {
    /// How the form shows it.
    pub fn label(&self) -> String {
        match self {
            Source::Machine(m) => format!("{m} ({} vCPU, {} MiB)", m.vcpus(), m.memory_mib()),
            Source::Snapshot(_, name) => format!("snapshot {name}"),
        }
    }
}

/// The create-VM form's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormField {
    /// VM name (optional).
    Name,
    /// Machine type or snapshot.
    Source,
    /// The image a machine type boots: the default or a named one.
    Image,
    /// Disk size in GiB (optional).
    Disk,
}

impl FormField {
    /// Every field, in focus order.
    pub const ALL: [FormField; 4] = [
        FormField::Name,
        FormField::Source,
        FormField::Image,
        FormField::Disk,
    ];
}

/// How the form names the daemon's own image (createVM without `image`).
pub const DEFAULT_IMAGE: &str = "default";

/// The create-VM form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateForm {
    /// Name field.
    pub name: TextInput,
    /// Every choice of source: machine types, then ready snapshots.
    pub sources: Vec<Source>,
    /// Index of the chosen source.
    pub source: usize,
    /// The named images the daemon has, by name (empty until it answers).
    pub images: Vec<String>,
    /// The chosen image: 0 is [`DEFAULT_IMAGE`], `i` is `images[i - 1]`.
    pub image: usize,
    /// Disk field (GiB; empty = the default).
    pub disk: TextInput,
    /// Focused field.
    pub focus: FormField,
    /// Why the last submit was refused.
    pub error: Option<String>,
}

impl CreateForm {
    /// A form offering every machine type and the ready `snapshots`, with
    /// `preselect` (a snapshot id) chosen when given.
    pub fn new(snapshots: &[SnapshotObject], preselect: Option<Uuid>) -> CreateForm {
        let mut sources: Vec<Source> = MachineType::ALL
            .iter()
            .map(|m| Source::Machine(*m))
            .collect();
        let mut ready: Vec<&SnapshotObject> = snapshots
            .iter()
            .filter(|s| s.status == SnapshotStatus::Ready)
            .collect();
        ready.sort_by(|a, b| a.name.cmp(&b.name));
        sources.extend(ready.iter().map(|s| Source::Snapshot(s.id, s.name.clone())));
        let source = preselect
            .and_then(|id| {
                sources
                    .iter()
                    .position(|s| matches!(s, Source::Snapshot(sid, _) if *sid == id))
            })
            .unwrap_or(0);
        CreateForm {
            name: TextInput::default(),
            sources,
            source,
            images: Vec::new(),
            image: 0,
            disk: TextInput::default(),
            focus: FormField::Name,
            error: None,
        }
    }

    /// Moves focus to the next (`forward`) or previous field.
    pub fn cycle_focus(&mut self, forward: bool) {
        let i = FormField::ALL
            .iter()
            .position(|f| *f == self.focus)
            .unwrap_or(0);
        let n = FormField::ALL.len();
        self.focus = FormField::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }];
    }

    /// Chooses the next or previous source.
    pub fn cycle_source(&mut self, forward: bool) {
        let n = self.sources.len();
        if n > 0 {
            self.source = if forward {
                (self.source + 1) % n
            } else {
                (self.source + n - 1) % n
            };
        }
    }

    /// Offers the named images `names` (the `listImages` answer); the
    /// chosen one stays chosen while it is still there.
    pub fn set_images(&mut self, mut names: Vec<String>) {
        names.sort();
        names.dedup();
        let chosen = self.chosen_image().map(str::to_string);
        self.image = chosen
            .and_then(|c| names.iter().position(|n| *n == c))
            .map_or(0, |i| i + 1);
        self.images = names;
    }

    /// Chooses the next or previous image ([`DEFAULT_IMAGE`] first).
    pub fn cycle_image(&mut self, forward: bool) {
        let n = self.images.len() + 1;
        self.image = if forward {
            (self.image + 1) % n
        } else {
            (self.image + n - 1) % n
        };
    }

    /// The chosen named image; `None` for [`DEFAULT_IMAGE`].
    pub fn chosen_image(&self) -> Option<&str> {
        self.image
            .checked_sub(1)
            .and_then(|i| self.images.get(i))
            .map(String::as_str)
    }

    /// How the form shows the chosen image.
    pub fn image_label(&self) -> &str {
        self.chosen_image().unwrap_or(DEFAULT_IMAGE)
    }

    /// The focused text field, if the focus is on one.
    pub fn focused_input(&mut self) -> Option<&mut TextInput> {
        match self.focus {
            FormField::Name => Some(&mut self.name),
            FormField::Disk => Some(&mut self.disk),
            FormField::Source | FormField::Image => None,
        }
    }

    /// The request this form describes, or why it is not valid.
    pub fn request(&self) -> Result<CreateVmRequest, String> {
        let name = self.name.text.trim();
        let disk = self.disk.text.trim();
        let disk_gib = if disk.is_empty() {
            None
        } else {
            Some(
                disk.parse::<u64>()
                    .map_err(|_| format!("disk: {disk:?} is not a whole number of GiB"))?,
            )
        };
        let mut req = CreateVmRequest {
            name: (!name.is_empty()).then(|| name.to_string()),
            disk_gib,
            ..CreateVmRequest::default()
        };
        match (self.sources.get(self.source), self.chosen_image()) {
            (Some(Source::Machine(m)), image) => {
                req.machine_type = Some(*m);
                req.image = image.map(str::to_string);
            }
            (Some(Source::Snapshot(id, _)), None) => req.snapshot_id = Some(*id),
            (Some(Source::Snapshot(..)), Some(_)) => {
                return Err(format!(
                    "image: a snapshot brings its own image; choose {DEFAULT_IMAGE}"
                ));
            }
            (None, _) => return Err("no source to create from".into()),
        }
        Ok(req)
    }
}
