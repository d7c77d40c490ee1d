//! Following the Cilium agent DaemonSet's rollout node by node, from observations of the agent
//! pods (each a complete list at one moment, as a watch keeps it), into the run record's
//! [`AgentEvent`]s: when each node's agent stopped being ready, when the new agent (or a
//! crashed one) started, and when it was ready again.
//!
//! Pure: no API calls here. The engine feeds [`RolloutTracker::observe`] with the pods it sees
//! (a kube-runtime watcher on `k8s-app=cilium`); tests feed it hand-written pod lists.
//!
//! Rules, per node:
//! - the node's agent is **ready** when one of its agent pods is Ready and not terminating (a
//!   pod with a `deletionTimestamp` is going away: the DaemonSet controller deleted it to
//!   replace it, so the disruption starts there);
//! - ready → not ready: a `not-ready` event; not ready → ready: a `ready` event;
//! - a `restart` event when an agent container starts running: in a pod not seen before (the
//!   rollout's replacement), or again in a known pod (a crash: its restart count went up);
//! - if the ready pod changed between two observations (the intermediate states were missed),
//!   the node gets `not-ready`, `restart` and `ready` at that observation, in that order;
//! - events carry the observation's time and the agent container's restart count.

use crate::k8s::agents::{self, AGENT_CONTAINER};
use crate::report::record::{AgentEvent, AgentEventKind};
use crate::report::time::Timestamp;
use crate::spec::Version;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;

/// One agent pod at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodObservation {
    /// Pod name.
    pub name: String,
    /// Node (`spec.nodeName`), once scheduled.
    pub node: Option<String>,
    /// Ready condition `True`.
    pub ready: bool,
    /// Has a deletion timestamp.
    pub terminating: bool,
    /// The agent container is running.
    pub running: bool,
    /// The agent container's restart count.
    pub restarts: u32,
    /// When the running agent container started (unix ms).
    pub started_ms: Option<i64>,
    /// Cilium version from the agent image.
    pub version: Option<Version>,
    /// Why the agent container waits (`CrashLoopBackOff`), if it does.
    pub waiting_reason: Option<String>,
}

/// What a pod object says, for the tracker.
pub fn observe(pod: &Pod) -> PodObservation {
    let a = agents::agent_from_pod(pod);
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == AGENT_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some());
    PodObservation {
        terminating: pod.metadata.deletion_timestamp.is_some(),
        running,
        restarts: u32::try_from(a.restarts).unwrap_or(0),
        started_ms: a.agent_started.map(|t| t.as_millisecond()),
        ready: a.ready,
        node: a.node,
        version: a.version,
        waiting_reason: a.waiting_reason,
        name: a.name,
    }
}

#[derive(Debug, Clone, Default)]
struct NodeView {
    pods: BTreeMap<String, PodObservation>,
    ready_pod: Option<String>,
}

impl NodeView {
    fn ready_pod(pods: &BTreeMap<String, PodObservation>) -> Option<String> {
        pods.values()
            .filter(|p| p.ready && !p.terminating)
            .map(|p| p.name.clone())
            .next()
    }
}

/// Per-node state of the agents, and the events seen so far.
#[derive(Debug, Clone, Default)]
pub struct RolloutTracker {
    nodes: BTreeMap<String, NodeView>,
    events: Vec<AgentEvent>,
    /// Per pod: its node, its restart count when the drill first saw it, the highest since.
    restarts: BTreeMap<String, PodRestarts>,
    /// Started from the pods before the upgrade ([`Self::new`]): a pod seen later is new.
    started: bool,
}

/// One agent pod's restarts as the drill saw them.
#[derive(Debug, Clone)]
struct PodRestarts {
    node: String,
    /// At first sight: restarts from before the drill (an agent that needed three tries to
    /// start on a busy lab) are not the drill's; 0 for a pod created during it.
    base: u32,
    highest: u32,
}

impl RolloutTracker {
    /// Start from the pods as they are before the upgrade (no events for them).
    pub fn new(initial: &[PodObservation]) -> Self {
        let mut t = RolloutTracker {
            started: true,
            ..Default::default()
        };
        for p in initial {
            t.saw_restarts(p, p.restarts);
        }
        for (node, pods) in by_node(initial) {
            let ready_pod = NodeView::ready_pod(&pods);
            t.nodes.insert(node, NodeView { pods, ready_pod });
        }
        t
    }

    /// Note a pod's restart count; `base` counts when the pod is new to the tracker.
    fn saw_restarts(&mut self, p: &PodObservation, base: u32) {
        let Some(node) = &p.node else { return };
        let r = self
            .restarts
            .entry(p.name.clone())
            .or_insert_with(|| PodRestarts {
                node: node.clone(),
                base,
                highest: p.restarts,
            });
        r.highest = r.highest.max(p.restarts);
    }

