//! Hostile input for the inventory parsers: arbitrary text, text built from inventory-like
//! fragments, and structured inventories with odd values go through parse → resolve → spec →
//! plan. Nothing may panic or overflow the stack; errors are fine.
//!
//! `KUBEDRILL_FUZZ_CASES=N` sets the number of cases per property (default 256).
//!
//! Inputs that could overflow the stack run in a child process (this test binary, re-run on
//! just that test), so a crash is reported as a failure instead of aborting every test.

use kubedrill::inventory::{InventoryError, ini, resolve, yaml};
use kubedrill::spec::{self, SpecContext};
use proptest::prelude::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

fn cases() -> u32 {
    std::env::var("KUBEDRILL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Parse with one parser, then resolve, build the spec and the plan when each step succeeds.
/// Returns how far the input got, for the coverage checks.
fn pipeline(text: &str, ini_format: bool) -> Stage {
    let file = Arc::new(PathBuf::from(if ini_format {
        "/fuzz/inventory.ini"
    } else {
        "/fuzz/hosts.yaml"
    }));
    let parsed = if ini_format {
        ini::parse(text, &file)
    } else {
        yaml::parse(text, &file)
    };
    let raw = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            check_error(&e);
            return Stage::Parse;
        }
    };
    let inv = match resolve::resolve(raw) {
        Ok(inv) => inv,
        Err(e) => {
            check_error(&e);
            return Stage::Resolve;
        }
    };
    assert!(
        inv.hosts.iter().any(|h| h.role.is_control_plane()),
        "a resolved inventory has a control plane"
    );
    let _ = inv.first_control_plane();
    match spec::build(&inv, &SpecContext::default()) {
        Ok((spec, _)) => {
            let plan =
                kubedrill::plan::build(&spec, &inv).expect("rendering a valid spec succeeds");
            let _ = serde_json::to_string(&plan).expect("the plan serialises");
            Stage::Plan
        }
        Err(d) => {
            assert!(d.has_errors(), "spec::build failed without an error: {d}");
            let _ = d.to_string();
            Stage::Spec
        }
    }
}

/// Errors must be printable and (for Invalid) contain an error.
fn check_error(e: &InventoryError) {
    let _ = e.to_string();
    if let InventoryError::Invalid(d) = e {
        assert!(d.has_errors(), "Invalid without an error: {d}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Parse,
    Resolve,
    Spec,
    Plan,
}

const FRAGMENTS: &[&str] = &[
    "[",
    "]",
    ":children",
    ":vars",
    "=",
    "\"",
    "'",
    "#",
    ";",
    "\n",
    "\n",
    "\n",
    "\r\n",
    "all:",
    "hosts:",
    "children:",
    "vars:",
    " ",
    "  ",
    "    ",
    "\t",
    "*a",
    "&a ",
    "<<: ",
    "<<: *a",
    "[1:3]",
    "[a:c]",
    "[01:2000]",
    "[1:2:0]",
    "- ",
    "{",
    "}",
    ",",
    ":",
    ": ",
    "~",
    "null",
    "yes",
    "no",
    "{{ ip }}",
    "{{",
    "}}",
    "kube_control_plane",
    "kube_node",
    "kube-master",
    "etcd",
    "k8s_cluster",
    "bastion",
    "all",
    "cp1",
    "w1",
    " ip=10.0.0.1",
    "ip: 10.0.0.1",
    "ip: 10.233.64.1",
    "ansible_port: 70000",
    "ansible_port=22x",
    "kube_version: 1.30",
    "cilium_version: \"1.13.18\"",
    "cilium_extra_values:",
    "loadBalancer:",
    "mode: dsr",
    "tunnel: vxlan",
    "---",
    "...",
    "!!str ",
    "!!map ",
    "? ",
    "|",
    ">-",
    "é",
    "\u{feff}",
    "\u{0}",
    "0755",
    "1e999",
    "-1",
    "18446744073709551616",
];

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..80).prop_map(|v| v.concat())
}

