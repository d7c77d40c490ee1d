//! Concurrent runs (issue 12, class 5) with real processes: a second `kubedrill` on the same
//! cluster or lab fails at once naming the holder's PID and writes nothing; a SIGKILLed holder
//! leaves no stale lock; two inventories in directories of the same name get their own state;
//! and the node lock over a real sshd on 127.0.1.x holds against a second session until the
//! first lets go, is released, or its connection dies.
//!
//! The SSH peer of the local-lock tests is a TCP listener on 127.0.0.1 that accepts and never
//! answers: the holder sits in its SSH handshake (holding its locks) until it is killed.

use crate::common;

use common::sshd::{self, SshLab};
use kubedrill::lock::Holder;
use kubedrill::ssh::node_lock::{self, NodeLockError};
use kubedrill::ssh::{HostKeyMode, HostKeyPolicy, Options, Session, shell};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback SSH "server" that accepts connections and never says anything.
struct BlackHole {
    port: u16,
    accepted: Arc<AtomicUsize>,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = l.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepted.clone(), held.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                h.lock().expect("lock").push(s);
                a.fetch_add(1, Ordering::SeqCst);
            }
        });
        BlackHole {
            port,
            accepted,
            _held: held,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A `kubedrill` child process, SIGKILLed and reaped when dropped (also on a failed assert).
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubedrill(args: &[&str], state: &Path) -> Command {
    let mut c = common::kubedrill_command();
    c.args(args)
        .env("KUBEDRILL_STATE_DIR", state)
        .stdin(Stdio::null());
    c
}

fn run(args: &[&str], state: &Path) -> Output {
    kubedrill(args, state).output().expect("run kubedrill")
}

fn spawn(args: &[&str], state: &Path, log: &Path) -> Proc {
    let f = std::fs::File::create(log).expect("log file");
    let child = kubedrill(args, state)
        .stdout(f.try_clone().expect("dup"))
        .stderr(f)
        .spawn()
        .expect("spawn kubedrill");
    Proc(child)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every file under `dir` with its content.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let content = std::fs::read(&p).unwrap_or_default();
                out.insert(p, content);
            }
        }
    }
    out
}

/// Wait until `what` holds, or fail with the holder's log.
#[track_caller]
fn wait_for(what: &str, log: &Path, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out waiting for {what}; holder's output:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The lock file under `<state>/locks` whose name starts with `prefix`.
fn lock_file(state: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(state.join("locks"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
}

fn holds(state: &Path, prefix: &str, pid: u32) -> bool {
    lock_file(state, prefix)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|t| t.contains(&format!("pid={pid}\n")))
}

/// An inventory at `<root>/<rel>/hosts.yaml` whose one node is the black hole.
fn inventory(root: &Path, rel: &str, port: u16) -> PathBuf {
    let dir = root.join(rel);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let kh = root.join("known_hosts");
    std::fs::write(&kh, "").expect("known_hosts");
    let inv = dir.join("hosts.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    kubedrill_known_hosts: {}\n  children:\n    kube_control_plane:\n      hosts:\n        cp1: {{ansible_host: 127.0.0.1, ansible_port: {port}, ip: 10.1.0.1}}\n",
            kh.display()
        ),
    )
    .expect("inventory");
    inv
}

#[track_caller]
fn assert_locked_by(o: &Output, what: &str, pid: u32, command: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{what} is locked by PID {pid} ")) && err.contains(command),
        "expected `{what}` locked by PID {pid} ({command}):\n{err}"
    );
    assert!(
        err.contains("wait for it or, if that process is gone, run again"),
        "{err}"
    );
}

