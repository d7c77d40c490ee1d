//! What the reports say about a run, computed once from the record: per probe kind totals and the
//! longest interruption, per node restarts, not-ready time, peaks and the leak verdict.

use super::leak::{self, LeakVerdict};
use super::record::{AgentEventKind, Endpoint, NodeRole, ProbeKind, RunRecord};
use super::time::{Millis, Timestamp};
use serde::Serialize;

/// The numbers every report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Run length.
    pub duration: Millis,
    /// One entry per probe kind that has probes, in [`ProbeKind::ALL`] order.
    pub kinds: Vec<KindSummary>,
    /// Probes sent, all pairs.
    pub total_sent: u64,
    /// Probes lost, all pairs.
    pub total_lost: u64,
    /// One entry per node, in record order.
    pub nodes: Vec<NodeSummary>,
    /// Pods created and failed in the pod burst, over all nodes.
    pub pod_burst: Option<(u64, u64)>,
}

/// Totals and the longest interruption of one probe kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    /// Kind.
    pub kind: ProbeKind,
    /// Probe pairs of this kind.
    pub pairs: usize,
    /// Sent.
    pub sent: u64,
    /// Lost.
    pub lost: u64,
    /// The highest lost/sent of a single pair of this kind (what the policy limits).
    pub worst_pair_loss_ratio: f64,
    /// Loss windows.
    pub windows: usize,
    /// The longest loss window.
    pub longest: Option<Interruption>,
}

impl KindSummary {
    /// Lost / sent.
    pub fn loss_ratio(&self) -> f64 {
        ratio(self.lost, self.sent)
    }
}

/// One loss window, located.
#[derive(Debug, Clone, Serialize)]
pub struct Interruption {
    /// Length.
    pub duration: Millis,
    /// From the run start.
    pub offset: Millis,
    /// Sender.
    pub from: Endpoint,
    /// Target.
    pub to: Endpoint,
    /// Probes lost.
    pub lost: u64,
}

/// Per-node agent figures.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    /// Node.
    pub name: String,
    /// Role.
    pub role: NodeRole,
    /// Agent (re)starts seen (rollout replacements and container restarts).
    pub agent_starts: usize,
    /// Highest container restart count seen (crashes and kills, not rollout replacements).
    pub container_restarts: u32,
    /// Time the agent was not ready (from not-ready or restart to the next ready).
    pub not_ready: Millis,
    /// Highest RSS sampled.
    pub peak_rss_bytes: Option<u64>,
    /// Highest CPU sampled.
    pub peak_cpu_millicores: Option<u32>,
    /// Leak verdict over the soak window (None when the record has no soak window).
    pub leak: Option<LeakVerdict>,
}

/// A sum that stops at `u64::MAX` instead of overflowing (counts come from the input).
fn sat_sum(it: impl Iterator<Item = u64>) -> u64 {
    it.fold(0, u64::saturating_add)
}

/// Lost / sent, 0 when nothing was sent.
pub fn ratio(lost: u64, sent: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        lost as f64 / sent as f64
    }
}

impl Analysis {
    /// Analyse a (checked) record.
    pub fn of(r: &RunRecord) -> Self {
        let kinds = ProbeKind::ALL
            .iter()
            .filter_map(|&kind| {
                let probes: Vec<_> = r.probes.iter().filter(|p| p.kind == kind).collect();
                if probes.is_empty() {
                    return None;
                }
                let windows: Vec<_> = r.loss_windows.iter().filter(|w| w.kind == kind).collect();
                // Longest first; ties go to the earlier window.
                let longest = windows
                    .iter()
                    .min_by_key(|w| (std::cmp::Reverse(w.duration_ms), w.start))
                    .map(|w| Interruption {
                        duration: w.duration_ms,
                        offset: w.start.since(r.started),
                        from: w.from.clone(),
                        to: w.to.clone(),
                        lost: w.lost,
                    });
                Some(KindSummary {
                    kind,
                    pairs: probes.len(),
                    sent: sat_sum(probes.iter().map(|p| p.sent)),
                    lost: sat_sum(probes.iter().map(|p| p.lost)),
                    worst_pair_loss_ratio: probes
                        .iter()
                        .map(|p| p.loss_ratio())
                        .fold(0.0, f64::max),
                    windows: windows.len(),
                    longest,
                })
            })
            .collect();
        let nodes = r
            .nodes
            .iter()
            .map(|n| node_summary(r, &n.name, n.role))
            .collect();
        Analysis {
            duration: r.duration(),
            kinds,
            total_sent: sat_sum(r.probes.iter().map(|p| p.sent)),
            total_lost: sat_sum(r.probes.iter().map(|p| p.lost)),
            nodes,
            pod_burst: r.pod_burst.as_ref().map(|b| {
                (
                    b.nodes.iter().map(|n| u64::from(n.created)).sum(),
                    b.nodes.iter().map(|n| u64::from(n.failed)).sum(),
                )
            }),
        }
    }

