//! The Kubernetes-API side without a cluster, and the Helm command lines.
//!
//! - Waits, kube-proxy removal and agent listing run against a `tower_test` mock API server that
//!   answers with realistic JSON, LIST then WATCH as kube-runtime issues them; every request is
//!   logged so tests check exactly what was sent.
//! - The same behaviours also run against a real API server in `tests/k8s_real.rs` (etcd +
//!   kube-apiserver, with real Helm 3 and 4), which now decides what the mock only asserted:
//!   nodes_ready through status patches and its timeout, DaemonSet/Deployment rollout waits and
//!   generations, kube-proxy detection and removal (the UID precondition's 409 from a re-created
//!   object, absent and half-gone), agent listing from real pods, the kubeconfig client and the
//!   tunnel's TLS server name, an RBAC denial ending a wait at once, and the Helm argv (install,
//!   upgrade, history, get values, rollback, status, uninstall). The mock tests stay for what a
//!   real server cannot be made to do on cue and for the exact requests: a 503 retried with
//!   backoff, minutes-long timeouts in paused time, the LIST/WATCH/DELETE sequence and bodies.
//! - The client's SSH-tunnel case runs against a loopback TLS server whose certificate (like
//!   kubeadm's) does not name 127.0.0.1.
//! - The agent status parser runs on every sample in `tests/data/cilium-status/`.
//! - Helm argv per chart version 1.11–1.20, checked against `tests/data/cilium-values/`.

use crate::common;

use common::*;
use kubedrill::cilium::helm::{
    self, Chart, Helm, HelmError, PreflightOptions, Release, ReleaseStatus, UpgradeValues,
};
use kubedrill::cilium::preflight;
use kubedrill::k8s::agents::{self, AgentPod};
use kubedrill::k8s::kube_proxy::{self, Outcome};
use kubedrill::k8s::status::{
    self, AgentStatus, BackendSelection, DsrDispatchStatus, ExpectedDatapath, HostRoutingStatus,
    KprStatus, LbModeStatus, MasqueradingMode, NetworkRouting, XdpStatus,
};
use kubedrill::k8s::wait::{self, LastSeen, Progress, WaitError};
use kubedrill::k8s::{ClientOptions, client_from_kubeconfig, config_from_kubeconfig};
use kubedrill::kernel::{EffectiveSetting, EffectiveSettings};
use kubedrill::spec::cilium::{Acceleration, KubeProxyReplacement, LbMode};
use kubedrill::spec::{self, ClusterSpec, Endpoint, SpecContext, Version};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kube_mock::*;

// ---------------------------------------------------------------------------------------------
// Realistic objects
// ---------------------------------------------------------------------------------------------

const CNI_NOT_READY: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

fn node(name: &str, ip: &str, ready: bool, rv: &str, control_plane: bool) -> Value {
    let ready_cond = if ready {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "kubelet is posting ready status",
               "lastHeartbeatTime": "2026-08-11T07:02:11Z", "lastTransitionTime": "2026-08-11T06:58:40Z"})
    } else {
        json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
               "message": CNI_NOT_READY,
               "lastHeartbeatTime": "2026-08-11T07:02:11Z", "lastTransitionTime": "2026-08-11T06:55:02Z"})
    };
    let mut labels = json!({"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    let mut taints = vec![];
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        taints
            .push(json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}));
    }
    if !ready {
        taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv,
                     "creationTimestamp": "2026-08-11T06:54:30Z", "labels": labels,
                     "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock"}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "taints": taints},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "message": "kubelet has sufficient memory available",
                 "lastHeartbeatTime": "2026-08-11T07:02:11Z", "lastTransitionTime": "2026-08-11T06:54:30Z"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                 "message": "kubelet has no disk pressure",
                 "lastHeartbeatTime": "2026-08-11T07:02:11Z", "lastTransitionTime": "2026-08-11T06:54:30Z"},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                 "message": "kubelet has sufficient PID available",
                 "lastHeartbeatTime": "2026-08-11T07:02:11Z", "lastTransitionTime": "2026-08-11T06:54:30Z"},
                ready_cond
            ],
            "nodeInfo": {"architecture": "amd64", "bootID": "b1", "containerRuntimeVersion": "containerd://1.7.24",
                         "kernelVersion": "6.1.0-28-amd64", "kubeProxyVersion": "", "kubeletVersion": "v1.33.7",
                         "machineID": "m1", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "systemUUID": "s1"}
        }
    })
}

fn cilium_ds(
    generation: i64,
    rv: &str,
    desired: i32,
    updated: i32,
    ready: i32,
    available: i32,
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cilium", "namespace": "kube-system", "uid": "uid-ds-cilium",
                     "resourceVersion": rv, "generation": generation,
                     "labels": {"app.kubernetes.io/managed-by": "Helm", "k8s-app": "cilium"},
                     "annotations": {"meta.helm.sh/release-name": "cilium", "meta.helm.sh/release-namespace": "kube-system"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "cilium"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": 0}},
            "template": {"metadata": {"labels": {"k8s-app": "cilium"}},
                         "spec": {"containers": [{"name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.17.18"}],
                                  "tolerations": [{"operator": "Exists"}], "hostNetwork": true}}
        },
        "status": {"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
                   "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": available,
                   "numberUnavailable": desired - available, "updatedNumberScheduled": updated,
                   "observedGeneration": generation}
    })
}

fn operator_deployment(progress_deadline: bool, updated: i32, available: i32) -> Value {
    let progressing = if progress_deadline {
        json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
               "message": "ReplicaSet \"cilium-operator-5d8f6c7b9\" has timed out progressing."})
    } else {
        json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
               "message": "ReplicaSet \"cilium-operator-5d8f6c7b9\" has successfully progressed."})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cilium-operator", "namespace": "kube-system", "generation": 4, "resourceVersion": "900"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"name": "cilium-operator"}},
                 "template": {"metadata": {"labels": {"name": "cilium-operator"}},
                              "spec": {"containers": [{"name": "cilium-operator", "image": "quay.io/cilium/operator-generic:v1.17.18"}]}}},
        "status": {"observedGeneration": 4, "replicas": 2, "updatedReplicas": updated,
                   "readyReplicas": available, "availableReplicas": available,
                   "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                   "message": "Deployment has minimum availability."}, progressing]}
    })
}

