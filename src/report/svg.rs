//! SVG geometry for the report, computed here so that the template only prints shapes: the
//! timeline (phases, Helm markers, loss windows per probe kind, agent events per node,
//! kube-proxy sightings) and the resource panel (CPU and RSS per node). Coordinates are rounded
//! to 0.1 px and every shape comes from the record in a fixed order, so output is deterministic.
//! Text goes into the template unescaped here and is escaped by tera's HTML autoescape.

use super::analysis::bytes;
use super::record::{AgentEventKind, HelmEvent, ProbeKind, RunRecord};
use super::time::{Millis, Timestamp, offset};
use serde::Serialize;

/// Drawing width in px.
pub const WIDTH: f64 = 1320.0;
/// Left column for lane labels.
const LEFT: f64 = 180.0;
/// Right margin.
const RIGHT: f64 = 20.0;
/// Plot width.
const PLOT: f64 = WIDTH - LEFT - RIGHT;
/// Lane height and pitch.
const LANE_H: f64 = 20.0;
const LANE_PITCH: f64 = 28.0;
/// Node colour classes (`s0` … `s7` in the stylesheet).
const PALETTE: usize = 8;

/// One SVG drawing.
#[derive(Debug, Clone, Serialize)]
pub struct Svg {
    /// Width in px.
    pub width: String,
    /// Height in px.
    pub height: String,
    /// Accessible label.
    pub label: String,
    /// Shapes in paint order.
    pub shapes: Vec<Shape>,
}

/// A shape; `class` selects its style, `title` becomes a `<title>` tooltip.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Shape {
    /// `<rect>`.
    Rect {
        /// x.
        x: String,
        /// y.
        y: String,
        /// Width.
        w: String,
        /// Height.
        h: String,
        /// CSS class.
        class: String,
        /// Tooltip.
        title: Option<String>,
    },
    /// `<line>`.
    Line {
        /// x1.
        x1: String,
        /// y1.
        y1: String,
        /// x2.
        x2: String,
        /// y2.
        y2: String,
        /// CSS class.
        class: String,
        /// Tooltip.
        title: Option<String>,
    },
    /// `<circle>`.
    Circle {
        /// Centre x.
        cx: String,
        /// Centre y.
        cy: String,
        /// Radius.
        r: String,
        /// CSS class.
        class: String,
        /// Tooltip.
        title: Option<String>,
    },
    /// `<polyline>`.
    Polyline {
        /// `x,y x,y …`.
        points: String,
        /// CSS class.
        class: String,
        /// Tooltip.
        title: Option<String>,
    },
    /// `<text>`.
    Text {
        /// x.
        x: String,
        /// y (baseline).
        y: String,
        /// `start`, `middle` or `end`.
        anchor: &'static str,
        /// CSS class.
        class: String,
        /// The text.
        text: String,
    },
}

fn n(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.1}");
    if s == "-0.0" { "0.0".to_owned() } else { s }
}

fn rect(x: f64, y: f64, w: f64, h: f64, class: &str, title: Option<String>) -> Shape {
    Shape::Rect {
        x: n(x),
        y: n(y),
        w: n(w.max(0.0)),
        h: n(h.max(0.0)),
        class: class.to_owned(),
        title,
    }
}

fn line(x1: f64, y1: f64, x2: f64, y2: f64, class: &str, title: Option<String>) -> Shape {
    Shape::Line {
        x1: n(x1),
        y1: n(y1),
        x2: n(x2),
        y2: n(y2),
        class: class.to_owned(),
        title,
    }
}

fn text(x: f64, y: f64, anchor: &'static str, class: &str, s: impl Into<String>) -> Shape {
    Shape::Text {
        x: n(x),
        y: n(y),
        anchor,
        class: class.to_owned(),
        text: s.into(),
    }
}

fn circle(cx: f64, cy: f64, r: f64, class: &str, title: Option<String>) -> Shape {
    Shape::Circle {
        cx: n(cx),
        cy: n(cy),
        r: n(r),
        class: class.to_owned(),
        title,
    }
}

/// Maps times of the run onto the plot's x range.
#[derive(Debug, Clone, Copy)]
struct XScale {
    start: Timestamp,
    span: f64,
}

