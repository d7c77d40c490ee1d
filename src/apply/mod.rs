//! `kubedrill apply`: the phase tree of [`crate::plan`] run for real over SSH.
//!
//! Every phase has a title ([`crate::plan::PHASES`]), a precondition, a check that recognises
//! "already done" (a re-run of a finished apply reports every phase `unchanged`), a dry-run
//! description (the plan's steps) and a run. Node phases run on all hosts in parallel (bounded by
//! `--concurrency`); control planes join one at a time. Each outcome goes to the [`journal`]; an
//! interrupted apply is resumed by running it again: the checks skip what is done.

pub mod cluster;
pub mod journal;
pub mod node;
pub mod reset;
pub mod state;

use crate::check::{self, HostKeySettings};
use crate::fleet::{self, Connector, Progress};
use crate::inventory::Inventory;
use crate::kernel;
use crate::render::{RenderedFile, Templates};
use crate::spec::ClusterSpec;
use crate::ssh::{Command, HostKeyPolicy, Options, Session, SshError, shell::quote};
use journal::Journal;
use node::PackageSource;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// A large file to put on a node (skipped when the node already has it with this SHA-256).
#[derive(Debug, Clone)]
pub struct Upload {
    /// Local file.
    pub local: PathBuf,
    /// Path on the node.
    pub remote: String,
    /// Expected SHA-256.
    pub sha256: String,
    /// Mode on the node.
    pub mode: u32,
}

/// A host's session and the change to make there.
type HostWork = (Arc<Session>, Arc<HostChange>);

/// What one phase does on one host.
#[derive(Debug, Clone)]
pub struct HostChange {
    /// A script that must succeed before anything is tried, and the error when it does not.
    pub precondition: Option<(String, String)>,
    /// Exits 0 when the phase is already done (the files are compared besides); otherwise
    /// prints why not.
    pub check: String,
    /// Files written (atomically, checksummed) before `apply` runs.
    pub files: Vec<RenderedFile>,
    /// Large files uploaded before `apply` runs.
    pub uploads: Vec<Upload>,
    /// The script that makes the change.
    pub apply: String,
    /// How the script is shown in progress, journal and errors.
    pub apply_label: String,
    /// Time allowed for `apply`.
    pub timeout_secs: u64,
    /// Lines of the script's stderr kept in a failure (0: the last 8).
    pub error_lines: usize,
}

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
    /// Host.
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

/// Which phases run: from `--skip-phases` and `--only` (names or group prefixes like `node`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    skip: Vec<String>,
    only: Vec<String>,
}

impl Selection {
    /// Validate the names against the phase tree.
    pub fn new(skip: &[String], only: &[String]) -> Result<Selection, String> {
        for n in skip.iter().chain(only) {
            if !crate::plan::PHASES.iter().any(|p| matches(n, p.name)) {
                let names: Vec<&str> = crate::plan::PHASES.iter().map(|p| p.name).collect();
                return Err(format!(
                    "unknown phase `{n}`; phases are: {} (or a group: preflight, node, kubeadm, kubeconfig, cilium, cluster)",
                    names.join(", ")
                ));
            }
        }
        Ok(Selection {
            skip: skip.to_vec(),
            only: only.to_vec(),
        })
    }

    /// True if the phase runs.
    pub fn runs(&self, phase: &str) -> bool {
        if phase == "preflight/connect" {
            return true; // everything else needs the sessions
        }
        let only = self.only.is_empty() || self.only.iter().any(|o| matches(o, phase));
        only && !self.skip.iter().any(|s| matches(s, phase))
    }
}

fn matches(pattern: &str, phase: &str) -> bool {
    let p = pattern.trim_end_matches('/');
    phase == p || phase.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
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
    /// known_hosts and mode.
    pub host_keys: HostKeySettings,
    /// Connect timeout per host.
    pub connect_timeout: Duration,
    /// Where the journal and the fetched kubeconfig go.
    pub state_dir: PathBuf,
    /// Convert an existing cluster: delete kube-proxy when found (asked before, at the CLI).
    pub delete_kube_proxy: bool,
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
        self.phases
            .iter()
            .flat_map(|p| &p.hosts)
            .all(|h| h.outcome != Outcome::Changed)
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
    #[error("{0}: {1}")]
    State(PathBuf, std::io::Error),
}