#[test]
fn a_second_apply_or_reset_fails_naming_the_holder_and_writes_nothing_then_a_killed_holder_frees_the_cluster()
 {
    let t = tempfile::tempdir().expect("tempdir");
    let state = t.path().join("state");
    let hole = BlackHole::start();
    let inv = inventory(t.path(), "site/prod", hole.port);
    let inv_s = inv.to_str().expect("utf-8 path");
    let log = t.path().join("holder.log");
    let kh = t.path().join("known_hosts");
    let common = [
        "--known-hosts",
        kh.to_str().expect("utf-8"),
        "--host-key-checking",
        "accept-new",
    ];

    let mut args = vec!["apply", "-i", inv_s, "--connect-timeout", "120"];
    args.extend(common);
    let holder = spawn(&args, &state, &log);
    wait_for("the holder's cluster lock", &log, || {
        holds(&state, "cluster-prod-", holder.pid())
    });
    wait_for("the holder in its SSH handshake", &log, || {
        hole.accepted() >= 1
    });
    let before = tree(&state);
    assert!(
        before
            .keys()
            .any(|p| p.ends_with("journal.jsonl") && p.starts_with(state.join("clusters"))),
        "the holder's journal: {before:?}"
    );

    // A second apply, and a reset, of the same cluster: refused at once, naming the holder.
    let mut args = vec!["apply", "-i", inv_s, "--connect-timeout", "1"];
    args.extend(common);
    let t0 = Instant::now();
    let o = run(&args, &state);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "failed at once, not after a wait"
    );
    assert_locked_by(&o, "cluster \"prod\"", holder.pid(), "(kubedrill apply -i ");
    let mut args = vec!["reset", "-i", inv_s, "--yes"];
    args.extend(common);
    assert_locked_by(
        &run(&args, &state),
        "cluster \"prod\"",
        holder.pid(),
        "(kubedrill apply -i ",
    );
    assert_eq!(
        tree(&state),
        before,
        "the refused runs wrote nothing (journal, kubeconfig, lock record)"
    );
    assert_eq!(hole.accepted(), 1, "the refused runs connected to no node");
    // Read-only commands do not take the lock.
    let o = run(&["status", "-i", inv_s], &state);
    assert!(
        !text(&o.stderr).contains("is locked"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["apply", "-i", inv_s, "--dry-run"], &state);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // kill -9 the holder: the kernel drops its lock, the next run proceeds.
    drop(holder);
    let mut args = vec!["apply", "-i", inv_s, "--connect-timeout", "1"];
    args.extend(common);
    let o = run(&args, &state);
    let err = text(&o.stderr);
    assert!(!err.contains("is locked"), "{err}");
    assert_eq!(
        o.status.code(),
        Some(2),
        "it ran and failed to connect: {err}"
    );
    let journal = tree(&state)
        .into_iter()
        .find(|(p, _)| p.ends_with("journal.jsonl"))
        .map(|(_, c)| text(&c))
        .expect("journal");
    assert_eq!(
        journal.matches("\"outcome\":\"started\"").count(),
        2,
        "the killed run and the next one: {journal}"
    );
}

#[test]
fn lab_commands_during_a_drill_run_fail_naming_the_drill_and_lab_ls_still_works() {
    let t = tempfile::tempdir().expect("tempdir");
    let state = t.path().join("state");
    let hole = BlackHole::start();
    let lab = "locktest";
    let def =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/quickstart.yaml"))
            .expect("labs/quickstart.yaml")
            .replace("name: quickstart", &format!("name: {lab}"));
    let lab_file = t.path().join(format!("{lab}.yaml"));
    std::fs::write(&lab_file, def).expect("lab file");
    let lab_file_s = lab_file.to_str().expect("utf-8");
    // What `lab up` leaves: the lab's own inventory (its node is the black hole).
    let inv = inventory(&state, &format!("labs/{lab}/inventory"), hole.port);
    let inv_s = inv.to_str().expect("utf-8");
    let log = t.path().join("drill.log");

    let drill = spawn(
        &["drill", "run", lab_file_s, "--connect-timeout", "120"],
        &state,
        &log,
    );
    wait_for("the drill's lab and cluster locks", &log, || {
        holds(&state, "lab-locktest.lock", drill.pid())
            && holds(&state, "cluster-lab-locktest.lock", drill.pid())
    });
    wait_for("the drill in its SSH handshake", &log, || {
        hole.accepted() >= 1
    });
    let before = tree(&state);

    let by = "(kubedrill drill run ";
    let what = format!("lab \"{lab}\"");
    for args in [
        vec!["lab", "reset", lab, "clean", "--ssh-timeout", "1"],
        vec!["lab", "snapshot", lab, "s1"],
        vec!["lab", "down", lab],
        vec!["lab", "up", lab_file_s, "--ssh-timeout", "1"],
        vec!["drill", "run", lab_file_s, "--connect-timeout", "1"],
        vec!["apply", "-i", inv_s, "--connect-timeout", "1"],
        vec!["reset", "-i", inv_s, "--yes"],
    ] {
        let o = run(&args, &state);
        assert_locked_by(&o, &what, drill.pid(), by);
    }
    assert_eq!(tree(&state), before, "the refused commands wrote nothing");
    assert_eq!(hole.accepted(), 1, "and connected to no node");
    let o = run(&["lab", "ls"], &state);
    assert!(
        o.status.success(),
        "lab ls is read-only: {}",
        text(&o.stderr)
    );

    drop(drill);
    let o = run(
        &["lab", "reset", lab, "clean", "--ssh-timeout", "1"],
        &state,
    );
    let err = text(&o.stderr);
    assert!(
        !err.contains("is locked"),
        "the killed drill's locks are gone: {err}"
    );
}

