//! The phase runner shared by `plan`, `apply`, `reset` and `drill run`.
//!
//! A run is a [`Tree`] of named phases in groups (`node/packages`, `kubeadm/init`, …), modelled
//! on kubeadm's workflow runner and k0sctl's phase manager. A [`Phase`] says what it would do
//! ([`Phase::steps`], the dry run) and does it ([`Phase::run`]) from the same data, so the plan
//! cannot drift from what runs. The [`run`] function owns what every command used to repeat:
//! selection (`--only`, `--skip-phases`, validated against the tree), progress headings, the
//! journal, stop-on-failure, and clean-up in reverse order.

pub mod step;

pub use step::{Step, Target};

use crate::fleet::Progress;
use serde::Serialize;
use std::time::Instant;
use thiserror::Error;

/// How a phase ended on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "detail")]
pub enum Outcome {
    /// Already done.
    Unchanged,
    /// Done now.
    Changed,
    /// Not run (why).
    Skipped(String),
}

impl Outcome {
    /// `unchanged`, `changed` or `skipped`, as the journal and the summary say it.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Changed => "changed",
            Outcome::Skipped(_) => "skipped",
        }
    }
}

/// A failed phase on a host: where, what ran, what it said, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Error)]
#[error("{host}: phase {phase}: {command}{}\n{stderr}{}", status.map(|s| format!(" exited with {s}")).unwrap_or_default(), hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
pub struct Failure {
    /// Host (`(local)` for this machine, `(all)` when no host was tried).
    pub host: String,
    /// Phase.
    pub phase: String,
    /// The command (its label; never a secret).
    pub command: String,
    /// Exit status.
    pub status: Option<u32>,
    /// Last lines of stderr (or the reason), redacted.
    pub stderr: String,
    /// The fix, where known.
    pub hint: Option<String>,
}

impl Failure {
    /// A failure without exit status or hint.
    pub fn new(
        host: impl Into<String>,
        phase: &str,
        command: impl Into<String>,
        why: impl std::fmt::Display,
    ) -> Failure {
        Failure {
            host: host.into(),
            phase: phase.into(),
            command: command.into(),
            status: None,
            stderr: why.to_string(),
            hint: None,
        }
    }

    /// The same failure with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

/// One host's result of a phase.
#[derive(Debug, Clone)]
pub struct HostResult {
    /// Host (empty for a phase-wide result).
    pub host: String,
    /// Outcome, or why it failed.
    pub result: Result<Outcome, Failure>,
    /// Seconds.
    pub secs: f64,
}

impl HostResult {
    /// A result timed from `t`.
    pub fn timed(host: impl Into<String>, result: Result<Outcome, Failure>, t: Instant) -> Self {
        HostResult {
            host: host.into(),
            result,
            secs: t.elapsed().as_secs_f64(),
        }
    }
}

/// Per phase, per host: what happened.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase.
    pub phase: String,
    /// Hosts with their outcome and seconds.
    pub hosts: Vec<HostReport>,
}

/// One host in a phase.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// Host.
    pub host: String,
    /// Outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Seconds.
    pub secs: f64,
}

/// What the runner needs from the state a tree runs on.
pub trait Context: Send {
    /// What a phase needs to say what it would do (no connections): the plan's input.
    type Input: Sync;
    /// The plan's input.
    fn input(&self) -> &Self::Input;
    /// Where headings and lines go.
    fn progress(&self) -> &Progress;
    /// Where outcomes are appended as they happen, if anywhere.
    fn journal(&self) -> Option<&crate::apply::journal::Journal> {
        None
    }
    /// Text with every secret the run made replaced (errors end up in terminals and journals).
    fn redact(&self, text: &str) -> String {
        text.to_string()
    }
    /// Called after every phase that ran (the drill keeps its own record of phase windows).
    fn phase_ended(&mut self, _name: &str, _started: std::time::SystemTime, _ok: bool) {}
}

/// Boxed future of a phase's run.
pub type PhaseFuture<'a> = futures::future::BoxFuture<'a, Vec<HostResult>>;
/// Boxed future of a phase's clean-up.
pub type CleanUpFuture<'a> = futures::future::BoxFuture<'a, ()>;

