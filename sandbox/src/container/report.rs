//! How a run ended, as `pinfold exec --report FILE` writes it: one JSON
//! object (exit_code, outcome, limit, reason, limits_mechanism, and on a
//! run that started limits_detail, limits_uncharged and degraded: the
//! protections this kernel lacks, each with what stood in for it) for
//! scripts and the runner, which reads the limit and its reason from it.

use std::time::Duration;

use super::{ContainerError, Finished, Outcome, cgroup, memory};

/// A run's ending, for the caller to print and for `--report`.
#[derive(Debug, Clone)]
pub struct ExitReport {
    /// The exit status of `pinfold exec`.
    pub exit_code: i32,
    /// The limit that ended the run (`wall_time` for the timeout).
    pub limit: Option<&'static str>,
    /// Why the run ended early (a limit or the timeout), or the error.
    pub reason: Option<String>,
    /// The `--report` object.
    pub json: serde_json::Value,
}

impl ExitReport {
    /// The report of `result`; `timeout` is the one the run had.
    pub fn new(result: &Result<Finished, ContainerError>, timeout: Option<Duration>) -> ExitReport {
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                return ExitReport {
                    exit_code: e.exit_code(),
                    limit: None,
                    reason: Some(e.to_string()),
                    json: serde_json::json!({
                        "exit_code": e.exit_code(),
                        "outcome": "error",
                        "limit": null,
                        "reason": e.to_string(),
                        "limits_mechanism": null,
                        "degraded": null,
                    }),
                };
            }
        };
        let outcome = done.outcome;
        let (limit, reason) = match outcome {
            Outcome::TimedOut => (
                Some("wall_time"),
                Some(format!(
                    "timed out after {}; every process of the container was killed",
                    humantime::format_duration(timeout.unwrap_or_default())
                )),
            ),
            Outcome::LimitExceeded(b) => (Some(b.name()), Some(b.reason())),
            _ => (None, None),
        };
        let kind = match outcome {
            Outcome::Exited(_) => "exited",
            Outcome::Signaled(_) => "signaled",
            Outcome::TimedOut => "timed_out",
            Outcome::LimitExceeded(_) => "limit_exceeded",
        };
        ExitReport {
            exit_code: outcome.exit_code(),
            limit,
            json: serde_json::json!({
                "exit_code": outcome.exit_code(),
                "outcome": kind,
                "limit": limit,
                "reason": reason,
                "limits_mechanism": done.limits.name(),
                "limits_detail": done.limits.to_string(),
                // What the fallback cannot charge to limits.memory.
                "limits_uncharged": match done.limits {
                    cgroup::Mechanism::Fallback(_) => Some(memory::UNCHARGED),
                    cgroup::Mechanism::Cgroup(_) => None,
                },
                "degraded": done.degraded,
            }),
            reason,
        }
    }
}
