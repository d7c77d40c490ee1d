//! `drill run` from start to report without VMs: scripted nodes (`host::Host` implementations
//! that answer what a node is asked — Helm, kubeadm, kubectl, the probe agent's detached runs,
//! `crictl`, the agent's `/proc` — as a real node would) and an in-memory API server
//! (`common::fake_api`) playing the cluster. A Cilium drill (go; no-go on too much loss) and a
//! Kubernetes drill (go; no-go when kubeadm brings kube-proxy back).

use crate::common;
use crate::drill_run::{
    Agent, agent, drill_input, node, phase_outcomes, preflight_ds, preflight_validator,
};
use kubedrill::drill::engine;
use kubedrill::drill::probes;
use kubedrill::report::record::{Outcome, ProbeKind};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fake_api::{ApiHandle, FakeApi, Key};
use kubedrill::host::{Host, SharedHost};
use kubedrill::ssh::{Command as SshCommand, Output as SshOutput, SshError};

/// What the scripted nodes share: Helm's release history and which agents were replaced.
#[derive(Default)]
struct ClusterSide {
    /// (revision, chart version, status).
    revisions: Vec<(u32, String, &'static str)>,
    /// Nodes whose agent runs the new version (their sampled process changed).
    upgraded: BTreeSet<String>,
    /// Commands no rule answered (the test fails on any).
    unanswered: Vec<String>,
    preflight_installed: bool,
    /// Nodes with the target Kubernetes staged.
    staged: BTreeSet<String>,
    /// Nodes whose iptables hold kube-proxy's service chains.
    kube_proxy_chains: BTreeSet<String>,
    /// `kubeadm upgrade …` and `kubectl drain/uncordon` as run, in order (`node: what`).
    kubernetes_steps: Vec<String>,
    /// Nodes whose agent a `kill-agent` fault killed, in order.
    killed: Vec<String>,
}

/// A node answering what `drill run` asks of it as a real node would: Helm on the control plane
/// (changing the fake API as the release changes), the probe agent's detached runs (held until
/// stopped, then their events), `crictl`, the agent's `/proc`.
struct ScriptedNode {
    name: String,
    api: ApiHandle,
    side: Arc<Mutex<ClusterSide>>,
    stops: Mutex<BTreeMap<String, Arc<tokio::sync::Notify>>>,
    started_ms: i64,
    /// Probes the new-connection pod→pod TCP probe loses, in one window.
    pod_tcp_lost: u64,
    /// `kubeadm upgrade apply` brings kube-proxy back (kubernetes/kubeadm#1318).
    kube_proxy_returns: bool,
    /// The first `kubeadm upgrade apply` fails on an API server that did not answer.
    kubeadm_flaky: bool,
}

use kubedrill::host::fake::output as out;

fn unix_ms() -> i64 {
    kubedrill::drill::record::now().unix_ms()
}

const DRILL_NODES: [(&str, &str); 2] = [("cp1", "192.168.151.11"), ("w1", "192.168.151.12")];

fn agent_name(node: &str, version: &str) -> String {
    format!("cilium-{node}-{}", version.replace('.', ""))
}

fn cilium_ds(generation: i64, observed: i64, updated: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cilium", "namespace": "kube-system", "generation": generation},
        "spec": {"selector": {"matchLabels": {"k8s-app": "cilium"}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
                 "template": {"metadata": {"labels": {"k8s-app": "cilium"}},
                              "spec": {"containers": [{"name": "cilium-agent", "image": "quay.io/cilium/cilium"}]}}},
        "status": {"currentNumberScheduled": 2, "desiredNumberScheduled": 2, "numberMisscheduled": 0,
                   "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": updated,
                   "observedGeneration": observed}
    })
}

/// A node as the API shows it, with its kubelet's version.
fn node_at(name: &str, ip: &str, kubelet: &str) -> Value {
    let mut n = node(name, ip, name == "cp1");
    n["status"]["nodeInfo"] = json!({
        "machineID": format!("m-{name}"), "systemUUID": format!("u-{name}"), "bootID": format!("b-{name}"),
        "kernelVersion": "6.1.0-40-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
        "containerRuntimeVersion": "containerd://1.6.20", "kubeletVersion": kubelet,
        "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"});
    n
}

fn kube_proxy_ds() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "generation": 1,
                     "labels": {"k8s-app": "kube-proxy"}},
        "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                 "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}},
                              "spec": {"containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.35.4"}]}}},
        "status": {"currentNumberScheduled": 2, "desiredNumberScheduled": 2, "numberMisscheduled": 0,
                   "numberReady": 2, "observedGeneration": 1}
    })
}

