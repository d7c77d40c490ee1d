//! The local sshd lab of `tests/common/sshd.rs`, checked with the system OpenSSH client: logins,
//! the generated inventory, killed and restarted hosts, changed host keys, cleanup on drop and
//! on panic, sudo and non-sudo users, the bastion, and an encrypted key.
//!
//! Needs root and openssh-server; skipped otherwise (set `KUBEDRILL_REQUIRE_SSHD=1` to fail
//! instead). The 100-host start-up measurement is ignored by default:
//! `cargo test --test sshd_harness -- --ignored --nocapture`.

use crate::common;

use common::sshd::{self, NOSUDO_USER, SUDO_USER, SshLab, descendants_of, pid_alive};
use kubedrill::inventory::{self, NodeRole};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

macro_rules! require_sshd {
    () => {
        if !sshd::skip_unless_available(module_path!()) {
            return;
        }
    };
}

fn run(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[track_caller]
fn run_ok(cmd: Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "ssh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn three_hosts_accept_commands_and_the_inventory_loads() {
    require_sshd!();
    let lab = SshLab::start(3);
    for (i, h) in lab.hosts().iter().enumerate() {
        assert_eq!(h.name, format!("node{}", i + 1));
        assert_eq!(h.addr.to_string(), format!("127.0.1.{}", 10 + i));
        let mut c = lab.ssh(i, "root");
        c.arg("echo $(id -un)@$SSH_CONNECTION");
        let out = run_ok(c);
        assert!(
            out.starts_with("root@") && out.contains(&format!("127.0.1.{} {}", 10 + i, h.port)),
            "unexpected output {out:?}"
        );
    }
    let kh = std::fs::read_to_string(lab.known_hosts_path()).unwrap();
    assert_eq!(kh.lines().count(), 3);
    assert!(kh.starts_with(&format!(
        "[127.0.1.10]:{} ssh-ed25519 AAAA",
        lab.host(0).port
    )));

    let inv = inventory::load(lab.inventory_path()).unwrap_or_else(|e| {
        panic!(
            "generated inventory does not load: {e}\n{}",
            lab.inventory_yaml()
        )
    });
    assert!(inv.warnings.0.is_empty(), "warnings: {}", inv.warnings);
    assert_eq!(inv.cluster_label(), "sshlab");
    assert!(inv.bastion.is_none());
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["node1", "node2", "node3"]);
    for (h, s) in inv.hosts.iter().zip(lab.hosts()) {
        assert_eq!(h.ssh.address, s.addr.to_string());
        assert_eq!(h.ssh.port, s.port);
        assert_eq!(h.ssh.user.as_deref(), Some("root"));
        assert_eq!(h.ssh.private_key.as_deref(), Some(lab.key_path()));
        assert_eq!(h.ip.to_string(), s.addr.to_string());
    }
    assert_eq!(
        inv.hosts[0].role,
        NodeRole::ControlPlane { also_worker: false }
    );
    assert!(inv.hosts[0].etcd);
    assert_eq!(inv.hosts[1].role, NodeRole::Worker);
    let kh_var = inv.hosts[2]
        .vars
        .get("kubedrill_known_hosts")
        .expect("kubedrill_known_hosts in all.vars");
    assert_eq!(
        kh_var.value.as_str().map(PathBuf::from).as_deref(),
        Some(lab.known_hosts_path())
    );
}

#[test]
fn single_host_is_control_plane_and_worker() {
    require_sshd!();
    let lab = SshLab::start(1);
    let inv = inventory::load(lab.inventory_dir()).expect("loads");
    assert_eq!(
        inv.hosts[0].role,
        NodeRole::ControlPlane { also_worker: true }
    );
    let mut c = lab.ssh(0, "root");
    c.arg("true");
    run_ok(c);
}

