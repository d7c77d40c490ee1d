//! `apply` on fake nodes ([`kubedrill::host::fake::FakeHost`]): the phase runner, resume after a
//! failure, the re-run that changes nothing, and the parity of `plan` with what apply really
//! writes and runs — without VMs. The real-VM path is `scripts/cluster-e2e.sh`.

use crate::common;

use common::repo;
use kubedrill::apply::{self, ApplyOptions, Reach, node::PackageSource};
use kubedrill::connect::{HostKeySettings, SshSettings};
use kubedrill::fleet::Progress;
use kubedrill::host::SharedHost;
use kubedrill::host::fake::{Call, FakeHost, Fault};
use kubedrill::inventory::Inventory;
use kubedrill::phase::{Outcome, Step, Target};
use kubedrill::spec::{self, ClusterSpec, SpecContext};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The phases that need only a node's shell; the API phases (`cilium/wait`, `cluster/verify`)
/// talk to a real API server through a real SSH session and are exercised by cluster-e2e.
const SKIP: &[&str] = &["preflight/kernel", "cilium/wait", "cluster/verify"];

fn cluster() -> (Inventory, ClusterSpec) {
    let inv = kubedrill::inventory::load(&repo().join("inventories/lab-3node")).expect("inventory");
    let (spec, _) = spec::build(&inv, &SpecContext::default()).expect("spec");
    (inv, spec)
}

/// A control plane that answers what the join phases read from it.
fn fleet(inv: &Inventory) -> BTreeMap<String, Arc<FakeHost>> {
    let cp = inv.first_control_plane().name.clone();
    inv.hosts
        .iter()
        .map(|h| {
            let f = FakeHost::new(&h.name);
            if h.name == cp {
                f.reply("kubeadm token create", "abcdef.0123456789abcdef\n");
                f.reply("read the cluster CA", include_str!("data/tls/ca.crt"));
                f.reply("read admin.conf", "apiVersion: v1\nkind: Config\n");
            }
            (h.name.clone(), Arc::new(f))
        })
        .collect()
}

fn reach(hosts: &BTreeMap<String, Arc<FakeHost>>) -> Reach {
    Reach::Given(
        hosts
            .iter()
            .map(|(n, h)| (n.clone(), h.clone() as SharedHost))
            .collect(),
    )
}

/// Workers whose join ran say so when asked (as `test -f kubelet.conf` would).
fn remember_joins(hosts: &BTreeMap<String, Arc<FakeHost>>) {
    for h in hosts.values() {
        if h.done().contains("kubeadm/join-worker") {
            h.reply("joined?", "yes\n");
        }
    }
}

fn options(state: &std::path::Path) -> ApplyOptions {
    let skip: Vec<String> = SKIP.iter().map(|s| s.to_string()).collect();
    ApplyOptions {
        selection: apply::tree().select(&skip, &[]).expect("valid phases"),
        concurrency: 4,
        source: PackageSource::Online,
        allow_degraded: false,
        ssh: SshSettings {
            host_keys: HostKeySettings {
                file: state.join("known_hosts"),
                mode: kubedrill::ssh::HostKeyMode::Strict,
                source: "test".into(),
            },
            connect_timeout: Duration::from_secs(1),
        },
        state_dir: state.to_path_buf(),
        delete_kube_proxy: false,
    }
}

fn outcomes(r: &apply::ApplyReport, phase: &str) -> Vec<(String, &'static str)> {
    r.phases
        .iter()
        .filter(|p| p.phase == phase)
        .flat_map(|p| p.hosts.iter())
        .map(|h| (h.host.clone(), h.outcome.label()))
        .collect()
}

