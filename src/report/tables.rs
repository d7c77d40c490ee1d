//! The report's tables as plain text cells, shared by the Markdown and HTML renderers (each
//! escapes cells for its own format).

use super::analysis::{Analysis, bytes, percent, ratio};
use super::leak::LeakVerdict;
use super::record::{Datapath, RunRecord};
use super::time::{Millis, offset};
use serde::Serialize;

/// A titled table.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// HTML id / anchor.
    pub id: &'static str,
    /// Section title.
    pub title: String,
    /// A sentence shown under the title.
    pub note: Option<String>,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows.
    pub rows: Vec<Row>,
    /// Shown instead of the table when there are no rows.
    pub empty: String,
}

/// A table row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Cells, as many as headers.
    pub cells: Vec<String>,
    /// Out of policy or otherwise worth a look (highlighted in HTML).
    pub bad: bool,
}

fn row(cells: Vec<String>, bad: bool) -> Row {
    Row { cells, bad }
}

fn headers(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| (*s).to_owned()).collect()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `MiB/min` with two decimals.
pub fn per_min(bytes_per_min: f64) -> String {
    format!("{:.2} MiB/min", bytes_per_min / super::leak::MIB as f64)
}

/// A leak verdict in a few words, for a summary cell.
pub fn leak_word(v: Option<&LeakVerdict>) -> String {
    match v {
        None => "not judged (no soak window)".to_owned(),
        Some(LeakVerdict::InsufficientData { samples, span }) => {
            format!("not judged ({samples} samples over {span})")
        }
        Some(LeakVerdict::Judged(a)) if a.leaking => format!(
            "LEAK {} (+{:.1} %)",
            per_min(a.slope_bytes_per_min),
            a.relative_growth * 100.0
        ),
        Some(LeakVerdict::Judged(_)) => "no".to_owned(),
    }
}

/// Every table of a run report, in order.
pub fn sections(r: &RunRecord, a: &Analysis) -> Vec<Table> {
    let mut out = vec![versions(r)];
    if !r.faults.is_empty() {
        out.push(faults(r));
    }
    out.extend([interruptions(r, a), probes(r), phases(r), restarts(a)]);
    out.push(pod_burst(r));
    out.push(helm(r));
    out.push(kube_proxy(r));
    out.push(verification(r));
    out.push(config_drift(r));
    out.push(leaks(r, a));
    out.push(policy(r));
    out
}

fn versions(r: &RunRecord) -> Table {
    let mut rows = vec![row(
        vec!["Cilium".into(), r.cilium.from.clone(), r.cilium.to.clone()],
        false,
    )];
    if let Some(k) = &r.kubernetes {
        rows.push(row(
            vec!["Kubernetes".into(), k.from.clone(), k.to.clone()],
            false,
        ));
    }
    let nodes: Vec<String> = r
        .nodes
        .iter()
        .map(|n| match &n.address {
            Some(a) => format!("{} ({}, {a})", n.name, n.role.as_str()),
            None => format!("{} ({})", n.name, n.role.as_str()),
        })
        .collect();
    Table {
        id: "versions",
        title: "Versions".into(),
        note: Some(format!(
            "Lab {}, {} nodes: {}.",
            r.lab,
            r.nodes.len(),
            nodes.join(", ")
        )),
        headers: headers(&["component", "from", "to"]),
        rows,
        empty: String::new(),
    }
}

fn interruptions(r: &RunRecord, a: &Analysis) -> Table {
    let rows = a
        .kinds
        .iter()
        .map(|k| {
            let limit = r.policy.max_interruption_ms.get(&k.kind).copied();
            let (longest, at, pair, lost) = match &k.longest {
                Some(i) => (
                    i.duration.to_string(),
                    offset(i.offset),
                    format!("{} → {}", i.from, i.to),
                    i.lost.to_string(),
                ),
                None => ("none".into(), "–".into(), "–".into(), "–".into()),
            };
            let over = matches!((&k.longest, limit), (Some(i), Some(l)) if i.duration > l);
            let over_ratio = k.worst_pair_loss_ratio > r.policy.max_loss_ratio;
            row(
                vec![
                    k.kind.to_string(),
                    longest,
                    at,
                    pair,
                    lost,
                    k.windows.to_string(),
                    format!("{} / {}", k.lost, k.sent),
                    percent(k.loss_ratio()),
                    limit.map_or("–".into(), |l| l.to_string()),
                ],
                over || over_ratio,
            )
        })
        .collect();
    Table {
        id: "interruptions",
        title: "Longest interruption per probe kind".into(),
        note: Some(format!(
            "Totals: {} of {} probes lost ({}) over {} probe pairs.",
            a.total_lost,
            a.total_sent,
            percent(ratio(a.total_lost, a.total_sent)),
            r.probes.len()
        )),
        headers: headers(&[
            "probe kind",
            "longest",
            "at",
            "from → to",
            "lost in it",
            "windows",
            "lost / sent",
            "loss",
            "limit",
        ]),
        rows,
        empty: "No probes were recorded.".into(),
    }
}

