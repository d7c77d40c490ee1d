//! `kubedrill plan`: the dry run of [`crate::apply`]'s phase tree — every phase in order with
//! every file it would write and command it would run, made by the same functions the apply
//! runs, so the two cannot drift.

use crate::apply::{self, node::PackageSource};
use crate::inventory::Inventory;
use crate::phase::{PhaseError, Selection};
use crate::spec::ClusterSpec;
use serde::Serialize;

pub use crate::phase::{PhaseInfo, PlannedPhase, Step, Target};

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Kubernetes version.
    pub kubernetes: String,
    /// kubeadm config API.
    pub kubeadm_api: &'static str,
    /// Cilium version.
    pub cilium: String,
    /// Control-plane endpoint.
    pub endpoint: String,
    /// Node count.
    pub nodes: usize,
    /// Phases in order.
    pub phases: Vec<PlannedPhase>,
}

/// Every apply phase in order: name, title, when a re-run leaves it alone.
pub fn phases() -> Vec<PhaseInfo> {
    apply::tree().list()
}

/// The plan of a full apply with packages from the distribution and pkgs.k8s.io. Secrets are
/// placeholders: nothing printed or written by `plan` holds one.
pub fn build(spec: &ClusterSpec, inv: &Inventory) -> Result<Plan, PhaseError> {
    build_for(spec, inv, &PackageSource::Online, &Selection::all())
}

/// The plan of the selected phases with packages from `source` (what `apply --dry-run` shows).
pub fn build_for(
    spec: &ClusterSpec,
    inv: &Inventory,
    source: &PackageSource,
    selection: &Selection,
) -> Result<Plan, PhaseError> {
    let input = apply::Input::new(inv, spec, source)?;
    let phases = apply::tree().dry_run(selection, &input)?;
    Ok(Plan {
        kubernetes: spec.kubernetes.to_string(),
        kubeadm_api: spec.kubeadm_api.api_version(),
        cilium: spec.cilium.to_string(),
        endpoint: spec.endpoint.to_string(),
        nodes: inv.hosts.len(),
        phases,
    })
}
