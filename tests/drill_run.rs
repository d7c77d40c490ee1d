//! `drill run` without a cluster: the pre-flight and upgrade logic against a `tower_test` mock
//! API server answering realistic JSON, the rollout tracker over realistic pod lists, the policy's
//! rollback decision, the agent resource script on this machine's own `/proc`, a complete run
//! record from the engine's record builder rendered by `report::write`, the drill definition's
//! error locations, and the CLI's refusals.

use crate::common;

use kubedrill::cilium::preflight::{self, PreflightError};
use kubedrill::drill::burst::{self, BurstSpec};
use kubedrill::drill::cluster;
use kubedrill::drill::definition::{DrillDefinition, Overrides};
use kubedrill::drill::engine::{self, kube_proxy_sighting, verify_agents};
use kubedrill::drill::layout::{self, NAMESPACE};
use kubedrill::drill::policy::{self, VerdictInputs, VerifyMismatch};
use kubedrill::drill::probes;
use kubedrill::drill::record::{self, ProbePair, RecordBuilder};
use kubedrill::drill::resources::{self, Sampler};
use kubedrill::drill::rollout::{self, PodObservation, RolloutTracker};
use kubedrill::k8s::kube_proxy;
use kubedrill::k8s::status::ExpectedDatapath;
use kubedrill::lab::definition::{self as labdef, LabError};
use kubedrill::report::record::{
    Datapath, DrillId, Endpoint, FaultEvent, HelmEvent, KubeProxyEvent, Node, NodeRole, Outcome,
    PhaseOutcome, PodBurst, PodBurstNode, ProbeKind, VersionChange, XdpMode,
};
use kubedrill::report::time::{Millis, Timestamp};
use kubedrill::spec::Version;
use kubedrill::spec::cilium::KubeProxyReplacement;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kube_mock::*;

// ---------------------------------------------------------------------------------------------
// Realistic objects
// ---------------------------------------------------------------------------------------------

pub(crate) fn node(name: &str, ip: &str, control_plane: bool) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    let mut taints = vec![];
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        taints
            .push(json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}));
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"podCIDR": "10.233.64.0/24", "taints": taints},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}]
        }
    })
}

fn nodes() -> Vec<Value> {
    vec![
        node("cp1", "192.168.151.11", true),
        node("w1", "192.168.151.12", false),
        node("w2", "192.168.151.13", false),
    ]
}

/// The state of an agent pod during a rolling update.
#[derive(Clone, Copy)]
pub(crate) enum Agent {
    /// Running and Ready.
    Ready,
    /// Deleted by the DaemonSet controller, still shutting down (Ready until the kubelet says
    /// otherwise).
    Terminating,
    /// New pod, init containers running (`PodInitializing`).
    Initializing,
    /// Agent container running, readiness probe not yet passed.
    Starting,
    /// Agent crashed and is waiting to be restarted.
    CrashLoop(i32),
}

pub(crate) fn agent(name: &str, node: &str, version: &str, state: Agent) -> Value {
    let image = format!("quay.io/cilium/cilium:v{version}@sha256:5e2a0b0a1c");
    // Pods of the old version started before the drill, replacements during it.
    let started = if version == "1.17.18" {
        "2026-11-20T08:30:02Z"
    } else {
        "2026-11-20T09:01:12Z"
    };
    let (phase, ready, cstate, restarts) = match state {
        Agent::Ready | Agent::Terminating => (
            "Running",
            true,
            json!({"running": {"startedAt": started}}),
            0,
        ),
        Agent::Initializing => (
            "Pending",
            false,
            json!({"waiting": {"reason": "PodInitializing"}}),
            0,
        ),
        Agent::Starting => (
            "Running",
            false,
            json!({"running": {"startedAt": started}}),
            0,
        ),
        Agent::CrashLoop(n) => (
            "Running",
            false,
            json!({"waiting": {"reason": "CrashLoopBackOff",
                               "message": "back-off 20s restarting failed container=cilium-agent"}}),
            n,
        ),
    };
    let mut meta = json!({"name": name, "namespace": "kube-system", "labels": {"k8s-app": "cilium"},
        "uid": format!("uid-{name}"),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "cilium", "uid": "uid-ds-cilium", "controller": true}]});
    if matches!(state, Agent::Terminating) {
        meta["deletionTimestamp"] = json!("2026-11-20T09:01:05Z");
        meta["deletionGracePeriodSeconds"] = json!(1);
    }
    let cond = |ok: bool| if ok { "True" } else { "False" };
    let init_done = !matches!(state, Agent::Initializing);
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"nodeName": node, "hostNetwork": true,
                 "containers": [{"name": "cilium-agent", "image": image}],
                 "initContainers": [{"name": "config", "image": image}, {"name": "mount-cgroup", "image": image}]},
        "status": {
            "phase": phase, "startTime": "2026-11-20T09:01:06Z",
            "conditions": [{"type": "Initialized", "status": cond(init_done)},
                           {"type": "Ready", "status": cond(ready)},
                           {"type": "ContainersReady", "status": cond(ready)},
                           {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "cilium-agent", "image": image, "imageID": "", "ready": ready,
                                   "restartCount": restarts, "started": ready, "state": cstate}]
        }
    })
}

fn pod(v: Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(v).expect("pod")
}

fn obs(pods: &[Value]) -> Vec<PodObservation> {
    pods.iter()
        .map(|p| rollout::observe(&pod(p.clone())))
        .collect()
}

pub(crate) fn preflight_ds(desired: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cilium-pre-flight-check", "namespace": "kube-system", "generation": 1,
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "cilium-preflight"}},
        "spec": {"selector": {"matchLabels": {"k8s-app": "cilium-pre-flight-check"}},
                 "template": {"metadata": {"labels": {"k8s-app": "cilium-pre-flight-check"}},
                              "spec": {"hostNetwork": true,
                                       "containers": [{"name": "cilium-pre-flight-check", "image": "quay.io/cilium/cilium:v1.18.12"}],
                                       "tolerations": [{"operator": "Exists"}]}}},
        "status": {"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
                   "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
                   "observedGeneration": 1}
    })
}

pub(crate) fn preflight_validator(ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cilium-pre-flight-check", "namespace": "kube-system", "generation": 1},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "cilium-pre-flight-check-deployment"}},
                 "template": {"metadata": {"labels": {"k8s-app": "cilium-pre-flight-check-deployment"}},
                              "spec": {"containers": [{"name": "cnp-validator", "image": "quay.io/cilium/cilium:v1.18.12"}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": ready, "availableReplicas": ready}
    })
}

fn agents_v(version: &str) -> Vec<Value> {
    vec![
        agent("cilium-4xk2p", "cp1", version, Agent::Ready),
        agent("cilium-9qv7c", "w1", version, Agent::Ready),
        agent("cilium-hm2tz", "w2", version, Agent::Ready),
    ]
}

// ---------------------------------------------------------------------------------------------
// Pre-flight
// ---------------------------------------------------------------------------------------------

/// The mock answers the four reads of `preflight::check`; the pre-flight DaemonSet's status is
/// taken from `ds_status` on each GET.
fn preflight_mock(
    mut ds_status: impl FnMut(usize) -> (i32, i32) + Send + 'static,
) -> (kube::Client, Log) {
    let mut gets = 0;
    mock(move |r| match r.path.as_str() {
        "/apis/apps/v1/namespaces/kube-system/daemonsets/cilium-pre-flight-check" => {
            let (d, ready) = ds_status(gets);
            gets += 1;
            Reply::Json(200, preflight_ds(d, ready))
        }
        "/apis/apps/v1/namespaces/kube-system/deployments/cilium-pre-flight-check" => {
            Reply::Json(200, preflight_validator(1))
        }
        "/api/v1/nodes" => Reply::Json(200, list("NodeList", "v1", "10", nodes())),
        "/api/v1/namespaces/kube-system/pods" => {
            assert!(
                r.query.contains("labelSelector=k8s-app%3Dcilium"),
                "{}",
                r.query
            );
            Reply::Json(200, list("PodList", "v1", "11", agents_v("1.17.18")))
        }
        _ => not_found(),
    })
}

#[tokio::test(start_paused = true)]
async fn preflight_waits_until_it_covers_every_agent_node() {
    // Image pulls take a while: 1 of 3, then 2 of 3, then every node that runs an agent.
    let (client, log) = preflight_mock(|i| match i {
        0 => (3, 1),
        1 => (3, 2),
        _ => (3, 3),
    });
    let mut seen = Vec::new();
    let r = preflight::wait(
        &client,
        Duration::from_secs(300),
        Duration::from_secs(5),
        |r| seen.push(r.to_string()),
    )
    .await
    .expect("pre-flight complete");
    assert!(r.is_ready());
    assert_eq!(r.expected, 3);
    assert_eq!(r.eligible_nodes, ["cp1", "w1", "w2"]);
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(
        seen[0].contains("waiting for: 1 of 3 pre-flight pods ready"),
        "{}",
        seen[0]
    );
    assert!(!seen[2].contains("waiting for"), "{}", seen[2]);
    let paths: Vec<String> = requests(&log).iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 12, "three rounds of four reads: {paths:#?}");
}

