//! kubedrill's Kubernetes-API side against a real API server (etcd + kube-apiserver v1.34.4
//! built from source, `tests/common/apiserver.rs`), and its Helm command lines run with real
//! Helm 3 (v3.17.3) and Helm 4 (v4.1.4) against it.
//!
//! The server has no kubelet, scheduler or controller-manager: each test creates the Nodes,
//! DaemonSets, Deployments and Pods a cluster would have and patches their `status`
//! subresources itself, while kubedrill's waits watch. What is real is what the API server
//! decides: validation of every object and status, generations (bumped by spec changes only),
//! resourceVersions and watch events, delete preconditions (UID), graceful pod deletion, RBAC,
//! and Helm's release storage and (Helm 4) server-side apply.
//!
//! One server per test binary; tests use their own namespaces. Tests of names kubedrill fixes
//! (all nodes, `kube-system/kube-proxy`, the `k8s-app=cilium` pods, the Helm release
//! `kube-system/cilium`) take a lock for that name and first remove what an earlier test left.
//!
//! Missing binaries skip the tests loudly, or fail them with `KUBEDRILL_REQUIRE_APISERVER=1`
//! (`scripts/test.sh` as root, after `scripts/upstream-build.sh --only
//! kube-apiserver,kubectl,etcd,helm`).

use crate::common;
use crate::common::apiserver;

use apiserver::{Also, ApiServer, KubeconfigSpec, skip_unless_available, unique_name};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubedrill::cilium::helm::{self, Chart, Helm, HelmCommand, Release, ReleaseStatus};
use kubedrill::k8s::agents;
use kubedrill::k8s::kube_proxy::{self, Outcome};
use kubedrill::k8s::wait::{self, LastSeen, NodesReport, Progress, RolloutStatus, WaitError};
use kubedrill::k8s::{ClientOptions, K8sError, client_from_kubeconfig, config_from_kubeconfig};
use kubedrill::spec::Version;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::mpsc;

/// The shared server, or return from the test (skipped loudly, or a panic when required).
macro_rules! server {
    ($test:expr $(, $also:expr)*) => {
        match skip_unless_available($test, &[$($also),*]) {
            Some(s) => s,
            None => return,
        }
    };
}

/// Prints how long the test took (visible with `--nocapture`).
struct Timed(&'static str, Instant);

impl Timed {
    fn new(name: &'static str) -> Self {
        Timed(name, Instant::now())
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!(
            "timing: {} {} ms{}",
            self.0,
            self.1.elapsed().as_millis(),
            if std::thread::panicking() {
                " (failed)"
            } else {
                ""
            }
        );
    }
}

/// Locks for names kubedrill fixes (see the module documentation).
static NODES: AsyncMutex<()> = AsyncMutex::const_new(());
static KUBE_PROXY: AsyncMutex<()> = AsyncMutex::const_new(());
static AGENTS: AsyncMutex<()> = AsyncMutex::const_new(());
static HELM_RELEASE: AsyncMutex<()> = AsyncMutex::const_new(());

const KS: &str = "kube-system";
const CNI_NOT_READY: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";
/// Bound on every step a test waits for (a state from a wait, a helm run).
const STEP: Duration = Duration::from_secs(60);
/// The timeout of waits that must time out: enough for the first LIST on a busy machine (the
/// messages checked say "3s").
const SHORT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

fn obj<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("object")
}

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o: K = obj(v.clone());
    api.create(&PostParams::default(), &o)
        .await
        .unwrap_or_else(|e| panic!("create {v}: {e}"))
}

async fn patch_status<K>(api: &Api<K>, name: &str, status: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("patch status of {name} with {status}: {e}"))
}

/// Delete if present (404 is fine), immediately (grace period 0, as a kubelet confirms).
async fn delete_now<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("delete {name}: {e}"),
    }
}

fn uid<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().expect("uid")
}

/// A wait running in its own task, reporting each state it sees to the test.
struct Watching<T, R> {
    states: mpsc::UnboundedReceiver<Result<T, String>>,
    task: tokio::task::JoinHandle<R>,
}

impl<T, R> Watching<T, R> {
    /// The next state the wait reported (retries are reported as `Err`).
    async fn next(&mut self) -> Result<T, String> {
        tokio::time::timeout(STEP, self.states.recv())
            .await
            .expect("the wait reported nothing within the step bound")
            .expect("the wait ended without reporting")
    }

    /// The wait's result.
    async fn result(self) -> R {
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("the wait did not end")
            .expect("the wait task panicked")
    }
}

fn watch_nodes(
    client: &Client,
    expected: usize,
    timeout: Duration,
) -> Watching<NodesReport, Result<NodesReport, WaitError>> {
    let (tx, states) = mpsc::unbounded_channel();
    let client = client.clone();
    let task = tokio::spawn(async move {
        wait::nodes_ready(&client, expected, timeout, |p| {
            let _ = tx.send(match p {
                Progress::State(s) => Ok(s.clone()),
                Progress::Retrying(e) => Err(e.to_owned()),
            });
        })
        .await
    });
    Watching { states, task }
}

#[derive(Clone, Copy)]
enum Workload {
    DaemonSet,
    Deployment,
}

fn watch_rollout(
    client: &Client,
    kind: Workload,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Watching<RolloutStatus, Result<RolloutStatus, WaitError>> {
    let (tx, states) = mpsc::unbounded_channel();
    let (client, ns, name) = (client.clone(), ns.to_owned(), name.to_owned());
    let task = tokio::spawn(async move {
        let progress = |p: Progress<'_, RolloutStatus>| {
            let _ = tx.send(match p {
                Progress::State(s) => Ok(s.clone()),
                Progress::Retrying(e) => Err(e.to_owned()),
            });
        };
        match kind {
            Workload::DaemonSet => {
                wait::daemonset_rolled_out(&client, &ns, &name, timeout, progress).await
            }
            Workload::Deployment => {
                wait::deployment_rolled_out(&client, &ns, &name, timeout, progress).await
            }
        }
    });
    Watching { states, task }
}

// ---------------------------------------------------------------------------------------------
// Realistic objects (as kubelet, kubeadm and the Cilium chart make them)
// ---------------------------------------------------------------------------------------------

fn node(name: &str, control_plane: bool) -> Value {
    let mut labels = json!({"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    let mut taints = vec![json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})];
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        taints
            .push(json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}));
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock"}},
        "spec": {"taints": taints}
    })
}