/// The state directory of the inventory's cluster: `<state>/clusters/<label>-<hash>`, or
/// `<state>/clusters/lab-<lab>` for a lab's own inventory (see [`state::ClusterState`]).
pub fn cluster_dir(inv: &Inventory) -> PathBuf {
    state::ClusterState::of(inv).dir
}

/// Everything a phase needs.
pub struct Run<'a> {
    /// Inventory.
    pub inv: &'a Inventory,
    /// Spec.
    pub spec: &'a ClusterSpec,
    /// Options.
    pub opts: &'a ApplyOptions,
    /// Templates.
    pub templates: Templates,
    /// One session per host.
    pub sessions: BTreeMap<String, Arc<Session>>,
    /// Journal.
    pub journal: Journal,
    /// Progress.
    pub progress: &'a Progress,
    /// Secrets to keep out of every message.
    pub redactor: Redactor,
    /// Facts-based node reports (from preflight/kernel).
    pub reports: Vec<kernel::NodeReport>,
    phases: Vec<PhaseReport>,
    failures: Vec<Failure>,
    kubeconfig: Option<PathBuf>,
    /// The lock on every connected node, held until the run ends.
    node_locks: Vec<crate::ssh::node_lock::NodeLock>,
}

/// Run the apply.
pub async fn apply(
    inv: &Inventory,
    spec: &ClusterSpec,
    opts: &ApplyOptions,
    progress: &Progress,
) -> Result<ApplyReport, ApplyError> {
    let t0 = Instant::now();
    let dir = opts.state_dir.clone();
    let journal = Journal::open(&dir).map_err(|e| ApplyError::State(dir.clone(), e))?;
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
            "resuming: the previous apply (run {}) {why}; finished phases are recognised by their checks",
            u.run
        ));
    }
    journal.record("apply", "", "started", 0.0, &spec.label);
    if let Some(t) = &spec.kubeadm_timeout {
        let from = spec
            .provenance
            .iter()
            .find(|p| p.setting == "kubedrill_kubeadm_timeout")
            .map(|p| p.source.to_string())
            .unwrap_or_default();
        progress.println(&format!(
            "note: kubeadm's waits are raised to {t} ({from}); production uses kubeadm's defaults unless its inventory sets it too"
        ));
    }
    let mut run = Run {
        inv,
        spec,
        opts,
        templates: Templates::load()?,
        sessions: BTreeMap::new(),
        journal,
        progress,
        redactor: Redactor::default(),
        reports: Vec::new(),
        phases: Vec::new(),
        failures: Vec::new(),
        kubeconfig: None,
        node_locks: Vec::new(),
    };
    run.connect().await?;
    for def in crate::plan::PHASES.iter().skip(1) {
        if !run.failures.is_empty() {
            break;
        }
        if !opts.selection.runs(def.name) {
            run.skip_phase(def.name, "not selected");
            continue;
        }
        progress.println(&format!("== {} — {}", def.name, def.title));
        match def.name {
            "preflight/kernel" => run.preflight_kernel().await,
            "node/packages" => match node::packages(&run.templates, spec, &opts.source) {
                Ok(c) => run.on_all(def.name, c).await,
                Err(e) => run.fail_all(def.name, "node packages", &e),
            },
            "node/containerd" => match node::containerd(&run.templates, spec, &opts.source) {
                Ok(c) => run.on_all(def.name, c).await,
                Err(e) => run.fail_all(def.name, "render containerd config", &e.to_string()),
            },
            "node/kernel-modules" => run.on_all(def.name, node::kernel_modules()).await,
            "node/sysctl" => run.on_all(def.name, node::sysctl()).await,
            "node/swap" => run.on_all(def.name, node::swap()).await,
            "kubeadm/init" => cluster::init(&mut run).await,
            "kubeadm/join-control-plane" => cluster::join(&mut run, true).await,
            "kubeadm/join-worker" => cluster::join(&mut run, false).await,
            "kubeconfig/fetch" => cluster::fetch_kubeconfig(&mut run).await,
            "cilium/install" => cluster::cilium_install(&mut run).await,
            "cilium/wait" => cluster::cilium_wait(&mut run).await,
            "cluster/verify" => cluster::verify(&mut run).await,
            other => run.skip_phase(other, "not implemented"),
        }
    }
    crate::ssh::node_lock::release_all(std::mem::take(&mut run.node_locks)).await;
    for s in run.sessions.values() {
        s.close().await;
    }
    let outcome = if run.failures.is_empty() {
        "finished"
    } else {
        "stopped"
    };
    run.journal
        .record("apply", "", outcome, t0.elapsed().as_secs_f64(), "");
    Ok(ApplyReport {
        cluster: spec.label.clone(),
        run: run.journal.run(),
        journal: run.journal.path().to_path_buf(),
        resumed_from: resumed.map(|u| u.run),
        phases: run.phases,
        failures: run.failures,
        kubeconfig: run.kubeconfig,
        secs: t0.elapsed().as_secs_f64(),
    })
}

