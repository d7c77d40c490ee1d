//! SSH engine on russh: one verified, authenticated connection per host, reused by every step,
//! with a bounded number of concurrent channels.
//!
//! - Host keys are checked against a `known_hosts` file ([`HostKeyMode`]); a changed or revoked
//!   key is always an error naming host, fingerprint, file and line.
//! - Authentication: the inventory's `ansible_ssh_private_key_file`, then ssh-agent, then the
//!   default keys in `~/.ssh`.
//! - Jump host: a [`Session`] can be opened through another one (`direct-tcpip`).
//! - [`Session::exec`] returns status, stdout, stderr and duration, with a per-command timeout
//!   that covers the whole exchange (channel open, stdin, output); [`Session::upload`] writes a
//!   file atomically and checks its SHA-256 on the node.
//! - What a node prints is bounded ([`OutputLimit`]): of stdout and of stderr only the first
//!   and the last bytes are kept, and [`Output`] counts what was dropped, so a node that streams
//!   gigabytes cannot exhaust this machine's memory. A command whose stdout is parsed (the
//!   default) fails with [`SshError::OutputTruncated`] instead of handing a parser a cut text.
//! - A dropped connection is re-established once before the host is given up.

mod auth;
pub mod forward;
pub mod known_hosts;
pub mod node_lock;
pub mod shell;

pub use auth::default_identities;

use known_hosts::{KnownHosts, Lookup, fingerprint};
use russh::client::{self, Handle};
use russh::keys::{PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig, kex};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

/// How unknown host keys are treated. Changed and revoked keys are refused in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyMode {
    /// Unknown hosts are refused (OpenSSH `StrictHostKeyChecking yes`).
    #[default]
    Strict,
    /// Unknown hosts are recorded in the file and accepted (`accept-new`).
    AcceptNew,
    /// Unknown hosts are accepted without recording. Dangerous: warn loudly.
    Off,
}

impl std::str::FromStr for HostKeyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" | "yes" | "true" => Ok(Self::Strict),
            "accept-new" => Ok(Self::AcceptNew),
            "off" | "no" | "false" => Ok(Self::Off),
            other => Err(format!(
                "unknown host-key mode `{other}`: use strict, accept-new or off"
            )),
        }
    }
}

/// The known_hosts file and mode shared by every connection of a run.
#[derive(Debug)]
pub struct HostKeyPolicy {
    mode: HostKeyMode,
    file: Mutex<KnownHosts>,
    learned: AtomicU32,
}

impl HostKeyPolicy {
    /// Read `path` once (missing file = empty).
    pub fn load(path: &Path, mode: HostKeyMode) -> Result<Self, SshError> {
        let kh = KnownHosts::load(path).map_err(|e| SshError::KnownHosts {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            mode,
            file: Mutex::new(kh),
            learned: AtomicU32::new(0),
        })
    }

    /// The mode in force.
    pub fn mode(&self) -> HostKeyMode {
        self.mode
    }

    /// How many keys `accept-new` recorded so far.
    pub fn learned(&self) -> u32 {
        self.learned.load(Ordering::Relaxed)
    }

    /// Lines of the file that were skipped as unreadable.
    pub async fn skipped_lines(&self) -> Vec<(usize, String)> {
        self.file.lock().await.skipped.clone()
    }

    async fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), SshError> {
        let mut kh = self.file.lock().await;
        let file = kh.path().to_path_buf();
        let fp = fingerprint(key);
        match kh.lookup(host, port, key) {
            Lookup::Known { .. } => Ok(()),
            Lookup::Changed { line } => Err(SshError::HostKeyChanged {
                host: known_hosts::host_port_name(host, port),
                fingerprint: fp,
                file,
                line,
            }),
            Lookup::Revoked { line } => Err(SshError::HostKeyRevoked {
                host: known_hosts::host_port_name(host, port),
                fingerprint: fp,
                file,
                line,
            }),
            Lookup::Unknown => match self.mode {
                HostKeyMode::Strict => Err(SshError::HostKeyUnknown {
                    host: known_hosts::host_port_name(host, port),
                    fingerprint: fp,
                    file,
                }),
                HostKeyMode::AcceptNew => {
                    kh.learn(host, port, key)
                        .map_err(|e| SshError::KnownHosts {
                            path: file,
                            reason: format!("cannot record new host key: {e}"),
                        })?;
                    self.learned.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                HostKeyMode::Off => Ok(()),
            },
        }
    }
}

/// Connection settings shared by every host of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// TCP connect + handshake + authentication limit.
    pub connect_timeout: Duration,
    /// Default limit for one command.
    pub command_timeout: Duration,
    /// Keep-alive interval (three missed replies close the connection).
    pub keepalive: Duration,
    /// Host-key verification.
    pub host_keys: Arc<HostKeyPolicy>,
    /// Fallback identity files (after the inventory's key and the agent).
    pub identities: Vec<PathBuf>,
    /// ssh-agent socket whose keys are tried (default: `SSH_AUTH_SOCK`); `None` disables it.
    pub agent: Option<PathBuf>,
    /// Concurrent channels per connection (OpenSSH's `MaxSessions` defaults to 10).
    pub max_channels: usize,
}