fn probes(r: &RunRecord) -> Table {
    // Held-connection probes say whether their one connection survived.
    let held = |p: &crate::report::record::Probe| match p.connections {
        Some(c) if c.broken == 0 => "survived".to_string(),
        Some(c) => format!("broke {}× ({} opened)", c.broken, c.opened),
        None if p.kind.held() => "no summary".to_string(),
        None => "–".to_string(),
    };
    Table {
        id: "probes",
        title: "Probe pairs".into(),
        note: Some(
            "The `-held` kinds keep one TCP connection open through the whole drill, payloads echoed back to back: their loss windows are stalls of an established connection, and `connection` says whether it survived."
                .into(),
        ),
        headers: headers(&[
            "probe kind",
            "from",
            "to",
            "rate",
            "sent",
            "lost",
            "loss",
            "connection",
        ]),
        rows: r
            .probes
            .iter()
            .map(|p| {
                let broke = p
                    .connections
                    .is_some_and(|c| c.broken > r.policy.max_broken_connections);
                row(
                    vec![
                        p.kind.to_string(),
                        p.from.to_string(),
                        p.to.to_string(),
                        format!("{}/s", p.rate_per_s),
                        p.sent.to_string(),
                        p.lost.to_string(),
                        percent(p.loss_ratio()),
                        held(p),
                    ],
                    p.loss_ratio() > r.policy.max_loss_ratio || broke,
                )
            })
            .collect(),
        empty: "No probes were recorded.".into(),
    }
}

fn phases(r: &RunRecord) -> Table {
    Table {
        id: "phases",
        title: "Phases".into(),
        note: None,
        headers: headers(&["phase", "start", "end", "duration", "outcome"]),
        rows: r
            .phases
            .iter()
            .map(|p| {
                row(
                    vec![
                        p.name.clone(),
                        offset(p.start.since(r.started)),
                        offset(p.end.since(r.started)),
                        p.end.since(p.start).to_string(),
                        p.outcome.as_str().into(),
                    ],
                    matches!(
                        p.outcome,
                        super::record::PhaseOutcome::Failed
                            | super::record::PhaseOutcome::RolledBack
                    ),
                )
            })
            .collect(),
        empty: "No phases were recorded.".into(),
    }
}

fn restarts(a: &Analysis) -> Table {
    Table {
        id: "restarts",
        title: "Agent restarts".into(),
        note: Some(
            "(Re)starts count every new agent container (rollout replacements included); \
             container restarts are crashes and kills."
                .into(),
        ),
        headers: headers(&[
            "node",
            "role",
            "(re)starts",
            "container restarts",
            "not ready",
            "peak RSS",
            "peak CPU",
        ]),
        rows: a
            .nodes
            .iter()
            .map(|n| {
                row(
                    vec![
                        n.name.clone(),
                        n.role.as_str().into(),
                        n.agent_starts.to_string(),
                        n.container_restarts.to_string(),
                        n.not_ready.to_string(),
                        n.peak_rss_bytes.map_or("–".into(), bytes),
                        n.peak_cpu_millicores
                            .map_or("–".into(), |c| format!("{c} m")),
                    ],
                    n.container_restarts > 0,
                )
            })
            .collect(),
        empty: "No nodes.".into(),
    }
}

