//! The drill's Kubernetes API calls: nodes, the `kubedrill-drill` namespace with its two pause
//! pods and two Services, and the watch on the Cilium agent pods that feeds the
//! [`RolloutTracker`].

use super::layout::{
    self, BACKEND_POD, CLIENT_POD, CLUSTERIP_SERVICE, NAMESPACE, NODEPORT_SERVICE, NodeInfo,
    Placement, ROLE_LABEL, TCP_PORT, UDP_PORT,
};
use super::record::now;
use super::rollout::{self, PodObservation, RolloutTracker};
use crate::k8s::agents::AGENT_SELECTOR;
use crate::k8s::{K8sError, KUBE_SYSTEM, ObjectRef};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use serde_json::json;
use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a cluster step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An API call.
    #[error(transparent)]
    Api(#[from] K8sError),
    /// Something did not happen in time.
    #[error("timed out after {}s waiting for {what}; last seen: {last}", after.as_secs())]
    Timeout {
        /// What.
        what: String,
        /// The limit.
        after: Duration,
        /// The last state seen.
        last: String,
    },
    /// The layout cannot be made.
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// The API server answered something unusable.
    #[error("{0}")]
    Unexpected(String),
}

fn api_err(
    action: &'static str,
    kind: &'static str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> impl FnOnce(kube::Error) -> ClusterError {
    let object = ObjectRef {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    };
    move |source| {
        ClusterError::Api(K8sError::Api {
            action,
            object,
            source: Box::new(source),
        })
    }
}

/// Every node with its InternalIP and whether it is a control plane.
pub async fn list_nodes(client: &Client) -> Result<Vec<NodeInfo>, ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = api
        .list(&ListParams::default())
        .await
        .map_err(api_err("list", "node", None, None))?;
    Ok(nodes.items.iter().map(node_info).collect())
}

/// A node's name, InternalIP (else its first address) and control-plane label.
pub fn node_info(n: &Node) -> NodeInfo {
    let addrs = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    let address = addrs
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .or_else(|| addrs.first())
        .map(|a| a.address.clone())
        .unwrap_or_default();
    let labels = n.metadata.labels.clone().unwrap_or_default();
    NodeInfo {
        name: n.metadata.name.clone().unwrap_or_default(),
        address,
        control_plane: labels.contains_key("node-role.kubernetes.io/control-plane")
            || labels.contains_key("node-role.kubernetes.io/master"),
    }
}

/// Delete the drill namespace if a previous run left it, wait until it is gone, and create it.
pub async fn recreate_namespace(client: &Client, timeout: Duration) -> Result<(), ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let get_err = || api_err("get", "namespace", None, Some(NAMESPACE));
    if api.get_opt(NAMESPACE).await.map_err(get_err())?.is_some() {
        delete_namespace(client).await?;
        let t0 = tokio::time::Instant::now();
        loop {
            match api.get_opt(NAMESPACE).await.map_err(get_err())? {
                None => break,
                Some(ns) if t0.elapsed() >= timeout => {
                    return Err(ClusterError::Timeout {
                        what: format!(
                            "namespace {NAMESPACE} (left by an earlier drill) to be deleted"
                        ),
                        after: timeout,
                        last: ns
                            .status
                            .and_then(|s| s.phase)
                            .unwrap_or_else(|| "present".into()),
                    });
                }
                Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "kubedrill"}}
    }))
    .map_err(|e| ClusterError::Unexpected(e.to_string()))?;
    api.create(&PostParams::default(), &ns)
        .await
        .map_err(api_err("create", "namespace", None, Some(NAMESPACE)))?;
    Ok(())
}

/// Delete the drill namespace (and everything in it); gone already is fine.
pub async fn delete_namespace(client: &Client) -> Result<(), ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(NAMESPACE, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err("delete", "namespace", None, Some(NAMESPACE))(e)),
    }
}

/// A pause pod pinned to a node, labelled with its role.
pub fn probe_pod(name: &str, role: &str, node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE,
                     "labels": {ROLE_LABEL: role, "app.kubernetes.io/managed-by": "kubedrill"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "pause", "image": image, "imagePullPolicy": "IfNotPresent"}],
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 0
        }
    }))
    .unwrap_or_default()
}

/// The two Services in front of the backend: `kd-echo` (ClusterIP, TCP and UDP) and
/// `kd-echo-np` (NodePort, TCP, `externalTrafficPolicy: Cluster` so every node forwards).
pub fn services() -> (Service, Service) {
    let selector = json!({ ROLE_LABEL: "backend" });
    let cip = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": CLUSTERIP_SERVICE, "namespace": NAMESPACE},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "tcp", "protocol": "TCP", "port": TCP_PORT, "targetPort": TCP_PORT},
                           {"name": "udp", "protocol": "UDP", "port": UDP_PORT, "targetPort": UDP_PORT}]}
    });
    let np = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NODEPORT_SERVICE, "namespace": NAMESPACE},
        "spec": {"type": "NodePort", "externalTrafficPolicy": "Cluster", "selector": selector,
                 "ports": [{"name": "tcp", "protocol": "TCP", "port": TCP_PORT, "targetPort": TCP_PORT}]}
    });
    (
        serde_json::from_value(cip).unwrap_or_default(),
        serde_json::from_value(np).unwrap_or_default(),
    )
}