#[tokio::test(start_paused = true)]
async fn preflight_that_covers_fewer_nodes_than_the_agents_never_completes() {
    // The DaemonSet is "complete" by its own count (2/2), but three agents run on nodes it may
    // use: one node never got a pre-flight pod, so that node would pull the image mid-upgrade.
    let (client, _log) = preflight_mock(|_| (2, 2));
    let e = preflight::wait(
        &client,
        Duration::from_secs(30),
        Duration::from_secs(5),
        |_| {},
    )
    .await
    .expect_err("not like with like");
    let PreflightError::Timeout { last, .. } = &e else {
        panic!("expected a timeout, got {e}")
    };
    assert_eq!(
        last.waiting_for,
        ["2 pre-flight pods ready for 3 Cilium agents on eligible nodes"]
    );
    assert!(e.to_string().contains("not complete after 30s"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Rollout
// ---------------------------------------------------------------------------------------------

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).expect("timestamp")
}

fn summary(
    events: &[kubedrill::report::record::AgentEvent],
) -> Vec<(String, String, &'static str, u32)> {
    events
        .iter()
        .map(|e| {
            (
                e.at.to_string(),
                e.node.clone(),
                e.kind.as_str(),
                e.restart_count,
            )
        })
        .collect()
}

#[test]
fn rollout_pod_lists_become_per_node_events_in_order() {
    let old = "1.17.18";
    let new = "1.18.12";
    let mut t = RolloutTracker::new(&obs(&[
        agent("cilium-4xk2p", "cp1", old, Agent::Ready),
        agent("cilium-9qv7c", "w1", old, Agent::Ready),
    ]));
    let steps: Vec<(&str, Vec<Value>)> = vec![
        // The DaemonSet controller deletes w1's agent (maxUnavailable 1).
        (
            "2026-11-20T09:01:05.000Z",
            vec![
                agent("cilium-4xk2p", "cp1", old, Agent::Ready),
                agent("cilium-9qv7c", "w1", old, Agent::Terminating),
            ],
        ),
        // Gone; its replacement is scheduled and initialising.
        (
            "2026-11-20T09:01:07.000Z",
            vec![
                agent("cilium-4xk2p", "cp1", old, Agent::Ready),
                agent("cilium-r8d5w", "w1", new, Agent::Initializing),
            ],
        ),
        // The new agent container runs, not yet Ready.
        (
            "2026-11-20T09:01:12.000Z",
            vec![
                agent("cilium-4xk2p", "cp1", old, Agent::Ready),
                agent("cilium-r8d5w", "w1", new, Agent::Starting),
            ],
        ),
        // Ready.
        (
            "2026-11-20T09:01:31.000Z",
            vec![
                agent("cilium-4xk2p", "cp1", old, Agent::Ready),
                agent("cilium-r8d5w", "w1", new, Agent::Ready),
            ],
        ),
        // cp1 next; the watch misses the intermediate states of its replacement.
        (
            "2026-11-20T09:01:32.000Z",
            vec![
                agent("cilium-4xk2p", "cp1", old, Agent::Terminating),
                agent("cilium-r8d5w", "w1", new, Agent::Ready),
            ],
        ),
        (
            "2026-11-20T09:01:58.000Z",
            vec![
                agent("cilium-z2b6n", "cp1", new, Agent::Ready),
                agent("cilium-r8d5w", "w1", new, Agent::Ready),
            ],
        ),
        // w1's new agent crashes once and comes back.
        (
            "2026-11-20T09:02:30.000Z",
            vec![
                agent("cilium-z2b6n", "cp1", new, Agent::Ready),
                agent("cilium-r8d5w", "w1", new, Agent::CrashLoop(1)),
            ],
        ),
    ];
    for (at, pods) in &steps {
        t.observe(ts(at), &obs(pods));
    }
    assert_eq!(
        summary(t.events()),
        [
            (
                "2026-11-20T09:01:05.000Z".into(),
                "w1".into(),
                "not-ready",
                0
            ),
            ("2026-11-20T09:01:12.000Z".into(), "w1".into(), "restart", 0),
            ("2026-11-20T09:01:31.000Z".into(), "w1".into(), "ready", 0),
            (
                "2026-11-20T09:01:32.000Z".into(),
                "cp1".into(),
                "not-ready",
                0
            ),
            (
                "2026-11-20T09:01:58.000Z".into(),
                "cp1".into(),
                "restart",
                0
            ),
            ("2026-11-20T09:01:58.000Z".into(), "cp1".into(), "ready", 0),
            (
                "2026-11-20T09:02:30.000Z".into(),
                "w1".into(),
                "not-ready",
                0
            ),
        ]
    );
    assert_eq!(t.nodes_at(Version::new(1, 18, 12)), ["cp1"]);
    // The crashed agent restarts: a restart with count 1, then ready.
    let mut back = agent("cilium-r8d5w", "w1", new, Agent::Ready);
    back["status"]["containerStatuses"][0]["restartCount"] = json!(1);
    back["status"]["containerStatuses"][0]["state"] =
        json!({"running": {"startedAt": "2026-11-20T09:02:51Z"}});
    let ev = t.observe(
        ts("2026-11-20T09:02:52.000Z"),
        &obs(&[agent("cilium-z2b6n", "cp1", new, Agent::Ready), back]),
    );
    assert_eq!(
        summary(&ev),
        [
            ("2026-11-20T09:02:52.000Z".into(), "w1".into(), "restart", 1),
            ("2026-11-20T09:02:52.000Z".into(), "w1".into(), "ready", 1),
        ]
    );
    assert_eq!(t.container_restarts()["w1"], 1);
    assert_eq!(t.nodes_at(Version::new(1, 18, 12)), ["cp1", "w1"]);
}

#[tokio::test(start_paused = true)]
async fn agent_watch_follows_the_rollout_through_list_and_watch() {
    let old = "1.17.18";
    let new = "1.18.12";
    let initial = vec![
        agent("cilium-4xk2p", "cp1", old, Agent::Ready),
        agent("cilium-9qv7c", "w1", old, Agent::Ready),
    ];
    let init2 = initial.clone();
    let mut watches = 0;
    let (client, log) = mock(move |r| {
        if r.path != "/api/v1/namespaces/kube-system/pods" {
            return not_found();
        }
        if !r.is_watch() {
            return Reply::Json(200, list("PodList", "v1", "500", init2.clone()));
        }
        watches += 1;
        if watches > 1 {
            return Reply::Hang;
        }
        let events = [
            (
                "MODIFIED",
                agent("cilium-9qv7c", "w1", old, Agent::Terminating),
            ),
            (
                "DELETED",
                agent("cilium-9qv7c", "w1", old, Agent::Terminating),
            ),
            (
                "ADDED",
                agent("cilium-r8d5w", "w1", new, Agent::Initializing),
            ),
            (
                "MODIFIED",
                agent("cilium-r8d5w", "w1", new, Agent::Starting),
            ),
            ("MODIFIED", agent("cilium-r8d5w", "w1", new, Agent::Ready)),
        ];
        Reply::Watch(
            events
                .into_iter()
                .enumerate()
                .map(|(i, (kind, mut obj))| {
                    obj["metadata"]["resourceVersion"] = json!(format!("{}", 501 + i));
                    json!({"type": kind, "object": obj})
                })
                .collect(),
        )
    });
    let tracker = Arc::new(Mutex::new(RolloutTracker::new(&obs(&initial))));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(cluster::watch_agents(client, tracker.clone(), rx));
    for _ in 0..200 {
        if tracker.lock().expect("t").events().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(()).expect("stop");
    let errors = task.await.expect("watch task");
    assert!(errors.is_empty(), "{errors:?}");
    let t = tracker.lock().expect("t");
    let kinds: Vec<(&str, &str)> = t
        .events()
        .iter()
        .map(|e| (e.node.as_str(), e.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("w1", "not-ready"), ("w1", "restart"), ("w1", "ready")]
    );
    assert!(t.events().windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(t.nodes_at(Version::new(1, 18, 12)), ["w1"]);
    let reqs = requests(&log);
    assert!(!reqs[0].is_watch() && reqs[1].is_watch(), "{reqs:#?}");
    assert!(
        reqs[1].query.contains("resourceVersion=500"),
        "{}",
        reqs[1].query
    );
}

// ---------------------------------------------------------------------------------------------
// Verification and kube-proxy
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn verification_names_unready_unreachable_and_missing_agents() {
    let (client, log) = mock(|r| {
        if r.path == "/api/v1/namespaces/kube-system/pods" {
            return Reply::Json(
                200,
                list(
                    "PodList",
                    "v1",
                    "700",
                    vec![
                        agent("cilium-z2b6n", "cp1", "1.18.12", Agent::Ready),
                        agent("cilium-r8d5w", "w1", "1.18.12", Agent::CrashLoop(3)),
                    ],
                ),
            );
        }
        // The exec: a plain 403 instead of a protocol upgrade.
        Reply::Json(
            403,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "pods \"cilium-z2b6n\" is forbidden: cannot create resource \"pods/exec\"",
                   "reason": "Forbidden", "code": 403}),
        )
    });
    let expected = ExpectedDatapath {
        cilium_version: Some(Version::new(1, 18, 12)),
        ..ExpectedDatapath::default()
    };
    let hosts = ["cp1".to_owned(), "w1".to_owned(), "w2".to_owned()];
    let v = verify_agents(&client, &expected, &hosts, Duration::from_secs(10)).await;
    let lines: Vec<String> = v
        .mismatches
        .iter()
        .map(|m| format!("{} {} {}", m.node, m.step, m.detail))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("cp1 1.18.12 cannot read the agent's status"),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1],
        "w1 1.18.12 agent pod cilium-r8d5w not Ready (CrashLoopBackOff)"
    );
    assert_eq!(lines[2], "w2 1.18.12 no Cilium agent pod on this node");
    assert!(v.datapaths.is_empty());
    assert!(
        requests(&log)
            .iter()
            .any(|r| r.path.ends_with("/pods/cilium-z2b6n/exec")),
        "the ready agent was asked"
    );
    // With rollback_on_verify_failure these roll back; without, they do not.
    let limits = BTreeMap::new();
    assert!(policy::rollback_decision(&[], &limits, &v.mismatches, true, None).rollback);
    assert!(!policy::rollback_decision(&[], &limits, &v.mismatches, false, None).rollback);
}

