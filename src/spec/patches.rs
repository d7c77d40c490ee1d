//! Kubespray's `kubeadm_patches`: patches kubeadm applies to the control-plane static pods and
//! the kubelet configuration it writes (kubeadm's `patches.directory`). Kubespray writes each
//! entry to `{{ kubeadm_patches_dir }}/<target><index>+<type>.yaml`; kubedrill does the same, in
//! Kubespray's default directory, so an inventory's patches mean here what they mean there.
//!
//! ```yaml
//! kubeadm_patches:
//!   - target: kube-apiserver
//!     type: strategic
//!     patch:
//!       spec:
//!         containers:
//!           - name: kube-apiserver
//!             livenessProbe: {failureThreshold: 30}
//! ```

use crate::diag::Diagnostic;
use crate::inventory::Var;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the patch files go on the nodes (Kubespray: `{{ kube_config_dir }}/patches`).
pub const PATCHES_DIR: &str = "/etc/kubernetes/patches";

/// What kubeadm patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchTarget {
    /// The API server's static pod.
    #[serde(rename = "kube-apiserver")]
    KubeApiserver,
    /// The controller manager's static pod.
    #[serde(rename = "kube-controller-manager")]
    KubeControllerManager,
    /// The scheduler's static pod.
    #[serde(rename = "kube-scheduler")]
    KubeScheduler,
    /// The local etcd's static pod.
    Etcd,
    /// The kubelet's configuration.
    KubeletConfiguration,
}

impl PatchTarget {
    /// kubeadm's name of the target (the file name's first part).
    pub fn as_str(self) -> &'static str {
        match self {
            PatchTarget::KubeApiserver => "kube-apiserver",
            PatchTarget::KubeControllerManager => "kube-controller-manager",
            PatchTarget::KubeScheduler => "kube-scheduler",
            PatchTarget::Etcd => "etcd",
            PatchTarget::KubeletConfiguration => "kubeletconfiguration",
        }
    }
}

/// How the patch is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchType {
    /// Strategic merge patch (Kubespray's default).
    #[default]
    Strategic,
    /// JSON merge patch.
    Merge,
    /// JSON patch (a list of operations).
    Json,
}

impl PatchType {
    /// kubeadm's name of the type (the file name's `+type` part).
    pub fn as_str(self) -> &'static str {
        match self {
            PatchType::Strategic => "strategic",
            PatchType::Merge => "merge",
            PatchType::Json => "json",
        }
    }
}

/// One entry of `kubeadm_patches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeadmPatch {
    /// What it patches.
    pub target: PatchTarget,
    /// How (`strategic` when not given, as in Kubespray).
    #[serde(default, rename = "type")]
    pub kind: PatchType,
    /// The patch itself.
    pub patch: Value,
}

impl KubeadmPatch {
    /// The file name kubeadm reads it from, `<target><index>+<type>.yaml` (the index keeps the
    /// inventory's order: kubeadm applies the patches of one target sorted by name).
    pub fn file_name(&self, index: usize) -> String {
        format!(
            "{}{index:02}+{}.yaml",
            self.target.as_str(),
            self.kind.as_str()
        )
    }
}

/// `kubeadm_patches` from the inventory variable: Kubespray's list form. The map form of
/// Kubespray before 2.26 (`{enabled, source_dir, dest_dir}`) names files on the Ansible
/// machine, which kubedrill cannot know: an error that says how to write the list.
pub fn parse(v: &Var) -> Result<Vec<KubeadmPatch>, Diagnostic> {
    let field = "kubeadm_patches";
    let err = |msg: String| Diagnostic::error(msg).at(&v.origin).field(field);
    match v.value.as_ref() {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) if m.contains_key("enabled") || m.contains_key("source_dir") => Err(err(
            "the map form (enabled, source_dir, dest_dir) of Kubespray before 2.26 points at patch files on the Ansible machine"
                .into(),
        )
        .hint("write the patches inline, as Kubespray 2.26+ does: a list of {target, type, patch}")),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let p: KubeadmPatch = serde_json::from_value(e.clone()).map_err(|e| {
                    err(format!("entry {i}: {e}")).hint(
                        "each entry is {target: kube-apiserver|kube-controller-manager|kube-scheduler|etcd|kubeletconfiguration, type: strategic|merge|json, patch: …}",
                    )
                })?;
                match (&p.kind, &p.patch) {
                    (PatchType::Json, Value::Array(_)) => Ok(p),
                    (PatchType::Json, _) => Err(err(format!(
                        "entry {i}: a json patch is a list of operations"
                    ))),
                    (_, Value::Object(_)) => Ok(p),
                    (t, _) => Err(err(format!(
                        "entry {i}: a {} patch is a map",
                        t.as_str()
                    ))),
                }
            })
            .collect(),
        _ => Err(err("must be a list of {target, type, patch}".into())),
    }
}