fn agent_pod(name: &str, node: &str, ready: bool, restarts: i32, image: &str) -> Value {
    let state = if ready {
        json!({"running": {"startedAt": "2026-08-11T06:59:12Z"}})
    } else {
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=cilium-agent"}})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": "cilium"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "cilium", "uid": "uid-ds-cilium", "controller": true}]},
        "spec": {"nodeName": node, "hostNetwork": true,
                 "containers": [{"name": "cilium-agent", "image": image}],
                 "initContainers": [{"name": "config", "image": image}, {"name": "mount-cgroup", "image": image}]},
        "status": {
            "phase": "Running",
            "startTime": "2026-08-11T06:58:41Z",
            "conditions": [{"type": "Initialized", "status": "True"},
                           {"type": "Ready", "status": if ready { "True" } else { "False" }},
                           {"type": "ContainersReady", "status": if ready { "True" } else { "False" }},
                           {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "cilium-agent", "image": image, "imageID": "", "ready": ready,
                                   "restartCount": restarts, "started": ready, "state": state}]
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Waits: nodes
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn nodes_ready_after_the_watch_reports_the_last_node() {
    let (client, log) = mock(|r| {
        if r.path != "/api/v1/nodes" {
            return Reply::Json(404, status_json(404, "NotFound", "unexpected"));
        }
        if !r.is_watch() {
            Reply::Json(
                200,
                list(
                    "NodeList",
                    "v1",
                    "4242",
                    vec![
                        node("cp1", "192.168.122.11", true, "4100", true),
                        node("w1", "192.168.122.21", false, "4200", false),
                        node("w2", "192.168.122.22", true, "4201", false),
                    ],
                ),
            )
        } else if r.query.contains("resourceVersion=4242") {
            Reply::Watch(vec![event(
                "MODIFIED",
                node("w1", "192.168.122.21", true, "4300", false),
            )])
        } else {
            Reply::Hang
        }
    });
    let mut seen = Vec::new();
    let r = wait::nodes_ready(&client, 3, Duration::from_secs(300), |p| {
        if let Progress::State(s) = p {
            seen.push(s.to_string());
        }
    })
    .await
    .expect("all nodes Ready");
    assert_eq!(r.ready_count(), 3);
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].starts_with("2 of 3 expected nodes Ready (3 registered); w1 not Ready (False: KubeletNotReady: container runtime network not ready"), "{}", seen[0]);
    assert_eq!(seen[1], "3 of 3 expected nodes Ready (3 registered)");
    let reqs = requests(&log);
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    assert!(!reqs[0].is_watch() && reqs[1].is_watch());
}

#[tokio::test(start_paused = true)]
async fn nodes_wait_times_out_naming_the_node_and_its_reason() {
    let (client, _log) = mock(|r| {
        if r.is_watch() {
            Reply::Hang
        } else {
            Reply::Json(
                200,
                list(
                    "NodeList",
                    "v1",
                    "77",
                    vec![
                        node("cp1", "192.168.122.11", true, "70", true),
                        node("w1", "192.168.122.21", false, "71", false),
                    ],
                ),
            )
        }
    });
    let err = wait::nodes_ready(&client, 2, Duration::from_secs(120), |_| {})
        .await
        .expect_err("w1 never becomes Ready");
    let WaitError::Timeout { last, object, .. } = &err else {
        panic!("expected a timeout, got {err}");
    };
    assert_eq!(object.to_string(), "all nodes");
    let LastSeen::Nodes(report) = last.as_ref() else {
        panic!("last seen should be nodes: {last:?}");
    };
    let not_ready: Vec<_> = report.not_ready().collect();
    assert_eq!(not_ready.len(), 1);
    assert_eq!(not_ready[0].name, "w1");
    assert_eq!(not_ready[0].reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(not_ready[0].message.as_deref(), Some(CNI_NOT_READY));
    let text = err.to_string();
    assert!(
        text.starts_with("timed out after 120s waiting for all nodes"),
        "{text}"
    );
    assert!(
        text.contains("w1 not Ready") && text.contains("cni plugin not initialized"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn nodes_wait_counts_nodes_that_never_registered() {
    let (client, _log) = mock(|r| {
        if r.is_watch() {
            Reply::Hang
        } else {
            Reply::Json(
                200,
                list(
                    "NodeList",
                    "v1",
                    "5",
                    vec![node("cp1", "192.168.122.11", true, "4", true)],
                ),
            )
        }
    });
    let err = wait::nodes_ready(&client, 3, Duration::from_secs(60), |_| {})
        .await
        .expect_err("two nodes missing");
    assert!(
        err.to_string()
            .contains("1 of 3 expected nodes Ready (1 registered)"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn forbidden_fails_when_the_server_is_ready_and_server_errors_are_retried() {
    // A ready API server that refuses: final at once.
    let (client, log) = mock(|r| {
        if r.path == "/readyz" {
            return Reply::Text(200, "ok".into());
        }
        Reply::Json(
            403,
            status_json(
                403,
                "Forbidden",
                "nodes is forbidden: User \"system:anonymous\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
            ),
        )
    });
    let err = wait::nodes_ready(&client, 1, Duration::from_secs(600), |_| {})
        .await
        .expect_err("forbidden");
    assert!(matches!(err, WaitError::Watch { .. }), "{err}");
    assert!(err.to_string().contains("forbidden"), "{err}");
    let paths: Vec<String> = requests(&log).iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/api/v1/nodes", "/readyz"],
        "no retry of a 403 from a ready server"
    );

    // One that is still starting (its RBAC caches not filled: /readyz fails) is retried until
    // the wait's own timeout, which then names the refusal.
    let (client, log) = mock(|r| {
        if r.path == "/readyz" {
            return Reply::Text(
                500,
                "[-]poststarthook/rbac/bootstrap-roles failed: not finished\nreadyz check failed"
                    .into(),
            );
        }
        Reply::Json(
            403,
            status_json(403, "Forbidden", "nodes is forbidden: RBAC: not yet synced"),
        )
    });
    let err = wait::nodes_ready(&client, 1, Duration::from_secs(120), |_| {})
        .await
        .expect_err("times out");
    assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("not yet synced"), "{err}");
    assert!(requests(&log).len() > 4, "retried");

    // A 403 that goes away (the API server's caches filled) and a 503 (API server restarting
    // behind the tunnel) are retried with backoff.
    let mut calls = 0;
    let (client, _log) = mock(move |r| {
        if r.path == "/readyz" {
            return Reply::Text(500, "readyz check failed".into());
        }
        calls += 1;
        if calls == 1 {
            Reply::Json(
                403,
                status_json(403, "Forbidden", "nodes is forbidden: RBAC: not yet synced"),
            )
        } else if calls == 2 {
            Reply::Json(
                503,
                status_json(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                ),
            )
        } else if r.is_watch() {
            Reply::Hang
        } else {
            Reply::Json(
                200,
                list(
                    "NodeList",
                    "v1",
                    "9",
                    vec![node("cp1", "192.168.122.11", true, "8", true)],
                ),
            )
        }
    });
    let mut retried = Vec::new();
    let r = wait::nodes_ready(&client, 1, Duration::from_secs(600), |p| {
        if let Progress::Retrying(e) = p {
            retried.push(e.to_owned());
        }
    })
    .await
    .expect("ready after two retries");
    assert_eq!(r.ready_count(), 1);
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert!(
        retried[0].contains("403") || retried[0].contains("forbidden"),
        "{retried:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Waits: DaemonSet and Deployment
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn daemonset_wait_follows_a_rollout_to_completion() {
    let (client, log) = mock(|r| {
        if r.path != "/apis/apps/v1/namespaces/kube-system/daemonsets" {
            return Reply::Json(404, status_json(404, "NotFound", "unexpected path"));
        }
        if !r.is_watch() {
            Reply::Json(
                200,
                list(
                    "DaemonSetList",
                    "apps/v1",
                    "1000",
                    vec![cilium_ds(5, "990", 3, 1, 2, 2)],
                ),
            )
        } else if r.query.contains("resourceVersion=1000") {
            Reply::Watch(vec![
                event("MODIFIED", cilium_ds(5, "1001", 3, 2, 2, 2)),
                event("MODIFIED", cilium_ds(5, "1002", 3, 3, 2, 2)),
                event("MODIFIED", cilium_ds(5, "1003", 3, 3, 3, 3)),
            ])
        } else {
            Reply::Hang
        }
    });
    let mut seen = Vec::new();
    let st = wait::cilium_rolled_out(&client, Duration::from_secs(600), |p| {
        if let Progress::State(s) = p {
            seen.push((s.updated, s.ready, s.waiting_for.clone()));
        }
    })
    .await
    .expect("rolled out");
    assert!(st.done);
    assert_eq!(
        seen,
        vec![
            (
                1,
                2,
                Some("1 out of 3 new pods have been updated".to_owned())
            ),
            (
                2,
                2,
                Some("2 out of 3 new pods have been updated".to_owned())
            ),
            (3, 2, Some("2 of 3 updated pods are available".to_owned())),
            (3, 3, None),
        ]
    );
    let reqs = requests(&log);
    assert!(
        reqs[0]
            .query
            .contains("fieldSelector=metadata.name%3Dcilium"),
        "{:?}",
        reqs[0]
    );
}

#[tokio::test(start_paused = true)]
async fn daemonset_wait_times_out_with_its_last_status_or_absence() {
    let (client, _log) = mock(|r| {
        if r.is_watch() {
            Reply::Hang
        } else {
            Reply::Json(
                200,
                list(
                    "DaemonSetList",
                    "apps/v1",
                    "10",
                    vec![cilium_ds(2, "9", 3, 3, 2, 2)],
                ),
            )
        }
    });
    let err = wait::daemonset_rolled_out(
        &client,
        "kube-system",
        "cilium",
        Duration::from_secs(90),
        |_| {},
    )
    .await
    .expect_err("stuck at 2 of 3");
    assert_eq!(
        err.to_string(),
        "timed out after 90s waiting for daemonset kube-system/cilium; last seen: daemonset kube-system/cilium: desired 3, updated 3, ready 2, available 2, generation 2 (observed 2) — 2 of 3 updated pods are available"
    );

    let (client, _log) = mock(|r| {
        if r.is_watch() {
            Reply::Hang
        } else {
            Reply::Json(200, list("DaemonSetList", "apps/v1", "10", vec![]))
        }
    });
    let err = wait::daemonset_rolled_out(
        &client,
        "kube-system",
        "cilium-pre-flight-check",
        Duration::from_secs(30),
        |_| {},
    )
    .await
    .expect_err("absent");
    match &err {
        WaitError::Timeout { last, .. } => assert_eq!(**last, LastSeen::Absent),
        other => panic!("{other}"),
    }
}

#[tokio::test(start_paused = true)]
async fn deployment_wait_succeeds_or_fails_on_progress_deadline() {
    let (client, log) = mock(|r| {
        if r.is_watch() {
            Reply::Hang
        } else {
            Reply::Json(
                200,
                list(
                    "DeploymentList",
                    "apps/v1",
                    "900",
                    vec![operator_deployment(false, 2, 2)],
                ),
            )
        }
    });
    let st = wait::deployment_rolled_out(
        &client,
        "kube-system",
        "cilium-operator",
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("available");
    assert!(st.done);
    assert_eq!(
        requests(&log)[0].path,
        "/apis/apps/v1/namespaces/kube-system/deployments"
    );

    let (client, _log) = mock(|r| {
        if r.is_watch() {
            Reply::Hang
        } else {
            Reply::Json(
                200,
                list(
                    "DeploymentList",
                    "apps/v1",
                    "900",
                    vec![operator_deployment(true, 1, 1)],
                ),
            )
        }
    });
    let err = wait::deployment_rolled_out(
        &client,
        "kube-system",
        "cilium-operator",
        Duration::from_secs(600),
        |_| {},
    )
    .await
    .expect_err("deadline");
    assert!(matches!(err, WaitError::Failed { .. }), "{err}");
    assert!(
        err.to_string().contains("exceeded its progress deadline"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// kube-proxy
// ---------------------------------------------------------------------------------------------

const DS_PATH: &str = "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy";
const CM_PATH: &str = "/api/v1/namespaces/kube-system/configmaps/kube-proxy";

fn kube_proxy_ds() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "uid": "0b6c9f2e-ds",
                     "resourceVersion": "310", "generation": 1, "labels": {"k8s-app": "kube-proxy"}},
        "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                 "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}},
                              "spec": {"containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.33.7",
                                                       "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf", "--hostname-override=$(NODE_NAME)"]}],
                                       "hostNetwork": true, "priorityClassName": "system-node-critical"}}},
        "status": {"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                   "numberReady": 3, "numberAvailable": 3, "updatedNumberScheduled": 3, "observedGeneration": 1}
    })
}

fn kube_proxy_cm() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "uid": "5d1e7a40-cm",
                     "resourceVersion": "240", "labels": {"app": "kube-proxy"}},
        "data": {"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: \"\"\nclusterCIDR: 10.244.0.0/16\n",
                 "kubeconfig.conf": "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://192.168.122.11:6443\n  name: default\n"}
    })
}