fn pod_burst(r: &RunRecord) -> Table {
    let (note, rows) = match &r.pod_burst {
        None => (None, Vec::new()),
        Some(b) => (
            Some(format!(
                "{} – {} ({}).",
                offset(b.start.since(r.started)),
                offset(b.end.since(r.started)),
                b.end.since(b.start)
            )),
            b.nodes
                .iter()
                .map(|n| {
                    row(
                        vec![
                            n.node.clone(),
                            n.created.to_string(),
                            n.failed.to_string(),
                            if n.errors.is_empty() {
                                "–".into()
                            } else {
                                n.errors.join("; ")
                            },
                        ],
                        n.failed > 0,
                    )
                })
                .collect(),
        ),
    };
    Table {
        id: "pod-burst",
        title: "Pod burst".into(),
        note,
        headers: headers(&["node", "created", "failed", "errors"]),
        rows,
        empty: "The pod burst did not run.".into(),
    }
}

fn helm(r: &RunRecord) -> Table {
    Table {
        id: "helm",
        title: "Helm".into(),
        note: None,
        headers: headers(&["at", "action"]),
        rows: r
            .helm_events
            .iter()
            .map(|h| {
                row(
                    vec![offset(h.at().since(r.started)), h.describe()],
                    matches!(h, super::record::HelmEvent::Rollback { .. }),
                )
            })
            .collect(),
        empty: "No Helm actions were recorded.".into(),
    }
}

/// What the drill broke on purpose: the rest of the report shows what its measures made of it.
fn faults(r: &RunRecord) -> Table {
    Table {
        id: "faults",
        title: "Injected faults".into(),
        note: Some(
            "Failures injected on purpose (drill.faults): the verdict below is expected to be no-go."
                .into(),
        ),
        headers: headers(&["at", "fault", "node", "what"]),
        rows: r
            .faults
            .iter()
            .map(|f| {
                row(
                    vec![
                        offset(f.at.since(r.started)),
                        f.kind.clone(),
                        f.node.clone().unwrap_or_else(|| "–".into()),
                        if f.injected {
                            f.detail.clone()
                        } else {
                            format!("not injected: {}", f.detail)
                        },
                    ],
                    true,
                )
            })
            .collect(),
        empty: String::new(),
    }
}

fn kube_proxy(r: &RunRecord) -> Table {
    Table {
        id: "kube-proxy",
        title: "kube-proxy reappearances".into(),
        note: None,
        headers: headers(&["at", "node", "what"]),
        rows: r
            .kube_proxy_events
            .iter()
            .map(|k| {
                row(
                    vec![
                        offset(k.at.since(r.started)),
                        k.node.clone().unwrap_or_else(|| "–".into()),
                        k.detail.clone(),
                    ],
                    true,
                )
            })
            .collect(),
        empty: "kube-proxy did not come back.".into(),
    }
}

/// Agent settings the upgrade changes; datapath changes that were not pinned are marked.
fn config_drift(r: &RunRecord) -> Table {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
    let mut rows = Vec::new();
    for d in &r.config_drift {
        let step = format!("{} → {}", d.from, d.to);
        let cells = |c: &crate::report::record::ConfigChange, datapath: String, pin: String| {
            vec![
                step.clone(),
                c.key.clone(),
                show(&c.before),
                show(&c.after),
                datapath,
                pin,
            ]
        };
        for c in &d.changes {
            let pinned = d.pinned.contains(&c.key);
            let pin = match (&c.pin, pinned) {
                (Some(p), true) => format!("pinned: {p}"),
                (Some(p), false) => format!("offered: {p}"),
                (None, _) => "–".into(),
            };
            let datapath = c.datapath.clone().unwrap_or_else(|| "–".into());
            rows.push(row(
                cells(c, datapath, pin),
                c.datapath.is_some() && !pinned,
            ));
        }
        for c in d.sizing.iter().filter(|c| c.before == c.after) {
            rows.push(row(cells(c, "unchanged".into(), "–".into()), false));
        }
    }
    Table {
        id: "config-drift",
        title: "Agent settings (cilium-config) across the upgrade".into(),
        note: Some(
            "What the agents read before each step against the step's chart rendered with the values the upgrade passes; BPF map sizes and Maglev settings are listed even when unchanged. Set `pin_config: true` in the drill to keep the offered pins."
                .into(),
        ),
        headers: headers(&["step", "key", "before", "after", "datapath", "pin"]),
        rows,
        empty: "Not computed in this run (no deployed manifest or no chart to render).".into(),
    }
}

