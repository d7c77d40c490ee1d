//! `kubedrill apply`: the phase tree of [`phases`] run over SSH by the [`crate::phase`] runner.
//!
//! Every phase has a title, a check that recognises "already done" (a re-run of a finished apply
//! reports every phase `unchanged`), the steps it would take (what `plan` and `apply --dry-run`
//! print, built from the same data the run uses) and a run. Node phases run on all hosts in
//! parallel (bounded by `--concurrency`); control planes join one at a time. Each outcome goes to
//! the [`journal`]; an interrupted apply is resumed by running it again: the checks skip what is
//! done.

pub mod change;
pub mod cluster;
pub mod journal;
pub mod node;
pub mod phases;
pub mod reset;
/// The cluster's state directory (owned by [`crate::layout`]).
pub use crate::layout::cluster as state;

pub use crate::phase::{Failure, HostReport, Outcome, PhaseReport, Selection};
pub use change::{HostChange, Upload, run_change};

use crate::connect::SshSettings;
use crate::fleet::{self, Progress};
use crate::host::{Host, SharedHost};
use crate::inventory::Inventory;
use crate::kernel;
use crate::phase::{self, Context, HostResult, Tree};
use crate::render::Templates;
use crate::spec::ClusterSpec;
use crate::ssh::{Command, Session, SshError};
use journal::Journal;
use node::PackageSource;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Secret values that must never leave in errors, journal or output.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Add a secret (ignored when shorter than 6 characters: too likely to hit ordinary text).
    pub fn add(&mut self, s: &str) {
        if s.len() >= 6 {
            self.secrets.push(s.to_string());
        }
    }

    /// The text with every secret replaced by `<redacted>`.
    pub fn apply(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.secrets {
            t = t.replace(s, "<redacted>");
        }
        t
    }
}

/// Options of an apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Phases to run.
    pub selection: Selection,
    /// Hosts worked on at once (workers join in batches of this size).
    pub concurrency: usize,
    /// Where packages come from.
    pub source: PackageSource,
    /// Go on when a requested Cilium feature is blocked on some node.
    pub allow_degraded: bool,
    /// Host keys and connect timeout.
    pub ssh: SshSettings,
    /// Where the journal and the fetched kubeconfig go.
    pub state_dir: PathBuf,
    /// Convert an existing cluster: delete kube-proxy when found (asked before, at the CLI).
    pub delete_kube_proxy: bool,
}

/// What an apply did.
#[derive(Debug, Serialize)]
pub struct ApplyReport {
    /// Cluster.
    pub cluster: String,
    /// Run id (journal).
    pub run: u64,
    /// The journal file.
    pub journal: PathBuf,
    /// The previous run this one resumes, if it had not finished.
    pub resumed_from: Option<u64>,
    /// Phases in order.
    pub phases: Vec<PhaseReport>,
    /// Where it stopped, if it did.
    pub failures: Vec<Failure>,
    /// The local kubeconfig, once fetched.
    pub kubeconfig: Option<PathBuf>,
    /// What `reset` removed, per host.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub removed: BTreeMap<String, Vec<String>>,
    /// Seconds.
    pub secs: f64,
}

impl ApplyReport {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// True when every phase that ran was unchanged on every host.
    pub fn unchanged(&self) -> bool {
        phase::all_unchanged(&self.phases)
    }
}

/// Errors that stop an apply before any phase.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// SSH setup (known_hosts).
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// Templates.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// State directory.
    #[error("{}: {source}", .path.display())]
    State {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The state directory of the inventory's cluster: `<state>/clusters/<label>-<hash>`, or
/// `<state>/clusters/lab-<lab>` for a lab's own inventory (see [`state::ClusterState`]).
pub fn cluster_dir(inv: &Inventory) -> PathBuf {
    state::ClusterState::of(inv).dir
}

/// What the phases need to say what they would do: no connection, no secret.
pub struct Input<'a> {
    /// Inventory.
    pub inv: &'a Inventory,
    /// Spec.
    pub spec: &'a ClusterSpec,
    /// Templates.
    pub templates: Templates,
    /// Where packages come from.
    pub source: &'a PackageSource,
}

