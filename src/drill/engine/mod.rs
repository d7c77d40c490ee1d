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

mod phases;

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
use crate::host::SharedHost;
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
    DrillId, FaultEvent, HelmEvent, KubeProxyEvent, Node, NodeRole, PhaseOutcome, ResourceSample,
    Verdict, VersionChange, Window,
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

/// Restarts in `CrashLoopBackOff` after which a rollout is given up as failing.
const CRASH_LOOP_RESTARTS: u32 = 3;

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
    /// Before a command that only the API server failed is run again (kubeadm's upgrade).
    pub retry_pause: Duration,
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
            retry_pause: Duration::from_secs(30),
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
    /// `--production`: the drill runs on a production inventory, not on the lab's.
    pub production: Option<Production>,
    /// The Kubernetes target's offline bundle (`drill.kubernetes.bundle`,
    /// `--kubernetes-bundle`): its release binaries and images are staged on every node.
    pub kubernetes_bundle: Option<crate::bundle::Bundle>,
    /// The probe agent copied to the nodes (`None`: [`probes::agent_binary`] finds it).
    pub probe_agent: Option<PathBuf>,
}

/// A drill run on production (`drill run --production`): what was rehearsed on the lab, with
/// the same probes and report, and the operator's confirmation before every disruptive phase.
#[derive(Debug, Clone)]
pub struct Production {
    /// The production cluster's label (its inventory), in messages and the record.
    pub cluster: String,
    /// Asked before each `helm upgrade` and `helm rollback`; false stops the drill there.
    pub confirm: Confirm,
}

/// The question before a disruptive phase (`--yes` answers it in advance).
#[derive(Clone)]
pub struct Confirm(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for Confirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Confirm(..)")
    }
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

/// How many times a command whose failure says it may be retried is run.
const RETRIES: u32 = 3;

/// Run `cmd` on `s`, and again (up to `attempts` runs, `pause` apart) while it fails with
/// output that `why` names a reason to retry for (the reason is said with the attempt); any
/// other failure, and the last one, is returned as it is.
pub(super) async fn exec_again_while(
    s: &dyn crate::host::Host,
    cmd: &Command,
    attempts: u32,
    pause: Duration,
    why: impl Fn(&crate::ssh::Output) -> Option<String>,
    say: impl Fn(String),
) -> Result<crate::ssh::Output, crate::ssh::SshError> {
    let mut attempt = 1;
    loop {
        let o = s.exec(cmd).await?;
        let reason = if o.success() || attempt >= attempts {
            None
        } else {
            why(&o)
        };
        let Some(reason) = reason else {
            return Ok(o);
        };
        say(format!(
            "{}: {reason} (attempt {attempt} of {attempts}); trying again in {} s",
            cmd.label_text(),
            pause.as_secs()
        ));
        attempt += 1;
        tokio::time::sleep(pause).await;
    }
}

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
    /// How the nodes and the API are reached (taken by `connect`).
    reach: Option<Reach>,
    /// One connected host per node.
    hosts: BTreeMap<String, SharedHost>,
    /// The SSH sessions behind them (node locks; the API through the first control plane).
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
    /// The phase running and since when (what an interruption cut short).
    current: Option<(String, Timestamp)>,
}

/// Run the drill. Returns an error only when no report can be written; a failed drill is an
/// `Ok` report with a `fail` verdict and its failures.
pub async fn run(d: &DrillInput, progress: &Progress) -> Result<DrillReport, DrillError> {
    run_until(d, progress, std::future::pending()).await
}

/// [`run`], ended early when `stop` resolves (to what stopped it, e.g. `SIGINT`): the running
/// phase is abandoned where it is and recorded as failed, a pre-flight release it may have left
/// is removed, and the report runs as after any failure — probers stopped, the drill's namespace
/// deleted, the record written — so an interrupted drill leaves a record and no probes behind.
pub async fn run_until(
    d: &DrillInput,
    progress: &Progress,
    stop: impl std::future::Future<Output = String>,
) -> Result<DrillReport, DrillError> {
    run_reaching(d, Reach::Ssh, progress, stop).await
}

