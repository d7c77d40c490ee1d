//! Cilium's lifecycle as kubedrill drives it: Helm command lines for the `cilium` release and
//! the upgrade pre-flight release ([`helm`]), the pre-flight readiness check that gates an
//! upgrade ([`preflight`]), and the Kubernetes versions each Cilium minor is tested with
//! ([`compat`]).

pub mod compat;
pub mod helm;
pub mod preflight;