impl ScriptedNode {
    fn stop_of(&self, tag: &str) -> Arc<tokio::sync::Notify> {
        self.stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tag.to_owned())
            .or_default()
            .clone()
    }

    fn side(&self) -> std::sync::MutexGuard<'_, ClusterSide> {
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn history(&self) -> String {
        let revs: Vec<Value> = self
            .side()
            .revisions
            .iter()
            .map(|(r, v, st)| {
                json!({"revision": r, "updated": "2026-12-07T05:00:00Z", "status": st,
                       "chart": format!("cilium-{v}"), "app_version": v, "description": "Upgrade complete"})
            })
            .collect();
        Value::Array(revs).to_string()
    }

    /// `helm upgrade`: a new revision, then the DaemonSet controller and the kubelets at work —
    /// each node's agent pod deleted and replaced by a new one that starts and becomes Ready.
    fn upgrade(&self, to: &str) {
        {
            let mut side = self.side();
            for r in side.revisions.iter_mut() {
                r.2 = "superseded";
            }
            let next = side.revisions.len() as u32 + 1;
            side.revisions.push((next, to.to_owned(), "deployed"));
        }
        let ds = Key::new("/apis/apps/v1", Some("kube-system"), "daemonsets", "cilium");
        self.api.with(|s| s.put(ds.clone(), cilium_ds(2, 1, 0, 2)));
        let (api, side, to) = (self.api.clone(), self.side.clone(), to.to_owned());
        tokio::spawn(async move {
            for (i, (node, _)) in DRILL_NODES.iter().enumerate() {
                let pods = |name: &str| Key::new("/api/v1", Some("kube-system"), "pods", name);
                api.with(|s| s.remove(&pods(&agent_name(node, "1.19.7"))));
                tokio::time::sleep(Duration::from_millis(200)).await;
                let new = agent_name(node, &to);
                api.with(|s| s.put(pods(&new), agent(&new, node, &to, Agent::Initializing)));
                tokio::time::sleep(Duration::from_millis(200)).await;
                api.with(|s| s.put(pods(&new), agent(&new, node, &to, Agent::Ready)));
                side.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .upgraded
                    .insert((*node).to_owned());
                let n = i as i32 + 1;
                api.with(|s| s.put(ds.clone(), cilium_ds(2, 2, n, 2)));
            }
        });
    }

    fn preflight(&self, installed: bool) {
        self.side().preflight_installed = installed;
        let ds = Key::new(
            "/apis/apps/v1",
            Some("kube-system"),
            "daemonsets",
            "cilium-pre-flight-check",
        );
        let dep = Key::new(
            "/apis/apps/v1",
            Some("kube-system"),
            "deployments",
            "cilium-pre-flight-check",
        );
        self.api.with(|s| {
            if installed {
                s.put(ds, preflight_ds(2, 2));
                s.put(dep, preflight_validator(1));
            } else {
                s.remove(&ds);
                s.remove(&dep);
            }
        });
    }

    /// `kill -KILL` of this node's agent: the kubelet restarts its container (the pod's
    /// `restartCount` goes up, the pod stays).
    fn kill_agent(&self) {
        let version = if self.side().upgraded.contains(&self.name) {
            "1.20.2"
        } else {
            "1.19.7"
        };
        let key = Key::new(
            "/api/v1",
            Some("kube-system"),
            "pods",
            &agent_name(&self.name, version),
        );
        self.api.with(|s| {
            let mut pod = s.get(&key).expect("the node's agent pod").clone();
            let n = pod["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0);
            pod["status"]["containerStatuses"][0]["restartCount"] = json!(n + 1);
            s.put(key.clone(), pod);
        });
        self.side().killed.push(self.name.clone());
    }

    /// The agent's `/proc` as the sampling script prints it: a new process after the upgrade.
    fn agent_proc(&self) -> String {
        let upgraded = self.side().upgraded.contains(&self.name);
        let (pid, start) = if upgraded {
            (5151, 990_000)
        } else {
            (4242, 10_000)
        };
        let up_s = 10_000.0 + (unix_ms() - self.started_ms) as f64 / 1000.0;
        let ticks = (up_s * 100.0) as u64 - start / 2;
        format!(
            "clk_tck 100\nuptime {up_s:.2} 1000.00\n--- stat\n{pid} (cilium-agent) S 1 {pid} {pid} 0 -1 4194560 5000 0 0 0 {} {} 0 0 20 0 40 0 {start} 1500000000 45000 18446744073709551615\n--- status\nName:\tcilium-agent\nVmRSS:\t  {} kB\n",
            ticks / 10,
            ticks / 20,
            180 * 1024 + if upgraded { 2048 } else { 0 }
        )
    }

    /// The Kubernetes upgrade's commands, answered as kubeadm, the kubelet and kubectl would,
    /// with the API changed to match (`None`: not one of them).
    fn kubernetes(&self, label: &str) -> Option<SshOutput> {
        let node_key = |n: &str| Key::new("/api/v1", None, "nodes", n);
        let ip = |n: &str| {
            DRILL_NODES
                .iter()
                .find(|(name, _)| *name == n)
                .map_or("", |(_, ip)| *ip)
        };
        let me = self.name.clone();
        let step = |what: &str| self.side().kubernetes_steps.push(format!("{me}: {what}"));
        if label == "kubernetes/stage check" {
            return Some(if self.side().staged.contains(&me) {
                out(0, "", "")
            } else {
                out(1, "kubeadm 1.35.4 not staged\n", "")
            });
        }
        if label.starts_with("stage kubeadm/kubelet/kubectl 1.35.4") {
            self.side().staged.insert(me);
            return Some(out(0, "", ""));
        }
        if label == "kubeadm upgrade plan v1.35.4" {
            step("kubeadm upgrade plan");
            return Some(out(
                0,
                "== kubeadm upgrade plan\n[upgrade/versions] Target version: v1.35.4\n",
                "",
            ));
        }
        if label == "kubeadm upgrade apply v1.35.4" {
            step("kubeadm upgrade apply");
            if self.kubeadm_flaky
                && self
                    .side()
                    .kubernetes_steps
                    .iter()
                    .filter(|s| s.ends_with("kubeadm upgrade apply"))
                    .count()
                    == 1
            {
                // As the lab's first Kubernetes drill saw it, cp1 at load 23.
                return Some(out(
                    1,
                    "== kubeadm upgrade apply\n[upgrade] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace \"kube-system\"...\nerror: [upgrade] FATAL: failed to get config map: Get \"https://10.234.0.11:6443/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s\": net/http: TLS handshake timeout (Client.Timeout exceeded while awaiting headers)\n",
                    "",
                ));
            }
            if self.kube_proxy_returns {
                let (ds, cm) = (
                    Key::new(
                        "/apis/apps/v1",
                        Some("kube-system"),
                        "daemonsets",
                        "kube-proxy",
                    ),
                    Key::new("/api/v1", Some("kube-system"), "configmaps", "kube-proxy"),
                );
                self.api.with(|s| {
                    s.put(ds, kube_proxy_ds());
                    s.put(
                        cm,
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {},
                                     "data": {"config.conf": "mode: iptables\n"}}),
                    );
                });
                let mut side = self.side();
                for (n, _) in DRILL_NODES {
                    side.kube_proxy_chains.insert(n.to_owned());
                }
            }
            return Some(out(
                0,
                "[upgrade] SUCCESS! A control plane node of your cluster was upgraded to \"v1.35.4\".\n",
                "",
            ));
        }
        if label == "kubeadm upgrade node" {
            step("kubeadm upgrade node");
            return Some(out(
                0,
                "[upgrade] The upgrade for this node was successfully completed!\n",
                "",
            ));
        }
        for (verb, cordoned) in [("kubectl drain ", true), ("kubectl uncordon ", false)] {
            if let Some(n) = label.strip_prefix(verb) {
                let what = format!("{}{n}", verb.trim_start_matches("kubectl "));
                let again = self
                    .side()
                    .kubernetes_steps
                    .contains(&format!("{me}: {what}"));
                step(&what);
                if self.kubeadm_flaky && what == "uncordon cp1" && !again {
                    return Some(out(
                        1,
                        "Unable to connect to the server: net/http: TLS handshake timeout\n",
                        "",
                    ));
                }
                let key = node_key(n);
                self.api.with(|s| {
                    if let Some(mut v) = s.get(&key).cloned() {
                        v["spec"]["unschedulable"] = json!(cordoned);
                        s.put(key, v);
                    }
                });
                return Some(out(0, &format!("node/{n} {}\n", verb.trim()), ""));
            }
        }
        if label == "kubelet and kubectl 1.35.4 installed; kubelet restarted" {
            step("kubelet 1.35.4");
            if self.kubeadm_flaky && me == "cp1" {
                // Its static pods restart with the new kubelet, the API server among them (the
                // lab's seventh Kubernetes drill: the wait for cp1 failed at once on it).
                self.api.with(|s| s.refuse_reads("nodes", 2));
            }
            let key = node_key(&me);
            let mut v = node_at(&me, ip(&me), "v1.35.4");
            self.api.with(|s| {
                if let Some(old) = s.get(&key) {
                    v["spec"]["unschedulable"] = old["spec"]["unschedulable"].clone();
                }
                s.put(key, v);
            });
            return Some(out(0, "", ""));
        }
        if label == "iptables-save | grep KUBE-SERVICES/SVC/SEP/NODEPORTS" {
            let has = self.side().kube_proxy_chains.contains(&me);
            return Some(out(
                0,
                if has {
                    ":KUBE-NODEPORTS\n:KUBE-SERVICES\n:KUBE-SVC-TCOU7JCQXEZGVUNU\n"
                } else {
                    ""
                },
                "",
            ));
        }
        if label == "iptables-save | grep -v KUBE | iptables-restore" {
            self.side().kube_proxy_chains.remove(&me);
            return Some(out(0, "", ""));
        }
        None
    }

    /// A prober's events when stopped: each probe answered, one short window for pod TCP.
    fn prober_events(&self, spec: &[u8]) -> String {
        let specs: Vec<probes::ProbeSpec> = serde_json::from_slice(spec).unwrap_or_default();
        let (t0, t1) = (self.started_ms as u64, unix_ms() as u64);
        let mut lines = Vec::new();
        for p in specs {
            let sent = (t1.saturating_sub(t0) * u64::from(p.rate_per_s) / 1000).max(10);
            let (lost, windows, longest) = if p.id == "tcp-pod" && self.pod_tcp_lost > 0 {
                let lost = self.pod_tcp_lost;
                let ms = lost * 1000 / u64::from(p.rate_per_s.max(1));
                lines.push(
                    json!({"event": "loss", "probe": p.id, "kind": p.kind, "target": p.target,
                    "start_ms": t1 - 900, "end_ms": t1 - 900 + ms, "duration_ms": ms, "lost": lost,
                    "open": false, "reason": "timeout", "interval_ms": 50})
                    .to_string(),
                );
                (lost, 1, ms)
            } else {
                (0, 0, 0)
            };
            let mut summary = json!({"event": "summary", "ts_ms": t1, "probe": p.id, "kind": p.kind,
                "target": p.target, "start_ms": t0, "end_ms": t1, "sent": sent, "ok": sent - lost,
                "lost": lost, "skipped": 0, "windows": windows, "loss_ms": longest,
                "longest_window_ms": longest});
            if p.tcp_mode.is_some() {
                summary["connections"] = json!({"opened": 1, "broken": 0});
            }
            lines.push(summary.to_string());
        }
        lines.join("\n") + "\n"
    }
}

