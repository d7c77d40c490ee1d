//! Cilium Helm values for the chart version in use, from the intent, with the names that version
//! accepts:
//!
//! | intent | 1.11–1.13 | 1.14–1.15 | 1.16+ |
//! |---|---|---|---|
//! | routing | `tunnel: disabled\|vxlan\|geneve` | `routingMode` + `tunnelProtocol` | same |
//! | kube-proxy replacement | `strict`/`partial`/`disabled` | `true`/`false` (`partial` deprecated) | `true`/`false` |
//! | BPF host routing | `bpf.hostRouting: false` (1.11), `bpf.hostLegacyRouting: false` (1.12+) | same | same |
//! | XDP best-effort | — | 1.15+ | yes |
//!
//! `cilium_extra_values` (minus the keys read into the intent) is deep-merged last.

use super::{RenderError, RenderedFile};
use crate::spec::ClusterSpec;
use crate::spec::cilium::*;
use serde_json::{Map, Value, json};

/// Where the values file goes on the first control plane.
pub const VALUES_PATH: &str = "/etc/kubernetes/kubedrill/cilium-values.yaml";

/// The chart's startup probe interval (every chart since 1.11).
const STARTUP_PERIOD_SECS: u64 = 2;

/// The values as data.
pub fn values(spec: &ClusterSpec, node_count: usize) -> Value {
    let i = &spec.cilium_intent;
    let v = spec.cilium;
    let mut m = Map::new();

    let kpr = match (i.kube_proxy_replacement, v.at_least(1, 14)) {
        (KubeProxyReplacement::True, false) => json!("strict"),
        (KubeProxyReplacement::Partial, _) => json!("partial"),
        (KubeProxyReplacement::False, false) => json!("disabled"),
        (KubeProxyReplacement::True, true) => json!(true),
        (KubeProxyReplacement::False, true) => json!(false),
    };
    m.insert("kubeProxyReplacement".into(), kpr);
    m.insert("k8sServiceHost".into(), json!(spec.endpoint.host));
    m.insert("k8sServicePort".into(), json!(spec.endpoint.port));

    let dsr = matches!(i.lb_mode, LbMode::Dsr | LbMode::Hybrid);
    let geneve_dsr = dsr && i.dsr_dispatch == DsrDispatch::Geneve;
    if v.at_least(1, 14) {
        match &i.routing {
            RoutingMode::Native(_) => {
                m.insert("routingMode".into(), json!("native"));
                // Only Geneve DSR dispatch needs a tunnel protocol under native routing.
                if geneve_dsr {
                    m.insert("tunnelProtocol".into(), json!("geneve"));
                }
            }
            RoutingMode::Tunnel(p) => {
                m.insert("routingMode".into(), json!("tunnel"));
                m.insert("tunnelProtocol".into(), json!(p.to_string()));
            }
        }
    } else {
        let t = match &i.routing {
            RoutingMode::Native(_) => "disabled".to_owned(),
            RoutingMode::Tunnel(p) => p.to_string(),
        };
        m.insert("tunnel".into(), json!(t));
    }
    if let RoutingMode::Native(n) = &i.routing {
        m.insert("ipv4NativeRoutingCIDR".into(), json!(n.cidr.to_string()));
        m.insert(
            "autoDirectNodeRoutes".into(),
            json!(n.auto_direct_node_routes),
        );
    }

    let mut lb = Map::new();
    lb.insert("mode".into(), json!(i.lb_mode.to_string()));
    if dsr {
        lb.insert("dsrDispatch".into(), json!(i.dsr_dispatch.to_string()));
    }
    lb.insert("algorithm".into(), json!(i.algorithm.to_string()));
    lb.insert("acceleration".into(), json!(i.acceleration.to_string()));
    m.insert("loadBalancer".into(), Value::Object(lb));
    if i.algorithm == Algorithm::Maglev {
        m.insert(
            "maglev".into(),
            json!({ "tableSize": i.maglev_table_size.get(), "hashSeed": i.maglev_hash_seed.as_str() }),
        );
    }

    let mut bpf = Map::new();
    bpf.insert("masquerade".into(), json!(i.bpf_masquerade));
    if v.at_least(1, 12) {
        bpf.insert("hostLegacyRouting".into(), json!(!i.bpf_host_routing));
    } else {
        bpf.insert("hostRouting".into(), json!(!i.bpf_host_routing));
    }
    m.insert("bpf".into(), Value::Object(bpf));

    if !i.devices.is_empty() {
        m.insert("devices".into(), json!(i.devices));
    }
    if let Some(d) = &i.direct_routing_device {
        m.insert("nodePort".into(), json!({ "directRoutingDevice": d }));
    }
    // Cluster-pool IPAM must hand out addresses from kube_pods_subnet, or native routing and
    // masquerading would be computed for the wrong range.
    m.insert(
        "ipam".into(),
        json!({ "mode": "cluster-pool", "operator": {
            "clusterPoolIPv4PodCIDRList": [spec.pod_cidr.to_string()],
            "clusterPoolIPv4MaskSize": spec.node_prefix,
        }}),
    );
    // Two operator replicas need two nodes (anti-affinity); one node gets one.
    let mut operator = json!({ "replicas": node_count.clamp(1, 2) });
    if let Some(img) = &spec.cilium_images {
        // Mirrored or locally built images have their own digests: the chart's pinned
        // upstream digests would never match, so images go by tag (as Kubespray does).
        let agent =
            json!({ "repository": img.agent_repo, "tag": img.agent_tag, "useDigest": false });
        m.insert("image".into(), agent.clone());
        m.insert("preflight".into(), json!({ "image": agent }));
        // The chart appends `-generic` (the cloud) to the operator repository; a repository
        // already named `…-generic` is a full reference (Kubespray's offline fix, PR 13270).
        operator["image"] = if img.operator_repo.ends_with("-generic") {
            json!({ "override": format!("{}:{}", img.operator_repo, img.operator_tag) })
        } else {
            json!({ "repository": img.operator_repo, "tag": img.operator_tag, "useDigest": false })
        };
    }
    m.insert("operator".into(), operator);
    if let Some(secs) = spec.cilium_startup_timeout {
        // The agent compiles its datapath before it is ready; where that is slow (a lab under
        // TCG), the startup probe must allow for it or the kubelet restarts it forever.
        m.insert(
            "startupProbe".into(),
            json!({ "failureThreshold": secs.div_ceil(STARTUP_PERIOD_SECS), "periodSeconds": STARTUP_PERIOD_SECS }),
        );
        // The agent also waits 5 minutes for the operator to register Cilium's CRDs and then
        // exits ("Unable to find all Cilium CRDs necessary within 5m0s timeout", seen on the lab
        // under TCG): `crd-wait-timeout` (an option since 1.14 at least). It gives its own start
        // hooks 5 minutes and then panics ("Start or stop failed to finish on time"); from 1.19
        // that limit is the `hive-start-timeout` option (pkg/option/config.go), before it is fixed.
        let mut extra = Map::new();
        if v.at_least(1, 14) {
            extra.insert("crd-wait-timeout".into(), json!(format!("{secs}s")));
        }
        if v.at_least(1, 19) {
            extra.insert("hive-start-timeout".into(), json!(format!("{secs}s")));
        }
        if !extra.is_empty() {
            m.insert("extraConfig".into(), Value::Object(extra));
        }
    }
    if let Some(millis) = spec.cilium_agent_cpu_millis {
        // The agent compiles its datapath in its own cgroup, and Cilium allows each compile a
        // fixed 5 minutes (`defaults.ExecTimeout`, pkg/defaults): a CPU request gives it a share
        // against a busy control plane (a lab under TCG sets it).
        m.insert(
            "resources".into(),
            json!({ "requests": { "cpu": format!("{millis}m") } }),
        );
    }
    if let Some(l) = spec.leader_elect.cilium_operator {
        // The operator reads cilium-config too: a slow API server made it lose its 15 s lease
        // and exit while it was registering the CRDs (seen on the lab under TCG).
        let extra = m.entry("extraConfig").or_insert_with(|| json!({}));
        if let Value::Object(e) = extra {
            e.insert(
                "leader-election-lease-duration".into(),
                json!(format!("{}s", l.duration_secs)),
            );
            e.insert(
                "leader-election-renew-deadline".into(),
                json!(format!("{}s", l.renew_deadline_secs)),
            );
        }
    }
    m.insert("hubble".into(), json!({ "enabled": i.hubble }));

    let mut out = Value::Object(m);
    merge(&mut out, &Value::Object(spec.cilium_extra_values.clone()));
    out
}

/// Deep-merge `over` into `base` (Helm's semantics: maps merge, everything else replaces).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The values file, as YAML (ambiguous scalars quoted so Helm's YAML 1.1 reader agrees).
pub fn values_file(spec: &ClusterSpec, node_count: usize) -> Result<RenderedFile, RenderError> {
    let body =
        serde_saphyr::to_string(&values(spec, node_count)).map_err(|e| RenderError::Serialize {
            what: "Cilium values".to_owned(),
            message: e.to_string(),
        })?;
    let body = if body.ends_with('\n') {
        body
    } else {
        body + "\n"
    };
    let content = format!(
        "# Cilium {} Helm values — rendered by kubedrill (release `cilium` in kube-system).\n\
         # Names follow chart {}.{}; cilium_extra_values from the inventory are merged last.\n{body}",
        spec.cilium, spec.cilium.major, spec.cilium.minor
    );
    Ok(RenderedFile {
        path: VALUES_PATH.to_owned(),
        mode: 0o600,
        content,
        // 0600: cilium_extra_values can hold keys and passwords. Not `sensitive`: the
        // file stays on the node so a re-run can see it unchanged.
        sensitive: false,
    })
}