fn verification(r: &RunRecord) -> Table {
    fn pair(b: &Datapath, a: &Datapath, f: impl Fn(&Datapath) -> String) -> (String, bool) {
        let (x, y) = (f(b), f(a));
        let changed = x != y;
        (format!("{x} → {y}"), changed)
    }
    Table {
        id: "verification",
        title: "Datapath verification (before → after)".into(),
        note: None,
        headers: headers(&["node", "kube-proxy replacement", "DSR", "Maglev", "XDP"]),
        rows: r
            .verification
            .iter()
            .map(|v| {
                let cells = [
                    pair(&v.before, &v.after, |d| {
                        yes_no(d.kube_proxy_replacement).into()
                    }),
                    pair(&v.before, &v.after, |d| yes_no(d.dsr).into()),
                    pair(&v.before, &v.after, |d| yes_no(d.maglev).into()),
                    pair(&v.before, &v.after, |d| d.xdp.as_str().into()),
                ];
                let changed = cells.iter().any(|c| c.1);
                let mut out = vec![v.node.clone()];
                out.extend(cells.into_iter().map(|c| c.0));
                row(out, changed)
            })
            .collect(),
        empty: "No datapath verification was recorded.".into(),
    }
}

fn leaks(r: &RunRecord, a: &Analysis) -> Table {
    let th = &r.policy.leak;
    let note = match &r.soak {
        Some(s) => format!(
            "Soak window {} – {} ({}). Flagged when the fitted growth exceeds {} and {:.0} % \
             and the segment means never decrease; time to the {} limit from the fitted line.",
            offset(s.start.since(r.started)),
            offset(s.end.since(r.started)),
            s.duration(),
            per_min(th.min_slope_bytes_per_min),
            th.min_relative_growth * 100.0,
            bytes(th.memory_limit_bytes)
        ),
        None => "The record has no soak window: memory growth was not judged.".into(),
    };
    let rows = a
        .nodes
        .iter()
        .filter_map(|n| {
            let v = n.leak.as_ref()?;
            Some(match v {
                LeakVerdict::InsufficientData { samples, span } => row(
                    vec![
                        n.name.clone(),
                        samples.to_string(),
                        span.to_string(),
                        "–".into(),
                        "–".into(),
                        "–".into(),
                        "not judged".into(),
                        "–".into(),
                    ],
                    false,
                ),
                LeakVerdict::Judged(l) => row(
                    vec![
                        n.name.clone(),
                        l.samples.to_string(),
                        l.span.to_string(),
                        per_min(l.slope_bytes_per_min),
                        format!("{:+.1} %", l.relative_growth * 100.0),
                        yes_no(l.monotone).into(),
                        if l.leaking { "LEAK" } else { "no" }.into(),
                        l.time_to_limit
                            .map_or("–".into(), |t: Millis| t.to_string()),
                    ],
                    l.leaking,
                ),
            })
        })
        .collect();
    Table {
        id: "memory",
        title: "Memory (agent RSS in the soak window)".into(),
        note: Some(note),
        headers: headers(&[
            "node",
            "samples",
            "span",
            "slope",
            "growth",
            "monotone",
            "leak",
            "time to limit",
        ]),
        rows,
        empty: "No verdicts.".into(),
    }
}

fn policy(r: &RunRecord) -> Table {
    let p = &r.policy;
    let mut rows: Vec<Row> = p
        .max_interruption_ms
        .iter()
        .map(|(k, v)| {
            row(
                vec![format!("longest {k} interruption"), v.to_string()],
                false,
            )
        })
        .collect();
    rows.push(row(
        vec![
            "loss ratio per probe pair".into(),
            percent(p.max_loss_ratio),
        ],
        false,
    ));
    rows.push(row(
        vec![
            "agent container restarts per node".into(),
            p.max_container_restarts.to_string(),
        ],
        false,
    ));
    rows.push(row(
        vec![
            "pod-burst failures".into(),
            p.max_pod_burst_failures.to_string(),
        ],
        false,
    ));
    rows.push(row(
        vec![
            "memory growth (leak)".into(),
            format!(
                "{} and {:.0} % over the soak",
                per_min(p.leak.min_slope_bytes_per_min),
                p.leak.min_relative_growth * 100.0
            ),
        ],
        false,
    ));
    rows.push(row(
        vec![
            "agent memory limit".into(),
            bytes(p.leak.memory_limit_bytes),
        ],
        false,
    ));
    Table {
        id: "policy",
        title: "Policy (maximum allowed)".into(),
        note: None,
        headers: headers(&["check", "threshold"]),
        rows,
        empty: String::new(),
    }
}
