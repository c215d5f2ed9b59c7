//! `pinfold image`: pull, import, list, inspect, remove, gc and unpack images.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pinfold_sandbox::image::store::Progress;
use pinfold_sandbox::image::{ImageError, ImageRef, Limits, PullOptions, Store};

/// Manage the image store ($PINFOLD_HOME/images).
#[derive(Debug, clap::Subcommand)]
#[command(
    after_help = "Environment: PINFOLD_HOME, REGISTRY_AUTH_FILE, PINFOLD_PLATFORM (os/arch[/variant])."
)]
pub enum Command {
    /// Pull an image from a registry: [docker://]HOST/REPO@sha256:DIGEST.
    Pull {
        /// The reference (a digest is required unless --allow-tag).
        reference: String,
        /// Resolve a tag once and print the pinned reference.
        #[arg(long)]
        allow_tag: bool,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Import an image: oci:DIR[:TAG|@sha256:D], oci-archive:FILE[:TAG], docker-archive:FILE.
    Import {
        /// The reference.
        reference: String,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// List the images in the store.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an image's record and config.
    Inspect {
        /// Name, digest or id prefix.
        reference: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image from the store (its layers go at the next gc).
    Rm {
        /// Name, digest or id prefix.
        reference: String,
    },
    /// Remove cached layers and blobs no image references.
    Gc,
    /// Write an image's root file system into DIR (a plain tree, for inspection).
    Unpack {
        /// Name, digest or id prefix (pulled or imported first when missing).
        reference: String,
        /// Target directory (created; must be empty).
        dir: PathBuf,
        #[command(flatten)]
        fetch: FetchArgs,
    },
}

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

fn run_inner(c: Command) -> Result<(), ImageError> {
    let store = Store::open_default()?;
    match c {
        Command::Pull {
            reference,
            allow_tag,
            fetch,
        } => {
            let r = ImageRef::parse_pinned(&reference, allow_tag)?;
            if !r.is_registry() {
                return Err(ImageError::Malformed {
                    what: reference,
                    why: "is not a registry reference; use `pinfold image import` for oci:, oci-archive: and docker-archive:".into(),
                });
            }
            let rec = store.pull(&r, &fetch.options(allow_tag))?;
            println!("{}", rec.names[0]);
        }
        Command::Import { reference, fetch } => {
            let r = ImageRef::parse(&reference)?;
            if r.is_registry() {
                return Err(ImageError::Malformed {
                    what: reference,
                    why: "is a registry reference; use `pinfold image pull`".into(),
                });
            }
            let rec = store.pull(&r, &fetch.options(false))?;
            println!("{}", rec.id);
        }
        Command::Ls { json } => {
            let all = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                println!("{:<19} {:>4} {:<12} NAMES", "ID", "LAYERS", "PLATFORM");
                for r in all {
                    println!(
                        "{:<19} {:>6} {:<12} {}",
                        &r.id.to_string()[..19],
                        r.layers.len(),
                        r.platform,
                        r.names.join(", ")
                    );
                }
            }
        }
        Command::Inspect { reference, json } => {
            let rec = store.find(&reference)?;
            let config = store.config(&rec)?;
            let v = serde_json::json!({ "image": rec, "config": config, "layer_dirs": store.layer_dirs(&rec)? });
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("id:       {}", rec.id);
                println!("names:    {}", rec.names.join(", "));
                println!("platform: {}", rec.platform);
                println!("config:   {}", rec.config);
                if let Some(c) = config.config() {
                    println!(
                        "env:      {}",
                        c.env().clone().unwrap_or_default().join(" ")
                    );
                    println!("workdir:  {}", c.working_dir().clone().unwrap_or_default());
                    println!(
                        "cmd:      {}",
                        c.cmd().clone().unwrap_or_default().join(" ")
                    );
                }
                for l in &rec.layers {
                    println!(
                        "layer:    {} {} ({} bytes, diff_id {})",
                        l.digest, l.media_type, l.size, l.diff_id
                    );
                }
            }
        }
        Command::Rm { reference } => {
            let rec = store.remove(&reference)?;
            println!("removed {}", rec.id);
        }
        Command::Gc => {
            let n = store.gc()?;
            println!("removed {n} unreferenced entries");
        }
        Command::Unpack {
            reference,
            dir,
            fetch,
        } => {
            let rec = resolve(&store, &reference, &fetch)?;
            store.unpack(&rec, &dir)?;
        }
    }
    Ok(())
}

/// Runs the subcommand; returns the exit status.
pub fn run(c: Command) -> i32 {
    match run_inner(c) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pinfold image: {e}");
            1
        }
    }
}
