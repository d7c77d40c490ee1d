//! The Cilium agent's own view of its datapath: `cilium-dbg status --verbose` (`cilium status
//! --verbose` before 1.15) parsed into [`AgentStatus`], and [`compare`]d with what kubedrill
//! expects ([`ExpectedDatapath`]).
//!
//! The text is the agent's `FormatStatusResponse` (Cilium's `pkg/client`), tab-aligned. What
//! each version prints, as far as kubedrill reads it:
//!
//! | line | 1.11–1.13 | 1.14 | 1.15 | 1.16+ |
//! |---|---|---|---|---|
//! | `KubeProxyReplacement:` mode | `Strict`/`Partial`/`Probe`/`Disabled` | `True`/`False` (or `Strict` ... when the old strings are set) | same | `True`/`False` |
//! | details `Mode:` | `SNAT`/`DSR`/`Hybrid` | same | same | same |
//! | details `DSR Dispatch Mode:` | — | — | `IP Option/Extension`/`Geneve` | + `IPIP` |
//! | details `Backend Selection:` | `Random` / `Maglev (Table Size: N)` | same | same | same |
//! | details `XDP Acceleration:` | `Disabled`/`Native` | same | + `Best-Effort` | same |
//! | host routing | `Host Routing: BPF\|Legacy` | same | same | `Routing: Network: Native\|Tunnel [vxlan]   Host: BPF\|Legacy` |
//! | masquerading | `BPF [devs] CIDR [IPv4: …]` / `IPTables [IPv4: …]` / `Disabled` | same | same | same |
//!
//! A setting a version does not print is `None`; [`compare`] skips it rather than guess.

use crate::kernel::EffectiveSettings;
use crate::spec::ClusterSpec;
use crate::spec::Version;
use crate::spec::cilium::{
    Acceleration, Algorithm, DsrDispatch, KubeProxyReplacement, LbMode, RoutingMode,
};
use serde::Serialize;
use std::fmt;

/// `KubeProxyReplacement:` as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KprStatus {
    /// `True` (1.14+).
    True,
    /// `Strict` (before 1.16).
    Strict,
    /// `Partial` (before 1.16).
    Partial,
    /// `Probe` (before 1.13).
    Probe,
    /// `False` (1.14+).
    False,
    /// `Disabled` (before 1.16).
    Disabled,
    /// Anything else, verbatim.
    Other(String),
}

impl KprStatus {
    fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "true" => KprStatus::True,
            "strict" => KprStatus::Strict,
            "partial" => KprStatus::Partial,
            "probe" => KprStatus::Probe,
            "false" => KprStatus::False,
            "disabled" => KprStatus::Disabled,
            _ => KprStatus::Other(s.to_owned()),
        }
    }

    /// The intent this status fulfils, if any.
    pub fn intent(&self) -> Option<KubeProxyReplacement> {
        match self {
            KprStatus::True | KprStatus::Strict => Some(KubeProxyReplacement::True),
            KprStatus::Partial | KprStatus::Probe => Some(KubeProxyReplacement::Partial),
            KprStatus::False | KprStatus::Disabled => Some(KubeProxyReplacement::False),
            KprStatus::Other(_) => None,
        }
    }
}

/// One device the agent attached to (`Devices:`), with its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Interface name.
    pub name: String,
    /// Addresses listed for it.
    pub addresses: Vec<String>,
    /// Marked `(Direct Routing)`.
    pub direct_routing: bool,
}

/// Service load-balancing mode (`Mode:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbModeStatus {
    /// `SNAT`.
    Snat,
    /// `DSR`.
    Dsr,
    /// `Hybrid`.
    Hybrid,
    /// Anything else, verbatim.
    Other(String),
}

/// DSR dispatch (`DSR Dispatch Mode:`, Cilium 1.15+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DsrDispatchStatus {
    /// `IP Option/Extension`.
    IpOption,
    /// `Geneve`.
    Geneve,
    /// `IPIP`.
    Ipip,
    /// Anything else, verbatim.
    Other(String),
}