/// How a drill reaches the nodes and the Kubernetes API.
pub enum Reach {
    /// SSH to every inventory host with the input's host keys, a lock on each node, the API
    /// through a port forward to the first control plane.
    Ssh,
    /// These nodes and this API client, already connected (tests: [`crate::host::fake::FakeHost`]
    /// and a fake API server): no SSH, no node locks, no kubeconfig.
    Given {
        /// One per inventory host, by name.
        hosts: BTreeMap<String, SharedHost>,
        /// The cluster's API.
        client: kube::Client,
    },
}

/// [`run_until`], reaching the nodes and the API as `reach` says.
pub async fn run_reaching(
    d: &DrillInput,
    reach: Reach,
    progress: &Progress,
    stop: impl std::future::Future<Output = String>,
) -> Result<DrillReport, DrillError> {
    let started = now();
    let (run_id, run_dir) = new_run_dir(&d.runs_dir, &record::run_id(&d.drill.name, started))?;
    // A production run names its cluster where a lab run names the lab.
    let where_ = match &d.production {
        Some(p) => format!("production:{}", p.cluster),
        None => d.lab.name.clone(),
    };
    let info = RunInfo {
        drill: d.drill.name.clone(),
        lab: where_.clone(),
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
        &where_,
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
        reach: Some(reach),
        hosts: BTreeMap::new(),
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
        current: None,
    };
    let target = match &d.production {
        Some(p) => format!("PRODUCTION cluster {}", p.cluster),
        None => format!("lab {}", d.lab.name),
    };
    let k8s = d
        .drill
        .kubernetes_upgrade
        .map(|k| {
            format!(
                "; Kubernetes {} → {} ({})",
                k.from,
                k.to,
                match k.order {
                    crate::drill::kubernetes::Order::CiliumFirst => "after Cilium",
                    crate::drill::kubernetes::Order::KubernetesFirst => "before Cilium",
                }
            )
        })
        .unwrap_or_default();
    c.say(&format!(
        "drill {} on {target}: Cilium {} → {} ({}){k8s}; run {run_id}",
        d.drill.name,
        d.drill.from,
        d.drill.to,
        if d.drill.steps.is_empty() {
            "stays".to_owned()
        } else {
            d.drill.steps.join(", ")
        }
    ));
    let tree = phases::tree(d.drill.plan.steps(), &phases::KubernetesNodes::of(d));
    let all = crate::phase::Selection::all();
    let ran = tokio::select! {
        r = crate::phase::run(&tree, &all, &mut c) => Ok(r),
        why = stop => Err(why),
    };
    let reached: std::collections::BTreeSet<String> = match ran {
        Ok(report) => report.phases.iter().map(|p| p.phase.clone()).collect(),
        Err(why) => c.interrupted(&why).await,
    };
    // What a failure kept from running is in the record as skipped.
    let reached: std::collections::BTreeSet<&str> = reached.iter().map(String::as_str).collect();
    for g in &tree.groups {
        let names: Vec<String> = g
            .phases
            .iter()
            .map(|p| crate::phase::full_name(g.name, p.name()))
            .collect();
        let t = now();
        if names.iter().all(|n| !reached.contains(n.as_str())) {
            // A group never reached is one skipped phase (as the record has always said).
            c.b.phase(g.name, t, t, PhaseOutcome::Skipped);
        } else {
            for n in names.iter().filter(|n| !reached.contains(n.as_str())) {
                c.b.phase(n, t, t, PhaseOutcome::Skipped);
            }
        }
    }
    // The record lists phases in the tree's order, a skipped one where it would have run.
    let order: Vec<String> = tree
        .groups
        .iter()
        .flat_map(|g| {
            std::iter::once(g.name.to_owned()).chain(
                g.phases
                    .iter()
                    .map(|p| crate::phase::full_name(g.name, p.name())),
            )
        })
        .collect();
    c.b.phases.sort_by_key(|p| {
        order
            .iter()
            .position(|o| *o == p.name)
            .unwrap_or(usize::MAX)
    });
    c.say("== report — Stop probes, write run.json, report.html, summary.md");
    c.finish().await
}