impl<'a> Input<'a> {
    /// The input for this inventory (templates loaded).
    pub fn new(
        inv: &'a Inventory,
        spec: &'a ClusterSpec,
        source: &'a PackageSource,
    ) -> Result<Input<'a>, crate::render::RenderError> {
        Ok(Input {
            inv,
            spec,
            templates: Templates::load()?,
            source,
        })
    }

    /// The first control plane's name.
    pub fn first_cp(&self) -> String {
        self.inv.first_control_plane().name.clone()
    }
}

/// How the nodes are reached.
pub enum Reach {
    /// Over SSH, to the named hosts (empty: every host).
    Ssh(SshSettings, Vec<String>),
    /// These hosts, already there (tests: [`crate::host::fake::FakeHost`]).
    Given(BTreeMap<String, SharedHost>),
}

/// Everything a phase needs while it runs.
pub struct Run<'a> {
    /// What the plan is made from.
    pub input: Input<'a>,
    /// Options.
    pub opts: &'a ApplyOptions,
    /// How to reach the nodes (taken by `preflight/connect`).
    reach: Option<Reach>,
    /// One connected host per node.
    pub hosts: BTreeMap<String, SharedHost>,
    /// The SSH sessions behind them (for the API server through the first control plane).
    pub sessions: BTreeMap<String, Arc<Session>>,
    /// Journal.
    pub journal: Journal,
    /// Progress.
    pub progress: &'a Progress,
    /// Secrets to keep out of every message.
    pub redactor: Redactor,
    /// Facts-based node reports (from preflight/kernel).
    pub reports: Vec<kernel::NodeReport>,
    /// The local kubeconfig, once fetched.
    pub kubeconfig: Option<PathBuf>,
    /// The lock on every connected node, held until the run ends.
    pub node_locks: Vec<crate::ssh::node_lock::NodeLock>,
    /// What `reset` removed, per host.
    pub removed: BTreeMap<String, Vec<String>>,
}

impl<'a> Context for Run<'a> {
    type Input = Input<'a>;
    fn input(&self) -> &Input<'a> {
        &self.input
    }
    fn progress(&self) -> &Progress {
        self.progress
    }
    fn journal(&self) -> Option<&Journal> {
        Some(&self.journal)
    }
    fn redact(&self, text: &str) -> String {
        self.redactor.apply(text)
    }
}

/// The phase tree of an apply.
pub fn tree<'a>() -> Tree<Run<'a>> {
    phases::tree()
}

/// Run the apply over SSH.
pub async fn apply(
    inv: &Inventory,
    spec: &ClusterSpec,
    opts: &ApplyOptions,
    progress: &Progress,
) -> Result<ApplyReport, ApplyError> {
    apply_on(
        inv,
        spec,
        opts,
        Reach::Ssh(opts.ssh.clone(), Vec::new()),
        progress,
    )
    .await
}

/// Run the apply on nodes reached as `reach` says.
pub async fn apply_on(
    inv: &Inventory,
    spec: &ClusterSpec,
    opts: &ApplyOptions,
    reach: Reach,
    progress: &Progress,
) -> Result<ApplyReport, ApplyError> {
    execute(&tree(), "apply", inv, spec, opts, reach, progress).await
}

