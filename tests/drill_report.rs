//! Drill reports from recorded runs (`tests/data/drill/run-*.json`, made by `generate.py` there):
//! golden Markdown summaries and comparison, HTML structure and escaping, leak flags, record
//! checks, the `kubedrill drill` CLI end to end, and a screenshot in headless Chromium.
//!
//! Regenerate the goldens with `UPDATE_GOLDEN=1 cargo test --test drill_report`, then review the
//! diff.

use crate::common;

use common::{chromium, kubedrill, repo, text};
use kubedrill::report::analysis::Analysis;
use kubedrill::report::leak::{LeakVerdict, MIB};
use kubedrill::report::record::{AgentEventKind, Outcome, RunRecord};
use kubedrill::report::{self, ReportError};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

const RUNS: [&str; 2] = ["run-1", "run-2"];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/data/drill").join(format!("{name}.json"))
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("read fixture")
}

fn load(name: &str) -> RunRecord {
    report::load(&fixture(name)).unwrap_or_else(|e| panic!("{name} should load: {e}"))
}

/// `parent/<name>/run.json` with `content`; returns the run directory.
fn put_run(parent: &Path, name: &str, content: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(report::RUN_FILE), content).expect("write run.json");
    dir
}

fn tmp() -> TempDir {
    tempfile::Builder::new()
        .prefix("kubedrill-report-")
        .tempdir()
        .expect("tempdir")
}

/// Text as tera's HTML autoescape writes it.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2F;")
}

/// Compare with a golden file, or write it when `UPDATE_GOLDEN=1`. Returns a message on mismatch.
fn check_golden(rel: &str, actual: &str) -> Option<String> {
    let path = repo().join("tests/golden").join(rel);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "{}: cannot read golden file ({e}); run `UPDATE_GOLDEN=1 cargo test --test drill_report` and review it",
                path.display()
            ));
        }
    };
    (expected != actual).then(|| {
        let e: Vec<&str> = expected.lines().collect();
        let a: Vec<&str> = actual.lines().collect();
        let first = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
        format!(
            "{}: differs from the golden file from line {}:\n- {}\n+ {}\nIf the change is intended, run `UPDATE_GOLDEN=1 cargo test --test drill_report` and commit the new goldens.",
            path.display(),
            first + 1,
            e.get(first).unwrap_or(&"<end>"),
            a.get(first).unwrap_or(&"<end>")
        )
    })
}

