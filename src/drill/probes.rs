//! Data-path probes during a drill: kubedrill uploads its static probe agent (`kubedrill-probe`,
//! workspace member `probe/`) to the nodes and runs it over SSH — echo responders and probers in
//! the host namespace or inside pods' network namespaces (found through the container runtime, so
//! pods that run only the `pause` image can be probed) — and reads its JSON events.

use crate::host::Host;
use crate::ssh::{Command, OutputLimit, SshError, shell::quote};
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

/// An agent command's output, or the error naming host, what ran, its status and stderr.
fn agent_ok(s: &dyn Host, what: &'static str, o: &crate::ssh::Output) -> Result<(), ProbeError> {
    if o.success() {
        return Ok(());
    }
    Err(ProbeError::Agent {
        host: s.name().to_owned(),
        what,
        status: o.status,
        stderr: o.stderr_tail(5),
    })
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
pub async fn install(s: &dyn Host, agent: &[u8]) -> Result<(), ProbeError> {
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
    agent_ok(s, "upload", &o)?;
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
    /// `persistent` for the held kinds (one connection for every probe); the agent's default
    /// (a new connection per probe) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_mode: Option<TcpMode>,
}

/// The probe agent's TCP modes kubedrill asks for besides its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpMode {
    /// One connection held for the whole run (the `-held` probe kinds).
    Persistent,
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
    /// A held connection's history (`tcp_mode: persistent` probes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<crate::report::record::HeldConnections>,
}

/// A loss window still open at the prober's last `stats` event (its `loss` event comes only
/// when it closes, or when the run stops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenWindow {
    /// Probe id.
    pub probe: String,
    /// Send time of the first lost probe (unix ms).
    pub start_ms: u64,
    /// When the prober last reported it open (unix ms, its `stats` time).
    pub seen_ms: u64,
    /// Probes lost in it so far (the probe's lost total minus its closed windows').
    pub lost: u64,
}

/// What a prober reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProbeRun {
    /// Every loss window.
    pub losses: Vec<Loss>,
    /// One summary per probe.
    pub summaries: Vec<Summary>,
    /// Windows open at the last `stats` event of their probe (a run still in progress).
    pub open: Vec<OpenWindow>,
    /// Lines that were not events (kept for diagnosis).
    pub other: Vec<String>,
    /// A `serve` agent said it listens (its sockets are bound: probes may start).
    pub listening: bool,
}

/// Parse the agent's JSON lines.
pub fn parse_events(text: &str) -> ProbeRun {
    let mut r = ProbeRun::default();
    // Per probe, the last stats event: (ts_ms, total_lost, open window start).
    let mut last_stats: std::collections::BTreeMap<String, (u64, u64, Option<u64>)> =
        std::collections::BTreeMap::new();
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
            Some("listening") => r.listening = true,
            Some("summary") => match serde_json::from_value(v) {
                Ok(s) => r.summaries.push(s),
                Err(_) => r.other.push(line.to_string()),
            },
            Some("stats") => {
                let num = |k: &str| v.get(k).and_then(|x| x.as_u64());
                if let (Some(probe), Some(ts)) =
                    (v.get("probe").and_then(|p| p.as_str()), num("ts_ms"))
                {
                    last_stats.insert(
                        probe.to_owned(),
                        (
                            ts,
                            num("total_lost").unwrap_or(0),
                            num("open_window_start_ms"),
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    for (probe, (ts, total_lost, open)) in last_stats {
        let Some(start_ms) = open else { continue };
        let mine = r.losses.iter().filter(|l| l.probe == probe);
        if mine.clone().any(|l| l.start_ms == start_ms) {
            continue; // closed since
        }
        let closed: u64 = mine.map(|l| l.lost).fold(0, u64::saturating_add);
        r.open.push(OpenWindow {
            probe,
            start_ms,
            seen_ms: ts.max(start_ms),
            lost: total_lost.saturating_sub(closed),
        });
    }
    r
}

/// Run echo responders for `duration` (returns when they stop).
pub async fn serve(
    s: &dyn Host,
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
    agent_ok(s, "serve", &o)?;
    Ok(())
}

/// Run probes for `duration` and collect their loss windows and summaries.
pub async fn run(
    s: &dyn Host,
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
            .timeout(duration + Duration::from_secs(30))
            // Events grow with the run's length.
            .stdout_limit(OutputLimit::LARGE),
        )
        .await?;
    agent_ok(s, "run", &o)?;
    Ok(parse_events(&o.stdout_text()))
}

/// Where detached agents keep their pid, spec and event files on the node.
pub const RUN_DIR: &str = "/run/kubedrill";

/// A tag names one detached agent on a node (`[a-z0-9-]`, 1–40 characters).
pub fn check_tag(tag: &str) -> Result<(), ProbeError> {
    let ok = !tag.is_empty()
        && tag.len() <= 40
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ProbeError::Agent {
            host: String::new(),
            what: "tag",
            status: None,
            stderr: format!("`{tag}` is not a usable agent tag"),
        })
    }
}

/// Where a detached agent runs: the agent binary and the directory of its pid, spec and event
/// files. On nodes: [`REMOTE_AGENT`] and [`RUN_DIR`] ([`Detached::NODE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached<'a> {
    /// The agent binary (as `/proc/PID/exe` shows it: an absolute, resolved path).
    pub agent: &'a str,
    /// The state directory.
    pub run_dir: &'a str,
}