#[tokio::test]
async fn a_failed_join_resumes_and_a_finished_apply_changes_nothing() {
    let (inv, spec) = cluster();
    let state = tempfile::tempdir().expect("tmp");
    let opts = options(state.path());
    let hosts = fleet(&inv);
    let progress = Progress::quiet();
    // Run 1: w2's kubeadm join fails.
    hosts["w2"].fail(
        "kubeadm join",
        Fault::Exit(1, "[ERROR Port-10250]: in use".into()),
    );
    let r1 = apply::apply_on(&inv, &spec, &opts, reach(&hosts), &progress)
        .await
        .expect("apply");
    assert!(!r1.ok());
    assert_eq!(r1.failures.len(), 1, "{:?}", r1.failures);
    let f = &r1.failures[0];
    assert_eq!(
        (f.host.as_str(), f.phase.as_str()),
        ("w2", "kubeadm/join-worker")
    );
    assert!(f.stderr.contains("[ERROR Port-10250]"), "{f}");
    assert!(
        f.hint
            .as_deref()
            .is_some_and(|h| h.contains("--only-host w2")),
        "{f:?}"
    );
    // It stopped there: nothing after the failed phase ran.
    assert!(outcomes(&r1, "kubeconfig/fetch").is_empty());
    assert_eq!(outcomes(&r1, "node/swap").len(), 3);
    // The token never reached the report or the journal.
    let journal = std::fs::read_to_string(&r1.journal).expect("journal");
    assert!(!journal.contains("0123456789abcdef"), "{journal}");

    // Run 2: healed; finished phases are recognised, w2 joins, the rest follows.
    hosts["w2"].heal();
    remember_joins(&hosts);
    let r2 = apply::apply_on(&inv, &spec, &opts, reach(&hosts), &progress)
        .await
        .expect("apply");
    assert!(r2.ok(), "{:?}", r2.failures);
    assert_eq!(r2.resumed_from, Some(r1.run));
    for p in [
        "node/packages",
        "node/containerd",
        "node/sysctl",
        "kubeadm/init",
    ] {
        assert!(
            outcomes(&r2, p).iter().all(|(_, o)| *o == "unchanged"),
            "{p}: {:?}",
            outcomes(&r2, p)
        );
    }
    let joins = outcomes(&r2, "kubeadm/join-worker");
    assert!(joins.contains(&("w1".into(), "unchanged")), "{joins:?}");
    assert!(joins.contains(&("w2".into(), "changed")), "{joins:?}");
    assert_eq!(outcomes(&r2, "cilium/install"), [("cp1".into(), "changed")]);
    assert!(state.path().join("admin.conf").is_file());

    // Run 3: a finished apply changes nothing, and is not a resume.
    remember_joins(&hosts);
    let r3 = apply::apply_on(&inv, &spec, &opts, reach(&hosts), &progress)
        .await
        .expect("apply");
    assert!(r3.ok() && r3.unchanged(), "{:?}", r3.phases);
    assert_eq!(r3.resumed_from, None);
    let skipped: Vec<&str> = r3
        .phases
        .iter()
        .filter(|p| {
            matches!(
                p.hosts.first().map(|h| &h.outcome),
                Some(Outcome::Skipped(_))
            )
        })
        .map(|p| p.phase.as_str())
        .collect();
    assert_eq!(
        skipped,
        [
            "preflight/kernel",
            // Without `kubedrill_cilium_agent_cpu_weight` (a lab adjustment).
            "node/agent-cpu-weight",
            "kubeadm/join-control-plane",
            "cilium/wait",
            "cluster/verify"
        ]
    );
}

