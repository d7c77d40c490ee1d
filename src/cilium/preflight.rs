//! Is the upgrade pre-flight done? The `cilium-pre-flight-check` DaemonSet must be Ready on every
//! node where a Cilium agent runs *and* the pre-flight pods may run, and the
//! `cilium-pre-flight-check` Deployment (the policy validator, rendered when
//! `preflight.validateCNPs` is on, the default) must be 1/1.
//!
//! "Like with like": the agents tolerate every taint, the pre-flight pods may not. Charts
//! 1.11–1.15 give the pre-flight DaemonSet a fixed toleration list (not-ready, master,
//! uninitialized, CriticalAddonsOnly; `control-plane` only from 1.13, so 1.11–1.12 skip kubeadm
//! control planes of Kubernetes ≥ 1.24, and every version up to 1.15 skips nodes with taints of
//! their own, e.g. `dedicated=db:NoSchedule`); 1.16+ tolerate everything (`operator: Exists`). So the expected count is not the cilium DaemonSet's but the number of
//! agents on nodes the pre-flight pod template tolerates (its tolerations, the ones the
//! DaemonSet controller adds to every DaemonSet pod, and its nodeSelector; node affinity is not
//! evaluated). Nodes left out are listed: they pull the new image only during the upgrade.

use crate::k8s::agents::{self, AgentPod};
use crate::k8s::{K8sError, KUBE_SYSTEM, ObjectRef};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, PodSpec, Taint, Toleration};
use kube::api::ListParams;
use kube::{Api, Client};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// The pre-flight DaemonSet's name.
pub const PREFLIGHT_DAEMONSET: &str = "cilium-pre-flight-check";
/// The pre-flight Deployment's name (the network-policy validator).
pub const PREFLIGHT_DEPLOYMENT: &str = "cilium-pre-flight-check";

/// Does `tol` tolerate `taint`? (Kubernetes' `ToleratesTaint`.)
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = tol.key.as_deref().filter(|k| !k.is_empty())
        && k != taint.key
    {
        return false;
    }
    match tol.operator.as_deref() {
        Some("Exists") => true,
        _ => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// The tolerations the DaemonSet controller adds to every DaemonSet pod.
fn daemonset_default_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some(effect.to_owned()),
        ..Toleration::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// Why a DaemonSet pod with this spec may not run on `node`, or `None` if it may.
pub fn excluded_by(spec: &PodSpec, node: &Node) -> Option<String> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    for (k, v) in spec.node_selector.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Some(format!("nodeSelector {k}={v} does not match"));
        }
    }
    let mut tols = spec.tolerations.clone().unwrap_or_default();
    tols.extend(daemonset_default_tolerations(
        spec.host_network.unwrap_or(false),
    ));
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tols.iter().any(|tol| tolerates(tol, t)))
        .map(|t| {
            format!(
                "taint {}{}:{} not tolerated",
                t.key,
                t.value
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("={v}"))
                    .unwrap_or_default(),
                t.effect
            )
        })
}

/// The pre-flight's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreflightReadiness {
    /// Nodes the pre-flight pods may run on.
    pub eligible_nodes: Vec<String>,
    /// Nodes running a Cilium agent that the pre-flight pods may not run on, and why.
    pub excluded_nodes: Vec<(String, String)>,
    /// Cilium agents on eligible nodes: the count the pre-flight must reach.
    pub expected: usize,
    /// The pre-flight DaemonSet's `desiredNumberScheduled`.
    pub desired: i32,
    /// Its `numberReady`.
    pub ready: i32,
    /// The validator Deployment's (ready, wanted) replicas; `None` when it is not deployed
    /// (`preflight.validateCNPs: false`).
    pub deployment: Option<(i32, i32)>,
    /// What is still missing; empty when done.
    pub waiting_for: Vec<String>,
}

impl PreflightReadiness {
    /// The pre-flight is complete: the upgrade may start and the release can be uninstalled.
    pub fn is_ready(&self) -> bool {
        self.waiting_for.is_empty()
    }
}

impl fmt::Display for PreflightReadiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pre-flight DaemonSet {}/{} ready (expected {} = Cilium agents on eligible nodes)",
            self.ready, self.desired, self.expected
        )?;
        if let Some((r, w)) = self.deployment {
            write!(f, ", validator Deployment {r}/{w}")?;
        }
        if !self.excluded_nodes.is_empty() {
            let ex: Vec<String> = self
                .excluded_nodes
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect();
            write!(f, "; not covered: {}", ex.join(", "))?;
        }
        if !self.waiting_for.is_empty() {
            write!(f, "; waiting for: {}", self.waiting_for.join("; "))?;
        }
        Ok(())
    }
}

