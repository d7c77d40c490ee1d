//! Upgrade drills: which upgrade steps to take between two Cilium versions ([`path`]), and how the
//! release's user-supplied Helm values change at each step ([`migrate`]), checked against the
//! chart's own defaults ([`chart`]).

pub mod chart;
pub mod migrate;
pub mod path;
pub mod probes;

pub use path::Minor;