/// The lab adjustment under TCG: the control plane's static pods keep running through minutes
/// of starvation instead of being restarted by their liveness probes (kubeadm's 8 × 10 s), and
/// etcd and the API server get a CPU share above the kubelet's and the Cilium agent's when the
/// node is saturated (seen: etcd at cgroup weight 4 against the kubelet's 100 and the agent's
/// 4, its reads timing out, the API server exiting on its start hook, all clients reconnecting).
/// The requests stay within what a 2-CPU control plane admits with the controller manager, the
/// scheduler, CoreDNS and the Cilium agent beside them (1 CPU each for etcd and the API server
/// was refused by the kubelet: "no set of running pods found to reclaim resources").
/// The Cilium agent's CPU request on a lab under TCG (`kubedrill_cilium_agent_cpu_request`): Cilium
/// gives each datapath compile a fixed 5 minutes, and at the weight of the chart's request-less
/// agent (4) the control plane's compile was starved past it, again and again (seen on the lab;
/// at weight 40 it finished in about a minute). Sized with [`tcg_lab_adjustment`] to fit 2 CPUs.
pub const TCG_AGENT_CPU_REQUEST: &str = "500m";

pub fn tcg_lab_adjustment() -> Vec<KubeadmPatch> {
    let pod = |target: PatchTarget, cpu: &str| KubeadmPatch {
        target,
        kind: PatchType::Strategic,
        patch: serde_json::json!({"spec": {"containers": [{
            "name": target.as_str(),
            "livenessProbe": {"failureThreshold": 30},
            "resources": {"requests": {"cpu": cpu}},
        }]}}),
    };
    vec![
        pod(PatchTarget::Etcd, "500m"),
        pod(PatchTarget::KubeApiserver, "500m"),
        pod(PatchTarget::KubeControllerManager, "200m"),
        pod(PatchTarget::KubeScheduler, "100m"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Origin;
    use std::sync::Arc;

    fn var(v: Value) -> Var {
        Var {
            value: Arc::new(v),
            origin: Origin::at(&Arc::new("group_vars/k8s_cluster.yml".into()), Some(3)),
        }
    }

    #[test]
    fn kubesprays_list_form_parses_and_names_files_like_kubespray() {
        let p = parse(&var(serde_json::json!([
            {"target": "kube-apiserver", "type": "strategic", "patch": {"spec": {}}},
            {"target": "kubeletconfiguration", "patch": {"maxPods": 200}},
            {"target": "etcd", "type": "json", "patch": [{"op": "add", "path": "/x", "value": 1}]},
        ])))
        .expect("valid");
        let names: Vec<String> = p.iter().enumerate().map(|(i, p)| p.file_name(i)).collect();
        assert_eq!(
            names,
            [
                "kube-apiserver00+strategic.yaml",
                "kubeletconfiguration01+strategic.yaml",
                "etcd02+json.yaml"
            ]
        );
        for (v, want) in [
            (
                serde_json::json!({"enabled": true, "source_dir": "x"}),
                "before 2.26",
            ),
            (
                serde_json::json!([{"target": "kube-proxy", "patch": {}}]),
                "entry 0",
            ),
            (
                serde_json::json!([{"target": "etcd", "type": "json", "patch": {}}]),
                "list of operations",
            ),
            (
                serde_json::json!([{"target": "etcd", "patch": []}]),
                "a strategic patch is a map",
            ),
            (serde_json::json!("x"), "must be a list"),
        ] {
            let e = parse(&var(v)).expect_err(want).to_string();
            assert!(
                e.contains(want) && e.contains("group_vars/k8s_cluster.yml:3"),
                "{e}"
            );
        }
        assert!(parse(&var(Value::Null)).expect("null").is_empty());
    }

    /// The patched control-plane requests, CoreDNS's two replicas and the Cilium agent at the
    /// lab's request: all of it must fit the 2 CPUs kubeadm requires of a control plane.
    #[test]
    fn the_lab_adjustment_fits_a_two_cpu_control_plane() {
        let milli = |s: &str| -> u64 { crate::spec::cpu_millis(s).expect("a CPU quantity").into() };
        let patched: u64 = tcg_lab_adjustment()
            .iter()
            .map(|p| {
                milli(
                    p.patch["spec"]["containers"][0]["resources"]["requests"]["cpu"]
                        .as_str()
                        .expect("cpu"),
                )
            })
            .sum();
        // CoreDNS's two replicas (100m each) and the agent at the lab's request.
        let others = 2 * 100 + milli(TCG_AGENT_CPU_REQUEST);
        assert!(patched + others <= 2000, "{patched} m + {others} m");
    }
}
