//! Rendering: golden files for every Kubernetes × Cilium pair we support in the lab matrix,
//! YAML validity of everything rendered, chart compatibility of the Cilium values against the
//! real chart defaults in `tests/data/cilium-values/`, injection and secrets.
//!
//! Regenerate the goldens with `UPDATE_GOLDEN=1 cargo test --test render`, then review the diff.

use crate::common;

use common::*;
use kubedrill::drill::chart::{self, TEMPLATE_ONLY_KEYS};
use kubedrill::inventory::Inventory;
use kubedrill::plan::{self, Step};
use kubedrill::render::{self, RenderedFile, Secrets, Templates};
use kubedrill::spec::{self, ClusterSpec, SpecContext, Version};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

const KUBERNETES: [&str; 3] = ["1.29.10", "1.31.4", "1.34.2"];
const CILIUM: [&str; 4] = ["1.13.18", "1.14.19", "1.16.19", "1.19.6"];
const SEED: &str = "a3ViZWRyaWxsLWxi";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Three stacked-etcd control planes and one worker, with a registry mirror.
const MATRIX_HOSTS: &str = "\
all:
  hosts:
    cp1:
      ansible_host: 10.10.0.11
      ip: 10.10.0.11
    cp2:
      ansible_host: 10.10.0.12
      ip: 10.10.0.12
    cp3:
      ansible_host: 10.10.0.13
      ip: 10.10.0.13
    w1:
      ansible_host: 10.10.0.21
      ip: 10.10.0.21
  children:
    kube_control_plane:
      hosts:
        cp1:
        cp2:
        cp3:
    kube_node:
      hosts:
        w1:
    etcd:
      hosts:
        cp1:
        cp2:
        cp3:
";

fn matrix_vars(k: &str, c: &str) -> String {
    format!(
        "\
kube_version: \"{k}\"
cilium_version: \"{c}\"
kube_network_plugin: cilium
container_manager: containerd
kubedrill_cilium_maglev_hash_seed: \"{SEED}\"
containerd_registries_mirrors:
  - prefix: docker.io
    mirrors:
      - host: http://10.10.0.1:5000
        skip_verify: true
"
    )
}

/// Load an inventory and build its spec, panicking with the diagnostics on failure.
fn load_and_build(t: &TempInv) -> (ClusterSpec, Inventory) {
    let inv = t.load_ok();
    let (spec, _warnings) =
        spec::build(&inv, &SpecContext::default()).unwrap_or_else(|d| panic!("spec:\n{d}"));
    (spec, inv)
}

fn try_build(vars: &str) -> Result<(ClusterSpec, Inventory), String> {
    let t = TempInv::new(
        "lab",
        &[
            ("hosts.yaml", MATRIX_HOSTS),
            ("group_vars/k8s_cluster.yml", vars),
        ],
    );
    let inv = t.load_ok();
    spec::build(&inv, &SpecContext::default())
        .map(|(s, _)| (s, inv))
        .map_err(|d| d.to_string())
}

fn host<'a>(inv: &'a Inventory, name: &str) -> &'a kubedrill::inventory::Host {
    inv.hosts
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no host {name}"))
}

/// Every rendered file of the matrix for one inventory: (golden name, file).
fn render_all(spec: &ClusterSpec, inv: &Inventory) -> Vec<(String, RenderedFile)> {
    let t = Templates::load().expect("templates load");
    let secrets = Secrets::placeholders();
    let mut out = vec![
        (
            "kubeadm-init.yaml".to_owned(),
            render::kubeadm::init(&t, spec, inv, &secrets).unwrap(),
        ),
        (
            "kubeadm-join-cp2.yaml".to_owned(),
            render::kubeadm::join(&t, spec, inv, host(inv, "cp2"), &secrets).unwrap(),
        ),
        (
            "kubeadm-join-w1.yaml".to_owned(),
            render::kubeadm::join(&t, spec, inv, host(inv, "w1"), &secrets).unwrap(),
        ),
    ];
    for f in render::containerd::files(&t, spec).unwrap() {
        let name = if f.path == render::containerd::CONFIG_PATH {
            "containerd-config.toml".to_owned()
        } else {
            let registry = Path::new(&f.path)
                .parent()
                .and_then(|p| p.file_name())
                .unwrap()
                .to_str()
                .unwrap();
            format!("containerd-hosts-{registry}.toml")
        };
        out.push((name, f));
    }
    out.push((
        "cilium-values.yaml".to_owned(),
        render::cilium::values_file(spec, inv.hosts.len()).unwrap(),
    ));
    out
}

/// Parse every YAML document in a file.
fn yaml_docs(what: &str, text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}\n{text}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every leaf path of a values tree (`a.b.c`); lists and scalars are leaves.
fn leaf_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(child, &p, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Goldens
// ---------------------------------------------------------------------------------------------

#[test]
fn golden_matrix() {
    let mut failures = Vec::new();
    let mut count = 0;
    for k in KUBERNETES {
        for c in CILIUM {
            let t = TempInv::new(
                "golden-lab",
                &[
                    ("hosts.yaml", MATRIX_HOSTS),
                    ("group_vars/k8s_cluster.yml", &matrix_vars(k, c)),
                ],
            );
            let (spec, inv) = load_and_build(&t);
            let files = render_all(&spec, &inv);
            assert_eq!(
                files.len(),
                6,
                "init, two joins, containerd config + one hosts.toml, values"
            );
            for (name, f) in files {
                count += 1;
                // Every YAML file of the matrix parses (the TOML ones are checked by containerd_files).
                if name.ends_with(".yaml") {
                    let docs = yaml_docs(&format!("{k}/{c}/{name}"), &f.content);
                    assert!(
                        docs.iter().all(Value::is_object),
                        "{name}: every document is a mapping"
                    );
                }
                failures.extend(check_golden(
                    &format!("k8s-{k}_cilium-{c}/{name}"),
                    &f.content,
                ));
            }
        }
    }
    assert_eq!(count, KUBERNETES.len() * CILIUM.len() * 6);
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The goldens are checked in and nothing is left over from an older matrix. Only the matrix
/// directories (`k8s-*`) are ours; others in tests/golden belong to other tests (`drill/`).
#[test]
fn golden_dir_matches_matrix() {
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        return;
    }
    let dir = repo().join("tests/golden");
    let found: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run UPDATE_GOLDEN=1 cargo test --test render",
                dir.display()
            )
        })
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        // Other suites keep their goldens in their own directories (`migrate/`, `drill/`).
        .filter(|name| name.starts_with("k8s-"))
        .collect();
    let expected: BTreeSet<String> = KUBERNETES
        .iter()
        .flat_map(|k| CILIUM.iter().map(move |c| format!("k8s-{k}_cilium-{c}")))
        .collect();
    assert_eq!(found, expected, "stale or missing golden directories");
}

// ---------------------------------------------------------------------------------------------
// Structure of the rendered files (independent of the goldens)
// ---------------------------------------------------------------------------------------------

