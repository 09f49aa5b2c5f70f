//! Writing small container images: a tar of in-memory files, and a
//! one-layer `docker save` archive around it — what the nested scenario
//! imports and what the import's tests feed it.

use std::io;

use super::digest_of;

/// A tar of `files` (path, content, mode), owned by root, dated 0.
pub fn tar_of(files: &[(&str, &[u8], u32)]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(content.len() as u64);
        tar.append_data(&mut header, path, *content)?;
    }
    tar.into_inner()
}

/// A `docker save` archive of one image: the tar `layer`, and `config` (an
/// image config without `rootfs`, which is filled in from the layer).
pub fn docker_save(mut config: serde_json::Value, layer: &[u8]) -> io::Result<Vec<u8>> {
    config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": [digest_of(layer)]});
    // As `docker save` lays it out: each layer in a directory of its own.
    let manifest = serde_json::json!([{"Config": "config.json", "Layers": ["l/layer.tar"]}]);
    tar_of(&[
        ("manifest.json", manifest.to_string().as_bytes(), 0o644),
        ("config.json", config.to_string().as_bytes(), 0o644),
        ("l/layer.tar", layer, 0o644),
    ])
}
