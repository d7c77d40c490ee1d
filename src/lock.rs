//! Exclusive locks so that two kubedrill processes never work on one cluster or one lab at once.
//!
//! Local locks are `flock(2)` locks on files under `<state>/locks/`: `lab-<lab>.lock` and
//! `cluster-<cluster id>.lock` (the id is the name of the cluster's state directory, see
//! [`crate::layout::cluster`]). They are taken without waiting — a second process fails at once,
//! naming the holder — and the kernel drops them when the holder exits, however it exits, so a
//! crash never leaves a stale lock. The files live outside the directories they protect because
//! `lab down` removes the lab's directory: a lock file deleted while held would let a later
//! process lock a new file of the same name while an earlier one still holds the old one.
//!
//! The lock file holds its holder ([`Holder`]: PID, machine, start time, command line), written
//! after the lock is taken; the file is never removed, only rewritten by the next holder.
//!
//! The lock on each node, held for the duration of an apply, reset or drill, is in
//! [`crate::ssh::node_lock`].

use crate::layout::cluster::ClusterState;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// The most of a lock or holder file that is read: a holder record is a few hundred bytes.
pub const HOLDER_MAX_BYTES: u64 = 4096;

/// Longest command line kept in a holder record (characters).
const COMMAND_MAX_CHARS: usize = 240;

/// Who holds a lock: enough for a person to find the process and judge whether it is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id on `host`.
    pub pid: u32,
    /// The machine the process runs on (its host name).
    pub host: String,
    /// When the lock was taken (RFC 3339, UTC).
    pub since: String,
    /// The holder's command line (shortened, control characters escaped).
    pub command: String,
}

impl Holder {
    /// This process, now.
    pub fn current() -> Holder {
        let args: Vec<String> = std::env::args_os()
            .enumerate()
            .map(|(i, a)| {
                let s = a.to_string_lossy().into_owned();
                // argv[0] is often a long path; the program's name is enough to recognise it.
                if i == 0 {
                    Path::new(&s)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or(s)
                } else {
                    s
                }
            })
            .collect();
        Holder {
            pid: std::process::id(),
            host: local_host_name(),
            since: crate::images::now_rfc3339(),
            command: clean(&args.join(" "), COMMAND_MAX_CHARS),
        }
    }

    /// The record written into a lock file: `key=value` lines.
    pub fn to_record(&self) -> String {
        format!(
            "pid={}\nhost={}\nsince={}\ncommand={}\n",
            self.pid,
            clean(&self.host, 120),
            clean(&self.since, 40),
            clean(&self.command, COMMAND_MAX_CHARS)
        )
    }

    /// Read a record back; `None` when it is empty or damaged (e.g. written by nobody yet).
    /// Every text field is shortened and has its control characters escaped: a record may come
    /// from a node that is not trusted.
    pub fn parse(text: &str) -> Option<Holder> {
        let mut pid = None;
        let (mut host, mut since, mut command) = (String::new(), String::new(), String::new());
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "pid" => pid = v.trim().parse::<u32>().ok(),
                "host" => host = clean(v, 120),
                "since" => since = clean(v, 40),
                "command" => command = clean(v, COMMAND_MAX_CHARS),
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            host,
            since,
            command,
        })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PID {}", self.pid)?;
        if !self.host.is_empty() {
            write!(f, " on {}", self.host)?;
        }
        write!(f, " ({}) since {}", self.command, self.since)
    }
}

/// How a lock's holder is described in an error: the record, or that there is none yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderText(pub Option<Box<Holder>>);

impl std::fmt::Display for HolderText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(h) => h.fmt(f),
            None => f.write_str("another process (it has not recorded itself yet)"),
        }
    }
}

/// Why a lock was not taken.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "{what} is locked by {holder}; wait for it or, if that process is gone, run again (lock file {})",
        path.display()
    )]
    Held {
        /// `cluster "name"` or `lab "name"`.
        what: String,
        /// The holder, as its lock file names it.
        holder: HolderText,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be created, opened or locked.
    #[error("{what}: lock file {}: {source}", path.display())]
    Io {
        /// What was being locked.
        what: String,
        /// The lock file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Something other than a regular file is where the lock file goes.
    #[error("{what}: {} is not a regular file; kubedrill only locks its own files", path.display())]
    NotRegular {
        /// What was being locked.
        what: String,
        /// The path.
        path: PathBuf,
    },
}

impl LockError {
    /// The holder named by a [`LockError::Held`].
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            LockError::Held { holder, .. } => holder.0.as_deref(),
            _ => None,
        }
    }
}

/// A held local lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Closing the file releases the lock; clear the record first so that a reader never
        // takes a finished process for the holder.
        let _ = self.file.set_len(0);
    }
}

/// `<state>/locks`: every local lock file.
pub fn locks_dir() -> PathBuf {
    crate::layout::locks_dir()
}

/// Lock a lab (`lab up|down|reset|snapshot`, `drill run`, and apply/reset on its inventory).
pub fn lab(name: &str) -> Result<StateLock, LockError> {
    acquire(
        &locks_dir().join(format!("lab-{}.lock", file_safe(name))),
        &format!("lab \"{}\"", clean(name, 120)),
    )
}