#[tokio::test]
async fn kube_proxy_coming_back_is_a_sighting_only_in_a_cluster_without_it() {
    let (client, _log) = mock(|r| match r.path.as_str() {
        "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy" => Reply::Json(
            200,
            json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "kube-proxy", "namespace": "kube-system", "uid": "uid-kp"},
                "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}}, "template": {}},
                "status": {"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 1}
            }),
        ),
        _ => not_found(),
    });
    let now = kube_proxy::detect(&client).await.expect("detect");
    let s = kube_proxy_sighting(true, &now, KubeProxyReplacement::True).expect("sighting");
    assert!(
        s.starts_with("daemonset/kube-proxy present (3 pods)"),
        "{s}"
    );
    assert!(s.contains("kube-proxy replacement"), "{s}");
    assert_eq!(
        kube_proxy_sighting(false, &now, KubeProxyReplacement::True),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// Probe pods, Services, burst
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_left_over_namespace_is_replaced_and_services_give_their_addresses() {
    let mut ns_gets = 0;
    let (client, log) = mock(move |r| {
        let ns_path = format!("/api/v1/namespaces/{NAMESPACE}");
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", p) if p == ns_path => {
                ns_gets += 1;
                match ns_gets {
                    1 => Reply::Json(
                        200,
                        json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": NAMESPACE}, "status": {"phase": "Active"}}),
                    ),
                    2 => Reply::Json(
                        200,
                        json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": NAMESPACE, "deletionTimestamp": "2026-11-20T09:00:01Z"},
                        "status": {"phase": "Terminating"}}),
                    ),
                    _ => not_found(),
                }
            }
            ("DELETE", p) if p == ns_path => Reply::Json(
                200,
                json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": NAMESPACE}, "status": {"phase": "Terminating"}}),
            ),
            ("POST", "/api/v1/namespaces") => {
                Reply::Json(201, serde_json::from_str(&r.body).expect("body"))
            }
            ("POST", p) if p == format!("{ns_path}/services") => {
                let mut svc: Value = serde_json::from_str(&r.body).expect("service");
                svc["spec"]["clusterIP"] = json!("10.233.12.80");
                if svc["spec"]["type"] == "NodePort" {
                    svc["spec"]["ports"][0]["nodePort"] = json!(31234);
                }
                Reply::Json(201, svc)
            }
            _ => not_found(),
        }
    });
    cluster::recreate_namespace(&client, Duration::from_secs(60))
        .await
        .expect("namespace");
    let (ip, port) = cluster::create_services(&client).await.expect("services");
    assert_eq!((ip.as_str(), port), ("10.233.12.80", 31234));
    let lines: Vec<String> = requests(&log)
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        lines,
        [
            "GET /api/v1/namespaces/kubedrill-drill",
            "DELETE /api/v1/namespaces/kubedrill-drill",
            "GET /api/v1/namespaces/kubedrill-drill",
            "GET /api/v1/namespaces/kubedrill-drill",
            "POST /api/v1/namespaces",
            "POST /api/v1/namespaces/kubedrill-drill/services",
            "POST /api/v1/namespaces/kubedrill-drill/services",
        ]
    );
    // The NodePort Service forwards from every node; both select the backend.
    let (cip, np) = cluster::services();
    let np = np.spec.expect("spec");
    assert_eq!(np.external_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(
        cip.spec.expect("spec").selector,
        np.selector,
        "both Services select the backend pod"
    );
}

