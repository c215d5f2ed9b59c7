//! `pinfold image`: pull, import, list, inspect, remove, gc and unpack images.

use std::path::PathBuf;

use pinfold_sandbox::image::{ImageError, ImageRef, Store};

use crate::fetch::{FetchArgs, resolve};

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

fn run_inner(c: Command) -> Result<(), ImageError> {
    let store = Store::open_default(&crate::env::settings())?;
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