/// A node status as kubelet posts it: pressure conditions, and Ready True, or False with the
/// CNI message kubelet reports before Cilium runs.
fn node_status(ip: &str, ready: bool) -> Value {
    let now = "2026-08-11T07:02:11Z";
    let pressure = |t: &str, reason: &str, message: &str| {
        json!({"type": t, "status": "False", "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": "2026-08-11T06:54:30Z"})
    };
    let ready_cond = if ready {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "kubelet is posting ready status",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    } else {
        json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
               "message": CNI_NOT_READY,
               "lastHeartbeatTime": now, "lastTransitionTime": "2026-08-11T06:55:02Z"})
    };
    json!({
        "addresses": [{"type": "InternalIP", "address": ip}],
        "conditions": [
            pressure("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            pressure("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            pressure("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ready_cond
        ],
        "nodeInfo": {"architecture": "amd64", "bootID": "b1", "containerRuntimeVersion": "containerd://1.7.24",
                     "kernelVersion": "6.1.0-28-amd64", "kubeProxyVersion": "", "kubeletVersion": "v1.34.4",
                     "machineID": "m1", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                     "systemUUID": "s1"}
    })
}

/// Cilium's agent DaemonSet as the chart renders it (the parts the API server validates).
fn cilium_ds(ns: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"app.kubernetes.io/managed-by": "Helm", "k8s-app": "cilium"},
                     "annotations": {"meta.helm.sh/release-name": "cilium", "meta.helm.sh/release-namespace": "kube-system"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "cilium"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": 0}},
            "template": {"metadata": {"labels": {"k8s-app": "cilium"}},
                         "spec": {"containers": [{"name": "cilium-agent", "image": image}],
                                  "tolerations": [{"operator": "Exists"}], "hostNetwork": true,
                                  "priorityClassName": "system-node-critical"}}
        }
    })
}

fn ds_status(generation: i64, desired: i32, updated: i32, ready: i32, available: i32) -> Value {
    json!({"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
           "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": available,
           "numberUnavailable": desired - available, "updatedNumberScheduled": updated,
           "observedGeneration": generation})
}

fn operator_deployment(ns: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cilium-operator", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"name": "cilium-operator"}},
                 "template": {"metadata": {"labels": {"name": "cilium-operator"}},
                              "spec": {"containers": [{"name": "cilium-operator", "image": image}]}}}
    })
}

/// kubeadm's kube-proxy addon DaemonSet (cmd/kubeadm/app/phases/addons/proxy/manifests.go).
fn kube_proxy_ds() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": KS, "labels": {"k8s-app": "kube-proxy"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "containers": [{
                        "name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.34.4",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf", "--hostname-override=$(NODE_NAME)"],
                        "securityContext": {"privileged": true},
                        "volumeMounts": [{"mountPath": "/var/lib/kube-proxy", "name": "kube-proxy"},
                                         {"mountPath": "/run/xtables.lock", "name": "xtables-lock", "readOnly": false},
                                         {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": true}],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
                    }],
                    "hostNetwork": true,
                    "serviceAccountName": "kube-proxy",
                    "volumes": [{"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                                {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                                {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}}],
                    "tolerations": [{"operator": "Exists"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"}
                }
            }
        }
    })
}

/// kubeadm's kube-proxy ConfigMap.
fn kube_proxy_cm() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": KS, "labels": {"app": "kube-proxy"}},
        "data": {
            "config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\nclusterCIDR: 10.244.0.0/16\nmode: \"\"\n",
            "kubeconfig.conf": "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n    server: https://192.168.122.11:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"
        }
    })
}

fn agent_pod(ns: &str, name: &str, node: &str, image: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "hostNetwork": true, "automountServiceAccountToken": false,
                 "containers": [{"name": "cilium-agent", "image": image}],
                 "initContainers": [{"name": "config", "image": image}, {"name": "mount-cgroup", "image": image}],
                 "tolerations": [{"operator": "Exists"}]}
    })
}

/// A pod status as kubelet posts it: Running, Ready or crash-looping.
fn agent_status(ready: bool, restarts: i32, image: &str) -> Value {
    let state = if ready {
        json!({"running": {"startedAt": "2026-08-11T06:59:12Z"}})
    } else {
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=cilium-agent"}})
    };
    let tf = if ready { "True" } else { "False" };
    let done = json!({"terminated": {"exitCode": 0, "reason": "Completed",
                       "startedAt": "2026-08-11T06:58:45Z", "finishedAt": "2026-08-11T06:58:46Z"}});
    json!({
        "phase": "Running",
        "startTime": "2026-08-11T06:58:41Z",
        "conditions": [{"type": "Initialized", "status": "True"},
                       {"type": "Ready", "status": tf},
                       {"type": "ContainersReady", "status": tf},
                       {"type": "PodScheduled", "status": "True"}],
        "initContainerStatuses": [
            {"name": "config", "image": image, "imageID": "", "ready": true, "restartCount": 0, "state": done},
            {"name": "mount-cgroup", "image": image, "imageID": "", "ready": true, "restartCount": 0, "state": done}],
        "containerStatuses": [{"name": "cilium-agent", "image": image, "imageID": "", "ready": ready,
                               "restartCount": restarts, "started": ready, "state": state}]
    })
}

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

/// A private server (not the shared one): it answers, and dropping it kills both processes by
/// PID and removes its directory. Also measures a start on its own.
#[tokio::test]
async fn harness_kills_its_processes_and_removes_its_directory_on_drop() {
    let _t = Timed::new("harness_kills_its_processes_and_removes_its_directory_on_drop");
    // The shared server's availability decides skipping; this test then starts its own.
    let _ = server!("harness_kills_its_processes_and_removes_its_directory_on_drop");
    let s = ApiServer::start().expect("private server");
    eprintln!(
        "timing: private server start: certificates {} ms, etcd {} ms, kube-apiserver {} ms",
        s.times.certs.as_millis(),
        s.times.etcd.as_millis(),
        s.times.apiserver.as_millis()
    );
    let mode = std::fs::metadata(&s.kubeconfig)
        .expect("kubeconfig")
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600, "the admin kubeconfig is 0600");
    let client = s.client().await;
    let v = client.apiserver_version().await.expect("version");
    assert_eq!(v.major, "1");
    let (etcd, api) = s.pids;
    let dir = s.dir().to_owned();
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| !st.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
    };
    assert!(alive(etcd) && alive(api), "both processes run");
    drop(s);
    assert!(!alive(etcd), "etcd {etcd} still runs after drop");
    assert!(!alive(api), "kube-apiserver {api} still runs after drop");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}