/// The tag in `label (TAG)`.
fn tag_of(label: &str) -> String {
    label
        .rsplit_once('(')
        .map(|(_, t)| t.trim_end_matches(')').to_owned())
        .unwrap_or_default()
}

const CONFIG_BEFORE: &str = "---\n# Source: cilium/templates/cilium-configmap.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cilium-config\n  namespace: kube-system\ndata:\n  kube-proxy-replacement: \"true\"\n  bpf-lb-mode: \"dsr\"\n  bpf-lb-algorithm: \"maglev\"\n  routing-mode: \"native\"\n  enable-l2-neigh-discovery: \"true\"\n";
const CONFIG_AFTER: &str = "---\n# Source: cilium/templates/cilium-configmap.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cilium-config\n  namespace: kube-system\ndata:\n  kube-proxy-replacement: \"true\"\n  bpf-lb-mode: \"dsr\"\n  bpf-lb-algorithm: \"maglev\"\n  routing-mode: \"native\"\n  enable-l2-neigh-discovery: \"false\"\n";

#[async_trait::async_trait]
impl Host for ScriptedNode {
    fn name(&self) -> &str {
        &self.name
    }

    async fn exec(&self, cmd: &SshCommand) -> Result<SshOutput, SshError> {
        let label = cmd.label_text();
        let script = cmd.script().to_string();
        let has = |s: &str| script.contains(s);
        if label.starts_with("kubedrill-probe run (")
            || label.starts_with("kubedrill-probe serve (")
        {
            let stopped = self.stop_of(&tag_of(&label));
            stopped.notified().await;
            return Ok(if label.contains(" run (") {
                out(
                    0,
                    &self.prober_events(cmd.stdin_data().unwrap_or_default()),
                    "",
                )
            } else {
                out(0, "", "")
            });
        }
        if label.starts_with("stop kubedrill-probe (") {
            self.stop_of(&tag_of(&label)).notify_one();
            return Ok(out(0, "", ""));
        }
        if label.starts_with("read kubedrill-probe events (") {
            // A responder listens once started, as the agent says in its events.
            let tag = tag_of(&label);
            let serving = tag.ends_with("-serve")
                && self
                    .stops
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&tag);
            return Ok(out(
                0,
                if serving {
                    "{\"event\":\"listening\",\"ts_ms\":1,\"tcp\":[\"0.0.0.0:7001\"],\"udp\":[\"0.0.0.0:7002\"]}\n"
                } else {
                    ""
                },
                "",
            ));
        }
        if let Some(r) = self.kubernetes(&label) {
            return Ok(r);
        }
        let r = if has("helm history cilium") {
            out(0, &self.history(), "")
        } else if has("helm get values cilium") {
            out(
                0,
                "kubeProxyReplacement: true\nroutingMode: native\nipv4NativeRoutingCIDR: 10.233.64.0/18\nautoDirectNodeRoutes: true\nloadBalancer:\n  mode: dsr\n  algorithm: maglev\n  acceleration: best-effort\nmaglev:\n  tableSize: 16381\nbpf:\n  masquerade: true\n",
                "",
            )
        } else if has("helm get manifest cilium") {
            out(0, CONFIG_BEFORE, "")
        } else if has("helm template cilium") {
            out(0, CONFIG_AFTER, "")
        } else if has("helm status cilium-preflight") {
            if self.side().preflight_installed {
                out(0, "{\"info\":{\"status\":\"deployed\"}}", "")
            } else {
                out(1, "", "Error: release: not found")
            }
        } else if has("helm install cilium-preflight") {
            self.preflight(true);
            out(0, "", "")
        } else if has("helm uninstall cilium-preflight") {
            self.preflight(false);
            out(0, "release \"cilium-preflight\" uninstalled\n", "")
        } else if has("helm upgrade cilium") {
            self.upgrade("1.20.2");
            out(0, "Release \"cilium\" has been upgraded.\n", "")
        } else if has("helm repo add cilium")
            || has("mkdir -p")
            || has("rm -f /etc/kubernetes/kubedrill/")
        {
            out(0, "", "")
        } else if has("test -f") && has("cilium-1.20.2.tgz") {
            out(1, "", "")
        } else if has("sha256sum") {
            out(0, "", "")
        } else if has("crictl pods") && has("crictl inspectp") {
            out(
                0,
                "{\"status\": {\"id\": \"a1\"}, \"info\": {\"pid\": 31337}}",
                "",
            )
        } else if has("kill -KILL $pids") {
            self.kill_agent();
            out(0, "killed cilium-agent 4242\n", "")
        } else if has("pidof -s cilium-agent") {
            out(0, &self.agent_proc(), "")
        } else if label.contains("facts") || has("uname") {
            // Facts are not this test's subject: the drill then expects the inventory's intent.
            out(1, "", "no facts here")
        } else {
            self.side()
                .unanswered
                .push(format!("{}: {label}", self.name));
            out(0, "", "")
        };
        Ok(r)
    }

    async fn upload(
        &self,
        _data: &[u8],
        _path: &str,
        _mode: u32,
        _privileged: bool,
    ) -> Result<SshOutput, SshError> {
        Ok(out(0, "", ""))
    }
}

