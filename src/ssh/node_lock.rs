//! A lock on each node for the duration of an apply, reset or drill (as k0sctl does), so that
//! two kubedrill processes — on this machine or on two admins' machines — never change one node
//! at once.
//!
//! Over the host's existing connection, one channel runs
//! `flock -n <dir>/node.lock sh -c '…; echo LOCKED; cat >/dev/null'` and stays open for the
//! run. The holder ([`Holder`]: PID, machine, start time, command) is written beside it in
//! `<dir>/node.lock.holder`. Releasing sends EOF on the channel; when the connection drops
//! (kubedrill crashed, the network went away) sshd closes the channel's stdin too, `cat` ends,
//! the holder file is removed and `flock` lets go — so a crash never leaves a node locked for
//! longer than it takes sshd to notice the dead connection (its keep-alive), and at once when
//! the holder process is killed (the kernel closes its socket).
//!
//! `flock(1)` is util-linux's (in every Debian and Ubuntu image, `Essential: yes`); a node
//! without it fails with a message saying so.

use super::{Session, SshError, shell};
use crate::lock::{HOLDER_MAX_BYTES, Holder, HolderText};
use russh::ChannelMsg;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;

/// Where the node lock lives on every node (root's; kubedrill keeps its node files here).
pub const NODE_LOCK_DIR: &str = "/var/lib/kubedrill";

/// The lock file's name in that directory; the holder record is `<name>.holder`.
pub const NODE_LOCK_FILE: &str = "node.lock";

/// How long taking the lock may take on a node (it never waits for another holder).
const TAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a release waits for the node to confirm the lock is gone.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`lock_all`] keeps trying a node whose lock is held: a holder that was just killed
/// lets go only once the node's sshd has seen its connection close, which on a slow (emulated)
/// guest can take a moment — an apply killed and run again at once must not fail for that.
pub const NODE_LOCK_GRACE: Duration = Duration::from_secs(5);

/// Exit status of `flock -n -E` when another process holds the lock.
const HELD_STATUS: u32 = 75;

/// Why a node could not be locked.
#[derive(Debug, Error)]
pub enum NodeLockError {
    /// Another kubedrill holds the node.
    #[error(
        "node {host} is locked by {holder}; wait for it or, if that process is gone, run again (lock {path} on the node)"
    )]
    Held {
        /// The node.
        host: String,
        /// The holder as its record on the node names it.
        holder: HolderText,
        /// The lock file on the node.
        path: String,
    },
    /// The lock command failed (no `flock`, no permission, …).
    #[error("node {host}: cannot take the node lock {path}: {detail}")]
    Failed {
        /// The node.
        host: String,
        /// The lock file on the node.
        path: String,
        /// What the node said (escaped, shortened).
        detail: String,
    },
    /// The connection.
    #[error(transparent)]
    Ssh(#[from] SshError),
}

/// A node lock held over an open channel. Dropping it releases the lock as soon as the runtime
/// runs the release (at the latest when the connection closes); [`NodeLock::release`] waits
/// until the node confirms.
#[derive(Debug)]
pub struct NodeLock {
    host: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    lost: Arc<AtomicBool>,
}

impl NodeLock {
    /// The node.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// False once the lock's channel closed without a release (the connection dropped: a
    /// reconnected session does not hold the lock any more).
    pub fn is_held(&self) -> bool {
        !self.lost.load(Ordering::Relaxed)
    }

    /// Release the lock and wait (bounded) until the node has let go.
    pub async fn release(mut self) {
        self.stop.take();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, t).await;
        }
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which sends EOF: the node's `cat` ends.
        self.stop.take();
    }
}

/// The script run on the node (as root): take the lock without waiting, record the holder, say LOCKED,
/// then hold until stdin ends; or report the current holder.
pub fn lock_script(dir: &str, record: &str) -> String {
    let d = shell::quote(dir);
    let f = shell::quote(&format!("{dir}/{NODE_LOCK_FILE}"));
    let rec = shell::quote(record);
    format!(
        "umask 022; mkdir -p {d} || exit 71; umask 077\n\
         command -v flock >/dev/null 2>&1 || {{ echo 'flock(1) is missing on this node (package util-linux)' >&2; exit 72; }}\n\
         flock -n -E {HELD_STATUS} {f} sh -c 'printf \"%s\" \"$1\" > \"$2.holder.tmp\" && mv -f \"$2.holder.tmp\" \"$2.holder\" || exit 73; echo LOCKED; cat >/dev/null; rm -f \"$2.holder\"' kubedrill-node-lock {rec} {f}\n\
         rc=$?\n\
         if [ \"$rc\" = {HELD_STATUS} ]; then echo HELD; head -c {HOLDER_MAX_BYTES} {f}.holder 2>/dev/null; fi\n\
         exit \"$rc\"\n"
    )
}

