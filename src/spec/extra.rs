//! Resolving the Cilium intent through its layers: default < Kubespray variable < kubedrill key <
//! `cilium_extra_values` (read under both old and new chart names, then removed from the extra
//! values so that the renderer writes them with the names the target chart version accepts).

use super::cilium::*;
use super::{Builder, Provenance, Setting, Source, SpecContext};
use crate::diag::{Diagnostic, Diagnostics, Origin};
use crate::inventory::Var;
use ipnet::{IpNet, Ipv4Net};
use serde_json::{Map, Value};
use std::fmt;

struct Layers<'b, 'a> {
    b: &'b Builder<'a>,
    extra: &'b mut Option<(Map<String, Value>, Origin)>,
    diags: &'b mut Diagnostics,
    ok: bool,
}

impl Layers<'_, '_> {
    fn layer_var<T: PartialEq + fmt::Display + Clone>(
        &mut self,
        s: &mut Setting<T>,
        setting: &str,
        var: &str,
        parse: impl Fn(&Var, &str) -> Result<T, Diagnostic>,
    ) {
        if let Some((v, src)) = self.b.get(var) {
            match parse(v, var) {
                Ok(val) => s.set(setting, val, src, self.diags),
                Err(d) => {
                    self.diags.push(d);
                    self.ok = false;
                }
            }
        }
    }

    fn layer_extra<T: PartialEq + fmt::Display + Clone>(
        &mut self,
        s: &mut Setting<T>,
        setting: &str,
        path: &str,
        parse: impl Fn(&Value) -> Result<Option<T>, String>,
    ) {
        let Some((map, origin)) = self.extra.as_mut() else {
            return;
        };
        let Some(value) = take_path(map, path) else {
            return;
        };
        let origin = origin.clone();
        match parse(&value) {
            Ok(Some(val)) => s.set(
                setting,
                val,
                Source::ExtraValues {
                    path: path.to_owned(),
                    origin,
                },
                self.diags,
            ),
            Ok(None) => {}
            Err(msg) => {
                self.diags.push(
                    Diagnostic::error(msg)
                        .at(&origin)
                        .field(format!("cilium_extra_values.{path}")),
                );
                self.ok = false;
            }
        }
    }
}

/// Remove a dotted path from a values map, pruning parents left empty; return the leaf.
pub fn take_path(map: &mut Map<String, Value>, path: &str) -> Option<Value> {
    match path.split_once('.') {
        None => map.shift_remove(path),
        Some((head, rest)) => {
            let child = map.get_mut(head)?.as_object_mut()?;
            let v = take_path(child, rest);
            if child.is_empty() {
                map.shift_remove(head);
            }
            v
        }
    }
}

fn choice<T: Copy>(v: &Value, options: &[(&str, T)]) -> Result<T, String> {
    let text = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    };
    options
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&text))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            format!(
                "\"{text}\" is not one of {}",
                options
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn var_choice<T: Copy>(
    options: &'static [(&'static str, T)],
) -> impl Fn(&Var, &str) -> Result<T, Diagnostic> {
    move |v, name| {
        choice(&v.value, options).map_err(|m| Diagnostic::error(m).at(&v.origin).field(name))
    }
}

fn extra_choice<T: Copy>(
    options: &'static [(&'static str, T)],
) -> impl Fn(&Value) -> Result<Option<T>, String> {
    move |v| choice(v, options).map(Some)
}

fn extra_bool(v: &Value) -> Result<Option<bool>, String> {
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s == "true" => Ok(Some(true)),
        Value::String(s) if s == "false" => Ok(Some(false)),
        Value::Null => Ok(None),
        other => Err(format!("expected true or false, found {other}")),
    }
}

