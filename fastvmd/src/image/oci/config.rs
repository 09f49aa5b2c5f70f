//! What an image says about itself (its config blob): how a command runs
//! in it by default — `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User` —
//! the platform it was built for, and the digest of each layer's tar
//! (`rootfs.diff_ids`), which every layer read is checked against.

use serde::Deserialize;

use super::ImportError;

/// The defaults exec uses in a VM of the image, kept in its metadata (the
/// shape the socket shows them in).
pub use fastvm_proto::api::ImageRunDefaults as RunDefaults;

/// The parts of an image config that the import uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Run defaults.
    pub run: RunDefaults,
    /// The sha256 of each layer's uncompressed tar, in order (`sha256:<hex>`),
    /// when the config lists them.
    pub diff_ids: Vec<String>,
}

/// The config blob as JSON (fields as Docker and OCI spell them).
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RawRun>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRun {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses a config blob; refuses an image for another OS or CPU.
pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ImportError> {
    let raw: RawConfig = serde_json::from_slice(bytes)
        .map_err(|e| ImportError::Malformed(format!("the image config: {e}")))?;
    if let Some(os) = raw.os.as_deref().filter(|os| *os != "linux") {
        return Err(ImportError::Platform(format!(
            "the image is for {os}, not linux"
        )));
    }
    if let Some(arch) = raw
        .architecture
        .as_deref()
        .filter(|a| !matches!(*a, "amd64" | "x86_64"))
    {
        return Err(ImportError::Platform(format!(
            "the image is for {arch}; FastVM guests are amd64 (x86_64)"
        )));
    }
    let run = raw.config.unwrap_or_default();
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ImageConfig {
        run: RunDefaults {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: nonempty(run.working_dir),
            user: nonempty(run.user),
        },
        diff_ids: raw.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_defaults_and_diff_ids_are_read_and_nulls_are_absent() {
        let c = parse(
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/app"],
                "Cmd":null,"Env":["PATH=/bin","A=b"],"WorkingDir":"","User":"1000:1000"},
                "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
        )
        .unwrap();
        assert_eq!(c.run.entrypoint, ["/bin/app"]);
        assert!(c.run.cmd.is_empty());
        assert_eq!(c.run.env, ["PATH=/bin", "A=b"]);
        assert_eq!(c.run.working_dir, None);
        assert_eq!(c.run.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.diff_ids, ["sha256:aa"]);
    }

    #[test]
    fn another_platform_is_refused_by_name() {
        let err = parse(br#"{"architecture":"arm64","os":"linux"}"#).unwrap_err();
        assert!(err.to_string().contains("arm64"), "{err}");
        let err = parse(br#"{"os":"windows"}"#).unwrap_err();
        assert!(err.to_string().contains("windows"), "{err}");
        assert!(matches!(parse(b"[1,2"), Err(ImportError::Malformed(_))));
    }
}