impl Options {
    /// Defaults: 10 s connect, 10 min per command, 15 s keep-alive, 8 channels.
    pub fn new(host_keys: Arc<HostKeyPolicy>) -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(600),
            keepalive: Duration::from_secs(15),
            host_keys,
            identities: default_identities(),
            agent: std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
            max_channels: 8,
        }
    }

    fn russh_config(&self) -> Arc<client::Config> {
        let mut preferred = russh::Preferred::default();
        // curve25519 first: fast and what OpenSSH prefers; then the library's safe order.
        let first = [kex::CURVE25519, kex::CURVE25519_PRE_RFC_8731];
        let mut kexes = first.to_vec();
        kexes.extend(preferred.kex.iter().filter(|k| !first.contains(k)).cloned());
        preferred.kex = Cow::Owned(kexes);
        Arc::new(client::Config {
            preferred,
            keepalive_interval: Some(self.keepalive),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        })
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Inventory name (for messages).
    pub name: String,
    /// Address or DNS name to connect to (and to look up in known_hosts).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// `ansible_ssh_private_key_file`.
    pub key: Option<PathBuf>,
    /// `ansible_become`: privileged commands run with `sudo -n -u USER`.
    pub become_user: Option<String>,
}

impl Destination {
    /// From an inventory host's SSH settings; no `ansible_user` means the local user.
    pub fn from_target(name: &str, t: &crate::inventory::SshTarget) -> Self {
        let user = t.user.clone().unwrap_or_else(local_user);
        Self {
            name: name.to_string(),
            address: t.address.clone(),
            port: t.port,
            user,
            key: t.private_key.clone(),
            become_user: t.become_user.clone(),
        }
    }
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into())
}

/// How much of one output stream of a command is kept in memory: the first `head` bytes and
/// the last `tail` bytes; what lies between is counted and dropped.
///
/// Why head *and* tail: the head holds what a parser reads and the first error, the tail the
/// last lines (where tools print why they failed). Memory per command is bounded by
/// `head + tail` for stdout plus the same for stderr, whatever the node sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OutputLimit {
    /// Bytes kept from the start of the stream.
    pub head: usize,
    /// Bytes kept from the end of the stream.
    pub tail: usize,
}

impl OutputLimit {
    /// Default for stdout: 1 MiB head + 256 KiB tail. The largest stdout kubedrill parses with
    /// this limit is the facts script's (a few KiB; ~100 KiB for a node with hundreds of NICs),
    /// `cat` of a kubeconfig (~6 KiB), `helm get values` and reset/checksum listings.
    pub const STDOUT: OutputLimit = OutputLimit {
        head: 1 << 20,
        tail: 256 << 10,
    };
    /// Default for stderr: 64 KiB head + 64 KiB tail. Stderr is only shown (its last lines,
    /// kubelet journal excerpts of ~15 lines) or searched for sudo's refusal.
    pub const STDERR: OutputLimit = OutputLimit {
        head: 64 << 10,
        tail: 64 << 10,
    };
    /// For stdout that grows with run time: probe-agent event streams (a `stats` line per probe
    /// per second for a whole drill) and full Helm release documents (`helm status -o json`
    /// carries the chart's templates and the rendered manifest, 1–3 MiB for Cilium).
    pub const LARGE: OutputLimit = OutputLimit {
        head: 32 << 20,
        tail: 1 << 20,
    };

    /// `head + tail`.
    pub fn total(&self) -> usize {
        self.head.saturating_add(self.tail)
    }
}

impl fmt::Display for OutputLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (first {} + last {})",
            human_bytes(self.total() as u64),
            human_bytes(self.head as u64),
            human_bytes(self.tail as u64)
        )
    }
}

/// `1.5 MiB`-style sizes for messages.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} {unit}")
}

/// The marker put where bytes were dropped from shown output.
pub fn dropped_marker(dropped: u64) -> String {
    format!("[… {dropped} bytes dropped …]")
}