/// What a running cluster at Cilium 1.19.7 holds, and the kubelet's and controllers' part:
/// pods that start, Services that get addresses, agents that answer `cilium-dbg status`.
async fn cluster_at_1_19_7() -> FakeApi {
    let api = FakeApi::start().await;
    api.with(|s| {
        for ns in ["default", "kube-system"] {
            s.put(
                Key::new("/api/v1", None, "namespaces", ns),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}, "status": {"phase": "Active"}}),
            );
        }
        for (name, ip) in DRILL_NODES {
            s.put(
                Key::new("/api/v1", None, "nodes", name),
                node_at(name, ip, "v1.34.4"),
            );
            let pod = agent_name(name, "1.19.7");
            s.put(
                Key::new("/api/v1", Some("kube-system"), "pods", &pod),
                agent(&pod, name, "1.19.7", Agent::Ready),
            );
        }
        s.put(
            Key::new("/apis/apps/v1", Some("kube-system"), "daemonsets", "cilium"),
            cilium_ds(1, 1, 2, 2),
        );
    });
    let mut next_ip = 20;
    api.on_create(move |key, obj| match key.plural.as_str() {
        "namespaces" => obj["status"] = json!({"phase": "Active"}),
        "services" => {
            obj["spec"]["clusterIP"] = json!("10.233.0.50");
            if obj["spec"]["type"] == "NodePort"
                && let Some(ports) = obj["spec"]["ports"].as_array_mut()
            {
                for (i, p) in ports.iter_mut().enumerate() {
                    p["nodePort"] = json!(30080 + i);
                }
            }
        }
        "pods" => {
            let node = obj["spec"]["nodeName"]
                .as_str()
                .or_else(|| obj["spec"]["nodeSelector"]["kubernetes.io/hostname"].as_str())
                .unwrap_or("w1")
                .to_owned();
            next_ip += 1;
            let containers: Vec<Value> = obj["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true,
                                "restartCount": 0, "started": true,
                                "state": {"running": {"startedAt": "2026-12-07T05:00:01Z"}}}))
                .collect();
            obj["spec"]["nodeName"] = json!(node);
            obj["status"] = json!({
                "phase": "Running", "podIP": format!("10.233.64.{next_ip}"),
                "podIPs": [{"ip": format!("10.233.64.{next_ip}")}],
                "hostIP": if node == "cp1" { "192.168.151.11" } else { "192.168.151.12" },
                "startTime": "2026-12-07T05:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
                               {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": containers
            });
        }
        _ => {}
    });
    let sample = std::fs::read_to_string(
        common::repo().join("tests/data/cilium-status/1.19.7-lab-captured-worker-best-effort.txt"),
    )
    .expect("status sample");
    api.on_exec(move |store, ns, pod, argv| {
        let Some(p) = store.get(&Key::new("/api/v1", Some(ns), "pods", pod)) else {
            return Err(format!("pods \"{pod}\" not found"));
        };
        if argv.join(" ") != "cilium-dbg status --verbose" {
            return Err(format!("unexpected command {argv:?}"));
        }
        let image = p["spec"]["containers"][0]["image"].as_str().unwrap_or("");
        let version = image
            .split_once(":v")
            .map(|(_, t)| t.split('@').next().unwrap_or(t))
            .unwrap_or("1.19.7");
        Ok(sample.replace("1.19.7", version))
    });
    api
}