/// Values a Kubespray variable might be given, good and bad.
fn var_value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "\"1.31.4\"",
            "\"1.29.10\"",
            "1.30",
            "\"1.21.0\"",
            "\"v1.34.2\"",
            "\"1.13.18\"",
            "\"1.16.19\"",
            "\"1.21.0\"",
            "\"x\"",
            "[]",
            "{}",
            "~",
            "true",
            "false",
            "yes",
            "strict",
            "partial",
            "disabled",
            "vxlan",
            "geneve",
            "native",
            "dsr",
            "snat",
            "hybrid",
            "maglev",
            "random",
            "best-effort",
            "0",
            "-1",
            "255",
            "256",
            "16381",
            "16383",
            "4294967296",
            "18446744073709551615",
            "1.5",
            "\"\"",
            "10.233.64.0/18",
            "10.233.0.0/16",
            "0.0.0.0/0",
            "10.0.0.0/8",
            "fd00::/64",
            "10.233.64.1/18",
            "a3ViZWRyaWxsLWxi",
            "\"{{ ip }}\"",
            "\"{{ x | y }}\"",
            "[eth0, \"eth+\"]",
            "\"eth0,eth1\"",
            "[1, 2]",
            "{address: 10.0.0.100, port: 8443}",
            "{port: 70000}",
            "{address: [1]}",
            "{loadBalancer: {mode: snat, algorithm: random}}",
            "{tunnel: vxlan, routingMode: native}",
            "{maglev: {tableSize: 7, hashSeed: 1}}",
            "{kubeProxyReplacement: probe}",
            "{devices: [1]}",
            "{bpf: {hostLegacyRouting: yes}, nodePort: {directRoutingDevice: \"\"}}",
            "{routingMode: 5}",
            "[{prefix: docker.io, mirrors: [{host: \"http://x\"}]}]",
            "[{prefix: \"..\", mirrors: []}]",
        ][..],
    )
}

const VAR_NAMES: &[&str] = &[
    "kube_version",
    "cilium_version",
    "kube_network_plugin",
    "container_manager",
    "cluster_name",
    "kube_pods_subnet",
    "kube_service_addresses",
    "kube_network_node_prefix",
    "kube_apiserver_port",
    "kube_proxy_remove",
    "cilium_kube_proxy_replacement",
    "cilium_tunnel_mode",
    "cilium_loadbalancer_mode",
    "cilium_native_routing_cidr",
    "cilium_auto_direct_node_routes",
    "cilium_enable_bpf_masquerade",
    "cilium_enable_host_legacy_routing",
    "cilium_enable_hubble",
    "cilium_extra_values",
    "kubedrill_cilium_routing_mode",
    "kubedrill_cilium_tunnel_protocol",
    "kubedrill_cilium_dsr_dispatch",
    "kubedrill_cilium_lb_algorithm",
    "kubedrill_cilium_lb_acceleration",
    "kubedrill_cilium_maglev_table_size",
    "kubedrill_cilium_maglev_hash_seed",
    "kubedrill_cilium_devices",
    "kubedrill_cilium_direct_routing_device",
    "loadbalancer_apiserver",
    "apiserver_loadbalancer_domain_name",
    "containerd_registries_mirrors",
    "ansible_port",
    "ansible_host",
    "ansible_become",
    "ansible_become_user",
    "access_ip",
    "ip",
    "etcd_member_name",
];

