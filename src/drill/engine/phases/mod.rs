//! The phases of `drill run`, one file each, as a tree on the shared runner
//! ([`crate::phase`]); the upgrade's steps are child phases (`upgrade/<version>`), and a due
//! rollback skips the steps after it.

mod connect;
mod preflight;
mod probes;
mod reset;
mod resources;
mod rollback;
mod soak;
mod upgrade;

use super::{Ctx, DrillInput, PhaseResult, Stop, now};
use crate::phase::{Failure, Group, HostResult, Outcome, Phase, PhaseError, PhaseFuture, Step};
use crate::phase::{Target, Tree};
use crate::report::record::PhaseOutcome;
use futures::future::BoxFuture;

/// A drill phase: a method of the run's context and how it is shown.
pub(super) struct DrillPhase {
    name: String,
    title: String,
    run: for<'r, 'b> fn(&'r mut Ctx<'b>, usize) -> BoxFuture<'r, PhaseResult>,
    arg: usize,
    /// The upgrade steps put their own windows in the run record.
    records_itself: bool,
}

impl DrillPhase {
    fn new(
        name: &str,
        title: &str,
        run: for<'r, 'b> fn(&'r mut Ctx<'b>, usize) -> BoxFuture<'r, PhaseResult>,
    ) -> Box<DrillPhase> {
        Box::new(DrillPhase {
            name: name.into(),
            title: title.into(),
            run,
            arg: 0,
            records_itself: false,
        })
    }
}

impl<'a> Phase<Ctx<'a>> for DrillPhase {
    fn name(&self) -> &str {
        &self.name
    }
    fn title(&self) -> String {
        self.title.clone()
    }
    fn steps(&self, _: &DrillInput) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![Step::check(Target::Local, self.title.clone())])
    }
    fn skip_reason(&self, c: &Ctx<'a>) -> Option<String> {
        (self.records_itself && c.rollback_reasons.is_some())
            .then(|| "a rollback is due".to_string())
    }
    fn run<'r>(&'r self, name: &'r str, c: &'r mut Ctx<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = now();
            let r = (self.run)(c, self.arg).await;
            let outcome = match &r {
                Ok(o) => *o,
                Err(Stop) => PhaseOutcome::Failed,
            };
            if !self.records_itself {
                c.b.phase(name, t, now(), outcome);
            }
            let result = match r {
                Ok(PhaseOutcome::Skipped) => Ok(Outcome::Skipped("not needed".into())),
                Ok(_) => Ok(Outcome::Changed),
                // The failure itself is in the run's record (`Ctx::fail`); this stops the runner.
                Err(Stop) => Err(Failure::new(
                    "",
                    name,
                    "",
                    c.failures
                        .last()
                        .map(|f| f.message.clone())
                        .unwrap_or_default(),
                )),
            };
            vec![HostResult {
                host: String::new(),
                result,
                secs: 0.0,
            }]
        })
    }
}

/// A group of one phase (its name is the group's).
fn single<'a>(
    name: &'static str,
    title: &'static str,
    run: for<'r, 'b> fn(&'r mut Ctx<'b>, usize) -> BoxFuture<'r, PhaseResult>,
) -> Group<Ctx<'a>> {
    Group {
        name,
        title,
        phases: vec![DrillPhase::new("", title, run) as Box<dyn Phase<Ctx<'a>>>],
    }
}

/// The phases of this drill, in order (the report is written after them, whatever happened).
pub(super) fn tree<'a>(path: &[crate::drill::path::Step]) -> Tree<Ctx<'a>> {
    let steps: Vec<Box<dyn Phase<Ctx<'a>>>> = path
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Box::new(DrillPhase {
                name: s.to().to_string(),
                title: format!(
                    "helm upgrade {s}; follow the rollout node by node; pod burst; verify"
                ),
                run: |c, i| Box::pin(c.upgrade_step(i)),
                arg: i,
                records_itself: true,
            }) as Box<dyn Phase<Ctx<'a>>>
        })
        .collect();
    Tree {
        groups: vec![
            single(
                "reset",
                "Revert every lab VM to the snapshot (--reset only)",
                |c, _| Box::pin(c.reset()),
            ),
            single(
                "connect",
                "SSH to every node; Kubernetes API through a port forward to the first control plane",
                |c, _| Box::pin(c.connect()),
            ),
            single(
                "preflight",
                "Save the Helm values, migrate them per step, install and judge the Cilium pre-flight",
                |c, _| Box::pin(c.preflight()),
            ),
            single(
                "probes-start",
                "Probe pods, Services, echo responders and probers (running until report)",
                |c, _| Box::pin(c.probes_start()),
            ),
            single(
                "resources",
                "Sample every agent's CPU and RSS from /proc (running until report)",
                |c, _| Box::pin(async move { c.resources() }),
            ),
            Group {
                name: "upgrade",
                title: "helm upgrade per step; follow the rollout node by node; pod burst; verify",
                phases: steps,
            },
            single(
                "rollback",
                "helm rollback when verification failed or a loss window exceeded the policy",
                |c, _| Box::pin(c.rollback()),
            ),
            single(
                "soak",
                "Keep probing and sampling; judge agent memory growth",
                |c, _| Box::pin(c.soak()),
            ),
        ],
    }
}
