//! What file streams share: the paths they accept (absolute, no NUL) and
//! their failures in words, with the `StreamError` kind the host turns into
//! a status (missing: `notFound`; a path that cannot name such a file:
//! `invalid`; anything else: `failed`).

use std::io;
use std::path::Path;

use fastvm_proto::agent::StreamErrorKind;

/// A failure of a file stream: its kind and what went wrong.
pub type Failure = (StreamErrorKind, String);

/// `path` if a file stream may use it: absolute and without NUL.
pub fn checked_path(path: &str) -> Result<&Path, Failure> {
    let invalid = |why: String| (StreamErrorKind::Invalid, why);
    if path.contains('\0') {
        return Err(invalid(format!("the path {path:?} contains a NUL byte")));
    }
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "the path {path:?} is not absolute (it must start with /)"
        )));
    }
    Ok(Path::new(path))
}

/// `path` if it may name a file to write: also ending in a file name.
pub fn checked_file_path(path: &str) -> Result<&Path, Failure> {
    let checked = checked_path(path)?;
    if path.ends_with('/') || checked.file_name().is_none() {
        return Err((
            StreamErrorKind::Invalid,
            format!("the path {path} names a directory, not a file"),
        ));
    }
    Ok(checked)
}

/// `e`, met while `doing` (`"writing"`, `"reading"`) `path`, in words.
pub fn io_failure(e: &io::Error, doing: &str, path: &str) -> Failure {
    use StreamErrorKind::{Failed, Invalid, NotFound};
    let Some(errno) = e.raw_os_error() else {
        return (Failed, format!("{doing} {path}: {e}"));
    };
    match errno {
        libc::ENOENT => (NotFound, format!("no such file or directory: {path}")),
        libc::EISDIR => (Invalid, format!("{path} is a directory")),
        libc::ENOTDIR => (Invalid, format!("a parent of {path} is not a directory")),
        libc::EINVAL => (Invalid, format!("invalid argument {doing} {path}")),
        libc::ENAMETOOLONG => (Invalid, format!("the path {path} is too long")),
        libc::ELOOP => (Invalid, format!("too many symbolic links in {path}")),
        libc::ENOSPC => (
            Failed,
            format!("no space left on the guest's disk {doing} {path}"),
        ),
        libc::EDQUOT => (Failed, format!("disk quota exceeded {doing} {path}")),
        libc::EACCES | libc::EPERM => (Failed, format!("permission denied {doing} {path}")),
        libc::EROFS => (
            Failed,
            format!("the guest's file system is read-only {doing} {path}"),
        ),
        libc::EIO => (
            Failed,
            format!("I/O error on the guest's disk {doing} {path}"),
        ),
        _ => (Failed, format!("{doing} {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_name_a_file() {
        assert!(checked_path("/a/b").is_ok());
        assert_eq!(checked_path("a/b").unwrap_err().0, StreamErrorKind::Invalid);
        assert_eq!(
            checked_path("/a\0b").unwrap_err().0,
            StreamErrorKind::Invalid
        );
        assert!(checked_path("/").is_ok());
        assert_eq!(
            checked_file_path("/").unwrap_err().0,
            StreamErrorKind::Invalid
        );
        assert_eq!(
            checked_file_path("/a/").unwrap_err().0,
            StreamErrorKind::Invalid
        );
        assert_eq!(
            checked_file_path("/a/..").unwrap_err().0,
            StreamErrorKind::Invalid
        );
        assert!(checked_file_path("/a/b.txt").is_ok());
    }

    #[test]
    fn errors_map_to_kinds_and_words() {
        let err = |errno| io_failure(&io::Error::from_raw_os_error(errno), "writing", "/x/y");
        assert_eq!(err(libc::ENOENT).0, StreamErrorKind::NotFound);
        assert_eq!(err(libc::EISDIR).0, StreamErrorKind::Invalid);
        assert_eq!(err(libc::ENOTDIR).0, StreamErrorKind::Invalid);
        assert_eq!(
            err(libc::ENOSPC),
            (
                StreamErrorKind::Failed,
                "no space left on the guest's disk writing /x/y".into()
            )
        );
        assert_eq!(err(libc::EACCES).0, StreamErrorKind::Failed);
        assert_eq!(err(libc::EIO).0, StreamErrorKind::Failed);
    }
}
