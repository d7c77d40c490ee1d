//! `kubedrill drill run`: the drill as an ordered list of phases ([`PHASES`]), each with a title
//! and a run, over the lab's SSH sessions and its Kubernetes API (through an SSH port forward to
//! the first control plane). Every phase is recorded with its start, end and outcome in the run
//! record; every failure names the host, the phase and the command ([`DrillFailure`]).
//!
//! The orchestration is thin: the decisions and conversions live in the pure modules
//! ([`super::definition`], [`super::layout`], [`super::rollout`], [`super::resources`],
//! [`super::burst`], [`super::policy`], [`super::record`]), the API calls in
//! [`super::cluster`], [`crate::k8s`] and [`crate::cilium::preflight`], the node commands in
//! [`super::probes`], [`super::resources`] and [`crate::cilium::helm`].
//!
//! The probe agents, the agent watch and the resource sampler run as background tasks from
//! `probes-start`/`upgrade`/`resources` until `report`, which always runs (also after a failure)
//! and writes `run.json`, `report.html` and `summary.md`.

use super::burst::{self, BurstSpec};
use super::cluster::{self, ClusterError};
use super::definition::ResolvedDrill;
use super::layout::{self, BACKEND_POD, CLIENT_POD, PodEnd, TCP_PORT, Targets, UDP_PORT};
use super::migrate::{self, MigrateOptions};
use super::path::{Minor, StepKind};
use super::policy::{self, VerdictInputs, VerifyMismatch};
use super::probes::{self, ProbeError, ProbeRun, ProbeSpec};
use super::record::{self, RecordBuilder, now};
use super::resources::{self, Sampler};
use super::rollout::RolloutTracker;
use crate::apply::cluster::{ADMIN_CONF, CHART_DIR};
use crate::check::{self, HostKeySettings};
use crate::cilium::helm::{
    self, Chart, Helm, HelmCommand, PreflightOptions, Release, UpgradeValues,
};
use crate::cilium::preflight;
use crate::fleet::Progress;
use crate::inventory::{Inventory, NodeRole as InvRole};
use crate::k8s::agents;
use crate::k8s::client::client_via_ssh;
use crate::k8s::kube_proxy;
use crate::k8s::status::{self, ExpectedDatapath};
use crate::k8s::wait;
use crate::kernel::{self, NodeReport};
use crate::lab::definition::Lab;
use crate::report::leak::{self, LeakThresholds, LeakVerdict};
use crate::report::record::{
    DrillId, HelmEvent, KubeProxyEvent, Node, NodeRole, PhaseOutcome, ResourceSample, Verdict,
    VersionChange, Window,
};
use crate::report::time::Timestamp;
use crate::report::{self, ReportError, Written};
use crate::spec::cilium::{KubeProxyReplacement, RoutingMode};
use crate::spec::{ClusterSpec, Version};
use crate::ssh::forward::Forward;
use crate::ssh::shell::quote;
use crate::ssh::{Command, Session};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A phase of `drill run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhaseDef {
    /// Name in the record (`upgrade` records one phase per step: `upgrade/1.18.12`).
    pub name: &'static str,
    /// What it does.
    pub title: &'static str,
}

/// The phases, in order.
pub const PHASES: [PhaseDef; 9] = [
    PhaseDef {
        name: "reset",
        title: "Revert every lab VM to the snapshot (--reset only)",
    },
    PhaseDef {
        name: "connect",
        title: "SSH to every node; Kubernetes API through a port forward to the first control plane",
    },
    PhaseDef {
        name: "preflight",
        title: "Save the Helm values, migrate them per step, install and judge the Cilium pre-flight",
    },
    PhaseDef {
        name: "probes-start",
        title: "Probe pods, Services, echo responders and probers (running until report)",
    },
    PhaseDef {
        name: "resources",
        title: "Sample every agent's CPU and RSS from /proc (running until report)",
    },
    PhaseDef {
        name: "upgrade",
        title: "helm upgrade per step; follow the rollout node by node; pod burst; verify",
    },
    PhaseDef {
        name: "rollback",
        title: "helm rollback when verification failed or a loss window exceeded the policy",
    },
    PhaseDef {
        name: "soak",
        title: "Keep probing and sampling; judge agent memory growth",
    },
    PhaseDef {
        name: "report",
        title: "Stop probes, write run.json, report.html, summary.md (and a comparison)",
    },
];

/// Time limits of the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// VMs answering SSH after `--reset`.
    pub reset_ssh: Duration,
    /// Every node Ready after connecting.
    pub api: Duration,
    /// One pre-flight (install, ready, uninstall).
    pub preflight: Duration,
    /// One Helm command.
    pub helm: Duration,
    /// The agent DaemonSet rolled out after an upgrade or rollback.
    pub rollout: Duration,
    /// Probe pods Ready; the old drill namespace gone.
    pub pods: Duration,
    /// Burst pods running.
    pub burst: Duration,
    /// One `cilium-dbg status` exec.
    pub agent_status: Duration,
    /// A background task to finish after it was told to stop.
    pub stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            reset_ssh: Duration::from_secs(300),
            api: Duration::from_secs(120),
            preflight: Duration::from_secs(600),
            helm: Duration::from_secs(600),
            rollout: Duration::from_secs(900),
            pods: Duration::from_secs(180),
            burst: Duration::from_secs(120),
            agent_status: Duration::from_secs(60),
            stop: Duration::from_secs(60),
        }
    }
}

/// Everything `drill run` needs.
#[derive(Debug, Clone)]
pub struct DrillInput {
    /// The lab (its definition).
    pub lab: Lab,
    /// The drill with the command line's overrides and its upgrade path.
    pub drill: ResolvedDrill,
    /// The lab's own inventory (`<lab dir>/inventory/hosts.yaml`).
    pub inventory: Inventory,
    /// The cluster spec from that inventory.
    pub spec: ClusterSpec,
    /// `--reset SNAPSHOT`.
    pub reset: Option<String>,
    /// Where run directories go (`<state>/drills/<lab>` unless `--runs-dir`).
    pub runs_dir: PathBuf,
    /// The admin kubeconfig (`<cluster dir>/admin.conf`; fetched from the first control plane
    /// when missing).
    pub kubeconfig: PathBuf,
    /// known_hosts and mode.
    pub host_keys: HostKeySettings,
    /// SSH connect timeout.
    pub connect_timeout: Duration,
    /// Hosts connected to at once.
    pub concurrency: usize,
    /// Step limits.
    pub timeouts: Timeouts,
    /// Helm on the first control plane.
    pub helm: Helm,
}

/// `<state>/drills/<lab>`.
pub fn default_runs_dir(lab: &str) -> PathBuf {
    crate::layout::drill_runs_dir(lab)
}

/// A failed step: where, in which phase, what ran, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{host}: phase {phase}: {command}: {message}")]
pub struct DrillFailure {
    /// Host (`(local)` for this machine, `api via cp1` for Kubernetes API calls).
    pub host: String,
    /// Phase.
    pub phase: String,
    /// The command or API call (a label; never a secret).
    pub command: String,
    /// What went wrong.
    pub message: String,
}

/// What `drill run` did.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Run id.
    pub run_id: String,
    /// Run directory.
    pub run_dir: PathBuf,
    /// The verdict.
    pub verdict: Verdict,
    /// The reports written.
    pub written: Written,
    /// The comparison with earlier runs of the same drill (with `--reset`).
    pub comparison: Option<PathBuf>,
    /// Failures, in order.
    pub failures: Vec<DrillFailure>,
    /// Things worth knowing that did not fail the drill.
    pub notes: Vec<String>,
    /// A rollback ran.
    pub rolled_back: bool,
}

/// Why no report could be written at all.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The run directory.
    #[error("run directory {}: {source}", path.display())]
    RunDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Writing or rendering the record.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// The sidecar of every run directory: what the run was (for finding earlier runs of the same
/// drill to compare with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Drill name.
    pub drill: String,
    /// Lab.
    pub lab: String,
    /// `--reset` snapshot.
    pub reset: Option<String>,
    /// Cilium from.
    pub from: String,
    /// Cilium to.
    pub to: String,
    /// The steps.
    pub steps: Vec<String>,
}

/// The sidecar's file name.
pub const RUN_INFO: &str = "drill.json";

/// The cluster spec as it should be at another Cilium version.
pub fn spec_at(spec: &ClusterSpec, v: Version) -> ClusterSpec {
    let mut s = spec.clone();
    s.cilium = v;
    s
}

/// Longest a background probe agent may run by itself: every step's Helm, rollout and burst,
/// a rollback, the soak, and ten minutes of margin. The agents are stopped at `report`; this
/// only bounds an agent whose kubedrill went away.
pub fn agent_lifetime(t: &Timeouts, steps: usize, soak_secs: u64) -> Duration {
    let per_step = t.helm + t.rollout + t.burst + t.agent_status * 2 + Duration::from_secs(300);
    per_step * u32::try_from(steps).unwrap_or(u32::MAX).max(1)
        + t.helm
        + t.rollout
        + Duration::from_secs(soak_secs)
        + Duration::from_secs(600)
}

/// Earlier run directories of the same drill (same name and reset snapshot) under `base`,
/// oldest first (run ids sort by time).
pub fn earlier_runs(base: &Path, drill: &str, reset: Option<&str>, except: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p != except && p.join(report::RUN_FILE).is_file())
        .filter(|p| {
            crate::files::read_text_bounded(&p.join(RUN_INFO), crate::files::MAX_RECORD_BYTES)
                .ok()
                .and_then(|t| serde_json::from_str::<RunInfo>(&t).ok())
                .is_some_and(|i| i.drill == drill && i.reset.as_deref() == reset)
        })
        .collect();
    out.sort();
    out
}

/// Create `base/ID` (or `base/ID-2`, `-3`, … when a run started in the same second).
fn new_run_dir(base: &Path, id: &str) -> Result<(String, PathBuf), DrillError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DrillError::RunDir { path, source }
    };
    std::fs::create_dir_all(base).map_err(err(base))?;
    for n in 1..1000 {
        let run_id = if n == 1 {
            id.to_owned()
        } else {
            format!("{id}-{n}")
        };
        let dir = base.join(&run_id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((run_id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(&dir)(e)),
        }
    }
    Err(err(base)(std::io::Error::other(
        "no free run directory name",
    )))
}

/// The record's nodes from the inventory.
pub fn record_nodes(inv: &Inventory) -> Vec<Node> {
    inv.hosts
        .iter()
        .map(|h| Node {
            name: h.name.clone(),
            role: match h.role {
                InvRole::ControlPlane { .. } => NodeRole::ControlPlane,
                InvRole::Worker => NodeRole::Worker,
            },
            address: Some(h.ip.to_string()),
        })
        .collect()
}

/// What the agents run, node by node, against what is expected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Every difference, or why an agent could not be asked.
    pub mismatches: Vec<VerifyMismatch>,
    /// The datapath each agent reported.
    pub datapaths: BTreeMap<String, crate::report::record::Datapath>,
}

/// Ask every agent (`cilium-dbg status --verbose` through the API server's exec) and compare
/// with `expected` (whose `cilium_version` names the step). A node of `hosts` without an agent
/// pod, an agent pod that is not Ready, and an agent that cannot be asked are mismatches too.
pub async fn verify_agents(
    client: &kube::Client,
    expected: &ExpectedDatapath,
    hosts: &[String],
    timeout: Duration,
) -> Verification {
    let step = expected
        .cilium_version
        .map_or_else(|| "the target".to_owned(), |v| v.to_string());
    let mut out = Verification::default();
    let push = |out: &mut Verification, node: &str, detail: String| {
        out.mismatches.push(VerifyMismatch {
            node: node.to_owned(),
            step: step.clone(),
            detail,
        })
    };
    let list = match agents::list_agents(client).await {
        Ok(l) => l,
        Err(e) => {
            for h in hosts {
                push(&mut out, h, format!("cannot list the agents: {e}"));
            }
            return out;
        }
    };
    let mut seen = BTreeSet::new();
    for a in &list {
        let Some(node) = a.node.clone() else { continue };
        seen.insert(node.clone());
        if !a.ready {
            let why = a
                .waiting_reason
                .as_ref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            push(
                &mut out,
                &node,
                format!("agent pod {} not Ready{why}", a.name),
            );
            continue;
        }
        match agents::agent_status(client, a, timeout).await {
            Ok(r) => {
                out.datapaths
                    .insert(node.clone(), record::datapath_of(&r.status));
                for m in status::compare(expected, &r.status) {
                    push(&mut out, &node, m.to_string());
                }
            }
            Err(e) => push(
                &mut out,
                &node,
                format!("cannot read the agent's status: {e}"),
            ),
        }
    }
    for h in hosts {
        if !seen.contains(h) {
            push(&mut out, h, "no Cilium agent pod on this node".into());
        }
    }
    out
}

/// A kube-proxy sighting worth recording: kube-proxy found in a cluster that had none when the
/// drill started (`None` when it was there from the start, or is absent now).
pub fn kube_proxy_sighting(
    absent_at_start: bool,
    now: &kube_proxy::KubeProxyPresence,
    kpr: KubeProxyReplacement,
) -> Option<String> {
    if !absent_at_start || now.is_absent() {
        return None;
    }
    Some(format!(
        "{now}{}",
        if kpr == KubeProxyReplacement::True {
            " in a cluster with Cilium's kube-proxy replacement"
        } else {
            ""
        }
    ))
}

/// Marker: the phase failed and its failures are recorded.
struct Stop;

type PhaseResult = Result<PhaseOutcome, Stop>;

struct Bg<T> {
    host: String,
    tag: String,
    handle: JoinHandle<Result<T, ProbeError>>,
}

struct SamplerTask {
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
    samples: Arc<Mutex<BTreeMap<String, Vec<ResourceSample>>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

struct Ctx<'a> {
    d: &'a DrillInput,
    progress: &'a Progress,
    run_dir: PathBuf,
    tag: String,
    b: RecordBuilder,
    failures: Vec<DrillFailure>,
    notes: Vec<String>,
    sessions: BTreeMap<String, Arc<Session>>,
    cp: String,
    forward: Option<Forward>,
    client: Option<kube::Client>,
    node_reports: Vec<NodeReport>,
    charts: BTreeMap<Version, Chart>,
    remote_values: BTreeMap<Version, String>,
    pre_revision: Option<u32>,
    kube_proxy_absent_at_start: Option<bool>,
    changed: bool,
    deployed: Version,
    servers: Vec<Bg<()>>,
    probers: Vec<Bg<ProbeRun>>,
    sampler: Option<SamplerTask>,
    watch: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<Vec<String>>)>,
    tracker: Arc<Mutex<RolloutTracker>>,
    mismatches: Vec<VerifyMismatch>,
    rollback_reasons: Option<Vec<String>>,
    rolled_back: bool,
    leaks: Vec<(String, LeakVerdict)>,
    /// The lock on every node, held from connect to the end of the run.
    node_locks: Vec<crate::ssh::node_lock::NodeLock>,
}

/// Run the drill. Returns an error only when no report can be written; a failed drill is an
/// `Ok` report with a `fail` verdict and its failures.
pub async fn run(d: &DrillInput, progress: &Progress) -> Result<DrillReport, DrillError> {
    let started = now();
    let (run_id, run_dir) = new_run_dir(&d.runs_dir, &record::run_id(&d.drill.name, started))?;
    let info = RunInfo {
        drill: d.drill.name.clone(),
        lab: d.lab.name.clone(),
        reset: d.reset.clone(),
        from: d.drill.from.to_string(),
        to: d.drill.to.to_string(),
        steps: d.drill.steps.clone(),
    };
    let info_text = serde_json::to_string_pretty(&info).unwrap_or_default();
    report::write_file(&run_dir.join(RUN_INFO), &info_text)?;

    let mut b = RecordBuilder::new(
        DrillId {
            name: d.drill.name.clone(),
            run_id: run_id.clone(),
        },
        &d.lab.name,
        started,
        VersionChange {
            from: d.drill.from.to_string(),
            to: d.drill.to.to_string(),
        },
        record_nodes(&d.inventory),
        record::record_policy(&d.drill.definition.policy),
    );
    b.kubernetes = d.drill.kubernetes.map(|(f, t)| VersionChange {
        from: f.to_string(),
        to: t.to_string(),
    });
    // Names the detached agents on the nodes (`[a-z0-9-]`): unique per run start.
    let tag = format!("d{}", started.unix_ms());
    let mut c = Ctx {
        d,
        progress,
        run_dir: run_dir.clone(),
        tag,
        b,
        failures: Vec::new(),
        notes: d.drill.warnings.clone(),
        sessions: BTreeMap::new(),
        cp: d.inventory.first_control_plane().name.clone(),
        forward: None,
        client: None,
        node_reports: Vec::new(),
        charts: BTreeMap::new(),
        remote_values: BTreeMap::new(),
        pre_revision: None,
        kube_proxy_absent_at_start: None,
        changed: false,
        deployed: d.drill.from,
        servers: Vec::new(),
        probers: Vec::new(),
        sampler: None,
        watch: None,
        tracker: Arc::new(Mutex::new(RolloutTracker::default())),
        mismatches: Vec::new(),
        rollback_reasons: None,
        rolled_back: false,
        leaks: Vec::new(),
        node_locks: Vec::new(),
    };
    c.say(&format!(
        "drill {} on lab {}: Cilium {} → {} ({}); run {run_id}",
        d.drill.name,
        d.lab.name,
        d.drill.from,
        d.drill.to,
        d.drill.steps.join(", ")
    ));
    let mut stopped = false;
    for def in PHASES {
        if def.name == "report" {
            break;
        }
        let t = now();
        let r = if stopped {
            Ok(PhaseOutcome::Skipped)
        } else {
            c.say(&format!("== {} — {}", def.name, def.title));
            match def.name {
                "reset" => c.reset().await,
                "connect" => c.connect().await,
                "preflight" => c.preflight().await,
                "probes-start" => c.probes_start().await,
                "resources" => c.resources(),
                "upgrade" => c.upgrade().await,
                "rollback" => c.rollback().await,
                "soak" => c.soak().await,
                _ => Ok(PhaseOutcome::Skipped),
            }
        };
        // `upgrade` records one phase per step itself.
        let records_itself = def.name == "upgrade" && !stopped;
        match r {
            Ok(outcome) => {
                if !records_itself {
                    c.b.phase(def.name, t, now(), outcome);
                }
            }
            Err(Stop) => {
                if !records_itself {
                    c.b.phase(def.name, t, now(), PhaseOutcome::Failed);
                }
                stopped = true;
            }
        }
    }
    c.say("== report — Stop probes, write run.json, report.html, summary.md");
    c.finish().await
}

impl Ctx<'_> {
    fn say(&self, line: &str) {
        self.progress.println(line);
    }

    fn fail(&mut self, host: &str, phase: &str, command: &str, message: impl ToString) -> Stop {
        let f = DrillFailure {
            host: host.to_owned(),
            phase: phase.to_owned(),
            command: command.to_owned(),
            message: message.to_string(),
        };
        self.say(&format!("error: {f}"));
        self.failures.push(f);
        Stop
    }

    fn api_host(&self) -> String {
        format!("api via {}", self.cp)
    }

    fn session(&self, host: &str) -> Option<Arc<Session>> {
        self.sessions.get(host).cloned()
    }

    fn client(&self) -> Option<kube::Client> {
        self.client.clone()
    }

    /// Run a command on a host; a non-zero exit is a failure naming the command's label.
    async fn exec(&mut self, host: &str, phase: &str, cmd: &Command) -> Result<String, Stop> {
        let Some(s) = self.session(host) else {
            return Err(self.fail(
                host,
                phase,
                &cmd.label_text(),
                "no SSH session to this host",
            ));
        };
        match s.exec(cmd).await {
            Ok(o) if o.success() => Ok(o.stdout_text()),
            Ok(o) => {
                let msg = format!(
                    "exited with {}: {}",
                    o.status
                        .map_or_else(|| "a signal".to_owned(), |s| s.to_string()),
                    o.stderr_tail(6)
                );
                Err(self.fail(host, phase, &cmd.label_text(), msg))
            }
            Err(e) => Err(self.fail(host, phase, &cmd.label_text(), e)),
        }
    }

    async fn helm(&mut self, phase: &str, cmd: &HelmCommand) -> Result<String, Stop> {
        let cp = self.cp.clone();
        let c = cmd.ssh_command().timeout(self.d.timeouts.helm);
        self.exec(&cp, phase, &c).await
    }

    async fn history(&mut self, phase: &str) -> Result<helm::History, Stop> {
        let out = self.helm(phase, &self.d.helm.history()).await?;
        helm::parse_history(&out).map_err(|e| {
            let cp = self.cp.clone();
            self.fail(&cp, phase, "helm history cilium --output json", e)
        })
    }

    // -----------------------------------------------------------------------------------------
    // reset, connect
    // -----------------------------------------------------------------------------------------

    async fn reset(&mut self) -> PhaseResult {
        let Some(snap) = self.d.reset.clone() else {
            return Ok(PhaseOutcome::Skipped);
        };
        let lab = self.d.lab.name.clone();
        match crate::lab::lifecycle::reset(&lab, &snap, self.d.timeouts.reset_ssh, self.progress)
            .await
        {
            Ok(r) => {
                self.say(&format!(
                    "lab {lab} reverted to {snap} in {:.1} s",
                    r.total_secs
                ));
                Ok(PhaseOutcome::Ok)
            }
            Err(e) => Err(self.fail("(lab)", "reset", &format!("lab reset {lab} {snap}"), e)),
        }
    }

    async fn connect(&mut self) -> PhaseResult {
        let phase = "connect";
        let ssh = crate::connect::SshSettings {
            host_keys: self.d.host_keys.clone(),
            connect_timeout: self.d.connect_timeout,
        };
        let results = match crate::connect::connect_all(
            &self.d.inventory,
            &ssh,
            &[],
            self.d.concurrency.max(1),
            self.progress,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let file = ssh.host_keys.file.display().to_string();
                return Err(self.fail("(local)", phase, &format!("read known_hosts {file}"), e));
            }
        };
        let mut failed = false;
        for r in results {
            match r.result {
                Ok(s) => {
                    self.sessions.insert(r.host, s);
                }
                Err(e) => {
                    self.fail(&r.host, phase, "ssh connect", e);
                    failed = true;
                }
            }
        }
        if failed {
            return Err(Stop);
        }
        // One kubedrill per node for the whole drill (an apply or reset from anywhere waits).
        let (locks, refused) = crate::ssh::node_lock::lock_all(&self.sessions).await;
        self.node_locks = locks;
        if !refused.is_empty() {
            for (host, e) in refused {
                self.fail(&host, phase, "node lock", e);
            }
            return Err(Stop);
        }
        // Facts, for the datapath the kernels allow (as `apply` judges it).
        let from_spec = spec_at(&self.d.spec, self.d.drill.from);
        for (host, s) in self.sessions.clone() {
            match check::gather(s.as_ref()).await {
                Ok(f) => self
                    .node_reports
                    .push(kernel::evaluate(&from_spec, &host, &f)),
                Err(e) => self.notes.push(format!(
                    "{host}: facts not gathered ({e}); the expected datapath is the inventory's intent"
                )),
            }
        }
        // The kubeconfig, fetched once from the first control plane if it is not here yet.
        let kc = self.d.kubeconfig.clone();
        if !kc.is_file() {
            let cp = self.cp.clone();
            let cmd = Command::new(format!("cat {ADMIN_CONF}"))
                .privileged()
                .label(format!("read {ADMIN_CONF}"))
                .idempotent();
            let text = self.exec(&cp, phase, &cmd).await?;
            if let Err(e) = crate::files::write_private(&kc, text.as_bytes()) {
                return Err(self.fail("(local)", phase, &format!("write {}", kc.display()), e));
            }
        }
        let Some(cp_s) = self.session(&self.cp) else {
            let cp = self.cp.clone();
            return Err(self.fail(&cp, phase, "ssh connect", "no session"));
        };
        let (client, fwd) = match client_via_ssh(&kc, cp_s, Duration::from_secs(15)).await {
            Ok(c) => c,
            Err(e) => return Err(self.fail("(local)", phase, "connect to the Kubernetes API", e)),
        };
        self.say(&format!(
            "Kubernetes API {} via {} on 127.0.0.1:{}",
            fwd.remote,
            self.cp,
            fwd.local.port()
        ));
        self.forward = Some(fwd);
        let n = self.d.inventory.hosts.len();
        if let Err(e) = wait::nodes_ready(&client, n, self.d.timeouts.api, |_| {}).await {
            let h = self.api_host();
            return Err(self.fail(&h, phase, "wait for every node Ready", e));
        }
        self.client = Some(client);
        Ok(PhaseOutcome::Ok)
    }

    // -----------------------------------------------------------------------------------------
    // preflight
    // -----------------------------------------------------------------------------------------

    async fn preflight(&mut self) -> PhaseResult {
        let phase = "preflight";
        let d = self.d;
        let cp = self.cp.clone();
        let Some(client) = self.client() else {
            return Err(self.fail("(local)", phase, "kubernetes client", "not connected"));
        };
        // What runs now, and since when.
        let hist = self.history(phase).await?;
        let Some(dep) = hist.deployed().cloned() else {
            return Err(self.fail(
                &cp,
                phase,
                "helm history cilium",
                "no deployed revision of release cilium in kube-system",
            ));
        };
        if dep.chart_version != Some(d.drill.from) {
            return Err(self.fail(
                &cp,
                phase,
                "helm history cilium",
                format!(
                    "the cluster runs chart {} (revision {}), but the drill starts from Cilium {}: reset the lab to a snapshot at {} (--reset), or pass --from",
                    dep.chart, dep.revision, d.drill.from, d.drill.from
                ),
            ));
        }
        self.pre_revision = Some(dep.revision);
        let first_minor = hist
            .0
            .first()
            .and_then(|r| r.chart_version)
            .map_or(Minor::of(d.drill.from), Minor::of);

        // The values as deployed, kept in the run directory (0600: they may hold secrets).
        let values_text = self.helm(phase, &d.helm.get_values(false)).await?;
        let before_path = self.run_dir.join("values-before.yaml");
        if let Err(e) = crate::files::write_private(&before_path, values_text.as_bytes()) {
            return Err(self.fail(
                "(local)",
                phase,
                &format!("write {}", before_path.display()),
                e,
            ));
        }
        let mut current = match helm::parse_values(&values_text) {
            Ok(v) => v,
            Err(e) => return Err(self.fail(&cp, phase, "helm get values cilium", e)),
        };

        // kube-proxy now: only a kube-proxy-free cluster can see it come back.
        match kube_proxy::detect(&client).await {
            Ok(p) => {
                self.kube_proxy_absent_at_start = Some(p.is_absent());
                if !p.is_absent() {
                    self.notes.push(format!("kube-proxy at the start: {p}"));
                }
            }
            Err(e) => {
                let h = self.api_host();
                return Err(self.fail(&h, phase, "detect kube-proxy", e));
            }
        }

        // Values per step.
        let native_cidr = match &d.spec.cilium_intent.routing {
            RoutingMode::Native(n) => Some(ipnet::IpNet::V4(n.cidr)),
            RoutingMode::Tunnel(_) => None,
        };
        let extra = serde_json::Value::Object(d.drill.definition.values.clone());
        let steps = d.drill.plan.steps().to_vec();
        for step in &steps {
            let opts = MigrateOptions {
                keep_unknown: false,
                upgrade_compatibility: Some(first_minor),
                native_cidr,
            };
            let m = match migrate::migrate(&current, step.from(), step.to(), &opts) {
                Ok(m) => m,
                Err(e) => {
                    return Err(self.fail(
                        "(local)",
                        phase,
                        &format!("migrate values {} → {}", step.from(), step.to()),
                        e,
                    ));
                }
            };
            for w in &m.warnings {
                self.say(&format!("  warning: {w}"));
                self.notes.push(format!("values {step}: {w}"));
            }
            let mut merged = m.clone();
            crate::render::cilium::merge(&mut merged.values, &extra);
            let diff = record::redact_diff(&migrate::diff(&current, &merged.values));
            self.say(&format!("  values {step}: {} changed line(s)", diff.len()));
            for l in &diff {
                self.say(&format!("    {l}"));
            }
            self.b.values_diff.push(format!("  # {step}"));
            self.b.values_diff.extend(diff);
            let yaml = match merged.values_yaml() {
                Ok(y) => y,
                Err(e) => return Err(self.fail("(local)", phase, "write the values as YAML", e)),
            };
            let local = self.run_dir.join(format!("values-{}.yaml", step.to()));
            if let Err(e) = crate::files::write_private(&local, yaml.as_bytes()) {
                return Err(self.fail("(local)", phase, &format!("write {}", local.display()), e));
            }
            let remote = format!("/etc/kubernetes/kubedrill/drill-values-{}.yaml", step.to());
            let Some(s) = self.session(&cp) else {
                return Err(self.fail(&cp, phase, "upload values", "no session"));
            };
            let mk = Command::new("mkdir -p /etc/kubernetes/kubedrill")
                .privileged()
                .idempotent();
            self.exec(&cp, phase, &mk).await?;
            if let Err(e) = s.upload(yaml.as_bytes(), &remote, 0o600, true).await {
                return Err(self.fail(&cp, phase, &format!("upload {remote}"), e));
            }
            self.remote_values.insert(step.to(), remote);
            current = merged.values;
        }

        // Charts: a bundled archive on the control plane, else the repository.
        let mut need_repo = false;
        for step in &steps {
            let v = step.to();
            let archive = format!("{CHART_DIR}/cilium-{v}.tgz");
            let has = match self.session(&cp) {
                Some(s) => s
                    .exec(
                        &Command::new(format!("test -f {}", quote(&archive)))
                            .privileged()
                            .idempotent(),
                    )
                    .await
                    .is_ok_and(|o| o.success()),
                None => false,
            };
            let chart = if has {
                Chart::archive(archive, v).ok()
            } else {
                None
            };
            let chart = chart.unwrap_or_else(|| {
                need_repo = true;
                Chart::repo(v)
            });
            self.charts.insert(v, chart);
        }
        if need_repo {
            let cmd = Command::new(
                "helm repo add cilium https://helm.cilium.io >/dev/null 2>&1 || true; helm repo update cilium >/dev/null",
            )
            .privileged()
            .label("helm repo add/update cilium")
            .timeout(d.timeouts.helm);
            self.exec(&cp, phase, &cmd).await?;
        }

        // The agents' datapath before anything changes.
        match agents::list_agents(&client).await {
            Ok(list) => {
                for a in list {
                    let Some(node) = a.node.clone() else { continue };
                    match agents::agent_status(&client, &a, d.timeouts.agent_status).await {
                        Ok(r) => {
                            self.b.before.insert(node, record::datapath_of(&r.status));
                        }
                        Err(e) => self
                            .notes
                            .push(format!("{node}: agent status before the upgrade: {e}")),
                    }
                }
            }
            Err(e) => self.notes.push(format!("agents before the upgrade: {e}")),
        }

        // The pre-flight of every step's version: pre-pull images, validate policies.
        let kpr_free = self.kube_proxy_absent_at_start == Some(true);
        for step in &steps {
            let v = step.to();
            let Some(chart) = self.charts.get(&v).cloned() else {
                continue;
            };
            if let Some(s) = self.session(&cp)
                && s.exec(&d.helm.status(Release::Preflight).ssh_command())
                    .await
                    .is_ok_and(|o| o.success())
            {
                self.say("  removing a cilium-preflight release left by an earlier run");
                self.helm(phase, &d.helm.uninstall(Release::Preflight))
                    .await?;
            }
            let opts = PreflightOptions {
                api_server: kpr_free.then(|| d.spec.endpoint.clone()),
                image_tag: None,
            };
            self.helm(phase, &d.helm.preflight_install(&chart, &opts))
                .await?;
            let mut last = String::new();
            let progress = self.progress.clone();
            let waited =
                preflight::wait(&client, d.timeouts.preflight, Duration::from_secs(5), |r| {
                    let line = format!("  pre-flight {v}: {r}");
                    if line != last {
                        progress.println(&line);
                        last = line;
                    }
                })
                .await;
            // Uninstall in any case; a failed uninstall after a failed wait reports the wait.
            let un = self
                .helm(phase, &d.helm.uninstall(Release::Preflight))
                .await;
            if let Err(e) = waited {
                let h = self.api_host();
                return Err(self.fail(
                    &h,
                    phase,
                    &format!("wait for the Cilium {v} pre-flight"),
                    e,
                ));
            }
            un?;
        }
        Ok(PhaseOutcome::Ok)
    }

    // -----------------------------------------------------------------------------------------
    // probes-start, resources
    // -----------------------------------------------------------------------------------------

    async fn probes_start(&mut self) -> PhaseResult {
        let phase = "probes-start";
        let d = self.d;
        let Some(client) = self.client() else {
            return Err(self.fail("(local)", phase, "kubernetes client", "not connected"));
        };
        let api = self.api_host();
        let nodes = match cluster::list_nodes(&client).await {
            Ok(n) => n,
            Err(e) => return Err(self.fail(&api, phase, "list nodes", e)),
        };
        let placement = match layout::place(&nodes) {
            Ok(p) => p,
            Err(e) => return Err(self.fail(&api, phase, "place the probe pods", e)),
        };
        self.say(&format!(
            "  backend on {}, client on {}, NodePort probed from {} to {} ({})",
            placement.backend,
            placement.client,
            placement.nodeport_prober,
            placement.nodeport_target.name,
            placement.nodeport_target.address
        ));
        let image = d
            .drill
            .definition
            .probes
            .image
            .clone()
            .unwrap_or_else(|| crate::render::containerd::sandbox_image(d.spec.kubernetes));
        let steps: Result<(), (String, ClusterError)> = async {
            cluster::recreate_namespace(&client, d.timeouts.pods)
                .await
                .map_err(|e| ("create namespace kubedrill-drill".to_owned(), e))?;
            cluster::create_probe_pods(&client, &placement, &image)
                .await
                .map_err(|e| ("create the probe pods".to_owned(), e))?;
            Ok(())
        }
        .await;
        if let Err((what, e)) = steps {
            return Err(self.fail(&api, phase, &what, e));
        }
        let pods =
            match cluster::wait_pods_ready(&client, &[BACKEND_POD, CLIENT_POD], d.timeouts.pods)
                .await
            {
                Ok(p) => p,
                Err(e) => return Err(self.fail(&api, phase, "wait for the probe pods", e)),
            };
        let (cluster_ip, node_port) = match cluster::create_services(&client).await {
            Ok(x) => x,
            Err(e) => return Err(self.fail(&api, phase, "create the Services", e)),
        };
        let mut ends = BTreeMap::new();
        for (pod, node) in [
            (BACKEND_POD, &placement.backend),
            (CLIENT_POD, &placement.client),
        ] {
            let Some(s) = self.session(node) else {
                return Err(self.fail(
                    node,
                    phase,
                    "crictl inspectp",
                    "no SSH session for this node (Kubernetes node names must be the inventory's host names)",
                ));
            };
            let netns = match probes::pod_netns(&s, layout::NAMESPACE, pod).await {
                Ok(n) => n,
                Err(e) => return Err(self.fail(node, phase, "crictl pods/inspectp", e)),
            };
            let ip = pods.get(pod).map(|(_, ip)| ip.clone()).unwrap_or_default();
            ends.insert(
                pod,
                PodEnd {
                    name: pod.to_owned(),
                    node: node.clone(),
                    ip,
                    netns,
                },
            );
        }
        let (Some(backend), Some(client_end)) = (ends.remove(BACKEND_POD), ends.remove(CLIENT_POD))
        else {
            return Err(self.fail(&api, phase, "probe pods", "missing pod"));
        };
        let backend_node_address = nodes
            .iter()
            .find(|n| n.name == backend.node)
            .map(|n| n.address.clone())
            .unwrap_or_default();
        let targets = Targets {
            client: client_end,
            backend,
            cluster_ip,
            node_port,
            backend_node_address,
        };
        let planned = layout::probes(
            &d.drill.definition.probes.kinds,
            d.drill.definition.probes.rate_per_s,
            &placement,
            &targets,
        );
        self.b.pairs = planned.iter().map(|p| p.pair.clone()).collect();

        // The agent on every node that runs a part.
        let agent_path = match probes::agent_binary() {
            Ok(p) => p,
            Err(e) => return Err(self.fail("(local)", phase, "find kubedrill-probe", e)),
        };
        let agent = match std::fs::read(&agent_path) {
            Ok(a) => a,
            Err(e) => {
                return Err(self.fail(
                    "(local)",
                    phase,
                    &format!("read {}", agent_path.display()),
                    e,
                ));
            }
        };
        let mut hosts: BTreeSet<String> = planned.iter().map(|p| p.host.clone()).collect();
        hosts.insert(targets.backend.node.clone());
        for h in &hosts {
            let Some(s) = self.session(h) else {
                return Err(self.fail(h, phase, "install kubedrill-probe", "no SSH session"));
            };
            if let Err(e) = probes::install(&s, &agent).await {
                return Err(self.fail(h, phase, "install kubedrill-probe", e));
            }
        }
        let life = agent_lifetime(
            &d.timeouts,
            d.drill.plan.steps().len(),
            d.drill.definition.policy.soak_secs,
        );
        // Echo responders in the backend pod.
        let any = if targets.backend.ip.contains(':') {
            "[::]"
        } else {
            "0.0.0.0"
        };
        let Some(bs) = self.session(&targets.backend.node) else {
            return Err(self.fail(&targets.backend.node, phase, "serve", "no SSH session"));
        };
        let serve_tag = format!("{}-serve", self.tag);
        let netns = targets.backend.netns.clone();
        let (tcp, udp) = (format!("{any}:{TCP_PORT}"), format!("{any}:{UDP_PORT}"));
        let st = serve_tag.clone();
        self.servers.push(Bg {
            host: targets.backend.node.clone(),
            tag: serve_tag,
            handle: tokio::spawn(async move {
                probes::serve_detached(&bs, Some(&netns), &tcp, &udp, life, &st).await
            }),
        });
        // Probers, one agent per host.
        let mut by_host: BTreeMap<String, Vec<ProbeSpec>> = BTreeMap::new();
        for p in &planned {
            by_host
                .entry(p.host.clone())
                .or_default()
                .push(p.spec.clone());
        }
        for (h, specs) in by_host {
            let Some(s) = self.session(&h) else {
                return Err(self.fail(&h, phase, "kubedrill-probe run", "no SSH session"));
            };
            let tag = format!("{}-probe", self.tag);
            let t2 = tag.clone();
            self.probers.push(Bg {
                host: h,
                tag,
                handle: tokio::spawn(
                    async move { probes::run_detached(&s, &specs, life, &t2).await },
                ),
            });
        }
        // An agent that cannot start fails within a moment (bad netns, bind, socket).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut early = Vec::new();
        for bg in &self.servers {
            if bg.handle.is_finished() {
                early.push((bg.host.clone(), "kubedrill-probe serve".to_owned()));
            }
        }
        for bg in &self.probers {
            if bg.handle.is_finished() {
                early.push((bg.host.clone(), "kubedrill-probe run".to_owned()));
            }
        }
        if !early.is_empty() {
            for (h, what) in &early {
                let msg = self.take_finished(h, what).await;
                self.fail(h, phase, what, msg);
            }
            return Err(Stop);
        }
        self.say(&format!(
            "  {} probe(s) at {}/s: {}",
            planned.len(),
            d.drill.definition.probes.rate_per_s,
            planned
                .iter()
                .map(|p| format!("{} from {}", p.pair.kind, p.host))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(PhaseOutcome::Ok)
    }

    /// The result of a background agent that ended early, as a message.
    async fn take_finished(&mut self, host: &str, what: &str) -> String {
        if what.ends_with("serve") {
            if let Some(i) = self.servers.iter().position(|b| b.host == host) {
                let bg = self.servers.remove(i);
                return match bg.handle.await {
                    Ok(Ok(())) => "ended at once".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
            }
        } else if let Some(i) = self.probers.iter().position(|b| b.host == host) {
            let bg = self.probers.remove(i);
            return match bg.handle.await {
                Ok(Ok(_)) => "ended at once".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
        }
        "ended".to_owned()
    }

    fn resources(&mut self) -> PhaseResult {
        let interval = Duration::from_secs(self.d.drill.definition.resources.interval_secs);
        let sessions = self.sessions.clone();
        let samples: Arc<Mutex<BTreeMap<String, Vec<ResourceSample>>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (s2, e2) = (samples.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let mut samplers: BTreeMap<String, Sampler> = BTreeMap::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                let reads = futures::future::join_all(sessions.iter().map(|(h, s)| async move {
                    (
                        h.clone(),
                        resources::sample(s, interval.max(Duration::from_secs(10))).await,
                    )
                }))
                .await;
                for (h, r) in reads {
                    match r {
                        Ok(reading) => {
                            let sample =
                                samplers.entry(h.clone()).or_default().next(now(), reading);
                            if let Ok(mut m) = s2.lock() {
                                m.entry(h).or_default().push(sample);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut v) = e2.lock()
                                && v.len() < 50
                            {
                                v.push(e.to_string());
                            }
                        }
                    }
                }
            }
        });
        self.sampler = Some(SamplerTask {
            stop,
            task,
            samples,
            errors,
        });
        Ok(PhaseOutcome::Ok)
    }

    // -----------------------------------------------------------------------------------------
    // upgrade, rollback
    // -----------------------------------------------------------------------------------------

    /// Loss windows so far, from every prober's event file.
    async fn windows_so_far(&self) -> Vec<crate::report::record::LossWindow> {
        let mut out = Vec::new();
        for bg in &self.probers {
            if let Some(s) = self.session(&bg.host)
                && let Ok(run) = probes::peek(&s, &bg.tag).await
            {
                out.extend(record::windows_so_far(&run, &self.b.pairs));
            }
        }
        out
    }

    /// Every agent's datapath against the expected one at `version`; updates `after`.
    async fn verify(&mut self, version: Version) -> Vec<VerifyMismatch> {
        let d = self.d;
        let Some(client) = self.client() else {
            return Vec::new();
        };
        let spec = spec_at(&d.spec, version);
        let effective = kernel::effective(&spec, &self.node_reports);
        let mut expected = ExpectedDatapath::from_spec(&spec, &effective);
        expected.cilium_version = Some(version);
        let hosts: Vec<String> = d.inventory.hosts.iter().map(|h| h.name.clone()).collect();
        let v = verify_agents(&client, &expected, &hosts, d.timeouts.agent_status).await;
        self.b.after.extend(v.datapaths);
        v.mismatches
    }

    /// kube-proxy back in a cluster that started without it: one event per distinct sighting.
    async fn check_kube_proxy(&mut self) {
        let Some(absent) = self.kube_proxy_absent_at_start else {
            return;
        };
        let Some(client) = self.client() else { return };
        match kube_proxy::detect(&client).await {
            Ok(p) => {
                let kpr = self.d.spec.cilium_intent.kube_proxy_replacement;
                if let Some(detail) = kube_proxy_sighting(absent, &p, kpr)
                    && !self.b.kube_proxy_events.iter().any(|e| e.detail == detail)
                {
                    self.say(&format!("  kube-proxy is back: {detail}"));
                    self.b.kube_proxy_events.push(KubeProxyEvent {
                        at: now(),
                        node: None,
                        detail,
                    });
                }
            }
            Err(e) => self.notes.push(format!("kube-proxy check: {e}")),
        }
    }

    async fn wait_rollout(&mut self, phase: &str, what: &str) -> Result<(), String> {
        let Some(client) = self.client() else {
            return Err("not connected".into());
        };
        let progress = self.progress.clone();
        let mut last = String::new();
        let r = wait::cilium_rolled_out(&client, self.d.timeouts.rollout, |p| {
            if let wait::Progress::State(s) = p {
                let line = format!("  {what}: {s}");
                if line != last {
                    progress.println(&line);
                    last = line;
                }
            }
        })
        .await;
        r.map(|_| ()).map_err(|e| {
            let msg = e.to_string();
            let h = self.api_host();
            self.fail(
                &h,
                phase,
                "wait for daemonset kube-system/cilium rolled out",
                &msg,
            );
            msg
        })
    }

    async fn start_agent_watch(&mut self) {
        if self.watch.is_some() {
            return;
        }
        let Some(client) = self.client() else { return };
        match cluster::agent_observations(&client).await {
            Ok(obs) => {
                if let Ok(mut t) = self.tracker.lock() {
                    *t = RolloutTracker::new(&obs);
                }
            }
            Err(e) => self
                .notes
                .push(format!("agent pods before the upgrade: {e}")),
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(cluster::watch_agents(client, self.tracker.clone(), rx));
        self.watch = Some((tx, handle));
    }

    async fn upgrade(&mut self) -> PhaseResult {
        let d = self.d;
        let cp = self.cp.clone();
        self.start_agent_watch().await;
        let steps = d.drill.plan.steps().to_vec();
        for (i, step) in steps.iter().enumerate() {
            let name = format!("upgrade/{}", step.to());
            let t = now();
            self.say(&format!("-- {name}: {step}"));
            let (Some(chart), Some(file)) = (
                self.charts.get(&step.to()).cloned(),
                self.remote_values.get(&step.to()).cloned(),
            ) else {
                self.fail(
                    &cp,
                    &name,
                    "helm upgrade",
                    "no chart or values for this step",
                );
                self.b.phase(&name, t, now(), PhaseOutcome::Failed);
                return Err(Stop);
            };
            let built = if step.kind() == StepKind::Forced {
                d.helm.upgrade_forced(&chart, self.deployed, &file)
            } else if d.drill.definition.reuse_values {
                d.helm
                    .upgrade(&chart, self.deployed, &UpgradeValues::ReuseWith(file))
            } else {
                d.helm
                    .upgrade(&chart, self.deployed, &UpgradeValues::File(file))
            };
            let cmd = match built {
                Ok(c) => c,
                Err(e) => {
                    self.fail(&cp, &name, "helm upgrade", e);
                    self.b.phase(&name, t, now(), PhaseOutcome::Failed);
                    return self.after_failed_step(&name);
                }
            };
            self.changed = true;
            let mut step_failure: Option<String> = None;
            if self.helm(&name, &cmd).await.is_err() {
                step_failure = Some(format!("{cmd} failed"));
            } else {
                let at = now();
                match self.history(&name).await {
                    Ok(h) => {
                        if let Some(r) = h.deployed() {
                            self.b.helm_events.push(HelmEvent::Upgrade {
                                at,
                                revision: r.revision,
                                chart_version: step.to().to_string(),
                            });
                        }
                    }
                    Err(Stop) => step_failure = Some("helm history failed".into()),
                }
                // The rollout, with the pod burst while it runs.
                let burst = self.start_burst(i).await;
                if let Err(e) = self
                    .wait_rollout(&name, &format!("rollout to {}", step.to()))
                    .await
                {
                    step_failure = Some(format!("rollout: {e}"));
                }
                if let Some(h) = burst {
                    let limit = d.timeouts.burst + Duration::from_secs(120);
                    let r = match tokio::time::timeout(limit, h).await {
                        Ok(r) => r,
                        Err(_) => {
                            self.notes.push(format!(
                                "pod burst during {name}: no result within {} s",
                                limit.as_secs()
                            ));
                            Ok(Ok(crate::report::record::PodBurst {
                                start: t,
                                end: now(),
                                nodes: Vec::new(),
                            }))
                        }
                    };
                    match r {
                        Ok(Ok(b)) => {
                            let failed: u32 = b.nodes.iter().map(|n| n.failed).sum();
                            let created: u32 = b.nodes.iter().map(|n| n.created).sum();
                            self.say(&format!("  pod burst: {created} created, {failed} failed"));
                            self.b.bursts.push(b);
                        }
                        Ok(Err(e)) => self.notes.push(format!("pod burst during {name}: {e}")),
                        Err(e) => self.notes.push(format!("pod burst during {name}: {e}")),
                    }
                }
                if step_failure.is_none() {
                    let lagging: Vec<String> = {
                        let at = self
                            .tracker
                            .lock()
                            .map(|t| (t.nodes(), t.nodes_at(step.to())))
                            .unwrap_or_default();
                        at.0.into_iter().filter(|n| !at.1.contains(n)).collect()
                    };
                    if !lagging.is_empty() {
                        self.notes.push(format!(
                            "after {name}, the agent watch had not yet seen {} ready at {}",
                            lagging.join(", "),
                            step.to()
                        ));
                    }
                }
            }
            let mismatches = if step_failure.is_none() {
                self.verify(step.to()).await
            } else {
                Vec::new()
            };
            for m in &mismatches {
                self.say(&format!("  mismatch: {} {}", m.node, m.detail));
            }
            self.check_kube_proxy().await;
            let windows = self.windows_so_far().await;
            let decision = policy::rollback_decision(
                &windows,
                &self.b.policy.max_interruption_ms,
                &mismatches,
                d.drill.definition.policy.rollback_on_verify_failure,
                step_failure.as_deref(),
            );
            self.mismatches.extend(mismatches);
            let outcome = if step_failure.is_some() {
                PhaseOutcome::Failed
            } else {
                PhaseOutcome::Ok
            };
            self.b.phase(&name, t, now(), outcome);
            if decision.rollback {
                for r in &decision.reasons {
                    self.say(&format!("  rollback: {r}"));
                }
                self.rollback_reasons = Some(decision.reasons);
                return Ok(PhaseOutcome::Ok);
            }
            self.deployed = step.to();
        }
        Ok(PhaseOutcome::Ok)
    }

    /// A step failed before anything ran: roll back only if an earlier step changed the
    /// release, else stop.
    fn after_failed_step(&mut self, name: &str) -> PhaseResult {
        if self.changed {
            self.rollback_reasons = Some(vec![format!("{name} could not run")]);
            Ok(PhaseOutcome::Ok)
        } else {
            Err(Stop)
        }
    }

    async fn start_burst(
        &mut self,
        step: usize,
    ) -> Option<JoinHandle<Result<crate::report::record::PodBurst, crate::k8s::K8sError>>> {
        let d = self.d;
        let count = d.drill.definition.policy.pod_burst;
        let client = self.client()?;
        if count == 0 {
            return None;
        }
        let nodes: Vec<String> = d.inventory.hosts.iter().map(|h| h.name.clone()).collect();
        let image = d
            .drill
            .definition
            .probes
            .image
            .clone()
            .unwrap_or_else(|| crate::render::containerd::sandbox_image(d.spec.kubernetes));
        let id = format!("s{}", step + 1);
        let timeout = d.timeouts.burst;
        // Let the DaemonSet controller start replacing agents before the pods arrive.
        Some(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            burst::run(
                &client,
                &BurstSpec {
                    namespace: layout::NAMESPACE,
                    id: &id,
                    count,
                    nodes: &nodes,
                    image: &image,
                    timeout,
                    poll: Duration::from_secs(2),
                },
            )
            .await
        }))
    }

    async fn rollback(&mut self) -> PhaseResult {
        let phase = "rollback";
        let d = self.d;
        let Some(reasons) = self.rollback_reasons.clone() else {
            return Ok(PhaseOutcome::Skipped);
        };
        let cp = self.cp.clone();
        let Some(to) = self.pre_revision else {
            return Err(self.fail(
                &cp,
                phase,
                "helm rollback",
                "the revision before the drill is unknown",
            ));
        };
        self.say(&format!(
            "  rolling back to revision {to} (Cilium {}): {}",
            d.drill.from,
            reasons.join("; ")
        ));
        let cmd = match d.helm.rollback(to) {
            Ok(c) => c,
            Err(e) => return Err(self.fail(&cp, phase, "helm rollback", e)),
        };
        self.helm(phase, &cmd).await?;
        let at = now();
        let h = self.history(phase).await?;
        if let Some(r) = h.deployed() {
            self.b.helm_events.push(HelmEvent::Rollback {
                at,
                revision: r.revision,
                to_revision: to,
            });
        }
        self.rolled_back = true;
        self.b.mark_rolled_back("upgrade/");
        if self
            .wait_rollout(phase, &format!("rollback to {}", d.drill.from))
            .await
            .is_err()
        {
            return Err(Stop);
        }
        let after = self.verify(d.drill.from).await;
        if !after.is_empty() {
            for m in &after {
                self.say(&format!("  after the rollback: {} {}", m.node, m.detail));
            }
            self.mismatches.extend(after);
        }
        self.deployed = d.drill.from;
        self.check_kube_proxy().await;
        Ok(PhaseOutcome::Ok)
    }

    // -----------------------------------------------------------------------------------------
    // soak
    // -----------------------------------------------------------------------------------------

    async fn soak(&mut self) -> PhaseResult {
        let secs = self.d.drill.definition.policy.soak_secs;
        if secs == 0 {
            return Ok(PhaseOutcome::Skipped);
        }
        let start = now();
        let end_at = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < end_at {
            let left = end_at.saturating_duration_since(tokio::time::Instant::now());
            self.say(&format!("  soak: {} s left", left.as_secs()));
            tokio::time::sleep(left.min(Duration::from_secs(30))).await;
            self.check_kube_proxy().await;
        }
        let soak = Window { start, end: now() };
        self.b.soak = Some(soak);
        if let Some(s) = &self.sampler
            && let Ok(m) = s.samples.lock()
        {
            let th = LeakThresholds::default();
            for (node, samples) in m.iter() {
                let series: Vec<(Timestamp, u64)> = samples
                    .iter()
                    .filter(|x| soak.contains(x.at))
                    .map(|x| (x.at, x.rss_bytes))
                    .collect();
                self.leaks.push((node.clone(), leak::analyse(&series, &th)));
            }
        }
        Ok(PhaseOutcome::Ok)
    }

    // -----------------------------------------------------------------------------------------
    // report
    // -----------------------------------------------------------------------------------------

    async fn finish(mut self) -> Result<DrillReport, DrillError> {
        let t = now();
        let stop_limit = self.d.timeouts.stop;
        // Probers first (they flush open windows and summaries on SIGTERM), then the echo side.
        let probers = std::mem::take(&mut self.probers);
        for bg in probers {
            if let Some(s) = self.session(&bg.host)
                && let Err(e) = probes::stop(&s, &bg.tag).await
            {
                self.notes
                    .push(format!("{}: stopping the probers: {e}", bg.host));
            }
            match tokio::time::timeout(stop_limit, bg.handle).await {
                Ok(Ok(Ok(run))) => {
                    for o in run.other.iter().take(5) {
                        self.notes.push(format!("{}: prober said: {o}", bg.host));
                    }
                    self.b.probe_runs.push(run);
                }
                Ok(Ok(Err(e))) => {
                    self.fail(&bg.host, "report", "kubedrill-probe run", e);
                }
                Ok(Err(e)) => {
                    self.fail(&bg.host, "report", "kubedrill-probe run", e);
                }
                Err(_) => {
                    self.fail(
                        &bg.host,
                        "report",
                        "kubedrill-probe run",
                        format!("did not stop within {} s", stop_limit.as_secs()),
                    );
                }
            }
        }
        let servers = std::mem::take(&mut self.servers);
        for bg in servers {
            if let Some(s) = self.session(&bg.host) {
                let _ = probes::stop(&s, &bg.tag).await;
            }
            match tokio::time::timeout(stop_limit, bg.handle).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => self
                    .notes
                    .push(format!("{}: echo responders: {e}", bg.host)),
                Ok(Err(e)) => self
                    .notes
                    .push(format!("{}: echo responders: {e}", bg.host)),
                Err(_) => self
                    .notes
                    .push(format!("{}: echo responders did not stop", bg.host)),
            }
        }
        if let Some(s) = self.sampler.take() {
            let _ = s.stop.send(true);
            let _ = tokio::time::timeout(stop_limit, s.task).await;
            if let Ok(m) = s.samples.lock() {
                self.b.resources = m.clone();
            }
            if let Ok(e) = s.errors.lock()
                && !e.is_empty()
            {
                self.notes.push(format!(
                    "{} resource sample(s) failed, first: {}",
                    e.len(),
                    e[0]
                ));
            }
        }
        if let Some((tx, handle)) = self.watch.take() {
            let _ = tx.send(());
            if let Ok(Ok(errors)) = tokio::time::timeout(stop_limit, handle).await
                && let Some(first) = errors.first()
            {
                self.notes.push(format!(
                    "agent watch: {} API error(s) retried, first: {first}",
                    errors.len()
                ));
            }
        }
        let (events, restarts) = self
            .tracker
            .lock()
            .map(|t| (t.events().to_vec(), t.container_restarts()))
            .unwrap_or_default();
        self.b.agent_events = events;
        if let Some(client) = self.client.clone()
            && let Err(e) = cluster::delete_namespace(&client).await
        {
            self.notes.push(format!("cleanup: {e}"));
        }
        if let Some(s) = self.session(&self.cp) {
            let _ = s
                .exec(
                    &Command::new("rm -f /etc/kubernetes/kubedrill/drill-values-*.yaml")
                        .privileged()
                        .idempotent(),
                )
                .await;
        }
        self.forward = None;
        crate::ssh::node_lock::release_all(std::mem::take(&mut self.node_locks)).await;
        for s in self.sessions.values() {
            s.close().await;
        }

        self.b.phase("report", t, now(), PhaseOutcome::Ok);
        let mut rec = self.b.build(now());
        let mut failures: Vec<String> = self.failures.iter().map(|f| f.to_string()).collect();
        if let Some(r) = &self.rollback_reasons
            && !self.rolled_back
        {
            failures.push(format!(
                "a rollback was needed but did not complete: {}",
                r.join("; ")
            ));
        }
        rec.verdict = policy::verdict(
            &VerdictInputs {
                probes: &rec.probes,
                loss_windows: &rec.loss_windows,
                mismatches: &self.mismatches,
                burst: rec.pod_burst.as_ref(),
                kube_proxy: &rec.kube_proxy_events,
                leaks: &self.leaks,
                container_restarts: &restarts,
                failures: &failures,
                rollback: self
                    .rollback_reasons
                    .as_deref()
                    .filter(|_| self.rolled_back),
            },
            &rec.policy,
        );
        if rec.verdict.outcome == crate::report::record::Outcome::Pass {
            rec.verdict.reasons.extend(self.notes.iter().cloned());
        }
        let text = serde_json::to_string_pretty(&rec).unwrap_or_default();
        report::write_file(&self.run_dir.join(report::RUN_FILE), &text)?;
        let written = report::write(&self.run_dir)?;
        let mut comparison = None;
        if self.d.reset.is_some() {
            let mut runs = earlier_runs(
                &self.d.runs_dir,
                &self.d.drill.name,
                self.d.reset.as_deref(),
                &self.run_dir,
            );
            if !runs.is_empty() {
                runs.push(self.run_dir.clone());
                let out = self
                    .d
                    .runs_dir
                    .join(format!("compare-{}", self.d.drill.name));
                match report::compare(&runs, &out) {
                    Ok(c) => comparison = Some(c.index),
                    Err(e) => self.notes.push(format!("comparison: {e}")),
                }
            }
        }
        Ok(DrillReport {
            run_id: rec.drill.run_id.clone(),
            run_dir: self.run_dir,
            verdict: rec.verdict,
            written,
            comparison,
            failures: self.failures,
            notes: self.notes,
            rolled_back: self.rolled_back,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_the_documented_ones() {
        let names: Vec<&str> = PHASES.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "reset",
                "connect",
                "preflight",
                "probes-start",
                "resources",
                "upgrade",
                "rollback",
                "soak",
                "report"
            ]
        );
    }

    #[test]
    fn agent_lifetime_covers_every_step_and_the_soak() {
        let t = Timeouts::default();
        let one = agent_lifetime(&t, 1, 120);
        let three = agent_lifetime(&t, 3, 120);
        assert!(three > one);
        assert!(one > t.helm + t.rollout + Duration::from_secs(120));
    }

    #[test]
    fn run_directories_never_collide() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, pa) = new_run_dir(dir.path(), "d-20261120T090000Z").expect("first");
        let (b, pb) = new_run_dir(dir.path(), "d-20261120T090000Z").expect("second");
        assert_eq!(a, "d-20261120T090000Z");
        assert_eq!(b, "d-20261120T090000Z-2");
        assert!(pa.is_dir() && pb.is_dir());
    }

    #[test]
    fn earlier_runs_match_drill_and_snapshot() {
        let dir = tempfile::tempdir().expect("tmp");
        let mk = |name: &str, drill: &str, reset: Option<&str>| {
            let p = dir.path().join(name);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join(report::RUN_FILE), "{}").expect("run");
            let info = RunInfo {
                drill: drill.into(),
                lab: "l".into(),
                reset: reset.map(str::to_owned),
                from: "1.17.18".into(),
                to: "1.18.12".into(),
                steps: vec![],
            };
            std::fs::write(
                p.join(RUN_INFO),
                serde_json::to_string(&info).expect("json"),
            )
            .expect("info");
            p
        };
        let a = mk("d-20261120T090000Z", "d", Some("clean"));
        let _other = mk("e-20261120T091000Z", "e", Some("clean"));
        let _no_reset = mk("d-20261120T092000Z", "d", None);
        let me = mk("d-20261120T093000Z", "d", Some("clean"));
        assert_eq!(earlier_runs(dir.path(), "d", Some("clean"), &me), [a]);
    }
}