fn parse_cidr(text: &str) -> Result<Ipv4Net, String> {
    match text.trim().parse::<IpNet>() {
        Ok(IpNet::V4(n)) if n.trunc() == n => Ok(n),
        Ok(IpNet::V4(n)) => Err(format!(
            "\"{text}\" has host bits set; did you mean {}?",
            n.trunc()
        )),
        Ok(IpNet::V6(_)) => Err(format!(
            "\"{text}\" is IPv6; kubedrill builds IPv4 clusters"
        )),
        Err(_) if text.trim().is_empty() => {
            Err("is empty; native routing needs a CIDR covering the pod CIDR".to_owned())
        }
        Err(_) => Err(format!("\"{text}\" is not a CIDR")),
    }
}

fn device_list(v: &Value) -> Result<Vec<String>, String> {
    let items: Vec<String> = match v {
        Value::String(s) => s
            .split([',', ' '])
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("device {x} is not a name"))
            })
            .collect::<Result<_, _>>()?,
        Value::Null => vec![],
        other => return Err(format!("expected a list of interface names, found {other}")),
    };
    for d in &items {
        if d.len() > 15
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+@".contains(c))
        {
            return Err(format!(
                "\"{d}\" is not an interface name (≤ 15 characters, or a prefix with +)"
            ));
        }
    }
    Ok(items)
}

/// Wrapper so lists print in provenance.
#[derive(Clone, PartialEq)]
struct Devices(Vec<String>);
impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("auto-detect")
        } else {
            f.write_str(&self.0.join(","))
        }
    }
}

#[derive(Clone, PartialEq)]
struct OptText(Option<String>);
impl fmt::Display for OptText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("auto"))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Native,
    Tunnel,
}
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Native => "native",
            Kind::Tunnel => "tunnel",
        })
    }
}

const KPR: &[(&str, KubeProxyReplacement)] = &[
    ("true", KubeProxyReplacement::True),
    ("strict", KubeProxyReplacement::True),
    ("false", KubeProxyReplacement::False),
    ("disabled", KubeProxyReplacement::False),
    ("partial", KubeProxyReplacement::Partial),
];
const LB_MODES: &[(&str, LbMode)] = &[
    ("snat", LbMode::Snat),
    ("dsr", LbMode::Dsr),
    ("hybrid", LbMode::Hybrid),
];
const DISPATCH: &[(&str, DsrDispatch)] =
    &[("opt", DsrDispatch::Opt), ("geneve", DsrDispatch::Geneve)];
const ALGOS: &[(&str, Algorithm)] = &[("maglev", Algorithm::Maglev), ("random", Algorithm::Random)];
const ACCEL: &[(&str, Acceleration)] = &[
    ("disabled", Acceleration::Disabled),
    ("native", Acceleration::Native),
    ("best-effort", Acceleration::BestEffort),
];
const PROTOCOLS: &[(&str, TunnelProtocol)] = &[
    ("vxlan", TunnelProtocol::Vxlan),
    ("geneve", TunnelProtocol::Geneve),
];
/// Kubespray's `cilium_tunnel_mode`: `disabled` means native routing.
const TUNNEL_MODE: &[(&str, Option<TunnelProtocol>)] = &[
    ("vxlan", Some(TunnelProtocol::Vxlan)),
    ("geneve", Some(TunnelProtocol::Geneve)),
    ("disabled", None),
    ("native", None),
    ("false", None),
];