#[test]
fn killed_host_refuses_connections_and_restarts_with_the_same_key() {
    require_sshd!();
    let mut lab = SshLab::start(2);
    let (addr, key) = (
        lab.host(0).socket_addr(),
        lab.host(0).host_pubkey_line.clone(),
    );
    let old_pid = lab.host(0).pid;
    lab.kill_host(0);
    assert!(!pid_alive(old_pid));
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let mut c = lab.ssh(0, "root");
    c.arg("true");
    let out = run(c);
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
    // The other host is unaffected.
    let mut c = lab.ssh(1, "root");
    c.arg("true");
    run_ok(c);

    lab.restart_host(0);
    assert_eq!(lab.host(0).socket_addr(), addr);
    assert_eq!(lab.host(0).host_pubkey_line, key);
    assert_ne!(lab.host(0).pid, old_pid);
    let mut c = lab.ssh(0, "root");
    c.arg("true");
    run_ok(c);
}

#[test]
fn regenerated_host_key_fails_strict_checking_until_known_hosts_is_rewritten() {
    require_sshd!();
    let mut lab = SshLab::start(2);
    let old = lab.host(1).host_pubkey_line.clone();
    let new = lab.regenerate_host_key(1);
    assert_ne!(old, new);
    let mut c = lab.ssh(1, "root");
    c.arg("true");
    let out = run(c);
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            && stderr.contains("Host key verification failed"),
        "{stderr}"
    );
    lab.write_known_hosts();
    let mut c = lab.ssh(1, "root");
    c.arg("true");
    run_ok(c);
}

#[test]
fn drop_kills_listeners_and_connection_processes() {
    require_sshd!();
    let lab = SshLab::start(2);
    let listeners: Vec<u32> = lab.hosts().iter().map(|h| h.pid).collect();
    let dir = lab.dir().to_path_buf();
    // A session that would outlive the test: sshd [priv] -> sshd session -> sh -> sleep.
    let mut c = lab.ssh(0, "root");
    c.arg("sleep 300")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut client = c.spawn().expect("spawn ssh");
    let deadline = Instant::now() + Duration::from_secs(10);
    let tree = loop {
        let d = descendants_of(&[listeners[0]]);
        let has_sleep = d.iter().any(|(pid, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        if has_sleep {
            break d;
        }
        assert!(Instant::now() < deadline, "the remote sleep never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // sshd [priv] (and, depending on the OpenSSH version, a session process), then the command.
    assert!(tree.len() >= 2, "expected sshd children, got {tree:?}");
    drop(lab);
    for pid in listeners.iter().chain(tree.iter().map(|(p, _)| p)) {
        assert!(
            !pid_alive(*pid),
            "pid {pid} survived the lab: {:?}",
            sshd::proc_stat(*pid)
        );
    }
    assert!(
        !dir.exists(),
        "lab directory {} was not removed",
        dir.display()
    );
    let exited = wait_timeout(&mut client, Duration::from_secs(10));
    if !exited {
        let _ = client.kill();
        let _ = client.wait();
    }
    assert!(exited, "the ssh client did not notice the server died");
}

#[test]
fn drop_while_panicking_kills_every_sshd() {
    require_sshd!();
    let seen = std::sync::Mutex::new(Vec::<u32>::new());
    let result = std::panic::catch_unwind(|| {
        let lab = SshLab::start(3);
        seen.lock()
            .unwrap()
            .extend(lab.hosts().iter().map(|h| h.pid));
        panic!("test body fails while the lab runs");
    });
    assert!(result.is_err());
    let pids = seen.into_inner().unwrap();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!pid_alive(pid), "sshd {pid} survived a panicking test");
    }
}

#[test]
fn sudo_user_can_sudo_and_nosudo_user_cannot() {
    require_sshd!();
    let lab = SshLab::builder()
        .hosts(1)
        .user(SUDO_USER)
        .test_users(true)
        .start();
    let drop_in = std::fs::read_dir("/etc/sudoers.d")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!(
                    "kubedrill-test-{SUDO_USER}-{}-",
                    std::process::id()
                ))
        })
        .expect("sudoers drop-in written");

    let mut c = lab.ssh(0, SUDO_USER);
    c.arg("id -un; sudo -n id -un");
    assert_eq!(run_ok(c), format!("{SUDO_USER}\nroot\n"));

    let mut c = lab.ssh(0, NOSUDO_USER);
    c.arg("id -un");
    assert_eq!(run_ok(c), format!("{NOSUDO_USER}\n"));
    let mut c = lab.ssh(0, NOSUDO_USER);
    c.arg("sudo -n true");
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("password is required"), "{stderr}");

    let inv = inventory::load(lab.inventory_path()).expect("loads");
    assert_eq!(inv.hosts[0].ssh.user.as_deref(), Some(SUDO_USER));
    drop(lab);
    assert!(!drop_in.exists(), "{} not removed", drop_in.display());
}

