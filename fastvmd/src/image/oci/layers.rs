//! Applying an image's layers, in order, to a tree on the host: each layer
//! is a tar whose entries add or replace files, and whose whiteouts delete
//! what lower layers added (`.wh.NAME` removes `NAME`; `.wh..wh..opq` empties
//! its directory of everything below this layer).
//!
//! The tree holds the files' contents only, private to the host user
//! (files 0600, directories 0700, devices and FIFOs as empty placeholders):
//! what the guest will see — modes with their set-id bits, owners, extended
//! attributes, device numbers — is kept beside it in [`Tree::meta`], for
//! the file system step to set. So no layer can put a set-uid binary or a
//! device node on the host, and applying needs no privilege.
//!
//! Every entry is placed through [`super::resolve`]: a name with `..`, or a
//! path that a link would take above the image root, is refused.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tar::EntryType;

use super::resolve::{ResolveError, entry_components, resolve};

/// What an entry is, in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
}

/// An entry's attributes in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits with set-uid, set-gid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Extended attributes (`security.capability`, ...), name and value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    /// A directory the layers did not list but needed: 0755, root's.
    fn implied_dir() -> Meta {
        Meta {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An entry's name or a link on its way leaves the image root.
    #[error("{0}")]
    Escape(#[from] ResolveError),
    /// An entry's name holds `..`.
    #[error("entry {0:?} has a `..` in its name")]
    DotDot(String),
    /// An entry's name is not UTF-8.
    #[error("entry {0:?}: names that are not UTF-8 are not supported")]
    NotUtf8(String),
    /// A hard link names a file the layers do not hold.
    #[error("hard link {name} -> {target}: no such file in the image")]
    MissingLinkTarget { name: String, target: String },
    /// The tar is malformed or ends early, or the tree cannot be written.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The image's tree as the layers applied so far left it.
pub struct Tree {
    root: PathBuf,
    /// Guest attributes of every entry, by its path in the guest (`/etc`).
    pub meta: BTreeMap<String, Meta>,
}

/// The key of a tree path relative to the root: `/` and the path.
fn key_of(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// Removes whatever is at `path` (a directory with all it holds), without
/// following links.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Tree {
    /// A new, empty tree at `root`, which must not exist yet.
    pub fn create(root: &Path) -> io::Result<Tree> {
        fs::DirBuilder::new().mode(0o700).create(root)?;
        let mut meta = BTreeMap::new();
        meta.insert("/".to_string(), Meta::implied_dir());
        Ok(Tree {
            root: root.to_path_buf(),
            meta,
        })
    }

    /// Where the tree is on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Applies one layer (an uncompressed tar stream).
    pub fn apply(&mut self, layer: impl Read) -> Result<(), ApplyError> {
        let mut archive = tar::Archive::new(layer);
        // Entries this layer put in place: an opaque directory keeps them.
        let mut added: HashSet<String> = HashSet::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.into_owned();
            if name.to_str().is_none() {
                return Err(ApplyError::NotUtf8(name.display().to_string()));
            }
            let parts = entry_components(&name)
                .ok_or_else(|| ApplyError::DotDot(name.display().to_string()))?;
            let Some((base, parents)) = parts.split_last() else {
                self.set_root_meta(&mut entry)?;
                continue;
            };
            let base_text = base.to_string_lossy();
            if base_text == ".wh..wh..opq" {
                let dir = resolve(&self.root, parents, true)?;
                self.make_opaque(&dir, &added)?;
                continue;
            }
            if let Some(hidden) = base_text.strip_prefix(".wh.") {
                let parent = resolve(&self.root, parents, true)?;
                self.remove(&parent.join(hidden))?;
                continue;
            }
            let parent = resolve(&self.root, parents, true)?;
            self.ensure_dir(&parent, &mut added)?;
            let rel = parent.join(base);
            self.place(&mut entry, &rel)?;
            added.insert(key_of(&rel));
        }
        Ok(())
    }

    /// Makes sure directory `path` (inside the image, links followed)
    /// exists; one the layers did not make is 0755, root's.
    pub fn add_dir(&mut self, path: &str) -> Result<(), ApplyError> {
        let parts = entry_components(Path::new(path))
            .ok_or_else(|| ApplyError::DotDot(path.to_string()))?;
        let rel = resolve(&self.root, &parts, true)?;
        self.ensure_dir(&rel, &mut HashSet::new())
    }

    /// Puts a file with `content` and attributes `meta` at `path` (inside
    /// the image, links on the way followed), replacing what is there.
    pub fn add_file(&mut self, path: &str, content: &[u8], meta: Meta) -> Result<(), ApplyError> {
        let parts = entry_components(Path::new(path))
            .ok_or_else(|| ApplyError::DotDot(path.to_string()))?;
        let Some((base, parents)) = parts.split_last() else {
            return Err(ApplyError::DotDot(path.to_string()));
        };
        let parent = resolve(&self.root, parents, true)?;
        self.ensure_dir(&parent, &mut HashSet::new())?;
        let rel = parent.join(base);
        self.remove(&rel)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.root.join(&rel))?
            .write_all(content)?;
        self.meta.insert(key_of(&rel), meta);
        Ok(())
    }

    fn set_root_meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let meta = meta_of(entry, Kind::Dir)?;
        self.meta.insert("/".into(), meta);
        Ok(())
    }

    /// Creates `rel` and its missing parents as directories.
    fn ensure_dir(&mut self, rel: &Path, added: &mut HashSet<String>) -> Result<(), ApplyError> {
        let mut at = PathBuf::new();
        for part in rel.components() {
            at.push(part);
            let host = self.root.join(&at);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => remove_any(&host)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            fs::DirBuilder::new().mode(0o700).create(&host)?;
            let key = key_of(&at);
            self.meta.insert(key.clone(), Meta::implied_dir());
            added.insert(key);
        }
        Ok(())
    }

    /// Removes `rel` and everything below it, and their attributes.
    fn remove(&mut self, rel: &Path) -> io::Result<()> {
        remove_any(&self.root.join(rel))?;
        let key = key_of(rel);
        let below = format!("{key}/");
        self.meta.retain(|k, _| k != &key && !k.starts_with(&below));
        Ok(())
    }

    /// Empties directory `rel` of what lower layers put there.
    fn make_opaque(&mut self, rel: &Path, added: &HashSet<String>) -> io::Result<()> {
        let host = self.root.join(rel);
        let children = match fs::read_dir(&host) {
            Ok(children) => children,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut lower: Vec<OsString> = Vec::new();
        for child in children {
            let name = child?.file_name();
            if !added.contains(&key_of(&rel.join(&name))) {
                lower.push(name);
            }
        }
        for name in lower {
            self.remove(&rel.join(name))?;
        }
        Ok(())
    }

    /// Puts `entry` at `rel` (its parent exists and has no link in it).
    fn place<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
    ) -> Result<(), ApplyError> {
        let host = self.root.join(rel);
        let kind = entry.header().entry_type();
        let existing = fs::symlink_metadata(&host).ok();
        if !(kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir())) {
            self.remove(rel)?;
        }
        let new_file = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&host)
        };
        // Attributes first: the content is read after.
        let mut meta = meta_of(entry, Kind::File)?;
        let device = |entry: &tar::Entry<'_, R>| -> io::Result<(u32, u32)> {
            let header = entry.header();
            Ok((
                header.device_major()?.unwrap_or(0),
                header.device_minor()?.unwrap_or(0),
            ))
        };
        meta.kind = match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mut file = new_file()?;
                io::copy(entry, &mut file)?;
                Kind::File
            }
            EntryType::Directory => {
                if !host.is_dir() {
                    fs::DirBuilder::new().mode(0o700).create(&host)?;
                }
                Kind::Dir
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other("a symbolic link without a target"))?;
                symlink(target, &host)?;
                Kind::Symlink
            }
            EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other("a hard link without a target"))?
                    .into_owned();
                let parts = entry_components(&target)
                    .ok_or_else(|| ApplyError::DotDot(target.display().to_string()))?;
                let target_rel = resolve(&self.root, &parts, false)?;
                let missing = || ApplyError::MissingLinkTarget {
                    name: key_of(rel),
                    target: key_of(&target_rel),
                };
                let target_meta = self.meta.get(&key_of(&target_rel)).ok_or_else(missing)?;
                if target_meta.kind == Kind::Dir {
                    return Err(missing());
                }
                // One inode: the link has its target's attributes.
                let shared = target_meta.clone();
                fs::hard_link(self.root.join(&target_rel), &host)?;
                self.meta.insert(key_of(rel), shared);
                return Ok(());
            }
            EntryType::Char => {
                let (major, minor) = device(entry)?;
                new_file()?;
                Kind::CharDevice { major, minor }
            }
            EntryType::Block => {
                let (major, minor) = device(entry)?;
                new_file()?;
                Kind::BlockDevice { major, minor }
            }
            EntryType::Fifo => {
                new_file()?;
                Kind::Fifo
            }
            // Extension headers are read by the tar reader itself; other
            // kinds have no place in a root file system.
            _ => return Ok(()),
        };
        self.meta.insert(key_of(rel), meta);
        Ok(())
    }
}

/// The guest attributes an entry's header and PAX records give it.
fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>, kind: Kind) -> io::Result<Meta> {
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if let Ok(key) = extension.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
            }
        }
    }
    let header = entry.header();
    Ok(Meta {
        kind,
        mode: header.mode()? & 0o7777,
        // Some writers leave the owner fields empty: root's, as tar reads them.
        uid: header.uid().unwrap_or(0),
        gid: header.gid().unwrap_or(0),
        xattrs,
    })
}