impl XScale {
    fn of(r: &RunRecord) -> Self {
        XScale {
            start: r.started,
            span: (r.duration().0 as f64).max(1.0),
        }
    }

    fn x(&self, t: Timestamp) -> f64 {
        let ms = (t.unix_ms() - self.start.unix_ms()) as f64;
        LEFT + PLOT * (ms / self.span).clamp(0.0, 1.0)
    }

    fn at(&self, t: Timestamp) -> String {
        offset(t.since(self.start))
    }
}

/// Time-axis tick step: the smallest of a fixed ladder giving at most 12 ticks; beyond the
/// ladder, whole hours, still at most 12 ticks (a record spanning years must not draw millions).
fn tick_step(span_ms: f64) -> u64 {
    const LADDER: [u64; 13] = [
        1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
        1_800_000, 3_600_000,
    ];
    LADDER
        .iter()
        .copied()
        .find(|s| span_ms / *s as f64 <= 12.0)
        .unwrap_or_else(|| {
            let hours = (span_ms / 12.0 / 3_600_000.0).ceil();
            (hours.min(1e12) as u64).max(1).saturating_mul(3_600_000)
        })
}

/// `+m:ss` for axis labels.
fn axis_label(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("+{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("+{}:{:02}", s / 60, s % 60)
    }
}

fn time_axis(shapes: &mut Vec<Shape>, xs: XScale, y: f64) {
    shapes.push(line(LEFT, y, LEFT + PLOT, y, "axis", None));
    let step = tick_step(xs.span);
    let mut t = 0u64;
    while t as f64 <= xs.span {
        let x = LEFT + PLOT * (t as f64 / xs.span);
        shapes.push(line(x, y, x, y + 5.0, "axis", None));
        shapes.push(text(x, y + 17.0, "middle", "tick", axis_label(t)));
        t += step;
    }
}

struct Lane {
    y: f64,
}

impl Lane {
    fn mid(&self) -> f64 {
        self.y + LANE_H / 2.0
    }
}

