//! The drill's judgement, pure: whether to roll back after an upgrade step, and the run's verdict
//! with its reasons, from what was measured (loss windows, the agents' datapath against the
//! expected one, the pod burst, kube-proxy sightings, leak verdicts, restarts, failures).
//!
//! A loss window is out of policy when it is **longer** than its kind's limit (a window exactly
//! at the limit passes). Kinds without a limit are not judged.

use crate::report::leak::LeakVerdict;
use crate::report::record::{
    KubeProxyEvent, LossWindow, Outcome, PodBurst, Policy, Probe, ProbeKind, Verdict,
};
use crate::report::time::Millis;
use std::collections::BTreeMap;

/// An agent whose datapath differs from the expected one after an upgrade step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyMismatch {
    /// Node.
    pub node: String,
    /// The step's target version (`1.18.12`).
    pub step: String,
    /// What differs (`XDP acceleration: expected native, agent reports Disabled`), or why the
    /// agent could not be asked.
    pub detail: String,
}

/// Why to roll back, if at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackDecision {
    /// Roll back now.
    pub rollback: bool,
    /// Every reason (empty when not rolling back).
    pub reasons: Vec<String>,
}

fn window_line(w: &LossWindow, limit: Millis) -> String {
    format!(
        "{} interruption {} ({} → {}, {} probes lost) exceeds the {} limit",
        w.kind, w.duration_ms, w.from, w.to, w.lost, limit
    )
}

/// Loss windows longer than their kind's limit.
pub fn windows_over<'a>(
    windows: &'a [LossWindow],
    limits: &'a BTreeMap<ProbeKind, Millis>,
) -> impl Iterator<Item = (&'a LossWindow, Millis)> + 'a {
    windows.iter().filter_map(move |w| {
        limits
            .get(&w.kind)
            .filter(|limit| w.duration_ms > **limit)
            .map(|limit| (w, *limit))
    })
}

/// Decide after an upgrade step: roll back when a loss window exceeds its limit, when the step
/// itself failed (Helm, or the rollout did not finish), or — with `rollback_on_verify_failure`
/// — when an agent's datapath is not the expected one.
pub fn rollback_decision(
    windows: &[LossWindow],
    limits: &BTreeMap<ProbeKind, Millis>,
    mismatches: &[VerifyMismatch],
    rollback_on_verify_failure: bool,
    step_failure: Option<&str>,
) -> RollbackDecision {
    let mut reasons = Vec::new();
    if let Some(f) = step_failure {
        reasons.push(format!("upgrade step failed: {f}"));
    }
    reasons.extend(windows_over(windows, limits).map(|(w, l)| window_line(w, l)));
    if rollback_on_verify_failure {
        reasons.extend(
            mismatches
                .iter()
                .map(|m| format!("{} after the upgrade to {}: {}", m.node, m.step, m.detail)),
        );
    }
    RollbackDecision {
        rollback: !reasons.is_empty(),
        reasons,
    }
}

/// Everything the verdict is judged on.
#[derive(Debug, Clone, Copy)]
pub struct VerdictInputs<'a> {
    /// Every probe pair with its totals.
    pub probes: &'a [Probe],
    /// Every loss window.
    pub loss_windows: &'a [LossWindow],
    /// Datapath mismatches left at the end (after the last step, or after a rollback).
    pub mismatches: &'a [VerifyMismatch],
    /// The pod burst.
    pub burst: Option<&'a PodBurst>,
    /// kube-proxy seen again.
    pub kube_proxy: &'a [KubeProxyEvent],
    /// Leak verdict per node over the soak.
    pub leaks: &'a [(String, LeakVerdict)],
    /// Highest agent container restart count per node.
    pub container_restarts: &'a BTreeMap<String, u32>,
    /// Failures of phases (`host: phase: command: message`).
    pub failures: &'a [String],
    /// Reasons of a rollback, when one happened.
    pub rollback: Option<&'a [String]>,
}