/// A named step of a run. Implementations live one per file next to their command.
pub trait Phase<C: Context>: Send + Sync {
    /// The name inside its group (`packages` in `node/packages`); empty for a group's only phase.
    fn name(&self) -> &str;
    /// One line saying what it does.
    fn title(&self) -> String;
    /// When a re-run leaves it alone.
    fn unchanged_when(&self) -> &str {
        "always runs; changes nothing"
    }
    /// Runs whatever the selection says (connecting, which every other phase needs).
    fn required(&self) -> bool {
        false
    }
    /// What it would do: the dry run, built from the same data [`Phase::run`] uses.
    fn steps(&self, input: &C::Input) -> Result<Vec<Step>, PhaseError>;
    /// Why it does not run here (for example: no such nodes), checked just before it would.
    fn skip_reason(&self, _ctx: &C) -> Option<String> {
        None
    }
    /// Do it; one result per host it touched.
    fn run<'a>(&'a self, name: &'a str, ctx: &'a mut C) -> PhaseFuture<'a>;
    /// Undo what must not outlive the run (after every later phase, in reverse order).
    fn clean_up<'a>(&'a self, _ctx: &'a mut C) -> CleanUpFuture<'a> {
        Box::pin(async {})
    }
}

/// A phase could not say what it would do (a template failed to render, an input is refused).
#[derive(Debug, Error)]
pub enum PhaseError {
    /// Templates.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// The input cannot be worked on (the message says why and what to do).
    #[error("{0}")]
    Refused(String),
}

/// Phases under a common name.
pub struct Group<C: Context> {
    /// `node`, `kubeadm`, …
    pub name: &'static str,
    /// What the group is for.
    pub title: &'static str,
    /// In order.
    pub phases: Vec<Box<dyn Phase<C>>>,
}

/// The ordered phases of a command.
pub struct Tree<C: Context> {
    /// In order.
    pub groups: Vec<Group<C>>,
}

/// A phase's full name: `group/name`, or `group` for a group's unnamed only phase.
pub fn full_name(group: &str, phase: &str) -> String {
    if phase.is_empty() {
        group.to_string()
    } else {
        format!("{group}/{phase}")
    }
}

/// A phase as listed: name, title, when a re-run leaves it alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseInfo {
    /// Full name.
    pub name: String,
    /// Title.
    pub title: String,
    /// When a re-run leaves it alone.
    pub unchanged_when: String,
}

/// A phase with what it would do.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedPhase {
    /// The phase.
    #[serde(flatten)]
    pub def: PhaseInfo,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl<C: Context> Tree<C> {
    /// Every phase in order with its full name.
    pub fn phases(&self) -> impl Iterator<Item = (String, &dyn Phase<C>)> {
        self.groups.iter().flat_map(|g| {
            g.phases
                .iter()
                .map(move |p| (full_name(g.name, p.name()), p.as_ref()))
        })
    }

    /// Names, titles and "unchanged when" of every phase, in order.
    pub fn list(&self) -> Vec<PhaseInfo> {
        self.phases()
            .map(|(name, p)| PhaseInfo {
                name,
                title: p.title(),
                unchanged_when: p.unchanged_when().to_string(),
            })
            .collect()
    }

    /// The tree as help text: groups, then their phases indented.
    pub fn help(&self) -> String {
        let mut s = String::new();
        for g in &self.groups {
            s.push_str(&format!("{:<28} {}\n", g.name, g.title));
            for p in &g.phases {
                if !p.name().is_empty() {
                    s.push_str(&format!(
                        "  {:<26} {}\n",
                        full_name(g.name, p.name()),
                        p.title()
                    ));
                }
            }
        }
        s
    }

    /// Validate `--skip-phases` and `--only` against this tree.
    pub fn select(&self, skip: &[String], only: &[String]) -> Result<Selection, SelectionError> {
        let names: Vec<String> = self.phases().map(|(n, _)| n).collect();
        let groups: Vec<&str> = self.groups.iter().map(|g| g.name).collect();
        for n in skip.iter().chain(only) {
            let n = n.trim_end_matches('/');
            if !names.iter().any(|p| p == n) && !groups.contains(&n) {
                return Err(SelectionError {
                    name: n.to_string(),
                    phases: names.join(", "),
                    groups: groups.join(", "),
                });
            }
        }
        Ok(Selection {
            skip: skip.to_vec(),
            only: only.to_vec(),
        })
    }

    /// What each selected phase would do, in order.
    pub fn dry_run(
        &self,
        selection: &Selection,
        input: &C::Input,
    ) -> Result<Vec<PlannedPhase>, PhaseError> {
        let mut out = Vec::new();
        for (name, p) in self.phases() {
            if !p.required() && !selection.runs(&name) {
                continue;
            }
            out.push(PlannedPhase {
                def: PhaseInfo {
                    title: p.title(),
                    unchanged_when: p.unchanged_when().to_string(),
                    name,
                },
                steps: p.steps(input)?,
            });
        }
        Ok(out)
    }
}

