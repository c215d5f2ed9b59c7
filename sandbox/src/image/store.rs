//! The image store under `$PINFOLD_HOME/images`:
//!
//! ```text
//! images/<manifest hex>.json   one record per image (names, config, layers)
//! blobs/sha256/<hex>           verified manifests, indexes and configs
//! layers/<diff_id hex>/        unpacked layers, shared between images
//! locks/<hex>.lock             one writer per layer at a time (flock)
//! tmp/                         work in progress (same file system: rename is atomic)
//! store.lock                   shared by pulls, exclusive for gc and rm
//! format                       the store's format, FORMAT below
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
//!
//! This file keeps the store itself (its layout, records, locks, lookups,
//! leases and gc); `manifest` parses what an image's manifests, indexes
//! and config say, `fetch` brings an image's bytes in.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::PathIoError;
#[cfg(feature = "registry")]
use super::archive::Root;
use super::archive::{ArchiveError, Local};
use super::digest::{Digest, DigestError, VerifyError};
use super::layer::{LayerError, Limits};
use super::owner::{OwnerError, Ownership};
use super::reference::{ImageRef, ReferenceError};
#[cfg(feature = "registry")]
use super::registry::{Registry, RegistryError};
use crate::settings::Settings;

mod fetch;
mod manifest;

use fetch::Source;
use manifest::wanted_platform;
#[doc(hidden)]
pub use manifest::{Resolved, config_descriptor, read_config, resolve};

/// Errors from the image store (gathers every image module's errors).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[cfg(feature = "registry")]
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A registry image asked of a build without the registry client.
    #[error(
        "{0}: this build has no registry client (pinfold-exec runs what the store holds); fetch it first with `pinfold image pull`"
    )]
    NoRegistry(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// A store file could not be read or written.
    #[error(transparent)]
    Io(#[from] PathIoError),
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

/// The store's format. 2: layers keep whiteouts as 0/0 character devices
/// (see `layer.rs`). 1 (no `format` file) kept xattr whiteouts, which an
/// unprivileged overlay ignores before Linux 6.7.
const FORMAT: &str = "2";

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

/// The store.
pub struct Store {
    root: PathBuf,
    owner: Ownership,
    /// The platform images are resolved for: `(os, arch, variant)`.
    platform: (String, String, Option<String>),
    /// The registry credential files, in search order.
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
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
            fs::create_dir_all(&p).map_err(PathIoError::at("create", &p))?;
        }
        // 0700, also when an older pinfold left it open: layer files keep
        // their image's owners and modes, so no other local user may reach them.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(PathIoError::at("chmod 0700", root))?;
        let store = Store {
            root: root.to_owned(),
            owner: Ownership::for_store(root, settings)?,
            platform: wanted_platform(settings.platform.as_deref()),
            auth_files: settings.registry_auth_files.clone(),
        };
        store.upgrade()?;
        Ok(store)
    }

    /// Brings a store of an older format to [`FORMAT`]: its image records
    /// and layers go to `tmp/` (`image gc` removes them), so each image is
    /// fetched again on its next use (`exec --image`, `run` and the agent
    /// pull a missing image) instead of running with whiteouts the kernel
    /// may ignore. Converting layers in place would need the sub-id helper
    /// for files owned by mapped ids, for a one-time upgrade.
    fn upgrade(&self) -> Result<()> {
        let file = self.root.join("format");
        let current = || fs::read_to_string(&file).is_ok_and(|s| s.trim() == FORMAT);
        if current() {
            return Ok(());
        }
        let _excl = self.lock("store.lock", true)?;
        if current() {
            return Ok(());
        }
        let mut moved = 0;
        for sub in ["images", "layers"] {
            let dir = self.root.join(sub);
            for e in fs::read_dir(&dir).map_err(PathIoError::at("read", &dir))? {
                let from = e.map_err(PathIoError::at("read", &dir))?.path();
                let name = from.file_name().unwrap_or_default().to_string_lossy();
                let to = self.root.join("tmp").join(format!("format1-{sub}-{name}"));
                fs::rename(&from, &to).map_err(PathIoError::at("move aside", &from))?;
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::warn!(
                store = %self.root.display(),
                "image store upgraded to format {FORMAT}: each image is fetched again on its next use (older layers kept whiteouts Linux before 6.7 ignores)"
            );
        }
        self.write_atomic(&file, format!("{FORMAT}\n").as_bytes())
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<Flock<File>> {
        let p = self.root.join(name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(PathIoError::at("open the lock", &p))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(f, arg).map_err(|(_, e)| PathIoError::new("lock", &p, e.into()).into())
    }

    /// Writes `bytes` to `path` atomically (temp file in `tmp/`, then rename).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.root.join("tmp");
        let mut f = tempfile::NamedTempFile::new_in(&tmp)
            .map_err(PathIoError::at("create a file in", &tmp))?;
        f.write_all(bytes)
            .map_err(PathIoError::at("write", f.path()))?;
        f.persist(path)
            .map_err(|e| PathIoError::new("rename into", path, e.error))?;
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
            #[cfg(not(feature = "registry"))]
            ImageRef::Docker { .. } => return Err(ImageError::NoRegistry(r.to_string())),
            #[cfg(feature = "registry")]
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

    /// Every image record.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(PathIoError::at("read", &dir))? {
            let e = e.map_err(PathIoError::at("read", &dir))?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let b = fs::read(&p).map_err(PathIoError::at("read", &p))?;
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

    /// The image stored under exactly the name `r` gives (its registry,
    /// repository and digest, or its local path): never another image that
    /// merely has the same digest under another name.
    pub fn find_named(&self, r: &ImageRef) -> Result<Option<ImageRecord>> {
        let name = match r {
            ImageRef::Docker { .. } => r.to_string(),
            _ => local_name(r),
        };
        Ok(self
            .list()?
            .into_iter()
            .find(|rec| rec.names.contains(&name)))
    }

    /// Finds an image by name (as pulled), digest (of the manifest or of
    /// what the reference named, whatever the name before `@`) or a unique
    /// prefix of at least 12 hex digits. For the caller's own references;
    /// one from someone else's job file wants [`Store::find_named`].
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
        let b = fs::read(&p).map_err(PathIoError::at("read", &p))?;
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
        fs::remove_file(&p).map_err(PathIoError::at("remove", &p))?;
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
        for e in fs::read_dir(&layers_dir).map_err(PathIoError::at("read", &layers_dir))? {
            let name = e
                .map_err(PathIoError::at("read", &layers_dir))?
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
                    return Err(PathIoError::new("lock", &p, e.into()).into());
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
            for e in fs::read_dir(&dir).map_err(PathIoError::at("read", &dir))? {
                let e = e.map_err(PathIoError::at("read", &dir))?;
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