// ---------------------------------------------------------------------------------------------
// Kubeconfig and client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn kubeconfig_client_reaches_the_real_server_and_verifies_it() {
    let _t = Timed::new("kubeconfig_client_reaches_the_real_server_and_verifies_it");
    let s = server!("kubeconfig_client_reaches_the_real_server_and_verifies_it");
    let client = client_from_kubeconfig(&s.kubeconfig, &ClientOptions::default())
        .await
        .expect("client");
    let v = client.apiserver_version().await.expect("version");
    assert!(
        v.git_version.starts_with("v1.34."),
        "built from {}: {}",
        apiserver::K8S_VERSION,
        v.git_version
    );
    // kube-apiserver made its own namespaces, as kubeadm's clusters have them.
    let nss: Api<Namespace> = Api::all(client.clone());
    assert!(nss.get_opt(KS).await.expect("get").is_some());

    // The SSH-tunnel case: the kubeconfig names a host this machine cannot resolve; the override
    // reaches 127.0.0.1 and the certificate is verified against the kubeconfig's name.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = &s.pki;
    let kc = |file: &str, server: String, ca: &Path| {
        let path = dir.path().join(file);
        apiserver::write_kubeconfig(
            &path,
            &KubeconfigSpec {
                server: &server,
                ca,
                cert: &pki.join("admin.crt"),
                key: &pki.join("admin.key"),
                tls_server_name: None,
                user: "kubernetes-admin",
            },
        );
        path
    };
    let named = kc(
        "named.conf",
        format!("https://{}:{}", apiserver::SERVING_NAME, s.port),
        &pki.join("ca.crt"),
    );
    let tunnel = ClientOptions {
        server_override: Some(format!("127.0.0.1:{}", s.port)),
        ..ClientOptions::default()
    };
    let cfg = config_from_kubeconfig(&named, &tunnel)
        .await
        .expect("config");
    assert_eq!(
        cfg.tls_server_name.as_deref(),
        Some(apiserver::SERVING_NAME)
    );
    let c = client_from_kubeconfig(&named, &tunnel)
        .await
        .expect("client");
    let nodes: Api<Node> = Api::all(c);
    nodes
        .list(&ListParams::default().limit(1))
        .await
        .expect("listed through the override, certificate verified for the kubeconfig's name");

    // Control: a kubeconfig name the certificate lacks fails under the same override, although
    // the certificate does name 127.0.0.1 — so the check above used the kubeconfig's name.
    let unnamed = kc(
        "unnamed.conf",
        format!("https://not-in-the-certificate.test:{}", s.port),
        &pki.join("ca.crt"),
    );
    let c = client_from_kubeconfig(&unnamed, &tunnel)
        .await
        .expect("client");
    let err = c
        .apiserver_version()
        .await
        .expect_err("name not in the cert");
    let text = format!("{err:?}");
    assert!(
        text.contains("NotValidForName") || text.to_lowercase().contains("certificate"),
        "{text}"
    );

    // Another CA (the mock tests' one) does not verify the real server.
    let other_ca = kc(
        "other-ca.conf",
        s.url.clone(),
        &common::repo().join("tests/data/tls/ca.crt"),
    );
    let c = client_from_kubeconfig(&other_ca, &ClientOptions::default())
        .await
        .expect("client");
    assert!(c.apiserver_version().await.is_err(), "wrong CA must fail");
}

#[tokio::test]
async fn rbac_denial_ends_waits_at_once_and_names_the_user() {
    let _t = Timed::new("rbac_denial_ends_waits_at_once_and_names_the_user");
    let s = server!("rbac_denial_ends_waits_at_once_and_names_the_user");
    // A user the CA vouches for but RBAC grants nothing.
    let kc = s.user_kubeconfig("kubedrill-nobody", "/CN=kubedrill-nobody");
    let client = client_from_kubeconfig(&kc, &ClientOptions::default())
        .await
        .expect("client");
    let t = Instant::now();
    let err = wait::nodes_ready(&client, 1, Duration::from_secs(120), |_| {})
        .await
        .expect_err("forbidden");
    assert!(matches!(err, WaitError::Watch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("forbidden") && text.contains("kubedrill-nobody"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "no retries of a 403");
    let err = wait::daemonset_rolled_out(&client, KS, "cilium", Duration::from_secs(120), |_| {})
        .await
        .expect_err("forbidden");
    assert!(matches!(err, WaitError::Watch { .. }), "{err}");
    let err = kube_proxy::detect(&client).await.expect_err("forbidden");
    assert!(
        err.to_string()
            .starts_with("get daemonset kube-system/kube-proxy: "),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "no retries of a 403");
}

// ---------------------------------------------------------------------------------------------
// Waits: nodes
// ---------------------------------------------------------------------------------------------

/// Remove every node (nodes are cluster-scoped: node tests hold [`NODES`]).
async fn no_nodes(client: &Client) {
    let api: Api<Node> = Api::all(client.clone());
    for n in api.list(&ListParams::default()).await.expect("list").items {
        delete_now(&api, n.metadata.name.as_deref().unwrap_or_default()).await;
    }
}

#[tokio::test]
async fn nodes_ready_follows_status_patches_and_late_registration() {
    let _t = Timed::new("nodes_ready_follows_status_patches_and_late_registration");
    let s = server!("nodes_ready_follows_status_patches_and_late_registration");
    let _g = NODES.lock().await;
    let client = s.client().await;
    no_nodes(&client).await;
    let api: Api<Node> = Api::all(client.clone());
    for (name, cp) in [("cp1", true), ("w1", false), ("w2", false)] {
        create(&api, node(name, cp)).await;
    }
    patch_status(&api, "cp1", node_status("192.168.122.11", true)).await;
    patch_status(&api, "w1", node_status("192.168.122.21", false)).await;
    // w2 registered but its kubelet has posted no status yet.

    let mut w = watch_nodes(&client, 4, STEP);
    let first = w.next().await.expect("state");
    assert_eq!(
        first.to_string(),
        format!(
            "1 of 4 expected nodes Ready (3 registered); w1 not Ready (False: KubeletNotReady: {CNI_NOT_READY}); w2 not Ready (no Ready condition reported yet)"
        )
    );
    assert_eq!(first.nodes[1].reason.as_deref(), Some("KubeletNotReady"));

    patch_status(&api, "w1", node_status("192.168.122.21", true)).await;
    assert_eq!(
        w.next().await.expect("state").to_string(),
        "2 of 4 expected nodes Ready (3 registered); w2 not Ready (no Ready condition reported yet)"
    );
    // A fourth node registers while the wait watches.
    create(&api, node("w3", false)).await;
    assert_eq!(
        w.next().await.expect("state").to_string(),
        "2 of 4 expected nodes Ready (4 registered); w2 not Ready (no Ready condition reported yet); w3 not Ready (no Ready condition reported yet)"
    );
    patch_status(&api, "w2", node_status("192.168.122.22", true)).await;
    assert_eq!(
        w.next().await.expect("state").to_string(),
        "3 of 4 expected nodes Ready (4 registered); w3 not Ready (no Ready condition reported yet)"
    );
    // Cordoning is a spec change, not readiness.
    api.patch(
        "w3",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"unschedulable": true}})),
    )
    .await
    .expect("cordon");
    let cordoned = w.next().await.expect("state");
    assert!(cordoned.nodes[3].unschedulable && !cordoned.nodes[3].ready);
    patch_status(&api, "w3", node_status("192.168.122.23", true)).await;
    let last = w.next().await.expect("state");
    assert_eq!(
        last.to_string(),
        "4 of 4 expected nodes Ready (4 registered)"
    );
    let r = w.result().await.expect("all nodes Ready");
    assert_eq!(r, last);
    no_nodes(&client).await;
}