    /// Take the complete list of agent pods seen at `at`; returns the events it caused.
    pub fn observe(&mut self, at: Timestamp, pods: &[PodObservation]) -> Vec<AgentEvent> {
        for p in pods {
            // Without a start ([`Self::new`] failed), the first sight is the baseline.
            let base = if self.started { 0 } else { p.restarts };
            self.saw_restarts(p, base);
        }
        let mut now = by_node(pods);
        for n in self.nodes.keys() {
            now.entry(n.clone()).or_default();
        }
        let mut out = Vec::new();
        for (node, pods) in now {
            let prev = self.nodes.remove(&node).unwrap_or_default();
            let ready_pod = NodeView::ready_pod(&pods);
            let ev = |kind, restart_count| AgentEvent {
                node: node.clone(),
                at,
                kind,
                restart_count,
            };
            let count_of = |name: &Option<String>, set: &BTreeMap<String, PodObservation>| {
                name.as_ref()
                    .and_then(|n| set.get(n))
                    .map_or(0, |p| p.restarts)
            };
            // 1. Lost readiness.
            let swapped =
                prev.ready_pod.is_some() && ready_pod.is_some() && prev.ready_pod != ready_pod;
            if (prev.ready_pod.is_some() && ready_pod.is_none()) || swapped {
                out.push(ev(
                    AgentEventKind::NotReady,
                    count_of(&prev.ready_pod, &prev.pods),
                ));
            }
            // 2. Agent containers that started.
            for p in pods.values().filter(|p| p.running && !p.terminating) {
                let started = match prev.pods.get(&p.name) {
                    None => true,
                    Some(old) => !old.running || p.restarts > old.restarts,
                };
                if started {
                    out.push(ev(AgentEventKind::Restart, p.restarts));
                }
            }
            // 3. Ready again.
            if (prev.ready_pod.is_none() && ready_pod.is_some()) || swapped {
                out.push(ev(AgentEventKind::Ready, count_of(&ready_pod, &pods)));
            }
            self.nodes.insert(node, NodeView { pods, ready_pod });
        }
        // Stable order: time, then node, then kind order as pushed (not-ready, restart, ready).
        self.events.extend(out.iter().cloned());
        out
    }

    /// Every event so far, in the order seen.
    pub fn events(&self) -> &[AgentEvent] {
        &self.events
    }

    /// Nodes whose agent is ready now, running `version` in a pod that is not terminating.
    pub fn nodes_at(&self, version: Version) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, v)| {
                v.ready_pod
                    .as_ref()
                    .and_then(|p| v.pods.get(p))
                    .is_some_and(|p| p.version == Some(version))
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Restart counts of the agent pods seen now, by pod name: the baseline of
    /// [`Self::crash_loops`].
    pub fn restarts_by_pod(&self) -> BTreeMap<String, u32> {
        self.nodes
            .values()
            .flat_map(|v| v.pods.values())
            .map(|p| (p.name.clone(), p.restarts))
            .collect()
    }

    /// Agents in `CrashLoopBackOff` that restarted at least `min` times since `baseline` (a pod
    /// not in it started at 0): a rollout that cannot complete, said at once instead of at the
    /// end of its time limit. One line per pod, `node: pod … after N restarts`.
    pub fn crash_loops(&self, baseline: &BTreeMap<String, u32>, min: u32) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|(n, v)| v.pods.values().map(move |p| (n, p)))
            .filter(|(_, p)| !p.terminating)
            .filter(|(_, p)| p.waiting_reason.as_deref() == Some("CrashLoopBackOff"))
            .filter_map(|(n, p)| {
                let new = p
                    .restarts
                    .saturating_sub(baseline.get(&p.name).copied().unwrap_or(0));
                (new >= min).then(|| {
                    format!(
                        "{n}: agent pod {} in CrashLoopBackOff after {new} restarts",
                        p.name
                    )
                })
            })
            .collect()
    }

    /// Nodes known to the tracker.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Agent container restarts per node during the drill (crashes and kills, not rollout
    /// replacements, which start at 0): each pod's count above what it was when first seen.
    pub fn container_restarts(&self) -> BTreeMap<String, u32> {
        let mut m: BTreeMap<String, u32> = BTreeMap::new();
        for r in self.restarts.values() {
            *m.entry(r.node.clone()).or_default() += r.highest.saturating_sub(r.base);
        }
        m
    }
}

