//! The effective network mode: a pure decision, no I/O.
//!
//! Two callers make it with the same rule: the runner's ceiling
//! ([`crate::ceiling`]), when a job asks for a mode under the policy it
//! picked, and `pinfold exec` ([`crate::container`]), when `--network` asks
//! for one under the policy it loaded. No ask takes the policy's mode; an
//! ask at most as open (`none < allowlist < egress`) wins; a more open one
//! is refused and each caller words the refusal for its own user.

use pinfold_api::job::NetworkMode;

/// A refusal: the ask is more open than the policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("network mode {asked} is more open than the policy's ({policy})")]
pub struct MoreOpen {
    /// The mode asked for.
    pub asked: NetworkMode,
    /// The policy's mode (the ceiling).
    pub policy: NetworkMode,
}

/// The mode a container runs with: `policy`'s mode, narrowed by `asked`.
pub fn effective(policy: NetworkMode, asked: Option<NetworkMode>) -> Result<NetworkMode, MoreOpen> {
    match asked {
        None => Ok(policy),
        Some(asked) if asked.openness() <= policy.openness() => Ok(asked),
        Some(asked) => Err(MoreOpen { asked, policy }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [NetworkMode; 3] = [
        NetworkMode::None,
        NetworkMode::Allowlist,
        NetworkMode::Egress,
    ];

    #[test]
    fn no_ask_takes_the_policys_mode() {
        for policy in ALL {
            assert_eq!(effective(policy, None), Ok(policy));
        }
    }

    #[test]
    fn the_stricter_wins_and_a_wider_ask_is_refused() {
        use NetworkMode::{Allowlist, Egress, None as Off};
        // (policy, asked, the effective mode or Err for a refusal)
        let table = [
            (Off, Off, Ok(Off)),
            (Off, Allowlist, Err(())),
            (Off, Egress, Err(())),
            (Allowlist, Off, Ok(Off)),
            (Allowlist, Allowlist, Ok(Allowlist)),
            (Allowlist, Egress, Err(())),
            (Egress, Off, Ok(Off)),
            (Egress, Allowlist, Ok(Allowlist)),
            (Egress, Egress, Ok(Egress)),
        ];
        for (policy, asked, want) in table {
            let want = want.map_err(|()| MoreOpen { asked, policy });
            assert_eq!(
                effective(policy, Some(asked)),
                want,
                "{policy} asked {asked}"
            );
        }
    }

    #[test]
    fn the_refusal_names_both_modes() {
        let e = effective(NetworkMode::None, Some(NetworkMode::Egress)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network mode egress is more open than the policy's (none)"
        );
    }
}
