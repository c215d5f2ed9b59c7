//! What an image's manifests, indexes and config say: parsing them (pure,
//! so the fuzz target `oci_manifest` drives it), the media types pinfold
//! takes and the choice of the platform's manifest in an index.

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::{ImageError, LayerRecord, Result};
use crate::image::digest::Digest;
use crate::image::layer::Compression;

/// Media types.
mod mt {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
}

pub(super) fn layer_compression(media_type: &str) -> Option<Compression> {
    Some(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        _ => return None,
    })
}

/// The host platform, or `platform` (`$PINFOLD_PLATFORM`: `os/arch[/variant]`).
pub(super) fn wanted_platform(platform: Option<&str>) -> (String, String, Option<String>) {
    if let Some(p) = platform {
        let mut it = p.split('/');
        if let (Some(os), Some(arch)) = (it.next(), it.next()) {
            return (os.into(), arch.into(), it.next().map(str::to_owned));
        }
    }
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "x86" => ("386", None),
        other => (other, None),
    };
    ("linux".into(), arch.into(), variant.map(str::to_owned))
}

/// What one manifest or index of an image's resolution says.
#[doc(hidden)]
#[derive(Debug)]
pub enum Resolved {
    /// An index: the descriptor it picks for the platform.
    Next {
        /// Digest of the chosen manifest or index.
        digest: Digest,
        /// Its media type, as the index declares it.
        media_type: String,
        /// Its size, as the index declares it.
        size: u64,
    },
    /// The image manifest.
    Manifest(Box<ImageManifest>),
}

/// One step of resolution: parses the manifest or index `bytes` (already
/// verified against `digest`), referenced as `expected` and served as
/// `served_type`, `depth` indexes down, for `platform` (`os`, `arch`,
/// `variant`). Pure, so the fuzz target `oci_manifest` can drive it.
#[doc(hidden)]
pub fn resolve(
    bytes: &[u8],
    digest: &Digest,
    expected: Option<&str>,
    served_type: Option<String>,
    depth: u32,
    platform: &(String, String, Option<String>),
) -> Result<Resolved> {
    let (os, arch, variant) = platform;
    let what = "manifest";
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
            what: format!("{what} {digest}"),
            why: format!("not JSON: {e}"),
        })?;
    let declared = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_owned);
    if let (Some(want), Some(got)) = (expected, &declared) {
        if want != got {
            return Err(ImageError::Malformed {
                what: format!("{what} {digest}"),
                why: format!("declares media type {got}, but was referenced as {want}"),
            });
        }
    }
    let kind = declared
        .or(expected.map(str::to_owned))
        .or(served_type.filter(|t| t != "application/json" && t != "application/octet-stream"))
        .unwrap_or_else(|| {
            if v.get("manifests").is_some() {
                mt::OCI_INDEX.into()
            } else {
                mt::OCI_MANIFEST.into()
            }
        });
    match kind.as_str() {
        mt::OCI_INDEX | mt::DOCKER_LIST => {
            if depth + 1 > 4 {
                return Err(ImageError::Malformed {
                    what: format!("index {digest}"),
                    why: "indexes nested deeper than 4".into(),
                });
            }
            let index: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
                    what: format!("index {digest}"),
                    why: e.to_string(),
                })?;
            let matches = |want_variant: Option<&str>| {
                index.manifests().iter().find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == *os
                            && p.architecture().to_string() == *arch
                            && p.variant().as_deref() == want_variant
                    })
                })
            };
            let chosen = matches(variant.as_deref())
                .or_else(|| matches(None))
                .or_else(|| {
                    // A nested index without platforms: follow its only entry.
                    (index.manifests().len() == 1 && index.manifests()[0].platform().is_none())
                        .then(|| &index.manifests()[0])
                })
                .ok_or_else(|| ImageError::Malformed {
                    what: format!("index {digest}"),
                    why: format!(
                        "has no image for {os}/{arch}{}",
                        variant
                            .as_deref()
                            .map(|v| format!("/{v}"))
                            .unwrap_or_default()
                    ),
                })?;
            Ok(Resolved::Next {
                digest: chosen.digest().to_string().parse()?,
                media_type: chosen.media_type().to_string(),
                size: chosen.size(),
            })
        }
        mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => {
            let m: ImageManifest =
                serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
                    what: format!("manifest {digest}"),
                    why: e.to_string(),
                })?;
            Ok(Resolved::Manifest(Box::new(m)))
        }
        other => Err(ImageError::UnsupportedMediaType {
            what: format!("manifest {digest}"),
            media_type: other.to_owned(),
        }),
    }
}

/// The digest and size of the config a manifest names (its media type checked).
#[doc(hidden)]
pub fn config_descriptor(manifest: &ImageManifest) -> Result<(Digest, u64)> {
    let cdesc = manifest.config();
    let cdigest: Digest = cdesc.digest().to_string().parse()?;
    let ctype = cdesc.media_type().to_string();
    if ctype != mt::OCI_CONFIG && ctype != mt::DOCKER_CONFIG {
        return Err(ImageError::UnsupportedMediaType {
            what: format!("config {cdigest}"),
            media_type: ctype,
        });
    }
    Ok((cdigest, cdesc.size()))
}

/// Parses the config `cbytes` (already verified against `cdigest`) and pairs
/// the manifest's layers with its diff_ids.
#[doc(hidden)]
pub fn read_config(
    manifest: &ImageManifest,
    cdigest: &Digest,
    cbytes: &[u8],
) -> Result<(ImageConfiguration, Vec<LayerRecord>)> {
    let config: ImageConfiguration =
        serde_json::from_slice(cbytes).map_err(|e| ImageError::Malformed {
            what: format!("config {cdigest}"),
            why: e.to_string(),
        })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::Malformed {
            what: format!("config {cdigest}"),
            why: format!(
                "lists {} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers().len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let media_type = l.media_type().to_string();
        let digest: Digest = l.digest().to_string().parse()?;
        if layer_compression(&media_type).is_none() {
            return Err(ImageError::UnsupportedMediaType {
                what: format!("layer {digest}"),
                media_type,
            });
        }
        layers.push(LayerRecord {
            digest,
            diff_id: diff_id.parse()?,
            size: l.size(),
            media_type,
        });
    }
    Ok((config, layers))
}