/// Resolve the Cilium intent.
pub(super) fn intent(
    b: &Builder<'_>,
    extra: &mut Option<(Map<String, Value>, Origin)>,
    pod_cidr: Ipv4Net,
    ctx: &SpecContext,
    diags: &mut Diagnostics,
    prov: &mut Vec<Provenance>,
) -> Option<CiliumIntent> {
    let mut l = Layers {
        b,
        extra,
        diags,
        ok: true,
    };

    // Routing: kind and tunnel protocol.
    let mut kind = Setting::new(Kind::Native, Source::Default);
    let mut proto = Setting::new(TunnelProtocol::Vxlan, Source::Default);
    if let Some((v, src)) = b.get("cilium_tunnel_mode") {
        match choice(&v.value, TUNNEL_MODE) {
            Ok(Some(p)) => {
                kind.set("routing_mode", Kind::Tunnel, src.clone(), l.diags);
                proto.set("tunnel_protocol", p, src, l.diags);
            }
            Ok(None) => kind.set("routing_mode", Kind::Native, src, l.diags),
            Err(m) => {
                l.diags.push(
                    Diagnostic::error(m)
                        .at(&v.origin)
                        .field("cilium_tunnel_mode"),
                );
                l.ok = false;
            }
        }
    }
    l.layer_var(
        &mut kind,
        "routing_mode",
        "kubedrill_cilium_routing_mode",
        var_choice(&[("native", Kind::Native), ("tunnel", Kind::Tunnel)]),
    );
    l.layer_var(
        &mut proto,
        "tunnel_protocol",
        "kubedrill_cilium_tunnel_protocol",
        var_choice(PROTOCOLS),
    );
    l.layer_extra(&mut kind, "routing_mode", "routingMode", |v| {
        match v.as_str() {
            Some("") | None if v.is_null() || v.as_str() == Some("") => Ok(None),
            _ => choice(v, &[("native", Kind::Native), ("tunnel", Kind::Tunnel)]).map(Some),
        }
    });
    // Cilium ≤ 1.14's `tunnel`: disabled | vxlan | geneve.
    let mut legacy_tunnel = Setting::new(OptText(None), Source::Default);
    l.layer_extra(&mut legacy_tunnel, "tunnel", "tunnel", |v| {
        match v.as_str() {
            Some("") => Ok(None),
            Some(s @ ("disabled" | "vxlan" | "geneve")) => Ok(Some(OptText(Some(s.to_owned())))),
            _ => Err(format!("{v} is not one of disabled, vxlan, geneve")),
        }
    });
    if let (Some(t), Source::ExtraValues { .. }) = (&legacy_tunnel.value.0, &legacy_tunnel.source) {
        let (k, p) = match t.as_str() {
            "disabled" => (Kind::Native, None),
            "geneve" => (Kind::Tunnel, Some(TunnelProtocol::Geneve)),
            _ => (Kind::Tunnel, Some(TunnelProtocol::Vxlan)),
        };
        kind.set("routing_mode", k, legacy_tunnel.source.clone(), l.diags);
        if let Some(p) = p {
            proto.set("tunnel_protocol", p, legacy_tunnel.source.clone(), l.diags);
        }
    }
    l.layer_extra(
        &mut proto,
        "tunnel_protocol",
        "tunnelProtocol",
        |v| match v.as_str() {
            Some("") => Ok(None),
            _ => choice(v, PROTOCOLS).map(Some),
        },
    );

    // Native routing CIDR and direct routes.
    let mut cidr = Setting::new(
        pod_cidr,
        Source::Derived {
            from: "kube_pods_subnet".to_owned(),
        },
    );
    l.layer_var(
        &mut cidr,
        "native_routing_cidr",
        "cilium_native_routing_cidr",
        |v, n| {
            v.string(n).and_then(|s| {
                parse_cidr(&s).map_err(|m| Diagnostic::error(m).at(&v.origin).field(n))
            })
        },
    );
    for path in ["nativeRoutingCIDR", "ipv4NativeRoutingCIDR"] {
        l.layer_extra(&mut cidr, "native_routing_cidr", path, |v| match v {
            Value::String(s) => parse_cidr(s).map(Some),
            Value::Null => Ok(None),
            other => Err(format!("{other} is not a CIDR")),
        });
    }
    let mut direct = Setting::new(true, Source::Default);
    l.layer_var(
        &mut direct,
        "auto_direct_node_routes",
        "cilium_auto_direct_node_routes",
        Var::bool,
    );
    l.layer_extra(
        &mut direct,
        "auto_direct_node_routes",
        "autoDirectNodeRoutes",
        extra_bool,
    );

    // Kube-proxy replacement.
    let mut kpr = Setting::new(KubeProxyReplacement::True, Source::Default);
    l.layer_var(
        &mut kpr,
        "kube_proxy_replacement",
        "cilium_kube_proxy_replacement",
        var_choice(KPR),
    );
    l.layer_extra(
        &mut kpr,
        "kube_proxy_replacement",
        "kubeProxyReplacement",
        |v| {
            if v.as_str() == Some("probe") {
                return Err("\"probe\" was removed in Cilium 1.13; choose true or false".to_owned());
            }
            choice(v, KPR).map(Some)
        },
    );

    // Load balancing.
    let mut mode = Setting::new(LbMode::Dsr, Source::Default);
    l.layer_var(
        &mut mode,
        "lb_mode",
        "cilium_loadbalancer_mode",
        var_choice(LB_MODES),
    );
    l.layer_extra(
        &mut mode,
        "lb_mode",
        "loadBalancer.mode",
        extra_choice(LB_MODES),
    );
    let mut dispatch = Setting::new(DsrDispatch::Opt, Source::Default);
    l.layer_var(
        &mut dispatch,
        "dsr_dispatch",
        "kubedrill_cilium_dsr_dispatch",
        var_choice(DISPATCH),
    );
    l.layer_extra(
        &mut dispatch,
        "dsr_dispatch",
        "loadBalancer.dsrDispatch",
        extra_choice(DISPATCH),
    );
    let mut algo = Setting::new(Algorithm::Maglev, Source::Default);
    l.layer_var(
        &mut algo,
        "lb_algorithm",
        "kubedrill_cilium_lb_algorithm",
        var_choice(ALGOS),
    );
    l.layer_extra(
        &mut algo,
        "lb_algorithm",
        "loadBalancer.algorithm",
        extra_choice(ALGOS),
    );
    let mut accel = Setting::new(Acceleration::Disabled, Source::Default);
    l.layer_var(
        &mut accel,
        "lb_acceleration",
        "kubedrill_cilium_lb_acceleration",
        var_choice(ACCEL),
    );
    l.layer_extra(
        &mut accel,
        "lb_acceleration",
        "loadBalancer.acceleration",
        extra_choice(ACCEL),
    );

    // Maglev.
    let mut table = Setting::new(MaglevTableSize::DEFAULT, Source::Default);
    l.layer_var(
        &mut table,
        "maglev_table_size",
        "kubedrill_cilium_maglev_table_size",
        |v, n| {
            v.uint(n).and_then(|x| {
                MaglevTableSize::new(x).map_err(|m| Diagnostic::error(m).at(&v.origin).field(n))
            })
        },
    );
    l.layer_extra(
        &mut table,
        "maglev_table_size",
        "maglev.tableSize",
        |v| match v {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| format!("{n} is not a table size"))
                .and_then(MaglevTableSize::new)
                .map(Some),
            Value::String(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("\"{s}\" is not a number"))
                .and_then(MaglevTableSize::new)
                .map(Some),
            Value::Null => Ok(None),
            other => Err(format!("{other} is not a table size")),
        },
    );
    let (seed_value, seed_source) = match &ctx.stored_hash_seed {
        Some((seed, path)) => (seed.clone(), Source::Stored { path: path.clone() }),
        None => (HashSeed::generate(), Source::Generated),
    };
    let mut seed = Setting::new(SeedText(seed_value), seed_source);
    l.layer_var(
        &mut seed,
        "maglev_hash_seed",
        "kubedrill_cilium_maglev_hash_seed",
        |v, n| {
            v.string(n).and_then(|s| {
                HashSeed::parse(&s)
                    .map(SeedText)
                    .map_err(|m| Diagnostic::error(m).at(&v.origin).field(n))
            })
        },
    );
    l.layer_extra(
        &mut seed,
        "maglev_hash_seed",
        "maglev.hashSeed",
        |v| match v {
            Value::String(s) => HashSeed::parse(s).map(|s| Some(SeedText(s))),
            Value::Null => Ok(None),
            other => Err(format!("{other} is not a base64 seed")),
        },
    );

    // Masquerade, host routing, devices, Hubble.
    let mut masq = Setting::new(true, Source::Default);
    l.layer_var(
        &mut masq,
        "bpf_masquerade",
        "cilium_enable_bpf_masquerade",
        Var::bool,
    );
    l.layer_extra(&mut masq, "bpf_masquerade", "bpf.masquerade", extra_bool);
    let mut host_routing = Setting::new(true, Source::Default);
    l.layer_var(
        &mut host_routing,
        "bpf_host_routing",
        "cilium_enable_host_legacy_routing",
        |v, n| v.bool(n).map(|legacy| !legacy),
    );
    for path in ["bpf.hostRouting", "bpf.hostLegacyRouting"] {
        l.layer_extra(&mut host_routing, "bpf_host_routing", path, |v| {
            extra_bool(v).map(|b| b.map(|legacy| !legacy))
        });
    }
    let mut devices = Setting::new(Devices(vec![]), Source::Default);
    l.layer_var(
        &mut devices,
        "devices",
        "kubedrill_cilium_devices",
        |v, n| {
            device_list(&v.value)
                .map(Devices)
                .map_err(|m| Diagnostic::error(m).at(&v.origin).field(n))
        },
    );
    l.layer_extra(&mut devices, "devices", "devices", |v| {
        device_list(v).map(|d| Some(Devices(d)))
    });
    let mut drd = Setting::new(OptText(None), Source::Default);
    l.layer_var(
        &mut drd,
        "direct_routing_device",
        "kubedrill_cilium_direct_routing_device",
        |v, n| {
            v.string(n).and_then(|s| {
                device_list(&Value::String(s.clone()))
                    .map(|_| OptText(Some(s)))
                    .map_err(|m| Diagnostic::error(m).at(&v.origin).field(n))
            })
        },
    );
    l.layer_extra(
        &mut drd,
        "direct_routing_device",
        "nodePort.directRoutingDevice",
        |v| match v.as_str() {
            Some("") | None => Ok(None),
            Some(s) => device_list(v).map(|_| Some(OptText(Some(s.to_owned())))),
        },
    );
    let mut hubble = Setting::new(false, Source::Default);
    l.layer_var(&mut hubble, "hubble", "cilium_enable_hubble", Var::bool);
    l.layer_extra(&mut hubble, "hubble", "hubble.enabled", extra_bool);

    if !l.ok {
        return None;
    }
    kind.record("routing_mode", prov);
    if kind.value == Kind::Tunnel {
        proto.record("tunnel_protocol", prov);
    } else {
        cidr.record("native_routing_cidr", prov);
        direct.record("auto_direct_node_routes", prov);
    }
    kpr.record("kube_proxy_replacement", prov);
    mode.record("lb_mode", prov);
    dispatch.record("dsr_dispatch", prov);
    algo.record("lb_algorithm", prov);
    table.record("maglev_table_size", prov);
    seed.record("maglev_hash_seed", prov);
    accel.record("lb_acceleration", prov);
    masq.record("bpf_masquerade", prov);
    host_routing.record("bpf_host_routing", prov);
    devices.record("devices", prov);
    drd.record("direct_routing_device", prov);
    hubble.record("hubble", prov);

    let routing = match kind.value {
        Kind::Native => RoutingMode::Native(NativeRouting {
            cidr: cidr.value,
            auto_direct_node_routes: direct.value,
        }),
        Kind::Tunnel => RoutingMode::Tunnel(proto.value),
    };
    Some(CiliumIntent {
        routing,
        kube_proxy_replacement: kpr.value,
        lb_mode: mode.value,
        dsr_dispatch: dispatch.value,
        algorithm: algo.value,
        maglev_table_size: table.value,
        maglev_hash_seed: seed.value.0,
        acceleration: accel.value,
        bpf_masquerade: masq.value,
        bpf_host_routing: host_routing.value,
        devices: devices.value.0,
        direct_routing_device: drd.value.0,
        hubble: hubble.value,
    })
}

/// A seed in provenance: shown in full (it is not a credential; see [`HashSeed`]).
#[derive(Clone, PartialEq)]
struct SeedText(HashSeed);
impl fmt::Display for SeedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}
