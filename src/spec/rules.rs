//! The rules from Cilium's and kubeadm's documentation that a spec must satisfy. Each rule is
//! an error (the cluster would not work as asked) or a warning (it would, with a caveat), and
//! points at the variable that set the offending value.

use super::cilium::*;
use super::version::{CILIUM_MAX, CILIUM_MIN, KUBE_MAX_KNOWN, KUBE_MIN};
use super::{ClusterSpec, Source};
use crate::diag::{Diagnostic, Diagnostics, Origin};
use crate::inventory::Inventory;
use std::net::IpAddr;

/// Where a setting came from, for pointing an error at it.
fn origin_of<'a>(spec: &'a ClusterSpec, setting: &str) -> Option<&'a Origin> {
    spec.provenance
        .iter()
        .find(|p| p.setting == setting)
        .and_then(|p| match &p.source {
            Source::Var { origin, .. } | Source::ExtraValues { origin, .. } => Some(origin),
            _ => None,
        })
}

fn field_of(spec: &ClusterSpec, setting: &str) -> String {
    spec.provenance
        .iter()
        .find(|p| p.setting == setting)
        .map(|p| match &p.source {
            Source::Var { name, .. } => name.clone(),
            Source::ExtraValues { path, .. } => format!("cilium_extra_values.{path}"),
            _ => setting.to_owned(),
        })
        .unwrap_or_else(|| setting.to_owned())
}

fn err(spec: &ClusterSpec, setting: &str, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(msg)
        .at_opt(origin_of(spec, setting))
        .field(field_of(spec, setting))
}

fn warn(spec: &ClusterSpec, setting: &str, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::warning(msg)
        .at_opt(origin_of(spec, setting))
        .field(field_of(spec, setting))
}

/// Check every rule; findings are appended to `diags`.
pub fn check(spec: &ClusterSpec, inv: &Inventory, diags: &mut Diagnostics) {
    versions(spec, diags);
    routing(spec, diags);
    kube_proxy(spec, diags);
    load_balancing(spec, diags);
    addresses(spec, inv, diags);
}

fn versions(spec: &ClusterSpec, diags: &mut Diagnostics) {
    let k = spec.kubernetes.minor_pair();
    if k < KUBE_MIN {
        diags.push(err(spec, "kube_version", format!(
            "Kubernetes {} is older than {}.{}, the first release with kubeadm's v1beta3 config API",
            spec.kubernetes, KUBE_MIN.0, KUBE_MIN.1
        )));
    } else if k > KUBE_MAX_KNOWN {
        diags.push(warn(spec, "kube_version", format!(
            "Kubernetes {} is newer than {}.{}, the newest kubedrill knows; rendering kubeadm v1beta4",
            spec.kubernetes, KUBE_MAX_KNOWN.0, KUBE_MAX_KNOWN.1
        )));
    }
    let c = spec.cilium.minor_pair();
    if c < CILIUM_MIN || c > CILIUM_MAX {
        diags.push(err(spec, "cilium_version", format!(
            "Cilium {} is outside {}.{}–{}.{}, the chart versions kubedrill knows the values of",
            spec.cilium, CILIUM_MIN.0, CILIUM_MIN.1, CILIUM_MAX.0, CILIUM_MAX.1
        )));
    }
}

fn routing(spec: &ClusterSpec, diags: &mut Diagnostics) {
    let i = &spec.cilium_intent;
    if let RoutingMode::Native(n) = &i.routing {
        // Native routing: the native CIDR must cover the pod CIDR, or pod traffic is masqueraded
        // (and from Cilium 1.18 the chart refuses native routing without one).
        if !n.cidr.contains(&spec.pod_cidr) {
            diags.push(
                err(
                    spec,
                    "native_routing_cidr",
                    format!(
                        "native routing CIDR {} does not cover the pod CIDR {}",
                        n.cidr, spec.pod_cidr
                    ),
                )
                .hint(format!(
                    "set cilium_native_routing_cidr to {} or a supernet of it",
                    spec.pod_cidr
                )),
            );
        }
        if !n.auto_direct_node_routes {
            diags.push(warn(spec, "auto_direct_node_routes",
                "native routing without autoDirectNodeRoutes: routes to other nodes' pod CIDRs must come from elsewhere (BGP, the cloud's routing tables)"));
        }
    }
}

