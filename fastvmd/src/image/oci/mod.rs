//! Container images read into a root file system tree: a `docker save`
//! archive or an OCI image layout, as a directory or a tar; layers plain,
//! gzip or zstd (told apart by their first bytes, whatever the manifest
//! says), each checked against the digest the image config lists for it
//! (`rootfs.diff_ids`), so a truncated or altered layer is refused.
//!
//! [`unpack`] leaves the tree and its guest attributes ([`layers::Tree`])
//! and the image's run defaults ([`config::RunDefaults`]) for the file
//! system step. Anything wrong — not an image, another platform, a layer
//! that escapes the root, a broken tar — is an [`ImportError`] that says
//! what, and the caller removes the work directory: nothing half made is
//! left.

pub mod archive;
pub mod config;
pub mod ext4;
pub mod layers;
pub mod layout;
pub mod resolve;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use layers::{ApplyError, Tree};

/// Why an image could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is not a container image.
    #[error("not a container image: {0}")]
    NotAnImage(String),
    /// The image's JSON is not what the formats say.
    #[error("malformed image: {0}")]
    Malformed(String),
    /// The image is for another OS or CPU.
    #[error("{0}")]
    Platform(String),
    /// A layer could not be applied.
    #[error("layer {index} of {count} ({name}): {why}")]
    Layer {
        index: usize,
        count: usize,
        name: String,
        why: String,
    },
    /// The input or the work directory could not be read or written.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

/// How far an import is: layer `index` of `count` (from 1) is next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub index: usize,
    pub count: usize,
    /// The layer's name in the archive (its digest, or its path).
    pub name: String,
    /// Its size as stored (compressed).
    pub bytes: u64,
}

/// What an import produced.
pub struct Unpacked {
    /// The tree and its guest attributes.
    pub tree: Tree,
    /// How commands run in the image by default.
    pub run: config::RunDefaults,
    /// Layers applied.
    pub layers: usize,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ImportError {
    let what = what.into();
    move |source| ImportError::Io { what, source }
}

/// Reads the image at `input` (a directory, or a tar file of one) into a
/// new tree at `work/rootfs`; a tar input is unpacked into `work/archive`
/// first. `work` must exist and be private to the caller; the caller
/// removes it when this fails.
pub fn unpack(
    input: &Path,
    work: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Unpacked, ImportError> {
    let meta = fs::metadata(input).map_err(io_error(input.display().to_string()))?;
    let dir = if meta.is_dir() {
        input.to_path_buf()
    } else {
        let archive = work.join("archive");
        let file = fs::File::open(input).map_err(io_error(input.display().to_string()))?;
        Tree::create(&archive)
            .map_err(io_error("the work directory"))?
            .apply(BufReader::new(file))
            .map_err(|e| ImportError::NotAnImage(format!("not a readable tar archive: {e}")))?;
        archive
    };
    let found = layout::find(&dir)?;
    let image = config::parse(&found.config)?;
    let count = found.layers.len();
    if !image.diff_ids.is_empty() && image.diff_ids.len() != count {
        return Err(ImportError::Malformed(format!(
            "the config lists {} layer digests for {count} layers",
            image.diff_ids.len()
        )));
    }
    let mut tree = Tree::create(&work.join("rootfs")).map_err(io_error("the work directory"))?;
    for (i, (path, name)) in found.layers.iter().enumerate() {
        let failed = |why: String| ImportError::Layer {
            index: i + 1,
            count,
            name: name.clone(),
            why,
        };
        let bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        progress(&Progress {
            index: i + 1,
            count,
            name: name.clone(),
            bytes,
        });
        let file = fs::File::open(path).map_err(|e| failed(e.to_string()))?;
        let mut stream = Hashing::new(decompressed(file).map_err(|e| failed(e.to_string()))?);
        tree.apply(&mut stream)
            .map_err(|e| failed(apply_error_text(e)))?;
        // The tar may end before its last padding: the digest covers all.
        io::copy(&mut stream, &mut io::sink()).map_err(|e| failed(e.to_string()))?;
        if let Some(expected) = image.diff_ids.get(i) {
            let actual = stream.digest();
            if &actual != expected {
                return Err(failed(format!(
                    "its content is not what the image lists (sha256 {actual}, expected \
                     {expected}): the archive is damaged or altered"
                )));
            }
        }
    }
    Ok(Unpacked {
        tree,
        run: image.run,
        layers: count,
    })
}

fn apply_error_text(e: ApplyError) -> String {
    match e {
        ApplyError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("the tar ends early (truncated?): {e}")
        }
        other => other.to_string(),
    }
}

/// The layer's tar stream: gzip and zstd are undone, told by magic bytes.
fn decompressed(file: fs::File) -> io::Result<Box<dyn Read>> {
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader)?)
    } else {
        Box::new(reader)
    })
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read so far.
    fn digest(&self) -> String {
        spelled(&self.hasher.clone().finalize())
    }
}

/// A sha256 hash as images spell digests: `sha256:<hex>`.
fn spelled(hash: &[u8]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The digest of `bytes` as images spell it (`sha256:<hex>`).
pub fn digest_of(bytes: &[u8]) -> String {
    spelled(&Sha256::digest(bytes))
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
