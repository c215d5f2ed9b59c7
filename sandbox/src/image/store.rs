//! The image store under `$PINFOLD_HOME/images`:
//!
//! ```text
//! images/<manifest hex>.json   one record per image (names, config, layers)
//! blobs/sha256/<hex>           verified manifests, indexes and configs
//! layers/<diff_id hex>/        unpacked layers, shared between images
//! locks/<hex>.lock             one writer per layer at a time (flock)
//! tmp/                         work in progress (same file system: rename is atomic)
//! store.lock                   shared by pulls, exclusive for gc and rm
//! ```
//!
//! A container running on an image holds a shared lock on each of its
//! layers' `locks/<hex>.lock` for its whole life ([`Store::lease`]); `gc`
//! leaves alone any layer whose lock it cannot take exclusively, so removing
//! an image while a job runs on it never pulls a layer from under the job.
//!
//! Resolution: index → (nested index) → the manifest for the host platform →
//! config → layers. Every byte is verified against the digest that names
//! it before it is kept; a layer is unpacked into `tmp/` and renamed into
//! `layers/` only once its blob digest, size and diff_id all check out.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use super::archive::{ArchiveError, Local, Root};
use super::digest::{Digest, DigestError, HashingReader, VerifyError, read_verified};
use super::layer::{self, Budget, Compression, LayerError, Limits};
use super::owner::{OwnerError, Ownership};
use super::reference::{ImageRef, ReferenceError};
use super::registry::{Registry, RegistryError};
use crate::settings::Settings;

/// Errors from the image store (gathers every image module's errors).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// A store file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading a blob failed.
    #[error("{what}: {source}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A media type pinfold does not handle.
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },
    /// A manifest, index or config that does not parse or does not fit.
    #[error("{what}: {why}")]
    Malformed { what: String, why: String },
    /// No image in the store matches.
    #[error(
        "no image {0:?} in the store; pull or import it first (pinfold image ls lists the store)"
    )]
    NotFound(String),
    /// Several images match a short id.
    #[error("{0:?} matches several images; give more of the digest")]
    Ambiguous(String),
    /// No home directory to keep the store in.
    #[error("no store directory: set PINFOLD_HOME (or HOME)")]
    NoHome,
}

type Result<T> = std::result::Result<T, ImageError>;

impl From<VerifyError> for ImageError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Io(source) => ImageError::Read {
                what: "blob".into(),
                source,
            },
            VerifyError::Digest(d) => ImageError::Digest(d),
        }
    }
}

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar (the cache key).
    pub diff_id: Digest,
    /// Blob size in bytes.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
}

/// An image in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the image manifest (the image's identity in the store).
    pub id: Digest,
    /// Digest the reference named (an index, or the manifest itself).
    pub root: Digest,
    /// References this image was pulled or imported as.
    pub names: Vec<String>,
    /// Digest of the image config.
    pub config: Digest,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Unix time of the last pull or import.
    pub stored_at: u64,
}

/// A progress event (for a progress bar; the store prints nothing itself).
#[derive(Debug, Clone)]
pub enum Progress {
    /// A layer starts downloading/unpacking: digest and blob size.
    Start(Digest, u64),
    /// Bytes of a layer's blob read so far.
    Bytes(Digest, u64),
    /// A layer is in the cache (`true`: it already was).
    Done(Digest, bool),
}

/// Options of a pull or import.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Resolve a tag (once) when the reference has no digest.
    pub allow_tag: bool,
    /// Registries that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Bounds on the unpack.
    pub limits: Limits,
    /// Receives progress events.
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

/// Media types.
mod mt {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
}

