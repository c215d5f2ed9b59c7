//! Job secrets given to the binary in its environment as
//! `PINFOLD_SECRET_<NAME>`. The one place pinfold reads them: the libraries
//! (the coordinator, the agent, the runner) are handed the values.

use std::collections::BTreeMap;

const PREFIX: &str = "PINFOLD_SECRET_";

/// Every `PINFOLD_SECRET_<NAME>` in the environment: NAME → value. A name
/// or value that is not UTF-8 is passed over.
pub fn from_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let name = k.to_str()?.strip_prefix(PREFIX)?;
            if name.is_empty() {
                return None;
            }
            Some((name.to_owned(), v.into_string().ok()?))
        })
        .collect()
}

/// The secrets among `names` that the environment supplies; no other is
/// taken.
pub fn named<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut all = from_env();
    names
        .into_iter()
        .filter_map(|n| all.remove_entry(n))
        .collect()
}
