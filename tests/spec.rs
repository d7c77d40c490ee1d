//! ClusterSpec: defaults, Kubespray variables, kubedrill keys, `cilium_extra_values`, the
//! control-plane endpoint, and every rule of `src/spec/rules.rs` (each with a test that fails
//! without the rule).

use crate::common;

use common::*;
use kubedrill::diag::{Diagnostics, Severity};
use kubedrill::inventory::Inventory;
use kubedrill::spec::cilium::*;
use kubedrill::spec::{self, ClusterSpec, KubeadmApi, Source, SpecContext, Version};
use serde_json::json;
use std::path::Path;

const SEED: &str = "a3ViZWRyaWxsLWxi";

fn build(inv: &Inventory) -> Result<(ClusterSpec, Diagnostics), Diagnostics> {
    spec::build(inv, &SpecContext::default())
}

/// Build the spec of a [`basic_inventory`] with these cluster vars; expect success.
fn spec_ok(cluster_vars: &str) -> (ClusterSpec, Diagnostics, TempInv) {
    let t = basic_inventory(cluster_vars);
    let inv = t.load_ok();
    match build(&inv) {
        Ok((s, w)) => (s, w, t),
        Err(d) => panic!("spec should build from\n{cluster_vars}\ngot:\n{d}"),
    }
}

/// Build the spec of a [`basic_inventory`] with these cluster vars; expect errors.
fn spec_err(cluster_vars: &str) -> (Diagnostics, TempInv) {
    let t = basic_inventory(cluster_vars);
    let inv = t.load_ok();
    match build(&inv) {
        Ok((s, _)) => panic!(
            "spec should not build from\n{cluster_vars}\nbut did: {:?}",
            s.cilium_intent
        ),
        Err(d) => {
            assert!(d.has_errors(), "Err without errors: {d}");
            (d, t)
        }
    }
}

fn source_of<'a>(s: &'a ClusterSpec, setting: &str) -> &'a Source {
    &s.provenance
        .iter()
        .find(|p| p.setting == setting)
        .unwrap_or_else(|| panic!("no provenance for {setting}: {:?}", s.provenance))
        .source
}

fn gv(t: &TempInv) -> std::path::PathBuf {
    t.path("group_vars/k8s_cluster.yml")
}

/// Vars that keep everything else valid when kube-proxy replacement is off.
const NO_KPR_FEATURES: &str = "cilium_loadbalancer_mode: snat\nkubedrill_cilium_lb_algorithm: random\ncilium_enable_bpf_masquerade: false\n";

// ---------------------------------------------------------------------------------------------
// Defaults and layers
// ---------------------------------------------------------------------------------------------

#[test]
fn defaults_without_cluster_vars() {
    let (s, warnings, _t) = spec_ok("# nothing\n");
    assert!(warnings.is_empty(), "{warnings}");
    assert_eq!(s.label, "basic");
    assert_eq!(s.cluster_name, "cluster.local");
    assert_eq!(s.kubernetes, spec::DEFAULT_KUBE_VERSION);
    assert_eq!(s.cilium, spec::DEFAULT_CILIUM_VERSION);
    assert_eq!(s.kubeadm_api, KubeadmApi::V1beta4);
    assert_eq!(s.pod_cidr.to_string(), "10.233.64.0/18");
    assert_eq!(s.service_cidr.to_string(), "10.233.0.0/18");
    assert_eq!(s.node_prefix, 24);
    assert_eq!(s.apiserver_port, 6443);
    assert!(s.kube_proxy_remove);

    let i = &s.cilium_intent;
    assert_eq!(i.kube_proxy_replacement, KubeProxyReplacement::True);
    let n = i.routing.native().expect("native routing by default");
    assert_eq!(n.cidr, s.pod_cidr);
    assert!(n.auto_direct_node_routes);
    assert_eq!(i.lb_mode, LbMode::Dsr);
    assert_eq!(i.dsr_dispatch, DsrDispatch::Opt);
    assert_eq!(i.algorithm, Algorithm::Maglev);
    assert_eq!(i.maglev_table_size.get(), 16381);
    assert_eq!(i.acceleration, Acceleration::Disabled);
    assert!(i.bpf_masquerade);
    assert!(i.bpf_host_routing);
    assert!(i.devices.is_empty());
    assert_eq!(i.direct_routing_device, None);
    assert!(!i.hubble);

    assert_eq!(source_of(&s, "lb_mode"), &Source::Default);
    assert_eq!(source_of(&s, "kube_proxy_replacement"), &Source::Default);
    assert!(
        matches!(source_of(&s, "native_routing_cidr"), Source::Derived { from } if from == "kube_pods_subnet")
    );
    assert_eq!(source_of(&s, "maglev_hash_seed"), &Source::Generated);
    assert!(s.cilium_extra_values.is_empty());
}