/// A well-formed YAML inventory with a random shape and random variable values, so that many
/// cases get through parsing and resolution into spec building.
fn structured_yaml() -> impl Strategy<Value = String> {
    (
        1usize..4,
        0usize..4,
        prop::collection::vec((prop::sample::select(VAR_NAMES), var_value()), 0..8),
        prop::collection::vec(
            (0usize..8, prop::sample::select(VAR_NAMES), var_value()),
            0..4,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(cps, workers, group_vars, host_vars, legacy, etcd)| {
            let names: Vec<String> = (0..cps)
                .map(|i| format!("cp{i}"))
                .chain((0..workers).map(|i| format!("w{i}")))
                .collect();
            let mut s = String::from("all:\n  vars:\n");
            let mut seen = std::collections::HashSet::new();
            for (k, v) in &group_vars {
                if seen.insert(*k) {
                    s.push_str(&format!("    {k}: {v}\n"));
                }
            }
            s.push_str("  hosts:\n");
            for (i, n) in names.iter().enumerate() {
                s.push_str(&format!("    {n}:\n      ip: 10.0.0.{}\n", i + 1));
                let mut seen = std::collections::HashSet::from(["ip"]);
                for (h, k, v) in &host_vars {
                    if *h == i && seen.insert(*k) {
                        s.push_str(&format!("      {k}: {v}\n"));
                    }
                }
            }
            let cp_group = if legacy {
                "kube-master"
            } else {
                "kube_control_plane"
            };
            s.push_str(&format!("  children:\n    {cp_group}:\n      hosts:\n"));
            for n in names.iter().take(cps) {
                s.push_str(&format!("        {n}:\n"));
            }
            s.push_str("    kube_node:\n      hosts:\n");
            for n in names.iter().skip(cps) {
                s.push_str(&format!("        {n}:\n"));
            }
            if etcd {
                s.push_str("    etcd:\n      hosts:\n");
                for n in names.iter().take(cps) {
                    s.push_str(&format!("        {n}:\n"));
                }
            }
            s
        })
}

/// The same for INI (values in `[all:vars]` stay strings; host-line values are Python literals).
fn structured_ini() -> impl Strategy<Value = String> {
    (
        1usize..4,
        0usize..3,
        prop::collection::vec((prop::sample::select(VAR_NAMES), var_value()), 0..8),
        prop::collection::vec(
            (0usize..6, prop::sample::select(VAR_NAMES), var_value()),
            0..4,
        ),
    )
        .prop_map(|(cps, workers, group_vars, host_vars)| {
            let host_line = |name: String, i: usize| {
                let mut l = format!("{name} ip=10.0.0.{}", i + 1);
                for (h, k, v) in &host_vars {
                    if *h == i && *k != "ip" {
                        l.push_str(&format!(" {k}={}", v.replace(' ', "")));
                    }
                }
                l
            };
            let mut s = String::from("[kube_control_plane]\n");
            for i in 0..cps {
                s.push_str(&host_line(format!("cp{i}"), i));
                s.push('\n');
            }
            s.push_str("\n[kube_node]\n");
            for i in 0..workers {
                s.push_str(&host_line(format!("w{i}"), cps + i));
                s.push('\n');
            }
            s.push_str("\n[k8s_cluster:children]\nkube_control_plane\nkube_node\n\n[all:vars]\n");
            for (k, v) in &group_vars {
                s.push_str(&format!("{k}={v}\n"));
            }
            s
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        pipeline(&text, false);
        pipeline(&text, true);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        pipeline(&text, false);
        pipeline(&text, true);
    }

    #[test]
    fn inventory_fragments_never_panic(text in fragments()) {
        pipeline(&text, false);
        pipeline(&text, true);
    }

    #[test]
    fn structured_yaml_inventories_never_panic(text in structured_yaml()) {
        pipeline(&text, false);
    }

    #[test]
    fn structured_ini_inventories_never_panic(text in structured_ini()) {
        pipeline(&text, true);
    }
}

/// Characters that break YAML when written unescaped.
fn weird_name(allow_bracket: bool) -> impl Strategy<Value = String> {
    let mut chars = vec![
        'a', 'z', '0', '-', '.', '\n', '\r', '\t', ' ', ':', '#', '\'', '"', '{', '}', '%', '\\',
        '|', '>', '&', '*', '!', '?', ',', '@', '`', 'é', '\u{0}', '\u{7f}', '\u{85}', '\u{2028}',
        '\u{feff}',
    ];
    if allow_bracket {
        chars.extend(['[', ']']);
    }
    prop::collection::vec(prop::sample::select(chars), 1..24).prop_map(|v| v.into_iter().collect())
}

fn top_keys(v: &serde_json::Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the names in the inventory, the rendered kubeadm files and values keep their
    /// shape: the same documents and top-level keys, and each name read back unchanged.
    #[test]
    fn rendered_files_keep_their_shape(
        cp in weird_name(false),
        worker in weird_name(false),
        cluster in weird_name(true),
        domain in weird_name(true),
    ) {
        use kubedrill::render::{self, Secrets, Templates};
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let text = format!(
            "all:\n  vars:\n    cluster_name: {}\n    apiserver_loadbalancer_domain_name: {}\n    kubedrill_cilium_maglev_hash_seed: a3ViZWRyaWxsLWxi\n  children:\n    kube_control_plane:\n      hosts:\n        {}:\n          ip: 10.0.0.1\n    kube_node:\n      hosts:\n        {}:\n          ip: 10.0.0.2\n",
            q(&cluster), q(&domain), q(&cp), q(&worker)
        );
        let file = Arc::new(PathBuf::from("/fuzz/hosts.yaml"));
        let Ok(raw) = yaml::parse(&text, &file) else { return Ok(()) };
        let Ok(inv) = resolve::resolve(raw) else { return Ok(()) };
        let Ok((spec, _)) = spec::build(&inv, &SpecContext::default()) else { return Ok(()) };
        let tpl = Templates::load().unwrap();
        let secrets = Secrets::placeholders();
        let init = render::kubeadm::init(&tpl, &spec, &inv, &secrets).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&init.content)
            .map_err(|e| TestCaseError::fail(format!("init is not YAML: {e}\n{}", init.content)))?;
        prop_assert_eq!(docs.len(), 3);
        prop_assert_eq!(top_keys(&docs[0]), ["apiVersion", "bootstrapTokens", "kind", "localAPIEndpoint", "nodeRegistration", "skipPhases"]);
        prop_assert_eq!(top_keys(&docs[1]), ["apiServer", "apiVersion", "clusterName", "controlPlaneEndpoint", "kind", "kubernetesVersion", "networking", "proxy"]);
        prop_assert_eq!(top_keys(&docs[2]), ["apiVersion", "cgroupDriver", "kind"]);
        prop_assert_eq!(&docs[0]["nodeRegistration"]["name"], &serde_json::json!(inv.hosts[0].name));
        prop_assert_eq!(&docs[1]["clusterName"], &serde_json::json!(spec.cluster_name));
        if let Some(w) = inv.workers().next() {
            let join = render::kubeadm::join(&tpl, &spec, &inv, w, &secrets).unwrap();
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&join.content)
                .map_err(|e| TestCaseError::fail(format!("join is not YAML: {e}\n{}", join.content)))?;
            prop_assert_eq!(docs.len(), 1);
            prop_assert_eq!(top_keys(&docs[0]), ["apiVersion", "discovery", "kind", "nodeRegistration"]);
            prop_assert_eq!(&docs[0]["nodeRegistration"]["name"], &serde_json::json!(w.name));
        }
        let values = render::cilium::values_file(&spec, inv.hosts.len()).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&values.content)
            .map_err(|e| TestCaseError::fail(format!("values are not YAML: {e}\n{}", values.content)))?;
        prop_assert_eq!(docs.len(), 1);
        prop_assert_eq!(&docs[0], &render::cilium::values(&spec, inv.hosts.len()));
        prop_assert_eq!(&docs[0]["k8sServiceHost"], &serde_json::json!(spec.endpoint.host));
    }
}