/// What a drill on scripted nodes left: its report and record, the API server, the nodes' side.
struct ScriptedRun {
    report: engine::DrillReport,
    rec: kubedrill::report::record::RunRecord,
    api: FakeApi,
    side: Arc<Mutex<ClusterSide>>,
    _runs: tempfile::TempDir,
}

/// `drill run` from start to report on scripted nodes and an API server in memory: Cilium
/// 1.19.7 → 1.20.2 with the pre-flight, the config drift, probes, the sampler, the rollout
/// node by node, verification from every agent's `cilium-dbg status`, soak, report.
/// How a scripted drill differs from the plain Cilium one.
#[derive(Default)]
struct Scenario {
    /// Probes the pod→pod TCP probe loses.
    pod_tcp_lost: u64,
    /// A Kubernetes 1.34.4 → 1.35.4 upgrade (Cilium stays at 1.19.7) instead of Cilium's.
    kubernetes: bool,
    /// kubeadm brings kube-proxy back.
    kube_proxy_returns: bool,
    /// The drill's `faults:` (a YAML flow sequence), if any.
    faults: Option<&'static str>,
    /// The first `kubeadm upgrade apply` fails on the API server's TLS handshake timeout, and
    /// the drill namespace's `default` ServiceAccount comes late (the first two pod creates
    /// are refused): the lab's first two Kubernetes drills each ended on one of these.
    kubeadm_flaky: bool,
}

/// A Kubernetes 1.35.4 bundle as `bundle build --files-repo` makes it, with stand-in binaries
/// (the scripted nodes never run them; the drill checks their checksums and stages them).
fn kubernetes_bundle(dir: &Path) -> kubedrill::bundle::Bundle {
    use sha2::Digest;
    std::fs::create_dir_all(dir.join("bin")).expect("bundle dir");
    let binaries: Vec<Value> = ["kubeadm", "kubelet", "kubectl", "crictl"]
        .iter()
        .map(|b| {
            let data = format!("stand-in {b} 1.35.4\n");
            std::fs::write(dir.join("bin").join(b), &data).expect("binary");
            let sha: String = sha2::Sha256::digest(data.as_bytes())
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            json!({"file": format!("bin/{b}"), "sha256": sha, "size": data.len(),
                   "source": format!("files_repo/dl.k8s.io/release/v1.35.4/bin/linux/amd64/{b}")})
        })
        .collect();
    let manifest = json!({"schema": kubedrill::bundle::SCHEMA, "created": "2026-12-07T05:00:00Z",
        "family": "deb", "release": "bookworm", "requested": [], "packages": [],
        "binaries": binaries, "kubernetes_binaries": "1.35.4"});
    std::fs::write(dir.join(kubedrill::bundle::MANIFEST), manifest.to_string()).expect("manifest");
    kubedrill::bundle::Bundle::open(dir).expect("bundle")
}

