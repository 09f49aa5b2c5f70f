//! The test guest's files: an in-memory store from absolute path to bytes
//! and mode, bounded in total bytes and in count, so file streams can be
//! tested end to end without a filesystem. Writes in progress reserve their
//! bytes as they arrive (a [`Reservation`], released when dropped), so
//! partial writes count against the bound too; a write replaces its file
//! whole only when it is committed.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::Cell;
use core::ops::Bound;

/// Most bytes the store holds, stored and being written together.
pub const STORE_BYTES: usize = 16 << 20;
/// Most files the store holds.
pub const MAX_FILES: usize = 256;
/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Mode of a file written without one.
pub const DEFAULT_MODE: u32 = 0o644;

/// A stored file. Readers hold its bytes by `Rc`, so a file replaced while
/// it is read out is read whole, as an open file that was renamed over.
#[derive(Debug, Clone)]
pub struct File {
    pub data: Rc<Vec<u8>>,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
}

/// Why a file operation failed, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// No file at the path.
    NotFound(String),
    /// The path cannot name a file: relative, a directory, too long.
    Invalid(String),
    /// The store is full (bytes or files).
    NoSpace(String),
}

impl FileError {
    /// The message, for a stream error or a command's stderr.
    pub fn message(&self) -> &str {
        match self {
            FileError::NotFound(m) | FileError::Invalid(m) | FileError::NoSpace(m) => m,
        }
    }
}

/// Bytes a write in progress holds against the store's bound; given back
/// when dropped (the write ended, failed, or its connection closed).
#[derive(Debug)]
pub struct Reservation {
    bytes: usize,
    pool: Rc<Cell<usize>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.set(self.pool.get() - self.bytes);
    }
}

/// The in-memory file store.
#[derive(Debug)]
pub struct FileStore {
    files: BTreeMap<String, File>,
    /// Bytes of the stored files.
    stored: usize,
    /// Bytes reserved by writes in progress.
    reserved: Rc<Cell<usize>>,
    cap: usize,
    max_files: usize,
}

impl Default for FileStore {
    fn default() -> Self {
        FileStore::new(STORE_BYTES, MAX_FILES)
    }
}

/// The canonical form of absolute `path` (no `.`, `..` or empty
/// components), or why it cannot name a file.
pub fn normalize(path: &str) -> Result<String, FileError> {
    if !path.starts_with('/') {
        return Err(FileError::Invalid(format!(
            "path must be absolute: {path:?}"
        )));
    }
    if path.ends_with('/') {
        return Err(FileError::Invalid(format!(
            "path names a directory (ends in /): {path:?}"
        )));
    }
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(FileError::Invalid(format!(
            "path too long or holding a NUL byte ({} bytes)",
            path.len()
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return Err(FileError::Invalid(format!("is a directory: {path:?}")));
    }
    let mut out = String::with_capacity(path.len());
    for part in parts {
        out.push('/');
        out.push_str(part);
    }
    Ok(out)
}

impl FileStore {
    /// An empty store of at most `cap` bytes and `max_files` files.
    pub fn new(cap: usize, max_files: usize) -> Self {
        FileStore {
            files: BTreeMap::new(),
            stored: 0,
            reserved: Rc::new(Cell::new(0)),
            cap,
            max_files,
        }
    }

    /// Bytes of the stored files.
    pub fn stored_bytes(&self) -> usize {
        self.stored
    }

    /// Bytes reserved by writes in progress.
    pub fn reserved_bytes(&self) -> usize {
        self.reserved.get()
    }

    /// Number of stored files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is stored.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file at `path`.
    pub fn get(&self, path: &str) -> Result<&File, FileError> {
        let key = normalize(path)?;
        if let Some(file) = self.files.get(&key) {
            return Ok(file);
        }
        self.check_no_directory(&key)?;
        Err(FileError::NotFound(format!("no such file: {path:?}")))
    }

    /// Checks a write to `path` can start; its canonical path.
    pub fn check_writable(&self, path: &str) -> Result<String, FileError> {
        let key = normalize(path)?;
        self.check_no_directory(&key)?;
        self.check_parents(&key)?;
        if !self.files.contains_key(&key) && self.files.len() >= self.max_files {
            return Err(self.no_files_left());
        }
        Ok(key)
    }

    /// A reservation of no bytes yet, for a write that starts.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            bytes: 0,
            pool: self.reserved.clone(),
        }
    }

    /// Grows `res`, the reservation of a write to canonical `key`, by
    /// `more` bytes, if the store has room for them once `key`'s current
    /// file is replaced.
    pub fn reserve(&self, key: &str, res: &mut Reservation, more: usize) -> Result<(), FileError> {
        let replaced = self.files.get(key).map_or(0, |f| f.data.len());
        let wanted = (self.stored - replaced)
            .saturating_add(self.reserved.get())
            .saturating_add(more);
        if wanted > self.cap {
            return Err(self.no_bytes_left());
        }
        res.bytes += more;
        self.reserved.set(self.reserved.get() + more);
        Ok(())
    }

    /// Puts `data` at canonical `key` with `mode`, replacing what was
    /// there; `res` (the write's reservation) is given back. Its size.
    pub fn commit(
        &mut self,
        key: &str,
        mut data: Vec<u8>,
        mode: u32,
        res: Reservation,
    ) -> Result<u64, FileError> {
        drop(res);
        // Hold no more than is counted.
        data.shrink_to_fit();
        self.check_no_directory(key)?;
        self.check_parents(key)?;
        let replaced = self.files.get(key).map(|f| f.data.len());
        if replaced.is_none() && self.files.len() >= self.max_files {
            return Err(self.no_files_left());
        }
        let stored = self.stored - replaced.unwrap_or(0) + data.len();
        if stored.saturating_add(self.reserved.get()) > self.cap {
            return Err(self.no_bytes_left());
        }
        let size = data.len() as u64;
        let file = File {
            data: Rc::new(data),
            mode: mode & 0o7777,
        };
        self.files.insert(key.to_string(), file);
        self.stored = stored;
        Ok(size)
    }

    /// Refuses canonical `key` when files are stored under it.
    fn check_no_directory(&self, key: &str) -> Result<(), FileError> {
        let dir = format!("{key}/");
        let below = self
            .files
            .range::<str, _>((Bound::Included(dir.as_str()), Bound::Unbounded));
        match below.map(|(k, _)| k).next() {
            Some(k) if k.starts_with(&dir) => {
                Err(FileError::Invalid(format!("is a directory: {key:?}")))
            }
            _ => Ok(()),
        }
    }

    /// Refuses canonical `key` when one of its parents is a file.
    fn check_parents(&self, key: &str) -> Result<(), FileError> {
        for (at, _) in key.match_indices('/').skip(1) {
            let parent = &key[..at];
            if self.files.contains_key(parent) {
                return Err(FileError::Invalid(format!(
                    "not a directory: {parent:?} (in {key:?})"
                )));
            }
        }
        Ok(())
    }

    fn no_bytes_left(&self) -> FileError {
        FileError::NoSpace(format!(
            "no space left in the test guest's file store ({} bytes at most)",
            self.cap
        ))
    }

    fn no_files_left(&self) -> FileError {
        FileError::NoSpace(format!(
            "no space left in the test guest's file store ({} files at most)",
            self.max_files
        ))
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
