//! kubedrill's rendered kubeadm configurations judged by the real kubeadm (built from source by
//! `scripts/upstream-build.sh`): `kubeadm config validate` accepts every init and join config,
//! `kubeadm config images list --config` names exactly the images kubedrill's bundles and
//! containerd expect (no kube-proxy: `proxy.disabled`), and the pause image agrees with the
//! containerd `sandbox_image` kubedrill renders.
//!
//! Missing kubeadm skips loudly, or fails with `KUBEDRILL_REQUIRE_APISERVER=1` (as in CI).

use crate::common::apiserver;

use kubedrill::inventory::Inventory;
use kubedrill::render::{self, Secrets, Templates};
use kubedrill::spec::{self, SpecContext};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kubeadm of a version from the upstream build, or why there is none.
fn kubeadm(version: &str) -> Option<PathBuf> {
    let p = apiserver::upstream_dir()
        .join("files/dl.k8s.io/release")
        .join(format!("v{version}"))
        .join("bin/linux/amd64/kubeadm");
    if p.is_file() {
        return Some(p);
    }
    let why = format!(
        "{} is missing: scripts/upstream-build.sh --kubernetes {version} --only kubeadm",
        p.display()
    );
    if std::env::var("KUBEDRILL_REQUIRE_APISERVER").as_deref() == Ok("1") {
        panic!("KUBEDRILL_REQUIRE_APISERVER=1 but {why}");
    }
    eprintln!("\n*** SKIPPING kubeadm {version}: {why} ***\n");
    None
}

fn inventory(dir: &Path, version: &str, extra: &str) -> Inventory {
    std::fs::write(
        dir.join("hosts.yaml"),
        format!(
            "all:
  hosts:
    cp1: {{ansible_host: 10.10.0.11, ip: 10.10.0.11}}
    cp2: {{ansible_host: 10.10.0.12, ip: 10.10.0.12}}
    w1: {{ansible_host: 10.10.0.21, ip: 10.10.0.21}}
  children:
    kube_control_plane: {{hosts: {{cp1: {{}}, cp2: {{}}}}}}
    kube_node: {{hosts: {{w1: {{}}}}}}
    etcd: {{hosts: {{cp1: {{}}}}}}
    k8s_cluster: {{children: {{kube_control_plane: {{}}, kube_node: {{}}}}}}
  vars:
    kube_version: \"{version}\"
    kube_network_plugin: cilium
{extra}"
        ),
    )
    .expect("write inventory");
    kubedrill::inventory::load(dir).unwrap_or_else(|d| panic!("{d:?}"))
}

fn secrets() -> Secrets {
    Secrets {
        bootstrap_token: "abcdef.0123456789abcdef".into(),
        certificate_key: "a".repeat(64),
        ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
    }
}

fn kubeadm_ok(bin: &Path, args: &[&str]) -> String {
    let o = Command::new(bin).args(args).output().expect("run kubeadm");
    assert!(
        o.status.success(),
        "kubeadm {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check_version(version: &str) {
    let Some(bin) = kubeadm(version) else { return };
    assert_eq!(
        kubeadm_ok(&bin, &["version", "-o", "short"]).trim(),
        format!("v{version}")
    );
    let tpl = Templates::load().expect("templates");
    for (extra, repo) in [
        ("", "registry.k8s.io"),
        (
            "    kube_image_repo: \"registry.lab.internal:5000/k8s\"\n    kubedrill_kubeadm_timeout: \"20m\"\n    kube_controller_manager_leader_elect_lease_duration: \"60s\"\n    kube_controller_manager_leader_elect_renew_deadline: \"40s\"\n    kube_scheduler_leader_elect_lease_duration: \"60s\"\n    kubeadm_ignore_preflight_errors: [\"CreateJob\", \"NumCPU\"]\n",
            "registry.lab.internal:5000/k8s",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let inv = inventory(dir.path(), version, extra);
        let (spec, _) =
            spec::build(&inv, &SpecContext::default()).unwrap_or_else(|d| panic!("{d}"));
        let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets()).expect("init");
        let init_path = dir.path().join("init.yaml");
        std::fs::write(&init_path, &init.content).expect("write");
        let p = init_path.to_str().expect("utf-8");
        kubeadm_ok(&bin, &["config", "validate", "--config", p]);
        for h in inv.hosts.iter().filter(|h| h.name != "cp1") {
            let join = render::kubeadm::join(&tpl, &spec, &inv, h, &secrets()).expect("join");
            let jp = dir.path().join(format!("join-{}.yaml", h.name));
            std::fs::write(&jp, &join.content).expect("write");
            kubeadm_ok(
                &bin,
                &[
                    "config",
                    "validate",
                    "--config",
                    jp.to_str().expect("utf-8"),
                ],
            );
        }
        let images = kubeadm_ok(&bin, &["config", "images", "list", "--config", p]);
        let images: Vec<&str> = images.lines().collect();
        assert!(
            images.iter().all(|i| i.starts_with(&format!("{repo}/"))),
            "{images:?}"
        );
        assert!(
            !images.iter().any(|i| i.contains("kube-proxy")),
            "proxy.disabled: no kube-proxy image: {images:?}"
        );
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            assert!(
                images.contains(&format!("{repo}/{c}:v{version}").as_str()),
                "{images:?}"
            );
        }
        let sandbox = render::containerd::sandbox_image_from(&spec.image_repo, spec.kubernetes);
        assert!(
            images.contains(&sandbox.as_str()),
            "containerd's sandbox_image {sandbox} is not kubeadm's pause: {images:?}"
        );
    }
}

