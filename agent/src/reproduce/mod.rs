//! `pinfold verify`: run a job several times from the same pinned inputs,
//! varying what a reproducible build must not depend on, and compare the
//! artifacts.
//!
//! * [`variation`]: the variations and how a run applies them.
//! * `runs`: one run, and a batch of them in parallel.
//! * [`Settings`]: what a check needs, and the job each run executes.
//! * `explain`: bisecting differing artifacts over the variations; diffoscope.
//! * [`report`]: the JSON report and the human summary.
//!
//! The artifact comparison is [`pinfold_api::verdict::compare`], the one
//! the coordinator's `verify: N` groups use. The binary reads the
//! environment (the state directory, `PINFOLD_VERIFY_TMPFS`, where
//! diffoscope is) and passes it in [`Settings`].

mod explain;
pub mod report;
mod runs;
mod settings;
pub mod variation;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use pinfold_api::JobSpec;
use pinfold_sandbox::ceiling::{Ceiling, CeilingError};
use pinfold_sandbox::image::ImageError;

pub use report::{Outcome, Report};
pub use runs::RunResult;
pub use settings::Settings;
pub use variation::{Variation, VariationError, parse_vary};

use crate::log::LogWriter;
use crate::runner::{RunError, stop};
use runs::{Plan, Shared, execute};

