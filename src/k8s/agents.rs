//! The Cilium agent pods (`k8s-app=cilium` in kube-system): where they run, whether they are
//! Ready, how often they restarted, and what `cilium-dbg status --verbose` says inside them
//! (through the API server's exec, kube's `ws` feature).
//!
//! Cilium 1.15 renamed the per-node CLI in the agent image from `cilium` to `cilium-dbg`
//! (cilium/cilium#28085, "cilium: Rename local CLI to cilium-dbg"; the v1.15 release per
//! cilium/cilium#38276), so that it is not confused with the out-of-cluster cilium-cli. [`status_cli`] picks the name from the agent
//! image's tag; with no usable tag, kubedrill tries `cilium-dbg` and falls back to `cilium`
//! when the container runtime says the executable does not exist.

use super::status::{self, AgentStatus};
use super::{K8sError, KUBE_SYSTEM, ObjectRef};
use crate::spec::Version;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use serde::Serialize;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The agent pods' label selector.
pub const AGENT_SELECTOR: &str = "k8s-app=cilium";
/// The agent container's name in the pod.
pub const AGENT_CONTAINER: &str = "cilium-agent";
/// The first Cilium minor whose agent image has `cilium-dbg`.
pub const CILIUM_DBG_SINCE: (u32, u32) = (1, 15);

/// One agent pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentPod {
    /// Pod name.
    pub name: String,
    /// Node it runs on (`spec.nodeName`), once scheduled.
    pub node: Option<String>,
    /// Pod phase (`Running`, `Pending`, ...).
    pub phase: Option<String>,
    /// The pod's `Ready` condition is `True`.
    pub ready: bool,
    /// Restarts of the agent container.
    pub restarts: i32,
    /// When the pod started (`status.startTime`).
    pub pod_started: Option<Timestamp>,
    /// When the current agent container started (after its last restart).
    pub agent_started: Option<Timestamp>,
    /// The agent container's image.
    pub image: Option<String>,
    /// The Cilium version from the image tag (`quay.io/cilium/cilium:v1.16.5@sha256:...`).
    pub version: Option<Version>,
    /// Why the agent container is waiting, e.g. `CrashLoopBackOff`.
    pub waiting_reason: Option<String>,
}

/// The version in an image reference's tag: `registry:5000/cilium/cilium:v1.14.5@sha256:...`.
pub fn image_version(image: &str) -> Option<Version> {
    let last = image.rsplit('/').next()?;
    let without_digest = last.split('@').next()?;
    let (_, tag) = without_digest.split_once(':')?;
    status::leading_version(tag)
}

/// An agent pod's summary.
pub fn agent_from_pod(pod: &Pod) -> AgentPod {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let image = pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .find(|c| c.name == AGENT_CONTAINER)
            .and_then(|c| c.image.clone())
    });
    let st = pod.status.as_ref();
    let ready = st
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let agent = st
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == AGENT_CONTAINER));
    let state = agent.and_then(|c| c.state.as_ref());
    AgentPod {
        name,
        node,
        phase: st.and_then(|s| s.phase.clone()),
        ready,
        restarts: agent.map_or(0, |c| c.restart_count),
        pod_started: st.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        agent_started: state
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .map(|t| t.0),
        version: image.as_deref().and_then(image_version),
        image,
        waiting_reason: state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone()),
    }
}

/// Every agent pod in kube-system, sorted by node then name.
pub async fn list_agents(client: &Client) -> Result<Vec<AgentPod>, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let pods = api
        .list(&ListParams::default().labels(AGENT_SELECTOR))
        .await
        .map_err(K8sError::api(
            "list",
            ObjectRef {
                kind: "pod",
                namespace: Some(KUBE_SYSTEM.to_owned()),
                name: None,
            },
        ))?;
    let mut agents: Vec<AgentPod> = pods.items.iter().map(agent_from_pod).collect();
    agents.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
    Ok(agents)
}

/// The in-container CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusCli {
    /// `cilium-dbg` (1.15+).
    CiliumDbg,
    /// `cilium` (before 1.15).
    Cilium,
}

impl StatusCli {
    /// The command line: `cilium-dbg status --verbose`.
    pub fn argv(self) -> [&'static str; 3] {
        match self {
            StatusCli::CiliumDbg => ["cilium-dbg", "status", "--verbose"],
            StatusCli::Cilium => ["cilium", "status", "--verbose"],
        }
    }
}

/// Which CLI an agent of this version has; `None` (unknown) tries `cilium-dbg` first.
pub fn status_cli(version: Option<Version>) -> StatusCli {
    match version {
        Some(v) if !v.at_least(CILIUM_DBG_SINCE.0, CILIUM_DBG_SINCE.1) => StatusCli::Cilium,
        _ => StatusCli::CiliumDbg,
    }
}

/// A command's result inside a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exited 0 (the API server's status said `Success`).
    pub success: bool,
    /// The API server's status message on failure.
    pub message: Option<String>,
}

