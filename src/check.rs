//! `kubedrill check`: connect to every node, gather facts with one batched script per host,
//! evaluate the kernel verdicts for the chosen Cilium version, and derive the Cilium settings the
//! whole cluster can safely use.

use crate::diag::Diagnostic;
use crate::facts::{self, Facts};
use crate::fleet::{self, Connector, Progress};
use crate::inventory::Inventory;
use crate::kernel::{self, EffectiveSettings, NodeReport};
use crate::spec::ClusterSpec;
use crate::ssh::{Command, Destination, HostKeyMode, HostKeyPolicy, Options, SshError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Inventory variable naming the known_hosts file (relative to the inventory's directory).
pub const KNOWN_HOSTS_VAR: &str = "kubedrill_known_hosts";
/// Inventory variable choosing the host-key mode (`strict`, `accept-new`, `off`).
pub const HOST_KEY_MODE_VAR: &str = "kubedrill_host_key_checking";

/// Where host keys are checked, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostKeySettings {
    /// The known_hosts file.
    pub file: PathBuf,
    /// Mode.
    pub mode: HostKeyMode,
    /// Where the file setting came from (`--known-hosts`, the inventory variable, or default).
    pub source: String,
}

/// Resolve host-key settings: command line, then inventory variables, then `~/.ssh/known_hosts`
/// in strict mode. The variables are read from the first control plane (set them in `all`).
pub fn host_key_settings(
    inv: &Inventory,
    cli_file: Option<&Path>,
    cli_mode: Option<HostKeyMode>,
) -> Result<HostKeySettings, Diagnostic> {
    let vars = &inv.first_control_plane().vars;
    let inv_dir = inv.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (file, source) = match cli_file {
        Some(f) => (f.to_path_buf(), "--known-hosts".to_string()),
        None => match vars.get(KNOWN_HOSTS_VAR) {
            Some(v) => {
                let s = v.string(KNOWN_HOSTS_VAR)?;
                let p = expand_home(&s);
                let p = if p.is_relative() { inv_dir.join(p) } else { p };
                (p, format!("inventory variable {KNOWN_HOSTS_VAR}"))
            }
            None => {
                let home = std::env::home_dir().ok_or_else(|| {
                    Diagnostic::error("no home directory for ~/.ssh/known_hosts")
                        .hint("pass --known-hosts FILE")
                })?;
                (home.join(".ssh/known_hosts"), "default".to_string())
            }
        },
    };
    let mode = match cli_mode {
        Some(m) => m,
        None => match vars.get(HOST_KEY_MODE_VAR) {
            Some(v) => v
                .string(HOST_KEY_MODE_VAR)?
                .parse()
                .map_err(|e: String| Diagnostic::error(e).at(&v.origin).field(HOST_KEY_MODE_VAR))?,
            None => HostKeyMode::Strict,
        },
    };
    Ok(HostKeySettings { file, mode, source })
}

fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(s),
    }
}

/// SSH destinations for every node and the bastion.
pub fn destinations(inv: &Inventory) -> (Vec<Destination>, Option<Destination>) {
    let hosts = inv
        .hosts
        .iter()
        .map(|h| Destination::from_target(&h.name, &h.ssh))
        .collect();
    let bastion = inv
        .bastion
        .as_ref()
        .map(|b| Destination::from_target(&b.name, &b.ssh));
    (hosts, bastion)
}

/// What `check` found on one host.
#[derive(Debug, Serialize)]
pub struct HostCheck {
    /// Inventory name.
    pub host: String,
    /// `address:port`.
    pub address: String,
    /// Facts and verdicts, or why the host could not be checked.
    #[serde(flatten)]
    pub outcome: HostOutcome,
    /// Wall time (connect + gather), milliseconds.
    pub duration_ms: u64,
}

/// A host's result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum HostOutcome {
    /// Facts gathered and evaluated.
    Checked {
        /// Per-feature verdicts.
        report: Box<NodeReport>,
        /// The facts themselves.
        facts: Box<Facts>,
    },
    /// Unreachable, refused, or the script failed.
    Failed {
        /// The error, naming host and step.
        error: String,
    },
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Cluster label.
    pub cluster: String,
    /// Cilium version the verdicts are for.
    pub cilium: String,
    /// Kubernetes version.
    pub kubernetes: String,
    /// Host-key settings used.
    pub host_keys: HostKeySettings,
    /// Host keys recorded by `accept-new`.
    pub host_keys_learned: u32,
    /// Every host, in inventory order.
    pub hosts: Vec<HostCheck>,
    /// Settings the reachable nodes can safely use, beside what the inventory asked for.
    pub effective: EffectiveSettings,
    /// A requested feature is blocked on at least one node.
    pub requested_blocked: bool,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

impl CheckReport {
    /// Hosts that could not be checked.
    pub fn failed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.hosts.iter().filter_map(|h| match &h.outcome {
            HostOutcome::Failed { error } => Some((h.host.as_str(), error.as_str())),
            HostOutcome::Checked { .. } => None,
        })
    }

    /// Reports of the hosts that were checked.
    pub fn reports(&self) -> Vec<&NodeReport> {
        self.hosts
            .iter()
            .filter_map(|h| match &h.outcome {
                HostOutcome::Checked { report, .. } => Some(report.as_ref()),
                HostOutcome::Failed { .. } => None,
            })
            .collect()
    }
}

