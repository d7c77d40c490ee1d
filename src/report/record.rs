//! The drill run record (`run.json`, schema 1): everything a drill measured, in one JSON document
//! that the reports are rendered from.
//!
//! Conventions: times are [`Timestamp`]s (RFC 3339, UTC, milliseconds: `2026-11-20T09:14:03.250Z`),
//! durations are [`Millis`]; enums are kebab-case strings (`icmp-pod-pod`, `rolled-back`,
//! `not-ready`); nodes are referred to by name and every reference must name a node in `nodes`.
//! Parsing checks the shape; [`RunRecord::problems`] checks what the types cannot (order of
//! times, references, totals), and [`super::load`] rejects a record with any problem.

use super::leak::LeakThresholds;
use super::time::{Millis, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// The `schema` field: always [`SCHEMA_VERSION`]; any other number fails to parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schema;

impl Serialize for Schema {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(SCHEMA_VERSION)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == SCHEMA_VERSION {
            Ok(Schema)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported run record schema {v} (this kubedrill reads schema {SCHEMA_VERSION})"
            )))
        }
    }
}

/// One drill run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// Always 1.
    pub schema: Schema,
    /// Which drill, and which run of it.
    pub drill: DrillId,
    /// The lab the drill ran on.
    pub lab: String,
    /// When the run started.
    pub started: Timestamp,
    /// When the run ended.
    pub ended: Timestamp,
    /// Cilium versions before and after.
    pub cilium: VersionChange,
    /// Kubernetes versions, when the drill also upgraded Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VersionChange>,
    /// The lab's nodes.
    pub nodes: Vec<Node>,
    /// The drill's phases in the order they ran.
    pub phases: Vec<Phase>,
    /// The soak window (steady state after the upgrade) in which memory growth is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Window>,
    /// Every probe pair with its totals.
    pub probes: Vec<Probe>,
    /// Contiguous runs of lost probes.
    #[serde(default)]
    pub loss_windows: Vec<LossWindow>,
    /// Cilium agent lifecycle events, per node.
    #[serde(default)]
    pub agent_events: Vec<AgentEvent>,
    /// Cilium agent resource samples, per node.
    #[serde(default)]
    pub resources: Vec<NodeResources>,
    /// The pod-burst step's results, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_burst: Option<PodBurst>,
    /// Helm upgrades and rollbacks of the `cilium` release.
    #[serde(default)]
    pub helm_events: Vec<HelmEvent>,
    /// Sightings of kube-proxy (which a kube-proxy-free cluster must never get back).
    #[serde(default)]
    pub kube_proxy_events: Vec<KubeProxyEvent>,
    /// Failures the drill injected on purpose (`drill.faults`), to show what its measures make
    /// of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultEvent>,
    /// Unified diff of the Helm values (old → new), one line per entry, with its ` `/`-`/`+`
    /// prefix.
    #[serde(default)]
    pub values_diff: Vec<String>,
    /// Datapath features per node, before and after.
    #[serde(default)]
    pub verification: Vec<NodeVerification>,
    /// Agent settings (`cilium-config`) that change at each upgrade step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_drift: Vec<ConfigDrift>,
    /// The thresholds the verdict was judged with.
    pub policy: Policy,
    /// The drill's verdict.
    pub verdict: Verdict,
}

/// Drill name and run id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillId {
    /// The drill (the same for every run of it), e.g. `cilium-1.17-to-1.18`.
    pub name: String,
    /// This run, unique, e.g. `cilium-1.17-to-1.18-20261120T090000Z`.
    pub run_id: String,
}

/// A version before and after the drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionChange {
    /// Before.
    pub from: String,
    /// After (the target; a rollback is recorded in the phases and helm events).
    pub to: String,
}

/// A lab node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Inventory name.
    pub name: String,
    /// Role.
    pub role: NodeRole,
    /// Node address (the Kubernetes InternalIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// Control plane (may also run workloads).
    ControlPlane,
    /// Worker.
    Worker,
}

impl NodeRole {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::ControlPlane => "control-plane",
            NodeRole::Worker => "worker",
        }
    }
}

/// A span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start.
    pub start: Timestamp,
    /// End (not before start).
    pub end: Timestamp,
}