/// Every opened element is closed in order (void elements excepted), and no `<` or `>` is left
/// raw outside tags: what an unescaped `<script>` in a name would break.
fn check_balanced(html: &str) -> Result<(), String> {
    const VOID: [&str; 6] = ["meta", "br", "link", "img", "hr", "input"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(['<', '>']) {
        if rest.as_bytes()[i] == b'>' {
            return Err(format!(
                "raw `>` in text near {:?}",
                &rest[i.saturating_sub(40)..i + 1]
            ));
        }
        rest = &rest[i + 1..];
        let end = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[..end];
        if tag.contains('<') {
            return Err(format!("raw `<` inside or before tag {tag:?}"));
        }
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else {
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if !(tag.ends_with('/') || VOID.contains(&name.as_str())) {
                stack.push(name);
            }
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed elements: {stack:?}"))
    }
}

/// The page loads nothing from anywhere.
fn check_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script", "<link", "<img", "<iframe", "src=", "http://", "https://", "url(", "@import",
    ] {
        assert!(!lower.contains(bad), "report is not self-contained: {bad}");
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

// ---------------------------------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------------------------------

#[test]
fn fixtures_are_canonical_records() {
    for name in RUNS {
        let rec = load(name);
        let again = serde_json::to_string_pretty(&rec).unwrap() + "\n";
        let original = fixture_text(name);
        if let Some((i, (a, b))) = again
            .lines()
            .zip(original.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            panic!(
                "{name}: serialising the parsed record should give the file back byte for byte; \
                 line {}: {b:?} became {a:?}",
                i + 1
            );
        }
        assert_eq!(again, original, "{name}: same lines, different ends");
        assert_eq!(rec.nodes.len(), 3);
        let mins = rec.duration().minutes();
        assert!((5.5..8.0).contains(&mins), "{name}: {mins} min");
        // Agents restart in rollout order: cp1, node1, node2.
        let order: Vec<&str> = rec
            .agent_events
            .iter()
            .filter(|e| e.kind == AgentEventKind::Restart)
            .take(3)
            .map(|e| e.node.as_str())
            .collect();
        assert_eq!(order, ["cp1", "node1", "node2"], "{name}");
        for p in &rec.probes {
            assert_eq!(p.rate_per_s, 20);
        }
    }
}

#[test]
fn inconsistent_records_are_rejected_with_paths() {
    let mut v: serde_json::Value = serde_json::from_str(&fixture_text("run-1")).unwrap();
    v["loss_windows"][0]["duration_ms"] = 1799.into();
    v["agent_events"][0]["node"] = "node9".into();
    v["phases"][1]["end"] = "2026-11-20T08:59:00.000Z".into();
    v["probes"][4]["lost"] = 3.into();
    v["verdict"] = serde_json::json!({ "outcome": "fail", "reasons": [] });
    let err = report::parse(&v.to_string(), Path::new("x/run.json")).unwrap_err();
    let ReportError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err}");
    };
    let all = problems.join("\n");
    for needle in [
        "loss_windows[0].duration_ms: 1799 but end - start is 1800",
        "agent_events[0].node: `node9` is not one of the nodes",
        "phases[1]: ends (2026-11-20T08:59:00.000Z) before it starts",
        "phases[1].end: 2026-11-20T08:59:00.000Z is outside the run",
        "probes[4].lost: 3 but its loss windows lost 8",
        "verdict.reasons: a failed verdict needs at least one reason",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert!(
        err.to_string()
            .starts_with("x/run.json: not a consistent run record")
    );
}

#[test]
fn schema_and_shape_errors_point_at_the_file() {
    let bad_schema = fixture_text("run-1").replacen("\"schema\": 1", "\"schema\": 2", 1);
    let e = report::parse(&bad_schema, Path::new("r/run.json")).unwrap_err();
    assert!(matches!(e, ReportError::Schema { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "r/run.json: run record schema 2, but this kubedrill reads schema 1"
    );

    let text = fixture_text("run-1").replacen("\"outcome\": \"ok\"", "\"outcome\": \"meh\"", 1);
    let line = text.lines().position(|l| l.contains("\"meh\"")).unwrap() + 1;
    let e = report::parse(&text, Path::new("r/run.json")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("r/run.json:{line}:")), "{msg}");
    assert!(msg.contains("unknown variant `meh`"), "{msg}");

    let text = fixture_text("run-1").replacen("\"lab\"", "\"labb\"", 1);
    let msg = report::parse(&text, Path::new("r/run.json"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown field `labb`"), "{msg}");

    let text = fixture_text("run-1").replacen(".000Z", "+00:00", 1);
    let msg = report::parse(&text, Path::new("r/run.json"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("is not a UTC timestamp"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

#[test]
fn markdown_summaries_match_goldens() {
    let t = tmp();
    let mut failures = Vec::new();
    for name in RUNS {
        let dir = put_run(t.path(), name, &fixture_text(name));
        let w = report::write(&dir).unwrap();
        assert_eq!(w.markdown, dir.join("summary.md"));
        let md = std::fs::read_to_string(&w.markdown).unwrap();
        failures.extend(check_golden(&format!("drill/{name}.summary.md"), &md));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn comparison_matches_golden_and_links_reports() {
    let t = tmp();
    let d1 = put_run(t.path(), "run-1", &fixture_text("run-1"));
    let d2 = put_run(t.path(), "run-2", &fixture_text("run-2"));
    let out = t.path().join("compare");
    // Given newest first: the comparison orders runs by start time.
    let c = report::compare(&[d2.clone(), d1.clone()], &out).unwrap();
    assert_eq!(c.runs.len(), 2);
    assert_eq!(c.runs[0].record, d1.join("run.json"));
    assert!(d1.join("report.html").is_file() && d2.join("summary.md").is_file());
    let md = std::fs::read_to_string(&c.markdown).unwrap();
    if let Some(f) = check_golden("drill/compare.md", &md) {
        panic!("{f}");
    }
    let html = std::fs::read_to_string(&c.index).unwrap();
    check_balanced(&html).unwrap();
    check_self_contained(&html);
    for run in ["run-1", "run-2"] {
        let href = format!("href=\"..&#x2F;{run}&#x2F;report.html\"");
        assert!(html.contains(&href), "index.html should link {run}: {href}");
    }
    assert!(html.contains("<td class=\"fail\">FAIL</td>"));
    assert!(html.contains("<td class=\"bad\">node2</td>"), "leak cell");
}

/// The two real drills of 1.19.7 → 1.20.2 on the lab, each from the same snapshot, compared as
/// `drill compare` does it: both fail, and the table shows why the second was worse (1–2 s
/// windows under a load of 23–30 on the control plane) where the first stopped at Helm.
#[test]
fn the_two_real_lab_drills_compare() {
    let t = tmp();
    let runs: Vec<PathBuf> = [
        "lab-kde2e-1.19.7-to-1.20.2-run2",
        "lab-kde2e-1.19.7-to-1.20.2",
    ]
    .iter()
    .map(|r| put_run(t.path(), r, &fixture_text(r)))
    .collect();
    let c = report::compare(&runs, &t.path().join("compare")).unwrap();
    assert_eq!(c.runs[0].record, runs[1].join("run.json"), "oldest first");
    let md = std::fs::read_to_string(&c.markdown).unwrap();
    if let Some(f) = check_golden("drill/compare-lab-kde2e.md", &md) {
        panic!("{f}");
    }
    let html = std::fs::read_to_string(&c.index).unwrap();
    check_balanced(&html).unwrap();
    check_self_contained(&html);
}

#[test]
fn comparison_refuses_other_drills_and_nothing() {
    let t = tmp();
    let d1 = put_run(t.path(), "a", &fixture_text("run-1"));
    let other = fixture_text("run-2").replace(
        "\"name\": \"cilium-1.17-to-1.18\"",
        "\"name\": \"cilium-1.18-to-1.19\"",
    );
    let d2 = put_run(t.path(), "b", &other);
    let e = report::compare(&[d1, d2], &t.path().join("out")).unwrap_err();
    assert!(
        matches!(e, ReportError::MixedDrills { .. }),
        "expected MixedDrills, got {e}"
    );
    assert!(e.to_string().contains("`cilium-1.18-to-1.19`"), "{e}");
    assert!(matches!(
        report::compare(&[], &t.path().join("out")),
        Err(ReportError::NoRuns)
    ));
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

#[test]
fn html_report_draws_every_measurement() {
    for name in RUNS {
        let rec = load(name);
        let (html, _) = report::render(&rec).unwrap();
        check_balanced(&html).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_self_contained(&html);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(count(&html, "<svg "), 2, "{name}: timeline and resources");

        // Every loss window: a red rect whose tooltip names its endpoints and duration.
        assert_eq!(
            count(&html, "class=\"loss\""),
            rec.loss_windows.len(),
            "{name}"
        );
        for w in &rec.loss_windows {
            let title = esc(&format!("{}: {} → {}, ", w.kind, w.from, w.to));
            let dur = esc(&format!("{} ({} lost)", w.duration_ms, w.lost));
            let found = html.split("class=\"loss\"><title>").skip(1).any(|s| {
                let t = &s[..s.find("</title>").unwrap()];
                t.starts_with(&title) && t.ends_with(&dur)
            });
            assert!(found, "{name}: no loss rect titled {title}…{dur}");
        }
        // Phases, agent events and Helm markers.
        assert_eq!(count(&html, "class=\"phase "), rec.phases.len());
        assert_eq!(
            count(&html, "class=\"ev restart\""),
            rec.agent_events
                .iter()
                .filter(|e| e.kind == AgentEventKind::Restart)
                .count()
        );
        assert_eq!(
            count(&html, "<rect") - count(&html, "<rect x"),
            0,
            "every rect has coordinates"
        );
        let helm_rects = html
            .split("<rect ")
            .filter(|s| s.contains("class=\"helm ") && s.contains("<title>helm "))
            .count();
        assert_eq!(helm_rects, rec.helm_events.len(), "{name}: helm markers");
        // One CPU and one RSS polyline (at least) per node.
        for (i, _) in rec.nodes.iter().enumerate() {
            assert!(count(&html, &format!("class=\"pl s{i}\"")) >= 2);
        }
        // The tables.
        for id in [
            "verdict",
            "interruptions",
            "restarts",
            "pod-burst",
            "values-diff",
            "versions",
            "memory",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{name}: no #{id}");
        }
        assert!(html.contains("<span class=\"add\">+  tag: v1.18.12</span>"));
    }
    let (html, _) = report::render(&load("run-2")).unwrap();
    assert!(html.contains("<span class=\"badge fail\">FAIL</span>"));
    assert!(html.contains("class=\"helm rollback\""));
    assert!(html.contains("class=\"ev kube-proxy\""));
    assert!(html.contains("<tr class=\"bad\"><td>node2</td><td>37</td><td>3</td>"));
}

#[test]
fn record_text_is_escaped_everywhere() {
    const XSS: &str = "<script>alert(1)</script>";
    let text = fixture_text("run-1").replace("node1", XSS);
    let t = tmp();
    let dir = put_run(t.path(), "xss", &text);
    let w = report::write(&dir).unwrap();
    let html = std::fs::read_to_string(&w.html).unwrap();
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "raw <script> in the HTML"
    );
    assert!(html.contains(&esc(XSS)));
    check_balanced(&html).unwrap();
    // In the tooltip of the loss window that goes to the renamed node.
    assert!(html.contains(&format!(
        "(node2) → pod&#x2F;probe-{} ({})",
        esc(XSS),
        esc(XSS)
    )));
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    assert!(!md.contains("<script"), "raw <script> in the Markdown");
    assert!(md.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

// ---------------------------------------------------------------------------------------------
// Leaks
// ---------------------------------------------------------------------------------------------

#[test]
fn leak_flags_only_the_leaking_agent() {
    let a1 = Analysis::of(&load("run-1"));
    assert!(a1.leaking_nodes().is_empty(), "run-1 has no leak");
    for n in &a1.nodes {
        match n.leak.as_ref().expect("soak window") {
            LeakVerdict::Judged(l) => {
                assert!(
                    l.slope_bytes_per_min.abs() < MIB as f64,
                    "{}: {l:?}",
                    n.name
                )
            }
            other => panic!("{}: {other:?}", n.name),
        }
    }
    let rec2 = load("run-2");
    let a2 = Analysis::of(&rec2);
    assert_eq!(a2.leaking_nodes(), ["node2"]);
    let node2 = a2.nodes.iter().find(|n| n.name == "node2").unwrap();
    let Some(LeakVerdict::Judged(l)) = &node2.leak else {
        panic!("node2 not judged");
    };
    let slope = l.slope_bytes_per_min / MIB as f64;
    assert!((22.0..26.0).contains(&slope), "slope {slope} MiB/min");
    assert!(l.relative_growth > 0.10 && l.monotone);
    let ttl = l.time_to_limit.expect("time to the 2 GiB limit").minutes();
    assert!((65.0..85.0).contains(&ttl), "time to limit {ttl} min");
    assert_eq!(rec2.verdict.outcome, Outcome::Fail);
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn cli_report_writes_both_files() {
    let t = tmp();
    let dir = put_run(t.path(), "run", &fixture_text("run-2"));
    let o = kubedrill(&["drill", "report", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("verdict fail; leak flagged on node2"), "{out}");
    assert!(dir.join("report.html").is_file() && dir.join("summary.md").is_file());

    let o = kubedrill(&["--output", "json", "drill", "report", dir.to_str().unwrap()]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["leaking_nodes"][0], "node2");
}

#[test]
fn cli_bad_json_names_file_and_line() {
    let t = tmp();
    let good = fixture_text("run-1");
    // A syntax error on the line of "ended".
    let line = good.lines().position(|l| l.contains("\"ended\"")).unwrap() + 1;
    let broken = good.replacen("\"ended\": \"", "\"ended\": , \"", 1);
    let dir = put_run(t.path(), "bad", &broken);
    let o = kubedrill(&["drill", "report", dir.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let file = dir.join("run.json");
    assert!(
        err.contains(&format!("{}:{line}:", file.display())),
        "stderr should name {}:{line}: {err}",
        file.display()
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("report.html").exists());

    // Truncated file.
    let dir = put_run(t.path(), "short", &good[..good.len() / 2]);
    let o = kubedrill(&["drill", "report", dir.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("EOF while parsing"), "{err}");

    // No run.json at all.
    let o = kubedrill(&["drill", "report", t.path().join("nope").to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nope/run.json"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cli_compare_writes_index() {
    let t = tmp();
    let d1 = put_run(t.path(), "run-1", &fixture_text("run-1"));
    let d2 = put_run(t.path(), "run-2", &fixture_text("run-2"));
    let out = t.path().join("cmp");
    let o = kubedrill(&[
        "drill",
        "compare",
        d1.to_str().unwrap(),
        d2.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.join("index.html").is_file() && out.join("compare.md").is_file());
    assert!(text(&o.stdout).contains("index.html"));

    let o = kubedrill(&["drill", "compare", d1.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "-o is required");
}

/// The pod, ClusterIP and NodePort held connections of a real lab drill: each opened once,
/// none broken.
fn assert_held_connections_survived(rec: &RunRecord) {
    let held: Vec<_> = rec
        .probes
        .iter()
        .filter_map(|p| p.connections.as_ref())
        .collect();
    assert_eq!(
        held.len(),
        3,
        "pod, ClusterIP and NodePort held connections"
    );
    assert!(held.iter().all(|c| c.opened == 1 && c.broken == 0));
}

/// How the phase `name` ended, as `Ok`/`Failed`/`Skipped`.
fn phase_outcome(rec: &RunRecord, name: &str) -> Option<String> {
    rec.phases
        .iter()
        .find(|p| p.name == name)
        .map(|p| format!("{:?}", p.outcome))
}

/// Each of `phases` ran and ended `Ok`.
fn assert_phases_ok(rec: &RunRecord, phases: &[&str]) {
    for phase in phases {
        assert_eq!(phase_outcome(rec, phase).as_deref(), Some("Ok"), "{phase}");
    }
}

/// The first drill on a real cluster (the seventh lab run's, Cilium 1.19.7 → 1.20.2 on cp1 + w1
/// under TCG; docs/drills.md): it passed pre-flight and ran its probes, then `helm upgrade` and
/// the rollback failed on the overloaded API server's "Please retry" errors. Its record loads
/// as written, and the report shows the failure, every probe and the held connections' survival.
#[test]
fn the_first_real_lab_drill_record_loads_and_reports_its_failure() {
    const REAL: &str = "lab-kde2e-1.19.7-to-1.20.2";
    let rec = load(REAL);
    assert_eq!(rec.lab, "kde2e");
    assert_eq!(
        (rec.cilium.from.as_str(), rec.cilium.to.as_str()),
        ("1.19.7", "1.20.2")
    );
    assert_failed_because(&rec, &["UPGRADE FAILED", "Please retry"]);
    assert_held_connections_survived(&rec);
    let html = real_report_html(REAL);
    for p in &rec.phases {
        assert!(html.contains(&esc(&p.name)), "phase {}", p.name);
    }
    for p in &rec.probes {
        assert!(html.contains(p.kind.as_str()), "probe {}", p.kind);
    }
    assert!(html.contains("survived"));
}

/// The report of the real run `name` (a fixture), written in a fresh run directory: its HTML.
fn real_report_html(name: &str) -> String {
    let t = tmp();
    let dir = put_run(t.path(), name, &fixture_text(name));
    let w = report::write(&dir).unwrap();
    std::fs::read_to_string(&w.html).unwrap()
}

/// The verdict is a failure, one of whose reasons names every one of `needles`.
fn assert_failed_because(rec: &RunRecord, needles: &[&str]) {
    assert_eq!(rec.verdict.outcome, Outcome::Fail);
    assert!(
        rec.verdict
            .reasons
            .iter()
            .any(|r| needles.iter().all(|n| r.contains(n))),
        "{:?}",
        rec.verdict.reasons
    );
}

/// The second real run (the eighth lab run's cluster, 2026-12-07): connect after the reset in
/// a minute, the pre-flight Ready after 49 minutes, the drift without the `devices` false alarm,
/// `helm upgrade` stuck on the overloaded API server and the run stopped with SIGINT — the
/// report written all the same, the held connections intact.
#[test]
fn the_second_real_lab_drill_record_loads_and_reports_its_interruption() {
    const REAL: &str = "lab-kde2e-1.19.7-to-1.20.2-run2";
    let rec = load(REAL);
    assert_eq!(rec.lab, "kde2e");
    assert_failed_because(&rec, &["SIGINT", "interrupted during upgrade/1.20.2"]);
    let outcome = |name: &str| phase_outcome(&rec, name);
    assert_eq!(outcome("preflight").as_deref(), Some("Ok"));
    assert_eq!(outcome("upgrade/1.20.2").as_deref(), Some("Failed"));
    // The chart's `devices: ""` is no longer a datapath change.
    let drift = &rec.config_drift[0];
    assert!(
        drift.changes.iter().all(|c| c.key != "devices"),
        "{drift:?}"
    );
    assert!(drift.changes.iter().all(|c| c.datapath.is_none()));
    assert_held_connections_survived(&rec);
    let html = real_report_html(REAL);
    assert!(html.contains("SIGINT"));
}

/// The third Cilium drill on the lab (2026-12-07, the fourteenth lab run's cluster, its guests
/// on the TSC clock; docs/drills.md): the first real `helm upgrade` 1.19.7 → 1.20.2 that went
/// through — both agents replaced, every node's datapath verified unchanged, soak, report — with
/// one ICMP probe of 54,574 lost and the three held connections intact. No-go all the same, on
/// two real findings: cp1's new agent was killed once (Cilium's fixed 5-minute compile limit at
/// load 23) and the pods created during the rollout never got a network within the burst's limit.
#[test]
fn the_first_real_lab_cilium_upgrade_that_went_through_reports_its_no_go() {
    use kubedrill::report::record::HelmEvent;
    const REAL: &str = "lab-kde2e-1.19.7-to-1.20.2-run3";
    let rec = load(REAL);
    let outcome = |name: &str| phase_outcome(&rec, name);
    assert_phases_ok(
        &rec,
        &[
            "reset",
            "connect",
            "preflight",
            "probes-start",
            "upgrade/1.20.2",
            "soak",
        ],
    );
    assert_eq!(outcome("rollback").as_deref(), Some("Skipped"));
    assert!(matches!(
        rec.helm_events.as_slice(),
        [HelmEvent::Upgrade { revision: 2, chart_version, .. }] if chart_version == "1.20.2"
    ));
    // Both agents replaced; cp1's killed once more after its first start.
    let restarts = |node: &str| {
        rec.agent_events
            .iter()
            .filter(|e| e.node == node && e.kind == AgentEventKind::Restart)
            .count()
    };
    assert_eq!((restarts("cp1"), restarts("w1")), (2, 1));
    assert_eq!(rec.verification.len(), 2);
    assert!(rec.verification.iter().all(|v| v.before == v.after));
    assert_eq!(rec.verdict.reasons.len(), 2, "{:?}", rec.verdict.reasons);
    assert_failed_because(&rec, &["cp1: the agent container restarted 1 time(s)"]);
    assert_failed_because(
        &rec,
        &["pod burst: 4 pod(s) not created", "ContainerCreating"],
    );
    let lost: u64 = rec.probes.iter().map(|p| p.lost).sum();
    assert_eq!(lost, 1);
    assert_held_connections_survived(&rec);
    let html = real_report_html(REAL);
    assert!(html.contains(&esc("upgrade/1.20.2")));
    assert!(html.contains("ContainerCreating"), "the burst's failure");
}

/// The third Kubernetes drill on the lab (the tenth lab run's cluster, 1.34.4 → 1.35.4 with
/// Cilium 1.19.7 staying; docs/drills.md): staged on both nodes at once, then `kubeadm upgrade
/// apply` stopped at kubeadm's own pre-flight — its health-check Job must complete within a
/// hard-coded 15 s, which a TCG control plane cannot do. Its record loads as written; the report
/// shows the failure, the phases and the held connections that survived.
#[test]
fn the_real_lab_kubernetes_drill_record_loads_and_reports_where_kubeadm_stopped() {
    const REAL: &str = "lab-kde2e-kubernetes-1.34.4-to-1.35.4";
    let rec = load(REAL);
    assert_eq!(rec.lab, "kde2e");
    let k = rec.kubernetes.as_ref().expect("a Kubernetes upgrade");
    assert_eq!((k.from.as_str(), k.to.as_str()), ("1.34.4", "1.35.4"));
    assert_failed_because(&rec, &["kubeadm upgrade apply", "[ERROR CreateJob]"]);
    let outcome = |name: &str| phase_outcome(&rec, name);
    assert_eq!(outcome("kubernetes/stage").as_deref(), Some("Ok"));
    assert_eq!(outcome("kubernetes/cp1").as_deref(), Some("Failed"));
    assert_eq!(outcome("kubernetes/workers-1").as_deref(), Some("Skipped"));
    assert_held_connections_survived(&rec);
    let html = real_report_html(REAL);
    assert!(
        html.contains(&esc("kubernetes/cp1")),
        "the failed phase is shown"
    );
    assert!(html.contains(&esc("[ERROR CreateJob]")), "and why");
}

/// The eighth Kubernetes drill on the lab (2026-12-07, docs/drills.md): the first to run every
/// phase for real — `kubeadm upgrade apply` on cp1, `upgrade node` on w1, drains, kubelets,
/// kube-proxy checked absent, soak — and to fail only on the three held connections, which
/// met a closed port at the very start (the probers then started before the responders
/// listened; fixed since). The report shows each phase and why.
#[test]
fn the_real_lab_kubernetes_drill_that_ran_every_phase_reports_its_start_up_breaks() {
    const REAL: &str = "lab-kde2e-kubernetes-1.34.4-to-1.35.4-run8";
    let rec = load(REAL);
    assert_phases_ok(
        &rec,
        &[
            "reset",
            "connect",
            "probes-start",
            "kubernetes/stage",
            "kubernetes/cp1",
            "kubernetes/workers-1",
            "kubernetes/verify",
            "soak",
        ],
    );
    assert!(rec.kube_proxy_events.is_empty());
    assert_eq!(rec.verdict.reasons.len(), 3, "{:?}", rec.verdict.reasons);
    for kind in ["tcp-pod-held", "tcp-clusterip-held", "tcp-nodeport-held"] {
        assert_failed_because(
            &rec,
            &[kind, "the held connection broke 1 time(s) (2 opened)"],
        );
    }
    // Every window is the one instant at the start, one probe each.
    assert!(rec.loss_windows.iter().all(|w| w.lost == 1));
    let html = real_report_html(REAL);
    assert!(html.contains(&esc("kubernetes/workers-1")));
    assert!(
        html.contains(&esc("broke 1× (2 opened)")),
        "the connections' fate"
    );
}

/// The eleventh Kubernetes drill on the lab (2026-12-07, the thirteenth lab run's cluster,
/// docs/drills.md): staged, then `kubeadm upgrade apply` stopped at kubedrill's then fixed
/// 30-minute limit while the new API server kept failing its own start-up hooks on the TCG
/// control plane. The held connections survived the 40 minutes; the report says where it stopped.
#[test]
fn the_real_lab_kubernetes_drill_stopped_at_the_kubeadm_limit_reports_it() {
    const REAL: &str = "lab-kde2e-kubernetes-1.34.4-to-1.35.4-run11";
    let rec = load(REAL);
    let outcome = |name: &str| phase_outcome(&rec, name);
    assert_eq!(outcome("kubernetes/stage").as_deref(), Some("Ok"));
    assert_eq!(outcome("kubernetes/cp1").as_deref(), Some("Failed"));
    assert_eq!(outcome("kubernetes/workers-1").as_deref(), Some("Skipped"));
    assert_failed_because(
        &rec,
        &["kubeadm upgrade apply v1.35.4", "timed out after 1800s"],
    );
    assert_held_connections_survived(&rec);
    let html = real_report_html(REAL);
    assert!(
        html.contains(&esc("timed out after 1800s")),
        "why it stopped"
    );
}

/// The twelfth Kubernetes drill on the lab (2026-12-08, the fourteenth lab run's cluster, its
/// guests on the TSC clock; docs/drills.md): **the first go verdict** — `kubeadm upgrade apply`
/// 1.34.4 → 1.35.4 on cp1 at the first attempt, `upgrade node` on w1, both drained, kubelets
/// upgraded, Ready, uncordoned, kube-proxy still absent, soak — and not one of 49,596 probes lost,
/// the three held connections intact through etcd's, the API server's and both kubelets' restarts.
#[test]
fn the_first_real_lab_kubernetes_drill_with_a_go_verdict() {
    const REAL: &str = "lab-kde2e-kubernetes-1.34.4-to-1.35.4-run12";
    let rec = load(REAL);
    assert_eq!(
        rec.verdict.outcome,
        Outcome::Pass,
        "{:?}",
        rec.verdict.reasons
    );
    let k = rec.kubernetes.as_ref().expect("a Kubernetes upgrade");
    assert_eq!((k.from.as_str(), k.to.as_str()), ("1.34.4", "1.35.4"));
    let outcome = |name: &str| phase_outcome(&rec, name);
    assert_phases_ok(
        &rec,
        &[
            "reset",
            "connect",
            "preflight",
            "probes-start",
            "kubernetes/stage",
            "kubernetes/cp1",
            "kubernetes/workers-1",
            "kubernetes/verify",
            "soak",
        ],
    );
    assert_eq!(outcome("rollback").as_deref(), Some("Skipped"));
    assert!(rec.kube_proxy_events.is_empty(), "kube-proxy stayed away");
    assert!(rec.loss_windows.is_empty());
    assert!(rec.probes.iter().all(|p| p.lost == 0 && p.sent > 6000));
    assert_held_connections_survived(&rec);
    // No agent restarted: Cilium stayed at 1.19.7 through the Kubernetes upgrade.
    assert!(rec.agent_events.iter().all(|e| e.restart_count == 0));
    let html = real_report_html(REAL);
    assert!(html.contains(&esc("kubernetes/workers-1")));
    assert!(html.contains("PASS"), "the verdict");
}

/// The faults injected for real (2026-12-08, the fourteenth lab run's cluster; docs/drills.md):
/// Cilium 1.19.7 → 1.20.2 with `bad-value`, `kill-agent` on cp1 10 s after `helm upgrade` and
/// w1's link down for 6 s at 40 s. The new agents crash-looped, the rollout was given up at
/// `CrashLoopBackOff`, every probe lost minutes, the held connections broke, and the rollback ran
/// (revision 3, back to 1); `kill-agent` found no agent to kill and says so. Verdict: no-go.
#[test]
fn the_real_lab_fault_drill_shows_every_fault_and_rolls_back() {
    use kubedrill::report::record::HelmEvent;
    const REAL: &str = "lab-kde2e-1.19.7-to-1.20.2-faults";
    let rec = load(REAL);
    let fault = |kind: &str| {
        rec.faults
            .iter()
            .find(|f| f.kind == kind)
            .unwrap_or_else(|| panic!("{kind} recorded"))
    };
    assert!(fault("bad-value").injected);
    let link = fault("link-down");
    assert!(
        link.injected && link.detail == "eth0 down for 6 s",
        "{link:?}"
    );
    let kill = fault("kill-agent");
    assert!(!kill.injected && kill.detail.contains("no cilium-agent running"));
    let outcome = |name: &str| phase_outcome(&rec, name);
    assert_eq!(outcome("upgrade/1.20.2").as_deref(), Some("Failed"));
    assert_eq!(outcome("rollback").as_deref(), Some("Failed"));
    assert!(matches!(
        rec.helm_events.as_slice(),
        [
            HelmEvent::Upgrade { revision: 2, .. },
            HelmEvent::Rollback {
                revision: 3,
                to_revision: 1,
                ..
            }
        ]
    ));
    assert_failed_because(&rec, &["CrashLoopBackOff after 3 restarts"]);
    assert_failed_because(&rec, &["rolled back: upgrade step failed"]);
    assert_failed_because(&rec, &["the held connection broke"]);
    assert!(
        rec.loss_windows.iter().any(|w| w.duration_ms.0 > 60_000),
        "minutes of loss"
    );
    let html = real_report_html(REAL);
    assert!(html.contains("Injected faults"));
    assert!(html.contains(&esc("eth0 down for 6 s")));
    assert!(html.contains("not injected"));
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------------------------

/// The report of a real drill (the second 1.19.7 → 1.20.2 drill on the lab, with its 1–2 s
/// windows during the upgrade) rendered and screenshot in headless Chromium at 1400×1800, kept
/// as `target/test-artifacts/drill-report.png`; checks the PNG and that the page is not blank
/// (red loss bars, many colours), and that Chromium's DOM has every loss window and no script.
#[test]
fn chromium_renders_the_report() {
    const REAL: &str = "lab-kde2e-1.19.7-to-1.20.2-run2";
    let Some(bin) = chromium::skip_unless_available("chromium_renders_the_report") else {
        return;
    };
    let t = tmp();
    let rec = load(REAL);
    let dir = put_run(t.path(), REAL, &fixture_text(REAL));
    let w = report::write(&dir).unwrap();
    let url = format!("file://{}", w.html.display());

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png_path = artifacts.join("drill-report.png");
    let _ = std::fs::remove_file(&png_path);
    let timeout = Duration::from_secs(120);
    let run = chromium::run(
        &bin,
        &[
            "--hide-scrollbars".into(),
            format!("--screenshot={}", png_path.display()),
            "--window-size=1400,1800".into(),
            url.clone(),
        ],
        timeout,
    );
    assert_eq!(run.code, Some(0), "chromium failed:\n{}", run.stderr);
    let data = std::fs::read(&png_path)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png_path.display()));
    assert!(
        data.len() > 30_000,
        "screenshot is only {} bytes",
        data.len()
    );
    let png = chromium::decode_png(&data).unwrap();
    assert_eq!((png.width, png.height), (1400, 1800));
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 12);
    let loss_red = png
        .rgb
        .iter()
        .filter(|p| near(p, [0xd6, 0x27, 0x28]))
        .count();
    assert!(
        loss_red >= 20,
        "only {loss_red} loss-red pixels: are the loss bars drawn?"
    );
    let white = png.rgb.iter().filter(|p| near(p, [255, 255, 255])).count();
    let ink = 1.0 - white as f64 / png.rgb.len() as f64;
    assert!(ink > 0.05, "the page is {:.1} % non-white", ink * 100.0);
    let mut colours: Vec<[u8; 3]> = png.rgb.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 50, "only {} colours", colours.len());
    eprintln!(
        "screenshot: {} ({} bytes, {}×{}, {:.1} % ink, {} colours)",
        png_path.display(),
        data.len(),
        png.width,
        png.height,
        ink * 100.0,
        colours.len()
    );

    // The DOM as Chromium parsed it: every loss window is a rect with its title.
    let dom = chromium::run(&bin, &["--dump-dom".into(), url], timeout);
    assert_eq!(
        dom.code,
        Some(0),
        "chromium --dump-dom failed:\n{}",
        dom.stderr
    );
    assert_eq!(
        count(&dom.stdout, "class=\"loss\""),
        rec.loss_windows.len(),
        "{}",
        dom.stdout
    );
    assert!(
        dom.stdout
            .contains("<title>icmp-pod-pod: pod/kd-client (cp1) → pod/kd-backend (w1)"),
        "{}",
        dom.stdout
    );

    // And a hostile node name stays text in the browser, too.
    let xss = put_run(
        t.path(),
        "xss",
        &fixture_text("run-1").replace("node1", "<script>alert(1)</script>"),
    );
    let w = report::write(&xss).unwrap();
    let dom = chromium::run(
        &bin,
        &["--dump-dom".into(), format!("file://{}", w.html.display())],
        timeout,
    );
    assert_eq!(dom.code, Some(0), "{}", dom.stderr);
    assert!(dom.stdout.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !dom.stdout.contains("<script"),
        "Chromium parsed a script element"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------------------------

/// Fields that hostile or broken drills could fill with anything.
const POINTERS: [&str; 22] = [
    "/probes/0/sent",
    "/probes/0/lost",
    "/probes/0/rate_per_s",
    "/loss_windows/0/duration_ms",
    "/loss_windows/0/lost",
    "/loss_windows/0/start",
    "/resources/1/samples/3/rss_bytes",
    "/resources/1/samples/30/cpu_millicores",
    "/resources/2/samples/50/at",
    "/agent_events/2/restart_count",
    "/agent_events/4/at",
    "/policy/max_loss_ratio",
    "/policy/leak/segments",
    "/policy/leak/min_samples",
    "/policy/leak/min_slope_bytes_per_min",
    "/policy/leak/memory_limit_bytes",
    "/nodes/1/name",
    "/phases/2/name",
    "/values_diff/3",
    "/verdict/reasons/0",
    "/ended",
    "/soak/start",
];

fn hostile_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    prop_oneof![
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        "\\PC{0,40}".prop_map(serde_json::Value::from),
        "[<>&|`*_#\\[\\]\n\u{2028}a-z ]{0,30}".prop_map(serde_json::Value::from),
        (0u32..10_000, 1u32..13, 1u32..29, 0u32..24, 0u32..1000).prop_map(|(y, mo, d, h, ms)| {
            serde_json::Value::from(format!("{y:04}-{mo:02}-{d:02}T{h:02}:00:00.{ms:03}Z"))
        }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("KUBEDRILL_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever the values, loading either fails with an error or the reports render.
    #[test]
    fn hostile_values_never_panic(
        edits in proptest::collection::vec((0..POINTERS.len(), hostile_value()), 1..6)
    ) {
        let mut v: serde_json::Value = serde_json::from_str(&fixture_text("run-2")).unwrap();
        for (i, val) in edits {
            if let Some(slot) = v.pointer_mut(POINTERS[i]) {
                *slot = val;
            }
        }
        if let Ok(rec) = report::parse(&v.to_string(), Path::new("fuzz/run.json")) {
            let (html, md) = report::render(&rec).unwrap();
            proptest::prop_assert!(check_balanced(&html).is_ok(), "{:?}", check_balanced(&html));
            proptest::prop_assert!(md.starts_with("# Drill "));
        }
    }
}