/// The structured generators must actually reach spec building and the plan, or the properties
/// above would only ever test the parsers.
#[test]
fn structured_generators_reach_the_spec_and_the_plan() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for (name, ini_format) in [("yaml", false), ("ini", true)] {
        let mut reached = std::collections::BTreeMap::new();
        for _ in 0..300 {
            let text = if ini_format {
                structured_ini().new_tree(&mut runner).unwrap().current()
            } else {
                structured_yaml().new_tree(&mut runner).unwrap().current()
            };
            *reached.entry(pipeline(&text, ini_format)).or_insert(0) += 1;
        }
        assert!(
            reached.get(&Stage::Spec).copied().unwrap_or(0) > 10,
            "{name}: {reached:?}"
        );
        assert!(
            reached.get(&Stage::Plan).copied().unwrap_or(0) > 3,
            "{name}: {reached:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic hostile inputs, each in a child process
// ---------------------------------------------------------------------------------------------

/// Run `f` in a child process (this test binary, filtered to `name`), so a stack overflow or an
/// abort fails this test only. In the child, run `f` directly.
fn isolated(name: &str, f: impl FnOnce()) {
    const ENV: &str = "KUBEDRILL_ISOLATED_TEST";
    // The harness names a test by its module path below the crate root.
    let name = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    };
    let name = name.as_str();
    if std::env::var(ENV).as_deref() == Ok(name) {
        f();
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(ENV, name)
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} crashed or failed in the child process ({}):\n{}\n{}",
        out.status,
        tail(&stdout),
        tail(&stderr)
    );
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn both_parsers(text: &str) {
    pipeline(text, false);
    pipeline(text, true);
}

#[test]
fn deeply_nested_flow_sequences() {
    isolated("deeply_nested_flow_sequences", || {
        let text = "[".repeat(100_000);
        let file = Arc::new(PathBuf::from("/fuzz/hosts.yaml"));
        assert!(yaml::parse(&text, &file).is_err());
        both_parsers(&text);
        let text = format!(
            "all:\n  vars:\n    x: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(
            yaml::parse(&text, &file).is_err(),
            "nesting beyond the recursion limit is an error"
        );
    });
}

#[test]
fn deeply_nested_flow_mappings() {
    isolated("deeply_nested_flow_mappings", || {
        both_parsers(&"{a: ".repeat(100_000));
        both_parsers(&format!(
            "all: {}{}",
            "{vars: {x: ".repeat(50_000),
            "}".repeat(100_000)
        ));
    });
}

#[test]
fn deeply_nested_block_mappings_and_children() {
    isolated("deeply_nested_block_mappings_and_children", || {
        // 2,000 levels of block indentation (about 4 MB of text).
        let mut s = String::new();
        for i in 0..2_000 {
            s.push_str(&" ".repeat(i));
            s.push_str("k:\n");
        }
        both_parsers(&s);
        // Group children nested as deep as YAML lets them go.
        let mut s = String::from("all:\n");
        let mut indent = 2;
        for i in 0..400 {
            s.push_str(&format!(
                "{}children:\n{}g{i}:\n",
                " ".repeat(indent),
                " ".repeat(indent + 2)
            ));
            indent += 4;
        }
        both_parsers(&s);
    });
}

#[test]
fn one_megabyte_lines() {
    isolated("one_megabyte_lines", || {
        let long = "a".repeat(1 << 20);
        both_parsers(&long);
        both_parsers(&format!("[kube_control_plane]\n{long} ip=10.0.0.1\n"));
        both_parsers(&format!(
            "[kube_control_plane]\ncp1 ip=10.0.0.1 note=\"{long}\"\n"
        ));
        both_parsers(&format!("[{long}\n"));
        both_parsers(&format!(
            "all:\n  hosts:\n    {long}:\n      ip: 10.0.0.1\n"
        ));
        both_parsers(&format!(
            "all:\n  vars:\n    x: \"{}\"\n",
            "\\\"".repeat(1 << 19)
        ));
        both_parsers(&"#".repeat(1 << 20));
        both_parsers(&" ".repeat(1 << 20));
        both_parsers(&"\n".repeat(1 << 20));
    });
}

#[test]
fn alias_bombs_are_bounded() {
    isolated("alias_bombs_are_bounded", || {
        // The "billion laughs": nine levels of ten aliases each.
        let mut s = String::from("all:\n  vars:\n    l0: &l0 [\"lol\"]\n");
        for i in 1..10 {
            let refs: Vec<String> = (0..10).map(|_| format!("*l{}", i - 1)).collect();
            s.push_str(&format!("    l{i}: &l{i} [{}]\n", refs.join(", ")));
        }
        let start = std::time::Instant::now();
        both_parsers(&s);
        assert!(
            start.elapsed().as_secs() < 30,
            "alias expansion took {:?}",
            start.elapsed()
        );
    });
}

#[test]
fn long_chain_of_child_groups_ini() {
    isolated("long_chain_of_child_groups_ini", || {
        // 20,000 groups, each the only child of the previous one: a deep but acyclic tree.
        let mut s = String::from("[kube_control_plane]\ncp1 ip=10.0.0.1\n");
        for i in 0..20_000 {
            s.push_str(&format!("[g{i}:children]\ng{}\n", i + 1));
        }
        s.push_str("[g20000]\ncp1\n");
        pipeline(&s, true);
    });
}

#[test]
fn host_range_expansion_is_bounded() {
    isolated("host_range_expansion_is_bounded", || {
        both_parsers("[kube_control_plane]\nn[0:99999999999999999999]\n");
        both_parsers("[kube_control_plane]\nn[0:18446744073709551615:1]\n");
        both_parsers("[kube_control_plane]\nn[1:1000][1:1000]\n");
        both_parsers("[kube_control_plane]\nn[a:z][a:z][a:z][a:z]\n");
        both_parsers(
            "all:\n  children:\n    kube_control_plane:\n      hosts:\n        n[0:9999]:\n",
        );
    });
}

/// The largest range the parser accepts (`MAX_HOSTS` hosts in one group) parses; one more host
/// is an error. Its time and memory are measured by `cargo bench --bench limits`.
#[test]
fn largest_accepted_range_parses() {
    isolated("largest_accepted_range_parses", || {
        let file = Arc::new(PathBuf::from("/fuzz/inventory.ini"));
        let raw =
            ini::parse("[kube_control_plane]\nn[00001:10000]\n", &file).expect("within MAX_HOSTS");
        assert_eq!(raw.hosts.len(), kubedrill::inventory::MAX_HOSTS);
        let e = ini::parse("[kube_control_plane]\nn[00001:10001]\n", &file)
            .expect_err("one more than MAX_HOSTS");
        assert!(e.to_string().contains("more than 10000 hosts"), "{e}");
    });
}

/// A chain of child groups declared deepest-first: depth computation must not be quadratic.
#[test]
fn long_chain_of_child_groups_declared_backwards() {
    isolated("long_chain_of_child_groups_declared_backwards", || {
        let mut s = String::from("[kube_control_plane]\ncp1 ip=10.0.0.1\n");
        for i in (0..20_000).rev() {
            s.push_str(&format!("[g{i}:children]\ng{}\n", i + 1));
        }
        s.push_str("[g20000]\ncp1\n");
        let start = std::time::Instant::now();
        assert_eq!(pipeline(&s, true), Stage::Resolve, "too deep: an error");
        let elapsed = start.elapsed();
        assert!(elapsed.as_secs() < 20, "resolving took {elapsed:?}");
    });
}

#[test]

fn many_ranges_in_one_host_name() {
    isolated("many_ranges_in_one_host_name", || {
        // 1:1 ranges expand to one host each; the name is ~120 KB.
        let name = format!("n{}", "[1:1]".repeat(24_000));
        both_parsers(&format!("[kube_control_plane]\n{name}\n"));
        both_parsers(&format!(
            "all:\n  children:\n    kube_control_plane:\n      hosts:\n        \"{name}\":\n"
        ));
    });
}