#[tokio::test]
async fn kube_proxy_removal_sends_exactly_two_deletes() {
    let (client, log) = mock(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", DS_PATH) => Reply::Json(200, kube_proxy_ds()),
        ("GET", CM_PATH) => Reply::Json(200, kube_proxy_cm()),
        ("DELETE", DS_PATH) => {
            let mut ds = kube_proxy_ds();
            ds["metadata"]["deletionTimestamp"] = json!("2026-08-11T07:10:00Z");
            Reply::Json(200, ds)
        }
        ("DELETE", CM_PATH) => Reply::Json(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": "kube-proxy", "kind": "configmaps", "uid": "5d1e7a40-cm"}}),
        ),
        _ => Reply::Json(404, status_json(404, "NotFound", "unexpected")),
    });
    let found = kube_proxy::detect(&client).await.expect("detect");
    assert!(!found.is_absent());
    assert_eq!(
        found.to_string(),
        "daemonset/kube-proxy present (3 pods), configmap/kube-proxy present (in kube-system)"
    );
    let report = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect("remove");
    assert_eq!(
        (report.daemonset, report.configmap),
        (Outcome::Deleted, Outcome::Deleted)
    );
    let reqs = requests(&log);
    let lines: Vec<String> = reqs.iter().map(Logged::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {DS_PATH}"),
            format!("GET {CM_PATH}"),
            format!("DELETE {DS_PATH}"),
            format!("DELETE {CM_PATH}"),
        ]
    );
    // Each DELETE only removes the object that was detected (UID precondition), pods in the
    // background.
    let ds_body: Value = serde_json::from_str(&reqs[2].body).expect("delete body");
    assert_eq!(ds_body["preconditions"]["uid"], "0b6c9f2e-ds");
    assert_eq!(ds_body["propagationPolicy"], "Background");
    let cm_body: Value = serde_json::from_str(&reqs[3].body).expect("delete body");
    assert_eq!(cm_body["preconditions"]["uid"], "5d1e7a40-cm");
}