/// Backend selection (`Backend Selection:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendSelection {
    /// `Random`.
    Random,
    /// `Maglev (Table Size: N)`.
    Maglev {
        /// The table size, when printed.
        table_size: Option<u32>,
    },
    /// Anything else, verbatim.
    Other(String),
}

/// XDP acceleration (`XDP Acceleration:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpStatus {
    /// `Disabled`.
    Disabled,
    /// `Native`.
    Native,
    /// `Best-Effort` (1.15+).
    BestEffort,
    /// `Generic` (testing mode of some versions).
    Generic,
    /// Anything else, verbatim.
    Other(String),
}

/// Host routing (`Host Routing:` before 1.16, `Routing: ... Host:` from 1.16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostRoutingStatus {
    /// `BPF`.
    Bpf,
    /// `Legacy`.
    Legacy,
    /// Anything else, verbatim.
    Other(String),
}

/// Masquerading implementation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MasqueradingMode {
    /// `BPF` (also `BPF (ip-masq-agent)`).
    Bpf,
    /// `IPTables`.
    Iptables,
    /// `Disabled`.
    Disabled,
    /// Anything else, verbatim.
    Other(String),
}

/// `Masquerading:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Masquerading {
    /// Implementation.
    pub mode: MasqueradingMode,
    /// Through ip-masq-agent.
    pub ip_masq_agent: bool,
    /// `IPv4: Enabled`.
    pub ipv4: Option<bool>,
    /// `IPv6: Enabled`.
    pub ipv6: Option<bool>,
    /// The SNAT exclusion (native-routing) CIDR, printed for BPF masquerading.
    pub snat_exclusion_cidr: Option<String>,
}

/// Pod traffic between nodes (`Routing: Network:`, Cilium 1.16+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkRouting {
    /// `Native`.
    Native,
    /// `Tunnel [proto]`.
    Tunnel(Option<String>),
    /// Anything else, verbatim.
    Other(String),
}

/// What one agent says about its datapath. Every field is `None`/empty when this version or
/// configuration does not print it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    /// Cilium version from the `Cilium:` line (`-dev`/`-snapshot` suffixes dropped).
    pub cilium_version: Option<Version>,
    /// The `Cilium:` line's text after the health word, e.g. `1.16.5 (v1.16.5-ad688277)`.
    pub cilium_version_text: Option<String>,
    /// `Cilium:` health, e.g. `Ok`.
    pub cilium_health: Option<String>,
    /// `KubeProxyReplacement:`.
    pub kube_proxy_replacement: Option<KprStatus>,
    /// Devices (the details' `Devices:`, else the `KubeProxyReplacement:` line's list).
    pub devices: Vec<Device>,
    /// Socket LB (`Socket LB:`).
    pub socket_lb: Option<bool>,
    /// LB mode.
    pub lb_mode: Option<LbModeStatus>,
    /// DSR dispatch.
    pub dsr_dispatch: Option<DsrDispatchStatus>,
    /// Backend selection.
    pub backend_selection: Option<BackendSelection>,
    /// XDP acceleration.
    pub xdp_acceleration: Option<XdpStatus>,
    /// Host routing.
    pub host_routing: Option<HostRoutingStatus>,
    /// Network routing (1.16+).
    pub routing: Option<NetworkRouting>,
    /// Masquerading.
    pub masquerading: Option<Masquerading>,
    /// Bandwidth manager enabled (`BandwidthManager:`).
    pub bandwidth_manager: Option<bool>,
}

/// The text is not `cilium status` output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not `cilium status` output (no `Cilium:` or `KubeProxyReplacement:` line): {head:?}")]
pub struct StatusParseError {
    /// The first line of what was given.
    pub head: String,
}

/// `Key:   value` → (`Key`, `value`), splitting at the first `:` followed by whitespace or the
/// line's end.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while let Some(off) = line[i..].find(':') {
        let at = i + off;
        let next = bytes.get(at + 1).copied();
        if next.is_none() || next.is_some_and(|b| b == b' ' || b == b'\t') {
            return Some((line[..at].trim(), line[at + 1..].trim()));
        }
        i = at + 1;
    }
    None
}