#[test]
fn kubeadm_files_are_valid_yaml_with_the_right_api() {
    for k in KUBERNETES {
        let t = TempInv::new(
            "lab",
            &[
                ("hosts.yaml", MATRIX_HOSTS),
                ("group_vars/k8s_cluster.yml", &matrix_vars(k, "1.16.19")),
            ],
        );
        let (spec, inv) = load_and_build(&t);
        let files = render_all(&spec, &inv);
        let v4 = k.parse::<Version>().unwrap().at_least(1, 31);
        let api = if v4 {
            "kubeadm.k8s.io/v1beta4"
        } else {
            "kubeadm.k8s.io/v1beta3"
        };

        let init = &files[0].1;
        assert_eq!(init.path, render::kubeadm::INIT_CONFIG_PATH);
        assert_eq!(init.mode, 0o600);
        assert!(init.sensitive);
        let docs = yaml_docs("init", &init.content);
        assert_eq!(
            docs.len(),
            3,
            "{k}: Init, Cluster and Kubelet configurations"
        );
        let (ic, cc, kc) = (&docs[0], &docs[1], &docs[2]);
        assert_eq!(ic["apiVersion"], json!(api), "{k}");
        assert_eq!(ic["kind"], json!("InitConfiguration"));
        assert_eq!(cc["apiVersion"], json!(api), "{k}");
        assert_eq!(cc["kind"], json!("ClusterConfiguration"));
        assert_eq!(kc["kind"], json!("KubeletConfiguration"));
        assert_eq!(kc["cgroupDriver"], json!("systemd"));
        assert_eq!(
            ic["skipPhases"],
            json!(["addon/kube-proxy"]),
            "{k}: kube-proxy is always skipped"
        );
        assert_eq!(ic["nodeRegistration"]["name"], json!("cp1"));
        let extra = &ic["nodeRegistration"]["kubeletExtraArgs"];
        if v4 {
            assert_eq!(
                extra,
                &json!([{"name": "node-ip", "value": "10.10.0.11"}]),
                "{k}"
            );
            assert_eq!(cc["proxy"], json!({"disabled": true}), "{k}");
        } else {
            assert_eq!(extra, &json!({"node-ip": "10.10.0.11"}), "{k}");
            assert!(
                cc.get("proxy").is_none(),
                "{k}: v1beta3 has no proxy.disabled"
            );
        }
        assert_eq!(
            ic["localAPIEndpoint"],
            json!({"advertiseAddress": "10.10.0.11", "bindPort": 6443})
        );
        assert!(
            ic["certificateKey"]
                .as_str()
                .unwrap()
                .starts_with("<certificate-key"),
            "three control planes upload certs"
        );
        assert_eq!(cc["kubernetesVersion"], json!(format!("v{k}")));
        assert_eq!(cc["controlPlaneEndpoint"], json!("10.10.0.11:6443"));
        assert_eq!(cc["clusterName"], json!("cluster.local"));
        assert_eq!(
            cc["networking"],
            json!({"podSubnet": "10.233.64.0/18", "serviceSubnet": "10.233.0.0/18", "dnsDomain": "cluster.local"})
        );
        assert_eq!(
            cc["apiServer"]["certSANs"],
            json!([
                "10.10.0.11",
                "cp1",
                "cp2",
                "10.10.0.12",
                "cp3",
                "10.10.0.13",
                "localhost",
                "127.0.0.1"
            ])
        );

        // Join, control plane.
        let docs = yaml_docs("join cp2", &files[1].1.content);
        assert_eq!(docs.len(), 1);
        let j = &docs[0];
        assert_eq!(j["apiVersion"], json!(api));
        assert_eq!(j["kind"], json!("JoinConfiguration"));
        assert_eq!(
            j["discovery"]["bootstrapToken"]["apiServerEndpoint"],
            json!("10.10.0.11:6443")
        );
        assert_eq!(j["nodeRegistration"]["name"], json!("cp2"));
        assert_eq!(
            j["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
            json!("10.10.0.12")
        );
        assert!(j["controlPlane"]["certificateKey"].is_string());
        if v4 {
            assert_eq!(
                j["nodeRegistration"]["kubeletExtraArgs"],
                json!([{"name": "node-ip", "value": "10.10.0.12"}])
            );
        } else {
            assert_eq!(
                j["nodeRegistration"]["kubeletExtraArgs"],
                json!({"node-ip": "10.10.0.12"})
            );
        }
        // Join, worker.
        let docs = yaml_docs("join w1", &files[2].1.content);
        let j = &docs[0];
        assert_eq!(j["nodeRegistration"]["name"], json!("w1"));
        assert!(
            j.get("controlPlane").is_none(),
            "a worker joins without controlPlane"
        );
        assert!(j["nodeRegistration"].get("taints").is_none());
    }
}

#[test]
fn control_plane_that_also_works_is_untainted() {
    let hosts = MATRIX_HOSTS.replace(
        "    kube_node:\n      hosts:\n        w1:\n",
        "    kube_node:\n      hosts:\n        w1:\n        cp2:\n",
    );
    let t = TempInv::new(
        "lab",
        &[
            ("hosts.yaml", &hosts),
            (
                "group_vars/k8s_cluster.yml",
                &matrix_vars("1.31.4", "1.16.19"),
            ),
        ],
    );
    let (spec, inv) = load_and_build(&t);
    let files = render_all(&spec, &inv);
    let j = &yaml_docs("join cp2", &files[1].1.content)[0];
    assert_eq!(j["nodeRegistration"]["taints"], json!([]));
    let i = &yaml_docs("init", &files[0].1.content)[0];
    assert!(i["nodeRegistration"].get("taints").is_none());
}

#[test]
fn single_control_plane_does_not_upload_certs() {
    let t = basic_inventory("kube_version: \"1.29.10\"\n");
    let (spec, inv) = load_and_build(&t);
    let tpl = Templates::load().unwrap();
    let init = render::kubeadm::init(&tpl, &spec, &inv, &Secrets::placeholders()).unwrap();
    let docs = yaml_docs("init", &init.content);
    assert!(docs[0].get("certificateKey").is_none());
    let plan = plan::build(&spec, &inv).unwrap();
    let cmds: Vec<String> = plan_steps(&plan)
        .filter_map(|s| match s {
            Step::Run { command, .. } => Some(command.clone()),
            _ => None,
        })
        .collect();
    assert!(
        cmds.iter()
            .any(|c| c == "kubeadm init --config /etc/kubernetes/kubedrill/kubeadm-init.yaml"),
        "{cmds:?}"
    );
}

#[test]
fn cilium_values_are_valid_yaml_and_round_trip() {
    for c in CILIUM {
        let t = TempInv::new(
            "lab",
            &[
                ("hosts.yaml", MATRIX_HOSTS),
                ("group_vars/k8s_cluster.yml", &matrix_vars("1.31.4", c)),
            ],
        );
        let (spec, inv) = load_and_build(&t);
        let f = render::cilium::values_file(&spec, inv.hosts.len()).unwrap();
        assert_eq!(f.path, render::cilium::VALUES_PATH);
        assert!(!f.sensitive);
        let docs = yaml_docs("values", &f.content);
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0],
            render::cilium::values(&spec, inv.hosts.len()),
            "{c}: the file says what values() says"
        );
        let v = &docs[0];
        let cv: Version = c.parse().unwrap();
        if cv.at_least(1, 14) {
            assert_eq!(v["routingMode"], json!("native"), "{c}");
            assert_eq!(v["kubeProxyReplacement"], json!(true), "{c}");
            assert!(v.get("tunnel").is_none(), "{c}");
        } else {
            assert_eq!(v["tunnel"], json!("disabled"), "{c}");
            assert_eq!(v["kubeProxyReplacement"], json!("strict"), "{c}");
            assert!(v.get("routingMode").is_none(), "{c}");
        }
        assert!(
            v.get("tunnelProtocol").is_none(),
            "{c}: no tunnelProtocol with native routing and opt dispatch"
        );
        assert_eq!(v["ipv4NativeRoutingCIDR"], json!("10.233.64.0/18"));
        assert_eq!(v["autoDirectNodeRoutes"], json!(true));
        assert_eq!(v["k8sServiceHost"], json!("10.10.0.11"));
        assert_eq!(v["k8sServicePort"], json!(6443));
        assert_eq!(
            v["loadBalancer"],
            json!({"mode": "dsr", "dsrDispatch": "opt", "algorithm": "maglev", "acceleration": "disabled"})
        );
        assert_eq!(v["maglev"], json!({"tableSize": 16381, "hashSeed": SEED}));
        assert_eq!(
            v["bpf"],
            json!({"masquerade": true, "hostLegacyRouting": false})
        );
        assert_eq!(v["operator"], json!({"replicas": 2}));
        assert_eq!(
            v["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"],
            json!(["10.233.64.0/18"])
        );
    }
}