/// Run `tree` (the apply's or [`reset::tree`]) with its own journal named `kind`.
pub async fn execute<'a>(
    tree: &Tree<Run<'a>>,
    kind: &'static str,
    inv: &'a Inventory,
    spec: &'a ClusterSpec,
    opts: &'a ApplyOptions,
    reach: Reach,
    progress: &'a Progress,
) -> Result<ApplyReport, ApplyError> {
    let t0 = Instant::now();
    let dir = opts.state_dir.clone();
    let journal = Journal::open_kind(&dir, kind).map_err(|source| ApplyError::State {
        path: dir.clone(),
        source,
    })?;
    let resumed = journal.unfinished();
    if let Some(u) = &resumed {
        let why = match &u.failed {
            Some(f) => format!(
                "failed in {} on {}: {}",
                f.phase,
                f.host,
                f.detail.lines().next().unwrap_or_default()
            ),
            None => format!("was interrupted after {}", u.last_phase),
        };
        progress.println(&format!(
            "resuming: the previous {kind} (run {}) {why}; finished phases are recognised by their checks",
            u.run
        ));
    }
    journal.record(kind, "", "started", 0.0, &spec.label);
    if kind == "apply" {
        // Waits raised for slow machines (a lab under TCG sets them): said at the start, never a
        // silent difference from production.
        let from = |setting: &str| {
            spec.provenance
                .iter()
                .find(|p| p.setting == setting)
                .map(|p| p.source.to_string())
                .unwrap_or_default()
        };
        if let Some(t) = &spec.kubeadm_timeout {
            progress.println(&format!(
                "note: kubeadm's waits are raised to {t} ({}); production uses kubeadm's defaults unless its inventory sets it too",
                from("kubedrill_kubeadm_timeout")
            ));
        }
        for (name, var, lease) in [
            (
                "controller manager",
                "kube_controller_manager_leader_elect_lease_duration",
                spec.leader_elect.controller_manager,
            ),
            (
                "scheduler",
                "kube_scheduler_leader_elect_lease_duration",
                spec.leader_elect.scheduler,
            ),
            (
                "Cilium operator",
                "kubedrill_cilium_operator_leader_elect_lease_duration",
                spec.leader_elect.cilium_operator,
            ),
        ] {
            if let Some(l) = lease {
                let at = from(var);
                progress.println(&format!(
                    "note: the {name}'s leader-election lease is {} s, renewed within {} s ({}); the default is 15 s / 10 s",
                    l.duration_secs,
                    l.renew_deadline_secs,
                    if at.is_empty() { var.to_string() } else { at }
                ));
            }
        }
        if !spec.kubeadm_patches.is_empty() {
            progress.println(&format!(
                "note: kubeadm applies {} patch(es) to {} ({}); written to {}",
                spec.kubeadm_patches.len(),
                spec.kubeadm_patches
                    .iter()
                    .map(|p| p.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                from("kubeadm_patches"),
                crate::spec::patches::PATCHES_DIR
            ));
        }
        if let Some(millis) = spec.cilium_agent_cpu_millis {
            progress.println(&format!(
                "note: the Cilium agent requests {millis}m CPU ({}); production uses the chart's default (none) unless its values set it too",
                from("kubedrill_cilium_agent_cpu_request")
            ));
        }
        if let Some(w) = spec.cilium_agent_cpu_weight {
            progress.println(&format!(
                "note: the nodes keep the Cilium agent pods at CPU weight {w} ({}, node/agent-cpu-weight); production leaves it to the kubelet unless its inventory sets it too",
                from("kubedrill_cilium_agent_cpu_weight")
            ));
        }
        if !spec.kubeadm_ignore_preflight_errors.is_empty() {
            progress.println(&format!(
                "note: kubeadm reports without failing on the pre-flight check(s) {} ({}); production fails on them unless its inventory sets it too",
                spec.kubeadm_ignore_preflight_errors.join(", "),
                from("kubeadm_ignore_preflight_errors")
            ));
        }
        if let Some(secs) = spec.cilium_startup_timeout {
            progress.println(&format!(
                "note: the Cilium agent's startup probe allows {} min ({}); production uses the chart's default unless its inventory sets it too",
                secs.div_ceil(60),
                from("kubedrill_cilium_startup_timeout")
            ));
        }
    }
    let mut run = Run {
        input: Input::new(inv, spec, &opts.source)?,
        opts,
        reach: Some(reach),
        hosts: BTreeMap::new(),
        sessions: BTreeMap::new(),
        journal,
        progress,
        redactor: Redactor::default(),
        reports: Vec::new(),
        kubeconfig: None,
        node_locks: Vec::new(),
        removed: BTreeMap::new(),
    };
    let report = phase::run(tree, &opts.selection, &mut run).await;
    let outcome = if report.ok() { "finished" } else { "stopped" };
    run.journal
        .record(kind, "", outcome, t0.elapsed().as_secs_f64(), "");
    Ok(ApplyReport {
        cluster: spec.label.clone(),
        run: run.journal.run(),
        journal: run.journal.path().to_path_buf(),
        resumed_from: resumed.map(|u| u.run),
        phases: report.phases,
        failures: report.failures,
        kubeconfig: run.kubeconfig,
        removed: run.removed,
        secs: t0.elapsed().as_secs_f64(),
    })
}

impl Run<'_> {
    /// The first control plane and its host, when connected.
    pub fn first_cp(&self) -> (String, Option<SharedHost>) {
        let name = self.input.first_cp();
        let s = self.hosts.get(&name).cloned();
        (name, s)
    }

    /// One change on the first control plane, timed, as the phase's only result.
    pub async fn on_first_cp(&self, phase: &str, change: HostChange) -> Vec<HostResult> {
        let t = Instant::now();
        let (host, Some(s)) = self.first_cp() else {
            return Vec::new();
        };
        let r = self.one(s.as_ref(), phase, &change).await;
        vec![HostResult::timed(host, r, t)]
    }

    /// One change on one host, with a progress line.
    pub async fn one(&self, s: &dyn Host, phase: &str, c: &HostChange) -> Result<Outcome, Failure> {
        let p = self.progress.host(phase, s.name());
        let r = run_change(s, phase, c, &self.redactor, &p).await;
        match &r {
            Ok(o) => p.finish(true, o.label()),
            Err(f) => p.finish(false, &f.command),
        }
        r
    }

    /// Run a read-only or secret-producing command; stdout is returned, never logged.
    pub async fn capture(
        &self,
        s: &dyn Host,
        phase: &str,
        label: &str,
        script: &str,
    ) -> Result<String, Failure> {
        let host = s.name().to_string();
        let o = s
            .exec(&Command::new(script).privileged().label(label))
            .await
            .map_err(|e| change::exec_failure(&host, phase, label, &e, &self.redactor))?;
        if !o.success() {
            return Err(Failure {
                host,
                phase: phase.into(),
                command: label.into(),
                status: o.status,
                stderr: self.redactor.apply(&o.stderr_tail(6)),
                hint: None,
            });
        }
        Ok(o.stdout_text())
    }

    /// Run one change on every connected host, `--concurrency` at a time.
    pub async fn on_all(&self, name: &str, change: HostChange) -> Vec<HostResult> {
        let change = Arc::new(change);
        let items = self
            .hosts
            .keys()
            .map(|h| (h.clone(), change.clone()))
            .collect();
        self.on_hosts(name, items, self.opts.concurrency).await
    }

    /// Run each host's change, `concurrency` hosts at a time.
    pub async fn on_hosts(
        &self,
        name: &str,
        items: Vec<(String, Arc<HostChange>)>,
        concurrency: usize,
    ) -> Vec<HostResult> {
        let inputs: Vec<(String, (SharedHost, Arc<HostChange>))> = items
            .into_iter()
            .filter_map(|(h, c)| self.hosts.get(&h).map(|s| (h, (s.clone(), c))))
            .collect();
        let redactor = Arc::new(self.redactor.clone());
        let phase: Arc<str> = name.into();
        let results = fleet::run(
            name,
            inputs,
            concurrency,
            self.progress,
            |o: &Outcome| match o {
                Outcome::Skipped(w) => format!("skipped: {w}"),
                o => o.label().into(),
            },
            |(s, change), p| {
                let redactor = redactor.clone();
                let phase = phase.clone();
                async move { run_change(s.as_ref(), &phase, &change, &redactor, &p).await }
            },
        )
        .await;
        results
            .into_iter()
            .map(|r| HostResult {
                host: r.host,
                result: r.result,
                secs: r.duration.as_secs_f64(),
            })
            .collect()
    }
}

impl From<fleet::TaskFailed> for Failure {
    fn from(t: fleet::TaskFailed) -> Self {
        Failure::new("", "", "", t)
    }
}

/// A phase-wide failure (nothing was tried on any host).
pub fn fail_all(phase: &str, command: &str, message: impl std::fmt::Display) -> Vec<HostResult> {
    vec![HostResult {
        host: "(all)".into(),
        result: Err(Failure::new("(all)", phase, command, message)),
        secs: 0.0,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_hides_secrets() {
        let mut r = Redactor::default();
        r.add("abcdef.0123456789abcdef");
        r.add("abc"); // too short to redact safely
        assert_eq!(
            r.apply("token abcdef.0123456789abcdef rejected (abc)"),
            "token <redacted> rejected (abc)"
        );
    }
}