#[tokio::test]
async fn nodes_wait_times_out_naming_the_node_and_its_reason() {
    let _t = Timed::new("nodes_wait_times_out_naming_the_node_and_its_reason");
    let s = server!("nodes_wait_times_out_naming_the_node_and_its_reason");
    let _g = NODES.lock().await;
    let client = s.client().await;
    no_nodes(&client).await;
    let api: Api<Node> = Api::all(client.clone());
    create(&api, node("cp1", true)).await;
    create(&api, node("w1", false)).await;
    patch_status(&api, "cp1", node_status("192.168.122.11", true)).await;
    patch_status(&api, "w1", node_status("192.168.122.21", false)).await;

    let err = wait::nodes_ready(&client, 2, SHORT, |_| {})
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
        text.starts_with("timed out after 3s waiting for all nodes; last seen: 1 of 2 expected nodes Ready (2 registered); w1 not Ready (False: KubeletNotReady: container runtime network not ready"),
        "{text}"
    );

    // Nodes that never registered count against the expected number; a deleted node no longer
    // counts as registered.
    delete_now(&api, "w1").await;
    let err = wait::nodes_ready(&client, 3, SHORT, |_| {})
        .await
        .expect_err("two nodes missing");
    assert!(
        err.to_string()
            .contains("last seen: 1 of 3 expected nodes Ready (1 registered)"),
        "{err}"
    );
    no_nodes(&client).await;
}

// ---------------------------------------------------------------------------------------------
// Waits: DaemonSet and Deployment
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn daemonset_wait_follows_status_patches_and_generations() {
    let _t = Timed::new("daemonset_wait_follows_status_patches_and_generations");
    let s = server!("daemonset_wait_follows_status_patches_and_generations");
    let client = s.client().await;
    let ns = namespace(&client, "ds").await;
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let created = create(
        &api,
        cilium_ds(&ns, "cilium", "quay.io/cilium/cilium:v1.17.18"),
    )
    .await;
    assert_eq!(created.metadata.generation, Some(1));

    let mut w = watch_rollout(&client, Workload::DaemonSet, &ns, "cilium", STEP);
    let st = w.next().await.expect("state");
    assert_eq!(
        st.waiting_for.as_deref(),
        Some("waiting for the DaemonSet spec update to be observed"),
        "a new DaemonSet whose controller has not seen it: {st}"
    );
    let mut seen = Vec::new();
    for (updated, ready, available) in [(1, 2, 2), (2, 2, 2), (3, 2, 2), (3, 3, 3)] {
        patch_status(&api, "cilium", ds_status(1, 3, updated, ready, available)).await;
        let st = w.next().await.expect("state");
        seen.push((st.updated, st.ready, st.waiting_for.clone()));
    }
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
    let done = w.result().await.expect("rolled out");
    assert_eq!(
        done.to_string(),
        format!(
            "daemonset {ns}/cilium: desired 3, updated 3, ready 3, available 3, generation 1 (observed 1) — rolled out"
        )
    );

    // A template change (the next Cilium image) bumps the generation — the API server's
    // decision — and the same status no longer counts until the controller observes it.
    let patched = api
        .patch(
            "cilium",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.18.6"}]}}}})),
        )
        .await
        .expect("new image");
    assert_eq!(patched.metadata.generation, Some(2));
    // A status patch does not bump it.
    let st = patch_status(&api, "cilium", ds_status(1, 3, 3, 3, 3)).await;
    assert_eq!(st.metadata.generation, Some(2));
    let mut w = watch_rollout(&client, Workload::DaemonSet, &ns, "cilium", STEP);
    let st = w.next().await.expect("state");
    assert_eq!(
        (st.generation, st.observed_generation, st.done),
        (Some(2), Some(1), false),
        "{st}"
    );
    patch_status(&api, "cilium", ds_status(2, 3, 0, 3, 3)).await;
    assert_eq!(
        w.next().await.expect("state").waiting_for.as_deref(),
        Some("0 out of 3 new pods have been updated")
    );
    patch_status(&api, "cilium", ds_status(2, 3, 3, 3, 3)).await;
    assert!(w.next().await.expect("state").done);
    assert!(w.result().await.expect("rolled out").done);
}

#[tokio::test]
async fn daemonset_wait_times_out_with_its_last_status_or_absence() {
    let _t = Timed::new("daemonset_wait_times_out_with_its_last_status_or_absence");
    let s = server!("daemonset_wait_times_out_with_its_last_status_or_absence");
    let client = s.client().await;
    let ns = namespace(&client, "ds-timeout").await;
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);

    let err = wait::daemonset_rolled_out(&client, &ns, "cilium-pre-flight-check", SHORT, |_| {})
        .await
        .expect_err("absent");
    match &err {
        WaitError::Timeout { last, .. } => assert_eq!(**last, LastSeen::Absent),
        other => panic!("{other}"),
    }

    create(
        &api,
        cilium_ds(&ns, "cilium", "quay.io/cilium/cilium:v1.17.18"),
    )
    .await;
    patch_status(&api, "cilium", ds_status(1, 3, 3, 2, 2)).await;
    let err = wait::daemonset_rolled_out(&client, &ns, "cilium", SHORT, |_| {})
        .await
        .expect_err("stuck at 2 of 3");
    assert_eq!(
        err.to_string(),
        format!(
            "timed out after 3s waiting for daemonset {ns}/cilium; last seen: daemonset {ns}/cilium: desired 3, updated 3, ready 2, available 2, generation 1 (observed 1) — 2 of 3 updated pods are available"
        )
    );

    // Created while the wait watches: it picks the object up and follows it.
    let mut w = watch_rollout(&client, Workload::DaemonSet, &ns, "cilium-envoy", STEP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    create(
        &api,
        cilium_ds(&ns, "cilium-envoy", "quay.io/cilium/cilium-envoy:v1.33.4"),
    )
    .await;
    patch_status(&api, "cilium-envoy", ds_status(1, 2, 2, 2, 2)).await;
    loop {
        if w.next().await.expect("state").done {
            break;
        }
    }
    assert!(w.result().await.expect("rolled out").done);
}