#[test]
fn inventories_in_directories_of_the_same_name_get_their_own_state() {
    let t = tempfile::tempdir().expect("tempdir");
    let state = t.path().join("state");
    let hole = BlackHole::start();
    let a = inventory(t.path(), "a/prod", hole.port);
    let b = inventory(t.path(), "b/prod", hole.port);
    // What an earlier kubedrill left for every cluster labelled `prod`.
    let legacy = state.join("clusters/prod");
    std::fs::create_dir_all(&legacy).expect("mkdir");
    std::fs::write(legacy.join("admin.conf"), "another cluster's kubeconfig").expect("write");
    let kh = t.path().join("known_hosts");
    let apply = |inv: &Path, timeout: &str| {
        kubedrill(
            &[
                "apply",
                "-i",
                inv.to_str().expect("utf-8"),
                "--connect-timeout",
                timeout,
                "--known-hosts",
                kh.to_str().expect("utf-8"),
                "--host-key-checking",
                "accept-new",
            ],
            &state,
        )
    };

    // An apply on a holds its lock; one on b is another cluster and runs meanwhile.
    let log = t.path().join("a.log");
    let f = std::fs::File::create(&log).expect("log");
    let holder = Proc(
        apply(&a, "120")
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn"),
    );
    wait_for("a's lock", &log, || {
        holds(&state, "cluster-prod-", holder.pid())
    });
    let o = apply(&b, "1").output().expect("run");
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "b ran (and could not connect): {err}"
    );
    assert!(!err.contains("is locked"), "{err}");
    assert!(
        err.contains(&legacy.join("admin.conf").display().to_string()) && err.contains("not used"),
        "the old shared kubeconfig is named, not used: {err}"
    );
    drop(holder);

    let dirs: Vec<PathBuf> = std::fs::read_dir(state.join("clusters"))
        .expect("clusters")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != &legacy)
        .collect();
    assert_eq!(dirs.len(), 2, "one directory per inventory: {dirs:?}");
    let mut owners = Vec::new();
    for d in &dirs {
        let name = d.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.starts_with("prod-"), "{name}");
        assert!(d.join("journal.jsonl").is_file(), "{}", d.display());
        owners.push(
            std::fs::read_to_string(d.join("inventory-path"))
                .expect("owner record")
                .trim()
                .to_owned(),
        );
    }
    owners.sort();
    let mut want = vec![
        a.canonicalize().expect("a").display().to_string(),
        b.canonicalize().expect("b").display().to_string(),
    ];
    want.sort();
    assert_eq!(owners, want);

    // reset of a removes a's kubeconfig only: never b's, never the old shared one.
    let b_dir = dirs
        .iter()
        .find(|d| {
            std::fs::read_to_string(d.join("inventory-path")).is_ok_and(|o| {
                o.trim() == want.iter().find(|w| w.contains("/b/")).expect("b").as_str()
            })
        })
        .expect("b's directory");
    std::fs::write(b_dir.join("admin.conf"), "b's kubeconfig").expect("write");
    let o = kubedrill(
        &[
            "reset",
            "-i",
            a.to_str().expect("utf-8"),
            "--yes",
            "--known-hosts",
            kh.to_str().expect("utf-8"),
            "--host-key-checking",
            "accept-new",
        ],
        &state,
    )
    .output()
    .expect("reset");
    assert!(
        !text(&o.stderr).contains("is locked"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        b_dir.join("admin.conf").is_file(),
        "b's kubeconfig survives a's reset"
    );
    assert!(
        legacy.join("admin.conf").is_file(),
        "the old shared kubeconfig survives a's reset"
    );
}