impl Run<'_> {
    /// `preflight/connect`: one session per host, all in parallel.
    async fn connect(&mut self) -> Result<(), ApplyError> {
        let name = "preflight/connect";
        self.progress
            .println(&format!("== {name} — Connect to every host over SSH"));
        let policy = Arc::new(HostKeyPolicy::load(
            &self.opts.host_keys.file,
            self.opts.host_keys.mode,
        )?);
        let mut o = Options::new(policy);
        o.connect_timeout = self.opts.connect_timeout;
        let (dests, bastion) = check::destinations(self.inv);
        let connector = Connector::new(Arc::new(o), bastion);
        let inputs = dests.into_iter().map(|d| (d.name.clone(), d)).collect();
        let results = fleet::run(
            "connecting",
            inputs,
            self.opts.concurrency,
            self.progress,
            |_: &Arc<Session>| "connected".into(),
            |dest, _p| {
                let c = connector.clone();
                async move { c.connect(dest).await }
            },
        )
        .await;
        let mut report = PhaseReport {
            phase: name.into(),
            hosts: Vec::new(),
        };
        for r in results {
            let secs = r.duration.as_secs_f64();
            match r.result {
                Ok(s) => {
                    self.journal.record(name, &r.host, "unchanged", secs, "");
                    report.hosts.push(HostReport {
                        host: r.host.clone(),
                        outcome: Outcome::Unchanged,
                        secs,
                    });
                    self.sessions.insert(r.host, s);
                }
                Err(e) => {
                    let f = Failure {
                        host: r.host.clone(),
                        phase: name.into(),
                        command: "ssh connect".into(),
                        status: None,
                        stderr: e.to_string(),
                        hint: Some(
                            "`kubedrill check -i INVENTORY` shows every host's SSH state".into(),
                        ),
                    };
                    self.journal
                        .record(name, &r.host, "failed", secs, &f.stderr);
                    self.failures.push(f);
                }
            }
        }
        // One kubedrill per node: another apply, reset or drill (from any machine) holds it.
        let (locks, refused) = crate::ssh::node_lock::lock_all(&self.sessions).await;
        self.node_locks = locks;
        for (host, e) in refused {
            report.hosts.retain(|h| h.host != host);
            let f = Failure {
                host: host.clone(),
                phase: name.into(),
                command: "node lock".into(),
                status: None,
                stderr: e.to_string(),
                hint: None,
            };
            self.journal.record(name, &host, "failed", 0.0, &f.stderr);
            self.failures.push(f);
        }
        self.phases.push(report);
        Ok(())
    }

    /// `preflight/kernel`: the verdicts of `check`; a blocked requested feature stops here
    /// unless `--allow-degraded`.
    async fn preflight_kernel(&mut self) {
        let name = "preflight/kernel";
        let mut report = PhaseReport {
            phase: name.into(),
            hosts: Vec::new(),
        };
        for (host, s) in &self.sessions {
            let t = Instant::now();
            match check::gather(s).await {
                Ok(f) => {
                    let r = kernel::evaluate(self.spec, host, &f);
                    let blocked: Vec<String> = r
                        .verdicts
                        .iter()
                        .filter(|v| {
                            v.requested && matches!(v.status, kernel::Status::Blocked { .. })
                        })
                        .map(|v| {
                            format!("{:?}: {}", v.feature, v.status.reason().unwrap_or_default())
                        })
                        .collect();
                    self.reports.push(r);
                    let secs = t.elapsed().as_secs_f64();
                    if !blocked.is_empty() && !self.opts.allow_degraded {
                        let f = Failure {
                            host: host.clone(),
                            phase: name.into(),
                            command: "kernel checks".into(),
                            status: None,
                            stderr: blocked.join("\n"),
                            hint: Some("fix the kernel or NIC as `kubedrill check` says, change the inventory's Cilium settings, or pass --allow-degraded".into()),
                        };
                        self.journal.record(name, host, "failed", secs, &f.stderr);
                        self.failures.push(f);
                    } else {
                        self.journal
                            .record(name, host, "unchanged", secs, &blocked.join("; "));
                        report.hosts.push(HostReport {
                            host: host.clone(),
                            outcome: Outcome::Unchanged,
                            secs,
                        });
                    }
                }
                Err(e) => {
                    let f = Failure {
                        host: host.clone(),
                        phase: name.into(),
                        command: "facts script (sh -s)".into(),
                        status: None,
                        stderr: e.to_string(),
                        hint: None,
                    };
                    self.journal
                        .record(name, host, "failed", t.elapsed().as_secs_f64(), &f.stderr);
                    self.failures.push(f);
                }
            }
        }
        self.phases.push(report);
    }

    fn skip_phase(&mut self, name: &str, why: &str) {
        self.journal.record(name, "", "skipped", 0.0, why);
        self.phases.push(PhaseReport {
            phase: name.into(),
            hosts: vec![HostReport {
                host: String::new(),
                outcome: Outcome::Skipped(why.into()),
                secs: 0.0,
            }],
        });
    }

    fn fail_all(&mut self, name: &str, command: &str, message: &str) {
        self.failures.push(Failure {
            host: "(all)".into(),
            phase: name.into(),
            command: command.into(),
            status: None,
            stderr: message.into(),
            hint: None,
        });
        self.journal.record(name, "", "failed", 0.0, message);
    }

    /// Run one change on every host, `--concurrency` at a time.
    async fn on_all(&mut self, name: &str, change: HostChange) {
        let change = Arc::new(change);
        let items = self
            .sessions
            .keys()
            .map(|h| (h.clone(), change.clone()))
            .collect();
        self.on_hosts(name, items, self.opts.concurrency).await;
    }

    /// Add a host's outcome to the phase's report (the last one, when it is this phase).
    fn push_host(&mut self, phase: &str, h: HostReport) {
        match self.phases.last_mut().filter(|p| p.phase == phase) {
            Some(p) => p.hosts.push(h),
            None => self.phases.push(PhaseReport {
                phase: phase.into(),
                hosts: vec![h],
            }),
        }
    }

    /// Run each host's change, `concurrency` hosts at a time; record every outcome.
    async fn on_hosts(
        &mut self,
        name: &str,
        items: Vec<(String, Arc<HostChange>)>,
        concurrency: usize,
    ) {
        let inputs: Vec<(String, HostWork)> = items
            .into_iter()
            .filter_map(|(h, c)| self.sessions.get(&h).map(|s| (h, (s.clone(), c))))
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
                async move { run_change(&s, &phase, &change, &redactor, &p).await }
            },
        )
        .await;
        for r in results {
            self.record(name, &r.host, r.result, r.duration.as_secs_f64());
        }
    }

    /// Record one host's outcome of a phase: journal, report, and the failure list.
    fn record(&mut self, phase: &str, host: &str, r: Result<Outcome, Failure>, secs: f64) {
        match r {
            Ok(o) => {
                self.journal.record(phase, host, o.label(), secs, "");
                self.push_host(
                    phase,
                    HostReport {
                        host: host.into(),
                        outcome: o,
                        secs,
                    },
                );
            }
            Err(f) => {
                let f = Failure {
                    stderr: self.redactor.apply(&f.stderr),
                    ..f
                };
                self.journal.record(
                    phase,
                    host,
                    "failed",
                    secs,
                    &format!("{}: {}", f.command, f.stderr),
                );
                self.failures.push(f);
            }
        }
    }
}