/// Secrets differ between the plan (placeholders) and a run (random): both become markers.
fn normalize(text: &str) -> String {
    let mut t = text
        .replace(
            "<bootstrap-token: created at apply, never printed>",
            "<token>",
        )
        .replace(
            "<certificate-key: created at apply, never printed>",
            "<key>",
        )
        .replace(
            "<ca-cert-hash: read from the first control plane at apply>",
            "<hash>",
        );
    // Tokens: [a-z0-9]{6}.[a-z0-9]{16}; keys and hashes: 64 hex digits.
    let is_tok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let chars: Vec<char> = t.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        let boundary = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if boundary
            && rest.len() >= 23
            && rest[..6].iter().all(|c| is_tok(*c))
            && rest[6] == '.'
            && rest[7..23].iter().all(|c| is_tok(*c))
        {
            out.push_str("<token>");
            i += 23;
            continue;
        }
        if boundary && rest.len() >= 64 && rest[..64].iter().all(|c| c.is_ascii_hexdigit()) {
            let after = rest.get(64).is_none_or(|c| !c.is_ascii_alphanumeric());
            if after {
                out.push_str(
                    if i >= 7 && chars[i - 7..i].iter().collect::<String>() == "sha256:" {
                        "<hash>"
                    } else {
                        "<key>"
                    },
                );
                i += 64;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    t = out;
    t
}

#[tokio::test]
async fn the_plan_is_what_apply_writes_and_runs() {
    let (inv, spec) = cluster();
    let state = tempfile::tempdir().expect("tmp");
    let opts = options(state.path());
    let hosts = fleet(&inv);
    let r = apply::apply_on(&inv, &spec, &opts, reach(&hosts), &Progress::quiet())
        .await
        .expect("apply");
    assert!(r.ok(), "{:?}", r.failures);
    let plan = kubedrill::plan::build_for(&spec, &inv, &PackageSource::Online, &opts.selection)
        .expect("plan");

    // What the plan says, per host: files and scripts.
    let mut planned_files: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut planned_scripts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &plan.phases {
        for s in &p.steps {
            match s {
                Step::Write {
                    target: Target::Hosts(hs),
                    file,
                } => {
                    for h in hs {
                        planned_files
                            .insert((h.clone(), file.path.clone()), normalize(&file.content));
                    }
                }
                Step::Run {
                    target: Target::Hosts(hs),
                    script: Some(script),
                    ..
                } => {
                    for h in hs {
                        planned_scripts
                            .entry(h.clone())
                            .or_default()
                            .push(normalize(script));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(!planned_files.is_empty() && !planned_scripts.is_empty());

    // What apply did, per host.
    let mut written = BTreeMap::new();
    let mut ran: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, h) in &hosts {
        for c in h.calls() {
            match c {
                Call::Upload { path, data, .. } => {
                    written.insert(
                        (name.clone(), path),
                        normalize(&String::from_utf8_lossy(&data)),
                    );
                }
                Call::Exec { script, .. } => {
                    let s = normalize(&script);
                    if planned_scripts.get(name).is_some_and(|v| v.contains(&s)) {
                        ran.entry(name.clone()).or_default().push(s);
                    }
                }
            }
        }
    }
    // Every file apply wrote is in the plan with the same content, and the reverse.
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        planned_files.keys().collect::<Vec<_>>()
    );
    for (k, content) in &written {
        assert_eq!(
            Some(content),
            planned_files.get(k),
            "{k:?} differs from the plan"
        );
    }
    // Every script the plan shows ran, on the hosts the plan names.
    for (host, scripts) in &planned_scripts {
        for s in scripts {
            assert!(
                ran.get(host).is_some_and(|r| r.contains(s)),
                "{host}: the plan's script did not run:\n{s}"
            );
        }
    }
}

#[test]
fn normalize_turns_secrets_into_markers() {
    assert_eq!(
        normalize(
            "token: abcdef.0123456789abcdef hash sha256:3e6db4a350b26b130479b629d41f7011f86419ebb99dfd181c9b34399942a555"
        ),
        "token: <token> hash sha256:<hash>"
    );
    assert_eq!(
        normalize("token: <bootstrap-token: created at apply, never printed>"),
        "token: <token>"
    );
}

/// `reset --only-host w2` of a cluster that stays is Kubespray's remove-node: cp1 (a control
/// plane that is not reset) drains w2, w2 runs the reset script, cp1 deletes w2's Node object —
/// without which kubeadm refuses w2's next join while the old Node is still Ready (the tenth lab
/// run). cp1 itself is not reset, w1 is not contacted, the local kubeconfig stays. A reset of
/// every node drains nothing and deletes no Node: the cluster goes with them.
#[tokio::test]
async fn resetting_one_worker_drains_it_and_deletes_its_node_through_a_control_plane_that_stays() {
    use kubedrill::apply::reset::{self, Scope};
    let (inv, spec) = cluster();
    let hosts = fleet(&inv);
    hosts["cp1"].reply("kubectl drain", "drained w2\n");
    hosts["cp1"].reply("kubectl delete node", "deleted node w2\n");
    for h in hosts.values() {
        h.reply(
            "kubedrill reset script",
            "kubeadm reset -f\nlink cilium_host\n",
        );
    }
    let state = tempfile::tempdir().expect("tempdir");
    std::fs::write(state.path().join("admin.conf"), "x").expect("kubeconfig");
    let mut opts = options(state.path());
    opts.selection = apply::Selection::all();

    let scope = Scope::of(&inv, &["w2".to_owned()]);
    assert_eq!(
        scope,
        Scope {
            nodes: vec!["w2".into()],
            via: Some("cp1".into())
        }
    );
    assert_eq!(scope.hosts(), ["w2", "cp1"]);
    let only: BTreeMap<String, Arc<FakeHost>> = hosts
        .iter()
        .filter(|(n, _)| scope.hosts().contains(n))
        .map(|(n, h)| (n.clone(), h.clone()))
        .collect();
    let r = reset::reset_on(&inv, &spec, &opts, &scope, reach(&only), &Progress::quiet())
        .await
        .expect("reset");
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    assert_eq!(outcomes(&r, "reset/drain"), [("cp1".to_owned(), "changed")]);
    assert_eq!(outcomes(&r, "reset/node"), [("w2".to_owned(), "changed")]);
    assert_eq!(
        outcomes(&r, "reset/delete-node"),
        [("cp1".to_owned(), "changed")]
    );
    let scripts = |h: &str| -> Vec<(String, String)> {
        hosts[h]
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Exec { label, script } => Some((label, script)),
                Call::Upload { .. } => None,
            })
            .collect()
    };
    let cp1 = scripts("cp1");
    let labels: Vec<&str> = cp1.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        ["kubectl drain", "kubectl delete node"],
        "cp1 is not reset"
    );
    let (drain, delete) = (&cp1[0].1, &cp1[1].1);
    assert!(
        drain.contains(
            "kubectl --kubeconfig /etc/kubernetes/admin.conf get node w2 --ignore-not-found"
        ) && drain.contains("drain w2 --ignore-daemonsets --delete-emptydir-data --force"),
        "{drain}"
    );
    assert!(delete.contains("delete node w2 "), "{delete}");
    assert!(scripts("w1").is_empty(), "w1 is not contacted");
    assert!(
        state.path().join("admin.conf").exists(),
        "the cluster stays, and so does its kubeconfig"
    );

    // Every node: no control plane stays, nothing is drained or deleted through the API.
    for h in hosts.values() {
        h.clear_calls();
    }
    let all = Scope::of(&inv, &[]);
    assert_eq!(all.via, None);
    let r = reset::reset_on(&inv, &spec, &opts, &all, reach(&hosts), &Progress::quiet())
        .await
        .expect("reset");
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    for h in ["cp1", "w1", "w2"] {
        let s = scripts(h);
        assert_eq!(s.len(), 1, "{h}: {s:#?}");
        assert_eq!(s[0].0, "kubedrill reset script");
    }
    assert!(!state.path().join("admin.conf").exists());
}
