//! Several runs of one drill side by side: `index.html` (linking each run's `report.html`) and
//! `compare.md`, one column per run (oldest first), one row per measure.

use super::analysis::{Analysis, bytes, percent, ratio};
use super::markdown::{escape, verdict_word};
use super::record::{HelmEvent, Outcome, ProbeKind, RunRecord};
use super::{ReportError, Written, write_file, write_loaded};
use crate::render::Templates;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// Template name of the comparison page.
pub const INDEX_TEMPLATE: &str = "report/index.html";
/// The comparison page's file name.
pub const INDEX_HTML: &str = "index.html";
/// The Markdown comparison's file name.
pub const COMPARE_MD: &str = "compare.md";

/// What [`compare`](super::compare) wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// `OUT/index.html`.
    pub index: PathBuf,
    /// `OUT/compare.md`.
    pub markdown: PathBuf,
    /// Each run's re-rendered report, oldest first.
    pub runs: Vec<Written>,
}

#[derive(Serialize)]
struct Column {
    run_id: String,
    started: String,
    href: String,
}

#[derive(Serialize)]
struct Cell {
    text: String,
    class: Option<&'static str>,
}

#[derive(Serialize)]
struct MeasureRow {
    label: String,
    cells: Vec<Cell>,
}

#[derive(Serialize)]
struct Page {
    title: String,
    note: String,
    runs: Vec<Column>,
    rows: Vec<MeasureRow>,
    generator: String,
}