impl From<fleet::TaskFailed> for Failure {
    fn from(t: fleet::TaskFailed) -> Self {
        Failure {
            host: String::new(),
            phase: String::new(),
            command: String::new(),
            status: None,
            stderr: t.to_string(),
            hint: None,
        }
    }
}

/// A script that exits 0 when every file has this content and mode, else names the first
/// that differs.
fn files_check(files: &[RenderedFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut s = String::new();
    // Files with secrets are removed after use: they cannot be part of "already done".
    for f in files.iter().filter(|f| !f.sensitive) {
        let hash: String = Sha256::digest(f.content.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let p = quote(&f.path);
        s.push_str(&format!(
            "[ \"$(sha256sum < {p} 2>/dev/null | cut -d' ' -f1)\" = {hash} ] && [ \"$(stat -c %a {p})\" = {:o} ] || {{ echo '{} differs'; exit 1; }}\n",
            f.mode,
            f.path.replace('\'', "")
        ));
    }
    s
}

fn exec_failure(
    host: &str,
    phase: &str,
    command: &str,
    e: &SshError,
    redactor: &Redactor,
) -> Failure {
    let hint = match e {
        SshError::CommandTimeout { .. } => Some(
            "the node may be slow or stuck; re-run to resume (finished phases are skipped)".into(),
        ),
        SshError::ConnectionLost { .. } => Some("the connection dropped; re-run to resume".into()),
        _ => None,
    };
    Failure {
        host: host.into(),
        phase: phase.into(),
        command: command.into(),
        status: None,
        stderr: redactor.apply(&e.to_string()),
        hint,
    }
}

/// One phase on one host: precondition, check, uploads, files, apply, check again.
pub async fn run_change(
    s: &Session,
    phase: &str,
    c: &HostChange,
    redactor: &Redactor,
    p: &fleet::HostProgress,
) -> Result<Outcome, Failure> {
    let host = s.destination().name.clone();
    let fail = |command: &str, status: Option<u32>, stderr: String, hint: Option<String>| Failure {
        host: host.clone(),
        phase: phase.into(),
        command: command.into(),
        status,
        stderr: redactor.apply(&stderr),
        hint,
    };
    if let Some((script, message)) = &c.precondition {
        p.set("checking precondition");
        let o = s
            .exec(
                &Command::new(script.clone())
                    .privileged()
                    .label("precondition")
                    .idempotent(),
            )
            .await
            .map_err(|e| exec_failure(&host, phase, "precondition", &e, redactor))?;
        if !o.success() {
            return Err(fail("precondition", o.status, message.clone(), None));
        }
    }
    let check = format!("{}{}", files_check(&c.files), c.check);
    let run_check = || async {
        s.exec(
            &Command::new(check.clone())
                .privileged()
                .label(format!("{phase} check"))
                .idempotent(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, "check", &e, redactor))
    };
    p.set("checking");
    if run_check().await?.success() {
        return Ok(Outcome::Unchanged);
    }
    if !c.uploads.is_empty() {
        upload_missing(s, phase, c, redactor, p).await?;
    }
    for f in &c.files {
        p.set(&format!("writing {}", f.path));
        let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        s.exec(
            &Command::new(format!("mkdir -p {}", quote(dir)))
                .privileged()
                .idempotent(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, "mkdir", &e, redactor))?;
        let o = s
            .upload(f.content.as_bytes(), &f.path, f.mode, true)
            .await
            .map_err(|e| exec_failure(&host, phase, &format!("write {}", f.path), &e, redactor))?;
        if !o.success() {
            return Err(fail(
                &format!("write {}", f.path),
                o.status,
                o.stderr_tail(6),
                None,
            ));
        }
    }
    p.set(&c.apply_label);
    let o = s
        .exec(
            &Command::new(c.apply.clone())
                .privileged()
                .label(c.apply_label.clone())
                .timeout(Duration::from_secs(c.timeout_secs))
                // Package managers and kubeadm can be chatty; stdout is only shown on failure.
                .lossy_stdout(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, &c.apply_label, &e, redactor))?;
    if !o.success() {
        let lines = if c.error_lines == 0 { 8 } else { c.error_lines };
        let mut err = o.stderr_tail(lines);
        if err.trim().is_empty() {
            err = o
                .stdout_text()
                .lines()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
        }
        return Err(fail(&c.apply_label, o.status, err, None));
    }
    p.set("verifying");
    let v = run_check().await?;
    if !v.success() {
        return Err(fail(
            &format!("{phase} check after the change"),
            v.status,
            format!(
                "the change ran but the check still fails: {}",
                v.stdout_text().trim()
            ),
            None,
        ));
    }
    Ok(Outcome::Changed)
}

/// Upload the files the node does not have yet (one `sha256sum` round trip to find them).
async fn upload_missing(
    s: &Session,
    phase: &str,
    c: &HostChange,
    redactor: &Redactor,
    p: &fleet::HostProgress,
) -> Result<(), Failure> {
    let host = s.destination().name.clone();
    let list: Vec<String> = c.uploads.iter().map(|u| quote(&u.remote)).collect();
    let dirs: Vec<String> = c
        .uploads
        .iter()
        .filter_map(|u| u.remote.rsplit_once('/').map(|(d, _)| quote(d)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let o = s
        .exec(
            &Command::new(format!(
                "mkdir -p {} && sha256sum {} 2>/dev/null; true",
                dirs.join(" "),
                list.join(" ")
            ))
            .privileged()
            .idempotent(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, "sha256sum", &e, redactor))?;
    let have: std::collections::HashMap<String, String> = o
        .stdout_text()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, f)| (f.to_string(), h.to_string()))
        })
        .collect();
    let missing: Vec<&Upload> = c
        .uploads
        .iter()
        .filter(|u| have.get(&u.remote) != Some(&u.sha256))
        .collect();
    for (i, u) in missing.iter().enumerate() {
        p.set(&format!(
            "uploading {}/{} {}",
            i + 1,
            missing.len(),
            u.remote
        ));
        let data = std::fs::read(&u.local).map_err(|e| Failure {
            host: host.clone(),
            phase: phase.into(),
            command: format!("read {}", u.local.display()),
            status: None,
            stderr: e.to_string(),
            hint: None,
        })?;
        let o = s
            .upload(&data, &u.remote, u.mode, true)
            .await
            .map_err(|e| {
                exec_failure(&host, phase, &format!("upload {}", u.remote), &e, redactor)
            })?;
        if !o.success() {
            return Err(Failure {
                host: host.clone(),
                phase: phase.into(),
                command: format!("upload {}", u.remote),
                status: o.status,
                stderr: o.stderr_tail(6),
                hint: None,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_name_and_group() {
        let s = Selection::new(&["node/swap".into()], &["node".into()]).expect("valid");
        assert!(s.runs("node/packages"));
        assert!(!s.runs("node/swap"));
        assert!(!s.runs("kubeadm/init"));
        assert!(s.runs("preflight/connect"));
        let e = Selection::new(&["node/swp".into()], &[]).expect_err("unknown");
        assert!(
            e.contains("unknown phase `node/swp`") && e.contains("node/swap"),
            "{e}"
        );
        assert!(!matches("node", "nodes/x"));
    }

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

    #[test]
    fn files_check_compares_hash_and_mode() {
        let f = RenderedFile {
            path: "/etc/x.conf".into(),
            mode: 0o644,
            content: "a\n".into(),
            sensitive: false,
        };
        let s = files_check(&[f]);
        assert!(
            s.contains("87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"),
            "{s}"
        );
        assert!(s.contains("= 644 ]"), "{s}");
    }
}