#[test]
fn extra_values_are_merged_last() {
    let vars = format!(
        "{}cilium_extra_values:\n  operator:\n    replicas: 3\n    prometheus:\n      enabled: true\n  hubble:\n    relay:\n      enabled: true\n",
        matrix_vars("1.31.4", "1.16.19")
    );
    let (spec, inv) = try_build(&vars).unwrap();
    let v = render::cilium::values(&spec, inv.hosts.len());
    assert_eq!(
        v["operator"],
        json!({"replicas": 3, "prometheus": {"enabled": true}})
    );
    assert_eq!(
        v["hubble"],
        json!({"enabled": false, "relay": {"enabled": true}})
    );
}

#[test]
fn values_for_one_node_have_one_operator() {
    let t = TempInv::new(
        "one",
        &[(
            "inventory.ini",
            "[kube_control_plane]\ncp1 ip=10.0.0.1\n[kube_node]\ncp1\n",
        )],
    );
    let (spec, inv) = load_and_build(&t);
    assert_eq!(
        render::cilium::values(&spec, inv.hosts.len())["operator"]["replicas"],
        json!(1)
    );
}

#[test]
fn image_variables_turn_digests_off_and_name_the_images() {
    let (spec, inv) = try_build(&format!(
        "cilium_version: \"1.19.7\"\nquay_image_repo: registry.local:5000\ncilium_operator_image_tag: v1.19.7-fix\nkubedrill_cilium_startup_timeout: 30m\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
    ))
    .unwrap();
    let v = render::cilium::values(&spec, inv.hosts.len());
    let agent = json!({"repository": "registry.local:5000/cilium/cilium", "tag": "v1.19.7", "useDigest": false});
    assert_eq!(v["image"], agent);
    assert_eq!(v["preflight"]["image"], agent);
    assert_eq!(
        v["operator"]["image"],
        json!({"repository": "registry.local:5000/cilium/operator", "tag": "v1.19.7-fix", "useDigest": false})
    );
    assert_eq!(v["operator"]["replicas"], json!(2));
    // 30 minutes at the chart's 2 s interval, and the agent's own start-hook limit (1.19+).
    assert_eq!(
        v["startupProbe"],
        json!({"failureThreshold": 900, "periodSeconds": 2})
    );
    assert_eq!(
        v["extraConfig"],
        json!({"crd-wait-timeout": "1800s", "hive-start-timeout": "1800s"})
    );
    assert_eq!(v.get("resources"), None, "no request unless asked");
    // The agent's CPU request (a lab under TCG sets it), before the user's extra values.
    let (spec, inv) = try_build(&format!(
        "cilium_version: \"1.19.7\"\nkubedrill_cilium_agent_cpu_request: 500m\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
    ))
    .unwrap();
    let v = render::cilium::values(&spec, inv.hosts.len());
    assert_eq!(v["resources"], json!({"requests": {"cpu": "500m"}}));
    // The operator's lease (a lab under TCG sets it) joins the agent options in extraConfig.
    let (spec, inv) = try_build(&format!(
        "cilium_version: \"1.19.7\"\nkubedrill_cilium_startup_timeout: 30m\nkubedrill_cilium_operator_leader_elect_lease_duration: 1m\nkubedrill_cilium_operator_leader_elect_renew_deadline: 40s\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
    ))
    .unwrap();
    let v = render::cilium::values(&spec, inv.hosts.len());
    assert_eq!(
        v["extraConfig"],
        json!({"crd-wait-timeout": "1800s", "hive-start-timeout": "1800s", "leader-election-lease-duration": "60s", "leader-election-renew-deadline": "40s"})
    );
    let e = try_build(&format!(
        "cilium_version: \"1.19.7\"\nkubedrill_cilium_operator_leader_elect_renew_deadline: 20s\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
    ))
    .expect_err("deadline beyond the default lease");
    assert!(
        e.contains("kubedrill_cilium_operator_leader_elect_renew_deadline"),
        "{e}"
    );

    // Kubespray's offline fix names the operator image in full: the chart must not add
    // `-generic` again.
    let (spec, inv) = try_build(&format!(
        "cilium_version: \"1.19.7\"\ncilium_operator_image_repo: registry.local/cilium/operator-generic\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
    ))
    .unwrap();
    let v = render::cilium::values(&spec, inv.hosts.len());
    assert_eq!(
        v["operator"]["image"],
        json!({"override": "registry.local/cilium/operator-generic:v1.19.7"})
    );
    assert_eq!(v["image"]["repository"], json!("quay.io/cilium/cilium"));

    // No image variable: the chart's digest-pinned defaults stay, and no startup probe change.
    let (spec, inv) = try_build(&format!(
        "cilium_version: \"1.19.7\"\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
    ))
    .unwrap();
    let v = render::cilium::values(&spec, inv.hosts.len());
    assert!(v.get("image").is_none() && v.get("preflight").is_none());
    assert!(v["operator"].get("image").is_none() && v.get("startupProbe").is_none());
}

/// Strings that a YAML 1.1 reader (Helm) would take for booleans, numbers or null must be quoted.
#[test]
fn ambiguous_strings_are_quoted_in_values() {
    let ambiguous = [
        "y", "n", "Y", "N", "0755", "1_000", "0x1F", "12:30", "~", "null", "1e3", ".5", "+1",
    ];
    let mut vars = matrix_vars("1.31.4", "1.16.19");
    vars.push_str("cilium_extra_values:\n  podLabels:\n");
    for (i, s) in ambiguous.iter().enumerate() {
        vars.push_str(&format!("    l{i}: \"{s}\"\n"));
    }
    let (spec, inv) = try_build(&vars).unwrap();
    let f = render::cilium::values_file(&spec, inv.hosts.len()).unwrap();
    let v = &yaml_docs("values", &f.content)[0];
    for (i, s) in ambiguous.iter().enumerate() {
        assert_eq!(
            v["podLabels"][format!("l{i}")],
            json!(s),
            "{s} survives a YAML 1.2 round trip"
        );
        let unquoted = format!("l{i}: {s}\n");
        assert!(
            !f.content.contains(&unquoted),
            "{s:?} is written unquoted; a YAML 1.1 reader would not read a string:\n{}",
            f.content
        );
    }
}

