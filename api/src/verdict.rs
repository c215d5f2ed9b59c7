//! The artifact verdict of a reproducibility check: whether several runs of
//! one job built the same artifacts. One pure function, [`compare`], made
//! for the coordinator's `verify: N` groups (runs keyed by runner id) and
//! for `pinfold verify` (runs keyed by their order).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Whether the runs of a `verify: N` job built identical artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every artifact was built by every run with the same sha256.
    pub reproducible: bool,
    /// Names of the artifacts that differ (or are missing from some run).
    pub differing: Vec<String>,
    /// Every artifact with its digest per runner, by name.
    pub artifacts: Vec<ArtifactDigests>,
}

/// One artifact across the runs of a `verify: N` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactDigests {
    /// Its path relative to /workspace.
    pub name: String,
    /// All runs have it with one digest.
    pub identical: bool,
    /// Runner id → sha256 (null when that run did not produce it).
    pub by_runner: BTreeMap<u64, Option<String>>,
}

/// Compares the artifacts of runs that all succeeded. `runs` gives each
/// run's key (the runner that ran it; for local runs, the run's position)
/// and its artifacts (name → sha256). Every artifact any run produced is
/// listed, by name, with its digest in each run (`None` where missing);
/// it is identical when every run has it with one digest. Reproducible:
/// nothing differs and there is something to compare.
pub fn compare<'a>(runs: impl IntoIterator<Item = (u64, &'a BTreeMap<String, String>)>) -> Verdict {
    let runs: Vec<_> = runs.into_iter().collect();
    let names: BTreeSet<&String> = runs.iter().flat_map(|(_, a)| a.keys()).collect();
    let artifacts: Vec<ArtifactDigests> = names
        .into_iter()
        .map(|name| {
            let by_runner: BTreeMap<u64, Option<String>> = runs
                .iter()
                .map(|(key, arts)| (*key, arts.get(name).cloned()))
                .collect();
            let distinct: BTreeSet<&Option<String>> = by_runner.values().collect();
            let identical = distinct.len() == 1 && by_runner.values().all(Option::is_some);
            ArtifactDigests {
                name: name.clone(),
                identical,
                by_runner,
            }
        })
        .collect();
    let differing: Vec<String> = artifacts
        .iter()
        .filter(|a| !a.identical)
        .map(|a| a.name.clone())
        .collect();
    Verdict {
        reproducible: differing.is_empty() && !artifacts.is_empty(),
        differing,
        artifacts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arts(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect()
    }

    #[test]
    fn identical_differing_and_missing() {
        let a = arts(&[("out/a", "11"), ("out/b", "22"), ("out/c", "33")]);
        let b = arts(&[("out/a", "11"), ("out/b", "99")]);
        let v = compare([(7, &a), (3, &b)]);
        assert!(!v.reproducible);
        assert_eq!(v.differing, ["out/b", "out/c"]);
        let names: Vec<_> = v.artifacts.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["out/a", "out/b", "out/c"]);
        assert!(v.artifacts[0].identical);
        assert_eq!(
            v.artifacts[2].by_runner,
            BTreeMap::from([(3, None), (7, Some("33".to_string()))])
        );
        let same = compare([(1, &a), (2, &a)]);
        assert!(same.reproducible && same.differing.is_empty());
    }

    #[test]
    fn nothing_to_compare_is_not_reproducible() {
        let none = BTreeMap::new();
        let v = compare([(1, &none), (2, &none)]);
        assert!(!v.reproducible && v.differing.is_empty() && v.artifacts.is_empty());
    }
}
