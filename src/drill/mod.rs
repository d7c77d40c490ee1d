//! Upgrade drills: which upgrade steps to take between two Cilium versions ([`path`]), how the
//! release's user-supplied Helm values change at each step ([`migrate`]), checked against the
//! chart's own defaults ([`chart`]), and `kubedrill drill run` ([`engine`]) with its parts: the
//! drill definition ([`definition`]), config drift across the upgrade ([`drift`]), probes ([`probes`], [`layout`]), the agent rollout
//! ([`rollout`]), agent resources ([`resources`]), the pod burst ([`burst`]), the judgement
//! ([`policy`]) and the run record ([`record`]).

pub mod burst;
pub mod chart;
pub mod cluster;
pub mod definition;
pub mod drift;
pub mod engine;
pub mod fault;
pub mod kubernetes;
pub mod layout;
pub mod migrate;
pub mod path;
pub mod policy;
pub mod probes;
pub mod record;
pub mod resources;
pub mod rollout;

pub use path::Minor;