impl ExecOutput {
    /// The container runtime could not find the executable.
    pub fn executable_missing(&self) -> bool {
        let hay = format!("{} {}", self.message.as_deref().unwrap_or(""), self.stderr);
        hay.contains("executable file not found") || hay.contains("no such file or directory")
    }
}

/// Run `argv` in the agent container of pod `pod` (kube-system), collecting its output.
pub async fn exec_in_agent(
    client: &Client,
    pod: &str,
    argv: &[&str],
    timeout: Duration,
) -> Result<ExecOutput, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let command = argv.join(" ");
    let exec_err = |message: String| K8sError::Exec {
        pod: format!("{KUBE_SYSTEM}/{pod}"),
        command: command.clone(),
        message,
    };
    let params = AttachParams::default()
        .container(AGENT_CONTAINER)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let run = async {
        let args: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        let mut proc = api
            .exec(pod, args, &params)
            .await
            .map_err(|source| K8sError::Api {
                action: "exec in",
                object: ObjectRef::namespaced("pod", KUBE_SYSTEM, pod),
                source: Box::new(source),
            })?;
        let status = proc.take_status();
        let mut out = proc.stdout();
        let mut err = proc.stderr();
        let read = |r: Option<_>| async move {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                // The stream ends when the command does; a read error leaves what was read.
                let _ = AsyncReadExt::read_to_end(&mut r, &mut buf).await;
            }
            String::from_utf8_lossy(&buf).into_owned()
        };
        let (stdout, stderr) = tokio::join!(read(out.take()), read(err.take()));
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        proc.join().await.map_err(|e| exec_err(e.to_string()))?;
        let success = status
            .as_ref()
            .is_some_and(|s| s.status.as_deref() == Some("Success"));
        let message = status
            .filter(|_| !success)
            .and_then(|s| s.message)
            .filter(|m| !m.is_empty());
        Ok(ExecOutput {
            stdout,
            stderr,
            success,
            message,
        })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(exec_err(format!("no result within {}s", timeout.as_secs()))),
    }
}

/// What one agent says: the parsed status, the CLI that produced it, and the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// The CLI used.
    pub cli: StatusCli,
    /// The parsed status.
    pub status: AgentStatus,
    /// The command's output as received.
    pub raw: String,
}

/// `cilium-dbg status --verbose` (or `cilium status --verbose`) in one agent, parsed.
pub async fn agent_status(
    client: &Client,
    agent: &AgentPod,
    timeout: Duration,
) -> Result<AgentReport, K8sError> {
    let mut cli = status_cli(agent.version);
    let mut out = exec_in_agent(client, &agent.name, &cli.argv(), timeout).await?;
    if !out.success
        && cli == StatusCli::CiliumDbg
        && agent.version.is_none()
        && out.executable_missing()
    {
        cli = StatusCli::Cilium;
        out = exec_in_agent(client, &agent.name, &cli.argv(), timeout).await?;
    }
    let pod = format!("{KUBE_SYSTEM}/{}", agent.name);
    let command = cli.argv().join(" ");
    if !out.success {
        return Err(K8sError::Exec {
            pod,
            command,
            message: out
                .message
                .clone()
                .unwrap_or_else(|| format!("failed: {}", out.stderr.trim())),
        });
    }
    let status = status::parse(&out.stdout).map_err(|e| K8sError::Exec {
        pod,
        command,
        message: e.to_string(),
    })?;
    Ok(AgentReport {
        cli,
        status,
        raw: out.stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_images() {
        assert_eq!(
            image_version("quay.io/cilium/cilium:v1.14.5@sha256:0123abcd"),
            Some(Version::new(1, 14, 5))
        );
        assert_eq!(
            image_version("registry.lab:5000/cilium/cilium:v1.18.2"),
            Some(Version::new(1, 18, 2))
        );
        assert_eq!(
            image_version("registry.lab:5000/cilium/cilium@sha256:ab"),
            None
        );
        assert_eq!(image_version("cilium/cilium:latest"), None);
    }

    #[test]
    fn cli_by_version() {
        assert_eq!(status_cli(Some(Version::new(1, 14, 19))), StatusCli::Cilium);
        assert_eq!(
            status_cli(Some(Version::new(1, 15, 0))),
            StatusCli::CiliumDbg
        );
        assert_eq!(status_cli(None), StatusCli::CiliumDbg);
        assert_eq!(StatusCli::Cilium.argv(), ["cilium", "status", "--verbose"]);
    }

    #[test]
    fn missing_executable_is_recognised() {
        let o = ExecOutput {
            stdout: String::new(),
            stderr: String::new(),
            success: false,
            message: Some("OCI runtime exec failed: exec failed: unable to start container process: exec: \"cilium-dbg\": executable file not found in $PATH: unknown".to_owned()),
        };
        assert!(o.executable_missing());
    }
}