    /// Highest RSS over all nodes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.nodes.iter().filter_map(|n| n.peak_rss_bytes).max()
    }

    /// Agent (re)starts over all nodes.
    pub fn agent_starts(&self) -> usize {
        self.nodes.iter().map(|n| n.agent_starts).sum()
    }

    /// Container restarts over all nodes.
    pub fn container_restarts(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| u64::from(n.container_restarts))
            .sum()
    }

    /// Nodes whose agent was flagged as leaking.
    pub fn leaking_nodes(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.leak.as_ref().is_some_and(LeakVerdict::leaking))
            .map(|n| n.name.as_str())
            .collect()
    }

    /// The summary of one probe kind, if the run has probes of it.
    pub fn kind(&self, kind: ProbeKind) -> Option<&KindSummary> {
        self.kinds.iter().find(|k| k.kind == kind)
    }
}

fn node_summary(r: &RunRecord, name: &str, role: NodeRole) -> NodeSummary {
    let mut events: Vec<_> = r.agent_events.iter().filter(|e| e.node == name).collect();
    events.sort_by_key(|e| e.at);
    let mut not_ready = Millis(0);
    let mut down_since: Option<Timestamp> = None;
    for e in &events {
        match e.kind {
            AgentEventKind::NotReady | AgentEventKind::Restart => {
                down_since.get_or_insert(e.at);
            }
            AgentEventKind::Ready => {
                if let Some(s) = down_since.take() {
                    not_ready = Millis(not_ready.0.saturating_add(e.at.since(s).0));
                }
            }
        }
    }
    if let Some(s) = down_since {
        not_ready = Millis(not_ready.0.saturating_add(r.ended.since(s).0));
    }
    let samples = r
        .resources
        .iter()
        .find(|x| x.node == name)
        .map(|x| x.samples.as_slice())
        .unwrap_or(&[]);
    let leak = r.soak.map(|soak| {
        // Judge only the agent that ran through the end of the soak: samples after the last
        // (re)start inside the window.
        let from = events
            .iter()
            .filter(|e| e.kind == AgentEventKind::Restart && soak.contains(e.at))
            .map(|e| e.at)
            .max()
            .unwrap_or(soak.start);
        let series: Vec<(Timestamp, u64)> = samples
            .iter()
            .filter(|s| s.at >= from && s.at <= soak.end)
            .map(|s| (s.at, s.rss_bytes))
            .collect();
        leak::analyse(&series, &r.policy.leak)
    });
    NodeSummary {
        name: name.to_owned(),
        role,
        agent_starts: events
            .iter()
            .filter(|e| e.kind == AgentEventKind::Restart)
            .count(),
        container_restarts: events.iter().map(|e| e.restart_count).max().unwrap_or(0),
        not_ready,
        peak_rss_bytes: samples.iter().map(|s| s.rss_bytes).max(),
        peak_cpu_millicores: samples.iter().map(|s| s.cpu_millicores).max(),
        leak,
    }
}

/// `1.23 MiB` / `180.0 MiB` / `2.00 GiB`.
pub fn bytes(b: u64) -> String {
    let mib = b as f64 / leak::MIB as f64;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// A ratio as a percentage with two decimals: `0.51 %`.
pub fn percent(r: f64) -> String {
    format!("{:.2} %", r * 100.0)
}