#[tokio::test]
async fn deployment_wait_follows_status_or_fails_on_progress_deadline() {
    let _t = Timed::new("deployment_wait_follows_status_or_fails_on_progress_deadline");
    let s = server!("deployment_wait_follows_status_or_fails_on_progress_deadline");
    let client = s.client().await;
    let ns = namespace(&client, "deploy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        operator_deployment(&ns, "quay.io/cilium/operator-generic:v1.17.18"),
    )
    .await;
    let mut w = watch_rollout(&client, Workload::Deployment, &ns, "cilium-operator", STEP);
    assert_eq!(
        w.next().await.expect("state").waiting_for.as_deref(),
        Some("waiting for the Deployment spec update to be observed")
    );
    // (replicas, updated, ready, available): statuses the API server accepts (available ≤
    // ready ≤ replicas, updated ≤ replicas), as the deployment controller posts them.
    let mut seen = Vec::new();
    for (replicas, updated, ready, available) in
        [(2, 1, 0, 0), (3, 2, 3, 3), (2, 2, 2, 1), (2, 2, 2, 2)]
    {
        patch_status(
            &api,
            "cilium-operator",
            json!({"observedGeneration": 1, "replicas": replicas, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": available}),
        )
        .await;
        seen.push(w.next().await.expect("state").waiting_for);
    }
    assert_eq!(
        seen,
        [
            Some("1 out of 2 new replicas have been updated".to_owned()),
            Some("1 old replicas are pending termination".to_owned()),
            Some("1 of 2 updated replicas are available".to_owned()),
            None
        ]
    );
    assert!(w.result().await.expect("available").done);

    // The API server refuses a status no controller could post (more available than ready).
    let bad = api
        .patch_status(
            "cilium-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 1, "availableReplicas": 2}})),
        )
        .await
        .expect_err("available > ready");
    assert!(
        matches!(&bad, kube::Error::Api(s) if s.code == 422),
        "{bad}"
    );

    // The next image, which never progresses: the controller gives up at the deadline.
    api.patch(
        "cilium-operator",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cilium-operator", "image": "quay.io/cilium/operator-generic:v1.18.6"}]}}}})),
    )
    .await
    .expect("new image");
    let mut w = watch_rollout(&client, Workload::Deployment, &ns, "cilium-operator", STEP);
    let st = w.next().await.expect("state");
    assert_eq!((st.generation, st.observed_generation), (Some(2), Some(1)));
    patch_status(
        &api,
        "cilium-operator",
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
               "readyReplicas": 2, "availableReplicas": 2,
               "conditions": [
                   {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability."},
                   {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet \"cilium-operator-5d8f6c7b9\" has timed out progressing."}]}),
    )
    .await;
    let _ = w.next().await;
    let err = w.result().await.expect_err("deadline");
    assert!(matches!(err, WaitError::Failed { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "deployment {ns}/cilium-operator exceeded its progress deadline (ReplicaSet \"cilium-operator-5d8f6c7b9\" has timed out progressing.)"
        )),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// kube-proxy
// ---------------------------------------------------------------------------------------------

/// Remove what an earlier test left of kube-proxy (tests of it hold [`KUBE_PROXY`]).
async fn no_kube_proxy(client: &Client) -> (Api<DaemonSet>, Api<ConfigMap>) {
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), KS);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), KS);
    delete_now(&dss, "kube-proxy").await;
    delete_now(&cms, "kube-proxy").await;
    (dss, cms)
}

/// kube-proxy as kubeadm leaves it: ConfigMap, DaemonSet, and 3 pods scheduled.
async fn kubeadm_kube_proxy(dss: &Api<DaemonSet>, cms: &Api<ConfigMap>) -> (String, String) {
    let cm = create(cms, kube_proxy_cm()).await;
    let ds = create(dss, kube_proxy_ds()).await;
    patch_status(dss, "kube-proxy", ds_status(1, 3, 3, 3, 3)).await;
    (uid(&ds), uid(&cm))
}

#[tokio::test]
async fn kube_proxy_detect_and_remove_delete_both_objects() {
    let _t = Timed::new("kube_proxy_detect_and_remove_delete_both_objects");
    let s = server!("kube_proxy_detect_and_remove_delete_both_objects");
    let _g = KUBE_PROXY.lock().await;
    let client = s.client().await;
    let (dss, cms) = no_kube_proxy(&client).await;
    let (ds_uid, cm_uid) = kubeadm_kube_proxy(&dss, &cms).await;

    let found = kube_proxy::detect(&client).await.expect("detect");
    assert_eq!(
        found.to_string(),
        "daemonset/kube-proxy present (3 pods), configmap/kube-proxy present (in kube-system)"
    );
    assert_eq!(
        found.daemonset.as_ref().unwrap().uid.as_ref(),
        Some(&ds_uid)
    );
    assert_eq!(
        found.configmap.as_ref().unwrap().uid.as_ref(),
        Some(&cm_uid)
    );
    let report = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect("remove");
    assert_eq!(
        (report.daemonset, report.configmap),
        (Outcome::Deleted, Outcome::Deleted)
    );
    // Gone at once: background propagation puts no finalizer on the DaemonSet (a foreground
    // delete would wait for a garbage collector).
    assert!(dss.get_opt("kube-proxy").await.expect("get").is_none());
    assert!(cms.get_opt("kube-proxy").await.expect("get").is_none());
    let again = kube_proxy::detect(&client).await.expect("detect");
    assert!(again.is_absent(), "{again}");
}

#[tokio::test]
async fn kube_proxy_uid_precondition_spares_a_recreated_object() {
    let _t = Timed::new("kube_proxy_uid_precondition_spares_a_recreated_object");
    let s = server!("kube_proxy_uid_precondition_spares_a_recreated_object");
    let _g = KUBE_PROXY.lock().await;
    let client = s.client().await;

    // The DaemonSet is replaced (kubeadm upgrade re-creates the addon) between detect and
    // remove: the DELETE is refused and nothing is deleted.
    let (dss, cms) = no_kube_proxy(&client).await;
    let (old_uid, cm_uid) = kubeadm_kube_proxy(&dss, &cms).await;
    let found = kube_proxy::detect(&client).await.expect("detect");
    delete_now(&dss, "kube-proxy").await;
    let new_uid = uid(&create(&dss, kube_proxy_ds()).await);
    assert_ne!(old_uid, new_uid);
    let err = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect_err("precondition");
    let text = err.to_string();
    assert!(
        text.starts_with("delete daemonset kube-system/kube-proxy: "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "the UID in the precondition ({old_uid}) does not match the UID in record ({new_uid})"
        )),
        "{text}"
    );
    let K8sError::Api { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(source.as_ref(), kube::Error::Api(s) if s.code == 409),
        "{source}"
    );
    assert_eq!(uid(&dss.get("kube-proxy").await.expect("spared")), new_uid);
    assert_eq!(
        uid(&cms.get("kube-proxy").await.expect("untouched")),
        cm_uid
    );

    // The ConfigMap is replaced: the DaemonSet goes, the new ConfigMap stays, and the error
    // names the ConfigMap.
    let (dss, cms) = no_kube_proxy(&client).await;
    kubeadm_kube_proxy(&dss, &cms).await;
    let found = kube_proxy::detect(&client).await.expect("detect");
    delete_now(&cms, "kube-proxy").await;
    let new_cm = uid(&create(&cms, kube_proxy_cm()).await);
    let err = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect_err("precondition");
    assert!(
        err.to_string()
            .starts_with("delete configmap kube-system/kube-proxy: "),
        "{err}"
    );
    assert!(dss.get_opt("kube-proxy").await.expect("get").is_none());
    assert_eq!(uid(&cms.get("kube-proxy").await.expect("spared")), new_cm);
    no_kube_proxy(&client).await;
}