#[test]
fn containerd_files() {
    for (k, pause) in [("1.29.10", "3.9"), ("1.31.4", "3.10"), ("1.34.2", "3.10.1")] {
        let t = TempInv::new(
            "lab",
            &[
                ("hosts.yaml", MATRIX_HOSTS),
                ("group_vars/k8s_cluster.yml", &matrix_vars(k, "1.16.19")),
            ],
        );
        let (spec, inv) = load_and_build(&t);
        let files = render_all(&spec, &inv);
        let cfg = &files
            .iter()
            .find(|(n, _)| n == "containerd-config.toml")
            .unwrap()
            .1;
        assert!(
            cfg.content.contains(&format!(
                "sandbox_image = \"registry.k8s.io/pause:{pause}\""
            )),
            "{k}:\n{}",
            cfg.content
        );
        assert!(cfg.content.contains("SystemdCgroup = true"));
        assert!(
            cfg.content
                .contains("config_path = \"/etc/containerd/certs.d\"")
        );
        let hosts = &files
            .iter()
            .find(|(n, _)| n == "containerd-hosts-docker.io.toml")
            .unwrap()
            .1;
        assert_eq!(hosts.path, "/etc/containerd/certs.d/docker.io/hosts.toml");
        assert!(
            hosts
                .content
                .contains("server = \"https://registry-1.docker.io\"")
        );
        assert!(hosts.content.contains("[host.\"http://10.10.0.1:5000\"]"));
        assert!(
            hosts
                .content
                .contains("capabilities = [\"pull\",\"resolve\"]"),
            "{}",
            hosts.content
        );
        assert!(hosts.content.contains("skip_verify = true"));
    }
}

// ---------------------------------------------------------------------------------------------
// Chart compatibility against tests/data/cilium-values
// ---------------------------------------------------------------------------------------------

/// The data dir's versions, oldest first.
fn chart_versions() -> Vec<(Version, PathBuf)> {
    let dir = repo().join("tests/data/cilium-values");
    let mut out: Vec<(Version, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let e = e.ok()?;
            let v: Version = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("values.yaml")))
        })
        .collect();
    out.sort();
    out
}

/// The chart key scanner lives in the library (the drill's values migration prunes with it).
fn chart_keys(text: &str) -> HashSet<String> {
    chart::declared_keys(text)
}

#[test]
fn chart_key_scanner_self_test() {
    let keys = |v: &str| {
        chart_keys(
            &std::fs::read_to_string(
                repo().join(format!("tests/data/cilium-values/{v}/values.yaml")),
            )
            .unwrap(),
        )
    };
    let k111 = keys("1.11.20");
    for p in [
        "maglev.tableSize",
        "maglev.hashSeed",
        "loadBalancer.acceleration",
        "loadBalancer.dsrDispatch",
        "bpf.hostRouting",
        "bpf.masquerade",
        "k8sServiceHost",
        "tunnel",
        "kubeProxyReplacement",
        "ipam.operator.clusterPoolIPv4PodCIDRList",
        "operator.replicas",
        "hubble.enabled",
    ] {
        assert!(k111.contains(p), "1.11.20 declares {p}");
    }
    assert!(!k111.contains("routingMode"));
    assert!(!k111.contains("bpf.hostLegacyRouting"));
    let k116 = keys("1.16.19");
    for p in [
        "maglev.tableSize",
        "maglev.hashSeed",
        "loadBalancer.mode",
        "loadBalancer.dsrDispatch",
        "bpf.hostLegacyRouting",
        "routingMode",
        "tunnelProtocol",
        "devices",
        "nodePort.enabled",
    ] {
        assert!(k116.contains(p), "1.16.19 declares {p}");
    }
    assert!(!k116.contains("tunnel"), "`tunnel` was removed in 1.15");
    assert!(!k116.contains("loadBalancer.nonsense"));
    assert!(!k116.contains("bpf.hostRouting"));
    assert!(!keys("1.15.19").contains("tunnel"));
    assert!(keys("1.14.19").contains("tunnel"));

    // The layout rules on a small sample.
    let sample = "a:\n  b: 1\n# top: x\n# not a key: x\n  c:\n    d: |\n      e: 1\n  # f: 2\n  #g:\n  #   h: 3\nm: {}\n# -- doc\n# n:\n#   n2: 1\n\n# o: 1\np: 2\n";
    let k = chart_keys(sample);
    let mut got: Vec<&str> = k.iter().map(String::as_str).collect();
    got.sort();
    // `m: {}` is followed by commented keys at its own column: read as its children and as written
    // (so `n`, `n.n2`, `o` appear both ways; `m.n2` is the as-written reading of the nested line).
    assert_eq!(
        got,
        [
            "a", "a.b", "a.c", "a.c.d", "a.f", "a.g", "a.g.h", "m", "m.n", "m.n.n2", "m.n2", "m.o",
            "n", "o", "p", "top"
        ]
    );
}

#[test]
fn copied_chart_data_matches_the_readme_checksums() {
    let dir = repo().join("tests/data/cilium-values");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let versions = chart_versions();
    assert!(versions.len() >= 10, "1.11 to 1.20 are in the data");
    for (v, path) in &versions {
        let bytes = std::fs::read(path).unwrap();
        let sum: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let row = format!("| {v}/values.yaml | {} | `{sum}` |", bytes.len());
        assert!(
            readme.contains(&row),
            "{} does not match the README's size/sha256 row",
            path.display()
        );
    }
}

/// A spec with every feature that has a chart value: native routing + DSR + Maglev + XDP native +
/// devices + direct routing device.
fn full_featured_vars(c: Version) -> String {
    format!(
        "\
cilium_version: \"{c}\"
cilium_tunnel_mode: disabled
cilium_loadbalancer_mode: dsr
cilium_auto_direct_node_routes: true
cilium_native_routing_cidr: 10.233.0.0/16
cilium_enable_bpf_masquerade: true
cilium_enable_host_legacy_routing: false
cilium_enable_hubble: true
kubedrill_cilium_lb_algorithm: maglev
kubedrill_cilium_maglev_table_size: 16381
kubedrill_cilium_maglev_hash_seed: \"{SEED}\"
kubedrill_cilium_lb_acceleration: native
kubedrill_cilium_devices: [eth0]
kubedrill_cilium_direct_routing_device: eth0
quay_image_repo: registry.local:5000
kubedrill_cilium_startup_timeout: 30m
"
    )
}

/// Other shapes: tunnels, Geneve DSR, no kube-proxy replacement; each only where it is valid.
fn other_shapes(c: Version) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (
            "vxlan tunnel + snat",
            format!(
                "cilium_version: \"{c}\"\ncilium_tunnel_mode: vxlan\ncilium_loadbalancer_mode: snat\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
            ),
        ),
        (
            "geneve tunnel + random",
            format!(
                "cilium_version: \"{c}\"\ncilium_tunnel_mode: geneve\ncilium_loadbalancer_mode: snat\nkubedrill_cilium_lb_algorithm: random\n"
            ),
        ),
        (
            "kube-proxy kept",
            format!(
                "cilium_version: \"{c}\"\ncilium_kube_proxy_replacement: false\nkube_proxy_remove: false\ncilium_loadbalancer_mode: snat\nkubedrill_cilium_lb_algorithm: random\ncilium_enable_bpf_masquerade: false\n"
            ),
        ),
        (
            "hybrid native",
            format!(
                "cilium_version: \"{c}\"\ncilium_loadbalancer_mode: hybrid\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
            ),
        ),
    ];
    v.push((
        "operator image as a full reference",
        format!(
            "cilium_version: \"{c}\"\ncilium_operator_image_repo: registry.local/cilium/operator-generic\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n"
        ),
    ));
    if c.at_least(1, 14) {
        v.push(("geneve DSR native", format!("cilium_version: \"{c}\"\nkubedrill_cilium_dsr_dispatch: geneve\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n")));
        v.push(("geneve DSR geneve tunnel", format!("cilium_version: \"{c}\"\ncilium_tunnel_mode: geneve\nkubedrill_cilium_dsr_dispatch: geneve\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n")));
    }
    if c.at_least(1, 15) {
        v.push(("best-effort XDP", format!("cilium_version: \"{c}\"\nkubedrill_cilium_lb_acceleration: best-effort\nkubedrill_cilium_maglev_hash_seed: \"{SEED}\"\n")));
    }
    if !c.at_least(1, 16) {
        v.push(("partial", format!("cilium_version: \"{c}\"\ncilium_kube_proxy_replacement: partial\nkube_proxy_remove: false\ncilium_loadbalancer_mode: snat\nkubedrill_cilium_lb_algorithm: random\ncilium_enable_bpf_masquerade: false\n")));
    }
    v
}