/// One output stream as it arrives: the head, a sliding tail, and the count dropped between.
#[derive(Debug)]
struct Capture {
    limit: OutputLimit,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl Capture {
    fn new(limit: OutputLimit) -> Self {
        Capture {
            limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Keep what fits in the head, slide the rest through the tail, count what falls out.
    fn push(&mut self, mut data: &[u8]) {
        let room = self.limit.head.saturating_sub(self.head.len());
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.is_empty() {
            return;
        }
        let cap = self.limit.tail;
        if data.len() >= cap {
            // Everything in the tail so far and the front of `data` fall out.
            self.dropped += (self.tail.len() + data.len() - cap) as u64;
            self.tail.clear();
            self.tail.extend(&data[data.len() - cap..]);
        } else {
            let over = (self.tail.len() + data.len()).saturating_sub(cap);
            self.tail.drain(..over);
            self.dropped += over as u64;
            self.tail.extend(data);
        }
    }

    /// Bytes received so far.
    fn received(&self) -> u64 {
        (self.head.len() + self.tail.len()) as u64 + self.dropped
    }

    /// The latest bytes kept: the tail once there is one, else the head (for timeout messages).
    fn tail_or_head(&self) -> Vec<u8> {
        if self.tail.is_empty() {
            self.head.clone()
        } else {
            self.tail.iter().copied().collect()
        }
    }

    /// Head and tail joined, the gap's offset, and the count dropped there.
    fn finish(self) -> (Vec<u8>, usize, u64) {
        let gap = self.head.len();
        let mut v = self.head;
        v.extend(self.tail);
        (v, gap, self.dropped)
    }
}

/// One remote command.
#[derive(Clone)]
pub struct Command {
    script: String,
    stdin: Option<Arc<Vec<u8>>>,
    timeout: Option<Duration>,
    privileged: bool,
    label: Option<String>,
    retry_on_drop: bool,
    stdout_limit: OutputLimit,
    stderr_limit: OutputLimit,
    lossy_stdout: bool,
    stdout_in_timeout: bool,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("label", &self.describe())
            .field("privileged", &self.privileged)
            .finish_non_exhaustive()
    }
}

impl Command {
    /// A shell script run with `sh -c`.
    pub fn new(script: impl Into<String>) -> Self {
        Self {
            script: script.into(),
            stdin: None,
            timeout: None,
            privileged: false,
            label: None,
            retry_on_drop: false,
            stdout_limit: OutputLimit::STDOUT,
            stderr_limit: OutputLimit::STDERR,
            lossy_stdout: false,
            stdout_in_timeout: false,
        }
    }

    /// A script sent on stdin to `sh -s` (nothing of it appears in the remote process list).
    pub fn script_on_stdin(script: impl Into<Vec<u8>>) -> Self {
        Self::new("sh -s").stdin(script)
    }

    /// Bytes fed to the command's stdin, then EOF.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Arc::new(data.into()));
        self
    }

    /// Override the default command timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Run with `sudo -n` when the host has `ansible_become`.
    pub fn privileged(mut self) -> Self {
        self.privileged = true;
        self
    }

    /// What messages and logs show instead of the script (use for anything carrying secrets).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Safe to run again after a dropped connection (read-only or idempotent).
    pub fn idempotent(mut self) -> Self {
        self.retry_on_drop = true;
        self
    }

    /// Keep more (or less) of stdout than [`OutputLimit::STDOUT`]. There is always a limit:
    /// raise it only for output that legitimately grows (event streams, Helm documents).
    pub fn stdout_limit(mut self, limit: OutputLimit) -> Self {
        self.stdout_limit = limit;
        self
    }

    /// Stdout is only shown to people, never parsed: when it exceeds the limit keep its head
    /// and tail (with a `[… N bytes dropped …]` marker) instead of failing with
    /// [`SshError::OutputTruncated`].
    pub fn lossy_stdout(mut self) -> Self {
        self.lossy_stdout = true;
        self
    }

    /// Stdout is progress and never a secret (`kubeadm upgrade … 2>&1`): a timeout's error
    /// shows its last lines when stderr said nothing. Off by default — `kubeadm init` prints its
    /// bootstrap token, a kubeconfig fetch the client key.
    pub fn stdout_in_timeout(mut self) -> Self {
        self.stdout_in_timeout = true;
        self
    }

    /// The script (for fakes and tests: it may carry secrets, never print it).
    pub fn script(&self) -> &str {
        &self.script
    }

    /// What is fed to stdin, if anything (scripted hosts read a probe spec from it).
    pub fn stdin_data(&self) -> Option<&[u8]> {
        self.stdin.as_deref().map(Vec::as_slice)
    }

    /// The text used in messages: the label, or the script's first line, shortened.
    pub fn label_text(&self) -> String {
        self.describe()
    }

    fn describe(&self) -> String {
        if let Some(l) = &self.label {
            return l.clone();
        }
        let first = self.script.lines().next().unwrap_or_default();
        let mut s: String = first.chars().take(120).collect();
        if s.len() < self.script.len() {
            s.push('…');
        }
        s
    }
}

/// What a command did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Output {
    /// Exit status; `None` when the remote process died from a signal.
    pub status: Option<u32>,
    /// Signal name when killed by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Standard output.
    #[serde(skip)]
    pub stdout: Vec<u8>,
    /// Standard error.
    #[serde(skip)]
    pub stderr: Vec<u8>,
    /// Bytes of stdout dropped between the kept head and tail (0: `stdout` is complete).
    #[serde(skip_serializing_if = "is_zero")]
    pub stdout_dropped: u64,
    /// Bytes of stderr dropped between the kept head and tail.
    #[serde(skip_serializing_if = "is_zero")]
    pub stderr_dropped: u64,
    /// Offset in `stdout` where the dropped bytes were.
    #[serde(skip)]
    pub stdout_gap: usize,
    /// Offset in `stderr` where the dropped bytes were.
    #[serde(skip)]
    pub stderr_gap: usize,
    /// Wall time from channel open to close.
    pub duration: Duration,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Bytes as text (lossy), with the dropped-bytes marker at the gap.
fn text_with_gap(bytes: &[u8], gap: usize, dropped: u64) -> String {
    if dropped == 0 {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let gap = gap.min(bytes.len());
    // Each side decoded on its own: the cut may split a UTF-8 sequence.
    let head = String::from_utf8_lossy(&bytes[..gap]);
    let tail = String::from_utf8_lossy(&bytes[gap..]);
    let mut s = String::with_capacity(bytes.len() + 40);
    s.push_str(&head);
    if !head.is_empty() && !head.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&dropped_marker(dropped));
    s.push('\n');
    s.push_str(&tail);
    s
}

impl Output {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Stdout as text (lossy); where bytes were dropped, a `[… N bytes dropped …]` line.
    pub fn stdout_text(&self) -> String {
        text_with_gap(&self.stdout, self.stdout_gap, self.stdout_dropped)
    }