/// The run's verdict: `fail` with every reason, or `pass` with notes (the longest interruption
/// per kind against its limit).
pub fn verdict(i: &VerdictInputs<'_>, policy: &Policy) -> Verdict {
    let mut fail = Vec::new();
    fail.extend(i.failures.iter().cloned());
    if let Some(r) = i.rollback {
        fail.push(format!("rolled back: {}", r.join("; ")));
    }
    fail.extend(
        windows_over(i.loss_windows, &policy.max_interruption_ms).map(|(w, l)| window_line(w, l)),
    );
    for p in i.probes {
        let ratio = p.loss_ratio();
        if ratio > policy.max_loss_ratio {
            fail.push(format!(
                "{} {} → {}: {:.2} % of probes lost ({} of {}), above {:.2} %",
                p.kind,
                p.from,
                p.to,
                ratio * 100.0,
                p.lost,
                p.sent,
                policy.max_loss_ratio * 100.0
            ));
        }
    }
    for p in i.probes {
        if let Some(c) = p.connections
            && c.broken > policy.max_broken_connections
        {
            fail.push(format!(
                "{} {} → {}: the held connection broke {} time(s) ({} opened), more than {}",
                p.kind, p.from, p.to, c.broken, c.opened, policy.max_broken_connections
            ));
        }
    }
    for m in i.mismatches {
        fail.push(format!(
            "{} after the upgrade to {}: {}",
            m.node, m.step, m.detail
        ));
    }
    for (node, n) in i.container_restarts {
        if *n > policy.max_container_restarts {
            fail.push(format!(
                "{node}: the agent container restarted {n} time(s) (crash or kill), more than {}",
                policy.max_container_restarts
            ));
        }
    }
    if let Some(b) = i.burst {
        let failed: u64 = b.nodes.iter().map(|n| u64::from(n.failed)).sum();
        if failed > u64::from(policy.max_pod_burst_failures) {
            let per: Vec<String> = b
                .nodes
                .iter()
                .filter(|n| n.failed > 0)
                .map(|n| {
                    let first = n
                        .errors
                        .first()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    format!("{} {} failed{first}", n.node, n.failed)
                })
                .collect();
            fail.push(format!(
                "pod burst: {failed} pod(s) not created, more than {} ({})",
                policy.max_pod_burst_failures,
                per.join("; ")
            ));
        }
    }
    for k in i.kube_proxy {
        fail.push(format!(
            "kube-proxy came back{}: {}",
            k.node
                .as_ref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default(),
            k.detail
        ));
    }
    for (node, l) in i.leaks {
        if let LeakVerdict::Judged(a) = l
            && a.leaking
        {
            fail.push(format!(
                "{node}: agent memory grows {:.1} MiB/min over the soak (+{:.0} %): leak suspected",
                a.slope_bytes_per_min / (1024.0 * 1024.0),
                a.relative_growth * 100.0
            ));
        }
    }
    if !fail.is_empty() {
        return Verdict {
            outcome: Outcome::Fail,
            reasons: fail,
        };
    }
    let mut notes = Vec::new();
    for (kind, limit) in &policy.max_interruption_ms {
        let longest = i
            .loss_windows
            .iter()
            .filter(|w| w.kind == *kind)
            .max_by_key(|w| w.duration_ms);
        match longest {
            Some(w) => notes.push(format!(
                "longest {kind} interruption {} ({} → {}) is within the {limit} limit",
                w.duration_ms, w.from, w.to
            )),
            None if i.probes.iter().any(|p| p.kind == *kind) => {
                notes.push(format!("no {kind} probe was lost"))
            }
            None => {}
        }
    }
    Verdict {
        outcome: Outcome::Pass,
        reasons: notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::Endpoint;
    use crate::report::time::Timestamp;

    fn window(kind: ProbeKind, ms: u64) -> LossWindow {
        let start = Timestamp::from_unix_ms(1_795_000_000_000);
        LossWindow {
            kind,
            from: Endpoint {
                name: "host/cp1".into(),
                node: Some("cp1".into()),
            },
            to: Endpoint {
                name: "192.168.150.12:31234".into(),
                node: Some("w1".into()),
            },
            start,
            end: start.plus(Millis(ms)),
            duration_ms: Millis(ms),
            lost: ms / 50,
        }
    }

    #[test]
    fn exactly_at_the_limit_passes() {
        let limits = BTreeMap::from([(ProbeKind::TcpPod, Millis(1000))]);
        let d = rollback_decision(&[window(ProbeKind::TcpPod, 1000)], &limits, &[], true, None);
        assert!(!d.rollback);
        let d = rollback_decision(&[window(ProbeKind::TcpPod, 1001)], &limits, &[], true, None);
        assert!(d.rollback);
        // Kinds without a limit are not judged.
        let d = rollback_decision(&[window(ProbeKind::UdpPod, 9000)], &limits, &[], true, None);
        assert!(!d.rollback);
    }

    #[test]
    fn verification_rolls_back_only_when_asked() {
        let m = [VerifyMismatch {
            node: "w1".into(),
            step: "1.18.12".into(),
            detail: "XDP acceleration: expected native, agent reports Disabled".into(),
        }];
        assert!(rollback_decision(&[], &BTreeMap::new(), &m, true, None).rollback);
        assert!(!rollback_decision(&[], &BTreeMap::new(), &m, false, None).rollback);
        let f = rollback_decision(&[], &BTreeMap::new(), &[], false, Some("rollout timed out"));
        assert!(f.rollback);
        assert_eq!(f.reasons, ["upgrade step failed: rollout timed out"]);
    }

    #[test]
    fn a_broken_held_connection_fails_the_drill() {
        let w = window(ProbeKind::TcpNodeportHeld, 10);
        let probe = |broken| crate::report::record::Probe {
            kind: ProbeKind::TcpNodeportHeld,
            from: w.from.clone(),
            to: w.to.clone(),
            rate_per_s: 20,
            sent: 1000,
            lost: 0,
            connections: Some(crate::report::record::HeldConnections {
                opened: 1 + broken,
                broken,
            }),
        };
        let policy = Policy {
            max_interruption_ms: BTreeMap::new(),
            max_loss_ratio: 1.0,
            max_container_restarts: 0,
            max_broken_connections: 0,
            max_pod_burst_failures: 0,
            leak: Default::default(),
        };
        let restarts = BTreeMap::new();
        let judge = |p: crate::report::record::Probe| {
            verdict(
                &VerdictInputs {
                    probes: &[p],
                    loss_windows: &[],
                    mismatches: &[],
                    burst: None,
                    kube_proxy: &[],
                    leaks: &[],
                    container_restarts: &restarts,
                    failures: &[],
                    rollback: None,
                },
                &policy,
            )
        };
        assert_eq!(judge(probe(0)).outcome, Outcome::Pass);
        let v = judge(probe(1));
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(
            v.reasons.iter().any(
                |r| r.contains("tcp-nodeport-held") && r.contains("broke 1 time(s) (2 opened)")
            ),
            "{:?}",
            v.reasons
        );
    }
}