#[tokio::test]
async fn kube_proxy_absent_or_half_gone() {
    let _t = Timed::new("kube_proxy_absent_or_half_gone");
    let s = server!("kube_proxy_absent_or_half_gone");
    let _g = KUBE_PROXY.lock().await;
    let client = s.client().await;
    let (_dss, cms) = no_kube_proxy(&client).await;

    // Nothing there (a cluster made with kubeadm's kube-proxy addon skipped).
    let found = kube_proxy::detect(&client).await.expect("detect");
    assert!(found.is_absent());
    assert_eq!(
        found.to_string(),
        "daemonset/kube-proxy absent, configmap/kube-proxy absent (in kube-system)"
    );
    let report = kube_proxy::remove(&client, found.confirm_removal())
        .await
        .expect("remove");
    assert_eq!(
        (report.daemonset, report.configmap),
        (Outcome::NotPresent, Outcome::NotPresent)
    );

    // The DaemonSet was removed by hand already; the ConfigMap vanishes before our DELETE (the
    // UID precondition on a missing object is a 404, not a conflict).
    create(&cms, kube_proxy_cm()).await;
    let found = kube_proxy::detect(&client).await.expect("detect");
    assert!(found.daemonset.is_none() && found.configmap.is_some());
    delete_now(&cms, "kube-proxy").await;
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
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

/// The `default` ServiceAccount the controller-manager would make (the ServiceAccount admission
/// plugin refuses pods without it).
async fn default_service_account(client: &Client, ns: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if api.get_opt("default").await.expect("get").is_none() {
        match api
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": "default", "namespace": ns}})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create serviceaccount {ns}/default: {e}"),
        }
    }
}

#[tokio::test]
async fn agents_are_listed_from_real_pods() {
    let _t = Timed::new("agents_are_listed_from_real_pods");
    let s = server!("agents_are_listed_from_real_pods");
    let _g = AGENTS.lock().await;
    let client = s.client().await;
    default_service_account(&client, KS).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), KS);
    for p in pods
        .list(&ListParams::default().labels(agents::AGENT_SELECTOR))
        .await
        .expect("list")
        .items
    {
        delete_now(&pods, p.metadata.name.as_deref().unwrap_or_default()).await;
    }
    let image = "quay.io/cilium/cilium:v1.14.19@sha256:9a1b";
    let agent = json!({"k8s-app": "cilium", "controller-revision-hash": "6d4f8b9c7"});
    for (name, node, ready, restarts) in [
        ("cilium-x7k2p", "w2", true, 0),
        ("cilium-4hq9d", "cp1", true, 1),
        ("cilium-m2vzs", "w1", false, 7),
    ] {
        create(&pods, agent_pod(KS, name, node, image, agent.clone())).await;
        patch_status(&pods, name, agent_status(ready, restarts, image)).await;
    }
    // Not agents: the operator (another label) in kube-system, and an agent-labelled pod in
    // another namespace.
    create(
        &pods,
        agent_pod(
            KS,
            "cilium-operator-5d8f6c7b9-abcde",
            "cp1",
            image,
            json!({"io.cilium/app": "operator"}),
        ),
    )
    .await;
    let other_ns = namespace(&client, "agents").await;
    default_service_account(&client, &other_ns).await;
    let other: Api<Pod> = Api::namespaced(client.clone(), &other_ns);
    create(
        &other,
        agent_pod(&other_ns, "cilium-zzzzz", "w9", image, agent.clone()),
    )
    .await;

    let listed = agents::list_agents(&client).await.expect("list");
    let summary: Vec<(&str, Option<&str>, bool, i32)> = listed
        .iter()
        .map(|a| (a.name.as_str(), a.node.as_deref(), a.ready, a.restarts))
        .collect();
    assert_eq!(
        summary,
        [
            ("cilium-4hq9d", Some("cp1"), true, 1),
            ("cilium-m2vzs", Some("w1"), false, 7),
            ("cilium-x7k2p", Some("w2"), true, 0)
        ]
    );
    assert_eq!(
        listed[1].waiting_reason.as_deref(),
        Some("CrashLoopBackOff")
    );
    assert_eq!(listed[1].agent_started, None);
    assert_eq!(listed[0].phase.as_deref(), Some("Running"));
    assert_eq!(listed[0].version, Some(Version::new(1, 14, 19)));
    assert_eq!(listed[0].image.as_deref(), Some(image));
    assert_eq!(
        agents::status_cli(listed[0].version),
        agents::StatusCli::Cilium
    );
    assert_eq!(
        listed[0].pod_started.map(|t| t.to_string()).as_deref(),
        Some("2026-08-11T06:58:41Z")
    );
    assert_eq!(
        listed[0].agent_started.map(|t| t.to_string()).as_deref(),
        Some("2026-08-11T06:59:12Z")
    );

    // A pod bound to a node is deleted gracefully: without a kubelet to confirm it stays
    // (terminating) and is still listed; with grace period 0 it goes at once.
    pods.delete("cilium-x7k2p", &DeleteParams::default())
        .await
        .expect("delete");
    let listed = agents::list_agents(&client).await.expect("list");
    assert_eq!(listed.len(), 3, "terminating agents are still listed");
    for name in [
        "cilium-x7k2p",
        "cilium-4hq9d",
        "cilium-m2vzs",
        "cilium-operator-5d8f6c7b9-abcde",
    ] {
        delete_now(&pods, name).await;
    }
    assert!(agents::list_agents(&client).await.expect("list").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Helm 3 and Helm 4
// ---------------------------------------------------------------------------------------------

const CHART_VERSION: Version = Version::new(0, 1, 0);

fn chart_dir() -> PathBuf {
    common::repo().join("tests/data/charts/kubedrill-probe-chart")
}

fn probe_chart() -> Chart {
    Chart::archive(chart_dir().display().to_string(), CHART_VERSION).expect("chart")
}

/// A Helm run's result.
struct HelmRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Helm with its own HOME, cache, config and data directories (nothing of the machine's).
struct HelmEnv {
    dir: tempfile::TempDir,
}

impl HelmEnv {
    fn new() -> Self {
        HelmEnv {
            dir: tempfile::Builder::new()
                .prefix("kubedrill-helm-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// A values file in this environment.
    fn values(&self, name: &str, v: &Value) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).expect("json")).expect("write");
        p.display().to_string()
    }

    /// Run an argv (program first), bounded by [`STEP`]; on timeout helm is killed by PID.
    fn run_argv(&self, argv: &[String]) -> HelmRun {
        let home = self.dir.path();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
        let (mut out, mut err) = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let o = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let e = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                // Ours, by PID.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (o.join().unwrap_or_default(), e.join().unwrap_or_default());
        let Some(status) = status else {
            panic!(
                "`{}` did not finish within {}s; stderr:\n{stderr}",
                argv.join(" "),
                STEP.as_secs()
            );
        };
        HelmRun {
            ok: status.success(),
            stdout,
            stderr,
        }
    }

    /// Run a kubedrill-built command; it must succeed.
    fn run(&self, cmd: &HelmCommand) -> String {
        let r = self.run_argv(cmd.argv());
        assert!(r.ok, "`{cmd}` failed:\n{}\n{}", r.stderr, r.stdout);
        r.stdout
    }
}

/// The user-supplied values of revision 1 and 2.
fn values_1() -> Value {
    json!({"greeting": "hello from revision 1", "mode": "one"})
}

fn values_2() -> Value {
    json!({"greeting": "hello from revision 2", "mode": "two", "replicas": 2})
}

/// Remove the release `kube-system/cilium` (Helm's release Secrets) and the chart's objects an
/// earlier test left (Helm tests hold [`HELM_RELEASE`]).
async fn no_release(client: &Client) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), KS);
    for s in secrets
        .list(&ListParams::default().labels("owner=helm,name=cilium"))
        .await
        .expect("list")
        .items
    {
        delete_now(&secrets, s.metadata.name.as_deref().unwrap_or_default()).await;
    }
    delete_now(
        &Api::<ConfigMap>::namespaced(client.clone(), KS),
        "kubedrill-probe",
    )
    .await;
    delete_now(
        &Api::<Deployment>::namespaced(client.clone(), KS),
        "kubedrill-probe",
    )
    .await;
}

