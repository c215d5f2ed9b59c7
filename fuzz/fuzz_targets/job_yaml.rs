//! The job YAML parser: a job file comes from a stranger's pull request.
//! Beyond "never panics": a job the coordinator accepts travels to the
//! runner as JSON inside the lease, so it must survive that round trip
//! unchanged, and a refusal is one line (an API error body, a log line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_api::job::JobSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match JobSpec::from_yaml(text) {
        Ok(spec) => {
            let json = serde_json::to_string(&spec).expect("a parsed job serializes");
            let back: JobSpec = serde_json::from_str(&json).unwrap_or_else(|e| {
                panic!("the lease JSON of an accepted job does not parse: {e}")
            });
            assert_eq!(
                back, spec,
                "the job changed on its way through the lease JSON"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "a job file error spans lines: {msg:?}");
        }
    }
});