impl Session {
    /// Take the node lock in `dir` (normally [`NODE_LOCK_DIR`]) for `holder`, privileged when
    /// the host uses become. Fails at once, naming the holder, when another process holds it.
    pub async fn lock_node(&self, dir: &str, holder: &Holder) -> Result<NodeLock, NodeLockError> {
        let host = self.dest.name.clone();
        let path = format!("{dir}/{NODE_LOCK_FILE}");
        let line = shell::wrap(
            &lock_script(dir, &holder.to_record()),
            self.dest.become_user.as_deref(),
        );
        let (handle, generation) = self.current().await;
        let mut ch = match handle.channel_open_session().await {
            Ok(ch) => ch,
            Err(e) if super::is_disconnect(&e) || handle.is_closed() => self
                .reconnect(generation)
                .await?
                .channel_open_session()
                .await
                .map_err(|e| SshError::Russh(e).with_host(&host))?,
            Err(e) => return Err(SshError::Russh(e).with_host(&host).into()),
        };
        ch.exec(true, line)
            .await
            .map_err(|e| SshError::Russh(e).with_host(&host))?;

        let limit = 2 * HOLDER_MAX_BYTES as usize;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut status = None;
        let locked = tokio::time::timeout(TAKE_TIMEOUT, async {
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        keep(&mut out, &data, limit);
                        if out.starts_with(b"LOCKED\n") {
                            return true;
                        }
                    }
                    ChannelMsg::ExtendedData { data, .. } => keep(&mut err, &data, limit),
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    _ => {}
                }
            }
            false
        })
        .await;
        match locked {
            Ok(true) => {}
            Ok(false) if status == Some(HELD_STATUS) => {
                let text = String::from_utf8_lossy(&out);
                let record = text.strip_prefix("HELD\n").unwrap_or_default();
                return Err(NodeLockError::Held {
                    host,
                    holder: HolderText(Holder::parse(record).map(Box::new)),
                    path,
                });
            }
            Ok(false) => {
                let said = String::from_utf8_lossy(&err);
                return Err(NodeLockError::Failed {
                    host,
                    path,
                    detail: format!(
                        "exit {}: {}",
                        status.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                        crate::lock::clean(said.trim(), 300)
                    ),
                });
            }
            Err(_) => {
                let _ = ch.close().await;
                return Err(NodeLockError::Failed {
                    host,
                    path,
                    detail: format!("no answer within {TAKE_TIMEOUT:?}"),
                });
            }
        }

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let task = tokio::spawn(async move {
            let closed = tokio::select! {
                _ = stopped => false,
                _ = async { while ch.wait().await.is_some() {} } => true,
            };
            if closed {
                flag.store(true, Ordering::Relaxed);
                return;
            }
            // EOF ends `cat` on the node; its exit status says the lock is gone.
            if ch.eof().await.is_ok() {
                let _ = tokio::time::timeout(RELEASE_TIMEOUT, async {
                    while let Some(msg) = ch.wait().await {
                        if matches!(msg, ChannelMsg::ExitStatus { .. }) {
                            break;
                        }
                    }
                })
                .await;
            }
            let _ = ch.close().await;
        });
        Ok(NodeLock {
            host,
            stop: Some(stop),
            task: Some(task),
            lost,
        })
    }
}

impl Session {
    /// [`Session::lock_node`], trying again while the lock is held for up to `grace`.
    pub async fn lock_node_within(
        &self,
        dir: &str,
        holder: &Holder,
        grace: Duration,
    ) -> Result<NodeLock, NodeLockError> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match self.lock_node(dir, holder).await {
                Err(NodeLockError::Held { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                r => return r,
            }
        }
    }
}

fn keep(buf: &mut Vec<u8>, data: &[u8], limit: usize) {
    let room = limit.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Lock every node (in parallel) in [`NODE_LOCK_DIR`] for this process, allowing
/// [`NODE_LOCK_GRACE`]: the locks taken, and each host that could not be locked with why.
pub async fn lock_all(
    sessions: &BTreeMap<String, Arc<Session>>,
) -> (Vec<NodeLock>, Vec<(String, NodeLockError)>) {
    lock_all_in(sessions, NODE_LOCK_DIR, &Holder::current(), NODE_LOCK_GRACE).await
}

/// [`lock_all`] with another directory, holder and grace (tests).
pub async fn lock_all_in(
    sessions: &BTreeMap<String, Arc<Session>>,
    dir: &str,
    holder: &Holder,
    grace: Duration,
) -> (Vec<NodeLock>, Vec<(String, NodeLockError)>) {
    let results = futures::future::join_all(sessions.iter().map(|(host, s)| async move {
        (host.clone(), s.lock_node_within(dir, holder, grace).await)
    }))
    .await;
    let (mut locks, mut failed) = (Vec::new(), Vec::new());
    for (host, r) in results {
        match r {
            Ok(l) => locks.push(l),
            Err(e) => failed.push((host, e)),
        }
    }
    (locks, failed)
}

/// Release every lock, waiting for each node (in parallel).
pub async fn release_all(locks: Vec<NodeLock>) {
    futures::future::join_all(locks.into_iter().map(NodeLock::release)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_the_record_and_reports_the_holder() {
        let h = Holder {
            pid: 7,
            host: "admin".into(),
            since: "2026-01-01T00:00:00Z".into(),
            command: "kubedrill apply -i 'x y'".into(),
        };
        let s = lock_script("/var/lib/kubedrill", &h.to_record());
        assert!(s.contains("flock -n -E 75 /var/lib/kubedrill/node.lock sh -c"));
        assert!(s.contains("'pid=7\nhost=admin"), "{s}");
        assert!(s.contains("'\\''x y'\\''"), "{s}");
        assert!(s.contains("head -c 4096 /var/lib/kubedrill/node.lock.holder"));
    }
}