/// What the chart's objects say: (greeting, mode, rendered in revision, replicas).
async fn probe(client: &Client) -> (String, String, String, i32) {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), KS)
        .get("kubedrill-probe")
        .await
        .expect("configmap kubedrill-probe");
    let data = cm.data.unwrap_or_default();
    let d = Api::<Deployment>::namespaced(client.clone(), KS)
        .get("kubedrill-probe")
        .await
        .expect("deployment kubedrill-probe");
    let field = |k: &str| data.get(k).cloned().unwrap_or_default();
    assert_eq!(field("chart"), "kubedrill-probe-chart-0.1.0");
    (
        field("greeting"),
        field("mode"),
        field("release-revision"),
        d.spec.and_then(|s| s.replicas).unwrap_or_default(),
    )
}

fn expect_probe(
    greeting: &str,
    mode: &str,
    rendered_in: &str,
    replicas: i32,
) -> (String, String, String, i32) {
    (
        greeting.to_owned(),
        mode.to_owned(),
        rendered_in.to_owned(),
        replicas,
    )
}

/// How the probe ConfigMap was last written: (field manager, operation) of its managed fields.
async fn probe_writers(client: &Client) -> Vec<(String, String)> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), KS)
        .get("kubedrill-probe")
        .await
        .expect("configmap kubedrill-probe");
    cm.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect()
}

fn helm_with(bin: &Path, s: &ApiServer) -> Helm {
    Helm::new(
        bin.display().to_string(),
        Some(s.kubeconfig.display().to_string()),
    )
}

/// The install kubedrill's apply runs (`cilium/install` in src/apply/cluster.rs writes it as a
/// shell line, not with a builder): `helm upgrade --install cilium CHART --version V
/// --namespace kube-system --values FILE --kubeconfig FILE`.
fn upgrade_install_argv(bin: &Path, values: &str, kubeconfig: &Path) -> Vec<String> {
    [
        bin.display().to_string(),
        "upgrade".into(),
        "--install".into(),
        helm::RELEASE.into(),
        chart_dir().display().to_string(),
        "--version".into(),
        CHART_VERSION.to_string(),
        "--namespace".into(),
        KS.into(),
        "--values".into(),
        values.into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ]
    .into()
}

/// (revision, status, description) of each revision, checking the chart version parsed.
fn history_rows(h: &helm::History) -> Vec<(u32, ReleaseStatus, String)> {
    for r in &h.0 {
        assert_eq!(r.chart, "kubedrill-probe-chart-0.1.0");
        assert_eq!(r.chart_version, Some(CHART_VERSION), "{r:?}");
        assert_eq!(r.app_version, "1.0.0");
    }
    h.0.iter()
        .map(|r| (r.revision, r.status.clone(), r.description.clone()))
        .collect()
}

fn row(rev: u32, st: ReleaseStatus, desc: &str) -> (u32, ReleaseStatus, String) {
    (rev, st, desc.to_owned())
}

/// Install (`upgrade --install`), upgrade with other values, history, get values, rollback to
/// 1, `--reuse-values`, status and uninstall, all with one Helm, through kubedrill's argv.
/// `apply`: how this Helm writes a new release's objects ("Update": client-side apply, Helm 3;
/// "Apply": server-side apply, Helm 4's default for new releases).
async fn helm_lifecycle(s: &ApiServer, bin: &Path, apply: &str) {
    let client = s.client().await;
    no_release(&client).await;
    let env = HelmEnv::new();
    let helm = helm_with(bin, s);
    let chart = probe_chart();
    let (f1, f2) = (
        env.values("values-1.yaml", &values_1()),
        env.values("values-2.yaml", &values_2()),
    );

    let r = env.run_argv(&upgrade_install_argv(bin, &f1, &s.kubeconfig));
    assert!(r.ok, "upgrade --install failed:\n{}", r.stderr);
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 1", "one", "1", 1)
    );
    assert_eq!(
        probe_writers(&client).await,
        [("helm".to_owned(), apply.to_owned())]
    );
    let status_json = env.run(&helm.status(Release::Cilium));
    let st = helm::parse_status(&status_json).expect("status");
    assert_eq!(
        (
            st.name.as_str(),
            st.namespace.as_str(),
            st.revision,
            &st.status
        ),
        ("cilium", KS, 1, &ReleaseStatus::Deployed)
    );
    // Helm 3.17 and 4.1 leave the chart out of `helm status -o json`: the chart version is
    // only in `helm history` (see `ReleaseInfo::chart_version`).
    assert_eq!(st.chart_version, None, "{status_json}");
    assert_eq!(st.description, "Install complete");
    // What apply's idempotence check greps for (src/apply/cluster.rs, `cilium/install`).
    assert!(
        status_json.contains("\"status\":\"deployed\""),
        "{status_json}"
    );
    let list = env.run_argv(&[
        bin.display().to_string(),
        "list".into(),
        "-n".into(),
        KS.into(),
        "--kubeconfig".into(),
        s.kubeconfig.display().to_string(),
        "-o".into(),
        "json".into(),
    ]);
    assert!(list.ok, "{}", list.stderr);
    assert!(
        list.stdout
            .contains("\"chart\":\"kubedrill-probe-chart-0.1.0\""),
        "{}",
        list.stdout
    );
    let values = helm::parse_values(&env.run(&helm.get_values(false))).expect("values");
    assert_eq!(values, values_1());

    let up = helm
        .upgrade(&chart, CHART_VERSION, &helm::UpgradeValues::File(f2))
        .expect("same chart version");
    env.run(&up);
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 2", "two", "2", 2)
    );
    let h = helm::parse_history(&env.run(&helm.history())).expect("history");
    assert_eq!(
        history_rows(&h),
        [
            row(1, ReleaseStatus::Superseded, "Install complete"),
            row(2, ReleaseStatus::Deployed, "Upgrade complete"),
        ]
    );
    assert_eq!(h.deployed().map(|r| r.revision), Some(2));
    assert_eq!(h.rollback_target().map(|r| r.revision), Some(1));
    assert_eq!(
        helm::parse_values(&env.run(&helm.get_values(false))).expect("values"),
        values_2()
    );

    env.run(&helm.rollback(1).expect("revision 1"));
    // Revision 1's manifest is applied again (rendered in revision 1).
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 1", "one", "1", 1)
    );
    let h = helm::parse_history(&env.run(&helm.history())).expect("history");
    assert_eq!(
        history_rows(&h),
        [
            row(1, ReleaseStatus::Superseded, "Install complete"),
            row(2, ReleaseStatus::Superseded, "Upgrade complete"),
            row(3, ReleaseStatus::Deployed, "Rollback to 1"),
        ]
    );
    assert_eq!(
        helm::parse_values(&env.run(&helm.get_values(false))).expect("values"),
        values_1()
    );

    // Between patches kubedrill may reuse the deployed values with overrides on top.
    let f3 = env.values("override.yaml", &json!({"mode": "patched"}));
    let reuse = helm
        .upgrade(&chart, CHART_VERSION, &helm::UpgradeValues::ReuseWith(f3))
        .expect("same minor");
    env.run(&reuse);
    assert_eq!(
        helm::parse_values(&env.run(&helm.get_values(false))).expect("values"),
        json!({"greeting": "hello from revision 1", "mode": "patched"})
    );
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 1", "patched", "4", 1)
    );
    let all = helm::parse_values(&env.run(&helm.get_values(true))).expect("values");
    assert_eq!(all["image"], "registry.k8s.io/pause:3.10", "{all}");
    assert_eq!(all["replicas"], 1, "{all}");

    env.run(&helm.uninstall(Release::Cilium));
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), KS)
            .get_opt("kubedrill-probe")
            .await
            .expect("get")
            .is_none()
    );
    let gone = env.run_argv(helm.status(Release::Cilium).argv());
    assert!(
        !gone.ok,
        "status of an uninstalled release: {}",
        gone.stdout
    );
    assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
}