/// The timeline: one lane for phases, one for Helm, one per probe kind with probes, one per
/// node's agent, and one for kube-proxy when it was seen.
pub fn timeline(r: &RunRecord) -> Svg {
    let xs = XScale::of(r);
    let mut shapes = Vec::new();
    let mut next_y = 8.0;
    let mut lane = |shapes: &mut Vec<Shape>, label: String, class: &str| {
        let l = Lane { y: next_y };
        next_y += LANE_PITCH;
        shapes.push(rect(LEFT, l.y, PLOT, LANE_H, class, None));
        shapes.push(text(LEFT - 8.0, l.y + 14.0, "end", "lbl", label));
        l
    };
    let phases = lane(&mut shapes, "phases".into(), "lane");
    let helm = lane(&mut shapes, "helm".into(), "lane");
    let kinds: Vec<ProbeKind> = ProbeKind::ALL
        .iter()
        .copied()
        .filter(|k| r.probes.iter().any(|p| p.kind == *k))
        .collect();
    let probe_lanes: Vec<(ProbeKind, Lane)> = kinds
        .iter()
        .map(|k| (*k, lane(&mut shapes, format!("probe {k}"), "lane probe")))
        .collect();
    let agent_lanes: Vec<Lane> = r
        .nodes
        .iter()
        .map(|nd| lane(&mut shapes, format!("agent {}", nd.name), "lane"))
        .collect();
    let kp_lane =
        (!r.kube_proxy_events.is_empty()).then(|| lane(&mut shapes, "kube-proxy".into(), "lane"));
    let fault_lane =
        (!r.faults.is_empty()).then(|| lane(&mut shapes, "injected faults".into(), "lane"));
    let top = phases.y - 4.0;
    let bottom = next_y - LANE_PITCH + LANE_H + 4.0;

    if let Some(s) = &r.soak {
        let (x0, x1) = (xs.x(s.start), xs.x(s.end));
        shapes.push(rect(
            x0,
            top,
            x1 - x0,
            bottom - top,
            "soak",
            Some(format!(
                "soak window {} – {} ({})",
                xs.at(s.start),
                xs.at(s.end),
                s.duration()
            )),
        ));
    }

    // Phases and their boundaries.
    for p in &r.phases {
        let (x0, x1) = (xs.x(p.start), xs.x(p.end));
        let w = (x1 - x0).max(1.0);
        shapes.push(rect(
            x0,
            phases.y,
            w,
            LANE_H,
            &format!("phase {}", p.outcome.as_str()),
            Some(format!(
                "{}: {}, {} – {} ({})",
                p.name,
                p.outcome.as_str(),
                xs.at(p.start),
                xs.at(p.end),
                p.end.since(p.start)
            )),
        ));
        // Label only when it fits (about 6.5 px per character at the label size).
        if w >= p.name.chars().count() as f64 * 6.5 + 6.0 {
            shapes.push(text(
                x0 + 3.0,
                phases.y + 14.0,
                "start",
                "plbl",
                p.name.clone(),
            ));
        }
    }
    let mut bounds: Vec<Timestamp> = r.phases.iter().flat_map(|p| [p.start, p.end]).collect();
    bounds.sort();
    bounds.dedup();
    for b in bounds {
        let x = xs.x(b);
        shapes.push(line(x, top, x, bottom, "boundary", None));
    }

    // Helm upgrades and rollbacks: a line across every lane, a marker and a label.
    for h in &r.helm_events {
        let x = xs.x(h.at());
        let (class, short) = match h {
            HelmEvent::Upgrade { revision, .. } => ("helm upgrade", format!("upgrade r{revision}")),
            HelmEvent::Rollback {
                revision,
                to_revision,
                ..
            } => (
                "helm rollback",
                format!("rollback r{revision}→r{to_revision}"),
            ),
        };
        shapes.push(line(x, top, x, bottom, class, None));
        shapes.push(rect(
            x - 4.0,
            helm.y + 2.0,
            8.0,
            LANE_H - 4.0,
            class,
            Some(format!("helm {} at {}", h.describe(), xs.at(h.at()))),
        ));
        shapes.push(text(x + 7.0, helm.y + 14.0, "start", "hlbl", short));
    }

    // Loss windows, red, at least 2 px wide so that short ones stay visible.
    for (kind, l) in &probe_lanes {
        for w in r.loss_windows.iter().filter(|w| w.kind == *kind) {
            let (x0, x1) = (xs.x(w.start), xs.x(w.end));
            shapes.push(rect(
                x0,
                l.y,
                (x1 - x0).max(2.0),
                LANE_H,
                "loss",
                Some(format!(
                    "{kind}: {} → {}, {} – {}, {} ({} lost)",
                    w.from,
                    w.to,
                    xs.at(w.start),
                    xs.at(w.end),
                    w.duration_ms,
                    w.lost
                )),
            ));
        }
    }

    // Agents: not-ready spans, then restart / ready / not-ready marks.
    for (nd, l) in r.nodes.iter().zip(&agent_lanes) {
        let mut events: Vec<_> = r
            .agent_events
            .iter()
            .filter(|e| e.node == nd.name)
            .collect();
        events.sort_by_key(|e| e.at);
        let mut down: Option<Timestamp> = None;
        let mut spans = Vec::new();
        for e in &events {
            match e.kind {
                AgentEventKind::NotReady | AgentEventKind::Restart => {
                    down.get_or_insert(e.at);
                }
                AgentEventKind::Ready => {
                    if let Some(s) = down.take() {
                        spans.push((s, e.at));
                    }
                }
            }
        }
        if let Some(s) = down {
            spans.push((s, r.ended));
        }
        for (s, e) in spans {
            let (x0, x1) = (xs.x(s), xs.x(e));
            shapes.push(rect(
                x0,
                l.y + 4.0,
                (x1 - x0).max(1.0),
                LANE_H - 8.0,
                "down",
                Some(format!(
                    "agent on {} not ready {} – {} ({})",
                    nd.name,
                    xs.at(s),
                    xs.at(e),
                    e.since(s)
                )),
            ));
        }
        for e in &events {
            shapes.push(circle(
                xs.x(e.at),
                l.mid(),
                if e.kind == AgentEventKind::Restart {
                    5.0
                } else {
                    3.5
                },
                &format!("ev {}", e.kind.as_str()),
                Some(format!(
                    "agent on {}: {} at {} (container restarts: {})",
                    nd.name,
                    e.kind.as_str(),
                    xs.at(e.at),
                    e.restart_count
                )),
            ));
        }
    }

    if let Some(l) = &fault_lane {
        for f in &r.faults {
            shapes.push(circle(
                xs.x(f.at),
                l.mid(),
                5.0,
                "ev fault",
                Some(format!(
                    "{} at {}{}: {}",
                    f.kind,
                    xs.at(f.at),
                    f.node
                        .as_ref()
                        .map(|n| format!(" on {n}"))
                        .unwrap_or_default(),
                    f.detail
                )),
            ));
        }
    }
    if let Some(l) = &kp_lane {
        for k in &r.kube_proxy_events {
            shapes.push(circle(
                xs.x(k.at),
                l.mid(),
                5.0,
                "ev kube-proxy",
                Some(format!(
                    "kube-proxy at {}{}: {}",
                    xs.at(k.at),
                    k.node
                        .as_ref()
                        .map(|n| format!(" on {n}"))
                        .unwrap_or_default(),
                    k.detail
                )),
            ));
        }
    }

    time_axis(&mut shapes, xs, bottom + 4.0);
    Svg {
        width: n(WIDTH),
        height: n(bottom + 30.0),
        label: format!(
            "Timeline of drill run {}: phases, helm actions, probe loss windows and agent events",
            r.drill.run_id
        ),
        shapes,
    }
}

