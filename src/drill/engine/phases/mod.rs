//! The phases of `drill run`, one file each, as a tree on the shared runner
//! ([`crate::phase`]); the upgrade's steps are child phases (`upgrade/<version>`), and a due
//! rollback skips the steps after it.

mod connect;
mod kubernetes;
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
    /// Not run once a rollback is due (the upgrade's later steps, Kubernetes' phases).
    skip_on_rollback: bool,
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
            skip_on_rollback: false,
        })
    }

    /// A Kubernetes upgrade phase (`kubernetes/<name>`), skipped once a rollback is due.
    fn kubernetes(
        name: String,
        title: String,
        run: for<'r, 'b> fn(&'r mut Ctx<'b>, usize) -> BoxFuture<'r, PhaseResult>,
        arg: usize,
    ) -> Box<DrillPhase> {
        Box::new(DrillPhase {
            name,
            title,
            run,
            arg,
            records_itself: false,
            skip_on_rollback: true,
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
        (self.skip_on_rollback && c.rollback_reasons.is_some())
            .then(|| "a rollback is due".to_string())
    }
    fn run<'r>(&'r self, name: &'r str, c: &'r mut Ctx<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = now();
            c.current = Some((name.to_owned(), t));
            let r = (self.run)(c, self.arg).await;
            c.current = None;
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

/// The Kubernetes upgrade's phases: stage, each control plane (the first with `kubeadm upgrade
/// apply`), each batch of workers, verify.
fn kubernetes_phases<'a>(k: &KubernetesNodes) -> Vec<Box<dyn Phase<Ctx<'a>>>> {
    let Some(up) = k.upgrade else {
        return Vec::new();
    };
    let mut v: Vec<Box<dyn Phase<Ctx<'a>>>> = vec![DrillPhase::kubernetes(
        "stage".into(),
        format!(
            "Stage kubeadm, kubelet, kubectl {} and their images on every node; kubeadm's UpgradeConfiguration",
            up.to
        ),
        |c, _| Box::pin(c.k8s_stage()),
        0,
    )];
    for (i, h) in k.control_planes.iter().enumerate() {
        let how = if i == 0 {
            "kubeadm upgrade apply"
        } else {
            "kubeadm upgrade node"
        };
        v.push(DrillPhase::kubernetes(
            h.clone(),
            format!("{how} {}; drain, kubelet, Ready, uncordon", up.to),
            |c, i| Box::pin(c.k8s_control_plane(i)),
            i,
        ));
    }
    for (i, b) in k.batches.iter().enumerate() {
        v.push(DrillPhase::kubernetes(
            format!("workers-{}", i + 1),
            format!(
                "kubeadm upgrade node {} on {}; drain, kubelet, Ready, uncordon",
                up.to,
                b.join(", ")
            ),
            |c, i| Box::pin(c.k8s_workers(i)),
            i,
        ));
    }
    v.push(DrillPhase::kubernetes(
        "verify".into(),
        format!("Every node at {}; kube-proxy's DaemonSet, ConfigMap and iptables chains absent (removed if back)", up.to),
        |c, _| Box::pin(c.k8s_verify()),
        0,
    ));
    v
}

/// What the Kubernetes phases are made from.
pub(super) struct KubernetesNodes {
    /// The upgrade (none: no Kubernetes phases).
    pub upgrade: Option<crate::drill::definition::KubernetesUpgrade>,
    /// Control planes, the first first.
    pub control_planes: Vec<String>,
    /// Worker batches.
    pub batches: Vec<Vec<String>>,
}

impl KubernetesNodes {
    pub(super) fn of(d: &DrillInput) -> Self {
        KubernetesNodes {
            upgrade: d.drill.kubernetes_upgrade,
            control_planes: d
                .inventory
                .control_planes()
                .map(|h| h.name.clone())
                .collect(),
            batches: d
                .drill
                .kubernetes_upgrade
                .map(|u| kubernetes::worker_batches(&d.inventory, u.batch))
                .unwrap_or_default(),
        }
    }
}

/// The phases of this drill, in order (the report is written after them, whatever happened).
pub(super) fn tree<'a>(path: &[crate::drill::path::Step], k: &KubernetesNodes) -> Tree<Ctx<'a>> {
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
                skip_on_rollback: true,
            }) as Box<dyn Phase<Ctx<'a>>>
        })
        .collect();
    let upgrade = Group {
        name: "upgrade",
        title: "helm upgrade per step; follow the rollout node by node; pod burst; verify",
        phases: steps,
    };
    let kubernetes = Group {
        name: "kubernetes",
        title: "Kubernetes minor upgrade (kubeadm), node by node, with the probes running",
        phases: kubernetes_phases(k),
    };
    let (first, second) = match k.upgrade.map(|k| k.order) {
        Some(crate::drill::kubernetes::Order::KubernetesFirst) => (kubernetes, upgrade),
        _ => (upgrade, kubernetes),
    };
    let mut tree = Tree {
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
            first,
            second,
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
    };
    // A drill without a Kubernetes upgrade has no such group (its record is as it always was).
    tree.groups
        .retain(|g| g.name != "kubernetes" || !g.phases.is_empty());
    tree
}