/// Leading `MAJOR.MINOR.PATCH` of `1.17.0-dev` or `v1.14.0-snapshot.4`.
pub(crate) fn leading_version(s: &str) -> Option<Version> {
    let s = s.trim().trim_start_matches('v');
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches('.').parse().ok()
}

fn enabled_word(s: &str) -> Option<bool> {
    match s.split(|c: char| !c.is_ascii_alphabetic()).next()? {
        "Enabled" => Some(true),
        "Disabled" => Some(false),
        _ => None,
    }
}

/// `eth0 10.0.0.1 fe80::1 (Direct Routing), eth1 10.1.0.1`.
fn parse_devices(s: &str) -> Vec<Device> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    s.split(',')
        .filter_map(|part| {
            let direct_routing = part.contains("(Direct Routing)");
            let part = part.replace("(Direct Routing)", "");
            let mut words = part.split_whitespace();
            let name = words.next()?.to_owned();
            Some(Device {
                name,
                addresses: words.map(str::to_owned).collect(),
                direct_routing,
            })
        })
        .collect()
}

fn parse_masquerading(s: &str) -> Masquerading {
    let flag = |label: &str| -> Option<bool> {
        let at = s.find(label)?;
        enabled_word(s[at + label.len()..].trim_start())
    };
    let ipv4 = flag("IPv4:");
    let ipv6 = flag("IPv6:");
    let before_flags = s.split('[').next().unwrap_or_default().trim();
    let ip_masq_agent = s.contains("ip-masq-agent");
    let mode = if before_flags.starts_with("BPF") {
        MasqueradingMode::Bpf
    } else if before_flags.eq_ignore_ascii_case("iptables") {
        MasqueradingMode::Iptables
    } else if before_flags == "Disabled" {
        MasqueradingMode::Disabled
    } else {
        MasqueradingMode::Other(before_flags.to_owned())
    };
    // BPF [eth0, eth1]   10.0.0.0/16 [IPv4: ...]: the CIDR is the word after the device list.
    let snat_exclusion_cidr = (mode == MasqueradingMode::Bpf)
        .then(|| {
            let after_devs = s.split_once(']')?.1;
            let cidr = after_devs.split('[').next()?.trim();
            (!cidr.is_empty()).then(|| cidr.to_owned())
        })
        .flatten();
    Masquerading {
        mode,
        ip_masq_agent,
        ipv4,
        ipv6,
        snat_exclusion_cidr,
    }
}

fn parse_host_routing(s: &str) -> HostRoutingStatus {
    match s.split_whitespace().next().unwrap_or_default() {
        "BPF" => HostRoutingStatus::Bpf,
        "Legacy" => HostRoutingStatus::Legacy,
        other => HostRoutingStatus::Other(other.to_owned()),
    }
}

/// `Network: Tunnel [vxlan]   Host: Legacy`.
fn parse_routing(s: &str) -> (Option<NetworkRouting>, Option<HostRoutingStatus>) {
    let network = s.find("Network:").map(|at| {
        let rest = s[at + "Network:".len()..].trim_start();
        let rest = rest.split("Host:").next().unwrap_or_default().trim();
        let mut words = rest.split_whitespace();
        match words.next().unwrap_or_default() {
            "Native" => NetworkRouting::Native,
            "Tunnel" => NetworkRouting::Tunnel(
                words
                    .next()
                    .map(|p| p.trim_matches(|c| c == '[' || c == ']').to_owned())
                    .filter(|p| !p.is_empty()),
            ),
            other => NetworkRouting::Other(other.to_owned()),
        }
    });
    let host = s
        .find("Host:")
        .map(|at| parse_host_routing(&s[at + "Host:".len()..]));
    (network, host)
}