/// A value axis: `lo`, `hi` and the tick step, all multiples of a 1-2-2.5-5 step.
fn value_axis(min: f64, max: f64, from_zero: bool) -> (f64, f64, f64) {
    let min = if from_zero { 0.0 } else { min };
    let raw = ((max - min) / 4.0).max(max.abs() / 40.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let lo = (min / step).floor() * step;
    let mut hi = (max / step).ceil() * step;
    if hi <= lo {
        hi = lo + step;
    }
    (lo, hi, step)
}

/// Splits a node's samples into runs without gaps (a gap is more than 2.5 × the median
/// interval: the agent was down and nothing was sampled).
fn runs<T: Copy>(points: &[(Timestamp, T)]) -> Vec<Vec<(Timestamp, T)>> {
    let mut dts: Vec<u64> = points.windows(2).map(|w| w[1].0.since(w[0].0).0).collect();
    dts.sort_unstable();
    let median = dts.get(dts.len() / 2).copied().unwrap_or(0);
    let limit = Millis(median.saturating_mul(5) / 2);
    let mut out: Vec<Vec<(Timestamp, T)>> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let gap = i > 0 && p.0.since(points[i - 1].0) > limit;
        match out.last_mut() {
            Some(cur) if !gap => cur.push(*p),
            _ => out.push(vec![*p]),
        }
    }
    out
}

