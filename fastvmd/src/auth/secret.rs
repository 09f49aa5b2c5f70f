//! The JWT signing secret: 32 random bytes in a file created with mode 0600
//! at first start (`jwt.secret` in the data directory).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Length of a newly created secret, bytes.
pub const SECRET_LEN: usize = 32;

/// Reads the secret at `path`, creating it (32 random bytes, mode 0600,
/// fsynced, published atomically so a crash never leaves a short file) if
/// it does not exist. An existing file readable or writable by group or
/// others has its mode tightened to 0600 with a warning; one shorter than
/// 32 bytes is refused (`InvalidData`).
pub fn load_or_create_secret(path: &Path) -> io::Result<Vec<u8>> {
    match read_existing(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut secret = vec![0u8; SECRET_LEN];
    getrandom::fill(&mut secret).map_err(|e| io::Error::other(e.to_string()))?;
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&secret)?;
        f.sync_all()?;
    }
    // hard_link fails if `path` appeared meanwhile: then the other writer won.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            fs::File::open(dir)?.sync_all()?;
            Ok(secret)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_existing(path),
        Err(e) => Err(e),
    }
}

fn read_existing(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "JWT secret file was accessible to others; setting mode 0600"
        );
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    let mut secret = Vec::new();
    f.read_to_end(&mut secret)?;
    if secret.len() < SECRET_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "JWT secret {} is {} bytes, need at least {SECRET_LEN}",
                path.display(),
                secret.len()
            ),
        ));
    }
    Ok(secret)
}