/// Errors that end a check before it has a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    /// The job asks for more than the runner's policy ceiling allows.
    #[error(transparent)]
    Ceiling(#[from] CeilingError),
    /// `--source` is not a directory.
    #[error("--source {}: not a directory", .0.display())]
    SourceNotDir(PathBuf),
    /// The output or work directory could not be made.
    #[error("preparing {}: {source}", path.display())]
    Prepare {
        /// The output directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The image could not be resolved.
    #[error(transparent)]
    Image(#[from] RunError),
    /// The image's layers could not be found in the store.
    #[error("image {image}: {source}")]
    Layers {
        /// The reference.
        image: String,
        /// The cause.
        #[source]
        source: ImageError,
    },
    /// The source could not be packed.
    #[error("--source {}: {source}", path.display())]
    Pack {
        /// The source directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be written.
    #[error("writing the report {}: {source}", path.display())]
    WriteReport {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The checks made before anything is prepared: the ceiling allows the
/// job, and the source is a directory.
pub fn check(
    spec: &JobSpec,
    ceiling: &Ceiling,
    source: Option<&Path>,
) -> Result<(), ReproduceError> {
    ceiling.choose(
        spec.policy.as_ref().map(|p| p.as_str()),
        spec.network,
        &spec.limits,
    )?;
    match source {
        Some(src) if !src.is_dir() => Err(ReproduceError::SourceNotDir(src.to_owned())),
        _ => Ok(()),
    }
}

/// Runs the check; progress and the summary go to `term`. The report is
/// written to `out/report.json` (and [`Settings::report`]) and returned.
pub fn run(s: Settings, term: &mut dyn Write) -> Result<Report, ReproduceError> {
    let out = s.out.clone();
    let prepare = |source| ReproduceError::Prepare {
        path: out.clone(),
        source,
    };
    let run_dir = s.home.join("run");
    std::fs::create_dir_all(&run_dir).map_err(prepare)?;
    // 0700 like the agent's: the runs' job file system sockets are in it.
    let work = tempfile::Builder::new()
        .prefix("verify-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&run_dir)
        .map_err(prepare)?;
    std::fs::create_dir_all(&out).map_err(prepare)?;

    // The image, resolved (pulled when missing) once; its layers are cached
    // in the store and stacked by every run's steps.
    let image = s.spec.image.as_str().to_owned();
    let probe_job = s.job(work.path().to_owned());
    let image_log = LogWriter::new(Box::new(std::io::stderr()), []).shared();
    probe_job.resolve_image(&image_log)?;
    let layers = image_layers(&s.rt.settings, &image).map_err(|source| ReproduceError::Layers {
        image: image.clone(),
        source,
    })?;
    // The source, packed once: every run unpacks the same tar.
    let (source_tar, source_digest) = match &s.source {
        None => (None, None),
        Some(src) => {
            let (p, d) = pack_source(src, work.path()).map_err(|source| ReproduceError::Pack {
                path: src.clone(),
                source,
            })?;
            (Some(p), Some(d))
        }
    };

    // Which variations apply here.
    let mut applied = BTreeSet::new();
    let mut not_applied = Vec::new();
    for v in Variation::ALL {
        if !s.vary.contains(&v) {
            not_applied.push((v, "not asked for (--vary)".to_string()));
            continue;
        }
        match variation::supported(v, &s.tmpfs) {
            Ok(()) => {
                applied.insert(v);
            }
            Err(why) => not_applied.push((v, why)),
        }
    }
    let sde = s
        .spec
        .env
        .iter()
        .find(|(k, _)| k.as_str() == "SOURCE_DATE_EPOCH")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(s.started_ms / 1000);
    let shared = Shared {
        settings: &s,
        work: work.path().to_owned(),
        source_tar,
        source_digest: source_digest.clone(),
        ctx: variation::Context {
            layers: &layers,
            source_date_epoch: sde,
        },
        image: image.clone(),
    };
    let cpus = crate::runner::allowed_cpus();
    let at_once = s.jobs.unwrap_or(cpus).min(s.runs).max(1);
    let _ = writeln!(
        term,
        "pinfold verify: {} runs of {} ({} at once); varying: {}",
        s.runs,
        s.job_file.display(),
        at_once,
        if applied.is_empty() {
            "nothing".to_string()
        } else {
            applied
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for (v, why) in &not_applied {
        if s.vary.contains(v) {
            let _ = writeln!(term, "  not varied: {}: {why}", v.name());
        }
    }

    let plans: Vec<Plan> = (1..=s.runs)
        .map(|k| Plan {
            label: format!("run-{k}"),
            k,
            vary: if k == 1 {
                BTreeSet::new()
            } else {
                applied.clone()
            },
        })
        .collect();
    let t_runs = Instant::now();
    let results = execute(&shared, plans, at_once);
    let runs_took = t_runs.elapsed();
    let failed = results.iter().any(|r| !r.succeeded());

    // Compare: every artifact any run produced, its digest in each run.
    let verdict = pinfold_api::verdict::compare(
        results
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64, &r.artifacts)),
    );
    let mut artifacts: Vec<report::ArtifactReport> = verdict
        .artifacts
        .into_iter()
        .map(|a| report::ArtifactReport {
            name: a.name,
            identical: a.identical,
            sha256: a.by_runner.into_values().collect(),
            flipped_by: None,
            bisect_failed_runs: None,
            diffoscope: None,
        })
        .collect();
    let differ = !verdict.differing.is_empty();

    let mut bisect_runs = Vec::new();
    if s.bisect && !failed && differ {
        let _ = writeln!(
            term,
            "pinfold verify: {} artifact(s) differ; bisecting over {} variations",
            verdict.differing.len(),
            applied.len()
        );
        bisect_runs = explain::bisect(&shared, &applied, &mut artifacts);
    }
    if let Some(tool) = &s.diffoscope {
        explain::diffoscope(tool, &out, &results, &mut artifacts);
    }

    // Without artifacts nothing differs: reproducible here (the
    // coordinator's groups call that "nothing to compare").
    let outcome = if s.stop.load(Ordering::SeqCst) != stop::NONE {
        Outcome::Interrupted
    } else if failed {
        Outcome::RunFailed
    } else if differ {
        Outcome::NotReproducible
    } else {
        Outcome::Reproducible
    };
    let report = Report {
        verdict: outcome,
        exit_code: outcome.exit_code(),
        job: s.job_file.clone(),
        image,
        source_sha256: source_digest,
        source_date_epoch: sde,
        runs_at_once: at_once,
        runs_took_ms: runs_took.as_millis() as u64,
        variations: report::Variations::new(&applied, &not_applied),
        artifacts,
        runs: results,
        bisect_runs,
        diffoscope: s.diffoscope.clone(),
        out: out.clone(),
    };
    let pretty = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
    let report_file = out.join("report.json");
    for f in std::iter::once(&report_file).chain(s.report.as_ref()) {
        std::fs::write(f, format!("{pretty}\n")).map_err(|source| ReproduceError::WriteReport {
            path: f.clone(),
            source,
        })?;
    }
    report.write_summary(term, &report_file);
    if let Err(e) = pinfold_sandbox::fs::remove::remove_tree(work.path()) {
        tracing::warn!(%e, "removing the verify work directory");
    }
    Ok(report)
}

/// Packs the source once into `work/source.tar`; returns it and its sha256.
fn pack_source(src: &Path, work: &Path) -> std::io::Result<(PathBuf, String)> {
    let mut tar = crate::source::pack_dir(src).map_err(std::io::Error::other)?;
    let path = work.join("source.tar");
    let mut f = std::fs::File::create(&path)?;
    std::io::copy(&mut tar, &mut f)?;
    drop(f);
    let digest = crate::artifacts::hash_file(&mut std::fs::File::open(&path)?)?;
    Ok((path, digest))
}

/// The image's cached layer directories, topmost first.
fn image_layers(
    settings: &pinfold_sandbox::Settings,
    image: &str,
) -> Result<Vec<PathBuf>, ImageError> {
    let store = pinfold_sandbox::image::Store::open_default(settings)?;
    let rec = store.find(image)?;
    store.layer_dirs(&rec)
}