#[test]
fn rendered_values_exist_in_every_chart_version() {
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (c, path) in chart_versions() {
        let declared = chart_keys(&std::fs::read_to_string(&path).unwrap());
        let mut shapes = vec![("full-featured", full_featured_vars(c))];
        shapes.extend(other_shapes(c));
        for (shape, vars) in shapes {
            let (spec, inv) =
                try_build(&vars).unwrap_or_else(|e| panic!("Cilium {c}, {shape}: {e}"));
            let values = render::cilium::values(&spec, inv.hosts.len());
            let mut leaves = Vec::new();
            leaf_paths(&values, "", &mut leaves);
            for leaf in leaves {
                // `extraConfig` is the chart's free-form map into the agent's ConfigMap.
                let free_form =
                    leaf.starts_with("extraConfig.") && declared.contains("extraConfig");
                if !free_form
                    && !declared.contains(&leaf)
                    && !TEMPLATE_ONLY_KEYS.contains(&leaf.as_str())
                {
                    missing
                        .entry(format!("{c} ({shape})"))
                        .or_default()
                        .push(leaf);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "rendered keys absent from the chart's values.yaml:\n{missing:#?}"
    );
}

#[test]
fn version_specific_names_only_where_the_chart_accepts_them() {
    for (c, _) in chart_versions() {
        let mut shapes = vec![("full-featured", full_featured_vars(c))];
        shapes.extend(other_shapes(c));
        for (shape, vars) in shapes {
            let (spec, inv) =
                try_build(&vars).unwrap_or_else(|e| panic!("Cilium {c}, {shape}: {e}"));
            let f = render::cilium::values_file(&spec, inv.hosts.len()).unwrap();
            let v = &yaml_docs("values", &f.content)[0];
            let ctx = format!("Cilium {c}, {shape}:\n{}", f.content);
            if c.at_least(1, 14) {
                assert!(v.get("tunnel").is_none(), "{ctx}");
                assert!(v["routingMode"].is_string(), "{ctx}");
                assert!(
                    v["kubeProxyReplacement"].is_boolean()
                        || v["kubeProxyReplacement"] == json!("partial"),
                    "{ctx}"
                );
            } else {
                assert!(v.get("routingMode").is_none(), "{ctx}");
                assert!(v.get("tunnelProtocol").is_none(), "{ctx}");
                assert!(
                    ["disabled", "vxlan", "geneve"].contains(&v["tunnel"].as_str().unwrap()),
                    "{ctx}"
                );
                assert!(
                    ["strict", "partial", "disabled"]
                        .contains(&v["kubeProxyReplacement"].as_str().unwrap()),
                    "{ctx}"
                );
            }
            if !c.at_least(1, 15) {
                assert!(!f.content.contains("best-effort"), "{ctx}");
            }
            if c.at_least(1, 16) {
                assert_ne!(v["kubeProxyReplacement"], json!("partial"), "{ctx}");
            }
            // Native routing always carries its CIDR (1.18+ charts fail without one).
            if v["routingMode"] == json!("native") || v["tunnel"] == json!("disabled") {
                assert!(v["ipv4NativeRoutingCIDR"].is_string(), "{ctx}");
                // tunnelProtocol with native routing only for Geneve DSR dispatch.
                if v.get("tunnelProtocol").is_some() {
                    assert_eq!(v["loadBalancer"]["dsrDispatch"], json!("geneve"), "{ctx}");
                }
            }
            // BPF host routing: hostRouting only on 1.11, hostLegacyRouting from 1.12.
            assert_eq!(
                v["bpf"].get("hostRouting").is_some(),
                !c.at_least(1, 12),
                "{ctx}"
            );
        }
    }
}

#[test]
fn best_effort_below_1_15_is_refused_not_rendered() {
    for (c, _) in chart_versions() {
        let vars =
            format!("cilium_version: \"{c}\"\nkubedrill_cilium_lb_acceleration: best-effort\n");
        match try_build(&vars) {
            Ok((spec, inv)) => {
                assert!(c.at_least(1, 15), "Cilium {c} accepted best-effort");
                let f = render::cilium::values_file(&spec, inv.hosts.len()).unwrap();
                assert!(
                    f.content.contains("acceleration: best-effort"),
                    "{}",
                    f.content
                );
            }
            Err(e) => {
                assert!(!c.at_least(1, 15), "Cilium {c} refused best-effort: {e}");
                assert!(e.contains("needs Cilium ≥ 1.15"), "{e}");
            }
        }
    }
}

#[test]
fn old_chart_names_in_extra_values_are_translated() {
    // The prod-example style: 1.13 names in cilium_extra_values, rendered for a newer chart.
    for c in ["1.14.19", "1.16.19", "1.19.6"] {
        let vars = format!(
            "cilium_version: \"{c}\"\ncilium_extra_values:\n  tunnel: disabled\n  kubeProxyReplacement: strict\n  ipv4NativeRoutingCIDR: 10.233.0.0/16\n  bpf:\n    hostLegacyRouting: false\n"
        );
        let (spec, inv) = try_build(&vars).unwrap();
        let v = render::cilium::values(&spec, inv.hosts.len());
        assert!(v.get("tunnel").is_none(), "{c}: {v}");
        assert_eq!(v["routingMode"], json!("native"));
        assert_eq!(v["kubeProxyReplacement"], json!(true));
        assert_eq!(v["ipv4NativeRoutingCIDR"], json!("10.233.0.0/16"));
    }
    // And new names for an old chart.
    let vars = "cilium_version: \"1.13.18\"\ncilium_loadbalancer_mode: snat\ncilium_extra_values:\n  routingMode: tunnel\n  tunnelProtocol: geneve\n  kubeProxyReplacement: true\n";
    let (spec, inv) = try_build(vars).unwrap();
    let v = render::cilium::values(&spec, inv.hosts.len());
    assert_eq!(v["tunnel"], json!("geneve"));
    assert_eq!(v["kubeProxyReplacement"], json!("strict"));
    assert!(
        v.get("routingMode").is_none() && v.get("tunnelProtocol").is_none(),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Injection
// ---------------------------------------------------------------------------------------------

const EVIL: &str = "x\\nevil: true";

fn assert_no_new_keys(what: &str, docs: &[Value], expected: &[&[&str]]) {
    assert_eq!(docs.len(), expected.len(), "{what}: document count changed");
    for (d, exp) in docs.iter().zip(expected) {
        let want: BTreeSet<String> = exp.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(keys(d), want, "{what}: top-level keys changed");
        assert!(
            !serde_json::to_string(d).unwrap().contains("\"evil\":"),
            "{what}: an `evil` key appeared: {d}"
        );
    }
}

const INIT_KEYS_V4: [&[&str]; 3] = [
    &[
        "apiVersion",
        "kind",
        "bootstrapTokens",
        "nodeRegistration",
        "localAPIEndpoint",
        "skipPhases",
    ],
    &[
        "apiVersion",
        "kind",
        "kubernetesVersion",
        "clusterName",
        "controlPlaneEndpoint",
        "networking",
        "apiServer",
        "proxy",
    ],
    &["apiVersion", "kind", "cgroupDriver"],
];

#[test]
fn cluster_name_cannot_inject_keys() {
    let vars = format!(
        "{}cluster_name: \"{EVIL}\"\napiserver_loadbalancer_domain_name: \"{EVIL}\"\n",
        matrix_vars("1.31.4", "1.16.19")
    );
    let (spec, inv) = try_build(&vars).unwrap();
    assert_eq!(spec.cluster_name, "x\nevil: true");
    let files = render_all(&spec, &inv);
    let docs = yaml_docs("init", &files[0].1.content);
    let mut init_keys = INIT_KEYS_V4;
    let with_cert_key: Vec<&str> = INIT_KEYS_V4[0]
        .iter()
        .copied()
        .chain(["certificateKey"])
        .collect();
    init_keys[0] = &with_cert_key;
    assert_no_new_keys("init", &docs, &init_keys);
    assert_eq!(docs[1]["clusterName"], json!("x\nevil: true"));
    assert_eq!(docs[1]["networking"]["dnsDomain"], json!("x\nevil: true"));
    // (Endpoint brackets hosts that contain `:`, as for IPv6.)
    assert_eq!(
        docs[1]["controlPlaneEndpoint"],
        json!("[x\nevil: true]:6443")
    );
    let join = yaml_docs("join", &files[2].1.content);
    assert_no_new_keys(
        "join w1",
        &join,
        &[&["apiVersion", "kind", "discovery", "nodeRegistration"]],
    );
    let values = yaml_docs("values", &files[5].1.content);
    assert!(values[0].get("evil").is_none());
    assert_eq!(values[0]["k8sServiceHost"], json!("x\nevil: true"));
}

#[test]

fn node_name_cannot_inject_keys() {
    // Inventories refuse such names (tests/hostile.rs); the renderer escapes them all the same,
    // so the names are set after loading.
    let hosts = "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1:\n          ip: 10.10.0.11\n    kube_node:\n      hosts:\n        w1:\n          ip: 10.10.0.21\n".to_string();
    let t = TempInv::new(
        "lab",
        &[
            ("hosts.yaml", &hosts),
            (
                "group_vars/k8s_cluster.yml",
                &matrix_vars("1.31.4", "1.16.19"),
            ),
        ],
    );
    let mut inv = t.load_ok();
    inv.hosts[0].name = "cp1\nevil: true".into();
    inv.hosts[1].name = EVIL.into();
    let (spec, _) = spec::build(&inv, &SpecContext::default()).unwrap_or_else(|d| panic!("{d}"));
    let tpl = Templates::load().unwrap();
    let secrets = Secrets::placeholders();
    let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap();
    let docs = yaml_docs("init", &init.content);
    assert_no_new_keys("init", &docs, &INIT_KEYS_V4);
    assert_eq!(
        docs[0]["nodeRegistration"]["name"],
        json!("cp1\nevil: true")
    );
    let join = render::kubeadm::join(&tpl, &spec, &inv, &inv.hosts[1], &secrets).unwrap();
    assert_no_new_keys(
        "join",
        &yaml_docs("join", &join.content),
        &[&["apiVersion", "kind", "discovery", "nodeRegistration"]],
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Matches the bootstrap-token pattern `[a-z0-9]{6}\.[a-z0-9]{16}` anywhere in `s`.
fn find_bootstrap_token(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let tok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (0..b.len().saturating_sub(22)).find_map(|i| {
        let ok = b[i..i + 6].iter().all(|c| tok(*c))
            && b[i + 6] == b'.'
            && b[i + 7..i + 23].iter().all(|c| tok(*c));
        ok.then(|| &s[i..i + 23])
    })
}

#[test]
fn token_matcher_self_test() {
    assert_eq!(
        find_bootstrap_token("token: \"abcdef.0123456789abcdef\""),
        Some("abcdef.0123456789abcdef")
    );
    assert_eq!(
        find_bootstrap_token("xabcdef.0123456789abcdef"),
        Some("abcdef.0123456789abcdef")
    );
    assert_eq!(find_bootstrap_token("abcdef.0123456789abcde"), None);
    assert_eq!(find_bootstrap_token("ABCDEF.0123456789ABCDEF"), None);
    assert_eq!(find_bootstrap_token("io.containerd.grpc.v1.cri"), None);
}

fn plan_steps(plan: &plan::Plan) -> impl Iterator<Item = &Step> {
    plan.phases.iter().flat_map(|p| p.steps.iter())
}

#[test]
fn plan_holds_only_secret_placeholders() {
    let mut inventories = vec![
        repo().join("inventories/lab-3node"),
        repo().join("inventories/prod-example"),
    ];
    let t = TempInv::new(
        "lab",
        &[
            ("hosts.yaml", MATRIX_HOSTS),
            (
                "group_vars/k8s_cluster.yml",
                &matrix_vars("1.29.10", "1.13.18"),
            ),
        ],
    );
    inventories.push(t.dir.clone());
    for path in inventories {
        let inv = kubedrill::inventory::load(&path).unwrap();
        let (spec, _) =
            spec::build(&inv, &SpecContext::default()).unwrap_or_else(|d| panic!("{d}"));
        let plan = plan::build(&spec, &inv).unwrap();
        let mut files = 0;
        let mut kubeadm_files = 0;
        for step in plan_steps(&plan) {
            let text = match step {
                Step::Write { file, .. } => {
                    files += 1;
                    if file.path.starts_with("/etc/kubernetes/kubedrill/kubeadm-") {
                        kubeadm_files += 1;
                        assert!(file.sensitive && file.mode == 0o600, "{}", file.path);
                        assert!(
                            file.content
                                .contains("<bootstrap-token: created at apply, never printed>"),
                            "{}",
                            file.content
                        );
                    }
                    &file.content
                }
                Step::Run {
                    command, script, ..
                } => {
                    assert_eq!(
                        find_bootstrap_token(script.as_deref().unwrap_or_default()),
                        None
                    );
                    command
                }
                Step::Check { what, .. } => what,
                Step::Upload { remote, .. } => remote,
            };
            assert_eq!(
                find_bootstrap_token(text),
                None,
                "{}: a bootstrap token in the plan:\n{text}",
                path.display()
            );
        }
        assert!(
            files > 5 && kubeadm_files == inv.hosts.len(),
            "{}: {files} files, {kubeadm_files} kubeadm files",
            path.display()
        );
        // The whole plan as the CLI would print it.
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(find_bootstrap_token(&json), None);
        assert!(
            !json.contains("certificate-key: created")
                || json.contains("<certificate-key: created at apply, never printed>")
        );
    }
}

#[test]
fn plan_phases_in_order() {
    let inv = kubedrill::inventory::load(&repo().join("inventories/lab-3node")).unwrap();
    let (spec, _) = spec::build(&inv, &SpecContext::default()).unwrap();
    let plan = plan::build(&spec, &inv).unwrap();
    let names: Vec<&str> = plan.phases.iter().map(|p| p.def.name.as_str()).collect();
    let all: Vec<String> = plan::phases().into_iter().map(|p| p.name).collect();
    assert_eq!(names, all);
    assert_eq!(plan.kubeadm_api, "kubeadm.k8s.io/v1beta4");
    assert_eq!(plan.nodes, 3);
    // One control plane: no control-plane joins, two worker joins (a config each).
    let joins = |name: &str| {
        plan.phases
            .iter()
            .find(|p| p.def.name == name)
            .unwrap()
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Write { .. }))
            .count()
    };
    assert_eq!(joins("kubeadm/join-control-plane"), 0);
    assert_eq!(joins("kubeadm/join-worker"), 2);
}

/// YAML 1.1 readers (kubeadm's sigs.k8s.io/yaml, Helm) treat NEL, LINE SEPARATOR and PARAGRAPH
/// SEPARATOR as line breaks, so a raw one in a rendered file ends a comment or splits a scalar
/// there. JSON escaping (`json_encode`) leaves them raw; rendered files must not contain them.
#[test]
fn unicode_line_breaks_are_escaped_for_yaml_1_1_readers() {
    // Host names like these are refused by the inventory (tests/hostile.rs) and set after
    // loading here; variables still carry them through.
    let hosts = "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1:\n          ip: 10.10.0.11\n    kube_node:\n      hosts:\n        w1:\n          ip: 10.10.0.21\n";
    let vars = format!(
        "{}cluster_name: \"c\\u2029evil: true\"\napiserver_loadbalancer_domain_name: \"api\\u2028evil: true\"\n",
        matrix_vars("1.31.4", "1.16.19")
    );
    let t = TempInv::new(
        "lab",
        &[("hosts.yaml", hosts), ("group_vars/k8s_cluster.yml", &vars)],
    );
    let mut inv = t.load_ok();
    inv.hosts[0].name = "cp1\u{2028}evil: true".into();
    inv.hosts[1].name = "w1\u{85}evil: true".into();
    let (spec, _) = spec::build(&inv, &SpecContext::default()).unwrap_or_else(|d| panic!("{d}"));
    let tpl = Templates::load().unwrap();
    let secrets = Secrets::placeholders();
    let files = [
        (
            "init",
            render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap(),
        ),
        (
            "join w1",
            render::kubeadm::join(
                &tpl,
                &spec,
                &inv,
                host(&inv, "w1\u{85}evil: true"),
                &secrets,
            )
            .unwrap(),
        ),
        (
            "values",
            render::cilium::values_file(&spec, inv.hosts.len()).unwrap(),
        ),
    ];
    let mut bad = Vec::new();
    for (what, f) in &files {
        for (n, line) in f.content.lines().enumerate() {
            if line.contains(['\u{85}', '\u{2028}', '\u{2029}']) {
                bad.push(format!("{what} line {}: {line:?}", n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "raw Unicode line breaks in rendered YAML:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Offline sources and slow machines: kube_image_repo, kubedrill_kubeadm_timeout, and what
// node/packages installs from a bundle of release binaries.
// ---------------------------------------------------------------------------------------------

#[test]
fn kube_image_repo_sets_kubeadms_image_repository_and_the_pause_image() {
    let vars = format!(
        "{}kube_image_repo: \"registry.lab.internal:5000/k8s\"\n",
        matrix_vars("1.34.2", "1.19.6")
    );
    let (spec, inv) = try_build(&vars).expect("spec");
    let tpl = Templates::load().unwrap();
    let init = render::kubeadm::init(&tpl, &spec, &inv, &Secrets::placeholders()).unwrap();
    assert!(
        init.content
            .contains("imageRepository: \"registry.lab.internal:5000/k8s\""),
        "{}",
        init.content
    );
    let containerd = render::containerd::files(&tpl, &spec).unwrap();
    assert!(
        containerd[0]
            .content
            .contains("sandbox_image = \"registry.lab.internal:5000/k8s/pause:3.10.1\""),
        "{}",
        containerd[0].content
    );
    // kubeadm's default repository is not written out.
    let (spec, inv) = try_build(&matrix_vars("1.34.2", "1.19.6")).expect("spec");
    let init = render::kubeadm::init(&tpl, &spec, &inv, &Secrets::placeholders()).unwrap();
    assert!(
        !init.content.contains("imageRepository"),
        "{}",
        init.content
    );
    let e = try_build(&format!(
        "{}kube_image_repo: \"https://registry/../x\"\n",
        matrix_vars("1.34.2", "1.19.6")
    ))
    .expect_err("invalid");
    assert!(
        e.contains("kube_image_repo") && e.contains("not an image repository"),
        "{e}"
    );
}

#[test]
fn kubeadm_timeout_raises_every_wait_in_both_config_apis() {
    let tpl = Templates::load().unwrap();
    let mut secrets = Secrets::placeholders();
    secrets.ca_cert_hash = "sha256:00".into();
    for (k, api_marker) in [
        ("1.34.2", "controlPlaneComponentHealthCheck: \"20m0s\""),
        ("1.29.10", "timeoutForControlPlane: \"20m0s\""),
    ] {
        let vars = format!(
            "{}kubedrill_kubeadm_timeout: \"20m\"\n",
            matrix_vars(k, "1.16.19")
        );
        let (spec, inv) = try_build(&vars).expect("spec");
        let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap();
        assert!(init.content.contains(api_marker), "{k}: {}", init.content);
        let worker = inv.workers().next().expect("a worker");
        let join = render::kubeadm::join(&tpl, &spec, &inv, worker, &secrets).unwrap();
        let want = if k == "1.34.2" {
            "discovery: \"20m0s\""
        } else {
            "timeout: \"20m0s\""
        };
        assert!(join.content.contains(want), "{k}: {}", join.content);
        // Still valid YAML documents.
        for doc in init.content.split("\n---\n") {
            serde_saphyr::from_str::<serde_json::Value>(doc).expect("yaml");
        }
    }
    let (spec, inv) = try_build(&matrix_vars("1.34.2", "1.19.6")).expect("spec");
    let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap();
    assert!(!init.content.contains("timeouts:"), "{}", init.content);
    for bad in ["20", "0m", "1000h", "9999999999999999999h", "m"] {
        let e = try_build(&format!(
            "{}kubedrill_kubeadm_timeout: \"{bad}\"\n",
            matrix_vars("1.34.2", "1.19.6")
        ))
        .expect_err(bad);
        assert!(e.contains("kubedrill_kubeadm_timeout"), "{bad}: {e}");
    }
}

/// Kubespray's `kubeadm_ignore_preflight_errors`, as a list or as the command line's
/// comma-separated string; a name kubeadm could not have is refused naming the variable.
#[test]
fn kubeadm_ignore_preflight_errors_reads_kubesprays_list_and_string() {
    let base = matrix_vars("1.34.2", "1.19.6");
    let (spec, _) = try_build(&format!(
        "{base}kubeadm_ignore_preflight_errors: [\"CreateJob\", \"NumCPU\"]\n"
    ))
    .expect("list");
    assert_eq!(
        spec.kubeadm_ignore_preflight_errors,
        ["CreateJob", "NumCPU"]
    );
    let (spec, _) = try_build(&format!(
        "{base}kubeadm_ignore_preflight_errors: \"CreateJob, Mem\"\n"
    ))
    .expect("string");
    assert_eq!(spec.kubeadm_ignore_preflight_errors, ["CreateJob", "Mem"]);
    let (spec, _) = try_build(&base).expect("unset");
    assert!(spec.kubeadm_ignore_preflight_errors.is_empty());
    for bad in ["[\"Create Job\"]", "[3]", "\"a;b\""] {
        let e =
            try_build(&format!("{base}kubeadm_ignore_preflight_errors: {bad}\n")).expect_err(bad);
        assert!(e.contains("kubeadm_ignore_preflight_errors"), "{bad}: {e}");
    }
}

/// Kubespray puts `kubeadm_ignore_preflight_errors` into `nodeRegistration` of every init and
/// join configuration; kubedrill does the same in both config APIs, and nothing when unset.
#[test]
fn ignored_preflight_errors_reach_init_and_join_in_both_config_apis() {
    let tpl = Templates::load().unwrap();
    let mut secrets = Secrets::placeholders();
    secrets.ca_cert_hash = "sha256:00".into();
    for k in ["1.34.2", "1.29.10"] {
        for (var, want) in [
            (
                "kubeadm_ignore_preflight_errors: \"CreateJob,NumCPU\"\n",
                serde_json::json!(["CreateJob", "NumCPU"]),
            ),
            ("", serde_json::Value::Null),
        ] {
            let (spec, inv) =
                try_build(&format!("{}{var}", matrix_vars(k, "1.16.19"))).expect("spec");
            let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap();
            let mut configs = vec![init.content];
            for h in inv
                .hosts
                .iter()
                .filter(|h| h.name != inv.first_control_plane().name)
            {
                configs.push(
                    render::kubeadm::join(&tpl, &spec, &inv, h, &secrets)
                        .unwrap()
                        .content,
                );
            }
            for c in &configs {
                let doc = c
                    .split("\n---\n")
                    .map(|d| serde_saphyr::from_str::<serde_json::Value>(d).expect("yaml"))
                    .find(|d| d.get("nodeRegistration").is_some())
                    .expect("a document with nodeRegistration");
                assert_eq!(
                    doc["nodeRegistration"]["ignorePreflightErrors"], want,
                    "{k}: {c}"
                );
            }
        }
    }
}

#[test]
fn leader_election_leases_become_extra_args_in_both_config_apis() {
    let tpl = Templates::load().unwrap();
    let mut secrets = Secrets::placeholders();
    secrets.ca_cert_hash = "sha256:00".into();
    let vars = "kube_controller_manager_leader_elect_lease_duration: \"60s\"\nkube_controller_manager_leader_elect_renew_deadline: \"40s\"\nkube_scheduler_leader_elect_renew_deadline: \"12s\"\nkube_scheduler_leader_elect_lease_duration: \"1m\"\n";
    for (k, cm, sched) in [
        (
            "1.34.2",
            "controllerManager:\n  # Kubespray's kube_*_leader_elect_* (a lab under TCG raises them)\n  extraArgs:\n    - name: leader-elect-lease-duration\n      value: \"60s\"\n    - name: leader-elect-renew-deadline\n      value: \"40s\"\n",
            "    - name: leader-elect-lease-duration\n      value: \"60s\"\n    - name: leader-elect-renew-deadline\n      value: \"12s\"\n",
        ),
        (
            "1.29.10",
            "  extraArgs:\n    leader-elect-lease-duration: \"60s\"\n    leader-elect-renew-deadline: \"40s\"\n",
            "    leader-elect-lease-duration: \"60s\"\n    leader-elect-renew-deadline: \"12s\"\n",
        ),
    ] {
        let (spec, inv) = try_build(&format!("{}{vars}", matrix_vars(k, "1.16.19"))).expect("spec");
        let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap();
        assert!(init.content.contains(cm), "{k}: {}", init.content);
        let s = init
            .content
            .split("\nscheduler:\n")
            .nth(1)
            .expect("scheduler section");
        assert!(s.contains(sched), "{k}: {}", init.content);
        for doc in init.content.split("\n---\n") {
            serde_saphyr::from_str::<serde_json::Value>(doc).expect("yaml");
        }
    }
    // Unset: kubeadm's defaults, nothing rendered.
    let (spec, inv) = try_build(&matrix_vars("1.34.2", "1.19.6")).expect("spec");
    let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap();
    assert!(!init.content.contains("leader-elect"), "{}", init.content);
    // One set: Kubespray's default for the other; a deadline not shorter than the lease is an
    // error naming the variable.
    let (spec, _) = try_build(&format!(
        "{}kube_scheduler_leader_elect_lease_duration: \"30s\"\n",
        matrix_vars("1.34.2", "1.19.6")
    ))
    .expect("spec");
    let l = spec.leader_elect.scheduler.expect("lease");
    assert_eq!((l.duration_secs, l.renew_deadline_secs), (30, 10));
    assert!(spec.leader_elect.controller_manager.is_none());
    for bad in [
        "kube_controller_manager_leader_elect_renew_deadline: \"15s\"\n",
        "kube_controller_manager_leader_elect_lease_duration: \"5s\"\n",
        "kube_controller_manager_leader_elect_lease_duration: \"soon\"\n",
    ] {
        let e = try_build(&format!("{}{bad}", matrix_vars("1.34.2", "1.19.6"))).expect_err(bad);
        assert!(
            e.contains("kube_controller_manager_leader_elect_"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn node_packages_install_release_binaries_with_kubelets_unit() {
    use kubedrill::apply::node::{self, PackageSource};
    use kubedrill::bundle::{Artifact, Bundle, Family, Manifest};
    let (spec, _inv) = try_build(&matrix_vars("1.34.2", "1.19.6")).expect("spec");
    let bin = |name: &str| Artifact {
        file: format!("bin/{name}"),
        sha256: format!("{name:0>64}"),
        size: 1,
        source: "files repo".into(),
    };
    let manifest = |version: &str| Manifest {
        schema: 1,
        created: "2026-12-06T00:00:00Z".into(),
        family: Family::Deb,
        release: "bookworm".into(),
        requested: vec![],
        packages: vec![],
        binaries: ["kubelet", "kubeadm", "kubectl", "crictl"]
            .into_iter()
            .map(bin)
            .collect(),
        charts: vec![],
        images: vec![],
        kubernetes_binaries: Some(version.into()),
    };
    let b = Bundle {
        dir: PathBuf::from("/b"),
        manifest: manifest("1.34.2"),
    };
    assert!(b.has_kubernetes());
    let tpl = Templates::load().unwrap();
    let c = node::packages(&tpl, &spec, &PackageSource::Bundle(Box::new(b))).expect("change");
    let to: Vec<(&str, u32)> = c
        .uploads
        .iter()
        .map(|u| (u.remote.as_str(), u.mode))
        .collect();
    for name in ["kubelet", "kubeadm", "kubectl", "crictl"] {
        assert!(
            to.contains(&(format!("/usr/bin/{name}").as_str(), 0o755)),
            "{to:?}"
        );
    }
    let paths: Vec<&str> = c.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/usr/lib/systemd/system/kubelet.service",
            "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
            "/etc/crictl.yaml"
        ]
    );
    assert!(c.check.contains("kubeadm: want v1.34.2"), "{}", c.check);
    assert!(c.apply.contains("systemctl daemon-reload"), "{}", c.apply);
    // A bundle of another version is refused before anything is installed.
    let other = Bundle {
        dir: PathBuf::from("/b"),
        manifest: manifest("1.35.4"),
    };
    let e =
        node::packages(&tpl, &spec, &PackageSource::Bundle(Box::new(other))).expect_err("mismatch");
    let e = e.to_string();
    assert!(
        e.contains("carries Kubernetes 1.35.4") && e.contains("asks for 1.34.2"),
        "{e}"
    );
}