/// kubeadm reads the lab's `kubeadm_patches` (Kubespray's form, as a lab under TCG writes them)
/// from the directory the rendered config names, and the static pods it writes carry them.
fn check_patches(version: &str) {
    let Some(bin) = kubeadm(version) else { return };
    let tpl = Templates::load().expect("templates");
    let dir = tempfile::tempdir().expect("tmp");
    let patches = serde_json::to_string(&spec::patches::tcg_lab_adjustment()).expect("json");
    let inv = inventory(
        dir.path(),
        version,
        &format!("    kubeadm_patches: {patches}\n"),
    );
    let (spec, _) = spec::build(&inv, &SpecContext::default()).unwrap_or_else(|d| panic!("{d}"));
    let pdir = dir.path().join("patches");
    std::fs::create_dir(&pdir).expect("mkdir");
    for f in render::kubeadm::patch_files(&spec).expect("patch files") {
        let name = f.path.rsplit('/').next().expect("name");
        std::fs::write(pdir.join(name), &f.content).expect("write patch");
    }
    let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets()).expect("init");
    let want = format!("directory: \"{}\"", spec::patches::PATCHES_DIR);
    assert!(init.content.contains(&want), "{}", init.content);
    let cfg = dir.path().join("init.yaml");
    std::fs::write(
        &cfg,
        init.content
            .replace(&want, &format!("directory: \"{}\"", pdir.display())),
    )
    .expect("write");
    let dry = dir.path().join("dry");
    for (phase, target) in [
        (&["init", "phase", "etcd", "local"][..], "etcd"),
        (
            &["init", "phase", "control-plane", "apiserver"][..],
            "kube-apiserver",
        ),
    ] {
        let o = Command::new(&bin)
            .args(phase)
            .args(["--dry-run", "--config", cfg.to_str().expect("utf-8")])
            .env("KUBEADM_INIT_DRYRUN_DIR", &dry)
            .output()
            .expect("kubeadm");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains(&format!("Applied patch of type \"application/strategic-merge-patch+json\" to target \"{target}\"")),
            "{out}"
        );
        let manifest = std::fs::read_to_string(dry.join(format!("{target}.yaml")))
            .unwrap_or_else(|e| panic!("{target}.yaml in the dry-run directory: {e}\n{out}"));
        assert!(
            manifest.contains("failureThreshold: 30") && manifest.contains("cpu: 500m"),
            "{manifest}"
        );
    }
}

#[test]
fn kubeadm_1_34_applies_kubespray_patches() {
    check_patches("1.34.4");
}

#[test]
fn kubeadm_1_34_accepts_kubedrills_configs() {
    check_version("1.34.4");
}

#[test]
fn kubeadm_1_35_accepts_kubedrills_configs() {
    check_version("1.35.4");
}

/// The drill's `UpgradeConfiguration` (kube-proxy skipped, patches, raised waits, the lab's
/// ignored `CreateJob` check), validated by
/// the kubeadm that runs it (the target's) and by the one before it.
fn check_upgrade_config(version: &str) {
    let Some(bin) = kubeadm(version) else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let v: kubedrill::spec::Version = version.parse().expect("version");
    let lab = ["CreateJob".to_owned()];
    for (patches, timeout, ignore) in [
        (Some("/etc/kubernetes/patches"), Some("20m"), &lab[..]),
        (None, None, &[][..]),
    ] {
        let file = dir.path().join("upgrade.yaml");
        let text = kubedrill::drill::kubernetes::upgrade_config(v, patches, timeout, ignore);
        std::fs::write(&file, &text).expect("write");
        let out = kubeadm_ok(
            &bin,
            &[
                "config",
                "validate",
                "--config",
                file.to_str().expect("utf8"),
            ],
        );
        assert!(out.contains("ok"), "{out}\n{text}");
    }
}

#[test]
fn kubeadm_1_34_and_1_35_accept_the_drills_upgrade_configuration() {
    check_upgrade_config("1.34.4");
    check_upgrade_config("1.35.4");
}
