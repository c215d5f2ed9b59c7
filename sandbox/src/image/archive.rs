//! Images on disk: OCI image layouts (a directory or a tar of one) and
//! `docker save` archives. Archives are indexed once (member → offset) and
//! read in place: nothing is extracted before it is verified.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::digest::{Digest, HashingReader};
use super::layer::Compression;
use super::reference::Select;

/// An opened manifest or blob: its reader, its size and its media type
/// when the source says them.
pub type Opened = (Box<dyn std::io::Read + Send>, Option<u64>, Option<String>);
/// Errors from reading an image on disk.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum ArchiveError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The layout or archive is malformed.
    #[error("{path}: {why}")]
    Malformed { path: PathBuf, why: String },
}

type Result<T> = std::result::Result<T, ArchiveError>;

/// An image source on disk.
pub struct Local {
    path: PathBuf,
    /// Archive members: name → (offset, size). `None` for a directory.
    members: Option<HashMap<String, (u64, u64)>>,
    /// docker-archive: digest → member name of config and layers.
    docker: Option<HashMap<Digest, String>>,
}

/// The image a source names: its digest and, when known, media type, size
/// and (for synthesized manifests) bytes.
#[derive(Debug, Clone)]
pub struct Root {
    /// Digest of the root manifest or index.
    pub digest: Digest,
    /// Media type, when the source says.
    pub media_type: Option<String>,
    /// Size, when the source says.
    pub size: Option<u64>,
    /// The bytes, when already in hand.
    pub bytes: Option<Vec<u8>>,
}

const MAX_JSON: u64 = 8 << 20;