async fn drill_on_scripted_nodes(sc: Scenario) -> ScriptedRun {
    let runs = tempfile::tempdir().expect("tempdir");
    let upgrade = if sc.kubernetes {
        "  cilium: {from: 1.19.7, to: 1.19.7}\n  kubernetes: {from: 1.34.4, to: 1.35.4}\n"
    } else {
        "  cilium: {from: 1.19.7, to: 1.20.2}\n"
    };
    let agent = runs.path().join("kubedrill-probe");
    std::fs::write(&agent, b"a stand-in: the scripted nodes never run it").expect("agent");
    let input = engine::DrillInput {
        kubernetes_bundle: sc
            .kubernetes
            .then(|| kubernetes_bundle(&runs.path().join("bundle-k8s-1.35.4"))),
        probe_agent: Some(agent),
        timeouts: engine::Timeouts {
            retry_pause: Duration::from_millis(100),
            ..engine::Timeouts::default()
        },
        ..drill_input(
            "happy",
            "all:\n  hosts:\n    cp1: {ansible_host: 192.168.151.11}\n    w1: {ansible_host: 192.168.151.12}\n  children:\n    kube_control_plane: {hosts: {cp1: {}}}\n    etcd: {hosts: {cp1: {}}}\n    kube_node: {hosts: {cp1: {}, w1: {}}}\n    k8s_cluster: {children: {kube_control_plane: {}, kube_node: {}}}\n",
            "kube_version: v1.34.4\ncilium_version: \"1.19.7\"\ncilium_kube_proxy_replacement: true\ncilium_tunnel_mode: disabled\ncilium_loadbalancer_mode: dsr\ncilium_auto_direct_node_routes: true\ncilium_native_routing_cidr: 10.233.64.0/18\ncilium_enable_bpf_masquerade: true\ncilium_enable_host_legacy_routing: false\nkubedrill_cilium_lb_algorithm: maglev\nkubedrill_cilium_maglev_table_size: 16381\nkubedrill_cilium_maglev_hash_seed: \"a3ViZWRyaWxsLWxi\"\nkubedrill_cilium_lb_acceleration: best-effort\n",
            &format!(
                "drill:\n  name: happy\n{upgrade}  probes: {{rate_per_s: 20}}\n  policy: {{soak_secs: 2, pod_burst: 2}}\n  resources: {{interval_secs: 1}}\n{}",
                sc.faults
                    .map(|f| format!("  faults: {f}\n"))
                    .unwrap_or_default()
            ),
            runs.path(),
        )
    };

    let api = cluster_at_1_19_7().await;
    if sc.kubeadm_flaky {
        api.refuse_creates(
            "pods",
            2,
            403,
            "Forbidden",
            "pods \"kd-backend\" is forbidden: error looking up service account kubedrill-drill/default: serviceaccount \"default\" not found",
        );
    }
    let side = Arc::new(Mutex::new(ClusterSide {
        revisions: vec![(1, "1.19.7".into(), "deployed")],
        ..Default::default()
    }));
    let started_ms = unix_ms();
    let hosts: BTreeMap<String, SharedHost> = DRILL_NODES
        .iter()
        .map(|(n, _)| {
            let h: SharedHost = Arc::new(ScriptedNode {
                name: (*n).to_owned(),
                api: api.handle(),
                side: side.clone(),
                stops: Mutex::default(),
                started_ms,
                pod_tcp_lost: sc.pod_tcp_lost,
                kube_proxy_returns: sc.kube_proxy_returns,
                kubeadm_flaky: sc.kubeadm_flaky,
            });
            ((*n).to_owned(), h)
        })
        .collect();
    let reach = engine::Reach::Given {
        hosts,
        client: api.client(),
    };
    let progress = kubedrill::fleet::Progress::quiet();
    let report = tokio::time::timeout(
        Duration::from_secs(180),
        engine::run_reaching(&input, reach, &progress, std::future::pending()),
    )
    .await
    .expect("the drill ends within 3 minutes")
    .expect("a report");

    {
        let side = side.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            side.unanswered.is_empty(),
            "commands nobody answered: {:#?}",
            side.unanswered
        );
    }
    let rec = kubedrill::report::load(&report.run_dir.join("run.json")).expect("run.json");
    ScriptedRun {
        report,
        rec,
        api,
        side,
        _runs: runs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drill_on_scripted_nodes_runs_every_phase_and_says_go() {
    let ScriptedRun {
        report,
        rec,
        api,
        side,
        _runs,
    } = drill_on_scripted_nodes(Scenario {
        pod_tcp_lost: 1,
        ..Default::default()
    })
    .await;
    let side = side.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        report.failures.is_empty(),
        "failures: {:#?}\nAPI log: {:#?}",
        report.failures,
        api.log()
    );
    let phases = phase_outcomes(&rec);
    assert_eq!(
        phases,
        [
            ("reset", "skipped"),
            ("connect", "ok"),
            ("preflight", "ok"),
            ("probes-start", "ok"),
            ("resources", "ok"),
            ("upgrade/1.20.2", "ok"),
            ("rollback", "skipped"),
            ("soak", "ok"),
            ("report", "ok"),
        ],
        "{rec:#?}"
    );
    assert_eq!(rec.verdict.outcome, Outcome::Pass, "{:#?}", rec.verdict);
    // The release moved to revision 2; the pre-flight release is gone again.
    assert!(side.revisions.iter().any(|r| r.0 == 2 && r.2 == "deployed"));
    assert!(!side.preflight_installed);
    // The agent settings that change: the drift the chart brings with the values kept.
    let drift: Vec<&str> = rec
        .config_drift
        .iter()
        .flat_map(|d| d.changes.iter().map(|c| c.key.as_str()))
        .collect();
    assert_eq!(drift, ["enable-l2-neigh-discovery"]);
    // Each agent verified after the upgrade with the datapath it had before (read from its
    // `cilium-dbg status`), and seen restarting on its node.
    let verified: Vec<&str> = rec.verification.iter().map(|v| v.node.as_str()).collect();
    assert_eq!(verified, ["cp1", "w1"], "{:#?}", rec.verification);
    assert!(
        rec.verification
            .iter()
            .all(|v| v.before == v.after && v.after.kube_proxy_replacement)
    );
    for (n, _) in DRILL_NODES {
        assert!(
            rec.agent_events.iter().any(|e| e.node == n),
            "{n}: no agent event in {:#?}",
            rec.agent_events
        );
    }
    // Every probe answered but pod TCP's one short window; held connections survived.
    assert!(rec.probes.iter().all(|p| p.sent > 0), "{:#?}", rec.probes);
    assert_eq!(rec.loss_windows.len(), 1, "{:#?}", rec.loss_windows);
    assert_eq!(rec.loss_windows[0].kind, ProbeKind::TcpPod);
    let held: Vec<_> = rec.probes.iter().filter_map(|p| p.connections).collect();
    assert!(
        !held.is_empty() && held.iter().all(|c| c.broken == 0),
        "{:#?}",
        rec.probes
    );
    // Each agent's status read through `pods/exec` before and after the upgrade.
    let execs = api.log().iter().filter(|l| l.contains("/exec?")).count();
    assert_eq!(execs, 4, "{:#?}", api.log());
    // The sampler read both agents, and saw each one's process change with the upgrade.
    for (n, _) in DRILL_NODES {
        let r = rec.resources.iter().find(|r| r.node == n).expect("sampled");
        assert!(r.samples.len() >= 2, "{n}: {:#?}", r.samples);
    }
    // Nothing left behind: the drill's namespace deleted, the probe pods with it.
    api.with(|s| {
        assert!(
            s.get(&Key::new("/api/v1", None, "namespaces", "kubedrill-drill"))
                .is_none()
        );
        assert!(
            s.list("/api/v1", Some("kubedrill-drill"), "pods")
                .is_empty()
        );
    });
    for f in [
        "run.json",
        "report.html",
        "summary.md",
        "values-before.yaml",
    ] {
        assert!(report.run_dir.join(f).is_file(), "{f} written");
    }
}