fn parse_backend(s: &str) -> BackendSelection {
    if s.starts_with("Random") {
        BackendSelection::Random
    } else if s.starts_with("Maglev") {
        let table_size = s
            .find("Table Size:")
            .map(|at| &s[at + "Table Size:".len()..])
            .and_then(|r| {
                r.trim()
                    .trim_end_matches(')')
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            });
        BackendSelection::Maglev { table_size }
    } else {
        BackendSelection::Other(s.to_owned())
    }
}

/// Parse `cilium-dbg status --verbose` (or plain `cilium status`) output. Unknown lines are
/// ignored; fails only when the text has neither a `Cilium:` nor a `KubeProxyReplacement:` line.
pub fn parse(text: &str) -> Result<AgentStatus, StatusParseError> {
    let mut st = AgentStatus::default();
    let mut recognised = false;
    let mut in_kpr_details = false;
    let mut detail_devices: Option<Vec<Device>> = None;
    let mut top_devices: Vec<Device> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if !indented {
            in_kpr_details = line.starts_with("KubeProxyReplacement Details:");
            if in_kpr_details {
                recognised = true;
                continue;
            }
            let Some((key, value)) = key_value(line) else {
                continue;
            };
            match key {
                "Cilium" => {
                    recognised = true;
                    let mut parts = value.splitn(2, char::is_whitespace);
                    st.cilium_health = parts.next().map(str::to_owned);
                    let rest = parts.next().unwrap_or_default().trim();
                    if !rest.is_empty() {
                        st.cilium_version = leading_version(rest);
                        st.cilium_version_text = Some(rest.to_owned());
                    }
                }
                "KubeProxyReplacement" => {
                    recognised = true;
                    let mut parts = value.splitn(2, char::is_whitespace);
                    if let Some(mode) = parts.next().filter(|m| !m.is_empty()) {
                        st.kube_proxy_replacement = Some(KprStatus::parse(mode));
                    }
                    top_devices = parse_devices(parts.next().unwrap_or_default());
                }
                "Host Routing" => st.host_routing = Some(parse_host_routing(value)),
                "Routing" => {
                    let (network, host) = parse_routing(value);
                    st.routing = network;
                    if host.is_some() {
                        st.host_routing = host;
                    }
                }
                "Masquerading" => st.masquerading = Some(parse_masquerading(value)),
                "BandwidthManager" => st.bandwidth_manager = Some(value != "Disabled"),
                _ => {}
            }
            continue;
        }
        if !in_kpr_details {
            continue;
        }
        let Some((key, value)) = key_value(line.trim_start()) else {
            continue;
        };
        match key {
            "Status" => {
                if let Some(mode) = value.split_whitespace().next() {
                    st.kube_proxy_replacement = Some(KprStatus::parse(mode));
                }
            }
            "Socket LB" => st.socket_lb = enabled_word(value),
            "Devices" => detail_devices = Some(parse_devices(value)),
            "Mode" => {
                st.lb_mode = Some(match value {
                    "SNAT" => LbModeStatus::Snat,
                    "DSR" => LbModeStatus::Dsr,
                    "Hybrid" => LbModeStatus::Hybrid,
                    other => LbModeStatus::Other(other.to_owned()),
                })
            }
            "DSR Dispatch Mode" => {
                st.dsr_dispatch = Some(match value {
                    "IP Option/Extension" => DsrDispatchStatus::IpOption,
                    "Geneve" => DsrDispatchStatus::Geneve,
                    "IPIP" => DsrDispatchStatus::Ipip,
                    other => DsrDispatchStatus::Other(other.to_owned()),
                })
            }
            "Backend Selection" => st.backend_selection = Some(parse_backend(value)),
            "XDP Acceleration" => {
                st.xdp_acceleration = Some(match value.to_ascii_lowercase().as_str() {
                    "disabled" => XdpStatus::Disabled,
                    "native" => XdpStatus::Native,
                    "best-effort" | "besteffort" => XdpStatus::BestEffort,
                    "generic" | "testing-only" => XdpStatus::Generic,
                    _ => XdpStatus::Other(value.to_owned()),
                })
            }
            _ => {}
        }
    }
    if !recognised {
        return Err(StatusParseError {
            head: text
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(120)
                .collect(),
        });
    }
    st.devices = detail_devices.unwrap_or(top_devices);
    Ok(st)
}