impl Window {
    /// Whether `t` lies in the window (inclusive).
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t <= self.end
    }

    /// The window's length.
    pub fn duration(&self) -> Millis {
        self.end.since(self.start)
    }
}

/// One phase of the drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Phase name, e.g. `cilium/upgrade`.
    pub name: String,
    /// Start.
    pub start: Timestamp,
    /// End.
    pub end: Timestamp,
    /// How it ended.
    pub outcome: PhaseOutcome,
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseOutcome {
    /// Done.
    Ok,
    /// Failed.
    Failed,
    /// Not run.
    Skipped,
    /// Done, then undone by a rollback.
    RolledBack,
}

impl PhaseOutcome {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseOutcome::Ok => "ok",
            PhaseOutcome::Failed => "failed",
            PhaseOutcome::Skipped => "skipped",
            PhaseOutcome::RolledBack => "rolled-back",
        }
    }
}

/// What a probe sends, and to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// ICMP echo from a pod to a pod on another node.
    IcmpPodPod,
    /// TCP connect to a pod on another node.
    TcpPod,
    /// TCP connect to a ClusterIP service (socket-LB, east–west).
    TcpClusterip,
    /// TCP connect to a NodePort through a node without a backend (DSR, north–south).
    TcpNodeport,
    /// UDP request/response to a pod on another node.
    UdpPod,
    /// ICMP echo between node addresses.
    IcmpHost,
    /// One TCP connection to a pod on another node, held through the whole drill (payloads
    /// echoed back to back): does an established connection survive, and how long does it stall.
    TcpPodHeld,
    /// The same through the ClusterIP service.
    TcpClusteripHeld,
    /// The same through the NodePort from outside (DSR).
    TcpNodeportHeld,
}

impl ProbeKind {
    /// Every kind, in report order.
    pub const ALL: [ProbeKind; 9] = [
        ProbeKind::IcmpPodPod,
        ProbeKind::TcpPod,
        ProbeKind::TcpClusterip,
        ProbeKind::TcpNodeport,
        ProbeKind::UdpPod,
        ProbeKind::IcmpHost,
        ProbeKind::TcpPodHeld,
        ProbeKind::TcpClusteripHeld,
        ProbeKind::TcpNodeportHeld,
    ];

    /// A kind that holds one connection for the whole run.
    pub fn held(self) -> bool {
        matches!(
            self,
            ProbeKind::TcpPodHeld | ProbeKind::TcpClusteripHeld | ProbeKind::TcpNodeportHeld
        )
    }

    /// The kebab-case name used in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::IcmpPodPod => "icmp-pod-pod",
            ProbeKind::TcpPod => "tcp-pod",
            ProbeKind::TcpClusterip => "tcp-clusterip",
            ProbeKind::TcpNodeport => "tcp-nodeport",
            ProbeKind::UdpPod => "udp-pod",
            ProbeKind::IcmpHost => "icmp-host",
            ProbeKind::TcpPodHeld => "tcp-pod-held",
            ProbeKind::TcpClusteripHeld => "tcp-clusterip-held",
            ProbeKind::TcpNodeportHeld => "tcp-nodeport-held",
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One end of a probe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// What it is: `pod/probe-node2`, `svc/echo 10.233.0.80:80`, `host/lab-client`, ….
    pub name: String,
    /// The node it runs on, when it is on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "{} ({n})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A probe pair and its totals over the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// What is probed.
    pub kind: ProbeKind,
    /// Sender.
    pub from: Endpoint,
    /// Target.
    pub to: Endpoint,
    /// Probes sent per second.
    pub rate_per_s: u32,
    /// Probes sent.
    pub sent: u64,
    /// Probes lost (no reply within the probe timeout).
    pub lost: u64,
    /// A held kind's connection history (absent for the others, and when the prober's summary
    /// never came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<HeldConnections>,
}

/// What happened to a held connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldConnections {
    /// Connections opened (1 + reconnects).
    pub opened: u64,
    /// Connections that broke (reset, closed, socket error): 0 means it survived.
    pub broken: u64,
}

impl Probe {
    /// Lost / sent (0 when nothing was sent).
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64
        }
    }

    /// Whether a loss window belongs to this probe.
    pub fn owns(&self, w: &LossWindow) -> bool {
        self.kind == w.kind && self.from == w.from && self.to == w.to
    }
}