/// Errors of gathering on one host.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// SSH failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The script ran but failed.
    #[error("{host}: facts script exited with {status:?}: {stderr}")]
    Script {
        /// Host.
        host: String,
        /// Exit status.
        status: Option<u32>,
        /// Last stderr lines.
        stderr: String,
    },
    /// The output was not facts.
    #[error("{host}: {source}")]
    Parse {
        /// Host.
        host: String,
        /// Why.
        #[source]
        source: facts::FactsError,
    },
    /// A task failed (bug).
    #[error(transparent)]
    Task(#[from] fleet::TaskFailed),
}

/// How long the facts script may run on one host (default).
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(60);

/// Gather facts on one connected host: one round trip, the script on stdin.
pub async fn gather(session: &crate::ssh::Session) -> Result<Facts, GatherError> {
    gather_with(session, GATHER_TIMEOUT).await
}

/// [`gather`] with another time limit. The script's stdout is parsed, so it is held to the
/// default [`crate::ssh::OutputLimit::STDOUT`]: a node printing more fails with
/// [`SshError::OutputTruncated`] (naming host and limit) instead of being half-parsed.
pub async fn gather_with(
    session: &crate::ssh::Session,
    timeout: Duration,
) -> Result<Facts, GatherError> {
    let host = session.destination().name.clone();
    let out = session
        .exec(
            &Command::script_on_stdin(facts::GATHER_SCRIPT)
                .label("facts script (sh -s)")
                .timeout(timeout)
                .idempotent(),
        )
        .await?;
    if !out.success() {
        return Err(GatherError::Script {
            host,
            status: out.status,
            stderr: out.stderr_tail(5),
        });
    }
    facts::parse(&out.stdout_text()).map_err(|source| GatherError::Parse { host, source })
}

/// Run the check on every host with at most `concurrency` at once; the facts script may run
/// `gather_timeout` on each.
pub async fn run(
    inv: &Inventory,
    spec: &ClusterSpec,
    host_keys: HostKeySettings,
    connect_timeout: Duration,
    gather_timeout: Duration,
    concurrency: usize,
    progress: &Progress,
) -> Result<CheckReport, SshError> {
    let start = Instant::now();
    let policy = Arc::new(HostKeyPolicy::load(&host_keys.file, host_keys.mode)?);
    let mut opts = Options::new(policy.clone());
    opts.connect_timeout = connect_timeout;
    let (dests, bastion) = destinations(inv);
    let connector = Connector::new(Arc::new(opts), bastion);
    let inputs: Vec<(String, Destination)> =
        dests.into_iter().map(|d| (d.name.clone(), d)).collect();
    let addresses: Vec<String> = inputs
        .iter()
        .map(|(_, d)| format!("{}:{}", d.address, d.port))
        .collect();
    let spec_arc = Arc::new(spec.clone());
    let results = fleet::run(
        "connecting",
        inputs,
        concurrency,
        progress,
        |r: &(Box<Facts>, Box<NodeReport>)| summary_line(&r.1),
        |dest, p| {
            let c = connector.clone();
            let spec = spec_arc.clone();
            async move {
                let name = dest.name.clone();
                let s = c.connect(dest).await?;
                p.set("gathering facts");
                let f = gather_with(&s, gather_timeout).await?;
                s.close().await;
                let report = kernel::evaluate(&spec, &name, &f);
                Ok::<_, GatherError>((Box::new(f), Box::new(report)))
            }
        },
    )
    .await;
    let hosts: Vec<HostCheck> = results
        .into_iter()
        .zip(addresses)
        .map(|(r, address)| HostCheck {
            host: r.host,
            address,
            outcome: match r.result {
                Ok((facts, report)) => HostOutcome::Checked { report, facts },
                Err(e) => HostOutcome::Failed {
                    error: e.to_string(),
                },
            },
            duration_ms: r.duration.as_millis() as u64,
        })
        .collect();
    let reports: Vec<NodeReport> = hosts
        .iter()
        .filter_map(|h| match &h.outcome {
            HostOutcome::Checked { report, .. } => Some(report.as_ref().clone()),
            HostOutcome::Failed { .. } => None,
        })
        .collect();
    let effective = kernel::effective(spec, &reports);
    let requested_blocked = kernel::any_requested_blocked(&reports);
    Ok(CheckReport {
        cluster: spec.label.clone(),
        cilium: spec.cilium.to_string(),
        kubernetes: spec.kubernetes.to_string(),
        host_keys,
        host_keys_learned: policy.learned(),
        hosts,
        effective,
        requested_blocked,
        duration_ms: start.elapsed().as_millis() as u64,
    })
}

fn summary_line(r: &NodeReport) -> String {
    let blocked = r.verdicts.iter().filter(|v| v.status.is_blocked()).count();
    let degraded = r.verdicts.iter().filter(|v| v.status.is_degraded()).count();
    format!(
        "kernel {} · {} ok, {degraded} degraded, {blocked} blocked",
        r.kernel.release,
        r.verdicts.len() - blocked - degraded
    )
}
