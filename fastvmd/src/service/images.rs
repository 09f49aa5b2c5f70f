//! Named images on the local socket: `listImages` for every caller (images
//! are shared by all orgs), `importImage` and `deleteImage` for the admin.
//! The work is the `fastvmd image` commands' own ([`crate::image::import`]),
//! run on tokio's blocking pool: an import reads a whole archive and writes
//! a file system. What goes back names no host path but the one the admin
//! gave: a listed image's `source` is a file name, and paths in an import's
//! error are replaced by `<path>`.

use std::path::Path;

use fastvm_proto::api::{ImageList, ImageSummary, check_image_name};

use super::error::redact_paths;
use super::{Service, ServiceError};
use crate::image::import::{self, IMAGE_JSON, ImageInfo, NAMED};
use crate::image::oci::{ImportError, Progress};

/// VMs named in a 409 of `deleteImage`, at most.
const LISTED_USERS: usize = 3;

/// `name` checked as an image name (400 naming `name`).
fn check_name(name: &str) -> Result<(), ServiceError> {
    check_image_name(name).map_err(|why| ServiceError::BadRequest(format!("name: {why}")))
}

/// An image as the socket shows it.
fn summary(info: ImageInfo) -> ImageSummary {
    ImageSummary {
        source: file_name_of(&info.source),
        name: info.name,
        layers: info.layers as u64,
        rootfs_bytes: info.rootfs_bytes,
        run: info.run,
        created_ms: info.created_ms,
    }
}

/// What an image was imported from, without its directories: the
/// archive's file name (`standard input` stays as it is).
fn file_name_of(source: &str) -> String {
    match Path::new(source).file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None if !source.contains('/') => source.to_string(),
        None => "-".into(),
    }
}

/// The guest-agent every image gets as `/sbin/init`: the one `fastvmd
/// image build` made, as `fastvmd image import` takes by default.
fn agent(cache: &Path) -> Result<Vec<u8>, ServiceError> {
    let image = crate::image::Image::current(cache).map_err(|_| {
        ServiceError::Unavailable(
            "importImage: the guest-agent that every image boots comes from the Linux guest \
             image, which is not built on this host; run `fastvmd image build` first"
                .into(),
        )
    })?;
    std::fs::read(&image.agent).map_err(|e| {
        ServiceError::Internal(format!(
            "importImage: reading the guest-agent {}: {e}",
            image.agent.display()
        ))
    })
}

/// `text` with every absolute path replaced by `<path>` except `given`
/// (and paths inside it), which the caller named itself.
fn keep_only_path(text: &str, given: &str) -> String {
    const MARK: char = '\u{1}';
    let given = given.trim_end_matches('/');
    if given.is_empty() {
        return redact_paths(text);
    }
    let path_char = |c: char| c.is_alphanumeric() || "._-".contains(c);
    let mut marked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(given) {
        let end = at + given.len();
        marked.push_str(&rest[..at]);
        if rest[end..].chars().next().is_none_or(|c| !path_char(c)) {
            marked.push(MARK);
        } else {
            marked.push_str(&rest[at..end]);
        }
        rest = &rest[end..];
    }
    marked.push_str(rest);
    redact_paths(&marked).replace(MARK, given)
}

/// A failed import as the caller sees it: what is wrong with the input is
/// a 400 with the import's message; a fault of this host is a 500.
fn import_error(e: ImportError, name: &str, path: &str) -> ServiceError {
    match e {
        ImportError::Io { what, source } if what == path => {
            ServiceError::BadRequest(format!("path: {what}: {source}"))
        }
        e @ ImportError::Io { .. } => {
            ServiceError::Internal(format!("importing image {name}: {e}"))
        }
        e => ServiceError::BadRequest(keep_only_path(&e.to_string(), path)),
    }
}

