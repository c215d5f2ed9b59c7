//! What a container takes from a stored image: its cached layers (leased
//! while the container runs), its Env and its WorkingDir.

use std::path::PathBuf;

use super::store::{ImageError, ImageRecord, LayerLease, Store};

/// An image made ready to run.
pub struct ImageRuntime {
    /// The cached layer directories, topmost first.
    pub layers: Vec<PathBuf>,
    /// The image's Env, in order.
    pub env: Vec<(String, String)>,
    /// The image's WorkingDir, when it is absolute.
    pub workdir: Option<PathBuf>,
    /// Keeps `image gc` off the layers while it is held.
    pub lease: LayerLease,
}

impl Store {
    /// The layers (leased), Env and WorkingDir of `rec`.
    pub fn runtime(&self, rec: &ImageRecord) -> Result<ImageRuntime, ImageError> {
        let started = std::time::Instant::now();
        let config = self.config(rec)?;
        let (mut env, mut workdir) = (Vec::new(), None);
        if let Some(c) = config.config() {
            for kv in c.env().iter().flatten() {
                if let Some((k, v)) = kv.split_once('=') {
                    env.push((k.to_owned(), v.to_owned()));
                }
            }
            workdir = c
                .working_dir()
                .as_ref()
                .filter(|w| w.starts_with('/'))
                .map(PathBuf::from);
        }
        let (lease, layers) = self.lease(rec)?;
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            layers = layers.len(),
            "image resolved, its cached layers leased for the overlay"
        );
        Ok(ImageRuntime {
            layers,
            env,
            workdir,
            lease,
        })
    }
}