impl<'a> crate::phase::Context for Ctx<'a> {
    type Input = DrillInput;
    fn input(&self) -> &DrillInput {
        self.d
    }
    fn progress(&self) -> &Progress {
        self.progress
    }
}

impl Ctx<'_> {
    /// The image of the probe and burst pods: the drill's, else the cluster's pause image
    /// (present on every node, so nothing is pulled).
    fn probe_image(&self) -> String {
        let d = self.d;
        d.drill
            .definition
            .probes
            .image
            .clone()
            .unwrap_or_else(|| crate::render::containerd::sandbox_image(d.spec.kubernetes))
    }

    /// On production, ask before a disruptive phase; a refusal is the drill's failure there
    /// (nothing of the phase has run).
    fn confirm(&mut self, phase: &str, what: &str) -> Result<(), Stop> {
        let Some(p) = &self.d.production else {
            return Ok(());
        };
        let question = format!("{what} on PRODUCTION cluster {}", p.cluster);
        // The answer may wait on a terminal: off the runtime's worker (the probes, the watch and
        // the sampler keep running meanwhile).
        let confirm = p.confirm.0.clone();
        if tokio::task::block_in_place(|| confirm(&question)) {
            self.notes
                .push(format!("{phase}: confirmed by the operator: {question}"));
            Ok(())
        } else {
            Err(self.fail(
                "(operator)",
                phase,
                what,
                "not confirmed: the drill stops before it",
            ))
        }
    }

    fn say(&self, line: &str) {
        self.progress.println(line);
    }

    /// The drill was stopped (`why`: the signal): the phase that was running is a failure, a
    /// pre-flight release it may have left is removed. Returns the phases recorded so far.
    async fn interrupted(&mut self, why: &str) -> BTreeSet<String> {
        let what = match &self.current {
            Some((name, _)) => format!("during {name}"),
            None => "between phases".to_owned(),
        };
        self.say(&format!(
            "interrupted ({why}) {what}: stopping the probes and writing the report"
        ));
        let phase = self
            .current
            .as_ref()
            .map_or_else(|| "(none)".to_owned(), |(n, _)| n.clone());
        let _ = self.fail(
            "(local)",
            &phase,
            why,
            format!("the drill was interrupted {what}; the phases after it did not run"),
        );
        if let Some((name, start)) = self.current.take() {
            self.b.phase(&name, start, now(), PhaseOutcome::Failed);
            if name == "preflight"
                && let Some(s) = self.host(&self.cp)
                && s.exec(&self.d.helm.status(Release::Preflight).ssh_command())
                    .await
                    .is_ok_and(|o| o.success())
            {
                self.say("  removing the cilium-preflight release it installed");
                let _ = self
                    .helm("report", &self.d.helm.uninstall(Release::Preflight))
                    .await;
            }
        }
        self.b.phases.iter().map(|p| p.name.clone()).collect()
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

    fn host(&self, host: &str) -> Option<SharedHost> {
        self.hosts.get(host).cloned()
    }

    fn client(&self) -> Option<kube::Client> {
        self.client.clone()
    }

    /// Run a command on a host; a non-zero exit is a failure naming the command's label.
    async fn exec(&mut self, host: &str, phase: &str, cmd: &Command) -> Result<String, Stop> {
        self.exec_retrying(host, phase, cmd, |_| false).await
    }

    /// [`Self::exec`], trying again (up to [`RETRIES`] times, 10 s apart) while a failure's
    /// stderr is one `retry` accepts.
    async fn exec_retrying(
        &mut self,
        host: &str,
        phase: &str,
        cmd: &Command,
        retry: impl Fn(&str) -> bool,
    ) -> Result<String, Stop> {
        self.exec_while(host, phase, cmd, RETRIES, Duration::from_secs(10), |o| {
            retry(&o.stderr_text()).then(|| o.stderr_tail(1))
        })
        .await
    }

    /// [`Self::exec`], run up to `attempts` times, `pause` apart, while `why` names a reason to
    /// try again (said on the progress lines). A failure shows stderr's tail, or stdout's for a
    /// script that merged the two.
    async fn exec_while(
        &mut self,
        host: &str,
        phase: &str,
        cmd: &Command,
        attempts: u32,
        pause: Duration,
        why: impl Fn(&crate::ssh::Output) -> Option<String>,
    ) -> Result<String, Stop> {
        let Some(s) = self.host(host) else {
            return Err(self.fail(
                host,
                phase,
                &cmd.label_text(),
                "no SSH session to this host",
            ));
        };
        let progress = self.progress.clone();
        let out = exec_again_while(s.as_ref(), cmd, attempts, pause, why, |line| {
            progress.println(&format!("  {host}: {line}"))
        })
        .await;
        match out {
            Ok(o) if o.success() => Ok(o.stdout_text()),
            Ok(o) => {
                let said = if o.stderr_text().trim().is_empty() {
                    o.stdout_tail(6)
                } else {
                    o.stderr_tail(6)
                };
                let msg = format!(
                    "exited with {}: {said}",
                    o.status
                        .map_or_else(|| "a signal".to_owned(), |s| s.to_string()),
                );
                Err(self.fail(host, phase, &cmd.label_text(), msg))
            }
            Err(e) => Err(self.fail(host, phase, &cmd.label_text(), e)),
        }
    }

    async fn helm(&mut self, phase: &str, cmd: &HelmCommand) -> Result<String, Stop> {
        let cp = self.cp.clone();
        let c = cmd.ssh_command().timeout(self.d.timeouts.helm);
        self.exec_retrying(&cp, phase, &c, helm::transient).await
    }

    async fn history(&mut self, phase: &str) -> Result<helm::History, Stop> {
        let out = self.helm(phase, &self.d.helm.history()).await?;
        helm::parse_history(&out).map_err(|e| {
            let cp = self.cp.clone();
            self.fail(&cp, phase, "helm history cilium --output json", e)
        })
    }

    /// Loss windows so far, from every prober's event file.
    async fn windows_so_far(&self) -> Vec<crate::report::record::LossWindow> {
        let mut out = Vec::new();
        for bg in &self.probers {
            if let Some(s) = self.host(&bg.host)
                && let Ok(run) = probes::peek(s.as_ref(), &bg.tag).await
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
        let rolled_out = wait::cilium_rolled_out(&client, self.d.timeouts.rollout, |p| {
            if let wait::Progress::State(s) = p {
                let line = format!("  {what}: {s}");
                if line != last {
                    progress.println(&line);
                    last = line;
                }
            }
        });
        // An agent that crash-loops never rolls out: said at once, not at the time limit.
        let tracker = self.tracker.clone();
        let baseline = tracker
            .lock()
            .map(|t| t.restarts_by_pod())
            .unwrap_or_default();
        let crash_loop = async {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let found = tracker
                    .lock()
                    .map(|t| t.crash_loops(&baseline, CRASH_LOOP_RESTARTS))
                    .unwrap_or_default();
                if !found.is_empty() {
                    return found.join("; ");
                }
            }
        };
        let r = tokio::select! {
            r = rolled_out => r.map(|_| ()).map_err(|e| e.to_string()),
            looping = crash_loop => Err(looping),
        };
        r.inspect_err(|msg| {
            let h = self.api_host();
            self.fail(
                &h,
                phase,
                "wait for daemonset kube-system/cilium rolled out",
                msg,
            );
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
        let image = self.probe_image();
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

    async fn finish(mut self) -> Result<DrillReport, DrillError> {
        let t = now();
        let stop_limit = self.d.timeouts.stop;
        // Probers first (they flush open windows and summaries on SIGTERM), then the echo side.
        let probers = std::mem::take(&mut self.probers);
        for bg in probers {
            if let Some(s) = self.host(&bg.host)
                && let Err(e) = probes::stop(s.as_ref(), &bg.tag).await
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
            if let Some(s) = self.host(&bg.host) {
                let _ = probes::stop(s.as_ref(), &bg.tag).await;
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
        if let Some(s) = self.host(&self.cp) {
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
        for s in self.hosts.values() {
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

    /// The very text the lab's overloaded API server made Helm print, against other failures.
    #[test]
    fn only_a_dropped_stream_makes_helm_try_again() {
        assert!(helm::transient(
            "Error: UPGRADE FAILED: query: failed to query with labels: stream error when reading response body, may be caused by closed connection. Please retry. Original error: stream error: stream ID 3; INTERNAL_ERROR; received from peer"
        ));
        for other in [
            "Error: UPGRADE FAILED: cannot patch \"cilium\" with kind DaemonSet: field is immutable",
            "Error: release: not found",
            "Error: context deadline exceeded",
        ] {
            assert!(!helm::transient(other), "{other}");
        }
    }

    #[test]
    fn phases_are_the_documented_ones() {
        // The report is written after the tree, whatever happened in it.
        let none = phases::KubernetesNodes {
            upgrade: None,
            control_planes: vec!["cp1".into()],
            batches: vec![],
        };
        let tree = phases::tree(&[], &none);
        let names: Vec<&str> = tree.groups.iter().map(|g| g.name).collect();
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
            ]
        );
    }

    #[test]
    fn kubernetes_phases_are_node_by_node_and_ordered() {
        use crate::drill::definition::KubernetesUpgrade;
        use crate::drill::kubernetes::Order;
        let up = |order| KubernetesUpgrade {
            from: Version::new(1, 34, 4),
            to: Version::new(1, 35, 4),
            order,
            batch: 2,
        };
        let k = phases::KubernetesNodes {
            upgrade: Some(up(Order::CiliumFirst)),
            control_planes: vec!["cp1".into(), "cp2".into()],
            batches: vec![vec!["w1".into(), "w2".into()], vec!["w3".into()]],
        };
        let tree = phases::tree(&[], &k);
        let names = |t: &crate::phase::Tree<Ctx<'_>>| -> Vec<String> {
            t.groups
                .iter()
                .flat_map(|g| {
                    g.phases
                        .iter()
                        .map(|p| crate::phase::full_name(g.name, p.name()))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let all = names(&tree);
        let k8s: Vec<&str> = all
            .iter()
            .filter(|n| n.starts_with("kubernetes/"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            k8s,
            [
                "kubernetes/stage",
                "kubernetes/cp1",
                "kubernetes/cp2",
                "kubernetes/workers-1",
                "kubernetes/workers-2",
                "kubernetes/verify"
            ]
        );
        let groups: Vec<&str> = tree.groups.iter().map(|g| g.name).collect();
        let pos = |n: &str| groups.iter().position(|g| *g == n).expect(n);
        assert!(pos("upgrade") < pos("kubernetes"));
        let k_first = phases::KubernetesNodes {
            upgrade: Some(up(Order::KubernetesFirst)),
            ..k
        };
        let tree = phases::tree(&[], &k_first);
        let groups: Vec<&str> = tree.groups.iter().map(|g| g.name).collect();
        let pos = |n: &str| groups.iter().position(|g| *g == n).expect(n);
        assert!(pos("kubernetes") < pos("upgrade"));
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