    /// Stderr as text (lossy); where bytes were dropped, a `[… N bytes dropped …]` line.
    pub fn stderr_text(&self) -> String {
        text_with_gap(&self.stderr, self.stderr_gap, self.stderr_dropped)
    }

    /// The last `n` lines of stderr, for error messages. When bytes were dropped before them,
    /// the first line says how many, so a reader knows the excerpt is not the whole story.
    pub fn stderr_tail(&self, n: usize) -> String {
        tail_with_marker(&self.stderr_text(), self.stderr_dropped, n)
    }

    /// [`Self::stderr_tail`] for stdout (scripts that merge the two, `kubeadm … 2>&1`).
    pub fn stdout_tail(&self, n: usize) -> String {
        tail_with_marker(&self.stdout_text(), self.stdout_dropped, n)
    }

    /// Whether stdout and stderr arrived whole (nothing dropped).
    pub fn is_complete(&self) -> bool {
        self.stdout_dropped == 0 && self.stderr_dropped == 0
    }
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of `text`; when `dropped` bytes were cut before them, a first line says so.
fn tail_with_marker(text: &str, dropped: u64, n: usize) -> String {
    let tail = tail_lines(text, n);
    if dropped > 0 && !tail.contains(&dropped_marker(dropped)) {
        format!("{}\n{tail}", dropped_marker(dropped))
    } else {
        tail
    }
}

/// SSH failures, each naming the host.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// TCP connect failed.
    #[error("{host}: cannot connect to {addr}: {reason}")]
    Connect {
        /// Host.
        host: String,
        /// address:port.
        addr: String,
        /// OS error.
        reason: String,
    },
    /// Connect, handshake or authentication took too long.
    #[error("{host}: no SSH session within {after:?} ({stage})")]
    ConnectTimeout {
        /// Host.
        host: String,
        /// Limit.
        after: Duration,
        /// What was in progress.
        stage: &'static str,
    },
    /// The server's key differs from the recorded one.
    #[error(
        "{host}: HOST KEY CHANGED — the server offered {fingerprint}, but {file}:{line} records a different key. \
         Someone may be intercepting the connection, or the host was reinstalled. \
         Verify the new key out of band, then remove line {line} from {file}."
    )]
    HostKeyChanged {
        /// host or [host]:port.
        host: String,
        /// Offered key.
        fingerprint: String,
        /// known_hosts file.
        file: PathBuf,
        /// Line of the recorded key.
        line: usize,
    },
    /// The server's key is marked `@revoked`.
    #[error("{host}: host key {fingerprint} is marked @revoked in {file}:{line}")]
    HostKeyRevoked {
        /// host or [host]:port.
        host: String,
        /// Offered key.
        fingerprint: String,
        /// known_hosts file.
        file: PathBuf,
        /// Line.
        line: usize,
    },
    /// Unknown host in strict mode.
    #[error(
        "{host}: host key {fingerprint} is not in {file}. Verify it and add it \
         (`ssh-keyscan` output checked against the node's console), or re-run with \
         `--host-key-checking accept-new` to record keys of new hosts"
    )]
    HostKeyUnknown {
        /// host or [host]:port.
        host: String,
        /// Offered key.
        fingerprint: String,
        /// known_hosts file.
        file: PathBuf,
    },
    /// The known_hosts file could not be read or written.
    #[error("known_hosts {path}: {reason}")]
    KnownHosts {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Host certificates are not accepted.
    #[error(
        "{host}: the server presented a host certificate; kubedrill verifies plain host keys only"
    )]
    HostCertificate {
        /// Host.
        host: String,
    },
    /// A configured key file cannot be used.
    #[error("{host}: private key {path}: {reason}")]
    KeyFile {
        /// Host.
        host: String,
        /// Key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Every authentication method failed.
    #[error("{host}: authentication as `{user}` failed; tried: {}{}", tried.join("; "), hint.as_ref().map(|h| format!(". {h}")).unwrap_or_default())]
    Auth {
        /// Host.
        host: String,
        /// Login user.
        user: String,
        /// Methods tried, with outcomes.
        tried: Vec<String>,
        /// What to do.
        hint: Option<String>,
    },
    /// `sudo -n` refused.
    #[error(
        "{host}: `{user}` cannot run commands with `sudo -n` as {become_user}: {stderr}. Give {user} a NOPASSWD sudo rule, or log in as root"
    )]
    Sudo {
        /// Host.
        host: String,
        /// Login user.
        user: String,
        /// Target user.
        become_user: String,
        /// sudo's message.
        stderr: String,
    },
    /// A command ran longer than its limit.
    #[error(
        "{host}: `{command}` timed out after {after:?}{}",
        stderr_suffix(stderr)
    )]
    CommandTimeout {
        /// Host.
        host: String,
        /// Command label.
        command: String,
        /// Limit.
        after: Duration,
        /// Stderr so far (last lines; stdout's when stderr is empty and the command says
        /// [`Command::stdout_in_timeout`]), and how much output was dropped.
        stderr: String,
    },
    /// A command printed more on stdout than its [`OutputLimit`], and its stdout is parsed: a
    /// cut text is never handed to a parser.
    #[error(
        "{host}: `{command}` printed {received} bytes on stdout, more than the {limit} kept per command \
         ({dropped} bytes dropped); the output was not used"
    )]
    OutputTruncated {
        /// Host.
        host: String,
        /// Command label.
        command: String,
        /// Bytes received on stdout.
        received: u64,
        /// Bytes dropped.
        dropped: u64,
        /// The limit in force.
        limit: OutputLimit,
    },
    /// The connection dropped while a command ran (not retried: not idempotent).
    #[error("{host}: connection lost while running `{command}`; it may or may not have completed")]
    ConnectionLost {
        /// Host.
        host: String,
        /// Command label.
        command: String,
    },
    /// An uploaded file's checksum differed on the node.
    #[error(
        "{host}: upload to {path} failed its integrity check (sent sha256 {expected}): {detail}"
    )]
    Upload {
        /// Host.
        host: String,
        /// Destination.
        path: String,
        /// Our digest.
        expected: String,
        /// What the node said.
        detail: String,
    },
    /// The jump host could not open a tunnel.
    #[error("{host}: jump host {bastion} could not open a tunnel to {addr}: {reason}")]
    Tunnel {
        /// Target host.
        host: String,
        /// Bastion name.
        bastion: String,
        /// Target address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Protocol-level failure.
    #[error("{host}: SSH: {source}")]
    Protocol {
        /// Host.
        host: String,
        /// russh error.
        #[source]
        source: russh::Error,
    },
    /// An error from russh before the host is known (wrapped by [`Session`] with the host).
    #[error("SSH: {0}")]
    Russh(#[from] russh::Error),
}

fn stderr_suffix(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", s.trim())
    }
}

