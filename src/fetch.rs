//! How the commands that may fetch an image (`pinfold image`, `pinfold
//! exec`) take its options and show its progress: CLI plumbing over the
//! sandbox's image store.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use pinfold_sandbox::image::store::Progress;
use pinfold_sandbox::image::{ImageError, ImageRef, Limits, PullOptions, Store};

/// Options of anything that may fetch an image.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Allow plain HTTP to this registry HOST[:PORT] (loopback always may). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// Most bytes of file content an image may unpack to.
    #[arg(long, default_value_t = Limits::default().max_bytes)]
    pub max_unpacked_bytes: u64,
    /// Most tar entries an image may have.
    #[arg(long, default_value_t = Limits::default().max_entries)]
    pub max_entries: u64,
}

impl FetchArgs {
    /// Options for the store, with a progress bar when stderr is a terminal.
    pub fn options(&self, allow_tag: bool) -> PullOptions {
        PullOptions {
            allow_tag,
            insecure: self.insecure.clone(),
            limits: Limits {
                max_bytes: self.max_unpacked_bytes,
                max_entries: self.max_entries,
            },
            progress: std::io::stderr().is_terminal().then(progress_bars),
        }
    }
}

fn progress_bars() -> Arc<dyn Fn(Progress) + Send + Sync> {
    let multi = indicatif::MultiProgress::new();
    let bars: Mutex<HashMap<String, indicatif::ProgressBar>> = Mutex::new(HashMap::new());
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    Arc::new(move |p| {
        let Ok(mut bars) = bars.lock() else { return };
        match p {
            Progress::Start(d, size) => {
                let b = multi.add(indicatif::ProgressBar::new(size));
                b.set_style(style.clone());
                b.set_prefix(d.hex()[..12].to_owned());
                bars.insert(d.to_string(), b);
            }
            Progress::Bytes(d, n) => {
                if let Some(b) = bars.get(&d.to_string()) {
                    b.set_position(n);
                }
            }
            Progress::Done(d, cached) => match bars.remove(&d.to_string()) {
                Some(b) => b.finish(),
                None if cached => {
                    let _ = multi.println(format!("{} cached", &d.hex()[..12]));
                }
                None => {}
            },
        }
    })
}

/// Finds REF in the store; when it is missing and REF names a source
/// (a pinned registry reference or an on-disk image), fetches it first.
pub fn resolve(
    store: &Store,
    reference: &str,
    fetch: &FetchArgs,
) -> Result<pinfold_sandbox::image::ImageRecord, ImageError> {
    match store.find(reference) {
        Err(ImageError::NotFound(_)) => {
            let r = ImageRef::parse_pinned(reference, false)?;
            store.pull(&r, &fetch.options(false))
        }
        other => other,
    }
}
