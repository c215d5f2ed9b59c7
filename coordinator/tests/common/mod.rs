//! What the coordinator's test binaries and its benchmark share: a
//! coordinator opened in this process with tokens the caller knows.

use std::collections::BTreeMap;
use std::path::Path;

use pinfold_coordinator::{AppState, Config, open};

/// A coordinator on the state directory `dir` (and `config.store`, when
/// set) whose admin and registration tokens are `[admin, registration]`,
/// and whose job secrets are `secrets`. Given both tokens, it mints none.
pub async fn coordinator(
    dir: &Path,
    config: Config,
    [admin, registration]: [&str; 2],
    secrets: BTreeMap<String, String>,
) -> AppState {
    let (state, boot) = open(
        dir,
        config,
        Some(admin.into()),
        Some(registration.into()),
        secrets,
    )
    .await
    .unwrap();
    assert!(boot.new_admin_token.is_none() && boot.new_registration_token.is_none());
    state
}