fn layer_compression(media_type: &str) -> Option<Compression> {
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

/// Where the bytes come from.
enum Source {
    Registry(Registry),
    Local(Local),
}

impl Source {
    /// Opens a manifest/index (`manifest`) or a blob: reader, size if known, media type if known.
    fn open(&self, d: &Digest, manifest: bool) -> Result<super::registry::Opened> {
        Ok(match self {
            Source::Registry(r) => r.open(d, manifest)?,
            Source::Local(l) => {
                let (r, n) = l.open(d)?;
                (r, Some(n), None)
            }
        })
    }
}

/// The host platform, or `platform` (`$PINFOLD_PLATFORM`: `os/arch[/variant]`).
fn wanted_platform(platform: Option<&str>) -> (String, String, Option<String>) {
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

/// The store.
pub struct Store {
    root: PathBuf,
    owner: Ownership,
    /// The platform images are resolved for: `(os, arch, variant)`.
    platform: (String, String, Option<String>),
    /// The registry credential files, in search order.
    auth_files: Vec<PathBuf>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// The store of the home of `settings` (`$PINFOLD_HOME`), created when missing.
    pub fn open_default(settings: &Settings) -> Result<Store> {
        let root = settings.image_store().ok_or(ImageError::NoHome)?;
        Store::open(&root, settings)
    }

    /// The store at `root`, created when missing, pulling for the platform
    /// and with the credentials `settings` name.
    pub fn open(root: &Path, settings: &Settings) -> Result<Store> {
        for d in ["images", "blobs/sha256", "layers", "locks", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|source| ImageError::Io {
                op: "create",
                path: p,
                source,
            })?;
        }
        // 0700, also when an older pinfold left it open: layer files keep
        // their image's owners and modes, so no other local user may reach them.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(|source| {
            ImageError::Io {
                op: "chmod 0700",
                path: root.to_owned(),
                source,
            }
        })?;
        Ok(Store {
            root: root.to_owned(),
            owner: Ownership::for_store(root, settings)?,
            platform: wanted_platform(settings.platform.as_deref()),
            auth_files: settings.registry_auth_files.clone(),
        })
    }

    fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError + use<> {
        let path = path.to_owned();
        move |source| ImageError::Io { op, path, source }
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<Flock<File>> {
        let p = self.root.join(name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(Self::io("open the lock", &p))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(f, arg).map_err(|(_, e)| ImageError::Io {
            op: "lock",
            path: p,
            source: e.into(),
        })
    }

    /// Writes `bytes` to `path` atomically (temp file in `tmp/`, then rename).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.root.join("tmp");
        let mut f =
            tempfile::NamedTempFile::new_in(&tmp).map_err(Self::io("create a file in", &tmp))?;
        f.write_all(bytes).map_err(Self::io("write", f.path()))?;
        f.persist(path).map_err(|e| ImageError::Io {
            op: "rename into",
            path: path.to_owned(),
            source: e.error,
        })?;
        Ok(())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// The directory of a cached layer.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Pulls (registry) or imports (on-disk) an image, verifying everything,
    /// and records it under the reference's name.
    pub fn pull(&self, r: &ImageRef, opts: &PullOptions) -> Result<ImageRecord> {
        let _shared = self.lock("store.lock", false)?;
        let (source, root, mut names) = match r {
            ImageRef::Docker {
                host,
                repo,
                tag,
                digest,
            } => {
                let reg = Registry::new(host, repo, &opts.insecure, &self.auth_files)?;
                let mut names = Vec::new();
                let (d, media_type) = match (digest, tag) {
                    (Some(d), _) => (d.clone(), None),
                    (None, t) if opts.allow_tag => {
                        let t = t.clone().unwrap_or_else(|| "latest".into());
                        names.push(format!("docker://{host}/{repo}:{t}"));
                        reg.resolve_tag(&t)?
                    }
                    (None, _) => return Err(ReferenceError::MissingDigest(r.to_string()).into()),
                };
                names.insert(0, format!("docker://{host}/{repo}@{d}"));
                let root = Root {
                    digest: d,
                    media_type,
                    size: None,
                    bytes: None,
                };
                (Source::Registry(reg), root, names)
            }
            ImageRef::OciDir { path, select } => {
                let l = Local::dir(path);
                let root = l.oci_root(select.as_ref())?;
                (Source::Local(l), root, vec![local_name(r)])
            }
            ImageRef::OciArchive { path, select } => {
                let l = Local::archive(path)?;
                let root = l.oci_root(select.as_ref())?;
                (Source::Local(l), root, vec![local_name(r)])
            }
            ImageRef::DockerArchive { path } => {
                let mut l = Local::archive(path)?;
                let root = l.docker_root()?;
                (Source::Local(l), root, vec![local_name(r)])
            }
        };
        let mut rec = self.fetch(&source, &root, opts)?;
        // Keep the names it had (another reference to the same image).
        if let Ok(old) = self.load(&rec.id) {
            for n in old.names {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        rec.names = names;
        let p = self
            .root
            .join("images")
            .join(format!("{}.json", rec.id.hex()));
        let json = serde_json::to_vec_pretty(&rec).map_err(|e| ImageError::Malformed {
            what: "record".into(),
            why: e.to_string(),
        })?;
        self.write_atomic(&p, &json)?;
        Ok(rec)
    }

    /// Reads and verifies a manifest, index or config.
    fn fetch_json(
        &self,
        src: &Source,
        d: &Digest,
        size: Option<u64>,
        manifest: bool,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let (r, len, media_type) = src.open(d, manifest)?;
        if let (Some(len), Some(size)) = (len, size) {
            if len != size {
                return Err(DigestError::Size {
                    what: format!("{what} {d}"),
                    expected: size,
                    actual: len,
                }
                .into());
            }
        }
        let bytes =
            read_verified(r, &format!("{what} {d}"), size, 8 << 20, d).map_err(|e| match e {
                VerifyError::Io(source) => ImageError::Read {
                    what: format!("{what} {d}"),
                    source,
                },
                VerifyError::Digest(e) => e.into(),
            })?;
        Ok((bytes, media_type))
    }

    /// Resolution and layer download; returns the record (without names).
    fn fetch(&self, src: &Source, root: &Root, opts: &PullOptions) -> Result<ImageRecord> {
        let mut digest = root.digest.clone();
        let mut expected = root.media_type.clone();
        let mut size = root.size;
        let mut prefetched = root.bytes.clone();
        let mut depth = 0;
        let (manifest, manifest_bytes) = loop {
            let what = "manifest";
            let (bytes, served_type) = match prefetched.take() {
                Some(b) => {
                    digest.verify(what, &b)?;
                    (b, None)
                }
                None => self.fetch_json(src, &digest, size, true, what)?,
            };
            match resolve(
                &bytes,
                &digest,
                expected.as_deref(),
                served_type,
                depth,
                &self.platform,
            )? {
                Resolved::Next {
                    digest: next,
                    media_type,
                    size: next_size,
                } => {
                    depth += 1;
                    digest = next;
                    expected = Some(media_type);
                    size = Some(next_size);
                }
                Resolved::Manifest(m) => break (*m, bytes),
            }
        };
        let id = digest;
        // Config.
        let (cdigest, csize) = config_descriptor(&manifest)?;
        let (cbytes, _) = self.fetch_json(src, &cdigest, Some(csize), false, "config")?;
        let (config, layers) = read_config(&manifest, &cdigest, &cbytes)?;
        // Layers, in parallel (a few at a time: disk and sha256 bound).
        let budget = Budget::new(opts.limits);
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers.min(layers.len()))
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(l) = layers.get(i) else {
                                return Ok(());
                            };
                            self.ensure_layer(src, l, &budget, opts)?;
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ImageError::Malformed {
                            what: "unpack".into(),
                            why: "a worker panicked".into(),
                        })
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
        // Keep the verified manifest and config.
        for (d, b) in [(&id, &manifest_bytes), (&cdigest, &cbytes)] {
            let p = self.blob_path(d);
            if !p.exists() {
                self.write_atomic(&p, b)?;
            }
        }
        let platform = format!("{}/{}", config.os(), config.architecture());
        Ok(ImageRecord {
            id,
            root: root.digest.clone(),
            names: Vec::new(),
            config: cdigest,
            layers,
            platform,
            stored_at: now(),
        })
    }

    /// Makes sure one layer is in the cache: download, verify, unpack into
    /// `tmp/`, rename into place; one process per layer at a time.
    fn ensure_layer(
        &self,
        src: &Source,
        l: &LayerRecord,
        budget: &Budget,
        opts: &PullOptions,
    ) -> Result<()> {
        let dir = self.layer_dir(&l.diff_id);
        let progress = |p| {
            if let Some(f) = &opts.progress {
                f(p)
            }
        };
        if dir.exists() {
            progress(Progress::Done(l.digest.clone(), true));
            return Ok(());
        }
        let _lock = self.lock(&format!("locks/{}.lock", l.diff_id.hex()), true)?;
        if dir.exists() {
            progress(Progress::Done(l.digest.clone(), true));
            return Ok(());
        }
        progress(Progress::Start(l.digest.clone(), l.size));
        let what = format!("layer {}", l.digest);
        let (reader, len, _) = src.open(&l.digest, false)?;
        if let Some(len) = len.filter(|n| *n != l.size) {
            return Err(DigestError::Size {
                what,
                expected: l.size,
                actual: len,
            }
            .into());
        }
        let tmp = TempDir::new(&self.root.join("tmp"))?;
        let counted = ProgressReader {
            inner: reader,
            n: 0,
            digest: &l.digest,
            f: opts.progress.as_deref(),
        };
        let mut blob = HashingReader::new(counted, Some(l.size));
        // Two threads: this one applies the tar stream (file system calls),
        // a helper reads, verifies and decompresses it, as `tar -xzf` runs
        // gzip beside tar. On two cores that cut a cold unpack of a Debian
        // layer by ~25%.
        let applied: Result<layer::Applied> = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_AHEAD);
            let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let blob = &mut blob;
            let what = &what;
            let producer = s.spawn(move || -> Result<Option<Digest>> {
                let decoded: Box<dyn Read + '_> = match layer_compression(&l.media_type) {
                    Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(blob)),
                    Some(Compression::Zstd) => {
                        Box::new(zstd::stream::read::Decoder::new(blob).map_err(|source| {
                            ImageError::Read {
                                what: what.clone(),
                                source,
                            }
                        })?)
                    }
                    _ => Box::new(blob),
                };
                let mut tar_stream = HashingReader::new(decoded, None);
                loop {
                    // Buffers keep their full length; each chunk says how
                    // much of its buffer holds data.
                    let mut buf = free_rx.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
                    match tar_stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if tx.send(Ok((buf, n))).is_err() {
                                // The applier stopped; its error decides.
                                return Ok(None);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                            return Err(ImageError::Read {
                                what: what.clone(),
                                source: e,
                            });
                        }
                    }
                }
                let (diff, _) = tar_stream.finish().map_err(|source| ImageError::Read {
                    what: what.clone(),
                    source,
                })?;
                Ok(Some(diff))
            });
            let mut stream = ChunkReader {
                rx,
                free: free_tx,
                cur: Vec::new(),
                pos: 0,
                len: 0,
            };
            let applied = layer::apply_tar(&mut stream, &tmp.0, what, budget);
            // Read to the end: the diff_id covers trailing bytes too.
            let drained = match &applied {
                Ok(_) => io::copy(&mut stream, &mut io::sink()).map(|_| ()),
                Err(_) => Ok(()),
            };
            drop(stream);
            let produced = producer.join().unwrap_or_else(|_| {
                Err(ImageError::Malformed {
                    what: what.clone(),
                    why: "the decompressing thread panicked".into(),
                })
            });
            let applied = applied?;
            let diff = produced?;
            drained.map_err(|source| ImageError::Read {
                what: what.clone(),
                source,
            })?;
            let diff = diff.ok_or_else(|| ImageError::Malformed {
                what: what.clone(),
                why: "the layer stream ended early".into(),
            })?;
            if diff != l.diff_id {
                return Err(ImageError::Digest(DigestError::Mismatch {
                    what: format!("{what} (uncompressed, against the config's diff_id)"),
                    expected: l.diff_id.clone(),
                    actual: diff,
                }));
            }
            Ok(applied)
        });
        // The blob's own digest and size decide first: a corrupt blob is
        // named as such even when it also broke the decompressor.
        match blob.verify(&what, Some(l.size), &l.digest) {
            Err(VerifyError::Digest(e)) => return Err(e.into()),
            Err(VerifyError::Io(source)) => {
                applied?;
                return Err(ImageError::Read { what, source });
            }
            Ok(()) => {}
        }
        self.owner.apply(&tmp.0, applied?.foreign_owners)?;
        fs::rename(&tmp.0, &dir).map_err(Self::io("rename into place", &dir))?;
        tmp.forget();
        progress(Progress::Done(l.digest.clone(), false));
        Ok(())
    }

    /// Every image record.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(Self::io("read", &dir))? {
            let e = e.map_err(Self::io("read", &dir))?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let b = fs::read(&p).map_err(Self::io("read", &p))?;
                let r: ImageRecord =
                    serde_json::from_slice(&b).map_err(|e| ImageError::Malformed {
                        what: p.display().to_string(),
                        why: e.to_string(),
                    })?;
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.names.cmp(&b.names));
        Ok(out)
    }

    fn load(&self, id: &Digest) -> Result<ImageRecord> {
        self.list()?
            .into_iter()
            .find(|r| r.id == *id)
            .ok_or_else(|| ImageError::NotFound(id.to_string()))
    }

    /// Finds an image by name (as pulled), digest (of the manifest or of
    /// what the reference named) or a unique prefix of at least 12 hex digits.
    pub fn find(&self, reference: &str) -> Result<ImageRecord> {
        let all = self.list()?;
        let canonical = ImageRef::parse(reference).ok().map(|r| match &r {
            ImageRef::Docker { .. } => r.to_string(),
            _ => local_name(&r),
        });
        let digest = reference
            .rsplit_once('@')
            .map_or(reference, |(_, d)| d)
            .parse::<Digest>()
            .ok();
        if let Some(r) = all.iter().find(|r| {
            r.names
                .iter()
                .any(|n| Some(n) == canonical.as_ref() || n == reference)
                || digest.as_ref().is_some_and(|d| *d == r.id || *d == r.root)
        }) {
            return Ok(r.clone());
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let m: Vec<_> = all.iter().filter(|r| r.id.hex().starts_with(hex)).collect();
            match m.len() {
                1 => return Ok(m[0].clone()),
                0 => {}
                _ => return Err(ImageError::Ambiguous(reference.to_owned())),
            }
        }
        Err(ImageError::NotFound(reference.to_owned()))
    }

    /// The image's config.
    pub fn config(&self, rec: &ImageRecord) -> Result<ImageConfiguration> {
        let p = self.blob_path(&rec.config);
        let b = fs::read(&p).map_err(Self::io("read", &p))?;
        rec.config.verify("config", &b)?;
        serde_json::from_slice(&b).map_err(|e| ImageError::Malformed {
            what: format!("config {}", rec.config),
            why: e.to_string(),
        })
    }

    /// The cached layer directories, topmost first (what
    /// [`crate::ContainerSpec::layers`] takes).
    pub fn layer_dirs(&self, rec: &ImageRecord) -> Result<Vec<PathBuf>> {
        rec.layers
            .iter()
            .rev()
            .map(|l| {
                let d = self.layer_dir(&l.diff_id);
                if d.is_dir() {
                    Ok(d)
                } else {
                    Err(ImageError::Malformed {
                        what: format!("image {}", rec.id),
                        why: format!(
                            "layer {} is missing from the cache; pull or import the image again",
                            l.diff_id
                        ),
                    })
                }
            })
            .collect()
    }

    /// Shared locks on the image's layers, to hold while a container runs on
    /// them: [`Store::gc`] skips a layer whose lock is held. Checks that
    /// every layer is (still) in the cache once the locks are held.
    pub fn lease(&self, rec: &ImageRecord) -> Result<(LayerLease, Vec<PathBuf>)> {
        let mut locks = Vec::with_capacity(rec.layers.len());
        for l in &rec.layers {
            locks.push(self.lock(&format!("locks/{}.lock", l.diff_id.hex()), false)?);
        }
        let dirs = self.layer_dirs(rec)?;
        Ok((LayerLease(locks), dirs))
    }

    /// Writes the image as one plain directory tree (created; must be empty).
    pub fn unpack(&self, rec: &ImageRecord, dest: &Path) -> Result<()> {
        let _shared = self.lock("store.lock", false)?;
        let (_lease, mut dirs) = self.lease(rec)?;
        dirs.reverse();
        Ok(self.owner.flatten(&dirs, dest)?)
    }

    /// Removes an image's record (its layers stay until [`Store::gc`]).
    pub fn remove(&self, reference: &str) -> Result<ImageRecord> {
        let _excl = self.lock("store.lock", true)?;
        let rec = self.find(reference)?;
        let p = self
            .root
            .join("images")
            .join(format!("{}.json", rec.id.hex()));
        fs::remove_file(&p).map_err(Self::io("remove", &p))?;
        Ok(rec)
    }

    /// Removes layers and blobs no image references, and leftover work
    /// files. Returns how many entries were removed.
    pub fn gc(&self) -> Result<usize> {
        let _excl = self.lock("store.lock", true)?;
        let all = self.list()?;
        let mut layers: HashSet<String> = all
            .iter()
            .flat_map(|r| r.layers.iter().map(|l| l.diff_id.hex().to_owned()))
            .collect();
        let blobs: HashSet<String> = all
            .iter()
            .flat_map(|r| [r.id.hex().to_owned(), r.config.hex().to_owned()])
            .collect();
        // Unreferenced layers a running container still holds (see `lease`):
        // kept, with their lock files, until it ends.
        let mut held = Vec::new();
        let layers_dir = self.root.join("layers");
        for e in fs::read_dir(&layers_dir).map_err(Self::io("read", &layers_dir))? {
            let name = e
                .map_err(Self::io("read", &layers_dir))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if layers.contains(&name) {
                continue;
            }
            let p = self.root.join("locks").join(format!("{name}.lock"));
            let Ok(f) = File::open(&p) else { continue };
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => held.push(l), // ours until the layer is gone
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    tracing::info!(layer = %name, "layer in use by a running container; kept");
                    layers.insert(name);
                }
                Err((_, e)) => {
                    return Err(ImageError::Io {
                        op: "lock",
                        path: p,
                        source: e.into(),
                    });
                }
            }
        }
        let mut doomed = Vec::new();
        for (sub, keep) in [
            ("layers", Some(&layers)),
            ("blobs/sha256", Some(&blobs)),
            ("tmp", None),
            ("locks", None),
        ] {
            let dir = self.root.join(sub);
            for e in fs::read_dir(&dir).map_err(Self::io("read", &dir))? {
                let e = e.map_err(Self::io("read", &dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.trim_end_matches(".lock");
                if keep.is_some_and(|k| k.contains(key)) || (sub == "locks" && layers.contains(key))
                {
                    continue;
                }
                doomed.push(e.path());
            }
        }
        // One pass, from where files owned by mapped ids can be removed.
        self.owner.remove(&doomed)?;
        Ok(doomed.len())
    }
}

