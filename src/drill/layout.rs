//! Where the drill's probe pods go and what each probe targets (pure).
//!
//! Two pause pods in the `kubedrill-drill` namespace, pinned to two different nodes: the
//! **backend** (echo responders run in its network namespace, and it backs a ClusterIP and a
//! NodePort Service) and the **client** (probers run in its network namespace). The NodePort
//! prober runs in the host namespace of the client's node (never the backend's), and targets a
//! node without the backend — with three or more nodes another one than the prober's, so the
//! request crosses the wire to a node that must forward it (the DSR / north–south path). With
//! two nodes, prober and target are the client's node.
//!
//! Workers carry the sending side: the client is a worker whenever the cluster has one, and with
//! a single worker the backend goes to a control plane. On a busy node sending costs more than
//! echoing (the lab under TCG at 5 probes/s, on its control plane: the prober 15 % of a vCPU,
//! the responder 9 %; on the idle worker both 7 %), and the control plane is what a Kubernetes
//! upgrade stresses — on the lab, its API server missed kubeadm's 10 s calls while it also
//! carried the prober. The pods are pinned with `nodeName` and tolerate everything, so control
//! planes' `NoSchedule` taints do not matter.

use super::probes::ProbeSpec;
use super::record::ProbePair;
use crate::report::record::{Endpoint, ProbeKind};
use serde::Serialize;

/// The namespace of the probe pods and Services.
pub const NAMESPACE: &str = "kubedrill-drill";
/// The backend pod.
pub const BACKEND_POD: &str = "kd-backend";
/// The client pod.
pub const CLIENT_POD: &str = "kd-client";
/// The ClusterIP Service.
pub const CLUSTERIP_SERVICE: &str = "kd-echo";
/// The NodePort Service.
pub const NODEPORT_SERVICE: &str = "kd-echo-np";
/// The label selecting the backend.
pub const ROLE_LABEL: &str = "kubedrill.io/role";
/// TCP echo port in the backend.
pub const TCP_PORT: u16 = 7001;
/// UDP echo port in the backend.
pub const UDP_PORT: u16 = 7002;

/// A node as the layout sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Its InternalIP.
    pub address: String,
    /// Has the control-plane role.
    pub control_plane: bool,
}

/// Where everything runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The backend pod's node.
    pub backend: String,
    /// The client pod's node.
    pub client: String,
    /// Where the NodePort prober runs (host namespace; never the backend's node).
    pub nodeport_prober: String,
    /// The node whose address the NodePort prober targets (never the backend's node).
    pub nodeport_target: NodeInfo,
}

/// Why there is no layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Fewer than two nodes.
    #[error(
        "the drill needs at least two nodes (backend and client pods on different nodes); the cluster has {0}"
    )]
    TooFewNodes(usize),
}

/// Choose the nodes (deterministic: workers first, then control planes, each by name).
pub fn place(nodes: &[NodeInfo]) -> Result<Placement, LayoutError> {
    if nodes.len() < 2 {
        return Err(LayoutError::TooFewNodes(nodes.len()));
    }
    let mut order: Vec<&NodeInfo> = nodes.iter().collect();
    order.sort_by(|a, b| (a.control_plane, &a.name).cmp(&(b.control_plane, &b.name)));
    let workers = order.iter().filter(|n| !n.control_plane).count();
    // Two workers or more: both pods on workers. One: the client there, the backend on the
    // first control plane. None: the first two control planes.
    let (backend, client) = if workers == 1 {
        (order[1], order[0])
    } else {
        (order[0], order[1])
    };
    let prober = client;
    // Target: a node without the backend, other than the prober when possible.
    let target = order
        .iter()
        .find(|n| n.name != backend.name && n.name != prober.name)
        .copied()
        .unwrap_or(prober);
    Ok(Placement {
        backend: backend.name.clone(),
        client: client.name.clone(),
        nodeport_prober: prober.name.clone(),
        nodeport_target: target.clone(),
    })
}