#[tokio::test]
async fn helm3_lifecycle_with_kubedrills_command_lines() {
    let _t = Timed::new("helm3_lifecycle_with_kubedrills_command_lines");
    let s = server!("helm3_lifecycle_with_kubedrills_command_lines", Also::Helm3);
    let _g = HELM_RELEASE.lock().await;
    let bin = apiserver::helm3_bin().expect("helm 3");
    helm_lifecycle(s, &bin, "Update").await;
}

#[tokio::test]
async fn helm4_lifecycle_with_kubedrills_command_lines() {
    let _t = Timed::new("helm4_lifecycle_with_kubedrills_command_lines");
    let s = server!("helm4_lifecycle_with_kubedrills_command_lines", Also::Helm4);
    let _g = HELM_RELEASE.lock().await;
    let bin = apiserver::helm4_bin().expect("helm 4");
    helm_lifecycle(s, &bin, "Apply").await;
}

/// A release installed with Helm 3 (client-side apply) is upgraded and rolled back with Helm 4
/// (server-side apply by default), and Helm 3 still reads what Helm 4 recorded.
#[tokio::test]
async fn helm3_release_upgraded_and_rolled_back_with_helm4() {
    let _t = Timed::new("helm3_release_upgraded_and_rolled_back_with_helm4");
    let s = server!(
        "helm3_release_upgraded_and_rolled_back_with_helm4",
        Also::Helm3,
        Also::Helm4
    );
    let _g = HELM_RELEASE.lock().await;
    let client = s.client().await;
    no_release(&client).await;
    let env = HelmEnv::new();
    let h3 = helm_with(&apiserver::helm3_bin().expect("helm 3"), s);
    let h4 = helm_with(&apiserver::helm4_bin().expect("helm 4"), s);
    let chart = probe_chart();
    let (f1, f2) = (
        env.values("values-1.yaml", &values_1()),
        env.values("values-2.yaml", &values_2()),
    );

    env.run(&h3.install(&chart, &f1));
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 1", "one", "1", 1)
    );
    let csa = [("helm".to_owned(), "Update".to_owned())];
    assert_eq!(
        probe_writers(&client).await,
        csa,
        "Helm 3: client-side apply"
    );
    let h = helm::parse_history(&env.run(&h4.history())).expect("Helm 4 reads Helm 3's release");
    assert_eq!(
        history_rows(&h),
        [row(1, ReleaseStatus::Deployed, "Install complete")]
    );

    let up = h4
        .upgrade(
            &chart,
            CHART_VERSION,
            &helm::UpgradeValues::File(f2.clone()),
        )
        .expect("same chart version");
    env.run(&up);
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 2", "two", "2", 2)
    );
    // Helm 4's default `--server-side=auto` keeps the release's method: client-side apply.
    assert_eq!(probe_writers(&client).await, csa);
    let h = helm::parse_history(&env.run(&h4.history())).expect("history");
    assert_eq!(
        history_rows(&h),
        [
            row(1, ReleaseStatus::Superseded, "Install complete"),
            row(2, ReleaseStatus::Deployed, "Upgrade complete"),
        ]
    );
    assert_eq!(
        helm::parse_values(&env.run(&h4.get_values(false))).expect("values"),
        values_2()
    );

    env.run(&h4.rollback(1).expect("revision 1"));
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 1", "one", "1", 1)
    );
    assert_eq!(
        helm::parse_values(&env.run(&h4.get_values(false))).expect("values"),
        values_1()
    );
    // Helm 3 reads the history Helm 4 wrote.
    let h = helm::parse_history(&env.run(&h3.history())).expect("Helm 3 reads Helm 4's records");
    assert_eq!(
        history_rows(&h),
        [
            row(1, ReleaseStatus::Superseded, "Install complete"),
            row(2, ReleaseStatus::Superseded, "Upgrade complete"),
            row(3, ReleaseStatus::Deployed, "Rollback to 1"),
        ]
    );
    assert_eq!(h.deployed().map(|r| r.revision), Some(3));

    // Server-side apply forced onto the Helm 3 release (`--server-side=true` after kubedrill's
    // argv) takes over the client-side-applied fields, and a Helm 4 rollback still works.
    let mut argv = h4
        .upgrade(&chart, CHART_VERSION, &helm::UpgradeValues::File(f2))
        .expect("same chart version")
        .argv()
        .to_vec();
    argv.push("--server-side=true".into());
    let r = env.run_argv(&argv);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 2", "two", "4", 2)
    );
    assert!(
        probe_writers(&client)
            .await
            .contains(&("helm".to_owned(), "Apply".to_owned()))
    );
    env.run(&h4.rollback(3).expect("revision 3"));
    assert_eq!(
        probe(&client).await,
        expect_probe("hello from revision 1", "one", "1", 1)
    );
    let h = helm::parse_history(&env.run(&h3.history())).expect("history");
    assert_eq!(
        h.deployed().map(|r| (r.revision, r.description.as_str())),
        Some((5, "Rollback to 3"))
    );
    no_release(&client).await;
}
