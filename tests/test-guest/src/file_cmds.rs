//! Built-ins that read the file store: `file-size PATH` prints the size of
//! a stored file in bytes, `file-sha256 PATH` the hex SHA-256 of its bytes
//! (so a host test checks a file it wrote without reading it back).

use alloc::format;
use alloc::string::String;

use sha2::{Digest, Sha256};

use crate::commands::{Output, print};
use crate::files::{FileError, FileStore};

/// Runs `name` (`file-size` or `file-sha256`) with `args`.
pub(crate) fn run(out: Output, name: &str, args: &[String], files: &FileStore) -> Output {
    let [path] = args else {
        return out.fail(2, &format!("test-guest: usage: {name} PATH\n"));
    };
    let file = match files.get(path) {
        Ok(file) => file,
        Err(e) => {
            let code = if matches!(e, FileError::Invalid(_)) {
                2
            } else {
                1
            };
            return out.fail(code, &format!("test-guest: {name}: {}\n", e.message()));
        }
    };
    if name == "file-size" {
        return print(out, &format!("{}", file.data.len()));
    }
    let digest = Sha256::digest(file.data.as_slice());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    print(out, &hex)
}