/// CPU (millicores) and RSS (MiB) per node, sharing the timeline's x axis. None without samples.
pub fn resources(r: &RunRecord) -> Option<Svg> {
    if r.resources.iter().all(|x| x.samples.is_empty()) {
        return None;
    }
    let xs = XScale::of(r);
    let mut shapes = Vec::new();
    // Legend.
    let mut lx = LEFT;
    for (i, nd) in r.nodes.iter().enumerate() {
        shapes.push(rect(
            lx,
            6.0,
            14.0,
            4.0,
            &format!("key s{}", i % PALETTE),
            None,
        ));
        shapes.push(text(lx + 18.0, 13.0, "start", "lbl", nd.name.clone()));
        lx += 40.0 + 7.0 * nd.name.chars().count() as f64;
    }
    const CHART_H: f64 = 170.0;
    let charts: [(&str, f64, bool); 2] = [("agent CPU", 40.0, true), ("agent RSS", 260.0, false)];
    for (ci, (title, top, is_cpu)) in charts.iter().enumerate() {
        let value = |s: &super::record::ResourceSample| -> f64 {
            if *is_cpu {
                f64::from(s.cpu_millicores)
            } else {
                s.rss_bytes as f64 / super::leak::MIB as f64
            }
        };
        let all: Vec<f64> = r
            .resources
            .iter()
            .flat_map(|x| x.samples.iter().map(value))
            .collect();
        let vmin = all.iter().copied().fold(f64::INFINITY, f64::min);
        let vmax = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi, step) = value_axis(vmin, vmax, *is_cpu);
        let y = |v: f64| top + CHART_H - CHART_H * ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        shapes.push(text(
            LEFT,
            top - 8.0,
            "start",
            "ctitle",
            (*title).to_owned(),
        ));
        shapes.push(rect(LEFT, *top, PLOT, CHART_H, "frame", None));
        if let Some(s) = &r.soak {
            let (x0, x1) = (xs.x(s.start), xs.x(s.end));
            shapes.push(rect(x0, *top, x1 - x0, CHART_H, "soak", None));
        }
        let mut v = lo;
        let mut guard = 0;
        while v <= hi + step / 1000.0 && guard < 50 {
            let yy = y(v);
            shapes.push(line(LEFT, yy, LEFT + PLOT, yy, "grid", None));
            let label = if *is_cpu {
                format!("{v:.0} m")
            } else {
                bytes((v * super::leak::MIB as f64) as u64)
            };
            shapes.push(text(LEFT - 6.0, yy + 4.0, "end", "tick", label));
            v += step;
            guard += 1;
        }
        for p in &r.phases {
            let x = xs.x(p.start);
            shapes.push(line(x, *top, x, top + CHART_H, "boundary", None));
        }
        for h in &r.helm_events {
            let x = xs.x(h.at());
            let class = match h {
                HelmEvent::Upgrade { .. } => "helm upgrade",
                HelmEvent::Rollback { .. } => "helm rollback",
            };
            shapes.push(line(x, *top, x, top + CHART_H, class, None));
        }
        for res in &r.resources {
            let idx = r.node_index(&res.node).unwrap_or(0);
            let pts: Vec<(Timestamp, f64)> = res.samples.iter().map(|s| (s.at, value(s))).collect();
            let peak = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            for run in runs(&pts) {
                let points = run
                    .iter()
                    .map(|(t, v)| format!("{},{}", n(xs.x(*t)), n(y(*v))))
                    .collect::<Vec<_>>()
                    .join(" ");
                let tip = if *is_cpu {
                    format!("{} CPU, peak {peak:.0} m", res.node)
                } else {
                    format!(
                        "{} RSS, peak {}",
                        res.node,
                        bytes((peak * super::leak::MIB as f64) as u64)
                    )
                };
                shapes.push(Shape::Polyline {
                    points,
                    class: format!("pl s{}", idx % PALETTE),
                    title: Some(tip),
                });
            }
        }
        if ci == 1 {
            time_axis(&mut shapes, xs, top + CHART_H);
        }
    }
    Some(Svg {
        width: n(WIDTH),
        height: n(260.0 + CHART_H + 30.0),
        label: format!("Cilium agent CPU and RSS per node, run {}", r.drill.run_id),
        shapes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_axes_are_round() {
        assert_eq!(value_axis(0.0, 870.0, true), (0.0, 1000.0, 250.0));
        assert_eq!(value_axis(118.0, 252.0, false), (100.0, 300.0, 50.0));
        let (lo, hi, _) = value_axis(5.0, 5.0, false);
        assert!(hi > lo);
    }

    #[test]
    fn ticks_stay_few() {
        // A record spanning years (a hostile `ended`) still gets at most 12 ticks.
        let years = 8_000.0 * 365.0 * 86_400_000.0;
        assert!(years / tick_step(years) as f64 <= 12.0);
        assert_eq!(tick_step(360_800.0), 60_000);
        assert_eq!(tick_step(9_000.0), 1_000);
        assert_eq!(axis_label(90_000), "+1:30");
    }

    #[test]
    fn gaps_split_polylines() {
        let t = |s: i64| Timestamp::from_unix_ms(s * 1000);
        let pts: Vec<_> = [0, 5, 10, 15, 40, 45, 50]
            .iter()
            .map(|s| (t(*s), 1u8))
            .collect();
        let r = runs(&pts);
        assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 3]);
    }
}
