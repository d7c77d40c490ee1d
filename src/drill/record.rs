//! Assembling the run record (`run.json`) from what a drill collected: phases with their times,
//! the probe pairs and the agent's loss windows, agent events, resource samples, the pod burst,
//! Helm events, kube-proxy sightings, the values diff and the datapath before/after.
//!
//! [`RecordBuilder::build`] makes the record consistent by construction, so that it passes
//! [`RunRecord::problems`]: times are clamped into the run (probe agents use their node's wall
//! clock, which may be a few milliseconds off this machine's), a window's duration is its end
//! minus its start, a probe's lost count is at least what its windows lost, resource samples are
//! strictly increasing in time, and references name nodes of the record.

use super::probes::{Loss, ProbeRun};
use crate::k8s::status::{AgentStatus, BackendSelection, KprStatus, LbModeStatus, XdpStatus};
use crate::report::record::{
    AgentEvent, Datapath, DrillId, Endpoint, HeldConnections, HelmEvent, KubeProxyEvent,
    LossWindow, Node, NodeResources, NodeVerification, Outcome, Phase, PhaseOutcome, PodBurst,
    Policy, Probe, ProbeKind, ResourceSample, RunRecord, Schema, Verdict, VersionChange, Window,
    XdpMode,
};
use crate::report::time::{Millis, Timestamp};
use crate::spec::cilium::KubeProxyReplacement;
use std::collections::{BTreeMap, BTreeSet};

/// Now, as a record timestamp.
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_ms(ms)
}

/// A run id: the drill name and the start time, `cilium-1.17-to-1.18-20261120T090000Z`.
pub fn run_id(name: &str, started: Timestamp) -> String {
    let t = started.to_string(); // 2026-11-20T09:00:00.000Z
    let compact: String = t
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{name}-{compact}Z")
}

/// One probe the drill runs: the agent's probe id and what it means in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePair {
    /// The probe id in the agent's spec and events.
    pub id: String,
    /// Kind.
    pub kind: ProbeKind,
    /// Sender.
    pub from: Endpoint,
    /// Target.
    pub to: Endpoint,
    /// Probes per second.
    pub rate_per_s: u32,
}

/// A loss window of the agent as a record window, if it belongs to a known probe pair. The
/// duration is taken from the times, not from the agent's own field.
pub fn loss_window(loss: &Loss, pairs: &[ProbePair]) -> Option<LossWindow> {
    let pair = pairs.iter().find(|p| p.id == loss.probe)?;
    let start = Timestamp::from_unix_ms(i64::try_from(loss.start_ms).ok()?);
    let end = Timestamp::from_unix_ms(i64::try_from(loss.end_ms.max(loss.start_ms)).ok()?);
    Some(LossWindow {
        kind: pair.kind,
        from: pair.from.clone(),
        to: pair.to.clone(),
        start,
        end,
        duration_ms: end.since(start),
        lost: loss.lost,
    })
}

/// Windows of a run still in progress: the closed ones, plus each open one up to when it was
/// last seen open (for decisions during the drill).
pub fn windows_so_far(run: &ProbeRun, pairs: &[ProbePair]) -> Vec<LossWindow> {
    let mut out: Vec<LossWindow> = run
        .losses
        .iter()
        .filter_map(|l| loss_window(l, pairs))
        .collect();
    for o in &run.open {
        let l = Loss {
            probe: o.probe.clone(),
            kind: String::new(),
            target: String::new(),
            start_ms: o.start_ms,
            end_ms: o.seen_ms,
            duration_ms: o.seen_ms.saturating_sub(o.start_ms),
            lost: o.lost,
            open: true,
            reason: String::new(),
        };
        out.extend(loss_window(&l, pairs));
    }
    out
}

/// What `cilium-dbg status` says about the features the report compares before and after.
pub fn datapath_of(s: &AgentStatus) -> Datapath {
    Datapath {
        kube_proxy_replacement: s
            .kube_proxy_replacement
            .as_ref()
            .and_then(KprStatus::intent)
            == Some(KubeProxyReplacement::True),
        dsr: matches!(s.lb_mode, Some(LbModeStatus::Dsr | LbModeStatus::Hybrid)),
        maglev: matches!(s.backend_selection, Some(BackendSelection::Maglev { .. })),
        xdp: match s.xdp_acceleration {
            Some(XdpStatus::Native) => XdpMode::Native,
            Some(XdpStatus::BestEffort) => XdpMode::BestEffort,
            Some(XdpStatus::Generic) => XdpMode::Generic,
            _ => XdpMode::Disabled,
        },
    }
}

