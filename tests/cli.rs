//! End-to-end tests of the `kubedrill` binary on the sample inventories and on broken ones.

use crate::common;

use common::{kubedrill, text};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[test]
fn check_accepts_both_samples() {
    for inv in ["inventories/lab-3node", "inventories/prod-example"] {
        let o = kubedrill(&["inventory", "check", "-i", inv]);
        assert!(
            o.status.success(),
            "{inv}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert!(text(&o.stdout).contains("inventory OK"));
    }
    let o = kubedrill(&["inventory", "check", "-i", "inventories/prod-example"]);
    assert!(text(&o.stderr).contains("legacy group name `kube-master`"));
}

#[test]
fn check_fails_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("hosts.ini");
    std::fs::write(&inv, "[kube_control_plane]\ncp1 ansible_host=10.0.0.1 ansible_port=22x\n[kube_node]\nw1 ip=10.0.0.2\n").unwrap();
    let o = kubedrill(&["inventory", "check", "-i", inv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("{}:2", inv.display())), "{err}");
    assert!(err.contains("`ansible_port`"), "{err}");

    let o = kubedrill(&[
        "inventory",
        "check",
        "-i",
        inv.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["origin"]["line"], 2);
    assert_eq!(v["diagnostics"][0]["field"], "ansible_port");
}

#[test]
fn missing_inventory_is_an_error_not_a_panic() {
    let o = kubedrill(&[
        "inventory",
        "check",
        "-i",
        "/nonexistent/kubedrill/hosts.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot read"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn show_json_has_provenance() {
    let o = kubedrill(&[
        "inventory",
        "show",
        "-i",
        "inventories/prod-example",
        "--output",
        "json",
        "--host",
        "master1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let prov = v["spec"]["provenance"].as_array().unwrap();
    let algo = prov
        .iter()
        .find(|p| p["setting"] == "lb_algorithm")
        .unwrap();
    assert_eq!(algo["value"], "maglev");
    assert_eq!(algo["source"]["kind"], "extra-values");
    assert_eq!(algo["source"]["path"], "loadBalancer.algorithm");
    let kpr = prov
        .iter()
        .find(|p| p["setting"] == "kube_proxy_replacement")
        .unwrap();
    assert_eq!(kpr["source"]["name"], "cilium_kube_proxy_replacement");
    assert_eq!(v["host_vars"]["ansible_user"]["value"], "deploy");
    assert!(
        v["host_vars"]["ansible_user"]["origin"]["file"]
            .as_str()
            .unwrap()
            .ends_with("inventory.ini")
    );
}

#[test]
fn plan_lists_phases_in_order() {
    let o = kubedrill(&["plan", "-i", "inventories/lab-3node", "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["plan"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = kubedrill::plan::phases()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, expected);
    assert!(names.starts_with(&["preflight/connect", "preflight/kernel"]));
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("kubeadm/init") < pos("kubeadm/join-worker"));
    assert!(pos("kubeadm/join-worker") < pos("cilium/install"));
}

#[test]
fn plan_render_dir_writes_files_with_modes_and_keeps_a_generated_seed() {
    let dir = tempfile::tempdir().unwrap();
    let inv_dir = dir.path().join("inv");
    std::fs::create_dir_all(&inv_dir).unwrap();
    std::fs::write(
        inv_dir.join("hosts.yaml"),
        "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1: {ip: 10.1.0.1}\n    kube_node:\n      hosts:\n        w1: {ip: 10.1.0.2}\n",
    )
    .unwrap();
    let render = |out: &Path| {
        let o = kubedrill(&[
            "plan",
            "-i",
            inv_dir.to_str().unwrap(),
            "--render-dir",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        std::fs::read_to_string(out.join("cp1/etc/kubernetes/kubedrill/cilium-values.yaml"))
            .unwrap()
    };
    let first = render(&dir.path().join("r1"));
    let seed_file = inv_dir.join("credentials/kubedrill-maglev-hash-seed");
    let seed = std::fs::read_to_string(&seed_file).unwrap();
    assert_eq!(
        std::fs::metadata(&seed_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The values file apply writes (JSON, which is YAML) carries the saved seed.
    let values: serde_json::Value = serde_json::from_str(
        first
            .split_once('\n')
            .map(|(_, rest)| rest)
            .unwrap_or_default(),
    )
    .unwrap();
    assert_eq!(
        values["maglev"]["hashSeed"].as_str(),
        Some(seed.trim()),
        "{first}"
    );
    // A second run reuses the saved seed: identical values.
    assert_eq!(render(&dir.path().join("r2")), first);

    let init = dir
        .path()
        .join("r1/cp1/etc/kubernetes/kubedrill/kubeadm-init.yaml");
    assert_eq!(
        std::fs::metadata(&init).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let join = dir
        .path()
        .join("r1/w1/etc/kubernetes/kubedrill/kubeadm-join.yaml");
    assert!(
        std::fs::read_to_string(join)
            .unwrap()
            .contains("<bootstrap-token")
    );
    assert!(dir.path().join("r1/w1/etc/containerd/config.toml").exists());

    let o = kubedrill(&["inventory", "show", "-i", inv_dir.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("kept in"), "{}", text(&o.stdout));
}

#[test]
fn plan_refuses_an_invalid_spec() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("hosts.yaml");
    std::fs::write(
        &inv,
        "all:\n  vars:\n    cilium_version: \"1.16.19\"\n    cilium_kube_proxy_replacement: partial\n    kube_proxy_remove: false\n  children:\n    kube_control_plane:\n      hosts:\n        cp1: {ip: 10.1.0.1}\n",
    )
    .unwrap();
    let o = kubedrill(&["plan", "-i", inv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("partial"), "{err}");
    assert!(err.contains(&format!("{}:4", inv.display())), "{err}");
}

fn kubedrill_env(args: &[&str], state: &Path) -> std::process::Output {
    common::kubedrill_command()
        .args(args)
        .env("KUBEDRILL_STATE_DIR", state)
        .output()
        .expect("run kubedrill")
}

#[test]
fn apply_dry_run_lists_selected_phases_and_touches_nothing() {
    let state = tempfile::tempdir().unwrap();
    let o = kubedrill_env(
        &[
            "apply",
            "-i",
            "inventories/lab-3node",
            "--dry-run",
            "--only",
            "node,kubeadm/init",
        ],
        state.path(),
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("node/packages") && out.contains("node/swap") && out.contains("kubeadm/init"),
        "{out}"
    );
    assert!(!out.contains("cilium/install"), "{out}");
    assert!(out.contains("pkgs.k8s.io"), "{out}");
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "a dry run writes no state"
    );
    // A phase name that does not exist is an error naming the real ones.
    let o = kubedrill_env(
        &[
            "apply",
            "-i",
            "inventories/lab-3node",
            "--dry-run",
            "--skip-phases",
            "node/swp",
        ],
        state.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("unknown phase `node/swp`") && err.contains("node/swap"),
        "{err}"
    );
}

/// A seed `apply` generated is kept before it connects anywhere, so a re-run renders the same
/// Maglev seed: with a new one each run, every re-run upgraded the release and moved every
/// Maglev flow to other backends (found on the lab, where a re-run must change nothing).
#[test]
fn apply_keeps_a_generated_maglev_seed_before_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let inv_dir = dir.path().join("inv");
    std::fs::create_dir_all(&inv_dir).unwrap();
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    std::fs::write(
        inv_dir.join("hosts.yaml"),
        "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1: {ansible_host: 127.0.0.1, ansible_port: 1}\n",
    )
    .unwrap();
    let seed_file = inv_dir.join("credentials/kubedrill-maglev-hash-seed");
    let kh = dir.path().join("known_hosts");
    let apply = || {
        kubedrill_env(
            &[
                "apply",
                "-i",
                inv_dir.to_str().unwrap(),
                "--connect-timeout",
                "2",
                "--known-hosts",
                kh.to_str().unwrap(),
                "--host-key-checking",
                "accept-new",
            ],
            state.path(),
        )
    };
    let o = apply();
    assert!(!o.status.success(), "nothing to connect to");
    assert!(
        text(&o.stderr).contains("saved the cluster's Maglev hash seed"),
        "{}",
        text(&o.stderr)
    );
    let seed = std::fs::read_to_string(&seed_file).unwrap();
    assert_eq!(
        std::fs::metadata(&seed_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = apply();
    assert!(!o.status.success());
    assert!(!text(&o.stderr).contains("saved the cluster's"));
    assert_eq!(std::fs::read_to_string(&seed_file).unwrap(), seed);
    let o = kubedrill(&["inventory", "show", "-i", inv_dir.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("kept in"), "{}", text(&o.stdout));
}

#[test]
fn damaged_bundle_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("debs")).unwrap();
    std::fs::write(dir.path().join("debs/a_1_amd64.deb"), b"tampered").unwrap();
    let manifest = r#"{"schema":1,"created":"2026-11-22T00:00:00Z","family":"deb","release":"bookworm",
      "requested":["a"],"packages":[{"name":"a","version":"1","arch":"amd64","file":"debs/a_1_amd64.deb",
      "sha256":"0000000000000000000000000000000000000000000000000000000000000000","size":8,"source":"test"}]}"#;
    std::fs::write(dir.path().join("bundle.json"), manifest).unwrap();
    let o = kubedrill(&["bundle", "show", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("debs/a_1_amd64.deb") && err.contains("damaged"),
        "{err}"
    );
    // apply refuses it before connecting anywhere.
    let o = kubedrill(&[
        "apply",
        "-i",
        "inventories/lab-3node",
        "--bundle",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("damaged"));
    // Broken JSON: file, line and column.
    std::fs::write(
        dir.path().join("bundle.json"),
        "{\n \"schema\": 1,\n oops\n}",
    )
    .unwrap();
    let o = kubedrill(&["bundle", "show", dir.path().to_str().unwrap()]);
    assert!(
        text(&o.stderr).contains("bundle.json: line 3"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn status_before_apply_says_what_to_do() {
    let state = tempfile::tempdir().unwrap();
    let o = kubedrill_env(&["status", "-i", "inventories/lab-3node"], state.path());
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("admin.conf does not exist") && err.contains("kubedrill apply"),
        "{err}"
    );
}

#[test]
fn bundle_build_takes_kubesprays_files_repo_and_names_a_missing_binary() {
    // The lab-3node inventory plus Kubespray's offline variables.
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv");
    std::fs::create_dir_all(inv.join("group_vars/k8s_cluster")).unwrap();
    for f in [
        "hosts.yaml",
        "group_vars/all.yml",
        "group_vars/k8s_cluster/k8s-cluster.yml",
        "group_vars/k8s_cluster/k8s-net-cilium.yml",
    ] {
        std::fs::copy(Path::new("inventories/lab-3node").join(f), inv.join(f)).unwrap();
    }
    let repo = dir.path().join("files");
    let mut all = std::fs::read_to_string(inv.join("group_vars/all.yml")).unwrap();
    all.push_str(&format!(
        "files_repo: \"{}\"\ncrictl_version: \"v1.31.0\"\n",
        repo.display()
    ));
    std::fs::write(inv.join("group_vars/all.yml"), all).unwrap();
    let out = dir.path().join("bundle");
    let o = kubedrill(&[
        "bundle",
        "build",
        "-o",
        out.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("files_repo {}", repo.display()))
            && err.contains("Kubernetes 1.31.4")
            && err.contains("dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubelet")
            && err.contains("scripts/upstream-build.sh --kubernetes 1.31.4"),
        "{err}"
    );
    // It failed before any package download.
    assert!(!err.contains("resolving dependencies"), "{err}");
}

#[test]
fn completions_and_man_pages_come_from_the_parser() {
    let o = kubedrill(&["completions", "bash"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    assert!(
        s.contains("_kubedrill()") && s.contains("--skip-phases"),
        "{s}"
    );
    let o = kubedrill(&["completions", "zsh"]);
    assert!(o.status.success() && text(&o.stdout).contains("#compdef kubedrill"));
    let o = kubedrill(&["man"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains(".TH kubedrill 1"));
    let dir = tempfile::tempdir().unwrap();
    let o = kubedrill(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(dir.path().join("kubedrill-apply.1").is_file());
    assert!(kubedrill(&["completions", "tcsh"]).status.code() == Some(2));
}

#[test]
fn unknown_phases_are_refused_with_the_tree() {
    let o = kubedrill(&[
        "apply",
        "-i",
        "inventories/lab-3node",
        "--dry-run",
        "--skip-phases",
        "node/swp",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("unknown phase `node/swp`")
            && e.contains("node/swap")
            && e.contains("a group: preflight, node"),
        "{e}"
    );
    // The help lists the tree the names come from.
    let o = kubedrill(&["apply", "--help"]);
    assert!(text(&o.stdout).contains("  kubeadm/join-worker"));
    // The dry run shows the phases that run, with bundle-free online steps.
    let o = kubedrill(&[
        "apply",
        "-i",
        "inventories/lab-3node",
        "--dry-run",
        "--only",
        "node/sysctl",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    assert!(
        s.contains("preflight/connect") && s.contains("node/sysctl"),
        "{s}"
    );
    assert!(!s.contains("node/swap"), "{s}");
}