// ---------------------------------------------------------------------------------------------
// The node lock, over a real sshd
// ---------------------------------------------------------------------------------------------

fn options(lab: &SshLab) -> Arc<Options> {
    let policy = HostKeyPolicy::load(lab.known_hosts_path(), HostKeyMode::Strict).expect("kh");
    let mut o = Options::new(Arc::new(policy));
    o.identities = Vec::new();
    o.agent = None;
    o.connect_timeout = Duration::from_secs(10);
    Arc::new(o)
}

async fn connect(lab: &SshLab) -> Arc<Session> {
    let dest = lab.destination(0, "root");
    Session::connect(dest, None, options(lab))
        .await
        .expect("connect")
}

fn holder(pid: u32, command: &str) -> Holder {
    Holder {
        pid,
        host: "admin-a".into(),
        since: "2026-01-02T03:10:02Z".into(),
        command: command.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_lock_holds_against_a_second_session_until_released_dropped_or_killed() {
    if !sshd::skip_unless_available("node lock") {
        return;
    }
    let lab = SshLab::start(1);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("var-lib-kubedrill");
    let dir = dir.to_str().expect("utf-8");
    let s1 = connect(&lab).await;
    let s2 = connect(&lab).await;
    let h1 = holder(1111, "kubedrill apply -i site/prod");
    let h2 = holder(2222, "kubedrill reset -i site/prod");

    // Held: the second session fails at once, naming host, PID, command and start time.
    let l1 = s1.lock_node(dir, &h1).await.expect("first lock");
    let e = s2.lock_node(dir, &h2).await.expect_err("second lock");
    let msg = e.to_string();
    assert!(
        msg.starts_with("node node1 is locked by PID 1111 on admin-a (kubedrill apply -i site/prod) since 2026-01-02T03:10:02Z"),
        "{msg}"
    );
    assert!(
        std::fs::read_to_string(format!("{dir}/node.lock.holder"))
            .expect("holder file")
            .contains("pid=1111\n")
    );
    // With a grace period it still fails once the grace is over.
    let t0 = Instant::now();
    let e = s2
        .lock_node_within(dir, &h2, Duration::from_secs(1))
        .await
        .expect_err("still held after the grace");
    assert!(matches!(e, NodeLockError::Held { .. }) && t0.elapsed() >= Duration::from_secs(1));
    // Released: the second takes it, and the first's record is gone.
    l1.release().await;
    let l2 = s2.lock_node(dir, &h2).await.expect("free after release");
    let e = s1
        .lock_node(dir, &h1)
        .await
        .expect_err("now held by the second");
    assert!(e.to_string().contains("PID 2222"), "{e}");
    l2.release().await;

    // The holder's connection drops without a release: the lock goes with it.
    let l1 = s1.lock_node(dir, &h1).await.expect("lock again");
    assert!(matches!(
        s2.lock_node(dir, &h2).await,
        Err(NodeLockError::Held { .. })
    ));
    s1.close().await;
    let l2 = s2
        .lock_node_within(dir, &h2, Duration::from_secs(15))
        .await
        .expect("free once the holder's connection is gone");
    let deadline = Instant::now() + Duration::from_secs(5);
    while l1.is_held() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!l1.is_held(), "the lost lock knows it is lost");
    l2.release().await;

    // The holder process is SIGKILLed: a real `ssh` client running the same lock script.
    let h3 = holder(3333, "kubedrill drill run quickstart");
    let mut c = lab.ssh(0, "root");
    c.arg(shell::wrap(
        &node_lock::lock_script(dir, &h3.to_record()),
        None,
    ))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = c.spawn().expect("ssh");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line, "LOCKED\n");
    let e = s2
        .lock_node(dir, &h2)
        .await
        .expect_err("held by the ssh client");
    assert!(e.to_string().contains("PID 3333"), "{e}");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let l2 = s2
        .lock_node_within(dir, &h2, Duration::from_secs(15))
        .await
        .expect("free after the holder was killed");
    l2.release().await;
    s2.close().await;
}