pub use crate::secrets::is_secret_path;

/// The values diff (`- path: old` / `+ path: new` lines) with the values of secret-looking paths
/// replaced by `<redacted>`.
pub fn redact_diff(diff: &str) -> Vec<String> {
    diff.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sign, rest) = l.split_at(l.char_indices().nth(2).map_or(l.len(), |(i, _)| i));
            match rest.split_once(": ") {
                Some((path, _)) if is_secret_path(path) => format!("{sign}{path}: <redacted>"),
                _ => l.to_owned(),
            }
        })
        .collect()
}

/// Collects a run as it happens; [`RecordBuilder::build`] makes the record.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    /// Drill name and run id.
    pub drill: DrillId,
    /// Lab.
    pub lab: String,
    /// Start of the run.
    pub started: Timestamp,
    /// Cilium versions.
    pub cilium: VersionChange,
    /// Kubernetes versions.
    pub kubernetes: Option<VersionChange>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Finished phases.
    pub phases: Vec<Phase>,
    /// The soak window.
    pub soak: Option<Window>,
    /// Probe pairs.
    pub pairs: Vec<ProbePair>,
    /// What the probers reported (one run per prober host).
    pub probe_runs: Vec<ProbeRun>,
    /// Agent events.
    pub agent_events: Vec<AgentEvent>,
    /// Resource samples per node.
    pub resources: BTreeMap<String, Vec<ResourceSample>>,
    /// Pod bursts (one per upgrade step; merged in the record).
    pub bursts: Vec<PodBurst>,
    /// Helm upgrades and rollbacks.
    pub helm_events: Vec<HelmEvent>,
    /// kube-proxy sightings.
    pub kube_proxy_events: Vec<KubeProxyEvent>,
    /// Injected faults.
    pub faults: Vec<crate::report::record::FaultEvent>,
    /// Values diff lines (already redacted).
    pub values_diff: Vec<String>,
    /// Agent settings each step changes.
    pub config_drift: Vec<crate::report::record::ConfigDrift>,
    /// Datapath per node before the upgrade.
    pub before: BTreeMap<String, Datapath>,
    /// Datapath per node at the end.
    pub after: BTreeMap<String, Datapath>,
    /// Thresholds.
    pub policy: Policy,
}