#[tokio::test(start_paused = true)]
async fn burst_counts_pods_that_cannot_start_per_node_with_the_kubelet_reason() {
    let created: Arc<Mutex<Vec<Value>>> = Arc::default();
    let c2 = created.clone();
    let sandbox = "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox \"4c1f\": plugin type=\"cilium-cni\" failed (add): unable to connect to Cilium daemon: failed to create cilium agent client after 30.000000 seconds timeout";
    let (client, log) = mock(move |r| {
        let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", p) if p == pods => {
                let v: Value = serde_json::from_str(&r.body).expect("pod");
                c2.lock().expect("c").push(v.clone());
                Reply::Json(201, v)
            }
            ("GET", p) if p == pods => {
                assert!(
                    r.query.contains("labelSelector=kubedrill.io%2Fburst%3Ds1"),
                    "{}",
                    r.query
                );
                let items: Vec<Value> = c2
                    .lock()
                    .expect("c")
                    .iter()
                    .map(|p| {
                        let mut p = p.clone();
                        let on_w2 = p["spec"]["nodeName"] == "w2";
                        p["status"] = if on_w2 {
                            json!({"phase": "Pending", "containerStatuses": [{"name": "pause", "image": "p", "imageID": "",
                                "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]})
                        } else {
                            json!({"phase": "Running", "containerStatuses": [{"name": "pause", "image": "p", "imageID": "",
                                "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-11-20T09:01:20Z"}}}]})
                        };
                        p
                    })
                    .collect();
                Reply::Json(200, list("PodList", "v1", "900", items))
            }
            ("GET", p) if p == format!("/api/v1/namespaces/{NAMESPACE}/events") => Reply::Json(
                200,
                list(
                    "EventList",
                    "v1",
                    "901",
                    vec![json!({
                        "apiVersion": "v1", "kind": "Event",
                        "metadata": {"name": "kd-burst-s1-001.1", "namespace": NAMESPACE},
                        "involvedObject": {"kind": "Pod", "name": "kd-burst-s1-001", "namespace": NAMESPACE},
                        "reason": "FailedCreatePodSandBox", "message": sandbox, "type": "Warning",
                        "lastTimestamp": "2026-11-20T09:01:40Z", "count": 3
                    })],
                ),
            ),
            ("DELETE", p) if p == pods => Reply::Json(200, list("PodList", "v1", "902", vec![])),
            _ => not_found(),
        }
    });
    let nodes = ["w1".to_owned(), "w2".to_owned(), "cp1".to_owned()];
    let b = burst::run(
        &client,
        &BurstSpec {
            namespace: NAMESPACE,
            id: "s1",
            count: 6,
            nodes: &nodes,
            image: "registry.k8s.io/pause:3.10",
            timeout: Duration::from_secs(20),
            poll: Duration::from_secs(2),
        },
    )
    .await
    .expect("burst");
    let per: Vec<(&str, u32, u32)> = b
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.created, n.failed))
        .collect();
    assert_eq!(per, [("cp1", 2, 0), ("w1", 2, 0), ("w2", 0, 2)]);
    let w2 = &b.nodes[2];
    assert!(
        w2.errors[0].starts_with(
            "not running after 20 s: FailedCreatePodSandBox: Failed to create pod sandbox"
        ),
        "{:?}",
        w2.errors
    );
    // Pods pinned round-robin, cleaned up with one labelled delete.
    let pinned: Vec<String> = created
        .lock()
        .expect("c")
        .iter()
        .map(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(pinned, ["w1", "w2", "cp1", "w1", "w2", "cp1"]);
    let deletes: Vec<Logged> = requests(&log)
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(
        deletes[0]
            .query
            .contains("labelSelector=kubedrill.io%2Fburst%3Ds1")
    );
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// A two-node lab with this drill section, and the drill read from it (the findings of either,
/// as text).
fn lab_with_drill(drill: &str) -> Result<(labdef::Lab, DrillDefinition), String> {
    let text = format!(
        "name: t\nhosts:\n  - {{name: cp1, role: control-plane}}\n  - {{name: w1, role: worker}}\n{drill}"
    );
    let lab = labdef::parse(Path::new("labs/t.yaml"), &text).map_err(|e| match e {
        LabError::Invalid(d) => d.to_string(),
        e => e.to_string(),
    })?;
    let def = kubedrill::drill::definition::of_lab(&lab)
        .map_err(|d| d.to_string())?
        .ok_or("no drill section")?;
    Ok((lab, def))
}

fn definition(drill: &str) -> DrillDefinition {
    match lab_with_drill(drill) {
        Ok((_, d)) => d,
        Err(e) => panic!("{e}"),
    }
}

fn ep(name: &str, node: Option<&str>) -> Endpoint {
    Endpoint {
        name: name.into(),
        node: node.map(str::to_owned),
    }
}

fn nodeport_window(start: Timestamp, ms: u64) -> kubedrill::report::record::LossWindow {
    kubedrill::report::record::LossWindow {
        kind: ProbeKind::TcpNodeport,
        from: ep("host/cp1", Some("cp1")),
        to: ep("192.168.151.13:31234 (backend on w1)", Some("w2")),
        start,
        end: start.plus(Millis(ms)),
        duration_ms: Millis(ms),
        lost: ms / 20,
    }
}

#[test]
fn a_long_nodeport_window_rolls_back_a_short_one_does_not() {
    let def = definition(
        "drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  policy:\n    max_loss_ms: {tcp-nodeport: 1000}\n",
    );
    let pol = record::record_policy(&def.policy);
    assert_eq!(
        pol.max_interruption_ms[&ProbeKind::TcpNodeport],
        Millis(1000)
    );
    let t0 = ts("2026-11-20T09:01:37.900Z");
    let long = nodeport_window(t0, 2500);
    let short = nodeport_window(t0, 400);
    let d = policy::rollback_decision(
        std::slice::from_ref(&long),
        &pol.max_interruption_ms,
        &[],
        true,
        None,
    );
    assert!(d.rollback);
    assert_eq!(
        d.reasons,
        [
            "tcp-nodeport interruption 2.50 s (host/cp1 (cp1) → 192.168.151.13:31234 (backend on w1) (w2), 125 probes lost) exceeds the 1.00 s limit"
        ]
    );
    let d = policy::rollback_decision(
        std::slice::from_ref(&short),
        &pol.max_interruption_ms,
        &[],
        true,
        None,
    );
    assert!(!d.rollback, "{:?}", d.reasons);

    // The verdict agrees.
    let probe = kubedrill::report::record::Probe {
        kind: ProbeKind::TcpNodeport,
        from: long.from.clone(),
        to: long.to.clone(),
        rate_per_s: 20,
        sent: 7000,
        lost: 125,
        connections: None,
    };
    let inputs = |w: &[kubedrill::report::record::LossWindow],
                  p: kubedrill::report::record::Probe| {
        let restarts = BTreeMap::new();
        policy::verdict(
            &VerdictInputs {
                probes: &[p],
                loss_windows: w,
                mismatches: &[],
                burst: None,
                kube_proxy: &[],
                leaks: &[],
                container_restarts: &restarts,
                failures: &[],
                rollback: None,
            },
            &pol,
        )
    };
    let fail = inputs(&[long], probe.clone());
    assert_eq!(fail.outcome, Outcome::Fail);
    let pass = inputs(
        &[short],
        kubedrill::report::record::Probe { lost: 20, ..probe },
    );
    assert_eq!(pass.outcome, Outcome::Pass, "{:?}", pass.reasons);
    assert!(
        pass.reasons[0].starts_with("longest tcp-nodeport interruption 400 ms"),
        "{:?}",
        pass.reasons
    );
}

// ---------------------------------------------------------------------------------------------
// Resources on this machine
// ---------------------------------------------------------------------------------------------

/// Run the sampling script here, with a `pidof` that names this test process instead of the
/// agent: the same script, this machine's `/proc`, `getconf`.
fn sample_self(fake_bin: &Path) -> resources::Reading {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(resources::script())
        .env(
            "PATH",
            format!(
                "{}:{}",
                fake_bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    resources::parse_output(&String::from_utf8_lossy(&out.stdout)).expect("reading")
}

#[test]
fn the_sampling_script_reads_this_machines_proc() {
    let dir = tempfile::tempdir().expect("tmp");
    let pidof = dir.path().join("pidof");
    std::fs::write(
        &pidof,
        format!(
            "#!/bin/sh\n[ \"$1\" = -s ] && [ \"$2\" = cilium-agent ] && echo {}\n",
            std::process::id()
        ),
    )
    .expect("pidof");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pidof, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let a = sample_self(dir.path());
    assert_eq!(a.stat.pid, std::process::id());
    assert!(a.rss_bytes > 1 << 20, "{}", a.rss_bytes);
    assert!(a.clk_tck >= 100);
    // Burn CPU for a while, then read again: the same process, some CPU used.
    let t = std::time::Instant::now();
    let mut x = 0u64;
    while t.elapsed() < Duration::from_millis(600) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
    let b = sample_self(dir.path());
    assert!(b.same_process(&a));
    let m = resources::cpu_millicores(&a, &b).expect("cpu");
    let cores = std::thread::available_parallelism().map_or(64, |n| n.get() as u32);
    assert!(m > 100 && m <= 1000 * cores + 200, "{m} millicores");
    let mut s = Sampler::default();
    let at = record::now();
    s.next(at, a);
    let second = s.next(at.plus(Millis(700)), b);
    assert_eq!(second.cpu_millicores, m);
    // Without the agent: the script fails with its message.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(resources::script())
        .env("PATH", "/nonexistent:/usr/bin:/bin")
        .output()
        .expect("sh");
    if !out.status.success() {
        assert!(String::from_utf8_lossy(&out.stderr).contains("no cilium-agent process"));
    }
}

#[test]
fn hand_written_proc_edge_cases() {
    // A command name with a `) ` inside, as a process may name itself.
    let stat = "777 (cilium-agent) x) S 1 777 777 0 -1 4194560 100 0 0 0 12 34 0 0 20 0 9 0 5555 1 1 18446744073709551615\n";
    let s = resources::parse_stat(stat).expect("stat");
    assert_eq!((s.pid, s.utime, s.stime, s.starttime), (777, 12, 34, 5555));
    // Negative numbers where unsigned ones are expected are errors, not wraps.
    let neg = stat.replace(" 12 34 ", " -12 34 ");
    assert!(resources::parse_stat(&neg).is_err());
    assert!(resources::parse_status_rss("VmRSS:\t-5 kB\n").is_err());
    assert_eq!(resources::parse_status_rss("VmRSS:\t0 kB\n"), Ok(0));
    assert!(resources::parse_uptime("NaN 1").is_err());
    assert!(resources::parse_output("garbage").is_err());
}

// ---------------------------------------------------------------------------------------------
// The run record
// ---------------------------------------------------------------------------------------------

fn pairs() -> Vec<ProbePair> {
    let client = ep("pod/kd-client", Some("w2"));
    let backend = |s: &str| ep(&format!("pod/kd-backend{s}"), Some("w1"));
    vec![
        ProbePair {
            id: "icmp-pod-pod".into(),
            kind: ProbeKind::IcmpPodPod,
            from: client.clone(),
            to: backend(""),
            rate_per_s: 50,
        },
        ProbePair {
            id: "tcp-pod".into(),
            kind: ProbeKind::TcpPod,
            from: client.clone(),
            to: backend(":7001"),
            rate_per_s: 50,
        },
        ProbePair {
            id: "tcp-clusterip".into(),
            kind: ProbeKind::TcpClusterip,
            from: client.clone(),
            to: ep("svc/kd-echo 10.233.12.80:7001", None),
            rate_per_s: 50,
        },
        ProbePair {
            id: "tcp-nodeport".into(),
            kind: ProbeKind::TcpNodeport,
            from: ep("host/cp1", Some("cp1")),
            to: ep("192.168.151.13:31234 (backend on w1)", Some("w2")),
            rate_per_s: 50,
        },
        ProbePair {
            id: "udp-pod".into(),
            kind: ProbeKind::UdpPod,
            from: client,
            to: backend(":7002"),
            rate_per_s: 50,
        },
    ]
}

/// The agents' JSON lines as `run_detached` returns them, including a window whose start is a
/// little before the run started on this machine's clock (node clocks differ by milliseconds).
fn prober_output(t0: i64) -> ProbeOutput {
    let loss = |probe: &str, kind: &str, start: i64, ms: i64, lost: u64| {
        format!(
            r#"{{"event":"loss","probe":"{probe}","kind":"{kind}","target":"x","start_ms":{start},"end_ms":{},"duration_ms":{ms},"lost":{lost},"open":false,"reason":"timeout","interval_ms":20}}"#,
            start + ms
        )
    };
    let summary = |probe: &str, kind: &str, sent: u64, lost: u64| {
        format!(
            r#"{{"event":"summary","ts_ms":{},"probe":"{probe}","kind":"{kind}","target":"x","start_ms":{t0},"end_ms":{},"sent":{sent},"ok":{},"lost":{lost},"skipped":0,"windows":1,"loss_ms":0,"longest_window_ms":0,"rtt_ms":{{}},"stop":"signal"}}"#,
            t0 + 300_000,
            t0 + 300_000,
            sent - lost
        )
    };
    let client = [
        loss("icmp-pod-pod", "icmp", t0 + 97_350, 1800, 90),
        loss("tcp-pod", "tcp", t0 - 40, 120, 6),
        summary("icmp-pod-pod", "icmp", 15_000, 90),
        summary("tcp-pod", "tcp", 15_000, 6),
        summary("tcp-clusterip", "tcp", 15_000, 0),
        summary("udp-pod", "udp", 15_000, 0),
    ]
    .join("\n");
    let host = [
        loss("tcp-nodeport", "tcp", t0 + 97_900, 400, 20),
        // A window of a probe the drill did not plan is ignored.
        loss("stray", "tcp", t0 + 1000, 100, 5),
        summary("tcp-nodeport", "tcp", 15_000, 20),
    ]
    .join("\n");
    ProbeOutput { client, host }
}

struct ProbeOutput {
    client: String,
    host: String,
}

fn built_record(dir: &Path) -> (kubedrill::report::record::RunRecord, PathBuf) {
    let t0 = ts("2026-11-20T09:00:00.000Z");
    let ms = |s: u64| t0.plus(Millis(s));
    let def = definition(
        "drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  probes: {rate_per_s: 50}\n  policy: {max_loss_ms: 2000, soak_secs: 120, pod_burst: 6}\n",
    );
    let drill = def.resolve(&Overrides::default()).expect("resolve");
    let nodes = vec![
        Node {
            name: "cp1".into(),
            role: NodeRole::ControlPlane,
            address: Some("192.168.151.11".into()),
        },
        Node {
            name: "w1".into(),
            role: NodeRole::Worker,
            address: Some("192.168.151.12".into()),
        },
        Node {
            name: "w2".into(),
            role: NodeRole::Worker,
            address: Some("192.168.151.13".into()),
        },
    ];
    let mut b = RecordBuilder::new(
        DrillId {
            name: drill.name.clone(),
            run_id: record::run_id(&drill.name, t0),
        },
        "lab-3node",
        t0,
        VersionChange {
            from: drill.from.to_string(),
            to: drill.to.to_string(),
        },
        nodes,
        record::record_policy(&def.policy),
    );
    for (name, a, z) in [
        ("reset", 0, 40),
        ("connect", 40, 46),
        ("preflight", 46, 88),
        ("probes-start", 88, 92),
        ("resources", 92, 92),
    ] {
        b.phase(name, ms(a * 1000), ms(z * 1000), PhaseOutcome::Ok);
    }
    b.phase("upgrade/1.18.12", ms(92_000), ms(180_000), PhaseOutcome::Ok);
    b.phase("rollback", ms(180_000), ms(180_000), PhaseOutcome::Skipped);
    b.phase("soak", ms(180_000), ms(300_000), PhaseOutcome::Ok);
    b.soak = Some(kubedrill::report::record::Window {
        start: ms(180_000),
        end: ms(300_000),
    });
    b.pairs = pairs();
    let out = prober_output(t0.unix_ms());
    b.probe_runs = vec![
        probes::parse_events(&out.client),
        probes::parse_events(&out.host),
    ];
    // Agent events from the tracker.
    let mut t = RolloutTracker::new(&obs(&agents_v("1.17.18")));
    let mut pods = agents_v("1.17.18");
    pods[1] = agent("cilium-9qv7c", "w1", "1.17.18", Agent::Terminating);
    t.observe(ms(96_000), &obs(&pods));
    pods[1] = agent("cilium-r8d5w", "w1", "1.18.12", Agent::Starting);
    t.observe(ms(98_000), &obs(&pods));
    pods[1] = agent("cilium-r8d5w", "w1", "1.18.12", Agent::Ready);
    t.observe(ms(117_000), &obs(&pods));
    b.agent_events = t.events().to_vec();
    // Resources from the sampler: flat agents, 5 s apart, over the whole run.
    for (i, node) in ["cp1", "w1", "w2"].iter().enumerate() {
        let mut s = Sampler::default();
        let series: Vec<_> = (0..60u64)
            .map(|k| {
                let r = resources::Reading {
                    stat: resources::StatFields {
                        pid: 4000 + i as u32,
                        utime: 1000 + 10 * k,
                        stime: 200 + 2 * k,
                        starttime: 900,
                    },
                    clk_tck: 100,
                    uptime: 100.0 + 5.0 * k as f64,
                    rss_bytes: (180 << 20) + (k % 3) * 4096,
                };
                s.next(ms(5000 * k), r)
            })
            .collect();
        b.resources.insert((*node).to_owned(), series);
    }
    b.bursts = vec![PodBurst {
        start: ms(100_000),
        end: ms(130_000),
        nodes: vec![
            PodBurstNode {
                node: "cp1".into(),
                created: 2,
                failed: 0,
                errors: vec![],
            },
            PodBurstNode {
                node: "w1".into(),
                created: 2,
                failed: 0,
                errors: vec![],
            },
            PodBurstNode {
                node: "w2".into(),
                created: 2,
                failed: 0,
                errors: vec![],
            },
        ],
    }];
    b.helm_events.push(HelmEvent::Upgrade {
        at: ms(93_000),
        revision: 2,
        chart_version: "1.18.12".into(),
    });
    b.values_diff = record::redact_diff(
        "- kubeProxyReplacement: strict\n+ kubeProxyReplacement: true\n+ upgradeCompatibility: \"1.17\"\n",
    );
    let dp = Datapath {
        kube_proxy_replacement: true,
        dsr: true,
        maglev: true,
        xdp: XdpMode::Native,
    };
    for n in ["cp1", "w1", "w2"] {
        b.before.insert(n.into(), dp);
        b.after.insert(n.into(), dp);
    }
    // Config drift as the pre-flight computes it: from the deployed release's and the target
    // chart's cilium-config, one change pinned.
    let cm = |data: &str| {
        kubedrill::drill::drift::AgentConfig::from_manifest(
            "t",
            &format!("kind: ConfigMap\nmetadata: {{name: cilium-config}}\ndata:\n{data}"),
        )
        .expect("configmap")
    };
    let drift = kubedrill::drill::drift::diff(
        &cm(
            "  enable-l2-neigh-discovery: \"true\"\n  mesh-auth-enabled: \"true\"\n  bpf-lb-maglev-table-size: \"16381\"\n",
        ),
        &cm(
            "  enable-l2-neigh-discovery: \"false\"\n  mesh-auth-enabled: \"false\"\n  bpf-lb-maglev-table-size: \"16381\"\n",
        ),
        &[
            (
                "enable-l2-neigh-discovery".to_string(),
                "l2NeighDiscovery.enabled".to_string(),
            ),
            (
                "mesh-auth-enabled".to_string(),
                "authentication.enabled".to_string(),
            ),
        ]
        .into_iter()
        .collect(),
    );
    b.config_drift
        .push(drift.record("1.17.3", "1.18.12", vec!["mesh-auth-enabled".into()]));
    b.phase("report", ms(300_000), ms(301_000), PhaseOutcome::Ok);
    let mut rec = b.build(ms(301_500));
    let restarts = t.container_restarts();
    rec.verdict = policy::verdict(
        &VerdictInputs {
            probes: &rec.probes,
            loss_windows: &rec.loss_windows,
            mismatches: &[],
            burst: rec.pod_burst.as_ref(),
            kube_proxy: &rec.kube_proxy_events,
            leaks: &[],
            container_restarts: &restarts,
            failures: &[],
            rollback: None,
        },
        &rec.policy,
    );
    let run_dir = dir.join(&rec.drill.run_id);
    std::fs::create_dir_all(&run_dir).expect("run dir");
    std::fs::write(
        run_dir.join("run.json"),
        serde_json::to_string_pretty(&rec).expect("json"),
    )
    .expect("write");
    (rec, run_dir)
}

#[test]
fn the_record_builder_makes_a_record_that_report_write_accepts() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rec, run_dir) = built_record(dir.path());
    assert!(rec.problems().is_empty(), "{:#?}", rec.problems());
    // Probes and windows: the stray window is dropped, the skewed one clamped to the run.
    assert_eq!(rec.probes.len(), 5);
    assert_eq!(rec.loss_windows.len(), 3, "{:#?}", rec.loss_windows);
    let skewed = rec
        .loss_windows
        .iter()
        .find(|w| w.kind == ProbeKind::TcpPod)
        .expect("tcp-pod window");
    assert_eq!(skewed.start, rec.started);
    assert_eq!(skewed.duration_ms, Millis(80));
    let np = rec
        .probes
        .iter()
        .find(|p| p.kind == ProbeKind::TcpNodeport)
        .expect("np");
    assert_eq!((np.sent, np.lost), (15_000, 20));
    assert_eq!(
        rec.verdict.outcome,
        Outcome::Pass,
        "{:?}",
        rec.verdict.reasons
    );
    assert_eq!(rec.agent_events.len(), 3);
    assert_eq!(rec.resources[0].samples.len(), 60);
    // CPU: 12 ticks per 5 s at 100 Hz = 24 millicores.
    assert_eq!(rec.resources[0].samples[1].cpu_millicores, 24);

    let w = kubedrill::report::write(&run_dir).expect("report::write accepts the record");
    assert_eq!(w.verdict, Outcome::Pass);
    assert!(w.leaking_nodes.is_empty());
    let html = std::fs::read_to_string(&w.html).expect("html");
    assert!(html.contains("tcp-nodeport"));
    assert!(
        html.contains("upgrade&#x2F;1.18.12"),
        "phases are in the HTML (tera escapes the slash)"
    );
    let md = std::fs::read_to_string(&w.markdown).expect("md");
    assert!(md.contains("+ kubeProxyReplacement: true"), "{md}");
    assert!(md.contains("upgrade/1.18.12"), "{md}");
    // The drift table: the unpinned datapath change offered, the pinned one named, the
    // unchanged Maglev table listed.
    assert!(
        md.contains("offered: l2NeighDiscovery.enabled=true"),
        "{md}"
    );
    assert!(md.contains("pinned: authentication.enabled=true"), "{md}");
    assert!(md.contains("bpf-lb-maglev-table-size"), "{md}");
    assert!(
        html.contains("config-drift"),
        "the drift section is in the HTML"
    );
    let back = kubedrill::report::load(&run_dir.join("run.json")).expect("load");
    assert_eq!(back, rec);
}

#[test]
fn a_failing_run_record_keeps_its_reasons_and_renders() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut rec, run_dir) = built_record(dir.path());
    // The same run, with a kube-proxy sighting, a rollback and a burst failure on w2.
    rec.kube_proxy_events.push(KubeProxyEvent {
        at: rec.started.plus(Millis(150_000)),
        node: None,
        detail: "daemonset/kube-proxy present (3 pods)".into(),
    });
    if let Some(b) = rec.pod_burst.as_mut() {
        b.nodes[2].failed = 2;
        b.nodes[2].errors = vec!["not running after 120 s: FailedCreatePodSandBox: …".into()];
    }
    let restarts = BTreeMap::from([("w1".to_owned(), 2u32)]);
    let rollback = vec!["tcp-nodeport interruption 2.50 s exceeds the 1.00 s limit".to_owned()];
    let mismatch = [VerifyMismatch {
        node: "w2".into(),
        step: "1.18.12".into(),
        detail: "XDP acceleration: expected native, agent reports Disabled".into(),
    }];
    let failures = [
        "cp1: phase upgrade/1.18.12: helm upgrade cilium …: exited with 1: Error: UPGRADE FAILED"
            .to_owned(),
    ];
    rec.verdict = policy::verdict(
        &VerdictInputs {
            probes: &rec.probes,
            loss_windows: &rec.loss_windows,
            mismatches: &mismatch,
            burst: rec.pod_burst.as_ref(),
            kube_proxy: &rec.kube_proxy_events,
            leaks: &[],
            container_restarts: &restarts,
            failures: &failures,
            rollback: Some(&rollback),
        },
        &rec.policy,
    );
    assert_eq!(rec.verdict.outcome, Outcome::Fail);
    let all = rec.verdict.reasons.join("\n");
    for needle in [
        "phase upgrade/1.18.12",
        "rolled back: tcp-nodeport",
        "w2 after the upgrade to 1.18.12: XDP acceleration",
        "w1: the agent container restarted 2 time(s)",
        "pod burst: 2 pod(s) not created",
        "kube-proxy came back: daemonset/kube-proxy present",
    ] {
        assert!(all.contains(needle), "{needle:?} not in:\n{all}");
    }
    std::fs::write(
        run_dir.join("run.json"),
        serde_json::to_string_pretty(&rec).expect("json"),
    )
    .expect("write");
    // The restart on w1 was injected on purpose: the report says so first.
    rec.faults.push(FaultEvent {
        at: rec.started.plus(Millis(140_000)),
        kind: "kill-agent".into(),
        node: Some("w1".into()),
        detail: "killed cilium-agent 4242".into(),
        injected: true,
    });
    assert!(rec.problems().is_empty(), "{:#?}", rec.problems());
    std::fs::write(
        run_dir.join("run.json"),
        serde_json::to_string_pretty(&rec).expect("json"),
    )
    .expect("write");
    let w = kubedrill::report::write(&run_dir).expect("renders");
    assert_eq!(w.verdict, Outcome::Fail);
    let md = std::fs::read_to_string(&w.markdown).expect("md");
    assert!(
        md.contains("Injected faults") && md.contains("killed cilium-agent 4242"),
        "{md}"
    );
    let html = std::fs::read_to_string(&w.html).expect("html");
    assert!(html.contains("ev fault"), "the fault is on the timeline");
    assert_eq!(
        kubedrill::report::load(&run_dir.join("run.json")).expect("load"),
        rec
    );
    // A fault on a node the lab does not have is refused with the field.
    let e = lab_with_drill(
        "drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  faults: [{kind: kill-agent, node: w9}]\n",
    )
    .expect_err("unknown node")
    .to_string();
    assert!(
        e.contains("`drill.faults[0].node`") && e.contains("w9"),
        "{e}"
    );
    let d = definition(
        "drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  faults: [{kind: link-down, node: w1, secs: 5}, {kind: bad-value}]\n",
    );
    assert_eq!(d.faults.len(), 2);
}

