#![warn(missing_docs)]
//! kubedrill's probe agent: a small static binary that kubedrill copies to nodes and runs in
//! pods' network namespaces (pods with only the `pause` image) and in the host namespace, to
//! measure every loss window of pod-to-pod and service traffic during an upgrade.
//!
//! - `serve`: TCP and UDP echo responders ([`serve`]).
//! - `run`: ICMP, UDP, TCP connect-echo and held-connection ([`held`]) probers from a JSON spec ([`spec`]), one thread per
//!   probe ([`engine`]), reporting loss windows ([`window`]) as JSON lines ([`events`]).

pub mod clock;
pub mod cmd;
pub mod engine;
pub mod events;
pub mod held;
pub mod icmp;
pub mod netns;
pub mod payload;
pub mod serve;
pub mod spec;
pub mod stop;
pub mod tcp;
pub mod udp;
pub mod window;