/// The locks of a cluster: its lab's first when the inventory is a lab's own (so that `lab
/// reset` cannot revert the VMs under an apply), then the cluster's.
#[derive(Debug)]
pub struct ClusterLock {
    /// The lab's lock, when the cluster runs on a lab.
    pub lab: Option<StateLock>,
    /// The cluster's lock.
    pub cluster: StateLock,
}

/// Lock a cluster (`apply`, `reset`, `drill run`), and its lab when it has one.
pub fn cluster(state: &ClusterState) -> Result<ClusterLock, LockError> {
    let lab = state.lab.as_deref().map(lab).transpose()?;
    let cluster = acquire(
        &locks_dir().join(format!("cluster-{}.lock", state.id)),
        &format!("cluster \"{}\"", clean(&state.label, 120)),
    )?;
    Ok(ClusterLock { lab, cluster })
}

/// Take the exclusive lock on `path` without waiting, and record this process as its holder.
pub fn acquire(path: &Path, what: &str) -> Result<StateLock, LockError> {
    let io = |source| LockError::Io {
        what: what.to_owned(),
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    // O_NOFOLLOW: never lock (or truncate) a file a symlink points to; O_NONBLOCK: a FIFO put
    // there does not hang the open (it is refused below).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                LockError::NotRegular {
                    what: what.to_owned(),
                    path: path.to_path_buf(),
                }
            } else {
                io(e)
            }
        })?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(LockError::NotRegular {
            what: what.to_owned(),
            path: path.to_path_buf(),
        });
    }
    loop {
        // SAFETY: flock on a file descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {
                return Err(LockError::Held {
                    what: what.to_owned(),
                    holder: HolderText(read_holder(&mut file).map(Box::new)),
                    path: path.to_path_buf(),
                });
            }
            _ => return Err(io(e)),
        }
    }
    let record = Holder::current().to_record();
    file.set_len(0).map_err(io)?;
    file.write_all_at(record.as_bytes(), 0).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(StateLock {
        file,
        path: path.to_path_buf(),
    })
}

/// The holder's record; the holder writes it just after locking, so an empty file is read again
/// a few times before giving up.
fn read_holder(file: &mut File) -> Option<Holder> {
    for _ in 0..10 {
        let mut buf = Vec::new();
        let mut head = [0u8; HOLDER_MAX_BYTES as usize];
        if let Ok(n) = file.read_at(&mut head, 0) {
            buf.extend_from_slice(&head[..n]);
        }
        if let Some(h) = Holder::parse(&String::from_utf8_lossy(&buf)) {
            return Some(h);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// This machine's host name.
pub fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| clean(s.trim(), 120))
        .unwrap_or_default()
}

/// `s` on one line, at most `max` characters, with control characters escaped (`\u{1b}`).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A name as one file-name component: letters, digits, `-`, `_` and `.` (not leading) stay,
/// anything else becomes `%XX`, so that no name reaches outside `<state>/locks`.
pub fn file_safe(name: &str) -> String {
    let mut out = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_round_trips_and_is_cleaned() {
        let h = Holder {
            pid: 42,
            host: "admin\u{1b}[2J".into(),
            since: "2026-01-02T03:10:02Z".into(),
            command: "kubedrill apply -i inv\nrm -rf /".into(),
        };
        let back = Holder::parse(&h.to_record()).expect("parses");
        assert_eq!(back.pid, 42);
        assert_eq!(back.host, "admin\\u{1b}[2J");
        assert_eq!(back.command, "kubedrill apply -i inv\\nrm -rf /");
        assert!(Holder::parse("").is_none());
        assert!(Holder::parse("pid=x\n").is_none());
    }

    #[test]
    fn names_stay_one_component() {
        assert_eq!(file_safe("quickstart"), "quickstart");
        assert_eq!(file_safe("../../etc"), "%2E.%2F..%2Fetc");
        assert_eq!(file_safe(""), "%");
        assert!(!file_safe("/a/b").contains('/'));
    }

    #[test]
    fn second_lock_in_the_same_process_is_refused_then_free_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/cluster-a.lock");
        let first = acquire(&p, "cluster \"a\"").expect("first");
        let err = acquire(&p, "cluster \"a\"").expect_err("second");
        assert_eq!(err.holder().map(|h| h.pid), Some(std::process::id()));
        let msg = err.to_string();
        assert!(
            msg.starts_with("cluster \"a\" is locked by PID ") && msg.contains("run again"),
            "{msg}"
        );
        drop(first);
        acquire(&p, "cluster \"a\"").expect("free again");
    }

    #[test]
    fn refuses_symlinks_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("l.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            acquire(&link, "lab \"l\""),
            Err(LockError::NotRegular { .. })
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let fifo = dir.path().join("f.lock");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            acquire(&fifo, "lab \"f\""),
            Err(LockError::NotRegular { .. })
        ));
    }
}
