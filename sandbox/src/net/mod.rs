//! The network policy's home: everything that decides or enforces how a
//! container reaches the network.
//!
//! * [`mode`]: the effective mode, a pure decision (the policy's mode and
//!   what a job asks for, the stricter wins, a wider ask is refused).
//! * [`allowlist`]: the destinations of mode `allowlist`, parsed once when
//!   the policy is validated ([`crate::policy::NetworkPolicy::allowlist`])
//!   and handed as that value to the proxy.
//! * `proxy`: the `allowlist` HTTP(S) proxy the parent serves.
//! * `pasta`: the `egress` user-mode stack the parent attaches.
//! * `netns`: the container's network namespace (loopback, the `egress`
//!   refusal rules, the proxy's listening socket).
//! * [`ranges`] and [`host`]: leaves, which addresses a job may reach and
//!   what the host's own network is.
//!
//! Direction: `container` imports `net`, never the other way round; nothing
//! here imports `container`. Errors are each module's own (`AllowlistError`,
//! `PastaError`, `HostNetError`, nix's `Errno` for the netns steps) and the
//! container wraps them.

pub mod allowlist;
pub mod host;
pub mod mode;
pub(crate) mod netns;
pub(crate) mod pasta;
pub(crate) mod proxy;
pub mod ranges;

pub use mode::{MoreOpen, effective};
pub use pasta::PastaError;

/// The request-head parser of the `allowlist` proxy (for the fuzz target).
#[doc(hidden)]
pub use proxy::parse_head as parse_proxy_head;