/// A contiguous run of lost probes of one probe pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWindow {
    /// Probe kind.
    pub kind: ProbeKind,
    /// Sender.
    pub from: Endpoint,
    /// Target.
    pub to: Endpoint,
    /// Send time of the first lost probe.
    pub start: Timestamp,
    /// Send time of the first probe answered again.
    pub end: Timestamp,
    /// `end - start` (checked).
    pub duration_ms: Millis,
    /// Probes lost in the window.
    pub lost: u64,
}

/// A Cilium agent lifecycle event on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEvent {
    /// Node.
    pub node: String,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: AgentEventKind,
    /// The agent container's restart count at that moment (0 for a freshly rolled-out pod;
    /// more means the container crashed or was killed, e.g. for memory).
    pub restart_count: u32,
}

/// Agent lifecycle event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentEventKind {
    /// The agent container (re)started: a new pod in a rollout, or a container restart.
    Restart,
    /// The agent became ready.
    Ready,
    /// The agent stopped being ready (terminating, crashed, failing its probe).
    NotReady,
}

impl AgentEventKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentEventKind::Restart => "restart",
            AgentEventKind::Ready => "ready",
            AgentEventKind::NotReady => "not-ready",
        }
    }
}

/// A node's agent resource samples, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeResources {
    /// Node.
    pub node: String,
    /// Samples (strictly increasing times).
    pub samples: Vec<ResourceSample>,
}

/// One resource sample of a Cilium agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSample {
    /// When.
    pub at: Timestamp,
    /// CPU in millicores (1000 = one core), averaged since the previous sample.
    pub cpu_millicores: u32,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// The pod-burst step: many pods created at once, per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodBurst {
    /// Start.
    pub start: Timestamp,
    /// End.
    pub end: Timestamp,
    /// Results per node.
    pub nodes: Vec<PodBurstNode>,
}

/// Pod-burst results on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodBurstNode {
    /// Node.
    pub node: String,
    /// Pods that became Running.
    pub created: u32,
    /// Pods that did not.
    pub failed: u32,
    /// Distinct failure messages (from pod events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A Helm action on the `cilium` release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HelmEvent {
    /// `helm upgrade`.
    Upgrade {
        /// When.
        at: Timestamp,
        /// The revision the upgrade created.
        revision: u32,
        /// The chart version installed.
        chart_version: String,
    },
    /// `helm rollback cilium TO`.
    Rollback {
        /// When.
        at: Timestamp,
        /// The revision the rollback created.
        revision: u32,
        /// The revision rolled back to.
        to_revision: u32,
    },
}

impl HelmEvent {
    /// When.
    pub fn at(&self) -> Timestamp {
        match self {
            HelmEvent::Upgrade { at, .. } | HelmEvent::Rollback { at, .. } => *at,
        }
    }

    /// One line: `upgrade → revision 2 (chart 1.18.12)`, `rollback to revision 1 (revision 3)`.
    pub fn describe(&self) -> String {
        match self {
            HelmEvent::Upgrade {
                revision,
                chart_version,
                ..
            } => format!("upgrade → revision {revision} (chart {chart_version})"),
            HelmEvent::Rollback {
                revision,
                to_revision,
                ..
            } => format!("rollback to revision {to_revision} (revision {revision})"),
        }
    }
}

/// kube-proxy seen again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeProxyEvent {
    /// When.
    pub at: Timestamp,
    /// The node, when it is node-specific (a pod, iptables chains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What was seen.
    pub detail: String,
}

/// A failure the drill injected on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEvent {
    /// When it was injected (or tried).
    pub at: Timestamp,
    /// `kill-agent`, `link-down` or `bad-value`.
    pub kind: String,
    /// The node it acted on, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What was done, or why it could not be.
    pub detail: String,
    /// False when the injection itself failed (no agent to kill, no SSH session).
    pub injected: bool,
}

/// The agent settings one upgrade step changes: what the agents read before the step (the
/// deployed manifest, or the previous step's rendering) against the step's chart rendered with
/// the values the upgrade passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDrift {
    /// Chart version before the step.
    pub from: String,
    /// Chart version of the step.
    pub to: String,
    /// Every `cilium-config` key whose value differs.
    pub changes: Vec<ConfigChange>,
    /// BPF map sizes and Maglev settings before and after, changed or not.
    #[serde(default)]
    pub sizing: Vec<ConfigChange>,
    /// Keys kept at their old value by a pin in the upgrade's values (`pin_config`).
    #[serde(default)]
    pub pinned: Vec<String>,
}