impl Detached<'static> {
    /// The layout on nodes.
    pub const NODE: Detached<'static> = Detached {
        agent: REMOTE_AGENT,
        run_dir: RUN_DIR,
    };
}

impl Detached<'_> {
    /// The shell script that runs `agent_args` in the background with its stdout in
    /// `RUN_DIR/probe-TAG.events` (readable by [`peek`] meanwhile) and its PID in
    /// `RUN_DIR/probe-TAG.pid` (for [`stop`]), waits for it, then prints the events and exits
    /// with its status. With `spec_on_stdin`, stdin is first saved as `RUN_DIR/probe-TAG.spec`.
    fn script(&self, tag: &str, agent_args: &str, spec_on_stdin: bool) -> String {
        let save_spec = if spec_on_stdin {
            "cat > \"$base.spec\"\n"
        } else {
            ""
        };
        let (agent, dir) = (quote(self.agent), quote(self.run_dir));
        format!(
            "umask 077; mkdir -p {dir}; base={dir}/probe-{tag}\n\
             {save_spec}\
             {agent} {agent_args} > \"$base.events\" 2> \"$base.err\" &\n\
             pid=$!; echo \"$pid\" > \"$base.pid\"\n\
             wait \"$pid\"; st=$?\n\
             cat \"$base.events\"; tail -n 20 \"$base.err\" >&2\n\
             rm -f \"$base.pid\" \"$base.spec\" \"$base.events\" \"$base.err\"\n\
             exit $st\n"
        )
    }

    /// The script of [`run_detached`]: the spec comes on stdin; `stats` every second.
    pub fn run_script(&self, tag: &str, max: Duration) -> String {
        let args = format!(
            "run --spec \"$base.spec\" --stats-interval 1s --duration {}ms",
            max.as_millis()
        );
        self.script(tag, &args, true)
    }

    /// The script of [`serve_detached`].
    pub fn serve_script(
        &self,
        tag: &str,
        netns: Option<&str>,
        tcp: &str,
        udp: &str,
        max: Duration,
    ) -> String {
        let ns = netns
            .map(|n| format!(" --netns {}", quote(n)))
            .unwrap_or_default();
        let args = format!(
            "serve{ns} --tcp {} --udp {} --duration {}ms",
            quote(tcp),
            quote(udp),
            max.as_millis()
        );
        self.script(tag, &args, false)
    }

    /// The script of [`peek`].
    pub fn peek_script(&self, tag: &str) -> String {
        format!(
            "cat {}/probe-{tag}.events 2>/dev/null || true",
            quote(self.run_dir)
        )
    }

    /// The script of [`stop`]: SIGTERM to the PID in the pid file, only if that process runs
    /// the agent binary.
    pub fn stop_script(&self, tag: &str) -> String {
        format!(
            "f={}/probe-{tag}.pid; [ -f \"$f\" ] || exit 0; pid=$(cat \"$f\")\n\
             case \"$pid\" in ''|*[!0-9]*) exit 0;; esac\n\
             [ \"$(readlink /proc/$pid/exe 2>/dev/null)\" = {} ] && kill -TERM \"$pid\"\n\
             exit 0\n",
            quote(self.run_dir),
            quote(self.agent)
        )
    }
}

/// Run probers until [`stop`] is called for `tag` (or `max` passes: the agent then stops by
/// itself, so it never outlives a lost kubedrill by more), with a `stats` event every second so
/// that [`peek`] sees windows that are still open. Returns every event at the end.
pub async fn run_detached(
    s: &dyn Host,
    probes: &[ProbeSpec],
    max: Duration,
    tag: &str,
) -> Result<ProbeRun, ProbeError> {
    check_tag(tag)?;
    let spec = serde_json::to_vec(probes).unwrap_or_default();
    let o = s
        .exec(
            &Command::new(Detached::NODE.run_script(tag, max))
                .stdin(spec)
                .privileged()
                .label(format!("kubedrill-probe run ({tag})"))
                .timeout(max + Duration::from_secs(60))
                // A `stats` line per probe per second, for the whole run.
                .stdout_limit(OutputLimit::LARGE),
        )
        .await?;
    agent_ok(s, "run", &o)?;
    Ok(parse_events(&o.stdout_text()))
}

