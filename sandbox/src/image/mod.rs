//! The OCI image store: references, registry client, verification, safe
//! layer application and the content-addressed layer cache.
//!
//! * [`reference`]: `docker://`, `oci:`, `oci-archive:`, `docker-archive:`.
//! * [`digest`]: sha256 digests and readers that verify while streaming.
//! * [`registry`]: the OCI distribution protocol (pull only).
//! * [`archive`]: OCI layouts and docker-save archives on disk.
//! * [`layer`]: layer tar → directory, hostile-input safe; flattening.
//! * [`owner`]: who owns layer files (the image's ids over the container's range).
//! * [`runtime`]: an image's leased layers, Env and WorkingDir, for a container.
//! * [`store`]: `$PINFOLD_HOME/images`: resolution, cache, locks, gc.

pub mod archive;
pub mod digest;
pub mod layer;
pub mod owner;
pub mod reference;
#[cfg(feature = "registry")]
pub mod registry;
pub mod runtime;
pub mod store;

pub use digest::Digest;
pub use layer::Limits;
pub use reference::ImageRef;
pub use runtime::ImageRuntime;
pub use store::{ImageError, ImageRecord, LayerLease, PullOptions, Store};

use std::io;
use std::path::{Path, PathBuf};

/// A file operation of the store that failed: what was done (`op`), to
/// which path. The store and the layer ownership report one the same way.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathIoError {
    /// What was being done, e.g. "read".
    pub op: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

impl PathIoError {
    /// `op` on `path` failed with `source`.
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> PathIoError {
        let path = path.to_owned();
        PathIoError { op, path, source }
    }

    /// [`PathIoError::new`] for `map_err`.
    pub fn at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PathIoError + use<> {
        let path = path.to_owned();
        move |source| PathIoError { op, path, source }
    }
}
