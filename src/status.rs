//! `kubedrill status`: per node, what runs (Ready, kubelet version, the Cilium agent and the
//! datapath it reports) beside what the inventory asked for — like `cilium status`, node by node.
//!
//! The API server is reached through the first control plane's SSH connection (a local forward)
//! with the kubeconfig `apply` fetched.

use crate::inventory::Inventory;
use crate::k8s::{agents, status};
use crate::spec::ClusterSpec;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// One node's status.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// Registered in the cluster.
    pub registered: bool,
    /// Ready condition.
    pub ready: bool,
    /// kubelet version.
    pub kubelet: Option<String>,
    /// Kernel version as the node reports it.
    pub kernel: Option<String>,
    /// Agent pod, ready, restarts.
    pub agent: Option<AgentSummary>,
    /// Settings that differ from what the inventory asks for.
    pub mismatches: Vec<String>,
}

/// The agent on a node.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSummary {
    /// Pod.
    pub pod: String,
    /// Ready.
    pub ready: bool,
    /// Container restarts.
    pub restarts: i32,
    /// Cilium version (image tag).
    pub version: Option<String>,
    /// The datapath it reports, when its status could be read.
    pub datapath: Option<status::AgentStatus>,
    /// Why the status could not be read.
    pub error: Option<String>,
}

/// The cluster's status.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Cluster.
    pub cluster: String,
    /// What the inventory asks for.
    pub expected: status::ExpectedDatapath,
    /// Per inventory host (and any extra registered node), in inventory order.
    pub nodes: Vec<NodeStatus>,
}

/// Why no status could be read.
#[derive(Debug, Error)]
pub enum StatusError {
    /// SSH.
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    /// No kubeconfig yet.
    #[error("{0} does not exist: run `kubedrill apply` first (kubeconfig/fetch writes it)")]
    NoKubeconfig(std::path::PathBuf),
    /// Client.
    #[error(transparent)]
    Client(#[from] crate::k8s::client::ClientError),
    /// API.
    #[error("{0}")]
    Api(String),
}

/// Read the status of the inventory's cluster.
pub async fn read(
    inv: &Inventory,
    spec: &ClusterSpec,
    ssh: &crate::connect::SshSettings,
) -> Result<ClusterStatus, StatusError> {
    let kubeconfig = crate::apply::cluster_dir(inv).join("admin.conf");
    if !kubeconfig.exists() {
        return Err(StatusError::NoKubeconfig(kubeconfig));
    }
    let (dests, connector) = ssh.connector(inv)?;
    let cp = inv.first_control_plane().name.clone();
    let dest = dests
        .into_iter()
        .find(|d| d.name == cp)
        .ok_or_else(|| StatusError::Api(format!("{cp}: not in the inventory")))?;
    let session = connector.connect(dest).await?;
    let (client, fwd) =
        crate::k8s::client::client_via_ssh(&kubeconfig, session.clone(), Duration::from_secs(15))
            .await?;
    let nodes: Vec<Node> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| StatusError::Api(format!("list nodes: {e}")))?
        .items;
    let agent_pods = agents::list_agents(&client)
        .await
        .map_err(|e| StatusError::Api(e.to_string()))?;
    let expected = status::ExpectedDatapath::from_spec(spec, &crate::kernel::effective(spec, &[]));
    let mut names: Vec<String> = inv.hosts.iter().map(|h| h.name.clone()).collect();
    for n in &nodes {
        if let Some(name) = &n.metadata.name
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    let mut out = Vec::new();
    for name in names {
        let node = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(&name));
        let st = node.map(crate::k8s::wait::node_state);
        let info = node
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.node_info.as_ref());
        let pod = agent_pods.iter().find(|a| a.node.as_deref() == Some(&name));
        let mut mismatches = Vec::new();
        let agent = match pod {
            None => None,
            Some(a) => {
                let (datapath, error) =
                    match agents::agent_status(&client, a, Duration::from_secs(60)).await {
                        Ok(r) => {
                            mismatches = status::compare(&expected, &r.status)
                                .iter()
                                .map(|m| m.to_string())
                                .collect();
                            (Some(r.status), None)
                        }
                        Err(e) => (None, Some(e.to_string())),
                    };
                Some(AgentSummary {
                    pod: a.name.clone(),
                    ready: a.ready,
                    restarts: a.restarts,
                    version: a.version.map(|v| v.to_string()),
                    datapath,
                    error,
                })
            }
        };
        out.push(NodeStatus {
            node: name,
            registered: node.is_some(),
            ready: st.as_ref().is_some_and(|s| s.ready),
            kubelet: info.map(|i| i.kubelet_version.clone()),
            kernel: info.map(|i| i.kernel_version.clone()),
            agent,
            mismatches,
        });
    }
    drop(fwd);
    session.close().await;
    Ok(ClusterStatus {
        cluster: spec.label.clone(),
        expected,
        nodes: out,
    })
}
