//! `kubedrill check`: connect to every node, gather facts with one batched script per host,
//! evaluate the kernel verdicts for the chosen Cilium version, and derive the Cilium settings the
//! whole cluster can safely use.

use crate::facts::{self, Facts};
use crate::fleet::{self, Connector, Progress};
use crate::inventory::Inventory;
use crate::kernel::{self, EffectiveSettings, NodeReport};
use crate::spec::ClusterSpec;
use crate::ssh::{Command, Destination, HostKeyPolicy, Options, SshError};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::connect::{
    HOST_KEY_MODE_VAR, HostKeySettings, KNOWN_HOSTS_VAR, destinations, host_key_settings,
};

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
pub async fn gather(session: &dyn crate::host::Host) -> Result<Facts, GatherError> {
    gather_with(session, GATHER_TIMEOUT).await
}

/// [`gather`] with another time limit. The script's stdout is parsed, so it is held to the
/// default [`crate::ssh::OutputLimit::STDOUT`]: a node printing more fails with
/// [`SshError::OutputTruncated`] (naming host and limit) instead of being half-parsed.
pub async fn gather_with(
    session: &dyn crate::host::Host,
    timeout: Duration,
) -> Result<Facts, GatherError> {
    let host = session.name().to_string();
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
    ssh: crate::connect::SshSettings,
    gather_timeout: Duration,
    concurrency: usize,
    progress: &Progress,
) -> Result<CheckReport, SshError> {
    let start = Instant::now();
    let host_keys = ssh.host_keys;
    let policy = Arc::new(HostKeyPolicy::load(&host_keys.file, host_keys.mode)?);
    let mut opts = Options::new(policy.clone());
    opts.connect_timeout = ssh.connect_timeout;
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
                let f = gather_with(s.as_ref(), gather_timeout).await?;
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
