//! The pod burst: while the agents roll, create N pause pods spread over the nodes (pinned with
//! `nodeName`, so the scheduler is not what is tested: the kubelet, the CNI call into the
//! Cilium agent and endpoint creation are), wait until each runs or the time is up, count the
//! failures per node with the reason the kubelet gave (`FailedCreatePodSandBox: … cilium-cni
//! … unable to connect to Cilium daemon`), and delete them again. This rehearses the production
//! pain of pods that could not be created on a node during a rolling agent upgrade.
//!
//! The planning and the judgement of each pod are pure ([`assign`], [`pod_manifest`],
//! [`classify`], [`tally`]); [`run`] does the API calls.

use crate::k8s::{K8sError, ObjectRef};
use crate::report::record::{PodBurst, PodBurstNode};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Label on every burst pod (value: the burst's id).
pub const BURST_LABEL: &str = "kubedrill.io/burst";

/// `count` pod names spread round-robin over `nodes` (in the given order).
pub fn assign(burst_id: &str, count: u32, nodes: &[String]) -> Vec<(String, String)> {
    if nodes.is_empty() {
        return Vec::new();
    }
    (0..count as usize)
        .map(|i| {
            (
                format!("kd-burst-{burst_id}-{i:03}"),
                nodes[i % nodes.len()].clone(),
            )
        })
        .collect()
}

/// A pause pod pinned to `node`: tolerates every taint, no service account token, no service
/// links, no grace period.
pub fn pod_manifest(name: &str, namespace: &str, node: &str, image: &str, burst_id: &str) -> Pod {
    let v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {BURST_LABEL: burst_id, "app.kubernetes.io/managed-by": "kubedrill"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "pause", "image": image, "imagePullPolicy": "IfNotPresent"}],
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 0
        }
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// Where one burst pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Its container runs: created.
    Running,
    /// It will not run (phase Failed, or a terminal error).
    Failed(String),
    /// Not running yet (with what it waits for).
    Pending(String),
}

/// Judge one pod from its object and the Warning events about it (newest last).
pub fn classify(pod: &Pod, warnings: &[String]) -> PodState {
    let st = pod.status.as_ref();
    let phase = st.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let running = st
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        });
    if phase == "Running" && running {
        return PodState::Running;
    }
    let waiting = st
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter().find_map(|c| {
                c.state.as_ref().and_then(|s| s.waiting.as_ref()).map(|w| {
                    match w.message.as_deref().filter(|m| !m.is_empty()) {
                        Some(m) => format!("{}: {m}", w.reason.clone().unwrap_or_default()),
                        None => w.reason.clone().unwrap_or_default(),
                    }
                })
            })
        })
        .filter(|s| !s.is_empty());
    let why = warnings
        .last()
        .cloned()
        .or(waiting)
        .or_else(|| st.and_then(|s| s.message.clone()))
        .unwrap_or_else(|| format!("phase {phase}"));
    match phase {
        "Failed" | "Succeeded" => PodState::Failed(why),
        _ => PodState::Pending(why),
    }
}

/// Per node: created and failed counts and distinct errors (at most 5 per node). A pod still
/// pending when the burst ended counts as failed with its reason. `create_errors` are pods the
/// API server refused outright.
pub fn tally(
    assigned: &[(String, String)],
    states: &BTreeMap<String, PodState>,
    create_errors: &BTreeMap<String, String>,
    waited: Duration,
) -> Vec<PodBurstNode> {
    let mut per: BTreeMap<&str, PodBurstNode> = BTreeMap::new();
    for (name, node) in assigned {
        let n = per.entry(node.as_str()).or_insert_with(|| PodBurstNode {
            node: node.clone(),
            created: 0,
            failed: 0,
            errors: Vec::new(),
        });
        let err = match (create_errors.get(name), states.get(name)) {
            (Some(e), _) => Some(format!("create refused: {e}")),
            (None, Some(PodState::Running)) => None,
            (None, Some(PodState::Failed(w))) => Some(w.clone()),
            (None, Some(PodState::Pending(w))) => {
                Some(format!("not running after {} s: {w}", waited.as_secs()))
            }
            (None, None) => Some("pod vanished before it ran".to_owned()),
        };
        match err {
            None => n.created += 1,
            Some(e) => {
                n.failed += 1;
                let e: String = e.chars().take(300).collect();
                if !n.errors.contains(&e) && n.errors.len() < 5 {
                    n.errors.push(e);
                }
            }
        }
    }
    per.into_values().collect()
}

/// Warning events per pod name (`reason: message`), oldest first.
pub fn warnings_by_pod(events: &[Event]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sorted: Vec<&Event> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.involved_object.kind.as_deref() == Some("Pod"))
        .collect();
    sorted.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()))
            .unwrap_or(0)
    });
    for e in sorted {
        if let Some(n) = &e.involved_object.name {
            m.entry(n.clone()).or_default().push(format!(
                "{}: {}",
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default().trim()
            ));
        }
    }
    m
}

