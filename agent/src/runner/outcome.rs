//! What a step's end means for the job, pure: from its exit code and
//! `pinfold exec`'s report to the job's state and reason, and the stop
//! reasons ([`stop`]) that override it. Unit-tested without running
//! anything.

use pinfold_api::wire::JobState;

/// Why a job is being stopped (0: it is not).
pub mod stop {
    /// Not stopped.
    pub const NONE: u8 = 0;
    /// A user cancelled it.
    pub const CANCELLED: u8 = 1;
    /// The agent is shutting down and the drain time is over.
    pub const SHUTDOWN: u8 = 2;
    /// The lease was lost (stale or revoked): nothing more may be written.
    pub const LEASE_LOST: u8 = 3;
}

/// How the job ends after step `name` exited with `code` (`None`: pinfold
/// killed it), or `None` when it goes on. `limit_reason` is the reason of
/// a report whose outcome is `limit_exceeded`; `job_time_up`, whether the
/// job's own deadline has passed.
pub fn step_end(
    name: &str,
    code: Option<i32>,
    limit_reason: Option<&str>,
    job_time_up: bool,
) -> Option<(JobState, String)> {
    Some(match code {
        Some(0) => return None,
        Some(_) if limit_reason.is_some() => (
            JobState::Failed,
            format!("step {name}: {}", limit_reason.unwrap_or_default()),
        ),
        Some(124) if job_time_up => (JobState::TimedOut, "job timeout reached".to_string()),
        Some(124) => (JobState::TimedOut, format!("step {name} timed out")),
        Some(125) => (
            JobState::Error,
            format!("step {name}: the sandbox failed (exit 125)"),
        ),
        Some(c) => (JobState::Failed, format!("step {name} exited {c}")),
        None => (JobState::Failed, format!("step {name} was killed")),
    })
}

/// The job's state and reason: a stop reason (`stopped`, one of [`stop`])
/// wins over how the steps ended (`end`; `None`: all succeeded).
pub fn job_end(stopped: u8, end: Option<(JobState, String)>) -> (JobState, Option<String>) {
    match stopped {
        stop::CANCELLED => (JobState::Cancelled, Some("cancelled".to_string())),
        stop::SHUTDOWN => (
            JobState::Cancelled,
            Some("the agent shut down before the job finished".to_string()),
        ),
        stop::LEASE_LOST => (JobState::Error, Some("lease lost".to_string())),
        _ => match end {
            Some((s, r)) => (s, Some(r)),
            None => (JobState::Succeeded, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: Option<i32>, limit: Option<&str>, time_up: bool) -> Option<(JobState, String)> {
        step_end("build", code, limit, time_up)
    }

    #[test]
    fn exit_codes_map_to_states_and_reasons() {
        assert_eq!(end(Some(0), None, false), None);
        assert_eq!(end(Some(0), Some("memory"), true), None, "0 is success");
        assert_eq!(
            end(Some(1), None, false),
            Some((JobState::Failed, "step build exited 1".into()))
        );
        assert_eq!(
            end(Some(137), Some("memory limit 64 MiB reached"), false),
            Some((
                JobState::Failed,
                "step build: memory limit 64 MiB reached".into()
            ))
        );
        assert_eq!(
            end(Some(124), None, false),
            Some((JobState::TimedOut, "step build timed out".into()))
        );
        assert_eq!(
            end(Some(124), None, true),
            Some((JobState::TimedOut, "job timeout reached".into()))
        );
        assert_eq!(
            end(Some(125), None, false),
            Some((
                JobState::Error,
                "step build: the sandbox failed (exit 125)".into()
            ))
        );
        assert_eq!(
            end(None, None, false),
            Some((JobState::Failed, "step build was killed".into()))
        );
    }

    #[test]
    fn a_stop_reason_wins_over_how_the_steps_ended() {
        let failed = || Some((JobState::Failed, "step build exited 1".to_string()));
        assert_eq!(job_end(stop::NONE, None), (JobState::Succeeded, None));
        assert_eq!(
            job_end(stop::NONE, failed()),
            (JobState::Failed, Some("step build exited 1".into()))
        );
        assert_eq!(
            job_end(stop::CANCELLED, failed()),
            (JobState::Cancelled, Some("cancelled".into()))
        );
        assert_eq!(
            job_end(stop::SHUTDOWN, None),
            (
                JobState::Cancelled,
                Some("the agent shut down before the job finished".into())
            )
        );
        assert_eq!(
            job_end(stop::LEASE_LOST, None),
            (JobState::Error, Some("lease lost".into()))
        );
    }
}