#[test]
fn layout_probes_match_the_record_pairs() {
    let nodes: Vec<layout::NodeInfo> = nodes()
        .iter()
        .map(|n| cluster::node_info(&serde_json::from_value(n.clone()).expect("node")))
        .collect();
    let p = layout::place(&nodes).expect("placement");
    assert_eq!(
        (p.client.as_str(), p.nodeport_prober.as_str()),
        ("w2", "w2")
    );
    assert_ne!(p.nodeport_target.name, p.backend);
    let t = layout::Targets {
        client: layout::PodEnd {
            name: "kd-client".into(),
            node: p.client.clone(),
            ip: "10.233.65.4".into(),
            netns: "/proc/42/ns/net".into(),
        },
        backend: layout::PodEnd {
            name: "kd-backend".into(),
            node: p.backend.clone(),
            ip: "10.233.66.9".into(),
            netns: "/proc/43/ns/net".into(),
        },
        cluster_ip: "10.233.12.80".into(),
        node_port: 31234,
        backend_node_address: "192.168.151.12".into(),
    };
    let planned = layout::probes(&ProbeKind::ALL, 50, &p, &t);
    assert_eq!(planned.len(), 9);
    // The held kinds probe the same targets as their new-connection kinds, on one connection.
    for (new, held) in [
        (ProbeKind::TcpPod, ProbeKind::TcpPodHeld),
        (ProbeKind::TcpClusterip, ProbeKind::TcpClusteripHeld),
        (ProbeKind::TcpNodeport, ProbeKind::TcpNodeportHeld),
    ] {
        let of = |k: ProbeKind| {
            planned
                .iter()
                .find(|x| x.pair.kind == k)
                .unwrap_or_else(|| panic!("no {k}"))
        };
        assert_eq!(of(new).spec.target, of(held).spec.target);
        assert_eq!(of(new).spec.tcp_mode, None);
        assert_eq!(of(held).spec.tcp_mode, Some(probes::TcpMode::Persistent));
        // As the probe agent reads it.
        assert_eq!(
            serde_json::to_value(&of(held).spec).expect("json")["tcp_mode"],
            "persistent"
        );
        assert_ne!(of(new).spec.id, of(held).spec.id);
    }
    // Every prober's window maps back to its pair.
    let pairs: Vec<ProbePair> = planned.iter().map(|x| x.pair.clone()).collect();
    for x in &planned {
        let l = probes::Loss {
            probe: x.spec.id.clone(),
            kind: x.spec.kind.clone(),
            target: x.spec.target.clone(),
            start_ms: 1_795_000_000_000,
            end_ms: 1_795_000_000_500,
            duration_ms: 500,
            lost: 25,
            open: false,
            reason: "timeout".into(),
        };
        let w = record::loss_window(&l, &pairs).expect("pair");
        assert_eq!(w.kind, x.pair.kind);
        assert_eq!(w.duration_ms, Millis(500));
    }
    // Probers in the pod carry its namespace; host probers do not.
    for x in &planned {
        let in_pod = !matches!(
            x.pair.kind,
            ProbeKind::TcpNodeport | ProbeKind::TcpNodeportHeld | ProbeKind::IcmpHost
        );
        assert_eq!(x.spec.netns.is_some(), in_pod, "{:?}", x.pair.kind);
    }
}