/// Judge the pre-flight from its DaemonSet, its Deployment (if any), the nodes and the agent
/// pods.
pub fn readiness(
    preflight: &DaemonSet,
    deployment: Option<&Deployment>,
    nodes: &[Node],
    agents: &[AgentPod],
) -> PreflightReadiness {
    let pod_spec = preflight
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let agent_nodes: BTreeSet<&str> = agents.iter().filter_map(|a| a.node.as_deref()).collect();
    let mut eligible_nodes = Vec::new();
    let mut excluded_nodes = Vec::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        match excluded_by(&pod_spec, n) {
            None => eligible_nodes.push(name),
            Some(why) if agent_nodes.contains(name.as_str()) => excluded_nodes.push((name, why)),
            Some(_) => {}
        }
    }
    eligible_nodes.sort();
    excluded_nodes.sort();
    let expected = agents
        .iter()
        .filter(|a| {
            a.node
                .as_deref()
                .is_some_and(|n| eligible_nodes.iter().any(|e| e == n))
        })
        .count();
    let st = preflight.status.clone().unwrap_or_default();
    let (desired, ready) = (st.desired_number_scheduled, st.number_ready);
    let mut waiting_for = Vec::new();
    if ready < desired {
        waiting_for.push(format!("{ready} of {desired} pre-flight pods ready"));
    }
    if usize::try_from(ready).unwrap_or(0) < expected {
        waiting_for.push(format!(
            "{ready} pre-flight pods ready for {expected} Cilium agents on eligible nodes"
        ));
    }
    let deployment = deployment.map(|d| {
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        (ready, wanted)
    });
    if let Some((r, w)) = deployment
        && r < w
    {
        waiting_for.push(format!("validator Deployment {r}/{w} ready"));
    }
    PreflightReadiness {
        eligible_nodes,
        excluded_nodes,
        expected,
        desired,
        ready,
        deployment,
        waiting_for,
    }
}

/// Why the pre-flight could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The pre-flight DaemonSet does not exist (release not installed, or already removed).
    #[error(
        "daemonset {KUBE_SYSTEM}/{PREFLIGHT_DAEMONSET} not found: is the {} release installed?",
        super::helm::PREFLIGHT_RELEASE
    )]
    NotInstalled,
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] K8sError),
    /// Not ready in time.
    #[error("the Cilium pre-flight was not complete after {}s: {last}", timeout.as_secs())]
    Timeout {
        /// The timeout.
        timeout: Duration,
        /// The last judgement.
        last: Box<PreflightReadiness>,
    },
}

/// Read the pre-flight objects, nodes and agents, and judge ([`readiness`]).
pub async fn check(client: &Client) -> Result<PreflightReadiness, PreflightError> {
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let node_api: Api<Node> = Api::all(client.clone());
    let ds = dss
        .get_opt(PREFLIGHT_DAEMONSET)
        .await
        .map_err(|source| K8sError::Api {
            action: "get",
            object: ObjectRef::namespaced("daemonset", KUBE_SYSTEM, PREFLIGHT_DAEMONSET),
            source: Box::new(source),
        })?;
    let ds = ds.ok_or(PreflightError::NotInstalled)?;
    let dep = deps
        .get_opt(PREFLIGHT_DEPLOYMENT)
        .await
        .map_err(|source| K8sError::Api {
            action: "get",
            object: ObjectRef::namespaced("deployment", KUBE_SYSTEM, PREFLIGHT_DEPLOYMENT),
            source: Box::new(source),
        })?;
    let nodes = node_api
        .list(&ListParams::default())
        .await
        .map_err(|source| K8sError::Api {
            action: "list",
            object: ObjectRef::all("node"),
            source: Box::new(source),
        })?;
    let agents = agents::list_agents(client).await?;
    Ok(readiness(&ds, dep.as_ref(), &nodes.items, &agents))
}

/// Poll [`check`] every `interval` until the pre-flight is complete or `timeout` passes,
/// reporting each judgement.
pub async fn wait(
    client: &Client,
    timeout: Duration,
    interval: Duration,
    mut progress: impl FnMut(&PreflightReadiness),
) -> Result<PreflightReadiness, PreflightError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = check(client).await?;
        progress(&r);
        if r.is_ready() {
            return Ok(r);
        }
        if tokio::time::Instant::now() + interval > deadline {
            return Err(PreflightError::Timeout {
                timeout,
                last: Box::new(r),
            });
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration {
            key: key.map(str::to_owned),
            operator: op.map(str::to_owned),
            value: value.map(str::to_owned),
            effect: effect.map(str::to_owned),
            ..Toleration::default()
        }
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            effect: effect.to_owned(),
            ..Taint::default()
        }
    }

    #[test]
    fn toleration_matching() {
        let cp = taint("node-role.kubernetes.io/control-plane", None, "NoSchedule");
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &cp));
        assert!(tolerates(
            &tol(
                Some("node-role.kubernetes.io/control-plane"),
                None,
                None,
                Some("NoSchedule")
            ),
            &cp
        ));
        assert!(!tolerates(
            &tol(
                Some("node-role.kubernetes.io/master"),
                None,
                None,
                Some("NoSchedule")
            ),
            &cp
        ));
        assert!(!tolerates(
            &tol(
                Some("node-role.kubernetes.io/control-plane"),
                None,
                None,
                Some("NoExecute")
            ),
            &cp
        ));
        let v = taint("dedicated", Some("db"), "NoSchedule");
        assert!(tolerates(
            &tol(Some("dedicated"), Some("Equal"), Some("db"), None),
            &v
        ));
        assert!(!tolerates(
            &tol(Some("dedicated"), Some("Equal"), Some("web"), None),
            &v
        ));
    }
}