/// A pod's name, node, IP and network namespace path on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodEnd {
    /// Pod name.
    pub name: String,
    /// Node.
    pub node: String,
    /// Pod IP.
    pub ip: String,
    /// `/proc/PID/ns/net` of its sandbox.
    pub netns: String,
}

/// What the probes target once the pods and Services exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Targets {
    /// The client pod.
    pub client: PodEnd,
    /// The backend pod.
    pub backend: PodEnd,
    /// The ClusterIP Service's address.
    pub cluster_ip: String,
    /// The NodePort Service's node port.
    pub node_port: u16,
    /// The backend node's address (for `icmp-host`).
    pub backend_node_address: String,
}

/// One prober to start: on which node, with which spec, and what it is in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    /// The node the prober runs on.
    pub host: String,
    /// The agent's spec entry (its `netns` says whether it runs in the client pod).
    pub spec: ProbeSpec,
    /// The record's view.
    pub pair: ProbePair,
}

/// `IP:PORT`, with brackets for IPv6.
pub fn socket(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The probes of the drill's kinds, in the order given.
pub fn probes(
    kinds: &[ProbeKind],
    rate_per_s: u32,
    p: &Placement,
    t: &Targets,
) -> Vec<PlannedProbe> {
    let client_ep = Endpoint {
        name: format!("pod/{}", t.client.name),
        node: Some(t.client.node.clone()),
    };
    let backend_ep = |suffix: &str| Endpoint {
        name: format!("pod/{}{suffix}", t.backend.name),
        node: Some(t.backend.node.clone()),
    };
    kinds
        .iter()
        .map(|&kind| {
            // The held kinds probe the same paths over one long-lived connection.
            let held = kind.held().then_some(super::probes::TcpMode::Persistent);
            let in_client = |proto: &str, target: String, to: Endpoint| PlannedProbe {
                host: t.client.node.clone(),
                spec: ProbeSpec {
                    id: kind.as_str().to_owned(),
                    kind: proto.to_owned(),
                    target,
                    rate_per_s,
                    timeout_ms: None,
                    netns: Some(t.client.netns.clone()),
                    tcp_mode: held,
                },
                pair: ProbePair {
                    id: kind.as_str().to_owned(),
                    kind,
                    from: client_ep.clone(),
                    to,
                    rate_per_s,
                },
            };
            match kind {
                ProbeKind::IcmpPodPod => in_client("icmp", t.backend.ip.clone(), backend_ep("")),
                ProbeKind::TcpPod | ProbeKind::TcpPodHeld => in_client(
                    "tcp",
                    socket(&t.backend.ip, TCP_PORT),
                    backend_ep(&format!(":{TCP_PORT}")),
                ),
                ProbeKind::UdpPod => in_client(
                    "udp",
                    socket(&t.backend.ip, UDP_PORT),
                    backend_ep(&format!(":{UDP_PORT}")),
                ),
                ProbeKind::TcpClusterip | ProbeKind::TcpClusteripHeld => in_client(
                    "tcp",
                    socket(&t.cluster_ip, TCP_PORT),
                    Endpoint {
                        name: format!(
                            "svc/{CLUSTERIP_SERVICE} {}",
                            socket(&t.cluster_ip, TCP_PORT)
                        ),
                        node: None,
                    },
                ),
                ProbeKind::TcpNodeport | ProbeKind::TcpNodeportHeld => {
                    let target = socket(&p.nodeport_target.address, t.node_port);
                    PlannedProbe {
                        host: p.nodeport_prober.clone(),
                        spec: ProbeSpec {
                            id: kind.as_str().to_owned(),
                            kind: "tcp".into(),
                            target: target.clone(),
                            rate_per_s,
                            timeout_ms: None,
                            netns: None,
                            tcp_mode: held,
                        },
                        pair: ProbePair {
                            id: kind.as_str().to_owned(),
                            kind,
                            from: Endpoint {
                                name: format!("host/{}", p.nodeport_prober),
                                node: Some(p.nodeport_prober.clone()),
                            },
                            to: Endpoint {
                                name: format!("{target} (backend on {})", t.backend.node),
                                node: Some(p.nodeport_target.name.clone()),
                            },
                            rate_per_s,
                        },
                    }
                }
                ProbeKind::IcmpHost => PlannedProbe {
                    host: t.client.node.clone(),
                    spec: ProbeSpec {
                        id: kind.as_str().to_owned(),
                        kind: "icmp".into(),
                        target: t.backend_node_address.clone(),
                        rate_per_s,
                        timeout_ms: None,
                        netns: None,
                        tcp_mode: None,
                    },
                    pair: ProbePair {
                        id: kind.as_str().to_owned(),
                        kind,
                        from: Endpoint {
                            name: format!("host/{}", t.client.node),
                            node: Some(t.client.node.clone()),
                        },
                        to: Endpoint {
                            name: format!("host/{}", t.backend.node),
                            node: Some(t.backend.node.clone()),
                        },
                        rate_per_s,
                    },
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, cp: bool, last: u8) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            address: format!("192.168.150.{last}"),
            control_plane: cp,
        }
    }

    fn targets(p: &Placement) -> Targets {
        Targets {
            client: PodEnd {
                name: CLIENT_POD.into(),
                node: p.client.clone(),
                ip: "10.0.1.5".into(),
                netns: "/proc/4242/ns/net".into(),
            },
            backend: PodEnd {
                name: BACKEND_POD.into(),
                node: p.backend.clone(),
                ip: "10.0.2.7".into(),
                netns: "/proc/777/ns/net".into(),
            },
            cluster_ip: "10.233.0.80".into(),
            node_port: 31234,
            backend_node_address: "192.168.150.12".into(),
        }
    }

    #[test]
    fn three_nodes_cross_the_wire_for_nodeport() {
        let p = place(&[n("cp1", true, 11), n("w1", false, 12), n("w2", false, 13)]).expect("p");
        assert_eq!((p.backend.as_str(), p.client.as_str()), ("w1", "w2"));
        assert_eq!(p.nodeport_prober, "w2");
        assert_eq!(p.nodeport_target.name, "cp1");
        let probes = probes(
            &super::super::definition::DEFAULT_KINDS,
            20,
            &p,
            &targets(&p),
        );
        let np = probes
            .iter()
            .find(|x| x.pair.kind == ProbeKind::TcpNodeport)
            .expect("np");
        assert_eq!(np.host, "w2");
        assert_eq!(np.spec.target, "192.168.150.11:31234");
        assert_eq!(np.spec.netns, None);
        assert_ne!(np.host, p.backend);
        let ci = probes
            .iter()
            .find(|x| x.pair.kind == ProbeKind::TcpClusterip)
            .expect("ci");
        assert_eq!(ci.spec.target, "10.233.0.80:7001");
        assert_eq!(ci.spec.netns.as_deref(), Some("/proc/4242/ns/net"));
        assert_eq!(ci.host, "w2");
    }

    #[test]
    fn two_nodes_and_too_few() {
        // One worker: the sending side there, only the echo side on the control plane.
        let p = place(&[n("cp1", true, 11), n("w1", false, 12)]).expect("p");
        assert_eq!((p.backend.as_str(), p.client.as_str()), ("cp1", "w1"));
        assert_eq!(p.nodeport_prober, "w1");
        assert_eq!(p.nodeport_target.name, "w1");
        // Control planes only, and more workers than one.
        let p = place(&[n("cp2", true, 12), n("cp1", true, 11)]).expect("p");
        assert_eq!((p.backend.as_str(), p.client.as_str()), ("cp1", "cp2"));
        let p = place(&[
            n("cp1", true, 11),
            n("w3", false, 15),
            n("w2", false, 14),
            n("w1", false, 13),
        ])
        .expect("p");
        assert_eq!((p.backend.as_str(), p.client.as_str()), ("w1", "w2"));
        assert_eq!(
            (p.nodeport_prober.as_str(), p.nodeport_target.name.as_str()),
            ("w2", "w3")
        );
        assert_eq!(
            place(&[n("cp1", true, 11)]),
            Err(LayoutError::TooFewNodes(1))
        );
        assert_eq!(socket("fd00::5", 80), "[fd00::5]:80");
    }
}