/// One burst.
#[derive(Debug, Clone, Copy)]
pub struct BurstSpec<'a> {
    /// Namespace (created beforehand).
    pub namespace: &'a str,
    /// Burst id (pod names and label).
    pub id: &'a str,
    /// Pods.
    pub count: u32,
    /// Nodes to spread them over.
    pub nodes: &'a [String],
    /// Image (the pause image).
    pub image: &'a str,
    /// How long pods may take to run.
    pub timeout: Duration,
    /// How often to look.
    pub poll: Duration,
}

/// Create the burst, wait up to `timeout` for every pod to run (polling every `poll`), then
/// delete the pods. API errors while creating count as failures of that pod; errors while
/// listing or deleting are returned.
pub async fn run(client: &Client, b: &BurstSpec<'_>) -> Result<PodBurst, K8sError> {
    let BurstSpec {
        namespace,
        id: burst_id,
        count,
        nodes,
        image,
        timeout,
        poll,
    } = *b;
    let start = super::record::now();
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let assigned = assign(burst_id, count, nodes);
    let mut create_errors = BTreeMap::new();
    for (name, node) in &assigned {
        let pod = pod_manifest(name, namespace, node, image, burst_id);
        if let Err(e) = api.create(&PostParams::default(), &pod).await {
            create_errors.insert(name.clone(), e.to_string());
        }
    }
    let selector = format!("{BURST_LABEL}={burst_id}");
    let list_err = |action| {
        move |source| K8sError::Api {
            action,
            object: ObjectRef {
                kind: "pod",
                namespace: Some(namespace.to_owned()),
                name: None,
            },
            source: Box::new(source),
        }
    };
    let t0 = tokio::time::Instant::now();
    let mut states: BTreeMap<String, PodState>;
    loop {
        let pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(list_err("list"))?;
        states = pods
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone().map(|n| (n, classify(p, &[]))))
            .collect();
        let pending = assigned.iter().any(|(n, _)| {
            !create_errors.contains_key(n) && matches!(states.get(n), Some(PodState::Pending(_)))
        });
        if !pending || t0.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    // The kubelet's reasons (sandbox creation failures) are in the events.
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    if let Ok(list) = events.list(&ListParams::default()).await {
        let w = warnings_by_pod(&list.items);
        for (name, st) in states.iter_mut() {
            if let (PodState::Pending(r) | PodState::Failed(r), Some(ws)) = (&mut *st, w.get(name))
                && let Some(last) = ws.last()
            {
                *r = last.clone();
            }
        }
    }
    let waited = t0.elapsed();
    let end = super::record::now();
    api.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels(&selector),
    )
    .await
    .map_err(list_err("delete"))?;
    Ok(PodBurst {
        start,
        end: end.max(start),
        nodes: tally(&assigned, &states, &create_errors, waited),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn assignment_is_round_robin() {
        let nodes = ["cp1".to_owned(), "w1".to_owned(), "w2".to_owned()];
        let a = assign("s1", 5, &nodes);
        let on: Vec<&str> = a.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(on, ["cp1", "w1", "w2", "cp1", "w1"]);
        assert_eq!(a[4].0, "kd-burst-s1-004");
        assert!(assign("s1", 3, &[]).is_empty());
        let m = pod_manifest(
            "p",
            "kubedrill-drill",
            "w1",
            "registry.k8s.io/pause:3.10",
            "s1",
        );
        let spec = m.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("w1"));
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("registry.k8s.io/pause:3.10")
        );
    }

    #[test]
    fn pods_are_judged_and_counted_per_node() {
        let running = pod(
            serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "pause", "image": "p", "imageID": "", "ready": true, "restartCount": 0,
                                   "state": {"running": {"startedAt": "2026-11-20T09:01:00Z"}}}]}}),
        );
        let creating = pod(
            serde_json::json!({"metadata": {"name": "b"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "pause", "image": "p", "imageID": "", "ready": false, "restartCount": 0,
                                   "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
        );
        assert_eq!(classify(&running, &[]), PodState::Running);
        assert_eq!(
            classify(&creating, &[]),
            PodState::Pending("ContainerCreating".into())
        );
        let sandbox = "FailedCreatePodSandBox: Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox: plugin type=\"cilium-cni\" failed (add): unable to connect to Cilium daemon";
        assert_eq!(
            classify(&creating, &[sandbox.to_owned()]),
            PodState::Pending(sandbox.into())
        );
        let assigned = assign("s1", 4, &["w1".to_owned(), "w2".to_owned()]);
        let states = BTreeMap::from([
            ("kd-burst-s1-000".to_owned(), PodState::Running),
            (
                "kd-burst-s1-001".to_owned(),
                PodState::Pending(sandbox.into()),
            ),
            ("kd-burst-s1-002".to_owned(), PodState::Running),
        ]);
        let refused = BTreeMap::from([(
            "kd-burst-s1-003".to_owned(),
            "etcdserver: request timed out".to_owned(),
        )]);
        let t = tally(&assigned, &states, &refused, Duration::from_secs(60));
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].node.as_str(), t[0].created, t[0].failed),
            ("w1", 2, 0)
        );
        assert_eq!(
            (t[1].node.as_str(), t[1].created, t[1].failed),
            ("w2", 0, 2)
        );
        assert!(t[1].errors[0].starts_with("not running after 60 s: FailedCreatePodSandBox"));
        assert_eq!(
            t[1].errors[1],
            "create refused: etcdserver: request timed out"
        );
    }
}