/// Load the runs, re-render each run's report, and write `out/index.html` and `out/compare.md`.
pub fn compare(run_dirs: &[PathBuf], out: &Path) -> Result<Compared, ReportError> {
    if run_dirs.is_empty() {
        return Err(ReportError::NoRuns);
    }
    let mut runs = Vec::new();
    for d in run_dirs {
        let path = d.join(super::RUN_FILE);
        let rec = super::load(&path)?;
        if let Some((first, r0)) = runs.first().map(|(p, r): &(PathBuf, RunRecord)| (p, r))
            && r0.drill.name != rec.drill.name
        {
            return Err(ReportError::MixedDrills {
                first: first.join(super::RUN_FILE),
                first_drill: r0.drill.name.clone(),
                other: path,
                other_drill: rec.drill.name,
            });
        }
        runs.push((d.clone(), rec));
    }
    runs.sort_by(|a, b| (a.1.started, &a.1.drill.run_id).cmp(&(b.1.started, &b.1.drill.run_id)));
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let templates = Templates::load()?;
    let mut written = Vec::new();
    let mut analyses = Vec::new();
    for (dir, rec) in &runs {
        let a = Analysis::of(rec);
        written.push(write_loaded(dir, rec, &a, &templates)?);
        analyses.push(a);
    }
    let records: Vec<&RunRecord> = runs.iter().map(|(_, r)| r).collect();
    let rows = measures(&records, &analyses);
    let hrefs: Vec<String> = written
        .iter()
        .map(|w| relative_href(out, &w.html))
        .collect();
    let name = &records[0].drill.name;
    let title = format!("Drill {name}: {} runs compared", records.len());
    let note = "Oldest run first. Interruptions are the longest loss window of each probe kind; \
                cells out of the run's policy are highlighted."
        .to_owned();

    let page = Page {
        title: title.clone(),
        note: note.clone(),
        runs: records
            .iter()
            .zip(&hrefs)
            .map(|(r, h)| Column {
                run_id: r.drill.run_id.clone(),
                started: r.started.to_string(),
                href: h.clone(),
            })
            .collect(),
        rows,
        generator: format!("kubedrill {}", env!("CARGO_PKG_VERSION")),
    };
    let html = templates.render(INDEX_TEMPLATE, &page)?;
    let index = out.join(INDEX_HTML);
    write_file(&index, &html)?;

    let mut md = String::new();
    let _ = writeln!(md, "# {}\n\n{}\n", escape(&title), escape(&note));
    let _ = writeln!(
        md,
        "| measure | {} |",
        page.runs
            .iter()
            .map(|c| escape(&c.run_id))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|{}", "---|".repeat(page.runs.len() + 1));
    for row in &page.rows {
        let _ = writeln!(
            md,
            "| {} | {} |",
            escape(&row.label),
            row.cells
                .iter()
                .map(|c| {
                    let t = escape(&c.text);
                    if c.class == Some("bad") || c.class == Some("fail") {
                        format!("**{t}**")
                    } else {
                        t
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    md.push_str("\nReports:\n\n");
    for c in &page.runs {
        let _ = writeln!(md, "- [{}]({})", escape(&c.run_id), c.href);
    }
    let markdown = out.join(COMPARE_MD);
    write_file(&markdown, &md)?;
    Ok(Compared {
        index,
        markdown,
        runs: written,
    })
}

fn cell(text: impl Into<String>, bad: bool) -> Cell {
    Cell {
        text: text.into(),
        class: bad.then_some("bad"),
    }
}

fn measures(records: &[&RunRecord], analyses: &[Analysis]) -> Vec<MeasureRow> {
    let both = || records.iter().copied().zip(analyses);
    let mut rows = vec![
        MeasureRow {
            label: "verdict".into(),
            cells: records
                .iter()
                .map(|r| Cell {
                    text: verdict_word(r.verdict.outcome).into(),
                    class: Some(match r.verdict.outcome {
                        Outcome::Pass => "pass",
                        Outcome::Fail => "fail",
                    }),
                })
                .collect(),
        },
        MeasureRow {
            label: "Cilium".into(),
            cells: records
                .iter()
                .map(|r| cell(format!("{} → {}", r.cilium.from, r.cilium.to), false))
                .collect(),
        },
        MeasureRow {
            label: "duration".into(),
            cells: analyses
                .iter()
                .map(|a| cell(a.duration.to_string(), false))
                .collect(),
        },
    ];
    for kind in ProbeKind::ALL {
        if analyses.iter().all(|a| a.kind(kind).is_none()) {
            continue;
        }
        rows.push(MeasureRow {
            label: format!("longest {kind} interruption"),
            cells: both()
                .map(|(r, a)| match a.kind(kind) {
                    None => cell("not probed", false),
                    Some(k) => match &k.longest {
                        None => cell("none", false),
                        Some(i) => cell(
                            i.duration.to_string(),
                            r.policy
                                .max_interruption_ms
                                .get(&kind)
                                .is_some_and(|l| i.duration > *l),
                        ),
                    },
                })
                .collect(),
        });
    }
    rows.push(MeasureRow {
        label: "probes lost".into(),
        cells: both()
            .map(|(r, a)| {
                let worst = r.probes.iter().map(|p| p.loss_ratio()).fold(0.0, f64::max);
                cell(
                    format!(
                        "{} / {} ({})",
                        a.total_lost,
                        a.total_sent,
                        percent(ratio(a.total_lost, a.total_sent))
                    ),
                    worst > r.policy.max_loss_ratio,
                )
            })
            .collect(),
    });
    rows.push(MeasureRow {
        label: "agent (re)starts".into(),
        cells: analyses
            .iter()
            .map(|a| cell(a.agent_starts().to_string(), false))
            .collect(),
    });
    rows.push(MeasureRow {
        label: "container restarts".into(),
        cells: both()
            .map(|(r, a)| {
                cell(
                    a.container_restarts().to_string(),
                    a.nodes
                        .iter()
                        .any(|n| n.container_restarts > r.policy.max_container_restarts),
                )
            })
            .collect(),
    });
    rows.push(MeasureRow {
        label: "pod-burst failures".into(),
        cells: both()
            .map(|(r, a)| match a.pod_burst {
                None => cell("not run", false),
                Some((created, failed)) => cell(
                    format!("{failed} of {}", created + failed),
                    failed > u64::from(r.policy.max_pod_burst_failures),
                ),
            })
            .collect(),
    });
    rows.push(MeasureRow {
        label: "peak agent RSS".into(),
        cells: analyses
            .iter()
            .map(|a| {
                let peak = a
                    .nodes
                    .iter()
                    .filter_map(|n| n.peak_rss_bytes.map(|b| (b, &n.name)))
                    .max_by(|x, y| x.0.cmp(&y.0).then_with(|| y.1.cmp(x.1)));
                cell(
                    peak.map_or("–".into(), |(b, n)| format!("{} ({n})", bytes(b))),
                    false,
                )
            })
            .collect(),
    });
    rows.push(MeasureRow {
        label: "memory leak".into(),
        cells: analyses
            .iter()
            .map(|a| {
                let l = a.leaking_nodes();
                if l.is_empty() {
                    cell("none", false)
                } else {
                    cell(l.join(", "), true)
                }
            })
            .collect(),
    });
    rows.push(MeasureRow {
        label: "helm rollbacks".into(),
        cells: records
            .iter()
            .map(|r| {
                let n = r
                    .helm_events
                    .iter()
                    .filter(|h| matches!(h, HelmEvent::Rollback { .. }))
                    .count();
                cell(n.to_string(), n > 0)
            })
            .collect(),
    });
    rows.push(MeasureRow {
        label: "kube-proxy sightings".into(),
        cells: records
            .iter()
            .map(|r| {
                let n = r.kube_proxy_events.len();
                cell(n.to_string(), n > 0)
            })
            .collect(),
    });
    rows
}

/// A relative URL from directory `from` to file `to` (both made absolute), percent-encoded.
/// Falls back to a `file://` URL of the absolute path when there is no relative one.
fn relative_href(from: &Path, to: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (abs(from), abs(to));
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return format!("file://{}", encode(&to.to_string_lossy()));
    }
    let mut parts: Vec<String> = vec!["..".to_owned(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| encode(&c.as_os_str().to_string_lossy())),
    );
    parts.join("/")
}

/// Percent-encode everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_hrefs() {
        assert_eq!(
            relative_href(Path::new("/x/out"), Path::new("/x/runs/a b/report.html")),
            "../runs/a%20b/report.html"
        );
        assert_eq!(
            relative_href(Path::new("/x"), Path::new("/x/r/report.html")),
            "r/report.html"
        );
    }
}
