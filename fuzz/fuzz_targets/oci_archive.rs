//! Images on disk: the input is a tar (an `oci-archive:` or a
//! `docker-archive:`), indexed by `Local::archive`, then read as an OCI
//! layout (`index.json`) and as a `docker save` archive (`manifest.json`,
//! the config, the layers it names).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pinfold_sandbox::image::archive::Local;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("image.tar");
    std::fs::write(&path, data).expect("write the archive");
    let Ok(local) = Local::archive(&path) else {
        return;
    };
    if let Ok(root) = local.oci_root(None) {
        let _ = local.open(&root.digest);
    }
    let Ok(mut local) = Local::archive(&path) else {
        return;
    };
    if let Ok(root) = local.docker_root() {
        let bytes = root
            .bytes
            .expect("a docker archive's manifest is synthesized");
        root.digest
            .verify("synthesized manifest", &bytes)
            .expect("the synthesized manifest matches its digest");
    }
});
