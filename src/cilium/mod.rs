//! Cilium's lifecycle as kubedrill drives it: Helm command lines for the `cilium` release and
//! the upgrade pre-flight release ([`helm`]), and the pre-flight readiness check that gates an
//! upgrade ([`preflight`]).

pub mod helm;
pub mod preflight;