#[tokio::test]
async fn kube_proxy_absent_or_half_gone() {
    // Nothing there: two GETs, and a confirmed removal sends nothing.
    let (client, log) = mock(|_| {
        Reply::Json(
            404,
            status_json(404, "NotFound", "daemonsets.apps \"kube-proxy\" not found"),
        )
    });
    let found = kube_proxy::detect(&client).await.expect("detect");
    assert!(found.is_absent());
    let report = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect("remove");
    assert_eq!(
        (report.daemonset, report.configmap),
        (Outcome::NotPresent, Outcome::NotPresent)
    );
    assert_eq!(requests(&log).len(), 2);

    // The DaemonSet was removed by hand already; the ConfigMap vanishes before our DELETE.
    let (client, log) = mock(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", CM_PATH) => Reply::Json(200, kube_proxy_cm()),
        _ => Reply::Json(404, status_json(404, "NotFound", "not found")),
    });
    let found = kube_proxy::detect(&client).await.expect("detect");
    assert!(found.daemonset.is_none() && found.configmap.is_some());
    let report = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect("remove");
    assert_eq!(
        (report.daemonset, report.configmap),
        (Outcome::NotPresent, Outcome::AlreadyGone)
    );
    assert_eq!(
        report.to_string(),
        "daemonset/kube-proxy was not present, configmap/kube-proxy already gone"
    );
    let lines: Vec<String> = requests(&log).iter().map(Logged::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {DS_PATH}"),
            format!("GET {CM_PATH}"),
            format!("DELETE {CM_PATH}")
        ]
    );

    // Re-created since detection: the API server refuses the UID precondition; that is an error.
    let (client, _log) = mock(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", DS_PATH) => Reply::Json(200, kube_proxy_ds()),
        ("DELETE", DS_PATH) => Reply::Json(
            409,
            status_json(
                409,
                "Conflict",
                "Precondition failed: UID in precondition: 0b6c9f2e-ds, UID in object meta: 7f00aa11-new",
            ),
        ),
        _ => Reply::Json(404, status_json(404, "NotFound", "not found")),
    });
    let found = kube_proxy::detect(&client).await.expect("detect");
    let err = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect_err("conflict");
    assert!(
        err.to_string()
            .starts_with("delete daemonset kube-system/kube-proxy"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn agents_are_listed_with_node_readiness_restarts_and_version() {
    let (client, log) = mock(|_| {
        Reply::Json(
            200,
            list(
                "PodList",
                "v1",
                "77",
                vec![
                    agent_pod(
                        "cilium-x7k2p",
                        "w2",
                        true,
                        0,
                        "quay.io/cilium/cilium:v1.14.19@sha256:9a1b",
                    ),
                    agent_pod(
                        "cilium-4hq9d",
                        "cp1",
                        true,
                        1,
                        "quay.io/cilium/cilium:v1.14.19@sha256:9a1b",
                    ),
                    agent_pod(
                        "cilium-m2vzs",
                        "w1",
                        false,
                        7,
                        "quay.io/cilium/cilium:v1.14.19@sha256:9a1b",
                    ),
                ],
            ),
        )
    });
    let agents = agents::list_agents(&client).await.expect("list");
    let reqs = requests(&log);
    assert_eq!(reqs[0].path, "/api/v1/namespaces/kube-system/pods");
    assert!(
        reqs[0].query.contains("labelSelector=k8s-app%3Dcilium"),
        "{}",
        reqs[0].query
    );
    let summary: Vec<(Option<&str>, bool, i32)> = agents
        .iter()
        .map(|a| (a.node.as_deref(), a.ready, a.restarts))
        .collect();
    assert_eq!(
        summary,
        [
            (Some("cp1"), true, 1),
            (Some("w1"), false, 7),
            (Some("w2"), true, 0)
        ]
    );
    assert_eq!(
        agents[1].waiting_reason.as_deref(),
        Some("CrashLoopBackOff")
    );
    assert_eq!(agents[1].agent_started, None);
    assert_eq!(agents[0].version, Some(Version::new(1, 14, 19)));
    assert_eq!(
        agents::status_cli(agents[0].version),
        agents::StatusCli::Cilium
    );
    assert_eq!(
        agents[0].pod_started.map(|t| t.to_string()).as_deref(),
        Some("2026-08-11T06:58:41Z")
    );
}

// ---------------------------------------------------------------------------------------------
// Client through an SSH tunnel
// ---------------------------------------------------------------------------------------------

fn tls_dir() -> PathBuf {
    repo().join("tests/data/tls")
}

/// A TLS server on a loopback port serving the test API-server certificate; answers
/// `GET /version` on every connection and records the request heads.
async fn tls_apiserver() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_dir().join("apiserver.crt"))
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("certs");
    let key = PrivateKeyDer::from_pem_file(tls_dir().join("apiserver.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let heads2 = heads.clone();
    tokio::spawn(async move {
        // Bounded: a handful of connections per test.
        for _ in 0..8 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            heads2
                .lock()
                .expect("heads")
                .push(String::from_utf8_lossy(&buf).into_owned());
            let body = r#"{"major":"1","minor":"33","gitVersion":"v1.33.7","gitCommit":"a7245cdf","gitTreeState":"clean","buildDate":"2025-11-11T00:00:00Z","goVersion":"go1.24.9","compiler":"gc","platform":"linux/amd64"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    (port, heads)
}

/// kubeadm's admin.conf shape, pointing at the control plane's real address.
fn write_kubeconfig(dir: &std::path::Path, extra_cluster: &str) -> PathBuf {
    use base64::Engine;
    let ca = std::fs::read(tls_dir().join("ca.crt")).expect("ca");
    let ca64 = base64::engine::general_purpose::STANDARD.encode(ca);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca64}
    server: https://192.168.122.11:6443
{extra_cluster}  name: kubedrill-lab
contexts:
- context:
    cluster: kubedrill-lab
    user: kubernetes-admin
  name: kubernetes-admin@kubedrill-lab
current-context: kubernetes-admin@kubedrill-lab
preferences: {{}}
users:
- name: kubernetes-admin
  user:
    token: kubedrill-test-token
"
    );
    let path = dir.join("admin.conf");
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

#[tokio::test]
async fn tunnel_url_still_verifies_the_apiserver_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = write_kubeconfig(dir.path(), "");
    let (port, heads) = tls_apiserver().await;
    let opts = ClientOptions {
        server_override: Some(format!("127.0.0.1:{port}")),
        ..ClientOptions::default()
    };
    let config = config_from_kubeconfig(&kubeconfig, &opts)
        .await
        .expect("config");
    assert_eq!(
        config.cluster_url.to_string(),
        format!("https://127.0.0.1:{port}/")
    );
    assert_eq!(config.tls_server_name.as_deref(), Some("192.168.122.11"));
    assert!(!config.accept_invalid_certs);

    let client = client_from_kubeconfig(&kubeconfig, &opts)
        .await
        .expect("client");
    let v = client
        .apiserver_version()
        .await
        .expect("verified through the tunnel");
    assert_eq!(v.git_version, "v1.33.7");
    let head = heads.lock().expect("heads")[0].clone();
    assert!(head.starts_with("GET /version"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer kubedrill-test-token"),
        "{head}"
    );

    // Control: the same URL verified against 127.0.0.1 (which the certificate does not name)
    // must fail, or the test above proves nothing.
    let mut bare = config.clone();
    bare.tls_server_name = None;
    let client = kube::Client::try_from(bare).expect("client");
    assert!(
        client.apiserver_version().await.is_err(),
        "127.0.0.1 is not in the certificate"
    );
}

#[tokio::test]
async fn kubeconfig_server_name_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A kubeconfig that already names the TLS server keeps it under an override.
    let kubeconfig = write_kubeconfig(dir.path(), "    tls-server-name: kubernetes\n");
    let opts = ClientOptions {
        server_override: Some("https://127.0.0.1:16443".into()),
        ..ClientOptions::default()
    };
    let c = config_from_kubeconfig(&kubeconfig, &opts)
        .await
        .expect("config");
    assert_eq!(c.tls_server_name.as_deref(), Some("kubernetes"));
    // Without an override nothing changes.
    let c = config_from_kubeconfig(&kubeconfig, &ClientOptions::default())
        .await
        .expect("config");
    assert_eq!(c.cluster_url.to_string(), "https://192.168.122.11:6443/");
    // Errors name the file or the URL.
    let missing = dir.path().join("nope.conf");
    let err = config_from_kubeconfig(&missing, &ClientOptions::default())
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("nope.conf"), "{err}");
    let bad = ClientOptions {
        server_override: Some("ftp://127.0.0.1:1".into()),
        ..ClientOptions::default()
    };
    let err = config_from_kubeconfig(&kubeconfig, &bad)
        .await
        .expect_err("bad url");
    assert!(err.to_string().contains("ftp://127.0.0.1:1"), "{err}");
    let ctx = ClientOptions {
        context: Some("no-such-context".into()),
        ..ClientOptions::default()
    };
    assert!(config_from_kubeconfig(&kubeconfig, &ctx).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// Agent status parser and comparison
// ---------------------------------------------------------------------------------------------

fn status_sample(name: &str) -> AgentStatus {
    let p = repo().join("tests/data/cilium-status").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    status::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_status_sample_parses_to_its_table_row() {
    let dir = repo().join("tests/data/cilium-status");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("samples")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        6,
        "{names:?}: add a row below for each new sample"
    );
    for name in &names {
        let s = status_sample(name);
        assert!(s.cilium_version.is_some(), "{name}");
        assert!(s.kube_proxy_replacement.is_some(), "{name}");
        assert!(s.masquerading.is_some(), "{name}");
        assert!(s.host_routing.is_some(), "{name}");
    }

    let s = status_sample("1.14.19-dsr-maglev-xdp.txt");
    assert_eq!(s.cilium_version, Some(Version::new(1, 14, 19)));
    assert_eq!(s.kube_proxy_replacement, Some(KprStatus::Strict));
    assert_eq!(s.lb_mode, Some(LbModeStatus::Dsr));
    assert_eq!(s.dsr_dispatch, None, "1.14 does not print the dispatch");
    assert_eq!(
        s.backend_selection,
        Some(BackendSelection::Maglev {
            table_size: Some(16381)
        })
    );
    assert_eq!(s.xdp_acceleration, Some(XdpStatus::Native));
    assert_eq!(s.host_routing, Some(HostRoutingStatus::Bpf));
    assert_eq!(
        s.routing, None,
        "1.14 does not print the network routing mode"
    );
    let m = s.masquerading.as_ref().expect("masq");
    assert_eq!(
        (m.mode.clone(), m.snat_exclusion_cidr.as_deref()),
        (MasqueradingMode::Bpf, Some("10.244.0.0/16"))
    );
    assert_eq!((m.ipv4, m.ipv6), (Some(true), Some(false)));
    assert_eq!(s.devices.len(), 1);
    assert_eq!(s.devices[0].name, "eth0");
    assert!(s.devices[0].direct_routing);
    assert_eq!(s.socket_lb, Some(true));
    assert_eq!(s.bandwidth_manager, Some(false));

    // Captured from a live 1.19.7 agent that kubedrill installed on the lab.
    let s = status_sample("1.19.7-lab-captured-dsr-maglev.txt");
    assert_eq!(s.cilium_version, Some(Version::new(1, 19, 7)));
    assert_eq!(s.kube_proxy_replacement, Some(KprStatus::True));
    assert_eq!(s.lb_mode, Some(LbModeStatus::Dsr));
    assert_eq!(s.dsr_dispatch, Some(DsrDispatchStatus::IpOption));
    assert_eq!(
        s.backend_selection,
        Some(BackendSelection::Maglev {
            table_size: Some(16381)
        })
    );
    assert_eq!(s.xdp_acceleration, Some(XdpStatus::Disabled));
    assert_eq!(s.routing, Some(NetworkRouting::Native));
    assert_eq!(s.host_routing, Some(HostRoutingStatus::Bpf));
    let m = s.masquerading.as_ref().expect("masq");
    assert_eq!(
        (m.mode.clone(), m.snat_exclusion_cidr.as_deref()),
        (MasqueradingMode::Bpf, Some("10.233.64.0/18"))
    );
    assert_eq!(s.devices.len(), 1);
    assert_eq!(s.devices[0].name, "eth0");
    assert!(s.devices[0].direct_routing);

    // The worker's agent of the second lab run, asked for XDP best-effort (native XDP was
    // attached to its 1-queue virtio NIC: `ip -d link` showed `xdp` with `cil_xdp_entry`).
    let s = status_sample("1.19.7-lab-captured-worker-best-effort.txt");
    assert_eq!(s.cilium_version, Some(Version::new(1, 19, 7)));
    assert_eq!(s.kube_proxy_replacement, Some(KprStatus::True));
    assert_eq!(s.xdp_acceleration, Some(XdpStatus::BestEffort));
    assert_eq!(s.lb_mode, Some(LbModeStatus::Dsr));
    assert_eq!(s.host_routing, Some(HostRoutingStatus::Bpf));
    assert_eq!(s.devices[0].addresses[0], "10.234.0.12");

    let s = status_sample("1.16.19-dsr-opt-xdp-disabled.txt");
    assert_eq!(s.cilium_version, Some(Version::new(1, 16, 19)));
    assert_eq!(s.kube_proxy_replacement, Some(KprStatus::True));
    assert_eq!(s.lb_mode, Some(LbModeStatus::Dsr));
    assert_eq!(s.dsr_dispatch, Some(DsrDispatchStatus::IpOption));
    assert_eq!(s.xdp_acceleration, Some(XdpStatus::Disabled));
    assert_eq!(s.routing, Some(NetworkRouting::Native));
    assert_eq!(s.host_routing, Some(HostRoutingStatus::Bpf));
    assert_eq!(
        s.devices[0].addresses,
        ["192.168.122.22", "fe80::5054:ff:fe3a:1c22"]
    );

    let s = status_sample("1.18.12-hybrid-geneve-best-effort.txt");
    assert_eq!(s.lb_mode, Some(LbModeStatus::Hybrid));
    assert_eq!(s.dsr_dispatch, Some(DsrDispatchStatus::Geneve));
    assert_eq!(
        s.backend_selection,
        Some(BackendSelection::Maglev {
            table_size: Some(65521)
        })
    );
    assert_eq!(s.xdp_acceleration, Some(XdpStatus::BestEffort));
    assert_eq!(s.host_routing, Some(HostRoutingStatus::Legacy));
    assert_eq!(
        s.masquerading.as_ref().map(|m| m.mode.clone()),
        Some(MasqueradingMode::Iptables)
    );
    let names: Vec<&str> = s.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["eth0", "eth1"]);
    assert_eq!(s.devices.iter().filter(|d| d.direct_routing).count(), 1);
    assert_eq!(s.bandwidth_manager, Some(true));

    let s = status_sample("1.18.12-tunnel-no-kpr.txt");
    assert_eq!(s.kube_proxy_replacement, Some(KprStatus::False));
    assert_eq!(
        s.routing,
        Some(NetworkRouting::Tunnel(Some("vxlan".into())))
    );
    assert_eq!(
        (
            s.lb_mode.clone(),
            s.backend_selection.clone(),
            s.xdp_acceleration.clone()
        ),
        (None, None, None)
    );
    assert!(s.devices.is_empty());
    assert_eq!(s.socket_lb, Some(false));
}

/// A two-node spec with these cluster vars.
fn spec_with(vars: &str) -> ClusterSpec {
    let inv = basic_inventory(vars).load_ok();
    match spec::build(&inv, &SpecContext::default()) {
        Ok((s, _)) => s,
        Err(d) => panic!("spec from\n{vars}\n{d}"),
    }
}

#[test]
fn compare_reports_what_the_agent_runs_differently() {
    // The 1.16 lab asked for native XDP; the agent runs without it.
    let spec = spec_with(
        "cilium_version: 1.16.19\ncilium_loadbalancer_mode: dsr\nkubedrill_cilium_lb_algorithm: maglev\nkubedrill_cilium_lb_acceleration: native\n",
    );
    let expected = ExpectedDatapath::from_spec(&spec, &EffectiveSettings::default());
    assert_eq!(expected.acceleration, Some(Acceleration::Native));
    assert_eq!(expected.lb_mode, Some(LbMode::Dsr));
    let actual = status_sample("1.16.19-dsr-opt-xdp-disabled.txt");
    let mismatches = status::compare(&expected, &actual);
    let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        ["XDP acceleration: expected native, agent reports Disabled"]
    );

    // When the kernel check already said XDP cannot run, disabled is what is expected: no
    // mismatch.
    let effective = EffectiveSettings {
        entries: vec![EffectiveSetting {
            key: "loadBalancer.acceleration".into(),
            requested: "native".into(),
            effective: "disabled".into(),
            reason: Some("node w2: virtio_net has 1 queue".into()),
        }],
    };
    let expected = ExpectedDatapath::from_spec(&spec, &effective);
    assert_eq!(status::compare(&expected, &actual), []);

    // A 1.14 agent still on the deprecated `strict` string fulfils kube-proxy replacement; its
    // version and Maglev table are checked.
    let spec14 = spec_with(
        "cilium_version: 1.14.19\ncilium_loadbalancer_mode: dsr\nkubedrill_cilium_lb_algorithm: maglev\nkubedrill_cilium_lb_acceleration: native\nkubedrill_cilium_maglev_table_size: 65521\n",
    );
    let expected = ExpectedDatapath::from_spec(&spec14, &EffectiveSettings::default());
    let mismatches = status::compare(&expected, &status_sample("1.14.19-dsr-maglev-xdp.txt"));
    let settings: Vec<&str> = mismatches.iter().map(|m| m.setting).collect();
    assert_eq!(settings, ["Maglev table size"], "{mismatches:?}");

    // Everything different: a tunnel agent without kube-proxy replacement, mid-upgrade.
    let mismatches = status::compare(&expected, &status_sample("1.18.12-tunnel-no-kpr.txt"));
    let settings: Vec<&str> = mismatches.iter().map(|m| m.setting).collect();
    assert_eq!(
        settings,
        [
            "Cilium version",
            "kube-proxy replacement",
            "host routing",
            "masquerading",
            "routing"
        ],
        "{mismatches:#?}"
    );
    assert_eq!(
        expected.kube_proxy_replacement,
        Some(KubeProxyReplacement::True)
    );
}

// ---------------------------------------------------------------------------------------------
// Helm
// ---------------------------------------------------------------------------------------------

/// The chart versions with reference values, oldest first.
fn chart_versions() -> Vec<(Version, PathBuf)> {
    let dir = repo().join("tests/data/cilium-values");
    let mut out: Vec<(Version, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let e = e.ok()?;
            let v: Version = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("values.yaml")))
        })
        .collect();
    out.sort();
    out
}

