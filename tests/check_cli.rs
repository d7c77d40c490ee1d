//! `kubedrill check` end to end against real local sshd hosts.

use crate::common;

use common::sshd::{self, SshLab};
use std::process::Command;

fn kubedrill() -> Command {
    common::kubedrill_command()
}

fn uname_r() -> String {
    let out = Command::new("uname").arg("-r").output().expect("uname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn check_gathers_real_facts_from_every_host() {
    if !sshd::skip_unless_available("check") {
        return;
    }
    let lab = SshLab::start(3);
    // known_hosts comes from the inventory's `kubedrill_known_hosts`.
    let out = kubedrill()
        .args(["check", "--output", "json", "-i"])
        .arg(lab.inventory_path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json: {e}\nstderr: {stderr}"));
    let hosts = doc["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3, "{doc:#}");
    let kernel = uname_r();
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(h["host"], format!("node{}", i + 1));
        assert_eq!(h["status"], "checked", "{h:#}");
        assert_eq!(h["facts"]["kernel"]["release"], kernel.as_str());
        assert!(h["facts"]["cpus"].as_u64().unwrap_or(0) >= 1);
        let verdicts = h["report"]["verdicts"].as_array().expect("verdicts");
        assert_eq!(verdicts.len(), 7);
    }
    assert_eq!(
        doc["host_keys"]["source"],
        "inventory variable kubedrill_known_hosts"
    );
    assert!(
        !doc["effective"]["entries"]
            .as_array()
            .expect("entries")
            .is_empty()
    );
    // Exit code agrees with the report.
    let code = out.status.code().expect("exit code");
    let blocked = doc["requested_blocked"].as_bool().expect("flag");
    assert_eq!(code, if blocked { 3 } else { 0 }, "{stderr}");
}

#[test]
fn check_text_names_unreachable_hosts_and_keeps_the_others() {
    if !sshd::skip_unless_available("check down host") {
        return;
    }
    let mut lab = SshLab::start(3);
    lab.kill_host(2);
    let out = kubedrill()
        .args(["check", "-i"])
        .arg(lab.inventory_path())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stdout.contains("2/3 hosts checked"), "{stdout}");
    assert!(stdout.contains("  node3: cannot connect"), "{stdout}");
    assert!(!stdout.contains("node3: node3"), "{stdout}");
    let kernel = uname_r();
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(&kernel)).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(stdout.contains("effective Cilium settings"), "{stdout}");
    // Plain progress lines (stderr is not a terminal here), one per host.
    for n in ["node1: ok", "node2: ok", "node3: FAILED"] {
        assert!(stderr.contains(n), "{stderr}");
    }
}

#[test]
fn check_refuses_unknown_hosts_unless_accept_new() {
    if !sshd::skip_unless_available("check accept-new") {
        return;
    }
    let lab = SshLab::start(2);
    let kh = lab.dir().join("empty_known_hosts");
    let out = kubedrill()
        .args(["check", "-i"])
        .arg(lab.inventory_path())
        .arg("--known-hosts")
        .arg(&kh)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("is not in"), "{stdout}");
    assert!(!kh.exists(), "strict mode must not create the file");

    let out = kubedrill()
        .args(["check", "--host-key-checking", "accept-new", "-i"])
        .arg(lab.inventory_path())
        .arg("--known-hosts")
        .arg(&kh)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{stdout}");
    assert!(stdout.contains("recorded 2 new host key(s)"), "{stdout}");
    let text = std::fs::read_to_string(&kh).expect("recorded");
    assert_eq!(text.lines().count(), 2);

    // `off` warns loudly.
    let out = kubedrill()
        .args(["check", "--host-key-checking", "off", "-i"])
        .arg(lab.inventory_path())
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("host-key checking is OFF"));
}