/// The 409 of deleting image `name`, used by the VMs `ids`.
fn in_use(name: &str, ids: &[String]) -> ServiceError {
    let mut listed = ids
        .iter()
        .take(LISTED_USERS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > LISTED_USERS {
        listed.push_str(", ...");
    }
    let (count, them) = match ids.len() {
        1 => ("1 VM".to_string(), "it"),
        n => (format!("{n} VMs"), "them"),
    };
    ServiceError::Conflict(format!(
        "image {name} is in use by {count} ({listed}); delete {them} first"
    ))
}

impl Service {
    /// listImages: every named image, by name.
    pub async fn list_images(&self) -> Result<ImageList, ServiceError> {
        self.blocking(|inner| {
            let images = import::list(&inner.config.image_cache)
                .into_iter()
                .map(summary)
                .collect();
            Ok(ImageList { images })
        })
        .await
    }

    /// Admin: imports the container image at `path` (a `docker save`
    /// archive or an OCI image layout on this host) as image `name`.
    pub async fn import_image(
        &self,
        name: String,
        path: String,
    ) -> Result<ImageSummary, ServiceError> {
        check_name(&name)?;
        if !Path::new(&path).is_absolute() {
            return Err(ServiceError::BadRequest(
                "path: must be an absolute path on the daemon's host (a docker save archive \
                 or an OCI image layout)"
                    .into(),
            ));
        }
        self.blocking(move |inner| {
            let cache = &inner.config.image_cache;
            std::fs::metadata(&path)
                .map_err(|e| ServiceError::BadRequest(format!("path: {path}: {e}")))?;
            let dest = cache.join(NAMED).join(&name);
            let taken = || {
                ServiceError::Conflict(format!(
                    "an image named {name} exists; delete it first (deleteImage)"
                ))
            };
            if dest.exists() {
                return Err(taken());
            }
            let Some(_held) = inner.imports.take(&name) else {
                return Err(ServiceError::Conflict(format!(
                    "image {name} is being imported already"
                )));
            };
            let agent = agent(cache)?;
            let mut progress = |p: &Progress| {
                tracing::info!(
                    "importing image {name}: layer {}/{} ({} bytes)",
                    p.index,
                    p.count,
                    p.bytes
                );
            };
            match import::import(cache, &name, &path, &agent, &mut progress) {
                Ok((_, info)) => {
                    tracing::info!("imported image {name} ({} layers)", info.layers);
                    Ok(summary(info))
                }
                Err(_) if dest.exists() => Err(taken()),
                Err(e) => Err(import_error(e, &name, &path)),
            }
        })
        .await
    }

    /// Admin: deletes image `name`, unless a VM (of any org) was booted
    /// from it and is not deleted.
    pub async fn delete_image(&self, name: String) -> Result<(), ServiceError> {
        check_name(&name)?;
        self.blocking(move |inner| {
            // No createVM finds the image between the check and the removal.
            let _alone = inner.image_use.write().unwrap_or_else(|e| e.into_inner());
            let cache = &inner.config.image_cache;
            let dir = cache.join(NAMED).join(&name);
            let missing = || ServiceError::NotFound(format!("image {name} not found"));
            if !dir.join(IMAGE_JSON).is_file() {
                return Err(missing());
            }
            let users: Vec<String> = inner
                .store
                .vms_booted_from(&name)?
                .into_iter()
                .map(|vm| vm.id)
                .collect();
            if !users.is_empty() {
                return Err(in_use(&name, &users));
            }
            import::remove(cache, &name).map_err(|e| {
                if dir.exists() {
                    ServiceError::Internal(format!("deleting image {name}: {e}"))
                } else {
                    missing()
                }
            })?;
            tracing::info!("deleted image {name}");
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_given_path_is_kept_in_a_message() {
        let given = "/srv/in/app.tar";
        assert_eq!(
            keep_only_path(
                "layer 1 of 1 (x): /var/lib/fastvm/images/named/.a.import-7/rootfs/etc: \
                 denied; /srv/in/app.tar: bad, /srv/in/app.tar/blobs/sha256 missing, \
                 /srv/in/app.tarball too",
                given
            ),
            "layer 1 of 1 (x): <path>: denied; /srv/in/app.tar: bad, \
             /srv/in/app.tar/blobs/sha256 missing, <path> too"
        );
        assert_eq!(
            keep_only_path("in /other/srv/in/app.tar/x", given),
            "in <path>"
        );
        assert_eq!(
            keep_only_path("/srv/layout/index.json: bad", "/srv/layout/"),
            "/srv/layout/index.json: bad"
        );
        assert_eq!(keep_only_path("at /a/b: x", "/"), "at <path>: x");
    }

    #[test]
    fn sources_are_shown_as_file_names_and_in_use_names_the_vms() {
        assert_eq!(file_name_of("/srv/in/app.tar"), "app.tar");
        assert_eq!(file_name_of("/srv/layouts/alpine/"), "alpine");
        assert_eq!(file_name_of("standard input"), "standard input");
        assert_eq!(file_name_of("/"), "-");
        let one = in_use("demo", &["a".into()]);
        assert_eq!(
            one.to_string(),
            "image demo is in use by 1 VM (a); delete it first"
        );
        let many: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(
            in_use("demo", &many).to_string(),
            "image demo is in use by 4 VMs (a, b, c, ...); delete them first"
        );
        assert_eq!(one.status(), 409);
    }
}