/// Whether `values.yaml` declares the dotted key, a commented-out default (`# key:`) counting.
/// Children are looked for at the indentation of the parent's first child.
fn declares(text: &str, dotted: &str) -> bool {
    let lines: Vec<(usize, &str, bool)> = text
        .lines()
        .filter_map(|l| {
            let indent = l.len() - l.trim_start().len();
            let t = l.trim_start();
            let (comment, t) = match t.strip_prefix('#') {
                Some(r) => (true, r.trim_start()),
                None => (false, t),
            };
            let key = t.split(':').next()?;
            (key.len() < t.len()
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then_some((indent, key, comment))
        })
        .collect();
    let mut start = 0;
    let mut level: Option<usize> = Some(0);
    let mut parent: Option<usize> = None;
    for seg in dotted.split('.') {
        let mut found = None;
        for (i, (indent, key, comment)) in lines.iter().enumerate().skip(start) {
            if !comment && parent.is_some_and(|p| *indent <= p) {
                break;
            }
            if level.is_none() && !comment {
                level = Some(*indent);
            }
            if *key == seg && level == Some(*indent) {
                found = Some((i, *indent));
                break;
            }
        }
        let Some((i, indent)) = found else {
            return false;
        };
        start = i + 1;
        parent = Some(indent);
        level = None;
    }
    true
}

const VALUES_FILE: &str = "/etc/kubernetes/kubedrill/cilium-values.yaml";

#[test]
fn helm_argv_per_chart_version() {
    let versions = chart_versions();
    assert_eq!(versions.len(), 10, "1.11 … 1.20");
    let h = Helm::default();
    for (i, (v, values)) in versions.iter().enumerate() {
        let chart = Chart::repo(*v);
        assert_eq!(
            h.install(&chart, VALUES_FILE).shell(),
            format!(
                "helm install cilium cilium/cilium --version {v} --values {VALUES_FILE} --namespace kube-system --kubeconfig /etc/kubernetes/admin.conf"
            ),
        );
        let pf = h.preflight_install(
            &chart,
            &PreflightOptions {
                api_server: Some(Endpoint {
                    host: "192.168.122.11".into(),
                    port: 6443,
                }),
                image_tag: None,
                values: None,
            },
        );
        assert_eq!(
            pf.shell(),
            format!(
                "helm install cilium-preflight cilium/cilium --version {v} --set preflight.enabled=true --set agent=false --set operator.enabled=false --set k8sServiceHost=192.168.122.11 --set k8sServicePort=6443 --namespace kube-system --kubeconfig /etc/kubernetes/admin.conf"
            ),
        );
        // Every key the pre-flight sets exists in that chart.
        let text = std::fs::read_to_string(values).expect("values.yaml");
        for key in [
            "preflight.enabled",
            "agent",
            "operator.enabled",
            "k8sServiceHost",
            "k8sServicePort",
            "preflight.image.tag",
            "preflight.image.useDigest",
        ] {
            assert!(declares(&text, key), "chart {v} has no {key}");
        }
        // Upgrades from the previous minor: explicit file yes, reuse-values no.
        if i > 0 {
            let from = versions[i - 1].0;
            let up = h
                .upgrade(&chart, from, &UpgradeValues::File(VALUES_FILE.into()))
                .expect("one minor up");
            assert_eq!(
                up.argv(),
                [
                    "helm",
                    "upgrade",
                    "cilium",
                    "cilium/cilium",
                    "--version",
                    &v.to_string(),
                    "--values",
                    VALUES_FILE,
                    "--namespace",
                    "kube-system",
                    "--kubeconfig",
                    "/etc/kubernetes/admin.conf"
                ]
            );
            assert!(
                !up.argv()
                    .iter()
                    .any(|a| a.contains("reuse") || a.contains("reset"))
            );
            assert_eq!(
                h.upgrade(&chart, from, &UpgradeValues::ReuseWith(VALUES_FILE.into())),
                Err(HelmError::ReuseValuesAcrossMinors { from, to: *v })
            );
        }
    }
    // The checker itself can fail.
    let text = std::fs::read_to_string(&versions[0].1).expect("values");
    assert!(!declares(&text, "preflight.noSuchKey"));
    assert!(!declares(&text, "operator.preflight"));
}

#[test]
fn helm_refusals_and_other_verbs() {
    let h = Helm::default();
    let v = |s: &str| -> Version { s.parse().expect("version") };
    // Patch upgrades may reuse values (plus overrides); minors may not; no skipping, no downgrade.
    let patch = h
        .upgrade(
            &Chart::repo(v("1.16.19")),
            v("1.16.5"),
            &UpgradeValues::ReuseWith("/tmp/o.yaml".into()),
        )
        .expect("patch");
    assert!(patch.argv().contains(&"--reuse-values".to_owned()));
    let err = h
        .upgrade(
            &Chart::repo(v("1.17.0")),
            v("1.16.19"),
            &UpgradeValues::ReuseWith("/tmp/o.yaml".into()),
        )
        .expect_err("minor");
    assert!(err.to_string().contains("--reuse-values"), "{err}");
    assert_eq!(
        h.upgrade(
            &Chart::repo(v("1.18.0")),
            v("1.16.19"),
            &UpgradeValues::File(VALUES_FILE.into())
        ),
        Err(HelmError::SkipsMinor {
            from: v("1.16.19"),
            to: v("1.18.0")
        })
    );
    assert_eq!(
        h.upgrade(
            &Chart::repo(v("1.15.19")),
            v("1.16.19"),
            &UpgradeValues::File(VALUES_FILE.into())
        ),
        Err(HelmError::Downgrade {
            from: v("1.16.19"),
            to: v("1.15.19")
        })
    );

    // A local archive: no --version, and its name must agree with the version.
    let chart = Chart::archive("/var/lib/kubedrill/charts/cilium-1.17.18.tgz", v("1.17.18"))
        .expect("archive");
    assert_eq!(
        h.install(&chart, VALUES_FILE).argv()[..4],
        [
            "helm",
            "install",
            "cilium",
            "/var/lib/kubedrill/charts/cilium-1.17.18.tgz"
        ]
    );
    assert!(
        !h.install(&chart, VALUES_FILE)
            .argv()
            .contains(&"--version".to_owned())
    );

    let h2 = Helm::new("/usr/local/bin/helm", None);
    assert_eq!(
        h2.rollback(3).expect("rev").shell(),
        "/usr/local/bin/helm rollback cilium 3 --namespace kube-system"
    );
    assert_eq!(
        h2.history().shell(),
        "/usr/local/bin/helm history cilium --output json --namespace kube-system"
    );
    assert!(h2.history().is_read_only());
    assert_eq!(
        h2.get_values(false).shell(),
        "/usr/local/bin/helm get values cilium --output yaml --namespace kube-system"
    );
    assert_eq!(
        h2.get_values(true).shell(),
        "/usr/local/bin/helm get values cilium --output yaml --all --namespace kube-system"
    );
    assert_eq!(
        h2.status(Release::Cilium).shell(),
        "/usr/local/bin/helm status cilium --output json --namespace kube-system"
    );
    assert_eq!(
        h2.uninstall(Release::Preflight).shell(),
        "/usr/local/bin/helm uninstall cilium-preflight --namespace kube-system"
    );
    assert!(!h2.uninstall(Release::Preflight).is_read_only());

    // Quoting for the SSH exec: every word is one shell word.
    let odd = Helm::new("helm", Some("/root/my kube/admin.conf".into()));
    assert!(
        odd.history()
            .shell()
            .ends_with("--kubeconfig '/root/my kube/admin.conf'")
    );
    let pf = odd.preflight_install(
        &Chart::repo(v("1.16.19")),
        &PreflightOptions {
            api_server: None,
            image_tag: Some("v1.16.19-patched".into()),
            values: None,
        },
    );
    assert!(pf.shell().contains(
        "--set preflight.image.tag=v1.16.19-patched --set preflight.image.useDigest=false"
    ));
    assert!(!pf.shell().contains("k8sServiceHost"));
    // With the upgrade's values file: the same images and parts, the pre-flight settings last.
    let pf = odd.preflight_install(
        &Chart::repo(v("1.19.7")),
        &PreflightOptions {
            api_server: None,
            image_tag: None,
            values: Some("/etc/kubernetes/kubedrill/drill-values-1.19.7.yaml".into()),
        },
    );
    assert!(
        pf.shell().contains(
            "--version 1.19.7 --values /etc/kubernetes/kubedrill/drill-values-1.19.7.yaml --set preflight.enabled=true"
        ),
        "{}",
        pf.shell()
    );
}

#[test]
fn helm_outputs_parse() {
    let history = r#"[{"revision":1,"updated":"2026-08-11T06:58:02.118836453Z","status":"superseded","chart":"cilium-1.16.19","app_version":"1.16.19","description":"Install complete"},{"revision":2,"updated":"2026-08-11T08:12:40.77501377Z","status":"superseded","chart":"cilium-1.17.18","app_version":"1.17.18","description":"Upgrade complete"},{"revision":3,"updated":"2026-08-11T08:31:09.40231212Z","status":"failed","chart":"cilium-1.18.12","app_version":"1.18.12","description":"Upgrade \"cilium\" failed: context deadline exceeded"},{"revision":4,"updated":"2026-08-11T08:40:55.1102Z","status":"deployed","chart":"cilium-1.17.18","app_version":"1.17.18","description":"Rollback to 2"}]"#;
    let h = helm::parse_history(history).expect("history");
    assert_eq!(h.0.len(), 4);
    let deployed = h.deployed().expect("deployed");
    assert_eq!(
        (deployed.revision, deployed.chart_version),
        (4, Some(Version::new(1, 17, 18)))
    );
    assert_eq!(h.rollback_target().map(|r| r.revision), Some(2));
    assert_eq!(
        h.last_with_version(Version::new(1, 16, 19))
            .map(|r| r.revision),
        Some(1)
    );
    assert_eq!(h.0[2].status, ReleaseStatus::Failed);
    assert!(helm::parse_history("Error: release: not found").is_err());

    let status = r#"{"name":"cilium","info":{"first_deployed":"2026-08-11T06:58:02.118836453Z","last_deployed":"2026-08-11T08:40:55.1102Z","deleted":"","description":"Rollback to 2","status":"deployed","notes":"You have successfully installed Cilium with Hubble.\n"},"chart":{"metadata":{"name":"cilium","home":"https://cilium.io/","version":"1.17.18","description":"eBPF-based Networking, Security, and Observability","apiVersion":"v2","appVersion":"1.17.18","kubeVersion":">= 1.21.0-0"},"lock":null,"templates":[],"values":{},"schema":null,"files":[]},"config":{"kubeProxyReplacement":true},"version":4,"namespace":"kube-system"}"#;
    let s = helm::parse_status(status).expect("status");
    assert_eq!(
        (s.revision, s.status.clone(), s.chart_version),
        (4, ReleaseStatus::Deployed, Some(Version::new(1, 17, 18)))
    );
    assert!(!s.status.is_pending());

    let values = "bpf:\n  hostLegacyRouting: false\n  masquerade: true\nk8sServiceHost: 192.168.122.11\nk8sServicePort: 6443\nkubeProxyReplacement: true\nloadBalancer:\n  acceleration: native\n  algorithm: maglev\n  mode: dsr\nmaglev:\n  hashSeed: dGhpcyBpcyAxMmI=\n  tableSize: 16381\nroutingMode: native\n";
    let v = helm::parse_values(values).expect("values");
    assert_eq!(v["loadBalancer"]["mode"], "dsr");
    assert_eq!(v["maglev"]["tableSize"], 16381);
    assert_eq!(v["kubeProxyReplacement"], true);
}

// ---------------------------------------------------------------------------------------------
// Pre-flight readiness
// ---------------------------------------------------------------------------------------------

/// The chart's own pre-flight tolerations, read from its values.yaml.
fn chart_preflight_tolerations(values: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(values).expect("values");
    let v: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", values.display()));
    v["preflight"]["tolerations"].clone()
}

fn preflight_ds(
    tolerations: Value,
    desired: i32,
    ready: i32,
) -> k8s_openapi::api::apps::v1::DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": "cilium-pre-flight-check", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"k8s-app": "cilium-pre-flight-check"}},
                 "template": {"spec": {"containers": [{"name": "cilium-pre-flight-check"}],
                                       "hostNetwork": true, "tolerations": tolerations}}},
        "status": {"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
                   "numberMisscheduled": 0, "numberReady": ready}
    }))
    .expect("daemonset")
}