/// Echo responders until [`stop`] is called for `tag` (or `max` passes).
pub async fn serve_detached(
    s: &dyn Host,
    netns: Option<&str>,
    tcp: &str,
    udp: &str,
    max: Duration,
    tag: &str,
) -> Result<(), ProbeError> {
    check_tag(tag)?;
    let o = s
        .exec(
            &Command::new(Detached::NODE.serve_script(tag, netns, tcp, udp, max))
                .privileged()
                .label(format!("kubedrill-probe serve ({tag})"))
                .timeout(max + Duration::from_secs(60)),
        )
        .await?;
    agent_ok(s, "serve", &o)?;
    Ok(())
}

/// The events a detached agent wrote so far (closed windows, and open ones from its last
/// `stats`).
pub async fn peek(s: &dyn Host, tag: &str) -> Result<ProbeRun, ProbeError> {
    check_tag(tag)?;
    let o = s
        .exec(
            &Command::new(Detached::NODE.peek_script(tag))
                .privileged()
                .label(format!("read kubedrill-probe events ({tag})"))
                .idempotent()
                .stdout_limit(OutputLimit::LARGE),
        )
        .await?;
    Ok(parse_events(&o.stdout_text()))
}

/// Stop a detached agent: SIGTERM to the PID in its pid file, only if that process is the
/// agent (a reused PID is left alone). The agent then flushes open windows and summaries, and
/// its `run_detached`/`serve_detached` call returns. Nothing running: nothing done.
pub async fn stop(s: &dyn Host, tag: &str) -> Result<(), ProbeError> {
    check_tag(tag)?;
    let o = s
        .exec(
            &Command::new(Detached::NODE.stop_script(tag))
                .privileged()
                .label(format!("stop kubedrill-probe ({tag})"))
                .idempotent(),
        )
        .await?;
    if !o.success() {
        return Err(ProbeError::Agent {
            host: s.name().to_owned(),
            what: "stop",
            status: o.status,
            stderr: o.stderr_tail(3),
        });
    }
    Ok(())
}

/// The network namespace of a pod on this node, from the container runtime: the pod sandbox's
/// (pause container's) PID via `crictl inspectp`, as `/proc/PID/ns/net`.
pub async fn pod_netns(s: &dyn Host, namespace: &str, pod: &str) -> Result<String, ProbeError> {
    let host = s.name().to_owned();
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
    fn open_windows_come_from_the_last_stats() {
        let text = r#"{"event":"stats","ts_ms":1000,"probe":"np","kind":"tcp","target":"x","period_ms":1000,"sent":20,"ok":20,"lost":0,"rtt_ms":{},"total_sent":20,"total_ok":20,"total_lost":0}
{"event":"stats","ts_ms":2000,"probe":"np","kind":"tcp","target":"x","period_ms":1000,"sent":20,"ok":10,"lost":10,"rtt_ms":{},"total_sent":40,"total_ok":30,"total_lost":10,"open_window_start_ms":1500}
{"event":"stats","ts_ms":2000,"probe":"icmp","kind":"icmp","target":"y","period_ms":1000,"sent":20,"ok":20,"lost":0,"rtt_ms":{},"total_sent":40,"total_ok":35,"total_lost":5,"open_window_start_ms":900}
{"event":"loss","probe":"icmp","kind":"icmp","target":"y","start_ms":900,"end_ms":1150,"duration_ms":250,"lost":5,"open":false,"reason":"timeout"}
"#;
        let r = parse_events(text);
        assert_eq!(
            r.open,
            [OpenWindow {
                probe: "np".into(),
                start_ms: 1500,
                seen_ms: 2000,
                lost: 10
            }]
        );
        assert_eq!(r.losses.len(), 1);
    }

    #[test]
    fn detached_scripts_keep_pid_and_events_per_tag() {
        let s = Detached::NODE.run_script("np-1", Duration::from_millis(5));
        assert!(s.contains("base=/run/kubedrill/probe-np-1"), "{s}");
        assert!(s.contains("cat > \"$base.spec\""), "{s}");
        assert!(s.contains("echo \"$pid\" > \"$base.pid\""), "{s}");
        assert!(check_tag("np-1").is_ok());
        assert!(check_tag("x; rm -rf /").is_err());
        assert!(check_tag("").is_err());
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