/// One `cilium-config` key before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    /// The key.
    pub key: String,
    /// Before (absent: the agent's built-in default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Why it touches the datapath, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<String>,
    /// The value that keeps the old setting (`path=value`), if the chart has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// Datapath features of a node, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeVerification {
    /// Node.
    pub node: String,
    /// Before the upgrade.
    pub before: Datapath,
    /// After.
    pub after: Datapath,
}

/// What `cilium-dbg status --verbose` reported for a node's datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datapath {
    /// kube-proxy replacement active.
    pub kube_proxy_replacement: bool,
    /// NodePort in DSR mode.
    pub dsr: bool,
    /// Maglev backend selection.
    pub maglev: bool,
    /// XDP acceleration.
    pub xdp: XdpMode,
}

/// XDP acceleration mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    /// Off.
    Disabled,
    /// Native (driver) XDP.
    Native,
    /// Native where the device supports it.
    BestEffort,
    /// Generic (skb) XDP.
    Generic,
}

impl XdpMode {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Disabled => "disabled",
            XdpMode::Native => "native",
            XdpMode::BestEffort => "best-effort",
            XdpMode::Generic => "generic",
        }
    }
}

/// The thresholds a verdict is judged with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Longest allowed loss window per probe kind (kinds not listed are not judged).
    #[serde(default)]
    pub max_interruption_ms: BTreeMap<ProbeKind, Millis>,
    /// Highest allowed lost/sent of any probe pair over the run (0–1).
    pub max_loss_ratio: f64,
    /// Most agent container restarts (crashes, not rollout replacements) allowed per node.
    pub max_container_restarts: u32,
    /// Breaks of held connections allowed per held probe (0: every held connection must survive;
    /// left out of the file when 0, as records before held probes have it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_broken_connections: u64,
    /// Most failed pods allowed in the pod burst, over all nodes.
    pub max_pod_burst_failures: u32,
    /// Memory leak detection.
    #[serde(default)]
    pub leak: LeakThresholds,
}

/// Pass or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every check within policy.
    Pass,
    /// At least one check out of policy.
    Fail,
}

impl Outcome {
    /// `pass` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
        }
    }
}

