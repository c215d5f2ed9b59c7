//! The job YAML parser: a job file comes from a stranger's pull request.
//! Beyond "never panics": a job the coordinator accepts travels to the
//! runner as JSON inside the lease, so it must survive that round trip
//! unchanged, and a refusal is one line (an API error body, a log line).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pinfold_api::job::JobSpec;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else {
        return;
    };
    common::check_parse(
        JobSpec::from_yaml(text),
        |spec| {
            let json = serde_json::to_string(spec).expect("a parsed job serializes");
            let back: JobSpec = serde_json::from_str(&json).unwrap_or_else(|e| {
                panic!("the lease JSON of an accepted job does not parse: {e}")
            });
            (
                back,
                "the job changed on its way through the lease JSON".into(),
            )
        },
        "a job file error",
    );
});
