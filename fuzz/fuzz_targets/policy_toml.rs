//! The policy TOML parser and validator. A parsed policy renders back to
//! TOML (`pinfold policy show`) that parses to the same policy, and an
//! error is one line naming the file.
#![no_main]

mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pinfold_sandbox::Policy;
use pinfold_sandbox::policy::PolicySource;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else {
        return;
    };
    let shown = Path::new("fuzz.toml");
    let refused = common::check_parse(
        Policy::parse(text, PolicySource::Builtin, shown),
        |policy| {
            let rendered = policy.to_toml();
            let again = Policy::parse(&rendered, PolicySource::Builtin, shown)
                .unwrap_or_else(|e| panic!("the rendered policy does not parse: {e}\n{rendered}"));
            (
                again,
                format!("the policy changed through to_toml:\n{rendered}"),
            )
        },
        "a policy error",
    );
    if let Some(msg) = refused {
        assert!(
            msg.contains("fuzz.toml"),
            "a policy error does not name the file: {msg:?}"
        );
    }
});