/// Create the backend and client pods where the placement says.
pub async fn create_probe_pods(
    client: &Client,
    p: &Placement,
    image: &str,
    timeout: Duration,
) -> Result<(), ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let t0 = tokio::time::Instant::now();
    for (name, role, node) in [
        (BACKEND_POD, "backend", &p.backend),
        (CLIENT_POD, "client", &p.client),
    ] {
        let pod = probe_pod(name, role, node, image);
        loop {
            match api.create(&PostParams::default(), &pod).await {
                Ok(_) => break,
                // A new namespace refuses pods until the controller manager has made its
                // `default` ServiceAccount: seconds, longer on a busy control plane (the lab's
                // second Kubernetes drill ended on it).
                Err(kube::Error::Api(e))
                    if e.code == 403
                        && e.message.contains("error looking up service account")
                        && t0.elapsed() < timeout =>
                {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(api_err("create", "pod", Some(NAMESPACE), Some(name))(e)),
            }
        }
    }
    Ok(())
}

/// Wait until the named pods are Running and Ready with an IP; (node, IP) per pod.
pub async fn wait_pods_ready(
    client: &Client,
    names: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, (String, String)>, ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let t0 = tokio::time::Instant::now();
    loop {
        let mut ready = BTreeMap::new();
        let mut last = Vec::new();
        for n in names {
            let pod =
                api.get_opt(n)
                    .await
                    .map_err(api_err("get", "pod", Some(NAMESPACE), Some(n)))?;
            let st = pod.as_ref().and_then(|p| p.status.clone());
            let is_ready = st
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let ip = st.as_ref().and_then(|s| s.pod_ip.clone());
            let node = pod
                .as_ref()
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.node_name.clone());
            match (is_ready, ip, node) {
                (true, Some(ip), Some(node)) => {
                    ready.insert((*n).to_owned(), (node, ip));
                }
                _ => last.push(format!(
                    "{n}: {}",
                    st.and_then(|s| s.phase).unwrap_or_else(|| "absent".into())
                )),
            }
        }
        if ready.len() == names.len() {
            return Ok(ready);
        }
        if t0.elapsed() >= timeout {
            return Err(ClusterError::Timeout {
                what: format!("pods {} in {NAMESPACE} to be Ready", names.join(", ")),
                after: timeout,
                last: last.join("; "),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Create both Services; the ClusterIP address and the allocated node port.
pub async fn create_services(client: &Client) -> Result<(String, u16), ClusterError> {
    let api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let (cip, np) = services();
    let c = api
        .create(&PostParams::default(), &cip)
        .await
        .map_err(api_err(
            "create",
            "service",
            Some(NAMESPACE),
            Some(CLUSTERIP_SERVICE),
        ))?;
    let n = api
        .create(&PostParams::default(), &np)
        .await
        .map_err(api_err(
            "create",
            "service",
            Some(NAMESPACE),
            Some(NODEPORT_SERVICE),
        ))?;
    let cluster_ip = c
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or_else(|| {
            ClusterError::Unexpected(format!(
                "service {NAMESPACE}/{CLUSTERIP_SERVICE} was created without a cluster IP"
            ))
        })?;
    let node_port = n
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ps| ps.first())
        .and_then(|p| p.node_port)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            ClusterError::Unexpected(format!(
                "service {NAMESPACE}/{NODEPORT_SERVICE} was created without a node port"
            ))
        })?;
    Ok((cluster_ip, node_port))
}

/// The agent pods now.
pub async fn agent_observations(client: &Client) -> Result<Vec<PodObservation>, ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let pods = api
        .list(&ListParams::default().labels(AGENT_SELECTOR))
        .await
        .map_err(api_err("list", "pod", Some(KUBE_SYSTEM), None))?;
    Ok(pods.items.iter().map(rollout::observe).collect())
}

/// Watch the agent pods (list, then watch, re-listing after errors with kube-runtime's backoff)
/// and feed every change into `tracker` until `stop` fires. Returns the API errors that were
/// retried, for the record's notes.
pub async fn watch_agents(
    client: Client,
    tracker: Arc<Mutex<RolloutTracker>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(client, KUBE_SYSTEM);
    let cfg = watcher::Config::default().labels(AGENT_SELECTOR);
    let mut stream = pin!(watcher(api, cfg).default_backoff());
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    let mut init: Option<BTreeMap<String, Pod>> = None;
    let mut errors = Vec::new();
    loop {
        let ev = tokio::select! {
            _ = &mut stop => break,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { break };
        let changed = match ev {
            Ok(Event::Init) => {
                init = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(p)) => {
                if let Some(n) = p.metadata.name.clone() {
                    init.get_or_insert_with(BTreeMap::new).insert(n, p);
                }
                false
            }
            Ok(Event::InitDone) => {
                pods = init.take().unwrap_or_default();
                true
            }
            Ok(Event::Apply(p)) => {
                if let Some(n) = p.metadata.name.clone() {
                    pods.insert(n, p);
                }
                true
            }
            Ok(Event::Delete(p)) => {
                if let Some(n) = &p.metadata.name {
                    pods.remove(n);
                }
                true
            }
            Err(e) => {
                if errors.len() < 20 {
                    errors.push(e.to_string());
                }
                false
            }
        };
        if changed {
            let obs: Vec<PodObservation> = pods.values().map(rollout::observe).collect();
            if let Ok(mut t) = tracker.lock() {
                t.observe(now(), &obs);
            }
        }
    }
    errors
}
