//! Image resolution as the store does it on a pull: an index or manifest
//! (nested indexes, media types, platform choice), then the config and the
//! pairing of layers with diff_ids. The input is the manifest or index,
//! then optionally a 0xFF byte and the config (0xFF is in no UTF-8 text, so
//! neither half can contain it). Without a manifest of its own the config
//! half is read against a one-layer manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageManifest;
use pinfold_sandbox::image::Digest;
use pinfold_sandbox::image::store::{Resolved, config_descriptor, read_config, resolve};

const ONE_LAYER: &str = r#"{"schemaVersion":2,
 "mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,
   "digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1,
   "digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}]}"#;

fuzz_target!(|data: &[u8]| {
    let (head, config) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let platform = ("linux".to_owned(), "amd64".to_owned(), None);
    let digest = Digest::of(head);
    let mut manifest = None;
    for depth in [0, 4] {
        for expected in [
            None,
            Some("application/vnd.oci.image.index.v1+json"),
            Some("application/vnd.oci.image.manifest.v1+json"),
        ] {
            if let Ok(Resolved::Manifest(m)) =
                resolve(head, &digest, expected, None, depth, &platform)
            {
                manifest = Some(*m);
            }
        }
    }
    let manifest = match manifest {
        Some(m) => m,
        None => serde_json::from_str::<ImageManifest>(ONE_LAYER).expect("the fixed manifest"),
    };
    if let Ok((cdigest, _)) = config_descriptor(&manifest) {
        if let Some(c) = config {
            if let Ok((_, layers)) = read_config(&manifest, &cdigest, c) {
                assert_eq!(layers.len(), manifest.layers().len());
            }
        }
    }
});
