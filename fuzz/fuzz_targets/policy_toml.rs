//! The policy TOML parser and validator. A parsed policy renders back to
//! TOML (`pinfold policy show`) that parses to the same policy, and an
//! error is one line naming the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pinfold_sandbox::Policy;
use pinfold_sandbox::policy::PolicySource;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = Path::new("fuzz.toml");
    match Policy::parse(text, PolicySource::Builtin, shown) {
        Ok(policy) => {
            let rendered = policy.to_toml();
            let again = Policy::parse(&rendered, PolicySource::Builtin, shown)
                .unwrap_or_else(|e| panic!("the rendered policy does not parse: {e}\n{rendered}"));
            assert_eq!(
                again, policy,
                "the policy changed through to_toml:\n{rendered}"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "a policy error spans lines: {msg:?}");
            assert!(
                msg.contains("fuzz.toml"),
                "a policy error does not name the file: {msg:?}"
            );
        }
    }
});
