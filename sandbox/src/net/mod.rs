//! Network code that does not touch a container: which addresses a job may
//! reach ([`ranges`]) and what the host's own network is ([`host`]).
//!
//! Leaf modules: nothing here imports `container` or `policy`, so both the
//! allowlist proxy and the egress rules can use them without a cycle.

pub mod host;
pub mod ranges;
