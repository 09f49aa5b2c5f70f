//! Files into and out of a VM (an extension of the contract):
//! `PUT|GET /v1/vms/{id}/files?path=ABS[&mode=OCTAL]`, and the socket's
//! `writeFile` / `readFile`.

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Longest guest path accepted (Linux's PATH_MAX).
pub const MAX_GUEST_PATH: usize = 4096;

/// Which file, and for a write its mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequest {
    /// An absolute path in the guest.
    pub path: String,
    /// A written file's permission bits (0o644 when absent), as a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// What a finished write or read moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMoved {
    pub path: String,
    pub bytes: u64,
}

/// A file about to be read: its size and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub size: u64,
    pub mode: u32,
}

impl FileRequest {
    /// Checks the path (absolute, no NUL, at most [`MAX_GUEST_PATH`]
    /// bytes, not a directory's name) and the mode (at most 0o7777).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let path = &self.path;
        if !path.starts_with('/') {
            return Err(ValidationError::new(
                "path",
                "must be an absolute path in the guest",
            ));
        }
        if path.len() > MAX_GUEST_PATH {
            return Err(ValidationError::new(
                "path",
                format!("at most {MAX_GUEST_PATH} bytes"),
            ));
        }
        if path.contains('\0') {
            return Err(ValidationError::new("path", "must not contain a NUL byte"));
        }
        if path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..") {
            return Err(ValidationError::new(
                "path",
                "names a directory, not a file",
            ));
        }
        if self.mode.is_some_and(|m| m > 0o7777) {
            return Err(ValidationError::new("mode", "at most 0o7777 (07777)"));
        }
        Ok(())
    }

    /// Reads the HTTP query: `path`, and `mode` in octal (`0644` or `644`).
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<FileRequest, ValidationError> {
        let mut path = None;
        let mut mode = None;
        for (name, value) in pairs {
            match name {
                "path" => path = Some(value.to_string()),
                "mode" => {
                    let digits = value.trim_start_matches("0o");
                    mode = Some(u32::from_str_radix(digits, 8).map_err(|_| {
                        ValidationError::new("mode", "must be octal permission bits, e.g. 0644")
                    })?);
                }
                other => {
                    return Err(ValidationError::new(
                        other.to_string(),
                        "unknown query parameter (path, mode)",
                    ));
                }
            }
        }
        let path = path.ok_or_else(|| ValidationError::new("path", "required"))?;
        let req = FileRequest { path, mode };
        req.validate()?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_files_and_modes_octal() {
        let ok = FileRequest::from_query([("path", "/a/b.txt"), ("mode", "0755")]).unwrap();
        assert_eq!(ok.mode, Some(0o755));
        let field = |q: &[(&str, &str)]| {
            FileRequest::from_query(q.iter().copied())
                .unwrap_err()
                .field
        };
        assert_eq!(field(&[("path", "a/b")]), "path");
        assert_eq!(field(&[("path", "/a/")]), "path");
        assert_eq!(field(&[("path", "/a/..")]), "path");
        assert_eq!(field(&[]), "path");
        assert_eq!(field(&[("path", "/a"), ("mode", "9")]), "mode");
        assert_eq!(field(&[("path", "/a"), ("mode", "17777")]), "mode");
        assert_eq!(field(&[("path", "/a"), ("x", "1")]), "x");
        let long = format!("/{}", "a".repeat(MAX_GUEST_PATH));
        assert_eq!(field(&[("path", long.as_str())]), "path");
    }
}