/// The same drill with more pod TCP loss than the policy's 1 %: every phase still runs, and the
/// verdict is no-go, naming the probe — the measure can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_drill_with_too_much_loss_says_no_go_and_why() {
    let run = drill_on_scripted_nodes(Scenario {
        pod_tcp_lost: 6,
        ..Default::default()
    })
    .await;
    assert!(run.report.failures.is_empty(), "{:#?}", run.report.failures);
    assert_eq!(run.rec.verdict.outcome, Outcome::Fail);
    assert!(
        run.rec
            .verdict
            .reasons
            .iter()
            .any(|r| r.starts_with("tcp-pod pod/kd-client") && r.contains("above 1.00 %")),
        "{:#?}",
        run.rec.verdict
    );
    assert_eq!(run.rec.loss_windows.len(), 1);
    // A short window is no reason to roll back (the policy's per-kind window limit decides).
    assert!(
        run.rec
            .phases
            .iter()
            .any(|p| p.name == "rollback" && p.outcome.as_str() == "skipped")
    );
    drop(run.api);
}

/// A Kubernetes 1.34.4 → 1.35.4 drill with Cilium staying at 1.19.7, on scripted nodes: staged
/// from the bundle on both nodes, `kubeadm upgrade apply` on cp1 then `upgrade node` on w1, each
/// drained, its kubelet restarted, Ready at v1.35.4 and uncordoned, the agents verified after,
/// kube-proxy still absent — go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kubernetes_drill_on_scripted_nodes_upgrades_node_by_node_and_says_go() {
    let run = drill_on_scripted_nodes(Scenario {
        kubernetes: true,
        ..Default::default()
    })
    .await;
    assert!(run.report.failures.is_empty(), "{:#?}", run.report.failures);
    let phases = phase_outcomes(&run.rec);
    assert_eq!(
        phases,
        [
            ("reset", "skipped"),
            ("connect", "ok"),
            ("preflight", "ok"),
            ("probes-start", "ok"),
            ("resources", "ok"),
            ("upgrade", "skipped"),
            ("kubernetes/stage", "ok"),
            ("kubernetes/cp1", "ok"),
            ("kubernetes/workers-1", "ok"),
            ("kubernetes/verify", "ok"),
            ("rollback", "skipped"),
            ("soak", "ok"),
            ("report", "ok"),
        ],
        "{:#?}",
        run.rec
    );
    assert_eq!(
        run.rec.verdict.outcome,
        Outcome::Pass,
        "{:#?}",
        run.rec.verdict
    );
    let side = run.side.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        side.kubernetes_steps,
        [
            "cp1: kubeadm upgrade plan",
            "cp1: kubeadm upgrade apply",
            "cp1: drain cp1",
            "cp1: kubelet 1.35.4",
            "cp1: uncordon cp1",
            "w1: kubeadm upgrade node",
            "cp1: drain w1",
            "w1: kubelet 1.35.4",
            "cp1: uncordon w1",
        ]
    );
    assert_eq!(side.staged.len(), 2);
    assert!(run.rec.kube_proxy_events.is_empty());
    run.api.with(|s| {
        for (n, _) in DRILL_NODES {
            let v = s.get(&Key::new("/api/v1", None, "nodes", n)).expect("node");
            assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], "v1.35.4");
            assert_ne!(v["spec"]["unschedulable"], json!(true), "{n} uncordoned");
        }
    });
}

