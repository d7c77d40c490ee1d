//! Upgrade drills: which upgrade steps to take between two Cilium versions ([`path`]), and which
//! values each chart version declares ([`chart`]).

pub mod chart;
pub mod path;

pub use path::Minor;