// ---------------------------------------------------------------------------------------------
// Definition errors and the CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn drill_definition_errors_carry_file_line_and_field() {
    let drill = "drill:\n  cilium:\n    from: 1.17\n    to: 1.18.12\n  probes:\n    rate_per_s: 0\n    kinds: [tcp-pod, tcp-nodeprot, tcp-pod]\n  policy:\n    max_loss_ms: {udp-pod: 500}\n    soak_secs: 100000\n";
    let text = format!(
        "name: t\nhosts:\n  - {{name: cp1, role: control-plane}}\n  - {{name: w1, role: worker}}\n{drill}"
    );
    let lab = labdef::parse(Path::new("labs/t.yaml"), &text).expect("the lab itself is valid");
    let d = kubedrill::drill::definition::of_lab(&lab).expect_err("invalid drill");
    let file = Path::new("labs/t.yaml");
    let find = |field: &str| {
        d.0.iter()
            .find(|x| x.field.as_deref() == Some(field))
            .unwrap_or_else(|| panic!("no finding for {field} in:\n{d}"))
    };
    common::assert_at(
        find("drill.cilium.from"),
        file,
        Some(common::line_of(&text, "from: 1.17")),
        "drill.cilium.from",
    );
    common::assert_at(
        find("drill.probes.rate_per_s"),
        file,
        Some(common::line_of(&text, "rate_per_s")),
        "drill.probes.rate_per_s",
    );
    let kinds_line = common::line_of(&text, "kinds:");
    common::assert_at(
        find("drill.probes.kinds[1]"),
        file,
        Some(kinds_line),
        "drill.probes.kinds[1]",
    );
    common::assert_at(
        find("drill.probes.kinds[2]"),
        file,
        Some(kinds_line),
        "drill.probes.kinds[2]",
    );
    assert!(
        find("drill.probes.kinds[1]")
            .message
            .contains("unknown probe kind `tcp-nodeprot`")
    );
    assert!(
        find("drill.probes.kinds[2]")
            .message
            .contains("listed twice")
    );
    common::assert_at(
        find("drill.policy.max_loss_ms.udp-pod"),
        file,
        Some(common::line_of(&text, "max_loss_ms")),
        "drill.policy.max_loss_ms.udp-pod",
    );
    common::assert_at(
        find("drill.policy.soak_secs"),
        file,
        Some(common::line_of(&text, "soak_secs")),
        "drill.policy.soak_secs",
    );
    assert!(
        find("drill.cilium.from")
            .message
            .contains("give the full patch version")
    );

    // An unknown key inside the section is an error at its line.
    let typo = "drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  polcy: {soak_secs: 10}\n";
    let e = lab_with_drill(typo).expect_err("unknown key");
    assert!(e.to_string().contains("labs/t.yaml:7"), "{e}");
    assert!(e.to_string().contains("polcy"), "{e}");
    // Missing versions.
    let e = lab_with_drill("drill:\n  probes: {rate_per_s: 20}\n").expect_err("no cilium");
    assert!(e.to_string().contains("cilium"), "{e}");
}