impl SshError {
    fn with_host(self, host: &str) -> Self {
        match self {
            SshError::Russh(source) => SshError::Protocol {
                host: host.to_string(),
                source,
            },
            other => other,
        }
    }

    /// The connection itself is gone (a reconnect may help).
    fn is_disconnect(&self) -> bool {
        match self {
            SshError::Russh(e) | SshError::Protocol { source: e, .. } => is_disconnect(e),
            _ => false,
        }
    }
}

fn is_disconnect(e: &russh::Error) -> bool {
    {
        matches!(
            e,
            russh::Error::Disconnect
                | russh::Error::HUP
                | russh::Error::SendError
                | russh::Error::KeepaliveTimeout
                | russh::Error::InactivityTimeout
                | russh::Error::IO(_)
        )
    }
}

/// russh callbacks: host-key verification.
pub struct Client {
    host: String,
    address: String,
    port: u16,
    policy: Arc<HostKeyPolicy>,
}

impl client::Handler for Client {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.policy.verify(&self.address, self.port, key).await?;
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(_) => Err(SshError::HostCertificate {
                host: self.host.clone(),
            }),
        }
    }
}

struct Conn {
    handle: Arc<Handle<Client>>,
    generation: u64,
}

/// An authenticated connection to one host, shared by every step (`Arc<Session>`).
pub struct Session {
    dest: Destination,
    via: Option<Arc<Session>>,
    opts: Arc<Options>,
    conn: Mutex<Conn>,
    channels: Semaphore,
    reconnects: AtomicU32,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("dest", &self.dest)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connect, verify the host key, authenticate, and (with become) check `sudo -n` works.
    pub async fn connect(
        dest: Destination,
        via: Option<Arc<Session>>,
        opts: Arc<Options>,
    ) -> Result<Arc<Session>, SshError> {
        let handle = open(&dest, via.as_deref(), &opts).await?;
        let s = Arc::new(Session {
            channels: Semaphore::new(opts.max_channels.max(1)),
            dest,
            via,
            opts,
            conn: Mutex::new(Conn {
                handle: Arc::new(handle),
                generation: 0,
            }),
            reconnects: AtomicU32::new(0),
        });
        if let Some(bu) = s.dest.become_user.clone() {
            let out = s
                .exec(&Command::new("true").privileged().label("sudo -n true"))
                .await?;
            if !out.success() {
                return Err(SshError::Sudo {
                    host: s.dest.name.clone(),
                    user: s.dest.user.clone(),
                    become_user: bu,
                    stderr: out.stderr_tail(3),
                });
            }
        }
        Ok(s)
    }

