//! kubedrill: rehearse Kubernetes + Cilium upgrades on a lab that mirrors production.
//!
//! Data flows one way: [`inventory`] (Kubespray YAML/INI) → [`spec`] (what the cluster should
//! be) → [`render`] (kubeadm, Cilium and containerd files) → [`plan`] (the ordered phases of an
//! apply, with every file and command). [`ssh`] and [`fleet`] reach the nodes; [`facts`] and
//! [`kernel`] say what each node can do, and [`check`] puts them together.
//! [`images`] provides the OS images lab VMs boot from (pulled with checksums, or built offline).
//! [`report`] turns a drill's run record into an HTML report, a Markdown summary and comparisons.
//! [`k8s`] talks to the cluster's API (waits, kube-proxy removal, the agents' own status) and
//! [`cilium`] builds the Helm command lines and judges the upgrade pre-flight.

pub mod apply;
pub mod bundle;
pub mod check;
pub mod cilium;
pub mod connect;
pub mod diag;
/// Upgrade drills: upgrade paths, Helm values migration, probes, and `drill run` itself.
pub mod drill;
pub mod facts;
pub mod files;
pub mod fleet;
pub mod host;
pub mod images;
pub mod inventory;
pub mod k8s;
pub mod kernel;
pub mod lab;
pub mod layout;
pub mod lock;
pub mod phase;
pub mod plan;
pub mod render;
/// Drill run records and their reports: HTML with an SVG timeline, Markdown, run comparison.
pub mod report;
pub mod secrets;
pub mod spec;
pub mod ssh;
pub mod status;
