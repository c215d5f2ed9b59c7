//! The allowlist proxy's request-head parser (a job's bytes, before the
//! allowlist check). An accepted head names a non-empty host and a port
//! other than 0; a forwarded head is one request that ends the head once,
//! with `Connection: close`, and carries no hop-by-hop proxy headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_sandbox::net::parse_proxy_head;

fuzz_target!(|data: &[u8]| {
    let Ok((host, port, forward)) = parse_proxy_head(data) else {
        return;
    };
    assert!(!host.is_empty() && port != 0, "accepted {host:?}:{port}");
    assert!(!host.contains('@'), "userinfo in the checked host {host:?}");
    if let Some(head) = forward {
        let text = std::str::from_utf8(&head).expect("the forwarded head is UTF-8");
        assert!(text.ends_with("Connection: close\r\n\r\n"), "{text:?}");
        assert_eq!(
            text.matches("\r\n\r\n").count(),
            1,
            "the forwarded head ends more than once: {text:?}"
        );
        for line in text.split("\r\n").skip(1) {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            assert!(!name.starts_with("proxy-"), "forwarded {line:?}");
        }
    }
});