fn by_node(pods: &[PodObservation]) -> BTreeMap<String, BTreeMap<String, PodObservation>> {
    let mut m: BTreeMap<String, BTreeMap<String, PodObservation>> = BTreeMap::new();
    for p in pods {
        // A pod not yet scheduled belongs to no node; it shows up once it is.
        if let Some(n) = &p.node {
            m.entry(n.clone())
                .or_default()
                .insert(p.name.clone(), p.clone());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, ready: bool, running: bool, restarts: u32) -> PodObservation {
        PodObservation {
            name: name.into(),
            node: Some(node.into()),
            ready,
            terminating: false,
            running,
            restarts,
            started_ms: running.then_some(1000),
            version: Some(Version::new(1, 17, 18)),
            waiting_reason: None,
        }
    }

    #[test]
    fn crash_loops_count_from_the_baseline() {
        let mut t = RolloutTracker::new(&[pod("a", "n1", true, true, 2)]);
        let base = t.restarts_by_pod();
        let looping = |name: &str, node: &str, restarts: u32| PodObservation {
            waiting_reason: Some("CrashLoopBackOff".into()),
            ..pod(name, node, false, false, restarts)
        };
        // The old pod had 2 restarts before: 4 is 2 more, below the limit of 3.
        t.observe(
            Timestamp::from_unix_ms(1),
            &[looping("a", "n1", 4), pod("b", "n2", true, true, 0)],
        );
        assert!(t.crash_loops(&base, 3).is_empty());
        // A new pod starts at 0.
        t.observe(
            Timestamp::from_unix_ms(2),
            &[looping("a", "n1", 5), looping("b", "n2", 3)],
        );
        let c = t.crash_loops(&base, 3);
        assert_eq!(
            c,
            [
                "n1: agent pod a in CrashLoopBackOff after 3 restarts",
                "n2: agent pod b in CrashLoopBackOff after 3 restarts"
            ]
        );
        // A pod that restarted a lot but runs now is not looping.
        t.observe(Timestamp::from_unix_ms(3), &[pod("a", "n1", true, true, 9)]);
        assert!(t.crash_loops(&base, 3).is_empty());
    }

    fn kinds(ev: &[AgentEvent]) -> Vec<(String, &'static str, u32)> {
        ev.iter()
            .map(|e| (e.node.clone(), e.kind.as_str(), e.restart_count))
            .collect()
    }

    #[test]
    fn a_crash_in_place_is_not_ready_restart_ready() {
        let t0 = Timestamp::from_unix_ms(0);
        let mut t = RolloutTracker::new(&[pod("a", "n1", true, true, 0)]);
        assert!(t.observe(t0, &[pod("a", "n1", true, true, 0)]).is_empty());
        let crashed = pod("a", "n1", false, false, 0);
        assert_eq!(
            kinds(&t.observe(t0, &[crashed])),
            [("n1".into(), "not-ready", 0)]
        );
        let mut back = pod("a", "n1", false, true, 1);
        back.started_ms = Some(5000);
        assert_eq!(
            kinds(&t.observe(t0, &[back])),
            [("n1".into(), "restart", 1)]
        );
        let mut ready = pod("a", "n1", true, true, 1);
        ready.started_ms = Some(5000);
        assert_eq!(kinds(&t.observe(t0, &[ready])), [("n1".into(), "ready", 1)]);
        assert_eq!(t.container_restarts()["n1"], 1);
    }

    #[test]
    fn restarts_from_before_the_drill_are_not_counted_and_replacements_add_theirs() {
        let t0 = Timestamp::from_unix_ms(0);
        // cp1's agent needed 2 tries to start long before the drill; w1's never restarted.
        let mut t = RolloutTracker::new(&[
            pod("a", "cp1", true, true, 2),
            pod("b", "w1", true, true, 0),
        ]);
        t.observe(
            t0,
            &[
                pod("a", "cp1", true, true, 2),
                pod("b", "w1", true, true, 0),
            ],
        );
        assert_eq!(t.container_restarts().values().sum::<u32>(), 0);
        // Killed once: 3 now, one of them the drill's.
        t.observe(
            t0,
            &[
                pod("a", "cp1", true, true, 3),
                pod("b", "w1", true, true, 0),
            ],
        );
        // w1's agent replaced by the rollout, and the new one crashes twice.
        t.observe(
            t0,
            &[
                pod("a", "cp1", true, true, 3),
                pod("c", "w1", true, true, 2),
            ],
        );
        assert_eq!(
            t.container_restarts(),
            BTreeMap::from([("cp1".to_owned(), 1), ("w1".to_owned(), 2)])
        );
        // Without a start, first sight is the baseline.
        let mut blind = RolloutTracker::default();
        blind.observe(t0, &[pod("a", "cp1", true, true, 2)]);
        blind.observe(t0, &[pod("a", "cp1", true, true, 4)]);
        assert_eq!(blind.container_restarts()["cp1"], 2);
    }

    #[test]
    fn missed_intermediate_states_still_give_three_events() {
        let t0 = Timestamp::from_unix_ms(0);
        let mut t = RolloutTracker::new(&[pod("old", "n1", true, true, 0)]);
        let mut new = pod("new", "n1", true, true, 0);
        new.version = Some(Version::new(1, 18, 12));
        let ev = t.observe(t0, &[new]);
        assert_eq!(
            kinds(&ev),
            [
                ("n1".into(), "not-ready", 0),
                ("n1".into(), "restart", 0),
                ("n1".into(), "ready", 0)
            ]
        );
        assert_eq!(t.nodes_at(Version::new(1, 18, 12)), ["n1"]);
    }
}
