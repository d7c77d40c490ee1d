//! Data-path probes during a drill: kubedrill uploads its static probe agent (`kubedrill-probe`,
//! workspace member `probe/`) to the nodes and runs it over SSH — echo responders and probers in
//! the host namespace or inside pods' network namespaces (found through the container runtime, so
//! pods that run only the `pause` image can be probed) — and reads its JSON events.

use crate::ssh::{Command, Session, SshError, shell::quote};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Where the agent lives on nodes.
pub const REMOTE_AGENT: &str = "/usr/local/lib/kubedrill/kubedrill-probe";

/// Probe errors, naming the host.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// No agent binary found locally.
    #[error(
        "no probe agent binary: build it with scripts/build-probe.sh (static), or set KUBEDRILL_PROBE_BIN; looked in {0}"
    )]
    NoAgent(String),
    /// Reading it.
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// SSH.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The agent failed.
    #[error("{host}: {what} exited with {status:?}: {stderr}")]
    Agent {
        /// Host.
        host: String,
        /// serve or run.
        what: &'static str,
        /// Exit status.
        status: Option<u32>,
        /// Last lines of stderr.
        stderr: String,
    },
    /// The container runtime did not give a pod's namespace.
    #[error("{host}: pod {pod}: {message}")]
    Pod {
        /// Host.
        host: String,
        /// Pod.
        pod: String,
        /// What went wrong.
        message: String,
    },
}

/// The local static agent: `$KUBEDRILL_PROBE_BIN`, else beside this executable, else the
/// workspace's static build (`scripts/build-probe.sh`).
pub fn agent_binary() -> Result<PathBuf, ProbeError> {
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os("KUBEDRILL_PROBE_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join("kubedrill-probe");
        tried.push(p.display().to_string());
        if p.is_file() {
            return Ok(p);
        }
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-gnu/release/kubedrill-probe");
    tried.push(p.display().to_string());
    if p.is_file() {
        return Ok(p);
    }
    Err(ProbeError::NoAgent(tried.join(", ")))
}

/// Upload the agent (skipped when the node has this exact file).
pub async fn install(s: &Session, agent: &[u8]) -> Result<(), ProbeError> {
    use sha2::{Digest, Sha256};
    let want: String = Sha256::digest(agent)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let have = s
        .exec(
            &Command::new(format!(
                "sha256sum {REMOTE_AGENT} 2>/dev/null | cut -d' ' -f1"
            ))
            .privileged()
            .idempotent(),
        )
        .await?;
    if have.stdout_text().trim() == want {
        return Ok(());
    }
    s.exec(
        &Command::new("mkdir -p /usr/local/lib/kubedrill")
            .privileged()
            .idempotent(),
    )
    .await?;
    let o = s.upload(agent, REMOTE_AGENT, 0o755, true).await?;
    if !o.success() {
        return Err(ProbeError::Agent {
            host: s.destination().name.clone(),
            what: "upload",
            status: o.status,
            stderr: o.stderr_tail(5),
        });
    }
    Ok(())
}

/// One probe of a run (the agent's spec format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// Unique id (names the probe in every event).
    pub id: String,
    /// `icmp`, `tcp` or `udp`.
    pub kind: String,
    /// `IP` (icmp) or `IP:PORT`.
    pub target: String,
    /// Probes per second.
    pub rate_per_s: u32,
    /// Per-probe timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Network namespace path for this probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// A loss window as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    /// Probe id.
    pub probe: String,
    /// Kind.
    pub kind: String,
    /// Target.
    pub target: String,
    /// Send time of the first lost probe (unix ms).
    pub start_ms: u64,
    /// Send time of the first answered probe after it (unix ms).
    pub end_ms: u64,
    /// Length.
    pub duration_ms: u64,
    /// Probes lost.
    pub lost: u64,
    /// Still open when the run stopped.
    #[serde(default)]
    pub open: bool,
    /// Why the first probe was lost.
    #[serde(default)]
    pub reason: String,
}

/// A probe's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Probe id.
    pub probe: String,
    /// Sent.
    pub sent: u64,
    /// Answered.
    pub ok: u64,
    /// Lost.
    pub lost: u64,
    /// Loss windows.
    pub windows: u64,
    /// Longest window.
    pub longest_window_ms: u64,
}

/// What a prober reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProbeRun {
    /// Every loss window.
    pub losses: Vec<Loss>,
    /// One summary per probe.
    pub summaries: Vec<Summary>,
    /// Lines that were not events (kept for diagnosis).
    pub other: Vec<String>,
}

/// Parse the agent's JSON lines.
pub fn parse_events(text: &str) -> ProbeRun {
    let mut r = ProbeRun::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            r.other.push(line.to_string());
            continue;
        };
        match v.get("event").and_then(|e| e.as_str()) {
            Some("loss") => match serde_json::from_value(v) {
                Ok(l) => r.losses.push(l),
                Err(_) => r.other.push(line.to_string()),
            },
            Some("summary") => match serde_json::from_value(v) {
                Ok(s) => r.summaries.push(s),
                Err(_) => r.other.push(line.to_string()),
            },
            _ => {}
        }
    }
    r
}