/// The same drill where kubeadm re-creates kube-proxy in the kube-proxy-free cluster (as
/// kubernetes/kubeadm#1318 reports): `kubernetes/verify` finds the DaemonSet, the ConfigMap and
/// the iptables chains on both nodes, records each, removes them, and the verdict is no-go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_proxy_coming_back_with_kubeadm_is_found_removed_and_no_go() {
    let run = drill_on_scripted_nodes(Scenario {
        kubernetes: true,
        kube_proxy_returns: true,
        ..Default::default()
    })
    .await;
    assert!(run.report.failures.is_empty(), "{:#?}", run.report.failures);
    assert_eq!(run.rec.verdict.outcome, Outcome::Fail);
    let details: Vec<&str> = run
        .rec
        .kube_proxy_events
        .iter()
        .map(|e| e.detail.as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("daemonset/kube-proxy present")),
        "{details:#?}"
    );
    for n in ["cp1", "w1"] {
        assert!(
            details.iter().any(|d| d.starts_with(&format!(
                "kube-proxy's iptables chains on {n}: :KUBE-NODEPORTS"
            ))),
            "{details:#?}"
        );
    }
    assert!(
        run.rec
            .verdict
            .reasons
            .iter()
            .any(|r| r.contains("kube-proxy")),
        "{:#?}",
        run.rec.verdict
    );
    // Removed: the objects from the API, the chains from each node.
    run.api.with(|s| {
        assert!(
            s.get(&Key::new(
                "/apis/apps/v1",
                Some("kube-system"),
                "daemonsets",
                "kube-proxy"
            ))
            .is_none()
        );
        assert!(
            s.get(&Key::new(
                "/api/v1",
                Some("kube-system"),
                "configmaps",
                "kube-proxy"
            ))
            .is_none()
        );
    });
    assert!(
        run.side
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kube_proxy_chains
            .is_empty()
    );
}

/// A Kubernetes-only drill with `kill-agent` on w1: the fault fires during `kubernetes/cp1` (there
/// is no Cilium step), the node answers, the agent watch sees w1's container restart, and the
/// verdict is no-go for that restart — the drill's measures can fail without a Cilium upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_agent_fault_in_a_kubernetes_drill_fires_in_the_first_control_plane_and_says_no_go()
{
    let run = drill_on_scripted_nodes(Scenario {
        kubernetes: true,
        faults: Some("[{kind: kill-agent, node: w1, after_secs: 0}]"),
        ..Default::default()
    })
    .await;
    assert!(run.report.failures.is_empty(), "{:#?}", run.report.failures);
    assert_eq!(
        run.side.lock().unwrap_or_else(|e| e.into_inner()).killed,
        ["w1"]
    );
    let [fault] = run.rec.faults.as_slice() else {
        panic!("one fault recorded: {:#?}", run.rec.faults);
    };
    assert_eq!(
        (
            fault.kind.as_str(),
            fault.node.as_deref(),
            fault.detail.as_str(),
            fault.injected
        ),
        ("kill-agent", Some("w1"), "killed cilium-agent 4242", true)
    );
    let cp1 = run
        .rec
        .phases
        .iter()
        .find(|p| p.name == "kubernetes/cp1")
        .expect("kubernetes/cp1 ran");
    assert!(
        cp1.start <= fault.at && fault.at <= cp1.end,
        "the fault fired during kubernetes/cp1: {fault:?} {cp1:?}"
    );
    assert_eq!(run.rec.verdict.outcome, Outcome::Fail);
    assert!(
        run.rec
            .verdict
            .reasons
            .iter()
            .any(|r| r.starts_with("w1: the agent container restarted 1 time")),
        "{:#?}",
        run.rec.verdict
    );
}

/// The lab's first Kubernetes drill failed at once: `kubeadm upgrade apply` could not read the
/// `kubeadm-config` ConfigMap (TLS handshake timeout, cp1 at load 23). kubeadm's upgrade is
/// idempotent and re-running it is its documented recovery: the drill runs it again when only
/// the API server failed it, and goes on. The second ended creating its probe pods before the
/// new namespace had its `default` ServiceAccount: the drill waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_server_hiccups_of_the_real_lab_are_waited_out_and_the_drill_goes_on() {
    let run = drill_on_scripted_nodes(Scenario {
        kubernetes: true,
        kubeadm_flaky: true,
        ..Default::default()
    })
    .await;
    assert!(run.report.failures.is_empty(), "{:#?}", run.report.failures);
    assert_eq!(
        run.rec.verdict.outcome,
        Outcome::Pass,
        "{:#?}",
        run.rec.verdict
    );
    let side = run.side.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        side.kubernetes_steps[..8],
        [
            "cp1: kubeadm upgrade plan",
            "cp1: kubeadm upgrade apply",
            "cp1: kubeadm upgrade apply",
            "cp1: drain cp1",
            "cp1: kubelet 1.35.4",
            // The API server restarted with the new kubelet: the wait for cp1 read it again,
            // and the uncordon that met its TLS timeout ran again.
            "cp1: uncordon cp1",
            "cp1: uncordon cp1",
            "w1: kubeadm upgrade node",
        ]
    );
    let refused = run.api.with(|s| {
        s.log
            .iter()
            .filter(|l| l.starts_with("POST /api/v1/namespaces/kubedrill-drill/pods"))
            .count()
    });
    assert!(
        refused >= 4,
        "two refused creates, then both probe pods: {refused}"
    );
    // Each run's whole output stays: the one tried again, and the last.
    let dir = &run.report.run_dir;
    let first = std::fs::read_to_string(dir.join("kubeadm-apply-cp1.attempt-1.log"))
        .expect("the first run's output");
    assert!(first.contains("TLS handshake timeout"), "{first}");
    assert!(!dir.join("kubeadm-apply-cp1.attempt-2.log").exists());
    assert!(dir.join("kubeadm-apply-cp1.log").is_file());
    // The plan ran once, before the first `apply`, and its output stays too.
    let plan = std::fs::read_to_string(dir.join("kubeadm-plan-cp1.log")).expect("the plan");
    assert!(plan.contains("Target version: v1.35.4"), "{plan}");
}
