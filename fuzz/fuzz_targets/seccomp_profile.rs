//! The seccomp profile compiler, in both formats it reads: pinfold's
//! (seccompiler JSON with `deny`/`enosys` filters) and Docker/OCI's
//! (`defaultAction`), told apart by the text as `Filters::compile` does.
//! A profile that compiles yields programs the kernel can load: at least
//! one, none empty, none over BPF_MAXINSNS (4096) instructions.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pinfold_sandbox::container::seccomp::Filters;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else {
        return;
    };
    if let Ok(filters) = Filters::compile("fuzz.json", text) {
        assert!(
            !filters.programs.is_empty(),
            "a compiled profile has no program"
        );
        for p in &filters.programs {
            assert!(!p.is_empty(), "an empty BPF program");
            assert!(p.len() <= 4096, "a BPF program of {} instructions", p.len());
        }
    }
});