#[test]
fn generated_seed_is_valid_and_stored_seed_is_kept() {
    let t = basic_inventory("# nothing\n");
    let inv = t.load_ok();
    let (s, _) = build(&inv).unwrap();
    assert!(HashSeed::parse(s.cilium_intent.maglev_hash_seed.as_str()).is_ok());

    let stored = HashSeed::parse(SEED).unwrap();
    let ctx = SpecContext {
        stored_hash_seed: Some((stored.clone(), "/state/seed".into())),
    };
    let (s, _) = spec::build(&inv, &ctx).unwrap();
    assert_eq!(s.cilium_intent.maglev_hash_seed, stored);
    assert_eq!(
        source_of(&s, "maglev_hash_seed"),
        &Source::Stored {
            path: "/state/seed".into()
        }
    );

    // An explicit seed in the inventory beats the stored one.
    let (s, _, _t) = spec_ok("kubedrill_cilium_maglev_hash_seed: \"cHJvZC1zZWVkLTEy\"\n");
    assert_eq!(
        s.cilium_intent.maglev_hash_seed.as_str(),
        "cHJvZC1zZWVkLTEy"
    );
}

#[test]
fn kubespray_variables_are_read() {
    let vars = "\
kube_version: \"1.30.4\"
cilium_version: \"v1.15.19\"
cluster_name: lab.local
kube_pods_subnet: 10.100.0.0/16
kube_service_addresses: 10.200.0.0/16
kube_network_node_prefix: 25
kube_apiserver_port: 7443
cilium_tunnel_mode: vxlan
cilium_loadbalancer_mode: snat
cilium_kube_proxy_replacement: strict
cilium_enable_host_legacy_routing: true
cilium_enable_bpf_masquerade: false
cilium_enable_hubble: yes
";
    let (s, warnings, t) = spec_ok(vars);
    assert!(warnings.is_empty(), "{warnings}");
    assert_eq!(s.kubernetes, Version::new(1, 30, 4));
    assert_eq!(s.kubeadm_api, KubeadmApi::V1beta3);
    assert_eq!(s.cilium, Version::new(1, 15, 19));
    assert_eq!(s.cluster_name, "lab.local");
    assert_eq!(s.pod_cidr.to_string(), "10.100.0.0/16");
    assert_eq!(s.service_cidr.to_string(), "10.200.0.0/16");
    assert_eq!(s.node_prefix, 25);
    assert_eq!(s.apiserver_port, 7443);
    assert_eq!(s.endpoint.to_string(), "10.0.0.1:7443");
    let i = &s.cilium_intent;
    assert_eq!(i.routing, RoutingMode::Tunnel(TunnelProtocol::Vxlan));
    assert_eq!(i.lb_mode, LbMode::Snat);
    assert_eq!(
        i.kube_proxy_replacement,
        KubeProxyReplacement::True,
        "legacy `strict` is full replacement"
    );
    assert!(
        !i.bpf_host_routing,
        "cilium_enable_host_legacy_routing: true means legacy routing"
    );
    assert!(!i.bpf_masquerade);
    assert!(i.hubble);
    match source_of(&s, "kube_proxy_replacement") {
        Source::Var { name, origin } => {
            assert_eq!(name, "cilium_kube_proxy_replacement");
            assert_eq!(origin.file.as_path(), gv(&t));
            assert_eq!(
                origin.line,
                Some(line_of(vars, "cilium_kube_proxy_replacement"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(source_of(&s, "tunnel_protocol"), Source::Var { name, .. } if name == "cilium_tunnel_mode")
    );
}

#[test]
fn tunnel_mode_disabled_means_native_and_geneve_tunnel() {
    let (s, _, _t) = spec_ok("cilium_tunnel_mode: disabled\n");
    assert!(s.cilium_intent.routing.native().is_some());
    let (s, _, _t) = spec_ok("cilium_tunnel_mode: geneve\nkubedrill_cilium_dsr_dispatch: geneve\n");
    assert_eq!(
        s.cilium_intent.routing,
        RoutingMode::Tunnel(TunnelProtocol::Geneve)
    );
    assert_eq!(s.cilium_intent.dsr_dispatch, DsrDispatch::Geneve);
    let (d, t) = spec_err("cilium_tunnel_mode: ipip\n");
    let e = find_error(&d, "\"ipip\" is not one of");
    assert_at(e, &gv(&t), Some(1), "cilium_tunnel_mode");
}

#[test]
fn kubedrill_keys_override_kubespray_vars() {
    let vars = "\
cilium_tunnel_mode: vxlan
kubedrill_cilium_routing_mode: native
kubedrill_cilium_lb_algorithm: random
kubedrill_cilium_lb_acceleration: native
kubedrill_cilium_maglev_table_size: 65521
kubedrill_cilium_devices: [eth0, \"ens+\"]
kubedrill_cilium_direct_routing_device: eth0
";
    let (s, warnings, _t) = spec_ok(vars);
    // Two explicit layers disagreeing is not a conflict worth a warning: only extra values warn.
    assert!(warnings.is_empty(), "{warnings}");
    let i = &s.cilium_intent;
    assert!(i.routing.native().is_some());
    assert!(
        matches!(source_of(&s, "routing_mode"), Source::Var { name, .. } if name == "kubedrill_cilium_routing_mode")
    );
    assert_eq!(i.algorithm, Algorithm::Random);
    assert_eq!(i.acceleration, Acceleration::Native);
    assert_eq!(i.maglev_table_size.get(), 65521);
    assert_eq!(i.devices, ["eth0", "ens+"]);
    assert_eq!(i.direct_routing_device.as_deref(), Some("eth0"));
}

#[test]
fn extra_values_win_with_warning_and_provenance() {
    let vars = "\
cilium_loadbalancer_mode: dsr
kubedrill_cilium_lb_algorithm: random
cilium_extra_values:
  loadBalancer:
    mode: snat
    algorithm: maglev
  maglev:
    tableSize: 4093
    hashSeed: cHJvZC1zZWVkLTEy
  prometheus:
    enabled: true
";
    let (s, warnings, t) = spec_ok(vars);
    let i = &s.cilium_intent;
    assert_eq!(i.lb_mode, LbMode::Snat);
    assert_eq!(i.algorithm, Algorithm::Maglev);
    assert_eq!(i.maglev_table_size.get(), 4093);
    assert_eq!(i.maglev_hash_seed.as_str(), "cHJvZC1zZWVkLTEy");
    let extra_line = Some(line_of(vars, "cilium_extra_values"));
    match source_of(&s, "lb_mode") {
        Source::ExtraValues { path, origin } => {
            assert_eq!(path, "loadBalancer.mode");
            assert_eq!(origin.file.as_path(), gv(&t));
            assert_eq!(origin.line, extra_line);
        }
        other => panic!("lb_mode should come from cilium_extra_values, got {other:?}"),
    }
    assert!(
        matches!(source_of(&s, "maglev_table_size"), Source::ExtraValues { path, .. } if path == "maglev.tableSize")
    );
    // A conflict with an explicit setting warns; the table size had only a default, so it does not.
    let w = find_warning(&warnings, "cilium_extra_values wins");
    assert_eq!(w.field.as_deref(), Some("lb_mode"));
    assert!(w.message.contains("cilium_loadbalancer_mode"), "{w}");
    assert_eq!(w.origin.as_ref().unwrap().line, extra_line);
    find_warning(&warnings, "lb_algorithm");
    assert_eq!(warnings.0.len(), 2, "{warnings}");
    // Keys read into the intent leave the extra values; the rest stays to be merged last.
    assert_eq!(
        serde_json::Value::Object(s.cilium_extra_values.clone()),
        json!({"prometheus": {"enabled": true}})
    );
}

#[test]
fn extra_values_legacy_chart_names_are_read() {
    let vars = "\
cilium_loadbalancer_mode: snat
cilium_extra_values:
  tunnel: geneve
  kubeProxyReplacement: strict
  bpf:
    hostLegacyRouting: true
";
    let (s, _, _t) = spec_ok(vars);
    assert_eq!(
        s.cilium_intent.routing,
        RoutingMode::Tunnel(TunnelProtocol::Geneve)
    );
    assert_eq!(
        s.cilium_intent.kube_proxy_replacement,
        KubeProxyReplacement::True
    );
    assert!(!s.cilium_intent.bpf_host_routing);
    assert!(
        s.cilium_extra_values.is_empty(),
        "{:?}",
        s.cilium_extra_values
    );

    let (d, _t) = spec_err("cilium_extra_values:\n  kubeProxyReplacement: probe\n");
    let e = find_error(&d, "\"probe\" was removed");
    assert_eq!(
        e.field.as_deref(),
        Some("cilium_extra_values.kubeProxyReplacement")
    );
    let (d, _t) = spec_err("cilium_extra_values: [a, b]\n");
    let e = find_error(&d, "must be a mapping of Cilium chart values");
    assert_eq!(e.field.as_deref(), Some("cilium_extra_values"));
}

#[test]
fn prod_example_spec() {
    let inv = kubedrill::inventory::load(&repo().join("inventories/prod-example")).unwrap();
    let (s, warnings) = build(&inv).unwrap_or_else(|d| panic!("{d}"));
    assert!(warnings.is_empty(), "{warnings}");
    assert_eq!(s.kubernetes, Version::new(1, 29, 10));
    assert_eq!(s.cilium, Version::new(1, 13, 18));
    assert_eq!(s.endpoint.to_string(), "api.prod.example.internal:8443");
    let i = &s.cilium_intent;
    assert_eq!(
        i.routing.native().unwrap().cidr.to_string(),
        "10.233.0.0/16"
    );
    assert_eq!(i.lb_mode, LbMode::Hybrid);
    assert_eq!(i.acceleration, Acceleration::Native);
    assert_eq!(i.maglev_table_size.get(), 65521);
    assert_eq!(i.devices, ["bond0"]);
    assert!(
        matches!(source_of(&s, "native_routing_cidr"), Source::ExtraValues { path, .. } if path == "ipv4NativeRoutingCIDR")
    );
    assert_eq!(
        serde_json::Value::Object(s.cilium_extra_values.clone()),
        json!({"prometheus": {"enabled": true}, "operator": {"prometheus": {"enabled": true}}})
    );
}

// ---------------------------------------------------------------------------------------------
// Control-plane endpoint
// ---------------------------------------------------------------------------------------------

#[test]
fn endpoint_from_loadbalancer_and_domain_name() {
    let vars = "loadbalancer_apiserver:\n  address: 10.0.0.100\n  port: 8443\napiserver_loadbalancer_domain_name: api.lab.example\n";
    let (s, _, _t) = spec_ok(vars);
    assert_eq!(s.endpoint.host, "api.lab.example");
    assert_eq!(s.endpoint.port, 8443);
    assert!(
        matches!(source_of(&s, "control_plane_endpoint"), Source::Var { name, .. } if name == "apiserver_loadbalancer_domain_name")
    );

    let (s, _, _t) = spec_ok("loadbalancer_apiserver:\n  address: 10.0.0.100\n");
    assert_eq!(s.endpoint.to_string(), "10.0.0.100:6443");
    assert!(
        matches!(source_of(&s, "control_plane_endpoint"), Source::Var { name, .. } if name == "loadbalancer_apiserver")
    );

    let (d, t) = spec_err("loadbalancer_apiserver:\n  port: 8443\n");
    let e = find_error(&d, "has no `address`");
    assert_at(e, &gv(&t), Some(1), "loadbalancer_apiserver");
    let (d, _t) = spec_err("loadbalancer_apiserver: 10.0.0.100\n");
    find_error(&d, "must be a mapping with `address` and `port`");
}

#[test]
fn endpoint_from_first_control_plane_access_ip() {
    let hosts = "\
all:
  children:
    kube_node:
      hosts:
        w1:
          ip: 10.0.0.2
    kube_control_plane:
      hosts:
        cp1:
          ip: 10.0.0.1
          access_ip: 192.168.50.1
        cp2:
          ip: 10.0.0.3
";
    let t = TempInv::new("ep", &[("hosts.yaml", hosts)]);
    let inv = t.load_ok();
    let (s, _) = build(&inv).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(s.endpoint.to_string(), "192.168.50.1:6443");
    assert!(
        matches!(source_of(&s, "control_plane_endpoint"), Source::Derived { from } if from.contains("cp1") && from.contains("access_ip"))
    );

    // Without access_ip: the first control plane's ip.
    let (s, _, _t) = spec_ok("# nothing\n");
    assert_eq!(s.endpoint.to_string(), "10.0.0.1:6443");
}

// ---------------------------------------------------------------------------------------------
// Rules (src/spec/rules.rs), one test each
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_dsr_opt_dispatch_with_tunnel_is_error() {
    let (d, _t) = spec_err("cilium_tunnel_mode: vxlan\ncilium_loadbalancer_mode: dsr\n");
    let e = find_error(&d, "DSR with `opt` dispatch needs native routing");
    assert!(e.message.contains("vxlan tunnel"), "{e}");
    assert_eq!(e.field.as_deref(), Some("dsr_dispatch"));
    // Hybrid is DSR too.
    let (d, _t) = spec_err("cilium_tunnel_mode: geneve\ncilium_loadbalancer_mode: hybrid\n");
    find_error(&d, "DSR with `opt` dispatch needs native routing");
    // SNAT over a tunnel is fine.
    spec_ok("cilium_tunnel_mode: vxlan\ncilium_loadbalancer_mode: snat\n");
}

#[test]
fn rule_geneve_dispatch_with_vxlan_is_error() {
    let vars = "cilium_tunnel_mode: vxlan\nkubedrill_cilium_dsr_dispatch: geneve\n";
    let (d, t) = spec_err(vars);
    let e = find_error(&d, "`geneve` dispatch does not work over a VXLAN tunnel");
    assert_at(e, &gv(&t), Some(2), "kubedrill_cilium_dsr_dispatch");
    // Geneve dispatch with native routing is fine.
    spec_ok("kubedrill_cilium_dsr_dispatch: geneve\n");
}

#[test]
fn rule_geneve_dispatch_needs_cilium_1_14() {
    let (d, t) = spec_err("cilium_version: \"1.13.18\"\nkubedrill_cilium_dsr_dispatch: geneve\n");
    let e = find_error(&d, "needs Cilium ≥ 1.14");
    assert!(e.message.contains("1.13.18"), "{e}");
    assert_at(e, &gv(&t), Some(2), "kubedrill_cilium_dsr_dispatch");
    spec_ok("cilium_version: \"1.14.19\"\nkubedrill_cilium_dsr_dispatch: geneve\n");
    // Not DSR: the dispatch does not matter.
    spec_ok(
        "cilium_version: \"1.13.18\"\nkubedrill_cilium_dsr_dispatch: geneve\ncilium_loadbalancer_mode: snat\n",
    );
}

#[test]
fn rule_native_cidr_must_cover_pod_cidr() {
    let (d, t) = spec_err("cilium_native_routing_cidr: 10.233.64.0/20\n");
    let e = find_error(&d, "does not cover the pod CIDR 10.233.64.0/18");
    assert_at(e, &gv(&t), Some(1), "cilium_native_routing_cidr");
    assert!(e.hint.as_deref().unwrap().contains("10.233.64.0/18"));
    // A supernet is fine.
    spec_ok("cilium_native_routing_cidr: 10.233.0.0/16\n");
    // From cilium_extra_values, the field names the chart path.
    let (d, _t) = spec_err("cilium_extra_values:\n  ipv4NativeRoutingCIDR: 192.168.0.0/24\n");
    let e = find_error(&d, "does not cover the pod CIDR");
    assert_eq!(
        e.field.as_deref(),
        Some("cilium_extra_values.ipv4NativeRoutingCIDR")
    );
}

#[test]
fn rule_empty_native_cidr_is_error() {
    let (d, t) = spec_err("cilium_native_routing_cidr: \"\"\n");
    let e = find_error(&d, "is empty; native routing needs a CIDR");
    assert_at(e, &gv(&t), Some(1), "cilium_native_routing_cidr");
    let (d, _t) = spec_err("cilium_native_routing_cidr: 10.233.64.1/18\n");
    find_error(&d, "has host bits set");
}

#[test]
fn rule_maglev_table_size_must_be_listed_prime() {
    let (d, t) = spec_err("kubedrill_cilium_maglev_table_size: 16383\n");
    let e = find_error(&d, "16383 is not an allowed Maglev table size");
    assert_at(e, &gv(&t), Some(1), "kubedrill_cilium_maglev_table_size");
    let (d, _t) = spec_err("cilium_extra_values:\n  maglev:\n    tableSize: 16383\n");
    let e = find_error(&d, "not an allowed Maglev table size");
    assert_eq!(
        e.field.as_deref(),
        Some("cilium_extra_values.maglev.tableSize")
    );
    spec_ok("kubedrill_cilium_maglev_table_size: 131071\n");
}

#[test]
fn rule_bad_hash_seed() {
    let (d, t) = spec_err("kubedrill_cilium_maglev_hash_seed: \"not base64!\"\n");
    let e = find_error(&d, "is not base64");
    assert_at(e, &gv(&t), Some(1), "kubedrill_cilium_maglev_hash_seed");
    // Valid base64 of the wrong length ("short-seed", 10 bytes).
    let (d, _t) = spec_err("kubedrill_cilium_maglev_hash_seed: \"c2hvcnQtc2VlZA==\"\n");
    find_error(&d, "decodes to 10 bytes; Cilium needs exactly 12");
    let (d, _t) = spec_err("cilium_extra_values:\n  maglev:\n    hashSeed: 12\n");
    let e = find_error(&d, "is not a base64 seed");
    assert_eq!(
        e.field.as_deref(),
        Some("cilium_extra_values.maglev.hashSeed")
    );
}

#[test]
fn rule_partial_kpr_rejected_from_1_16() {
    let vars = format!(
        "cilium_version: \"1.16.19\"\ncilium_kube_proxy_replacement: partial\nkube_proxy_remove: false\n{NO_KPR_FEATURES}"
    );
    let (d, t) = spec_err(&vars);
    let e = find_error(&d, "\"partial\" is rejected by Cilium 1.16.19");
    assert_at(e, &gv(&t), Some(2), "cilium_kube_proxy_replacement");
    assert_eq!(d.errors().count(), 1, "{d}");
}

#[test]
fn rule_partial_kpr_deprecated_on_1_15() {
    let vars = format!(
        "cilium_version: \"1.15.19\"\ncilium_kube_proxy_replacement: partial\nkube_proxy_remove: false\n{NO_KPR_FEATURES}"
    );
    let (s, w, t) = spec_ok(&vars);
    assert_eq!(
        s.cilium_intent.kube_proxy_replacement,
        KubeProxyReplacement::Partial
    );
    let e = find_warning(&w, "deprecated since Cilium 1.14");
    assert_at(e, &gv(&t), Some(2), "cilium_kube_proxy_replacement");
    // On 1.13 `partial` is a normal setting.
    let vars = format!(
        "cilium_version: \"1.13.18\"\ncilium_kube_proxy_replacement: partial\nkube_proxy_remove: false\n{NO_KPR_FEATURES}"
    );
    let (_, w, _t) = spec_ok(&vars);
    assert!(w.is_empty(), "{w}");
}

#[test]
fn rule_best_effort_acceleration_needs_1_15() {
    let (d, t) =
        spec_err("cilium_version: \"1.14.19\"\nkubedrill_cilium_lb_acceleration: best-effort\n");
    let e = find_error(&d, "\"best-effort\" needs Cilium ≥ 1.15");
    assert_at(e, &gv(&t), Some(2), "kubedrill_cilium_lb_acceleration");
    spec_ok("cilium_version: \"1.15.19\"\nkubedrill_cilium_lb_acceleration: best-effort\n");
}

#[test]
fn rule_kpr_features_need_kpr() {
    // Each feature alone, with everything else that needs KPR switched off.
    let base = "cilium_kube_proxy_replacement: false\nkube_proxy_remove: false\n";
    for (extra, needle, field) in [
        (
            "cilium_loadbalancer_mode: dsr\nkubedrill_cilium_lb_algorithm: random\ncilium_enable_bpf_masquerade: false\n",
            "DSR needs Cilium's kube-proxy replacement",
            "cilium_loadbalancer_mode",
        ),
        (
            "cilium_loadbalancer_mode: snat\nkubedrill_cilium_lb_algorithm: maglev\ncilium_enable_bpf_masquerade: false\n",
            "Maglev needs Cilium's kube-proxy replacement",
            "kubedrill_cilium_lb_algorithm",
        ),
        (
            &format!("{NO_KPR_FEATURES}kubedrill_cilium_lb_acceleration: native\n"),
            "XDP acceleration needs",
            "kubedrill_cilium_lb_acceleration",
        ),
        (
            "cilium_loadbalancer_mode: snat\nkubedrill_cilium_lb_algorithm: random\ncilium_enable_bpf_masquerade: true\n",
            "BPF masquerade needs",
            "cilium_enable_bpf_masquerade",
        ),
    ] {
        let vars = format!("{base}{extra}");
        let (d, t) = spec_err(&vars);
        let e = find_error(&d, needle);
        assert!(e.message.contains("which is false"), "{e}");
        assert_at(e, &gv(&t), Some(line_of(&vars, field)), field);
        assert_eq!(
            d.errors().count(),
            1,
            "only the one feature is reported for\n{vars}\n{d}"
        );
    }
    // With none of them, KPR off is valid.
    let (s, _, _t) = spec_ok(&format!("{base}{NO_KPR_FEATURES}"));
    assert_eq!(
        s.cilium_intent.kube_proxy_replacement,
        KubeProxyReplacement::False
    );
    assert!(!s.kube_proxy_remove);
}

#[test]
fn rule_kube_proxy_remove_false_with_kpr_true() {
    let (d, t) = spec_err("kube_proxy_remove: false\n");
    let e = find_error(
        &d,
        "kube_proxy_remove is false while Cilium replaces kube-proxy",
    );
    assert_at(e, &gv(&t), Some(1), "kube_proxy_remove");
}

#[test]
fn rule_kube_proxy_remove_true_without_full_kpr() {
    let (d, t) = spec_err(&format!(
        "cilium_kube_proxy_replacement: false\nkube_proxy_remove: true\n{NO_KPR_FEATURES}"
    ));
    let e = find_error(
        &d,
        "kube_proxy_remove is true but Cilium does not fully replace kube-proxy",
    );
    assert_at(e, &gv(&t), Some(2), "kube_proxy_remove");
    // kube_proxy_remove follows KPR when not set.
    let (s, _, _t) = spec_ok(&format!(
        "cilium_kube_proxy_replacement: false\n{NO_KPR_FEATURES}"
    ));
    assert!(!s.kube_proxy_remove);
}

#[test]
fn rule_pod_and_service_cidrs_must_not_overlap() {
    for svc in ["10.233.64.0/20", "10.233.0.0/16", "10.233.96.0/19"] {
        let vars = format!("kube_service_addresses: {svc}\n");
        let (d, t) = spec_err(&vars);
        let e = find_error(&d, "overlaps the pod CIDR 10.233.64.0/18");
        assert_at(e, &gv(&t), Some(1), "kube_service_addresses");
    }
}

#[test]
fn rule_node_ip_inside_pod_or_service_cidr() {
    let hosts = BASIC_HOSTS.replace("ip: 10.0.0.2", "ip: 10.233.64.5");
    let t = TempInv::new("nodeip", &[("hosts.yaml", &hosts)]);
    let inv = t.load_ok();
    let d = build(&inv).expect_err("node ip in the pod CIDR");
    let e = find_error(
        &d,
        "node w1 has ip 10.233.64.5, inside kube_pods_subnet 10.233.64.0/18",
    );
    assert_at(
        e,
        &t.path("hosts.yaml"),
        Some(line_of(&hosts, "ip: 10.233.64.5")),
        "ip",
    );

    let hosts = BASIC_HOSTS.replace("ip: 10.0.0.2", "ip: 10.233.1.1");
    let t = TempInv::new("nodeip", &[("hosts.yaml", &hosts)]);
    let d = build(&t.load_ok()).expect_err("node ip in the service CIDR");
    find_error(&d, "inside kube_service_addresses");
}

#[test]
fn rule_cilium_version_range() {
    let (d, t) = spec_err("cilium_version: \"1.21.0\"\n");
    let e = find_error(&d, "Cilium 1.21.0 is outside 1.11–1.20");
    assert_at(e, &gv(&t), Some(1), "cilium_version");
    let (d, _t) = spec_err("cilium_version: \"1.10.20\"\ncilium_loadbalancer_mode: snat\n");
    find_error(&d, "Cilium 1.10.20 is outside");
    spec_ok("cilium_version: \"1.20.0\"\n");
    spec_ok("cilium_version: \"1.11.20\"\n");
}

#[test]
fn rule_kubernetes_version_too_old() {
    let (d, t) = spec_err("kube_version: \"1.21.14\"\n");
    let e = find_error(&d, "Kubernetes 1.21.14 is older than 1.22");
    assert_at(e, &gv(&t), Some(1), "kube_version");
    spec_ok("kube_version: \"1.22.0\"\n");
}

#[test]
fn rule_kubernetes_newer_than_known_is_warning() {
    let (s, w, t) = spec_ok("kube_version: \"1.37.0\"\n");
    assert_eq!(s.kubeadm_api, KubeadmApi::V1beta4);
    let e = find_warning(&w, "Kubernetes 1.37.0 is newer than 1.36");
    assert_at(e, &gv(&t), Some(1), "kube_version");
    let (_, w, _t) = spec_ok("kube_version: \"1.36.0\"\n");
    assert!(w.is_empty(), "{w}");
}

#[test]
fn kube_version_as_yaml_float_mentions_quoting() {
    let (d, t) = spec_err("kube_version: 1.30\n");
    let e = find_error(&d, "quote");
    assert!(e.message.contains("1.3"), "{e}");
    assert_at(e, &gv(&t), Some(1), "kube_version");
    let (d, _t) = spec_err("kube_version: \"1.30\"\n");
    find_error(&d, "give the full patch version");
    let (d, _t) = spec_err("cilium_version: 1.16\n");
    find_error(&d, "quote the full version");
}

#[test]
fn kube_network_plugin_must_be_cilium() {
    let (d, t) = spec_err("kube_network_plugin: calico\n");
    let e = find_error(&d, "kube_network_plugin is \"calico\"");
    assert_at(e, &gv(&t), Some(1), "kube_network_plugin");
    let (d, _t) = spec_err("container_manager: crio\n");
    find_error(&d, "containerd only");
    spec_ok("kube_network_plugin: cilium\ncontainer_manager: containerd\n");
}

#[test]
fn host_vars_disagreeing_on_cluster_var() {
    let t = TempInv::new(
        "disagree",
        &[
            ("hosts.yaml", BASIC_HOSTS),
            ("group_vars/k8s_cluster.yml", "kube_version: \"1.31.4\"\n"),
            ("host_vars/w1.yml", "\nkube_version: \"1.30.1\"\n"),
        ],
    );
    let d = build(&t.load_ok()).expect_err("hosts disagree");
    let e = find_error(&d, "`kube_version` differs between hosts");
    assert!(e.message.contains("cp1") && e.message.contains("w1"), "{e}");
    assert_at(e, &t.path("host_vars/w1.yml"), Some(2), "kube_version");

    // Set on one host only: also a disagreement.
    let t = TempInv::new(
        "disagree",
        &[
            ("hosts.yaml", BASIC_HOSTS),
            ("host_vars/w1.yml", "cilium_version: \"1.16.19\"\n"),
        ],
    );
    let d = build(&t.load_ok()).expect_err("hosts disagree");
    let e = find_error(&d, "`cilium_version` differs between hosts");
    assert!(e.message.contains("it unset"), "{e}");
}

#[test]
fn rule_native_routing_without_auto_direct_routes_warns() {
    let (s, w, t) = spec_ok("cilium_auto_direct_node_routes: false\n");
    assert!(
        !s.cilium_intent
            .routing
            .native()
            .unwrap()
            .auto_direct_node_routes
    );
    let e = find_warning(&w, "native routing without autoDirectNodeRoutes");
    assert_at(e, &gv(&t), Some(1), "cilium_auto_direct_node_routes");
    // Tunnel routing: no warning.
    let (_, w, _t) = spec_ok(
        "cilium_auto_direct_node_routes: false\ncilium_tunnel_mode: vxlan\ncilium_loadbalancer_mode: snat\n",
    );
    assert!(w.is_empty(), "{w}");
}

#[test]
fn rule_direct_routing_device_not_among_devices_warns() {
    let (_, w, t) = spec_ok(
        "kubedrill_cilium_devices: [eth0, eth1]\nkubedrill_cilium_direct_routing_device: bond0\n",
    );
    let e = find_warning(&w, "direct routing device bond0 is not among the devices");
    assert_at(
        e,
        &gv(&t),
        Some(2),
        "kubedrill_cilium_direct_routing_device",
    );
    // A wildcard covers it.
    let (_, w, _t) = spec_ok(
        "kubedrill_cilium_devices: \"eth+\"\nkubedrill_cilium_direct_routing_device: eth1\n",
    );
    assert!(w.is_empty(), "{w}");
    let (d, _t) = spec_err("kubedrill_cilium_devices: [\"this-name-is-too-long0\"]\n");
    find_error(&d, "is not an interface name");
}

#[test]
fn bad_cidrs_and_prefix() {
    let (d, t) = spec_err("kube_pods_subnet: fd00::/64\n");
    let e = find_error(&d, "is IPv6");
    assert_at(e, &gv(&t), Some(1), "kube_pods_subnet");
    let (d, _t) = spec_err("kube_service_addresses: nope\n");
    find_error(&d, "is not a CIDR");
    let (d, _t) = spec_err("kube_network_node_prefix: 16\n");
    find_error(&d, "between the pod CIDR's /18 and /30");
}

#[test]
fn cilium_image_variables_and_startup_timeout() {
    let (s, _, _) = spec_ok("");
    assert_eq!((s.cilium_images, s.cilium_startup_timeout), (None, None));

    let (s, _, t) = spec_ok(
        "cilium_version: \"1.19.7\"\nquay_image_repo: \"registry.local:5000/\"\nkubedrill_cilium_startup_timeout: 40m\n",
    );
    let i = s.cilium_images.clone().expect("images");
    assert_eq!(i.agent_repo, "registry.local:5000/cilium/cilium");
    assert_eq!(i.operator_repo, "registry.local:5000/cilium/operator");
    assert_eq!(
        (i.agent_tag.as_str(), i.operator_tag.as_str()),
        ("v1.19.7", "v1.19.7")
    );
    assert_eq!(s.cilium_startup_timeout, Some(2400));
    assert!(matches!(
        source_of(&s, "quay_image_repo"),
        Source::Var { .. }
    ));
    assert!(source_of(&s, "kubedrill_cilium_startup_timeout").is_explicit());
    drop(t);

    // The agent's CPU request, as a Kubernetes quantity.
    for (q, millis) in [
        ("500m", 500),
        ("1", 1000),
        ("\"1.5\"", 1500),
        ("\"0.25\"", 250),
    ] {
        let (s, _, _) = spec_ok(&format!("kubedrill_cilium_agent_cpu_request: {q}\n"));
        assert_eq!(s.cilium_agent_cpu_millis, Some(millis), "{q}");
    }

    // The agent pods' CPU weight (a lab adjustment), an integer cgroup weight.
    let (s, _, _) = spec_ok("kubedrill_cilium_agent_cpu_weight: 100\n");
    assert_eq!(s.cilium_agent_cpu_weight, Some(100));
    let (s, _, _) = spec_ok("kubedrill_cilium_agent_cpu_weight: \"10000\"\n");
    assert_eq!(s.cilium_agent_cpu_weight, Some(10000));
    assert_eq!(spec_ok("cluster_name: x\n").0.cilium_agent_cpu_weight, None);

    let (s, _, _) = spec_ok(
        "cilium_image_repo: mirror/cilium\ncilium_image_tag: v1.19.7-patched\ncilium_operator_image_repo: mirror/operator-generic\n",
    );
    let i = s.cilium_images.expect("images");
    assert_eq!(
        (i.agent_repo.as_str(), i.agent_tag.as_str()),
        ("mirror/cilium", "v1.19.7-patched")
    );
    assert_eq!(i.operator_repo, "mirror/operator-generic");

    for (vars, field) in [
        ("quay_image_repo: \"https://quay.io\"\n", "quay_image_repo"),
        ("cilium_image_tag: \"v1 .19\"\n", "cilium_image_tag"),
        (
            "cilium_operator_image_repo: \"\"\n",
            "cilium_operator_image_repo",
        ),
        (
            "kubedrill_cilium_startup_timeout: 10\n",
            "kubedrill_cilium_startup_timeout",
        ),
        (
            "kubedrill_cilium_startup_timeout: 5h\n",
            "kubedrill_cilium_startup_timeout",
        ),
        (
            "kubedrill_cilium_agent_cpu_request: 5m\n",
            "kubedrill_cilium_agent_cpu_request",
        ),
        (
            "kubedrill_cilium_agent_cpu_request: 2Gi\n",
            "kubedrill_cilium_agent_cpu_request",
        ),
        (
            "kubedrill_cilium_agent_cpu_request: \"1.0005\"\n",
            "kubedrill_cilium_agent_cpu_request",
        ),
        (
            "kubedrill_cilium_agent_cpu_weight: 0\n",
            "kubedrill_cilium_agent_cpu_weight",
        ),
        (
            "kubedrill_cilium_agent_cpu_weight: 10001\n",
            "kubedrill_cilium_agent_cpu_weight",
        ),
        (
            "kubedrill_cilium_agent_cpu_weight: 1.5\n",
            "kubedrill_cilium_agent_cpu_weight",
        ),
    ] {
        let (d, t) = spec_err(vars);
        let e = d.errors().next().expect("an error");
        assert_eq!(e.field.as_deref(), Some(field), "{vars}: {d}");
        assert!(
            e.origin.as_ref().is_some_and(|o| *o.file == gv(&t)),
            "{vars}: no origin: {d}"
        );
    }
}

#[test]
fn registry_mirrors_are_validated() {
    let ok = "containerd_registries_mirrors:\n  - prefix: docker.io\n    mirrors:\n      - host: http://10.0.0.9:5000\n";
    let (s, _, _t) = spec_ok(ok);
    assert_eq!(
        s.runtime.mirrors[0].mirrors[0].capabilities,
        ["pull", "resolve"]
    );
    for (bad, needle) in [
        (
            "  - prefix: ../etc\n    mirrors: []\n",
            "is not a registry host name",
        ),
        (
            "  - prefix: docker.io\n    mirrors:\n      - host: 10.0.0.9:5000\n",
            "must start with http://",
        ),
        (
            "  - prefix: docker.io\n    mirror: []\n",
            "must be a list of",
        ),
    ] {
        let (d, _t) = spec_err(&format!("containerd_registries_mirrors:\n{bad}"));
        let e = find_error(&d, needle);
        assert_eq!(e.field.as_deref(), Some("containerd_registries_mirrors"));
    }
}

#[test]
fn every_error_has_an_origin_when_set_by_a_variable() {
    // A broad sweep: errors from variables always say where the variable was set.
    for vars in [
        "kubedrill_cilium_maglev_table_size: 7\n",
        "cilium_loadbalancer_mode: fast\n",
        "kube_apiserver_port: 0\n",
        "cluster_name: [a]\n",
        "kube_proxy_remove: maybe\n",
    ] {
        let (d, t) = spec_err(vars);
        for e in d.errors() {
            let o = e
                .origin
                .as_ref()
                .unwrap_or_else(|| panic!("no origin: {e}"));
            assert_eq!(o.file.as_path(), gv(&t).as_path(), "{e}");
            assert_eq!(o.line, Some(1), "{e}");
            assert_eq!(e.severity, Severity::Error);
        }
    }
}

#[test]
fn lab_3node_spec() {
    let inv = kubedrill::inventory::load(Path::new(&repo().join("inventories/lab-3node"))).unwrap();
    let (s, w) = build(&inv).unwrap_or_else(|d| panic!("{d}"));
    assert!(w.is_empty(), "{w}");
    assert_eq!(s.kubernetes, Version::new(1, 31, 4));
    assert_eq!(s.cilium, Version::new(1, 16, 19));
    assert_eq!(s.cilium_intent.acceleration, Acceleration::BestEffort);
    assert_eq!(s.cilium_intent.maglev_hash_seed.as_str(), SEED);
    assert_eq!(s.runtime.mirrors.len(), 1);
    assert_eq!(s.label, "lab-3node");
}