/// Run echo responders for `duration` (returns when they stop).
pub async fn serve(
    s: &Session,
    netns: Option<&str>,
    tcp: &str,
    udp: &str,
    duration: Duration,
) -> Result<(), ProbeError> {
    let ns = netns
        .map(|n| format!(" --netns {}", quote(n)))
        .unwrap_or_default();
    let cmd = format!(
        "{REMOTE_AGENT} serve{ns} --tcp {} --udp {} --duration {}ms",
        quote(tcp),
        quote(udp),
        duration.as_millis()
    );
    let o = s
        .exec(
            &Command::new(cmd)
                .privileged()
                .label("kubedrill-probe serve")
                .timeout(duration + Duration::from_secs(30)),
        )
        .await?;
    if !o.success() {
        return Err(ProbeError::Agent {
            host: s.destination().name.clone(),
            what: "serve",
            status: o.status,
            stderr: o.stderr_tail(5),
        });
    }
    Ok(())
}

/// Run probes for `duration` and collect their loss windows and summaries.
pub async fn run(
    s: &Session,
    probes: &[ProbeSpec],
    duration: Duration,
) -> Result<ProbeRun, ProbeError> {
    let spec = serde_json::to_vec(probes).unwrap_or_default();
    let o = s
        .exec(
            &Command::new(format!(
                "{REMOTE_AGENT} run --spec - --stats-interval 0 --duration {}ms",
                duration.as_millis()
            ))
            .stdin(spec)
            .privileged()
            .label("kubedrill-probe run")
            .timeout(duration + Duration::from_secs(30)),
        )
        .await?;
    if !o.success() {
        return Err(ProbeError::Agent {
            host: s.destination().name.clone(),
            what: "run",
            status: o.status,
            stderr: o.stderr_tail(5),
        });
    }
    Ok(parse_events(&o.stdout_text()))
}

/// The network namespace of a pod on this node, from the container runtime: the pod sandbox's
/// (pause container's) PID via `crictl inspectp`, as `/proc/PID/ns/net`.
pub async fn pod_netns(s: &Session, namespace: &str, pod: &str) -> Result<String, ProbeError> {
    let host = s.destination().name.clone();
    let err = |message: String| ProbeError::Pod {
        host: host.clone(),
        pod: format!("{namespace}/{pod}"),
        message,
    };
    let o = s
        .exec(
            &Command::new(format!(
                "id=$(crictl pods --namespace {} --name {} --state ready -q | head -1) && [ -n \"$id\" ] && crictl inspectp -o json \"$id\"",
                quote(namespace),
                quote(pod)
            ))
            .privileged()
            .idempotent(),
        )
        .await?;
    if !o.success() {
        return Err(err(format!(
            "no ready pod sandbox found with crictl: {}",
            o.stderr_tail(3)
        )));
    }
    let pid =
        sandbox_pid(&o.stdout_text()).ok_or_else(|| err("crictl inspectp shows no pid".into()))?;
    Ok(format!("/proc/{pid}/ns/net"))
}

/// The sandbox PID in `crictl inspectp -o json` output (`.info.pid`).
pub fn sandbox_pid(json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.pointer("/info/pid")
        .and_then(|p| p.as_u64())
        .filter(|p| *p > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_and_other_lines_kept() {
        let text = r#"{"event":"start","ts_ms":1,"probe":"icmp","kind":"icmp","target":"10.0.0.2"}
{"event":"loss","probe":"udp","kind":"udp","target":"10.231.1.2:7002","start_ms":1795315126472,"end_ms":1795315127972,"duration_ms":1500,"lost":75,"open":false,"reason":"timeout","interval_ms":20}
{"event":"summary","ts_ms":2,"probe":"udp","kind":"udp","target":"x","start_ms":1,"end_ms":2,"sent":301,"ok":226,"lost":75,"skipped":0,"windows":1,"loss_ms":1500,"longest_window_ms":1500}
garbage
"#;
        let r = parse_events(text);
        assert_eq!(r.losses.len(), 1);
        assert_eq!(r.losses[0].duration_ms, 1500);
        assert_eq!(r.losses[0].lost, 75);
        assert_eq!(r.summaries[0].windows, 1);
        assert_eq!(r.other, ["garbage"]);
    }

    #[test]
    fn sandbox_pid_from_crictl() {
        // Shape of `crictl inspectp -o json` (containerd 1.7): status + info with the pid.
        let j = r#"{"status":{"id":"5b1c","metadata":{"name":"probe-a","namespace":"kubedrill-drill"},"state":"SANDBOX_READY","network":{"ip":"10.0.1.23"}},"info":{"pid":48213,"processStatus":"running","netNamespaceClosed":false}}"#;
        assert_eq!(sandbox_pid(j), Some(48213));
        assert_eq!(sandbox_pid(r#"{"info":{"pid":0}}"#), None);
        assert_eq!(sandbox_pid("not json"), None);
    }
}