fn lab_nodes() -> Vec<k8s_openapi::api::core::v1::Node> {
    let mut dedicated = node("w2", "192.168.122.22", true, "3", false);
    dedicated["spec"]["taints"] =
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
    [
        node("cp1", "192.168.122.11", true, "1", true),
        node("w1", "192.168.122.21", true, "2", false),
        dedicated,
    ]
    .into_iter()
    .map(|n| serde_json::from_value(n).expect("node"))
    .collect()
}

fn lab_agents() -> Vec<AgentPod> {
    [("cilium-a", "cp1"), ("cilium-b", "w1"), ("cilium-c", "w2")]
        .iter()
        .map(|(n, node)| {
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(agent_pod(
                n,
                node,
                true,
                0,
                "quay.io/cilium/cilium:v1.15.19",
            ))
            .expect("pod");
            agents::agent_from_pod(&pod)
        })
        .collect()
}

#[test]
fn preflight_compares_like_with_like_per_chart() {
    let nodes = lab_nodes();
    let agents = lab_agents();
    let validator: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(json!({"metadata": {"name": "cilium-pre-flight-check"},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}}))
        .expect("deployment");
    for (v, values) in chart_versions() {
        let tolerations = chart_preflight_tolerations(&values);
        // Which lab nodes this chart's pre-flight may use: the kubeadm control plane only from
        // 1.13 (the `control-plane` toleration), the `dedicated` node only from 1.16.
        let eligible: Vec<&str> = match (v.major, v.minor) {
            (1, 11..=12) => vec!["w1"],
            (1, 13..=15) => vec!["cp1", "w1"],
            _ => vec!["cp1", "w1", "w2"],
        };
        let n = i32::try_from(eligible.len()).expect("small");
        let done = preflight::readiness(
            &preflight_ds(tolerations.clone(), n, n),
            Some(&validator),
            &nodes,
            &agents,
        );
        assert_eq!(done.eligible_nodes, eligible, "chart {v}");
        assert_eq!(done.expected, eligible.len(), "chart {v}");
        assert!(done.is_ready(), "chart {v}: {done}");
        assert_eq!(done.excluded_nodes.len(), 3 - eligible.len(), "chart {v}");
        // One pod short: not ready, and says why.
        let short = preflight::readiness(
            &preflight_ds(tolerations, n, n - 1),
            Some(&validator),
            &nodes,
            &agents,
        );
        assert!(!short.is_ready(), "chart {v}");
        assert!(
            short
                .to_string()
                .contains(&format!("{} of {n} pre-flight pods ready", n - 1)),
            "{short}"
        );
    }
    // The validator Deployment must be 1/1 too.
    let pending: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(json!({"metadata": {"name": "cilium-pre-flight-check"},
            "spec": {"replicas": 1, "selector": {}, "template": {}}, "status": {"replicas": 1}}))
        .expect("deployment");
    let r = preflight::readiness(
        &preflight_ds(json!([{"operator": "Exists"}]), 3, 3),
        Some(&pending),
        &nodes,
        &agents,
    );
    assert_eq!(r.waiting_for, ["validator Deployment 0/1 ready"]);
    // With an old chart's tolerations the excluded nodes are named with the taint.
    let old = chart_preflight_tolerations(&chart_versions()[0].1);
    let r = preflight::readiness(&preflight_ds(old, 1, 1), None, &nodes, &agents);
    assert!(r.is_ready(), "{r}");
    assert_eq!(
        r.to_string(),
        "pre-flight DaemonSet 1/1 ready (expected 1 = Cilium agents on eligible nodes); not covered: cp1 (taint node-role.kubernetes.io/control-plane:NoSchedule not tolerated), w2 (taint dedicated=db:NoSchedule not tolerated)"
    );
}