/// The datapath kubedrill expects an agent to report. `None` (or empty) means "do not check".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedDatapath {
    /// Cilium version the cluster should run.
    pub cilium_version: Option<Version>,
    /// Kube-proxy replacement.
    pub kube_proxy_replacement: Option<KubeProxyReplacement>,
    /// Load-balancing mode.
    pub lb_mode: Option<LbMode>,
    /// DSR dispatch (checked only with DSR or hybrid mode).
    pub dsr_dispatch: Option<DsrDispatch>,
    /// Backend selection.
    pub algorithm: Option<Algorithm>,
    /// Maglev table size (checked only with Maglev).
    pub maglev_table_size: Option<u32>,
    /// XDP acceleration.
    pub acceleration: Option<Acceleration>,
    /// BPF host routing (true) or legacy (false).
    pub bpf_host_routing: Option<bool>,
    /// BPF masquerading (true) or not (false).
    pub bpf_masquerade: Option<bool>,
    /// Native or tunnel routing (with protocol).
    pub routing: Option<RoutingMode>,
    /// Device names or Cilium wildcards (`eth+`) the agent should attach to.
    pub devices: Vec<String>,
    /// The direct-routing device.
    pub direct_routing_device: Option<String>,
    /// Bandwidth manager.
    pub bandwidth_manager: Option<bool>,
}

impl ExpectedDatapath {
    /// From the spec's intent, with the kernel-dependent settings replaced by what
    /// [`crate::kernel::effective`] says can actually run (its `effective` values, under the
    /// chart version's keys). A kube-proxy replacement that "cannot be enabled" stays expected:
    /// the agent was asked for it, and reporting anything else is a mismatch worth seeing.
    pub fn from_spec(spec: &ClusterSpec, effective: &EffectiveSettings) -> Self {
        let i = &spec.cilium_intent;
        let eff = |key: &str| effective.get(key).map(|e| e.effective.as_str());
        let bool_of = |key: &str| match eff(key) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let host_key = if spec.cilium.at_least(1, 12) {
            "bpf.hostLegacyRouting"
        } else {
            "bpf.hostRouting"
        };
        let acceleration = match eff("loadBalancer.acceleration") {
            Some("disabled") => Some(Acceleration::Disabled),
            Some("native") => Some(Acceleration::Native),
            Some("best-effort") => Some(Acceleration::BestEffort),
            Some(_) => None,
            None => Some(i.acceleration),
        };
        let bandwidth_manager = bool_of("bandwidthManager.enabled").or(bool_of("bandwidthManager"));
        ExpectedDatapath {
            cilium_version: Some(spec.cilium),
            kube_proxy_replacement: Some(i.kube_proxy_replacement),
            lb_mode: Some(i.lb_mode),
            dsr_dispatch: Some(i.dsr_dispatch),
            algorithm: Some(i.algorithm),
            maglev_table_size: Some(i.maglev_table_size.get()),
            acceleration,
            // The key holds "legacy routing": true means BPF host routing is off.
            bpf_host_routing: bool_of(host_key)
                .map(|legacy| !legacy)
                .or(Some(i.bpf_host_routing)),
            bpf_masquerade: bool_of("bpf.masquerade").or(Some(i.bpf_masquerade)),
            routing: Some(i.routing.clone()),
            devices: i.devices.clone(),
            direct_routing_device: i.direct_routing_device.clone(),
            bandwidth_manager,
        }
    }
}

/// One setting the agent runs differently from what kubedrill expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The setting, e.g. `XDP acceleration`.
    pub setting: &'static str,
    /// Expected, as kubedrill names it.
    pub expected: String,
    /// What the agent reports, as it prints it.
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, agent reports {}",
            self.setting, self.expected, self.actual
        )
    }
}