fn clean_member(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl Local {
    /// An OCI layout directory.
    pub fn dir(path: &Path) -> Local {
        Local {
            path: path.to_owned(),
            members: None,
            docker: None,
        }
    }

    /// A tar archive (OCI layout or docker save), indexed.
    pub fn archive(path: &Path) -> Result<Local> {
        let io_err = |source| ArchiveError::Io {
            path: path.to_owned(),
            source,
        };
        let f = File::open(path).map_err(io_err)?;
        // The tar reader's own errors quote header bytes, which for a file
        // that is not an archive are the file's contents (a job may name
        // the path): say what is wrong without them.
        let not_tar = |_| ArchiveError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a readable tar archive: give an OCI or docker archive (tar)",
            ),
        };
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut links = Vec::new();
        for e in ar.entries_with_seek().map_err(not_tar)? {
            let e = e.map_err(not_tar)?;
            let name = clean_member(&String::from_utf8_lossy(&e.path_bytes()));
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, (e.raw_file_position(), e.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = e.link_name_bytes() {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        let target = if e.header().entry_type() == tar::EntryType::Symlink {
                            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                            clean_member(&format!("{dir}/{t}"))
                        } else {
                            clean_member(&t)
                        };
                        links.push((name, target));
                    }
                }
                _ => {}
            }
        }
        for (name, target) in links {
            if let Some(v) = members.get(&target).copied() {
                members.insert(name, v);
            }
        }
        Ok(Local {
            path: path.to_owned(),
            members: Some(members),
            docker: None,
        })
    }

    fn malformed(&self, why: impl Into<String>) -> ArchiveError {
        ArchiveError::Malformed {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    /// Opens a member (archive) or a file under the directory; returns it and its size.
    fn member(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match &self.members {
            Some(m) => {
                let &(off, size) = m
                    .get(name)
                    .ok_or_else(|| self.malformed(format!("has no {name}")))?;
                let io_err = |source| ArchiveError::Io {
                    path: self.path.clone(),
                    source,
                };
                let mut f = File::open(&self.path).map_err(io_err)?;
                f.seek(SeekFrom::Start(off)).map_err(io_err)?;
                Ok((Box::new(f.take(size)), size))
            }
            None => {
                let p = self.path.join(name);
                let f = File::open(&p).map_err(|source| match source.kind() {
                    io::ErrorKind::NotFound => ArchiveError::Malformed {
                        path: self.path.clone(),
                        why: format!("has no {name}"),
                    },
                    _ => ArchiveError::Io {
                        path: p.clone(),
                        source,
                    },
                })?;
                let len = f
                    .metadata()
                    .map_err(|source| ArchiveError::Io {
                        path: p.clone(),
                        source,
                    })?
                    .len();
                Ok((Box::new(f), len))
            }
        }
    }

    fn read_json(&self, name: &str) -> Result<serde_json::Value> {
        let (r, size) = self.member(name)?;
        if size > MAX_JSON {
            return Err(self.malformed(format!("{name} is larger than {MAX_JSON} bytes")));
        }
        let mut buf = Vec::new();
        r.take(MAX_JSON)
            .read_to_end(&mut buf)
            .map_err(|source| ArchiveError::Io {
                path: self.path.clone(),
                source,
            })?;
        serde_json::from_slice(&buf).map_err(|e| self.malformed(format!("{name}: {e}")))
    }

    /// The image an OCI layout's `index.json` names (by tag, by digest, or the only one).
    pub fn oci_root(&self, select: Option<&Select>) -> Result<Root> {
        let index = self.read_json("index.json")?;
        let manifests = index
            .get("manifests")
            .and_then(|m| m.as_array())
            .ok_or_else(|| self.malformed("index.json has no manifests"))?;
        let desc = |m: &serde_json::Value| -> Result<Root> {
            let digest = m
                .get("digest")
                .and_then(|d| d.as_str())
                .ok_or_else(|| self.malformed("index.json: a descriptor has no digest"))?
                .parse()
                .map_err(|e: super::digest::DigestError| self.malformed(e.to_string()))?;
            Ok(Root {
                digest,
                media_type: m
                    .get("mediaType")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned),
                size: m.get("size").and_then(|s| s.as_u64()),
                bytes: None,
            })
        };
        let tag_of = |m: &serde_json::Value| {
            m.pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        };
        match select {
            Some(Select::Digest(d)) => {
                for m in manifests {
                    let r = desc(m)?;
                    if r.digest == *d {
                        return Ok(r);
                    }
                }
                Ok(Root {
                    digest: d.clone(),
                    media_type: None,
                    size: None,
                    bytes: None,
                })
            }
            Some(Select::Tag(t)) => manifests
                .iter()
                .find(|m| tag_of(m).as_deref() == Some(t))
                .map(desc)
                .unwrap_or_else(|| Err(self.malformed(format!("has no image tagged {t:?}")))),
            None if manifests.len() == 1 => desc(&manifests[0]),
            None => Err(self.malformed(format!(
                "holds {} images; name one with :TAG or @sha256:DIGEST",
                manifests.len()
            ))),
        }
    }

    /// Opens a blob of an OCI layout, or a member of a docker archive by digest.
    pub fn open(&self, digest: &Digest) -> Result<(Box<dyn Read + Send>, u64)> {
        if let Some(d) = &self.docker {
            let name = d
                .get(digest)
                .ok_or_else(|| self.malformed(format!("has no blob {digest}")))?;
            return self.member(name);
        }
        self.member(&format!("blobs/sha256/{}", digest.hex()))
    }

    /// Reads a `docker save` archive's `manifest.json` and synthesizes an OCI
    /// manifest for it (layer digests are the diff_ids for plain tars; a
    /// compressed member is hashed once).
    pub fn docker_root(&mut self) -> Result<Root> {
        let m = self.read_json("manifest.json")?;
        let images = m
            .as_array()
            .ok_or_else(|| self.malformed("manifest.json is not a list"))?;
        if images.len() != 1 {
            return Err(self.malformed(format!(
                "manifest.json lists {} images; pinfold imports archives of one image",
                images.len()
            )));
        }
        let img = &images[0];
        let config_name = img
            .get("Config")
            .and_then(|c| c.as_str())
            .map(clean_member)
            .ok_or_else(|| self.malformed("manifest.json has no Config"))?;
        let (r, csize) = self.member(&config_name)?;
        let mut h = HashingReader::new(r, Some(MAX_JSON));
        let mut cbytes = Vec::new();
        h.read_to_end(&mut cbytes)
            .map_err(|source| ArchiveError::Io {
                path: self.path.clone(),
                source,
            })?;
        let cdigest = Digest::of(&cbytes);
        let config: serde_json::Value = serde_json::from_slice(&cbytes)
            .map_err(|e| self.malformed(format!("{config_name}: {e}")))?;
        let diff_ids: Vec<Digest> = config
            .pointer("/rootfs/diff_ids")
            .and_then(|d| d.as_array())
            .ok_or_else(|| self.malformed("the config has no rootfs.diff_ids"))?
            .iter()
            .map(|d| d.as_str().unwrap_or("").parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e: super::digest::DigestError| self.malformed(e.to_string()))?;
        let layer_names: Vec<String> = img
            .get("Layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| self.malformed("manifest.json has no Layers"))?
            .iter()
            .map(|l| clean_member(l.as_str().unwrap_or("")))
            .collect();
        if layer_names.len() != diff_ids.len() {
            return Err(self.malformed("manifest.json and the config disagree on the layer count"));
        }
        let mut map = HashMap::new();
        map.insert(cdigest.clone(), config_name);
        let mut layers = Vec::new();
        for (name, diff_id) in layer_names.into_iter().zip(diff_ids) {
            let (mut r, size) = self.member(&name)?;
            let mut magic = [0u8; 4];
            let n = r.read(&mut magic).unwrap_or(0);
            let compression = match &magic[..n] {
                [0x1f, 0x8b, ..] => Compression::Gzip,
                [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
                _ => Compression::None,
            };
            let (digest, mt) = match compression {
                Compression::None => (diff_id, "application/vnd.oci.image.layer.v1.tar"),
                c => {
                    let (r, _) = self.member(&name)?;
                    let (d, _) = HashingReader::new(r, None).finish().map_err(|source| {
                        ArchiveError::Io {
                            path: self.path.clone(),
                            source,
                        }
                    })?;
                    let mt = if c == Compression::Gzip {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    } else {
                        "application/vnd.oci.image.layer.v1.tar+zstd"
                    };
                    (d, mt)
                }
            };
            map.insert(digest.clone(), name);
            layers.push(
                serde_json::json!({"mediaType": mt, "digest": digest.to_string(), "size": size}),
            );
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest.to_string(), "size": csize},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| self.malformed(e.to_string()))?;
        self.docker = Some(map);
        Ok(Root {
            digest: Digest::of(&bytes),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            size: Some(bytes.len() as u64),
            bytes: Some(bytes),
        })
    }
}