/// The drill's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Pass or fail.
    pub outcome: Outcome,
    /// Why (required for a failure; notes for a pass).
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl RunRecord {
    /// Every inconsistency the types cannot rule out, as `path: problem` lines (empty when the
    /// record is sound).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let run = Window {
            start: self.started,
            end: self.ended,
        };
        if self.ended < self.started {
            p.push("ended: before started".to_owned());
        }
        let mut names = BTreeSet::new();
        if self.nodes.is_empty() {
            p.push("nodes: empty".to_owned());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.is_empty() {
                p.push(format!("nodes[{i}].name: empty"));
            }
            if !names.insert(n.name.as_str()) {
                p.push(format!("nodes[{i}].name: `{}` appears twice", n.name));
            }
        }
        let node = |p: &mut Vec<String>, path: String, name: &str| {
            if !names.contains(name) {
                p.push(format!("{path}: `{name}` is not one of the nodes"));
            }
        };
        let within = |p: &mut Vec<String>, path: String, t: Timestamp| {
            if !run.contains(t) {
                p.push(format!(
                    "{path}: {t} is outside the run ({} – {})",
                    run.start, run.end
                ));
            }
        };
        let span = |p: &mut Vec<String>, path: &str, s: Timestamp, e: Timestamp| {
            if e < s {
                p.push(format!("{path}: ends ({e}) before it starts ({s})"));
            }
            within(p, format!("{path}.start"), s);
            within(p, format!("{path}.end"), e);
        };
        for (i, ph) in self.phases.iter().enumerate() {
            span(&mut p, &format!("phases[{i}]"), ph.start, ph.end);
        }
        if let Some(s) = &self.soak {
            span(&mut p, "soak", s.start, s.end);
        }
        let endpoint = |p: &mut Vec<String>, path: String, e: &Endpoint| {
            if let Some(n) = &e.node {
                node(p, path, n);
            }
        };
        for (i, pr) in self.probes.iter().enumerate() {
            if pr.lost > pr.sent {
                p.push(format!(
                    "probes[{i}]: lost ({}) more than sent ({})",
                    pr.lost, pr.sent
                ));
            }
            if pr.rate_per_s == 0 {
                p.push(format!("probes[{i}].rate_per_s: zero"));
            }
            endpoint(&mut p, format!("probes[{i}].from.node"), &pr.from);
            endpoint(&mut p, format!("probes[{i}].to.node"), &pr.to);
            if self.probes[..i]
                .iter()
                .any(|q| q.kind == pr.kind && q.from == pr.from && q.to == pr.to)
            {
                p.push(format!("probes[{i}]: the same probe pair appears twice"));
            }
        }
        let mut window_loss = vec![0u64; self.probes.len()];
        for (i, w) in self.loss_windows.iter().enumerate() {
            span(&mut p, &format!("loss_windows[{i}]"), w.start, w.end);
            if w.end >= w.start && w.end.since(w.start) != w.duration_ms {
                p.push(format!(
                    "loss_windows[{i}].duration_ms: {} but end - start is {}",
                    w.duration_ms.0,
                    w.end.since(w.start).0
                ));
            }
            match self.probes.iter().position(|pr| pr.owns(w)) {
                Some(j) => window_loss[j] = window_loss[j].saturating_add(w.lost),
                None => p.push(format!(
                    "loss_windows[{i}]: no probe {} from {} to {}",
                    w.kind, w.from, w.to
                )),
            }
        }
        for (j, pr) in self.probes.iter().enumerate() {
            if window_loss[j] > pr.lost {
                p.push(format!(
                    "probes[{j}].lost: {} but its loss windows lost {}",
                    pr.lost, window_loss[j]
                ));
            }
        }
        for (i, e) in self.agent_events.iter().enumerate() {
            node(&mut p, format!("agent_events[{i}].node"), &e.node);
            within(&mut p, format!("agent_events[{i}].at"), e.at);
        }
        let mut seen = BTreeSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            node(&mut p, format!("resources[{i}].node"), &r.node);
            if !seen.insert(r.node.as_str()) {
                p.push(format!("resources[{i}].node: `{}` appears twice", r.node));
            }
            for (k, s) in r.samples.iter().enumerate() {
                within(&mut p, format!("resources[{i}].samples[{k}].at"), s.at);
                if k > 0 && s.at <= r.samples[k - 1].at {
                    p.push(format!(
                        "resources[{i}].samples[{k}].at: not after the previous sample"
                    ));
                }
            }
        }
        if let Some(b) = &self.pod_burst {
            span(&mut p, "pod_burst", b.start, b.end);
            for (i, n) in b.nodes.iter().enumerate() {
                node(&mut p, format!("pod_burst.nodes[{i}].node"), &n.node);
            }
        }
        for (i, h) in self.helm_events.iter().enumerate() {
            within(&mut p, format!("helm_events[{i}].at"), h.at());
        }
        for (i, k) in self.kube_proxy_events.iter().enumerate() {
            within(&mut p, format!("kube_proxy_events[{i}].at"), k.at);
            if let Some(n) = &k.node {
                node(&mut p, format!("kube_proxy_events[{i}].node"), n);
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            within(&mut p, format!("faults[{i}].at"), f.at);
            if let Some(n) = &f.node {
                node(&mut p, format!("faults[{i}].node"), n);
            }
        }
        for (i, v) in self.verification.iter().enumerate() {
            node(&mut p, format!("verification[{i}].node"), &v.node);
        }
        if !(0.0..=1.0).contains(&self.policy.max_loss_ratio) {
            p.push("policy.max_loss_ratio: must be between 0 and 1".to_owned());
        }
        p.extend(
            self.policy
                .leak
                .problems()
                .into_iter()
                .map(|x| format!("policy.leak.{x}")),
        );
        if self.verdict.outcome == Outcome::Fail && self.verdict.reasons.is_empty() {
            p.push("verdict.reasons: a failed verdict needs at least one reason".to_owned());
        }
        p
    }

    /// The run's length.
    pub fn duration(&self) -> Millis {
        self.ended.since(self.started)
    }

    /// The index of a node in `nodes` (colours and order in the reports follow it).
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