#[test]
fn bastion_is_in_the_inventory_and_forwards_connections() {
    require_sshd!();
    let mut lab = SshLab::builder().hosts(2).with_bastion(true).start();
    let b = lab.bastion().expect("bastion");
    assert_eq!(b.addr, sshd::BASTION_ADDR);
    let inv = inventory::load(lab.inventory_path()).unwrap_or_else(|e| {
        panic!("{e}\n{}", lab.inventory_yaml());
    });
    let ib = inv.bastion.as_ref().expect("inventory bastion");
    assert_eq!(ib.name, "bastion");
    assert_eq!(ib.ssh.address, b.addr.to_string());
    assert_eq!(ib.ssh.port, b.port);
    assert_eq!(ib.ssh.user.as_deref(), Some("root"));
    assert_eq!(inv.hosts.len(), 2);

    // Proof that the path goes through the bastion: it works, and fails once the bastion is
    // killed while the direct connection still works.
    let mut c = lab.ssh_via_bastion(1, "root");
    c.arg("echo via-bastion");
    assert_eq!(run_ok(c), "via-bastion\n");

    lab.kill_bastion();
    let mut c = lab.ssh_via_bastion(1, "root");
    c.arg("true");
    assert!(!run(c).status.success());
    let mut c = lab.ssh(1, "root");
    c.arg("true");
    run_ok(c);
}

#[test]
fn encrypted_key_is_refused_in_batch_mode() {
    require_sshd!();
    let lab = SshLab::builder().hosts(1).with_encrypted_key(true).start();
    let enc = lab.encrypted_key_path().expect("encrypted key");
    let h = lab.host(0);
    let mut c = Command::new("ssh");
    c.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
    ])
    .arg("-o")
    .arg(format!(
        "UserKnownHostsFile={}",
        lab.known_hosts_path().display()
    ))
    .arg("-i")
    .arg(enc)
    .arg("-p")
    .arg(h.port.to_string())
    .arg(format!("root@{}", h.addr))
    .arg("true")
    .stdin(Stdio::null());
    let out = run(c);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    // The passphrase is right: ssh-keygen can derive the public key with it.
    let mut c = Command::new("ssh-keygen");
    c.args(["-y", "-P", sshd::ENCRYPTED_KEY_PASSPHRASE, "-f"])
        .arg(enc);
    assert!(run(c).status.success());
}

/// Start-up and teardown time of a 100-host lab, and every host answering `ssh true`.
#[test]
#[ignore = "measurement: ~100 sshd processes; run with --ignored --nocapture"]
fn hundred_hosts_start_and_stop() {
    require_sshd!();
    let n: usize = std::env::var("SSHLAB_HOSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let t = Instant::now();
    let lab = SshLab::start(n);
    let started = t.elapsed();
    assert!(lab.startup_time() <= started);
    let pids: Vec<u32> = lab.hosts().iter().map(|h| h.pid).collect();

    let t = Instant::now();
    let mut clients: Vec<Child> = (0..n)
        .map(|i| {
            let mut c = lab.ssh(i, "root");
            c.arg("true").stdout(Stdio::null());
            c.spawn().expect("spawn ssh")
        })
        .collect();
    let ok = clients
        .iter_mut()
        .map(|c| c.wait().is_ok_and(|s| s.success()))
        .filter(|ok| *ok)
        .count();
    let ssh_all = t.elapsed();
    assert_eq!(ok, n, "every host answers");

    let inv = inventory::load(lab.inventory_path()).expect("loads");
    assert_eq!(inv.hosts.len(), n);

    let t = Instant::now();
    drop(lab);
    let stopped = t.elapsed();
    assert!(pids.iter().all(|p| !pid_alive(*p)));
    eprintln!(
        "sshlab {n} hosts: start {:.3}s, parallel `ssh true` to all {:.3}s, drop {:.3}s",
        started.as_secs_f64(),
        ssh_all.as_secs_f64(),
        stopped.as_secs_f64()
    );
}