/// An unknown phase name; the message lists the tree.
#[derive(Debug, Clone, Error)]
#[error("unknown phase `{name}`; phases are: {phases} (or a group: {groups})")]
pub struct SelectionError {
    /// What was given.
    pub name: String,
    /// Every phase.
    pub phases: String,
    /// Every group.
    pub groups: String,
}

/// Which phases run: from `--skip-phases` and `--only` (names or groups), validated by
/// [`Tree::select`].
#[derive(Debug, Clone, Default)]
pub struct Selection {
    skip: Vec<String>,
    only: Vec<String>,
}

impl Selection {
    /// Every phase.
    pub fn all() -> Selection {
        Selection::default()
    }

    /// True if the phase runs (required phases run whatever this says).
    pub fn runs(&self, phase: &str) -> bool {
        let only = self.only.is_empty() || self.only.iter().any(|o| matches(o, phase));
        only && !self.skip.iter().any(|s| matches(s, phase))
    }
}

fn matches(pattern: &str, phase: &str) -> bool {
    let p = pattern.trim_end_matches('/');
    phase == p || phase.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
}

/// True when no host changed in any of the phases.
pub fn all_unchanged(phases: &[PhaseReport]) -> bool {
    phases
        .iter()
        .flat_map(|p| &p.hosts)
        .all(|h| h.outcome != Outcome::Changed)
}

/// What a run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunReport {
    /// Phases in order (skipped ones included).
    pub phases: Vec<PhaseReport>,
    /// Where it stopped, if it did.
    pub failures: Vec<Failure>,
}

impl RunReport {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// True when every phase that ran was unchanged on every host.
    pub fn unchanged(&self) -> bool {
        all_unchanged(&self.phases)
    }

    /// Record one phase's results: its report, the journal, the failures (redacted).
    fn record<C: Context>(&mut self, ctx: &C, name: &str, results: Vec<HostResult>) {
        let mut report = PhaseReport {
            phase: name.into(),
            hosts: Vec::new(),
        };
        for r in results {
            match r.result {
                Ok(o) => {
                    let detail = match &o {
                        Outcome::Skipped(w) => w.clone(),
                        _ => String::new(),
                    };
                    if let Some(j) = ctx.journal() {
                        j.record(name, &r.host, o.label(), r.secs, &detail);
                    }
                    report.hosts.push(HostReport {
                        host: r.host,
                        outcome: o,
                        secs: r.secs,
                    });
                }
                Err(f) => {
                    let f = Failure {
                        stderr: ctx.redact(&f.stderr),
                        host: if f.host.is_empty() { r.host } else { f.host },
                        phase: if f.phase.is_empty() {
                            name.into()
                        } else {
                            f.phase
                        },
                        ..f
                    };
                    if let Some(j) = ctx.journal() {
                        j.record(
                            name,
                            &f.host,
                            "failed",
                            r.secs,
                            &format!("{}: {}", f.command, f.stderr),
                        );
                    }
                    self.failures.push(f);
                }
            }
        }
        self.phases.push(report);
    }

    fn skipped<C: Context>(&mut self, ctx: &C, name: &str, why: &str) {
        self.record(
            ctx,
            name,
            vec![HostResult {
                host: String::new(),
                result: Ok(Outcome::Skipped(why.into())),
                secs: 0.0,
            }],
        );
    }
}

