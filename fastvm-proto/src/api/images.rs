//! Named images as the local socket shows them (`listImages`,
//! `importImage`): not part of `openapi.yaml`. The daemon keeps each
//! image's metadata in its cache (`image.json`); [`ImageSummary`] has the
//! same members, so that file reads as one, but the daemon fills `source`
//! with a file name only: no host path leaves the daemon.

use serde::{Deserialize, Serialize};

/// How commands run in a VM of the image unless an exec says otherwise
/// (the image config's `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRunDefaults {
    /// Prefixed to every command.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The command when none is given.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `NAME=value` entries, under the exec's own.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory, when the image sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User (`name`, `uid`, `uid:gid`...), when the image sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One named image: what createVM's `image` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    /// The image's name (see [`crate::api::check_image_name`]).
    pub name: String,
    /// What it was imported from: the archive's or layout's file name
    /// (without its directories), or `standard input`.
    pub source: String,
    /// Layers applied.
    pub layers: u64,
    /// Size of its root file system (sparse), bytes: a VM's disk is at
    /// least this, rounded up to whole GiB.
    pub rootfs_bytes: u64,
    /// How commands run in it by default.
    #[serde(default)]
    pub run: ImageRunDefaults,
    /// When it was imported, Unix milliseconds.
    pub created_ms: i64,
}

/// The answer to `listImages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    /// Every named image, by name.
    pub images: Vec<ImageSummary>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wire_names_and_the_cache_file_read_as_a_summary() {
        let image = ImageSummary {
            name: "demo".into(),
            source: "app.tar".into(),
            layers: 2,
            rootfs_bytes: 10 << 30,
            run: ImageRunDefaults {
                cmd: vec!["/app/hello".into()],
                working_dir: Some("/app".into()),
                ..ImageRunDefaults::default()
            },
            created_ms: 1_700_000_000_000,
        };
        let list = ImageList {
            images: vec![image.clone()],
        };
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"images": [{
                "name": "demo", "source": "app.tar", "layers": 2,
                "rootfsBytes": 10u64 << 30, "createdMs": 1_700_000_000_000i64,
                "run": {"entrypoint": [], "cmd": ["/app/hello"], "env": [], "workingDir": "/app"},
            }]})
        );
        // An image.json as the import writes it.
        let on_disk = json!({
            "name": "demo", "source": "/srv/in/app.tar", "layers": 2,
            "rootfsBytes": 10u64 << 30, "createdMs": 1_700_000_000_000i64,
            "run": {"entrypoint": [], "cmd": ["/app/hello"], "env": [],
                    "workingDir": "/app", "user": null},
        });
        let read: ImageSummary = serde_json::from_value(on_disk).unwrap();
        assert_eq!(
            read,
            ImageSummary {
                source: "/srv/in/app.tar".into(),
                ..image
            }
        );
    }
}