impl RecordBuilder {
    /// A run that starts now-ish (`started`).
    pub fn new(
        drill: DrillId,
        lab: &str,
        started: Timestamp,
        cilium: VersionChange,
        nodes: Vec<Node>,
        policy: Policy,
    ) -> Self {
        RecordBuilder {
            drill,
            lab: lab.to_owned(),
            started,
            cilium,
            kubernetes: None,
            nodes,
            phases: Vec::new(),
            soak: None,
            pairs: Vec::new(),
            probe_runs: Vec::new(),
            agent_events: Vec::new(),
            resources: BTreeMap::new(),
            bursts: Vec::new(),
            helm_events: Vec::new(),
            kube_proxy_events: Vec::new(),
            faults: Vec::new(),
            values_diff: Vec::new(),
            config_drift: Vec::new(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
            policy,
        }
    }

    /// Record a finished phase.
    pub fn phase(&mut self, name: &str, start: Timestamp, end: Timestamp, outcome: PhaseOutcome) {
        self.phases.push(Phase {
            name: name.to_owned(),
            start,
            end: end.max(start),
            outcome,
        });
    }

    /// Mark every finished phase whose name starts with `prefix` as rolled back.
    pub fn mark_rolled_back(&mut self, prefix: &str) {
        for p in &mut self.phases {
            if p.name.starts_with(prefix) && p.outcome == PhaseOutcome::Ok {
                p.outcome = PhaseOutcome::RolledBack;
            }
        }
    }

    /// Probe pairs with totals, and their loss windows, from the probers' reports.
    pub fn probes_and_windows(&self) -> (Vec<Probe>, Vec<LossWindow>) {
        let mut windows: Vec<LossWindow> = self
            .probe_runs
            .iter()
            .flat_map(|r| r.losses.iter())
            .filter_map(|l| loss_window(l, &self.pairs))
            .collect();
        windows.sort_by_key(|w| (w.start, w.kind));
        let probes = self
            .pairs
            .iter()
            .map(|p| {
                let (sent, lost) = self
                    .probe_runs
                    .iter()
                    .flat_map(|r| r.summaries.iter())
                    .filter(|s| s.probe == p.id)
                    .fold((0u64, 0u64), |(a, b), s| {
                        (a.saturating_add(s.sent), b.saturating_add(s.lost))
                    });
                (p, sent, lost)
            })
            .map(|(p, sent, lost)| {
                // A held kind's connections, summed over its summaries (one per prober run).
                let connections = p.kind.held().then(|| {
                    self.probe_runs
                        .iter()
                        .flat_map(|r| r.summaries.iter())
                        .filter(|s| s.probe == p.id)
                        .filter_map(|s| s.connections)
                        .reduce(|a, b| HeldConnections {
                            opened: a.opened.saturating_add(b.opened),
                            broken: a.broken.saturating_add(b.broken),
                        })
                });
                Probe {
                    kind: p.kind,
                    from: p.from.clone(),
                    to: p.to.clone(),
                    rate_per_s: p.rate_per_s.max(1),
                    sent,
                    lost,
                    connections: connections.flatten(),
                }
            })
            .collect();
        (probes, windows)
    }

    /// The record, consistent by construction; the verdict is a placeholder `pass` for the
    /// caller to judge (see [`super::policy::verdict`]).
    pub fn build(&self, ended: Timestamp) -> RunRecord {
        let started = self.started;
        let ended = ended.max(started);
        let clamp = |t: Timestamp| t.max(started).min(ended);
        let names: BTreeSet<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        let known = |n: &str| names.contains(n);

        let phases = self
            .phases
            .iter()
            .map(|p| Phase {
                start: clamp(p.start),
                end: clamp(p.end.max(p.start)),
                ..p.clone()
            })
            .collect();
        let soak = self.soak.map(|w| Window {
            start: clamp(w.start),
            end: clamp(w.end.max(w.start)),
        });

        let (mut probes, windows) = self.probes_and_windows();
        let clean_endpoint = |e: &Endpoint| Endpoint {
            name: e.name.clone(),
            node: e.node.clone().filter(|n| known(n)),
        };
        let loss_windows: Vec<LossWindow> = windows
            .into_iter()
            .map(|w| {
                let (s, e) = (clamp(w.start), clamp(w.end));
                LossWindow {
                    from: clean_endpoint(&w.from),
                    to: clean_endpoint(&w.to),
                    start: s,
                    end: e,
                    duration_ms: e.since(s),
                    ..w
                }
            })
            .collect();
        for p in &mut probes {
            p.from = clean_endpoint(&p.from);
            p.to = clean_endpoint(&p.to);
            let in_windows: u64 = loss_windows
                .iter()
                .filter(|w| p.owns(w))
                .map(|w| w.lost)
                .fold(0, u64::saturating_add);
            p.lost = p.lost.max(in_windows);
            p.sent = p.sent.max(p.lost);
        }

        let agent_events = self
            .agent_events
            .iter()
            .filter(|e| known(&e.node))
            .map(|e| AgentEvent {
                at: clamp(e.at),
                ..e.clone()
            })
            .collect();

        let resources = self
            .resources
            .iter()
            .filter(|(n, _)| known(n))
            .map(|(n, samples)| {
                let mut out: Vec<ResourceSample> = Vec::new();
                for s in samples {
                    let at = clamp(s.at);
                    if out.last().is_none_or(|l| at > l.at) {
                        out.push(ResourceSample { at, ..*s });
                    }
                }
                NodeResources {
                    node: n.clone(),
                    samples: out,
                }
            })
            .collect();

        let pod_burst = merge_bursts(&self.bursts).map(|mut b| {
            b.start = clamp(b.start);
            b.end = clamp(b.end.max(b.start));
            b.nodes.retain(|n| known(&n.node));
            b
        });

        let helm_events = self
            .helm_events
            .iter()
            .map(|h| match h.clone() {
                HelmEvent::Upgrade {
                    at,
                    revision,
                    chart_version,
                } => HelmEvent::Upgrade {
                    at: clamp(at),
                    revision,
                    chart_version,
                },
                HelmEvent::Rollback {
                    at,
                    revision,
                    to_revision,
                } => HelmEvent::Rollback {
                    at: clamp(at),
                    revision,
                    to_revision,
                },
            })
            .collect();
        let kube_proxy_events = self
            .kube_proxy_events
            .iter()
            .map(|k| KubeProxyEvent {
                at: clamp(k.at),
                node: k.node.clone().filter(|n| known(n)),
                detail: k.detail.clone(),
            })
            .collect();
        let faults = self
            .faults
            .iter()
            .map(|f| crate::report::record::FaultEvent {
                at: clamp(f.at),
                node: f.node.clone().filter(|n| known(n)),
                ..f.clone()
            })
            .collect();
        let verification = self
            .before
            .iter()
            .filter(|(n, _)| known(n))
            .filter_map(|(n, b)| {
                self.after.get(n).map(|a| NodeVerification {
                    node: n.clone(),
                    before: *b,
                    after: *a,
                })
            })
            .collect();

        RunRecord {
            schema: Schema,
            drill: self.drill.clone(),
            lab: self.lab.clone(),
            started,
            ended,
            cilium: self.cilium.clone(),
            kubernetes: self.kubernetes.clone(),
            nodes: self.nodes.clone(),
            phases,
            soak,
            probes,
            loss_windows,
            agent_events,
            resources,
            pod_burst,
            helm_events,
            kube_proxy_events,
            faults,
            values_diff: self.values_diff.clone(),
            verification,
            config_drift: self.config_drift.clone(),
            policy: self.policy.clone(),
            verdict: Verdict {
                outcome: Outcome::Pass,
                reasons: Vec::new(),
            },
        }
    }
}

/// One burst record from several (one per upgrade step): totals per node, the first start and
/// the last end, distinct errors.
pub fn merge_bursts(bursts: &[PodBurst]) -> Option<PodBurst> {
    let first = bursts.first()?;
    let mut out = PodBurst {
        start: first.start,
        end: first.end,
        nodes: Vec::new(),
    };
    for b in bursts {
        out.start = out.start.min(b.start);
        out.end = out.end.max(b.end);
        for n in &b.nodes {
            match out.nodes.iter_mut().find(|o| o.node == n.node) {
                Some(o) => {
                    o.created = o.created.saturating_add(n.created);
                    o.failed = o.failed.saturating_add(n.failed);
                    for e in &n.errors {
                        if !o.errors.contains(e) {
                            o.errors.push(e.clone());
                        }
                    }
                }
                None => out.nodes.push(n.clone()),
            }
        }
    }
    Some(out)
}

/// The policy of the record from the drill's settings.
pub fn record_policy(p: &super::definition::PolicySettings) -> Policy {
    Policy {
        max_interruption_ms: p
            .max_loss_ms
            .iter()
            .map(|(k, v)| (*k, Millis(*v)))
            .collect(),
        max_loss_ratio: p.max_loss_ratio,
        max_container_restarts: p.max_container_restarts,
        max_broken_connections: p.max_broken_connections,
        max_pod_burst_failures: p.max_pod_burst_failures,
        leak: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_compact_utc() {
        let t = Timestamp::parse("2026-11-20T09:00:00.250Z").expect("ts");
        assert_eq!(run_id("d", t), "d-20261120T090000Z");
    }

    #[test]
    fn secrets_are_redacted_in_the_diff() {
        let d = "- hubble.tls.server.key: abc\n+ hubble.tls.server.key: def\n+ clustermesh.apiserver.tls.auto.method: helm\n- etcd.password: hunter2\n+ routingMode: native\n";
        let r = redact_diff(d);
        assert_eq!(
            r,
            [
                "- hubble.tls.server.key: <redacted>",
                "+ hubble.tls.server.key: <redacted>",
                "+ clustermesh.apiserver.tls.auto.method: helm",
                "- etcd.password: <redacted>",
                "+ routingMode: native",
            ]
        );
        assert!(!is_secret_path("maglev.hashSeed"));
        assert!(!is_secret_path("kubeProxyReplacement"));
    }
}