/// Cilium's device wildcard: a trailing `+` matches any suffix (`eth+`).
fn device_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn show<T: fmt::Debug>(v: &T) -> String {
    format!("{v:?}")
}

/// Every setting whose reported value differs from the expected one. Settings the agent's
/// version does not print, or that `expected` leaves `None`, are not checked; the LB mode,
/// DSR dispatch, backend selection and XDP are only checked with kube-proxy replacement on
/// (the agent prints them only then).
pub fn compare(expected: &ExpectedDatapath, actual: &AgentStatus) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut push = |setting: &'static str, expected: String, actual: String| {
        out.push(Mismatch {
            setting,
            expected,
            actual,
        })
    };

    if let (Some(e), Some(a)) = (expected.cilium_version, actual.cilium_version)
        && e != a
    {
        push("Cilium version", e.to_string(), a.to_string());
    }
    if let (Some(e), Some(a)) = (
        expected.kube_proxy_replacement,
        &actual.kube_proxy_replacement,
    ) && a.intent() != Some(e)
    {
        push("kube-proxy replacement", e.to_string(), show(a));
    }
    let kpr_on = matches!(
        actual
            .kube_proxy_replacement
            .as_ref()
            .and_then(KprStatus::intent),
        Some(KubeProxyReplacement::True)
    );
    if kpr_on {
        if let (Some(e), Some(a)) = (expected.lb_mode, &actual.lb_mode) {
            let ok = matches!(
                (e, a),
                (LbMode::Snat, LbModeStatus::Snat)
                    | (LbMode::Dsr, LbModeStatus::Dsr)
                    | (LbMode::Hybrid, LbModeStatus::Hybrid)
            );
            if !ok {
                push("load-balancing mode", e.to_string(), show(a));
            }
        }
        let dsr = matches!(expected.lb_mode, Some(LbMode::Dsr | LbMode::Hybrid));
        if dsr && let (Some(e), Some(a)) = (expected.dsr_dispatch, &actual.dsr_dispatch) {
            let ok = matches!(
                (e, a),
                (DsrDispatch::Opt, DsrDispatchStatus::IpOption)
                    | (DsrDispatch::Geneve, DsrDispatchStatus::Geneve)
            );
            if !ok {
                push("DSR dispatch", e.to_string(), show(a));
            }
        }
        if let (Some(e), Some(a)) = (expected.algorithm, &actual.backend_selection) {
            match (e, a) {
                (Algorithm::Random, BackendSelection::Random) => {}
                (Algorithm::Maglev, BackendSelection::Maglev { table_size }) => {
                    if let (Some(want), Some(got)) = (expected.maglev_table_size, table_size)
                        && want != *got
                    {
                        push("Maglev table size", want.to_string(), got.to_string());
                    }
                }
                _ => push("backend selection", e.to_string(), show(a)),
            }
        }
        if let (Some(e), Some(a)) = (expected.acceleration, &actual.xdp_acceleration) {
            let ok = matches!(
                (e, a),
                (Acceleration::Disabled, XdpStatus::Disabled)
                    | (Acceleration::Native, XdpStatus::Native)
                    | (Acceleration::BestEffort, XdpStatus::BestEffort)
            );
            if !ok {
                push("XDP acceleration", e.to_string(), show(a));
            }
        }
    }
    if let (Some(e), Some(a)) = (expected.bpf_host_routing, &actual.host_routing) {
        let ok = matches!(
            (e, a),
            (true, HostRoutingStatus::Bpf) | (false, HostRoutingStatus::Legacy)
        );
        if !ok {
            let want = if e { "BPF" } else { "Legacy" };
            push("host routing", want.to_owned(), show(a));
        }
    }
    if let (Some(e), Some(a)) = (expected.bpf_masquerade, &actual.masquerading) {
        let is_bpf = a.mode == MasqueradingMode::Bpf;
        if e != is_bpf {
            let want = if e { "BPF" } else { "not BPF (iptables)" };
            push("masquerading", want.to_owned(), show(&a.mode));
        }
    }
    if let (Some(e), Some(a)) = (&expected.routing, &actual.routing) {
        let ok = match (e, a) {
            (RoutingMode::Native(_), NetworkRouting::Native) => true,
            (RoutingMode::Tunnel(p), NetworkRouting::Tunnel(got)) => got
                .as_deref()
                .is_none_or(|g| g.eq_ignore_ascii_case(&p.to_string())),
            _ => false,
        };
        if !ok {
            push("routing", e.to_string(), show(a));
        }
    }
    if !expected.devices.is_empty() && !actual.devices.is_empty() {
        let names: Vec<&str> = actual.devices.iter().map(|d| d.name.as_str()).collect();
        let stray: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !expected.devices.iter().any(|p| device_matches(p, n)))
            .collect();
        let missing: Vec<&str> = expected
            .devices
            .iter()
            .filter(|p| !p.ends_with('+') && !names.contains(&p.as_str()))
            .map(String::as_str)
            .collect();
        if !stray.is_empty() || !missing.is_empty() {
            push("devices", expected.devices.join(", "), names.join(", "));
        }
    }
    if let Some(e) = &expected.direct_routing_device {
        let got: Vec<&str> = actual
            .devices
            .iter()
            .filter(|d| d.direct_routing)
            .map(|d| d.name.as_str())
            .collect();
        if !got.is_empty() && !got.contains(&e.as_str()) {
            push("direct-routing device", e.clone(), got.join(", "));
        }
    }
    if let (Some(e), Some(a)) = (expected.bandwidth_manager, actual.bandwidth_manager)
        && e != a
    {
        push("bandwidth manager", e.to_string(), a.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_parsers() {
        assert_eq!(
            key_value("Cilium:   Ok   1.16.5"),
            Some(("Cilium", "Ok   1.16.5"))
        );
        assert_eq!(
            key_value("Routing:   Network: Native   Host: BPF"),
            Some(("Routing", "Network: Native   Host: BPF"))
        );
        assert_eq!(key_value("no colon"), None);
        assert_eq!(
            leading_version("1.17.0-dev (v1.17.0-dev-0bc32ae110)"),
            Some(Version::new(1, 17, 0))
        );
        assert_eq!(
            leading_version("v1.14.0-snapshot.4"),
            Some(Version::new(1, 14, 0))
        );
        assert_eq!(leading_version("OK"), None);
        let d = parse_devices("[eth0   10.0.0.1 fe80::1 (Direct Routing), eth1 10.1.0.1]");
        assert_eq!(d.len(), 2);
        assert!(d[0].direct_routing && !d[1].direct_routing);
        assert_eq!(d[0].addresses, ["10.0.0.1", "fe80::1"]);
        let m = parse_masquerading(
            "BPF   [eth0, eth1]   10.244.0.0/16 [IPv4: Enabled, IPv6: Disabled]",
        );
        assert_eq!(m.mode, MasqueradingMode::Bpf);
        assert_eq!(m.snat_exclusion_cidr.as_deref(), Some("10.244.0.0/16"));
        assert_eq!((m.ipv4, m.ipv6), (Some(true), Some(false)));
        let m = parse_masquerading("IPTables [IPv4: Enabled, IPv6: Disabled]");
        assert_eq!(m.mode, MasqueradingMode::Iptables);
        assert_eq!(m.snat_exclusion_cidr, None);
        assert_eq!(
            parse_routing("Network: Tunnel [vxlan]   Host: Legacy"),
            (
                Some(NetworkRouting::Tunnel(Some("vxlan".to_owned()))),
                Some(HostRoutingStatus::Legacy)
            )
        );
        assert_eq!(
            parse_backend("Maglev (Table Size: 65521)"),
            BackendSelection::Maglev {
                table_size: Some(65521)
            }
        );
        assert!(device_matches("eth+", "eth1") && !device_matches("eth+", "ens3"));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(parse("").is_err());
        assert!(parse("OCI runtime exec failed: exec failed").is_err());
        assert!(parse("Cilium:   Ok   1.16.5 (v1.16.5-x)\n").is_ok());
    }
}
