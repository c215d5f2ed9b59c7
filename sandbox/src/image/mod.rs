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
