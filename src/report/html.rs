//! The HTML report (`report.html`): one self-contained file (inline CSS, inline SVG, no scripts,
//! no external fonts or images) rendered from `templates/report/report.html.tera` with tera's
//! HTML autoescape on, so every string from the record is escaped.

use super::ReportError;
use super::analysis::Analysis;
use super::markdown::verdict_word;
use super::record::{Outcome, RunRecord};
use super::svg::{self, Svg};
use super::tables::{self, Table};
use crate::render::Templates;
use serde::Serialize;

/// Template name of the run report.
pub const REPORT_TEMPLATE: &str = "report/report.html";

#[derive(Serialize)]
struct Page {
    title: String,
    drill: String,
    run_id: String,
    lab: String,
    started: String,
    ended: String,
    duration: String,
    cilium_from: String,
    cilium_to: String,
    kubernetes: Option<(String, String)>,
    verdict: &'static str,
    verdict_class: &'static str,
    reasons: Vec<String>,
    leak_flags: Vec<String>,
    timeline: Svg,
    resources: Option<Svg>,
    tables: Vec<Table>,
    values_diff: Vec<DiffLine>,
    generator: String,
}

#[derive(Serialize)]
struct DiffLine {
    class: &'static str,
    text: String,
}

/// Render the report of one run.
pub fn render(r: &RunRecord, a: &Analysis, templates: &Templates) -> Result<String, ReportError> {
    let page = Page {
        title: format!(
            "{} — {} — {}",
            r.drill.name,
            r.drill.run_id,
            verdict_word(r.verdict.outcome)
        ),
        drill: r.drill.name.clone(),
        run_id: r.drill.run_id.clone(),
        lab: r.lab.clone(),
        started: r.started.to_string(),
        ended: r.ended.to_string(),
        duration: a.duration.to_string(),
        cilium_from: r.cilium.from.clone(),
        cilium_to: r.cilium.to.clone(),
        kubernetes: r
            .kubernetes
            .as_ref()
            .map(|k| (k.from.clone(), k.to.clone())),
        verdict: verdict_word(r.verdict.outcome),
        verdict_class: match r.verdict.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
        },
        reasons: r.verdict.reasons.clone(),
        leak_flags: a
            .nodes
            .iter()
            .filter(|n| n.leak.as_ref().is_some_and(|l| l.leaking()))
            .map(|n| format!("{}: {}", n.name, tables::leak_word(n.leak.as_ref())))
            .collect(),
        timeline: svg::timeline(r),
        resources: svg::resources(r),
        tables: tables::sections(r, a),
        values_diff: r
            .values_diff
            .iter()
            .map(|l| DiffLine {
                class: diff_class(l),
                text: l.clone(),
            })
            .collect(),
        generator: format!("kubedrill {}", env!("CARGO_PKG_VERSION")),
    };
    Ok(templates.render(REPORT_TEMPLATE, &page)?)
}

fn diff_class(line: &str) -> &'static str {
    if line.starts_with("+++") || line.starts_with("---") {
        "hdr"
    } else if line.starts_with("@@") {
        "hunk"
    } else if line.starts_with('+') {
        "add"
    } else if line.starts_with('-') {
        "del"
    } else {
        "ctx"
    }
}