/// Shared locks on an image's layers (see [`Store::lease`]); released on drop.
pub struct LayerLease(Vec<Flock<File>>);

impl LayerLease {
    /// The lock fds, for [`crate::ContainerSpec::parent_only_fds`].
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.0.iter().map(|l| l.as_raw_fd()).collect()
    }
}

/// The name a local reference is stored under (absolute path).
fn local_name(r: &ImageRef) -> String {
    let abs = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    match r {
        ImageRef::OciDir { path, select } => ImageRef::OciDir {
            path: abs(path),
            select: select.clone(),
        }
        .to_string(),
        ImageRef::OciArchive { path, select } => ImageRef::OciArchive {
            path: abs(path),
            select: select.clone(),
        }
        .to_string(),
        ImageRef::DockerArchive { path } => ImageRef::DockerArchive { path: abs(path) }.to_string(),
        other => other.to_string(),
    }
}

/// A work directory in `tmp/`, removed unless [`TempDir::forget`] is called.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<TempDir> {
        let d = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(parent)
            .map_err(Store::io("create a directory in", parent))?;
        Ok(TempDir(d.keep()))
    }
    fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = layer::remove_tree(&self.0) {
            tracing::warn!(path = ?self.0, %e, "could not remove a work directory; `pinfold image gc` will");
        }
    }
}

/// Bytes of decompressed layer per chunk handed to the applying thread.
const CHUNK: usize = 64 << 10;
/// Chunks the decompressing thread may run ahead.
const CHUNKS_AHEAD: usize = 16;

/// The applying end of the decompressing thread's channel. Written here
/// because it is the whole of what is needed: a `Read` over a channel of
/// byte chunks, handing drained buffers back for reuse.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<(Vec<u8>, usize)>>,
    free: std::sync::mpsc::Sender<Vec<u8>>,
    /// The current buffer; bytes `pos..len` of it are still to be read.
    cur: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            match self.rx.recv() {
                Ok(chunk) => {
                    let (buf, len) = chunk?;
                    let old = std::mem::replace(&mut self.cur, buf);
                    // Not the empty one it starts with: a zero-length
                    // buffer would read as the end of the stream.
                    if !old.is_empty() {
                        let _ = self.free.send(old);
                    }
                    (self.pos, self.len) = (0, len);
                }
                // The sender is gone: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    n: u64,
    digest: &'a Digest,
    f: Option<&'a (dyn Fn(Progress) + Send + Sync)>,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(f) = self.f {
            self.n += n as u64;
            f(Progress::Bytes(self.digest.clone(), self.n));
        }
        Ok(n)
    }
}