    /// Where this session goes.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// How many times the connection was re-established.
    pub fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::Relaxed)
    }

    async fn current(&self) -> (Arc<Handle<Client>>, u64) {
        let c = self.conn.lock().await;
        (c.handle.clone(), c.generation)
    }

    /// Replace a dropped connection, once per drop (concurrent callers share the new one).
    async fn reconnect(&self, seen: u64) -> Result<Arc<Handle<Client>>, SshError> {
        let mut c = self.conn.lock().await;
        if c.generation != seen {
            return Ok(c.handle.clone());
        }
        // Boxed: a jump host's reconnect may itself open a connection through a jump host.
        let h = Arc::new(Box::pin(open(&self.dest, self.via.as_deref(), &self.opts)).await?);
        c.handle = h.clone();
        c.generation += 1;
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(h)
    }

    /// Run a command; a non-zero exit is an `Ok(Output)` (callers decide), transport problems
    /// are errors. A dropped connection is re-established once; an idempotent command is re-run.
    pub async fn exec(&self, cmd: &Command) -> Result<Output, SshError> {
        let _permit = self
            .channels
            .acquire()
            .await
            .map_err(|_| SshError::ConnectionLost {
                host: self.dest.name.clone(),
                command: cmd.describe(),
            })?;
        let line = shell::wrap(
            &cmd.script,
            if cmd.privileged {
                self.dest.become_user.as_deref()
            } else {
                None
            },
        );
        let (handle, generation) = self.current().await;
        let first = if handle.is_closed() {
            Err(Attempt::NotStarted(SshError::Russh(
                russh::Error::Disconnect,
            )))
        } else {
            self.run_once(&handle, &line, cmd).await
        };
        match first {
            Ok(out) => Ok(out),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::NotStarted(e)) if e.is_disconnect() => {
                let h = self.reconnect(generation).await?;
                self.run_once(&h, &line, cmd)
                    .await
                    .map_err(Attempt::into_error)
            }
            Err(Attempt::Dropped) if cmd.retry_on_drop => {
                let h = self.reconnect(generation).await?;
                self.run_once(&h, &line, cmd)
                    .await
                    .map_err(Attempt::into_error)
            }
            Err(Attempt::NotStarted(e)) => Err(e.with_host(&self.dest.name)),
            Err(Attempt::Dropped) => {
                // Re-establish for the next step, but report this command as lost.
                let _ = self.reconnect(generation).await;
                Err(SshError::ConnectionLost {
                    host: self.dest.name.clone(),
                    command: cmd.describe(),
                })
            }
        }
    }

    async fn run_once(
        &self,
        handle: &Handle<Client>,
        line: &str,
        cmd: &Command,
    ) -> Result<Output, Attempt> {
        let host = &self.dest.name;
        let start = Instant::now();
        let limit = cmd.timeout.unwrap_or(self.opts.command_timeout);
        // One deadline for the whole exchange: a node that never confirms the channel, never
        // reads its stdin or never closes is stopped by the same limit as a slow command.
        let deadline = tokio::time::Instant::now() + limit;
        let mut stdout = Capture::new(cmd.stdout_limit);
        let mut stderr = Capture::new(cmd.stderr_limit);
        let timed_out = |stderr: &Capture, stdout: &Capture| {
            let mut tail = tail_lines(&String::from_utf8_lossy(&stderr.tail_or_head()), 5);
            if tail.trim().is_empty() && cmd.stdout_in_timeout {
                tail = tail_lines(&String::from_utf8_lossy(&stdout.tail_or_head()), 5);
            }
            let dropped = stdout.dropped + stderr.dropped;
            if dropped > 0 {
                let note = format!(
                    "{} bytes of output received, {}",
                    stdout.received() + stderr.received(),
                    dropped_marker(dropped)
                );
                tail = if tail.is_empty() {
                    note
                } else {
                    format!("{tail}\n{note}")
                };
            }
            Attempt::Failed(SshError::CommandTimeout {
                host: host.clone(),
                command: cmd.describe(),
                after: limit,
                stderr: tail,
            })
        };

        let mut ch = match tokio::time::timeout_at(deadline, handle.channel_open_session()).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(Attempt::NotStarted(SshError::Russh(e))),
            Err(_) => return Err(timed_out(&stderr, &stdout)),
        };
        let started = async {
            ch.exec(true, line)
                .await
                .map_err(|e| Attempt::NotStarted(SshError::Russh(e)))?;
            if let Some(data) = &cmd.stdin {
                ch.data_bytes(data.as_ref().clone())
                    .await
                    .map_err(|_| Attempt::Dropped)?;
            }
            ch.eof().await.map_err(|_| Attempt::Dropped)
        };
        match tokio::time::timeout_at(deadline, started).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                abandon(&ch).await;
                return Err(timed_out(&stderr, &stdout));
            }
        }

        let mut status = None;
        let mut signal = None;
        let mut finished = false;
        let collect = async {
            // Read until the channel closes: exit-status may come before the last data. Past
            // the limits, bytes are counted and dropped, never buffered.
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => stdout.push(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => stderr.push(&data),
                    ChannelMsg::ExitStatus { exit_status } => {
                        status = Some(exit_status);
                        finished = true;
                    }
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        signal = Some(format!("{signal_name:?}"));
                        finished = true;
                    }
                    ChannelMsg::Failure => {
                        // The server refused the exec request (e.g. MaxSessions).
                        return Err(Attempt::Failed(SshError::Protocol {
                            host: host.clone(),
                            source: russh::Error::RequestDenied,
                        }));
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        match tokio::time::timeout_at(deadline, collect).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                abandon(&ch).await;
                return Err(timed_out(&stderr, &stdout));
            }
        }
        if !finished {
            return Err(Attempt::Dropped);
        }
        if stdout.dropped > 0 && !cmd.lossy_stdout {
            return Err(Attempt::Failed(SshError::OutputTruncated {
                host: host.clone(),
                command: cmd.describe(),
                received: stdout.received(),
                dropped: stdout.dropped,
                limit: cmd.stdout_limit,
            }));
        }
        let (stdout, stdout_gap, stdout_dropped) = stdout.finish();
        let (stderr, stderr_gap, stderr_dropped) = stderr.finish();
        let out = Output {
            status,
            signal,
            stdout,
            stderr,
            stdout_dropped,
            stderr_dropped,
            stdout_gap,
            stderr_gap,
            duration: start.elapsed(),
        };
        if cmd.privileged
            && out.status == Some(1)
            && let Some(bu) = &self.dest.become_user
            && shell::is_sudo_denied(&out.stderr_text())
        {
            return Err(Attempt::Failed(SshError::Sudo {
                host: host.clone(),
                user: self.dest.user.clone(),
                become_user: bu.clone(),
                stderr: out.stderr_tail(3),
            }));
        }
        Ok(out)
    }

    /// Write `data` to `path` on the node with `mode`, atomically (temp file + rename), and check
    /// its SHA-256 there before the rename. Privileged when the host uses become.
    pub async fn upload(
        &self,
        data: &[u8],
        path: &str,
        mode: u32,
        privileged: bool,
    ) -> Result<Output, SshError> {
        let expected = hex(&Sha256::digest(data));
        let q = shell::quote(path);
        let script = format!(
            "set -e; umask 077; tmp=$(mktemp {q}.kubedrill.XXXXXX); \
             trap 'rm -f \"$tmp\"' EXIT; cat > \"$tmp\"; \
             got=$(sha256sum \"$tmp\" | cut -d' ' -f1); \
             if [ \"$got\" != {expected} ]; then echo \"sha256 on node: $got\" >&2; exit 97; fi; \
             chmod {mode:o} \"$tmp\"; mv -f \"$tmp\" {q}; trap - EXIT"
        );
        let mut cmd = Command::new(script)
            .stdin(data.to_vec())
            .label(format!("upload {path} ({} bytes)", data.len()))
            .idempotent();
        if privileged {
            cmd = cmd.privileged();
        }
        let out = self.exec(&cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(SshError::Upload {
                host: self.dest.name.clone(),
                path: path.to_string(),
                expected,
                detail: if out.status == Some(97) {
                    out.stderr_tail(1)
                } else {
                    format!("exit {:?}: {}", out.status, out.stderr_tail(3))
                },
            })
        }
    }

    /// Open a `direct-tcpip` channel from this host to `addr:port` (for jump hosts and tunnels).
    pub async fn tunnel(
        &self,
        addr: &str,
        port: u16,
    ) -> Result<russh::Channel<client::Msg>, SshError> {
        let (handle, generation) = self.current().await;
        match handle
            .channel_open_direct_tcpip(addr, port as u32, "127.0.0.1", 0)
            .await
        {
            Ok(ch) => Ok(ch),
            Err(e) if is_disconnect(&e) || handle.is_closed() => {
                let h = self.reconnect(generation).await?;
                h.channel_open_direct_tcpip(addr, port as u32, "127.0.0.1", 0)
                    .await
                    .map_err(|e| SshError::Protocol {
                        host: self.dest.name.clone(),
                        source: e,
                    })
            }
            Err(e) => Err(SshError::Protocol {
                host: self.dest.name.clone(),
                source: e,
            }),
        }
    }

    /// Close the connection politely.
    pub async fn close(&self) {
        let (h, _) = self.current().await;
        let _ = h
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Stop a command that ran out of time: kill it and close the channel, without waiting on a
/// node that may not answer (each step has its own short limit).
async fn abandon(ch: &russh::Channel<client::Msg>) {
    let grace = Duration::from_secs(2);
    let _ = tokio::time::timeout(grace, ch.signal(Sig::KILL)).await;
    let _ = tokio::time::timeout(grace, ch.close()).await;
}

enum Attempt {
    /// The channel never started: safe to retry after reconnecting.
    NotStarted(SshError),
    /// The connection dropped mid-command.
    Dropped,
    /// A definite failure.
    Failed(SshError),
}

impl Attempt {
    fn into_error(self) -> SshError {
        match self {
            Attempt::NotStarted(e) | Attempt::Failed(e) => e,
            Attempt::Dropped => SshError::Russh(russh::Error::Disconnect),
        }
    }
}

async fn open(
    dest: &Destination,
    via: Option<&Session>,
    opts: &Options,
) -> Result<Handle<Client>, SshError> {
    let handler = Client {
        host: dest.name.clone(),
        address: dest.address.clone(),
        port: dest.port,
        policy: opts.host_keys.clone(),
    };
    let config = opts.russh_config();
    let addr = format!("{}:{}", dest.address, dest.port);
    let host = dest.name.clone();
    let limit = opts.connect_timeout;
    let timeout = |stage| SshError::ConnectTimeout {
        host: host.clone(),
        after: limit,
        stage,
    };
    let deadline = tokio::time::Instant::now() + limit;

    let mut handle = match via {
        None => {
            let tcp = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(&addr))
                .await
                .map_err(|_| timeout("TCP connect"))?
                .map_err(|e| SshError::Connect {
                    host: host.clone(),
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            let _ = tcp.set_nodelay(true);
            tokio::time::timeout_at(deadline, client::connect_stream(config, tcp, handler))
                .await
                .map_err(|_| timeout("SSH handshake"))?
                .map_err(|e| e.with_host(&host))?
        }
        Some(bastion) => {
            let ch = tokio::time::timeout_at(deadline, bastion.tunnel(&dest.address, dest.port))
                .await
                .map_err(|_| timeout("tunnel through jump host"))?
                .map_err(|e| SshError::Tunnel {
                    host: host.clone(),
                    bastion: bastion.dest.name.clone(),
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            tokio::time::timeout_at(
                deadline,
                client::connect_stream(config, ch.into_stream(), handler),
            )
            .await
            .map_err(|_| timeout("SSH handshake through jump host"))?
            .map_err(|e| e.with_host(&host))?
        }
    };
    tokio::time::timeout_at(
        deadline,
        auth::authenticate(
            &mut handle,
            &dest.name,
            &dest.user,
            dest.key.as_deref(),
            &opts.identities,
            opts.agent.as_deref(),
        ),
    )
    .await
    .map_err(|_| timeout("authentication"))?
    .map_err(|e| e.with_host(&host))?;
    Ok(handle)
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(limit: OutputLimit, chunks: &[&[u8]]) -> (Vec<u8>, usize, u64) {
        let mut c = Capture::new(limit);
        for ch in chunks {
            c.push(ch);
        }
        c.finish()
    }

    #[test]
    fn capture_keeps_everything_within_the_limit() {
        let l = OutputLimit { head: 4, tail: 3 };
        assert_eq!(
            capture(l, &[b"ab", b"cde", b"fg"]),
            (b"abcdefg".to_vec(), 4, 0)
        );
    }

    #[test]
    fn capture_keeps_head_and_tail_and_counts_the_rest() {
        let l = OutputLimit { head: 4, tail: 3 };
        // One big chunk, and the same bytes trickling in one at a time: same result.
        let all = b"0123456789";
        assert_eq!(capture(l, &[all]), (b"0123789".to_vec(), 4, 3));
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(capture(l, &bytes), (b"0123789".to_vec(), 4, 3));
        let l = OutputLimit { head: 2, tail: 0 };
        assert_eq!(capture(l, &[b"abc", b"de"]), (b"ab".to_vec(), 2, 3));
    }

    #[test]
    fn shown_text_marks_the_gap() {
        let l = OutputLimit { head: 4, tail: 4 };
        let (stderr, gap, dropped) = capture(l, &[b"one\ntwo\nthree\nfour\n"]);
        let o = Output {
            status: Some(1),
            signal: None,
            stdout: Vec::new(),
            stderr,
            stdout_dropped: 0,
            stderr_dropped: dropped,
            stdout_gap: 0,
            stderr_gap: gap,
            duration: Duration::ZERO,
        };
        assert_eq!(o.stderr_text(), "one\n[… 11 bytes dropped …]\nour\n");
        assert!(!o.is_complete());
        assert_eq!(o.stderr_tail(1), "[… 11 bytes dropped …]\nour");
    }

    #[test]
    fn limits_read_well() {
        assert_eq!(
            OutputLimit::STDOUT.to_string(),
            "1.25 MiB (first 1 MiB + last 256 KiB)"
        );
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1_500_000_000), "1.4 GiB");
    }
}