/// Run the selected phases of `tree` in order on `ctx`: a heading per phase, every outcome to
/// the journal, stop at the first phase that failed anywhere, then the clean-ups of the phases
/// that ran, last first.
pub async fn run<C: Context>(tree: &Tree<C>, selection: &Selection, ctx: &mut C) -> RunReport {
    let mut report = RunReport::default();
    let mut ran: Vec<&dyn Phase<C>> = Vec::new();
    for (name, p) in tree.phases() {
        if !report.ok() {
            break;
        }
        if !p.required() && !selection.runs(&name) {
            report.skipped(ctx, &name, "not selected");
            continue;
        }
        if let Some(why) = p.skip_reason(ctx) {
            report.skipped(ctx, &name, &why);
            continue;
        }
        ctx.progress()
            .println(&format!("== {name} — {}", p.title()));
        let started = std::time::SystemTime::now();
        let results = p.run(&name, ctx).await;
        let before = report.failures.len();
        report.record(ctx, &name, results);
        let ok = report.failures.len() == before;
        ctx.phase_ended(&name, started, ok);
        ran.push(p);
    }
    for p in ran.into_iter().rev() {
        p.clean_up(ctx).await;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A context that records what the phases did, in order.
    struct Log {
        progress: Progress,
        events: Arc<Mutex<Vec<String>>>,
    }

    impl Context for Log {
        type Input = ();
        fn input(&self) -> &() {
            &()
        }
        fn progress(&self) -> &Progress {
            &self.progress
        }
        fn redact(&self, text: &str) -> String {
            text.replace("s3cret", "<redacted>")
        }
    }

    struct P {
        name: &'static str,
        fail: bool,
        required: bool,
    }

    impl Phase<Log> for P {
        fn name(&self) -> &str {
            self.name
        }
        fn title(&self) -> String {
            format!("title of {}", self.name)
        }
        fn required(&self) -> bool {
            self.required
        }
        fn steps(&self, _: &()) -> Result<Vec<Step>, PhaseError> {
            Ok(vec![Step::Check {
                target: Target::Local,
                what: self.name.into(),
            }])
        }
        fn run<'a>(&'a self, name: &'a str, ctx: &'a mut Log) -> PhaseFuture<'a> {
            Box::pin(async move {
                ctx.events.lock().unwrap().push(format!("run {name}"));
                let result = if self.fail {
                    Err(Failure::new("h1", "", "boom", "token s3cret refused"))
                } else {
                    Ok(Outcome::Changed)
                };
                vec![HostResult {
                    host: "h1".into(),
                    result,
                    secs: 0.0,
                }]
            })
        }
        fn clean_up<'a>(&'a self, ctx: &'a mut Log) -> CleanUpFuture<'a> {
            Box::pin(async move {
                ctx.events
                    .lock()
                    .unwrap()
                    .push(format!("clean {}", self.name));
            })
        }
    }

    fn tree(fail_at: &str) -> Tree<Log> {
        let p = |name: &'static str| -> Box<dyn Phase<Log>> {
            Box::new(P {
                name,
                fail: name == fail_at,
                required: name == "connect",
            })
        };
        Tree {
            groups: vec![
                Group {
                    name: "pre",
                    title: "before",
                    phases: vec![p("connect"), p("facts")],
                },
                Group {
                    name: "node",
                    title: "nodes",
                    phases: vec![p("a"), p("b"), p("c")],
                },
            ],
        }
    }

    fn log() -> (Log, Arc<Mutex<Vec<String>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        (
            Log {
                progress: Progress::quiet(),
                events: events.clone(),
            },
            events,
        )
    }

    #[tokio::test]
    async fn stops_at_the_first_failure_and_cleans_up_in_reverse() {
        let t = tree("b");
        let (mut ctx, events) = log();
        let r = run(&t, &Selection::all(), &mut ctx).await;
        assert_eq!(
            *events.lock().unwrap(),
            [
                "run pre/connect",
                "run pre/facts",
                "run node/a",
                "run node/b",
                "clean b",
                "clean a",
                "clean facts",
                "clean connect"
            ]
        );
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].phase, "node/b");
        assert_eq!(r.failures[0].stderr, "token <redacted> refused");
        assert!(!r.ok());
    }

    #[tokio::test]
    async fn selection_skips_but_never_the_required_phase() {
        let t = tree("");
        let sel = t
            .select(&["node/b".into()], &["node".into()])
            .expect("valid");
        let (mut ctx, events) = log();
        let r = run(&t, &sel, &mut ctx).await;
        let ran: Vec<String> = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("run"))
            .cloned()
            .collect();
        assert_eq!(ran, ["run pre/connect", "run node/a", "run node/c"]);
        let skipped: Vec<&str> = r
            .phases
            .iter()
            .filter(|p| p.hosts[0].outcome.label() == "skipped")
            .map(|p| p.phase.as_str())
            .collect();
        assert_eq!(skipped, ["pre/facts", "node/b"]);
        // The dry run lists the same phases the run ran.
        let planned: Vec<String> = t
            .dry_run(&sel, &())
            .expect("steps")
            .into_iter()
            .map(|p| p.def.name)
            .collect();
        assert_eq!(planned, ["pre/connect", "node/a", "node/c"]);
    }

    #[test]
    fn unknown_names_are_errors_listing_the_tree() {
        let t = tree("");
        let e = t.select(&["node/d".into()], &[]).expect_err("unknown");
        let m = e.to_string();
        assert!(m.contains("unknown phase `node/d`"), "{m}");
        assert!(m.contains("pre/connect, pre/facts, node/a"), "{m}");
        assert!(m.contains("a group: pre, node"), "{m}");
        assert!(t.select(&["node/".into()], &["pre".into()]).is_ok());
        assert!(!matches("node", "nodes/x"));
        assert!(t.help().contains("  node/a"));
    }
}