#[test]
fn the_bundled_labs_define_drills_that_resolve() {
    for lab in ["labs/lab-3node.yaml", "labs/quickstart.yaml"] {
        let l = labdef::load(&common::repo().join(lab)).unwrap_or_else(|e| panic!("{lab}: {e}"));
        let d = kubedrill::drill::definition::of_lab(&l)
            .unwrap_or_else(|e| panic!("{lab}: {e}"))
            .unwrap_or_else(|| panic!("{lab} has no drill"));
        let r = d
            .resolve(&Overrides::default())
            .unwrap_or_else(|e| panic!("{lab}: {e}"));
        assert!(!r.plan.steps().is_empty());
    }
}

fn kubedrill(args: &[&str], state: &Path) -> std::process::Output {
    common::kubedrill_command()
        .args(args)
        .env("KUBEDRILL_STATE_DIR", state)
        .output()
        .expect("run kubedrill")
}

#[test]
fn cli_refuses_what_it_cannot_run_before_touching_anything() {
    let state = tempfile::tempdir().expect("state");
    // A lab that is not up here.
    let o = kubedrill(&["drill", "run", "quickstart"], state.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("lab `quickstart` is not up here"), "{err}");
    // An unknown minor without --force names the option.
    let o = kubedrill(
        &["drill", "run", "quickstart", "--to", "1.22.0"],
        state.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`--to`") && err.contains("--force"), "{err}");
    // A downgrade.
    let o = kubedrill(
        &["drill", "run", "quickstart", "--to", "1.18.12"],
        state.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("downgrade"));
    // A lab without a drill section.
    let lab = state.path().join("nodrill.yaml");
    std::fs::write(
        &lab,
        "name: nodrill\nhosts:\n  - {name: cp1, role: control-plane}\n",
    )
    .expect("lab");
    let o = kubedrill(&["drill", "run", lab.to_str().expect("utf8")], state.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no `drill:` section"));
    // --production: the inventory is required, a reset is refused, a question needs a terminal
    // (or --yes), the inventory must exist, and a drill with faults is for labs only.
    let faulty = state.path().join("faulty.yaml");
    std::fs::write(
        &faulty,
        "name: faulty\nhosts:\n  - {name: cp1, role: control-plane}\ndrill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  faults: [{kind: kill-agent, node: cp1}]\n",
    )
    .expect("lab");
    let faulty = faulty.to_str().expect("utf8");
    for (args, code, want) in [
        (&["quickstart", "--production"][..], 2, "--inventory"),
        (
            &["quickstart", "--production", "-i", "x", "--reset", "clean"][..],
            2,
            "cannot be used with",
        ),
        (
            &["quickstart", "--production", "-i", "x"][..],
            1,
            "run it on a terminal, or pass --yes",
        ),
        (
            &[
                "quickstart",
                "--production",
                "-i",
                "/nonexistent/hosts.yaml",
                "--yes",
            ][..],
            1,
            "no such inventory",
        ),
        (
            &[faulty, "--production", "-i", "x", "--yes"][..],
            1,
            "never with --production",
        ),
    ] {
        let o = kubedrill(&[&["drill", "run"][..], args].concat(), state.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A Kubernetes upgrade needs the target's bundle, named and present.
    let k8s = state.path().join("k8s.yaml");
    let lab = "name: k8s\nhosts:\n  - {name: cp1, role: control-plane}\ndrill:\n  cilium: {from: 1.19.7, to: 1.19.7}\n  kubernetes: {from: 1.34.4, to: 1.35.4}\n";
    std::fs::write(&k8s, lab).expect("lab");
    let k8s = k8s.to_str().expect("utf8");
    let missing = state.path().join("no-bundle");
    for (args, want) in [
        (
            vec![k8s],
            "name its offline bundle with drill.kubernetes.bundle or --kubernetes-bundle"
                .to_owned(),
        ),
        (
            vec![k8s, "--kubernetes-bundle", missing.to_str().expect("utf8")],
            format!("{}", missing.display()),
        ),
    ] {
        let o = kubedrill(&[&["drill", "run"][..], &args].concat(), state.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    // Nothing was written to the state directory.
    assert!(!state.path().join("drills").exists());
    // The engine's default run directory is under the state directory.
    assert!(engine::default_runs_dir("x").ends_with("drills/x"));
}

// ---------------------------------------------------------------------------------------------
// The engine when nothing can be reached
// ---------------------------------------------------------------------------------------------

const UNREACHABLE_HOSTS: &str = "\
all:
  hosts:
    cp1:
      ansible_host: 127.0.0.1
      ansible_port: 1
      ip: 10.0.0.1
    w1:
      ansible_host: 127.0.0.1
      ansible_port: 1
      ip: 10.0.0.2
  children:
    kube_control_plane:
      hosts:
        cp1:
    kube_node:
      hosts:
        w1:
    etcd:
      hosts:
        cp1:
";

/// A drill input from an inventory (`hosts.yaml`, the cluster's variables) and a lab's `drill:`
/// section, its runs under `runs`, an empty known_hosts.
pub(crate) fn drill_input(
    label: &str,
    hosts: &str,
    vars: &str,
    drill: &str,
    runs: &Path,
) -> engine::DrillInput {
    let inv_dir = common::TempInv::new(
        label,
        &[("hosts.yaml", hosts), ("group_vars/k8s_cluster.yml", vars)],
    );
    let inventory = inv_dir.load_ok();
    let spec = match kubedrill::spec::build(&inventory, &kubedrill::spec::SpecContext::default()) {
        Ok((s, _)) => s,
        Err(d) => panic!("{d}"),
    };
    let (lab, def) = lab_with_drill(drill).expect("lab");
    let drill = def.resolve(&Overrides::default()).expect("path");
    let kh = runs.join("known_hosts");
    std::fs::write(&kh, "").expect("known_hosts");
    engine::DrillInput {
        lab,
        drill,
        inventory,
        spec,
        reset: None,
        runs_dir: runs.join("runs"),
        kubeconfig: runs.join("admin.conf"),
        host_keys: kubedrill::check::HostKeySettings {
            file: kh,
            mode: kubedrill::ssh::HostKeyMode::Strict,
            source: "test".into(),
        },
        connect_timeout: Duration::from_secs(5),
        concurrency: 4,
        timeouts: engine::Timeouts::default(),
        helm: kubedrill::cilium::helm::Helm::default(),
        production: None,
        kubernetes_bundle: None,
        probe_agent: None,
    }
}

/// A drill input for `hosts` (an inventory text), runs under `runs`.
fn unreachable_input(hosts: &str, runs: &Path, connect_timeout: Duration) -> engine::DrillInput {
    engine::DrillInput {
        runs_dir: runs.to_path_buf(),
        connect_timeout,
        ..drill_input(
            "unreachable",
            hosts,
            "cilium_version: \"1.17.18\"\n",
            "drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n",
            runs,
        )
    }
}

/// A record's phases as (name, outcome), in its order.
pub(crate) fn phase_outcomes(rec: &kubedrill::report::record::RunRecord) -> Vec<(&str, &str)> {
    rec.phases
        .iter()
        .map(|p| (p.name.as_str(), p.outcome.as_str()))
        .collect()
}

/// The record of a drill that stopped in `connect`: every later phase skipped, the report written.
fn assert_stopped_at_connect(run_dir: &Path) {
    let rec = kubedrill::report::load(&run_dir.join("run.json")).expect("valid record");
    let phases = phase_outcomes(&rec);
    assert_eq!(
        phases,
        [
            ("reset", "skipped"),
            ("connect", "failed"),
            ("preflight", "skipped"),
            ("probes-start", "skipped"),
            ("resources", "skipped"),
            ("upgrade", "skipped"),
            ("rollback", "skipped"),
            ("soak", "skipped"),
            ("report", "ok"),
        ]
    );
}

#[tokio::test]
async fn a_drill_that_cannot_reach_its_nodes_still_writes_a_failed_record() {
    let runs = tempfile::tempdir().expect("runs");
    let input = unreachable_input(UNREACHABLE_HOSTS, runs.path(), Duration::from_secs(3));
    let r = engine::run(&input, &kubedrill::fleet::Progress::quiet())
        .await
        .expect("a report is written even when the drill fails");
    assert_eq!(r.verdict.outcome, Outcome::Fail);
    assert_eq!(r.failures.len(), 2, "{:#?}", r.failures);
    for (f, host) in r.failures.iter().zip(["cp1", "w1"]) {
        assert_eq!(
            (f.host.as_str(), f.phase.as_str(), f.command.as_str()),
            (host, "connect", "ssh connect")
        );
        assert!(f.message.contains("127.0.0.1:1"), "{f}");
    }
    assert!(
        r.verdict.reasons[0].starts_with("cp1: phase connect: ssh connect: "),
        "{:?}",
        r.verdict.reasons
    );
    assert_stopped_at_connect(&r.run_dir);
    let rec = kubedrill::report::load(&r.run_dir.join("run.json")).expect("valid record");
    assert_eq!(rec.nodes.len(), 2);
    assert!(r.written.html.is_file() && r.written.markdown.is_file());
    assert!(r.run_dir.join(engine::RUN_INFO).is_file());
    assert!(r.run_dir.starts_with(runs.path()));
    assert!(r.comparison.is_none());
}

#[tokio::test]
async fn an_interrupted_drill_records_where_it_stopped_and_still_reports() {
    // Nodes whose SSH port accepts connections (the kernel's backlog) but never speaks: the
    // connect phase waits on them until the interruption.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = silent.local_addr().expect("addr").port();
    let hosts = UNREACHABLE_HOSTS.replace("ansible_port: 1", &format!("ansible_port: {port}"));
    let runs = tempfile::tempdir().expect("runs");
    let input = unreachable_input(&hosts, runs.path(), Duration::from_secs(600));
    let started = std::time::Instant::now();
    let r = engine::run_until(&input, &kubedrill::fleet::Progress::quiet(), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        "SIGINT".to_owned()
    })
    .await
    .expect("an interrupted drill writes its report");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "stopped at the interruption, not at the connect timeout"
    );
    assert_eq!(r.verdict.outcome, Outcome::Fail);
    let f = r
        .failures
        .iter()
        .find(|f| f.command == "SIGINT")
        .unwrap_or_else(|| panic!("{:#?}", r.failures));
    assert_eq!(f.phase, "connect");
    assert!(f.message.contains("interrupted during connect"), "{f}");
    assert_stopped_at_connect(&r.run_dir);
    assert!(r.written.html.is_file());
    drop(silent);
}

// ---------------------------------------------------------------------------------------------
// Detached agents (the scripts `run_detached`, `serve_detached`, `peek`, `stop` run over SSH),
// here on this machine with the real agent
// ---------------------------------------------------------------------------------------------

/// The workspace's probe agent, built into this test's target directory.
fn probe_agent() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_path_buf();
    let target = debug.parent().expect("target").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "kubedrill-probe", "--target-dir"])
        .arg(&target)
        .arg("--manifest-path")
        .arg(common::repo().join("Cargo.toml"))
        .output()
        .expect("cargo build -p kubedrill-probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    debug
        .join("kubedrill-probe")
        .canonicalize()
        .expect("agent binary")
}

fn sh(script: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh")
}

fn wait_child(c: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t = std::time::Instant::now();
    loop {
        if let Some(st) = c.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            t.elapsed() < limit,
            "process {} did not end in {limit:?}",
            c.id()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn detached_agents_are_peeked_while_running_and_stopped_by_their_pid() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let agent = probe_agent();
    let dir = tempfile::tempdir().expect("tmp");
    let (agent_s, dir_s) = (
        agent.to_str().expect("utf8").to_owned(),
        dir.path().to_str().expect("utf8").to_owned(),
    );
    let d = probes::Detached {
        agent: &agent_s,
        run_dir: &dir_s,
    };
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port()
    };
    let (tcp, udp) = (
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    );
    let life = Duration::from_secs(60);

    let mut serve = std::process::Command::new("sh")
        .arg("-c")
        .arg(d.serve_script("t-serve", None, &tcp, &udp, life))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let t = std::time::Instant::now();
    // What the drill waits for before it starts the probers: the real agent's own event.
    while !probes::parse_events(&String::from_utf8_lossy(
        &sh(&d.peek_script("t-serve")).stdout,
    ))
    .listening
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "serve never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let spec = json!([
        {"id": "tcp-pod", "kind": "tcp", "target": tcp, "rate_per_s": 50, "timeout_ms": 200},
        {"id": "udp-pod", "kind": "udp", "target": udp, "rate_per_s": 50, "timeout_ms": 200}
    ]);
    let mut run = std::process::Command::new("sh")
        .arg("-c")
        .arg(d.run_script("t-run", life))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    {
        let mut stdin = run.stdin.take().expect("stdin");
        stdin.write_all(spec.to_string().as_bytes()).expect("spec");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let so_far = probes::parse_events(&String::from_utf8_lossy(
        &sh(&d.peek_script("t-run")).stdout,
    ));
    assert!(
        so_far.losses.is_empty() && so_far.open.is_empty(),
        "{so_far:?}"
    );

    // The echo side goes away: both probes lose, and a peek sees the windows still open.
    let st = sh(&d.stop_script("t-serve"));
    assert!(st.status.success());
    assert!(wait_child(&mut serve, Duration::from_secs(10)).success());
    let mut serve_out = String::new();
    serve
        .stdout
        .take()
        .expect("out")
        .read_to_string(&mut serve_out)
        .expect("read");
    assert!(serve_out.contains("\"stopped\""), "{serve_out}");
    std::thread::sleep(Duration::from_millis(2500));
    let mid = probes::parse_events(&String::from_utf8_lossy(
        &sh(&d.peek_script("t-run")).stdout,
    ));
    let mut open: Vec<&str> = mid.open.iter().map(|o| o.probe.as_str()).collect();
    open.sort();
    assert_eq!(open, ["tcp-pod", "udp-pod"], "{mid:?}");
    assert!(
        mid.open
            .iter()
            .all(|o| o.seen_ms > o.start_ms && o.lost > 0),
        "{mid:?}"
    );

    // Stopping the prober flushes the open windows and the summaries; its files are removed.
    assert!(sh(&d.stop_script("t-run")).status.success());
    assert!(wait_child(&mut run, Duration::from_secs(10)).success());
    let mut out = String::new();
    run.stdout
        .take()
        .expect("out")
        .read_to_string(&mut out)
        .expect("read");
    let fin = probes::parse_events(&out);
    // One window per probe still open at the stop, flushed as open. (A machine busy with the
    // rest of the suite may add a short closed window before it: a 200 ms timeout missed.)
    let mut open: Vec<&str> = fin
        .losses
        .iter()
        .filter(|l| l.open)
        .map(|l| l.probe.as_str())
        .collect();
    open.sort();
    assert_eq!(open, ["tcp-pod", "udp-pod"], "{out}");
    assert_eq!(fin.summaries.len(), 2, "{out}");
    assert!(fin.summaries.iter().all(|s| s.lost > 0 && s.sent > s.lost));
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A pid file naming a process that is not the agent: nothing is signalled.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    std::fs::write(dir.path().join("probe-t-x.pid"), other.id().to_string()).expect("pid");
    assert!(sh(&d.stop_script("t-x")).status.success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        other.try_wait().expect("try_wait").is_none(),
        "sleep was signalled"
    );
    other.kill().expect("kill our own sleep");
    let _ = other.wait();
}