fn kube_proxy(spec: &ClusterSpec, diags: &mut Diagnostics) {
    let i = &spec.cilium_intent;
    match i.kube_proxy_replacement {
        KubeProxyReplacement::Partial if spec.cilium.at_least(1, 16) => {
            diags.push(err(spec, "kube_proxy_replacement", format!(
                "kubeProxyReplacement \"partial\" is rejected by Cilium {} (removed in 1.16)",
                spec.cilium
            )).hint("use true (kube-proxy-free) or false"));
        }
        KubeProxyReplacement::Partial if spec.cilium.at_least(1, 14) => {
            diags.push(warn(spec, "kube_proxy_replacement", "kubeProxyReplacement \"partial\" is deprecated since Cilium 1.14 and removed in 1.16"));
        }
        _ => {}
    }
    let explicit_remove = spec
        .provenance
        .iter()
        .any(|p| p.setting == "kube_proxy_remove" && p.source.is_explicit());
    match (i.kube_proxy_replacement, spec.kube_proxy_remove) {
        (KubeProxyReplacement::True, false) if explicit_remove => diags.push(err(spec, "kube_proxy_remove",
            "kube_proxy_remove is false while Cilium replaces kube-proxy: both would program services")
            .hint("set kube_proxy_remove: true (kubedrill skips kubeadm's addon/kube-proxy phase)")),
        (KubeProxyReplacement::False | KubeProxyReplacement::Partial, true) => diags.push(err(spec, "kube_proxy_remove",
            "kube_proxy_remove is true but Cilium does not fully replace kube-proxy: nothing would implement services")
            .hint("set cilium_kube_proxy_replacement: true, or keep kube-proxy")),
        _ => {}
    }
}

fn load_balancing(spec: &ClusterSpec, diags: &mut Diagnostics) {
    let i = &spec.cilium_intent;
    let kpr = i.kube_proxy_replacement == KubeProxyReplacement::True;
    let dsr = matches!(i.lb_mode, LbMode::Dsr | LbMode::Hybrid);
    if !kpr {
        for (setting, active, what) in [
            ("lb_mode", dsr, "DSR"),
            ("lb_algorithm", i.algorithm == Algorithm::Maglev, "Maglev"),
            (
                "lb_acceleration",
                i.acceleration != Acceleration::Disabled,
                "XDP acceleration",
            ),
            ("bpf_masquerade", i.bpf_masquerade, "BPF masquerade"),
        ] {
            if active {
                diags.push(err(spec, setting, format!(
                    "{what} needs Cilium's kube-proxy replacement (BPF NodePort), which is {}",
                    i.kube_proxy_replacement
                )).hint("set cilium_kube_proxy_replacement: true"));
            }
        }
    }
    if dsr {
        match (i.dsr_dispatch, i.routing.tunnel()) {
            (DsrDispatch::Opt, Some(p)) => diags.push(
                err(
                    spec,
                    "dsr_dispatch",
                    format!(
                        "DSR with `opt` dispatch needs native routing, but routing is a {p} tunnel"
                    ),
                )
                .hint("use native routing, or dsrDispatch: geneve with a Geneve tunnel"),
            ),
            (DsrDispatch::Geneve, Some(TunnelProtocol::Vxlan)) => diags.push(
                err(
                    spec,
                    "dsr_dispatch",
                    "DSR with `geneve` dispatch does not work over a VXLAN tunnel",
                )
                .hint("use tunnelProtocol: geneve or native routing"),
            ),
            _ => {}
        }
        if i.dsr_dispatch == DsrDispatch::Geneve && !spec.cilium.at_least(1, 14) {
            diags.push(err(
                spec,
                "dsr_dispatch",
                format!(
                    "DSR `geneve` dispatch needs Cilium ≥ 1.14; this cluster runs {}",
                    spec.cilium
                ),
            ));
        }
    }
    if i.acceleration == Acceleration::BestEffort && !spec.cilium.at_least(1, 15) {
        diags.push(err(spec, "lb_acceleration", format!(
            "loadBalancer.acceleration \"best-effort\" needs Cilium ≥ 1.15; this cluster runs {}",
            spec.cilium
        )).hint("use native (every device must support XDP) or disabled"));
    }
    if let Some(d) = &i.direct_routing_device
        && !i.devices.is_empty()
        && !i
            .devices
            .iter()
            .any(|x| x == d || (x.ends_with('+') && d.starts_with(x.trim_end_matches('+'))))
    {
        diags.push(warn(
            spec,
            "direct_routing_device",
            format!(
                "direct routing device {d} is not among the devices Cilium attaches to ({})",
                i.devices.join(", ")
            ),
        ));
    }
}

fn addresses(spec: &ClusterSpec, inv: &Inventory, diags: &mut Diagnostics) {
    if spec.pod_cidr.contains(&spec.service_cidr)
        || spec.service_cidr.contains(&spec.pod_cidr)
        || spec.pod_cidr.contains(&spec.service_cidr.network())
        || spec.service_cidr.contains(&spec.pod_cidr.network())
    {
        diags.push(err(
            spec,
            "kube_service_addresses",
            format!(
                "service CIDR {} overlaps the pod CIDR {}",
                spec.service_cidr, spec.pod_cidr
            ),
        ));
    }
    for h in &inv.hosts {
        if let IpAddr::V4(ip) = h.ip {
            for (net, what) in [
                (spec.pod_cidr, "kube_pods_subnet"),
                (spec.service_cidr, "kube_service_addresses"),
            ] {
                if net.contains(&ip) {
                    diags.push(
                        Diagnostic::error(format!(
                            "node {} has ip {ip}, inside {what} {net}",
                            h.name
                        ))
                        .at(h.vars.get("ip").map(|v| &v.origin).unwrap_or(&h.origin))
                        .field("ip")
                        .hint(format!(
                            "choose a {what} that does not overlap the node network"
                        )),
                    );
                }
            }
        }
    }
}
