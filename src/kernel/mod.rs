//! Kernel-feature verdicts: can this node run the Cilium features the spec asks for, with the
//! chosen Cilium version? [`evaluate`] judges one node from its [`Facts`]; [`effective`] turns
//! the verdicts of every node into the Helm values Cilium would effectively run with.
//!
//! Rules come from Cilium's "System Requirements" page (baseline kernel, kernel config,
//! advanced-feature kernels), the kube-proxy-free guide (socket-LB, XDP acceleration), the
//! tuning guide (eBPF host routing) and `cilium.md` in kubedrill's reference notes. Distro
//! kernels backport features: a RHEL 8 4.18 kernel is treated as the upstream kernel that
//! Cilium's requirements pair it with.

pub mod xdp;

use crate::facts::{Facts, KconfigValue, KernelVersion, OsFamily};
use crate::render::cilium::values as cilium_values;
use crate::spec::ClusterSpec;
use crate::spec::cilium::{
    Acceleration, DsrDispatch, KubeProxyReplacement, LbMode, TunnelProtocol,
};
use crate::spec::version::cilium_min_kernel;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
pub use xdp::{XdpDevice, XdpOutcome};

/// A kernel-dependent Cilium feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// The minimum kernel of the Cilium release.
    BaselineKernel,
    /// The kernel config options Cilium needs.
    KernelConfig,
    /// Socket-level load balancing (needed by kube-proxy replacement).
    SocketLb,
    /// eBPF host routing (`bpf.hostLegacyRouting: false`).
    BpfHostRouting,
    /// eBPF masquerading (`bpf.masquerade: true`).
    BpfMasquerade,
    /// The bandwidth manager (`bandwidthManager.enabled`).
    BandwidthManager,
    /// Native XDP acceleration of NodePort/LoadBalancer services.
    XdpNative,
}

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Feature; 7] = [
        Feature::BaselineKernel,
        Feature::KernelConfig,
        Feature::SocketLb,
        Feature::BpfHostRouting,
        Feature::BpfMasquerade,
        Feature::BandwidthManager,
        Feature::XdpNative,
    ];
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::BaselineKernel => "baseline kernel",
            Feature::KernelConfig => "kernel config",
            Feature::SocketLb => "socket-LB",
            Feature::BpfHostRouting => "BPF host routing",
            Feature::BpfMasquerade => "BPF masquerade",
            Feature::BandwidthManager => "bandwidth manager",
            Feature::XdpNative => "native XDP",
        })
    }
}

/// How a feature fares on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    /// Works as asked.
    Ok,
    /// Works in a lesser way, or could not be verified.
    Degraded {
        /// Why.
        reason: String,
        /// What Cilium does instead.
        fallback: String,
    },
    /// Cannot work as asked.
    Blocked {
        /// Why.
        reason: String,
        /// How to make it work.
        fix: String,
    },
}

/// How every "could not be checked" reason starts: a [`Status::Degraded`] with this prefix
/// means the feature is assumed to work, not that Cilium falls back.
pub const UNVERIFIED: &str = "cannot verify";

impl Status {
    /// True for a [`Status::Degraded`] that only says the facts were not enough to check.
    pub fn is_unverified(&self) -> bool {
        matches!(self, Status::Degraded { reason, .. } if reason.starts_with(UNVERIFIED))
    }

    /// True when Cilium would run the feature in a lesser way (degraded, not merely unverified).
    pub fn is_fallback(&self) -> bool {
        self.is_degraded() && !self.is_unverified()
    }

    /// True for [`Status::Blocked`].
    pub fn is_blocked(&self) -> bool {
        matches!(self, Status::Blocked { .. })
    }

    /// True for [`Status::Degraded`].
    pub fn is_degraded(&self) -> bool {
        matches!(self, Status::Degraded { .. })
    }

    /// The reason, unless Ok.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Ok => None,
            Status::Degraded { reason, .. } | Status::Blocked { reason, .. } => Some(reason),
        }
    }

    fn degraded(reason: impl Into<String>, fallback: impl Into<String>) -> Self {
        Status::Degraded {
            reason: reason.into(),
            fallback: fallback.into(),
        }
    }

    fn blocked(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Status::Blocked {
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Ok => f.write_str("ok"),
            Status::Degraded { reason, fallback } => {
                write!(f, "degraded: {reason} (instead: {fallback})")
            }
            Status::Blocked { reason, fix } => write!(f, "blocked: {reason} (fix: {fix})"),
        }
    }
}

/// The verdict on one feature for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The feature.
    pub feature: Feature,
    /// Whether the spec asks for it (a verdict on an unrequested feature is information only).
    pub requested: bool,
    /// How it fares.
    pub status: Status,
    /// The facts the verdict rests on.
    pub evidence: String,
}

/// The kernel as judged: its release and, for backporting distro kernels, the upstream
/// version it is treated as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelView {
    /// `uname -r`.
    pub release: String,
    /// Parsed version.
    pub version: Option<KernelVersion>,
    /// The version rules compare against (the backport equivalent on RHEL 8).
    pub effective: Option<KernelVersion>,
    /// Why `effective` differs from `version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backport: Option<String>,
}

/// One node's verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    /// Inventory host name.
    pub host: String,
    /// `PRETTY_NAME` of the OS.
    pub os: String,
    /// The kernel.
    pub kernel: KernelView,
    /// Devices Cilium would attach XDP to, with what was found on each.
    pub xdp_devices: Vec<XdpDevice>,
    /// One verdict per [`Feature`], in [`Feature::ALL`] order.
    pub verdicts: Vec<Verdict>,
}

impl NodeReport {
    /// The verdict on a feature.
    pub fn verdict(&self, feature: Feature) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.feature == feature)
    }

    /// Verdicts on requested features that are blocked.
    pub fn requested_blocked(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts
            .iter()
            .filter(|v| v.requested && v.status.is_blocked())
    }
}

/// RHEL 8 minor release → kernel build number of its 4.18.0 kernel (`4.18.0-372` is 8.6).
const RHEL8_BUILDS: &[(u32, u32)] = &[
    (0, 80),
    (1, 147),
    (2, 193),
    (3, 240),
    (4, 305),
    (5, 348),
    (6, 372),
    (7, 425),
    (8, 477),
    (9, 513),
    (10, 553),
];

/// The RHEL 8 minor of a 4.18 kernel: `VERSION_ID`, else `el8_N` in the release, else the
/// build number.
fn rhel8_minor(facts: &Facts) -> Option<u32> {
    if let Some((8, m)) = facts.os.rhel_release() {
        return Some(m);
    }
    let rel = &facts.kernel.release;
    if let Some(i) = rel.find("el8_") {
        let digits: String = rel[i + 4..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(m) = digits.parse() {
            return Some(m);
        }
    }
    let build: u32 = rel
        .strip_prefix("4.18.0-")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    RHEL8_BUILDS
        .iter()
        .rev()
        .find(|(_, b)| build >= *b)
        .map(|(m, _)| *m)
}

/// Judge the kernel, mapping RHEL 8's 4.18 to the upstream kernel Cilium's requirements pair
/// it with: 8.0–8.5 with 4.19.57 (Cilium 1.13–1.15), 8.6 with 5.4 (1.16–1.17), 8.10 with 5.10
/// (1.18+). Source: Cilium "System Requirements", Linux kernel table, and cilium.md.
pub fn kernel_view(facts: &Facts) -> KernelView {
    let version = facts.kernel.version;
    let mut view = KernelView {
        release: facts.kernel.release.clone(),
        version,
        effective: version,
        backport: None,
    };
    let Some(v) = version else { return view };
    if facts.os.family == OsFamily::Rhel && (v.major, v.minor) == (4, 18) {
        let minor = rhel8_minor(facts);
        let m = minor.unwrap_or(0);
        let eq = match m {
            0..=5 => KernelVersion::new(4, 19, 57),
            6..=9 => KernelVersion::new(5, 4, 0),
            _ => KernelVersion::new(5, 10, 0),
        };
        view.effective = Some(eq);
        view.backport = Some(match minor {
            Some(m) => format!(
                "RHEL 8.{m} kernel {} carries backports; judged as upstream {eq} (Cilium's requirements pair RHEL 8 with 4.19.57, 8.6 with 5.4, 8.10 with 5.10)",
                facts.kernel.release
            ),
            None => format!(
                "RHEL 8 kernel {} (minor release unknown) carries backports; judged as upstream {eq}",
                facts.kernel.release
            ),
        });
    }
    view
}

/// A config option and the module that provides it when `=m` (bool options have none).
struct Kconfig {
    name: &'static str,
    module: Option<&'static str>,
}

const fn opt(name: &'static str, module: Option<&'static str>) -> Kconfig {
    Kconfig { name, module }
}

/// Options every Cilium agent needs (Cilium "System Requirements", Linux kernel, Base
/// requirements; cilium.md).
const BASE_KCONFIG: &[Kconfig] = &[
    opt("CONFIG_BPF", None),
    opt("CONFIG_BPF_SYSCALL", None),
    opt("CONFIG_NET_CLS_BPF", Some("cls_bpf")),
    opt("CONFIG_BPF_JIT", None),
    opt("CONFIG_NET_CLS_ACT", None),
    opt("CONFIG_NET_SCH_INGRESS", Some("sch_ingress")),
    opt("CONFIG_CRYPTO_SHA1", Some("sha1_generic")),
    opt("CONFIG_CRYPTO_USER_API_HASH", Some("algif_hash")),
    opt("CONFIG_CGROUPS", None),
    opt("CONFIG_CGROUP_BPF", None),
    opt("CONFIG_PERF_EVENTS", None),
    opt("CONFIG_SCHEDSTATS", None),
];

const VXLAN: Kconfig = opt("CONFIG_VXLAN", Some("vxlan"));
const GENEVE: Kconfig = opt("CONFIG_GENEVE", Some("geneve"));
const FIB_RULES: Kconfig = opt("CONFIG_FIB_RULES", None);
const NET_SCH_FQ: Kconfig = opt("CONFIG_NET_SCH_FQ", Some("sch_fq"));

/// How one option fares.
enum OptionCheck {
    Ok(String),
    Unverified(String),
    Missing(String),
}

fn check_option(facts: &Facts, k: &Kconfig) -> OptionCheck {
    let Some(value) = facts.kernel_config.get(k.name) else {
        return OptionCheck::Unverified(format!("{}: config not readable", k.name));
    };
    match value {
        KconfigValue::BuiltIn => OptionCheck::Ok(format!("{}=y", k.name)),
        KconfigValue::Module => match k.module.map(|m| (m, facts.modules.loadable(m))) {
            Some((m, Some(true))) => OptionCheck::Ok(format!("{}=m ({m} available)", k.name)),
            Some((m, Some(false))) => {
                OptionCheck::Missing(format!("{}=m but module {m} is not installed", k.name))
            }
            Some((m, None)) => OptionCheck::Unverified(format!(
                "{}=m, cannot tell whether module {m} is installed",
                k.name
            )),
            None => OptionCheck::Ok(format!("{}=m", k.name)),
        },
        KconfigValue::NotSet => OptionCheck::Missing(format!("{} is not set", k.name)),
        KconfigValue::Other(v) => OptionCheck::Missing(format!("{}={v} (need y or m)", k.name)),
    }
}

/// Check options: Blocked if any is missing, Degraded if any cannot be verified.
fn check_options(facts: &Facts, opts: &[&Kconfig], what: &str) -> (Status, String) {
    let (mut ok, mut unverified, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing_names = Vec::new();
    for k in opts {
        match check_option(facts, k) {
            OptionCheck::Ok(s) => ok.push(s),
            OptionCheck::Unverified(s) => unverified.push(s),
            OptionCheck::Missing(s) => {
                missing.push(s);
                missing_names.push(k.name);
            }
        }
    }
    let source = facts.kernel_config.source.as_ref().map_or_else(
        || "no kernel config readable".to_owned(),
        |s| format!("from {s}"),
    );
    let evidence = format!(
        "{what}: {} ok, {} missing, {} unverified ({source})",
        ok.len(),
        missing.len(),
        unverified.len()
    );
    let status = if !missing.is_empty() {
        Status::blocked(
            missing.join("; "),
            format!(
                "use a kernel built with {} (=y, or =m with the module installed)",
                missing_names.join(", ")
            ),
        )
    } else if facts.kernel_config.source.is_none() {
        Status::degraded(
            format!("{UNVERIFIED}: no /proc/config.gz or /boot/config-$(uname -r) on the node"),
            "assumed present; the agent fails at start if an option is missing",
        )
    } else if !unverified.is_empty() {
        Status::degraded(
            format!("{UNVERIFIED}: {}", unverified.join("; ")),
            "assumed loadable; the agent fails at start if a module is missing",
        )
    } else {
        Status::Ok
    };
    (status, evidence)
}

/// True when `cilium_extra_values` turns the bandwidth manager on (`bandwidthManager.enabled`
/// from chart 1.12; a plain `bandwidthManager: true` in 1.11).
pub fn bandwidth_manager_requested(spec: &ClusterSpec) -> bool {
    match spec.cilium_extra_values.get("bandwidthManager") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Object(m)) => m.get("enabled") == Some(&Value::Bool(true)),
        _ => false,
    }
}

fn kernel_text(k: &KernelView) -> String {
    match (&k.backport, k.effective) {
        (Some(_), Some(eq)) => format!("kernel {} (as {eq})", k.release),
        _ => format!("kernel {}", k.release),
    }
}

/// A kernel-version verdict: Ok at or above `min`, else `below`; unverifiable without a version.
fn version_rule(
    k: &KernelView,
    min: KernelVersion,
    feature: &str,
    below: impl FnOnce(String) -> Status,
) -> (Status, String) {
    let evidence = format!("{}; {feature} needs {min}", kernel_text(k));
    let status = match k.effective {
        Some(v) if v >= min => Status::Ok,
        Some(v) => below(format!("{feature} needs kernel {min}, node runs {v}")),
        None => Status::degraded(
            format!(
                "{UNVERIFIED}: kernel release {:?} has no version",
                k.release
            ),
            format!("assumed to have {feature}"),
        ),
    };
    (status, evidence)
}

/// Socket-LB needs 4.19.57, 5.1.16 or 5.2.0+ (Cilium "System Requirements", kube-proxy-free
/// guide; cilium.md).
pub fn has_socket_lb(v: KernelVersion) -> bool {
    match (v.major, v.minor) {
        (4, 19) => v.patch >= 57,
        (5, 1) => v.patch >= 16,
        _ => v >= KernelVersion::new(5, 2, 0),
    }
}

/// Judge one node for the spec's Cilium version and intent.
pub fn evaluate(spec: &ClusterSpec, host: &str, facts: &Facts) -> NodeReport {
    let i = &spec.cilium_intent;
    let k = kernel_view(facts);
    let backport = k
        .backport
        .as_deref()
        .map(|b| format!("; {b}"))
        .unwrap_or_default();
    let mut verdicts = Vec::with_capacity(Feature::ALL.len());
    let mut push = |feature, requested, (status, evidence): (Status, String)| {
        verdicts.push(Verdict {
            feature,
            requested,
            status,
            evidence,
        })
    };

    // Baseline: Cilium "System Requirements" per release (spec::version::cilium_min_kernel).
    let min = KernelVersion::from(cilium_min_kernel(spec.cilium));
    let (status, evidence) = version_rule(&k, min, &format!("Cilium {}", spec.cilium), |r| {
        Status::blocked(
            r,
            format!("upgrade the node's kernel to {min} or newer, or use an older Cilium release"),
        )
    });
    push(
        Feature::BaselineKernel,
        true,
        (status, format!("{evidence}{backport}")),
    );

    // Kernel config: base options; tunnels add their device and FIB rules; Geneve DSR
    // dispatch needs Geneve even with native routing.
    let mut opts: Vec<&Kconfig> = BASE_KCONFIG.iter().collect();
    let geneve_dsr =
        matches!(i.lb_mode, LbMode::Dsr | LbMode::Hybrid) && i.dsr_dispatch == DsrDispatch::Geneve;
    match i.routing.tunnel() {
        Some(TunnelProtocol::Vxlan) => opts.extend([&VXLAN, &FIB_RULES]),
        Some(TunnelProtocol::Geneve) => opts.extend([&GENEVE, &FIB_RULES]),
        None => {}
    }
    if geneve_dsr && !opts.iter().any(|o| o.name == GENEVE.name) {
        opts.push(&GENEVE);
    }
    push(
        Feature::KernelConfig,
        true,
        check_options(facts, &opts, "kernel config"),
    );

    // Socket-LB: kube-proxy replacement cannot work without it.
    let kpr = i.kube_proxy_replacement == KubeProxyReplacement::True;
    let socket_lb = {
        let evidence = format!(
            "{}; socket-LB needs 4.19.57, 5.1.16 or 5.2.0+{backport}",
            kernel_text(&k)
        );
        let status = match k.effective {
            Some(v) if has_socket_lb(v) => Status::Ok,
            Some(v) => Status::blocked(
                format!(
                    "socket-LB needs kernel 4.19.57, 5.1.16 or 5.2.0+, node runs {v}; kube-proxy replacement cannot work"
                ),
                "upgrade the kernel to 5.2 or newer (or 4.19.57+/5.1.16+), or keep kube-proxy (kube_proxy_remove: false, cilium_kube_proxy_replacement: false)",
            ),
            None => Status::degraded(
                format!(
                    "{UNVERIFIED}: kernel release {:?} has no version",
                    k.release
                ),
                "assumed present; the agent fails at start without it",
            ),
        };
        (status, evidence)
    };
    push(Feature::SocketLb, kpr, socket_lb);

    // BPF host routing: kernel 5.10, plus BPF kube-proxy replacement and BPF masquerading
    // (Cilium tuning guide, "eBPF Host-Routing"); otherwise Cilium falls back to legacy routing.
    let legacy = "legacy host routing through the upper stack (`bpf.hostLegacyRouting: true`)";
    let (mut status, evidence) =
        version_rule(&k, KernelVersion::new(5, 10, 0), "BPF host routing", |r| {
            Status::degraded(r, legacy)
        });
    if status == Status::Ok && !(kpr && i.bpf_masquerade) {
        status = Status::degraded(
            "BPF host routing needs kube-proxy replacement and BPF masquerade",
            legacy,
        );
    }
    push(
        Feature::BpfHostRouting,
        i.bpf_host_routing,
        (status, format!("{evidence}{backport}")),
    );

    // BPF masquerade: kernel 4.19 and BPF NodePort, i.e. kube-proxy replacement (cilium.md).
    let iptables = "iptables masquerading (`bpf.masquerade: false`)";
    let (mut status, evidence) =
        version_rule(&k, KernelVersion::new(4, 19, 0), "BPF masquerade", |r| {
            Status::degraded(r, iptables)
        });
    if status == Status::Ok && !kpr {
        status = Status::degraded("BPF masquerade needs kube-proxy replacement", iptables);
    }
    push(
        Feature::BpfMasquerade,
        i.bpf_masquerade,
        (status, format!("{evidence}{backport}")),
    );

    // Bandwidth manager: kernel 5.1 and CONFIG_NET_SCH_FQ (Cilium "Bandwidth Manager"; cilium.md).
    let off = "bandwidth manager off: pod bandwidth annotations are not enforced";
    let (status, mut evidence) =
        version_rule(&k, KernelVersion::new(5, 1, 0), "bandwidth manager", |r| {
            Status::degraded(r, off)
        });
    let (fq, fq_evidence) = check_options(facts, &[&NET_SCH_FQ], "CONFIG_NET_SCH_FQ");
    evidence.push_str(&format!("; {fq_evidence}"));
    let status = match (status, fq) {
        (Status::Ok, Status::Blocked { reason, .. }) => Status::degraded(reason, off),
        (Status::Ok, Status::Degraded { reason, .. }) => Status::degraded(reason, off),
        (s, _) => s,
    };
    push(
        Feature::BandwidthManager,
        bandwidth_manager_requested(spec),
        (status, evidence),
    );

    // Native XDP on the devices Cilium would use.
    let best_effort = i.acceleration == Acceleration::BestEffort;
    let devices: Vec<XdpDevice> = xdp::select(&i.devices, facts)
        .into_iter()
        .map(|n| xdp::check(n, k.effective, facts.cpus))
        .collect();
    push(
        Feature::XdpNative,
        i.acceleration != Acceleration::Disabled,
        xdp_verdict(&devices, &i.devices, facts, best_effort),
    );

    NodeReport {
        host: host.to_owned(),
        os: facts.os.pretty_name.clone(),
        kernel: k,
        xdp_devices: devices,
        verdicts,
    }
}

fn xdp_verdict(
    devices: &[XdpDevice],
    patterns: &[String],
    facts: &Facts,
    best_effort: bool,
) -> (Status, String) {
    if devices.is_empty() {
        let reason = if patterns.is_empty() {
            "no default-route NIC found to attach XDP to".to_owned()
        } else {
            format!(
                "no NIC matches devices {} (node has: {})",
                patterns.join(", "),
                facts
                    .nics
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let status = if best_effort {
            Status::degraded(reason, "no device accelerated on this node")
        } else {
            Status::blocked(
                reason,
                "set kubedrill_cilium_devices to this node's NIC names (a trailing + matches a prefix)",
            )
        };
        return (status, "no device selected".to_owned());
    }
    let evidence = devices
        .iter()
        .map(|d| d.evidence.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let collect = |outcomes: &[XdpOutcome]| {
        let sel: Vec<&XdpDevice> = devices
            .iter()
            .filter(|d| outcomes.contains(&d.outcome))
            .collect();
        let reason = sel
            .iter()
            .flat_map(|d| d.problems.iter().cloned())
            .collect::<Vec<_>>()
            .join("; ");
        let mut fixes: Vec<String> = Vec::new();
        for f in sel.iter().flat_map(|d| d.fixes.iter()) {
            if !fixes.contains(f) {
                fixes.push(f.clone());
            }
        }
        (sel.len(), reason, fixes.join("; "))
    };
    let (refused, reason, fix) = collect(&[XdpOutcome::Refused]);
    if refused > 0 {
        return (Status::blocked(reason, fix), evidence);
    }
    let (unsupported, reason, fix) = collect(&[XdpOutcome::Unsupported]);
    if unsupported > 0 {
        let status = if best_effort {
            Status::degraded(
                reason,
                "best-effort skips the device: no XDP acceleration on it",
            )
        } else {
            Status::blocked(
                reason,
                format!(
                    "{fix}; or `loadBalancer.acceleration: best-effort` (Cilium ≥ 1.15) to skip it"
                ),
            )
        };
        return (status, evidence);
    }
    let (unverified, reason, fix) = collect(&[XdpOutcome::Unverified]);
    if unverified > 0 {
        let fix = if fix.is_empty() {
            String::new()
        } else {
            format!(" ({fix})")
        };
        return (
            Status::degraded(
                format!("{UNVERIFIED}: {reason}{fix}"),
                "assumed to work; the agent fails to attach XDP at start if it does not",
            ),
            evidence,
        );
    }
    let (slow, reason, fix) = collect(&[XdpOutcome::NativeSlow]);
    if slow > 0 {
        return (
            Status::degraded(
                format!("{reason} (fix: {fix})"),
                "native XDP with shared, locked TX queues (slower XDP_TX)",
            ),
            evidence,
        );
    }
    (Status::Ok, evidence)
}

/// One Helm value as requested and as Cilium would effectively run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveSetting {
    /// Helm key for this chart version, e.g. `loadBalancer.acceleration`.
    pub key: String,
    /// Value kubedrill renders.
    pub requested: String,
    /// Value that can actually work on every node.
    pub effective: String,
    /// Why they differ (or what limits the feature), naming nodes.
    pub reason: Option<String>,
}

/// The effective settings of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EffectiveSettings {
    /// One entry per kernel-dependent Helm value kubedrill sets.
    pub entries: Vec<EffectiveSetting>,
}

impl EffectiveSettings {
    /// The entry for a Helm key.
    pub fn get(&self, key: &str) -> Option<&EffectiveSetting> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Entries whose effective value differs from the requested one.
    pub fn changed(&self) -> impl Iterator<Item = &EffectiveSetting> {
        self.entries.iter().filter(|e| e.requested != e.effective)
    }
}

/// A requested feature a node cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// Host.
    pub host: String,
    /// Feature.
    pub feature: Feature,
    /// Why.
    pub reason: String,
    /// How to fix it.
    pub fix: String,
}

/// Every requested feature that is blocked, node by node.
pub fn blocked(reports: &[NodeReport]) -> Vec<Blocker> {
    reports
        .iter()
        .flat_map(|r| {
            r.requested_blocked().filter_map(|v| match &v.status {
                Status::Blocked { reason, fix } => Some(Blocker {
                    host: r.host.clone(),
                    feature: v.feature,
                    reason: reason.clone(),
                    fix: fix.clone(),
                }),
                _ => None,
            })
        })
        .collect()
}

/// True when any node blocks a requested feature (`kubedrill check` exits non-zero).
pub fn any_requested_blocked(reports: &[NodeReport]) -> bool {
    reports
        .iter()
        .any(|r| r.requested_blocked().next().is_some())
}

/// Look up a dotted key in rendered values and show it as text.
fn rendered(values: &Value, key: &str) -> Option<String> {
    let mut v = values;
    for part in key.split('.') {
        v = v.get(part)?;
    }
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// "node w1: reason; node w2: reason" for the nodes where `feature` matches `pick`.
fn node_reasons(
    reports: &[NodeReport],
    feature: Feature,
    pick: impl Fn(&Status) -> bool,
) -> Option<String> {
    let parts: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let v = r.verdict(feature)?;
            pick(&v.status).then(|| format!("node {}: {}", r.host, v.status.reason().unwrap_or("")))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The Helm values Cilium would effectively run with on these nodes, next to the requested
/// ones, with the chart version's key names (the same ones [`crate::render::cilium`] writes).
pub fn effective(spec: &ClusterSpec, reports: &[NodeReport]) -> EffectiveSettings {
    let i = &spec.cilium_intent;
    let values = cilium_values(spec, reports.len());
    let mut entries = Vec::new();
    let entry = |key: &str, fallback: &str| EffectiveSetting {
        key: key.to_owned(),
        requested: rendered(&values, key).unwrap_or_else(|| fallback.to_owned()),
        effective: rendered(&values, key).unwrap_or_else(|| fallback.to_owned()),
        reason: None,
    };

    // kube-proxy replacement: nothing to fall back to; say so.
    let mut kpr = entry(
        "kubeProxyReplacement",
        &i.kube_proxy_replacement.to_string(),
    );
    let kpr_on = i.kube_proxy_replacement == KubeProxyReplacement::True;
    let kpr_blocked = kpr_on
        .then(|| node_reasons(reports, Feature::SocketLb, Status::is_blocked))
        .flatten();
    if let Some(r) = &kpr_blocked {
        kpr.effective = format!(
            "cannot be enabled (needs {} on every node)",
            Feature::SocketLb
        );
        kpr.reason = Some(r.clone());
    }
    entries.push(kpr);

    // BPF masquerade.
    let mut masq = entry("bpf.masquerade", &i.bpf_masquerade.to_string());
    if i.bpf_masquerade {
        if kpr_blocked.is_some() {
            masq.effective = "false".to_owned();
            masq.reason = Some("needs kube-proxy replacement, which cannot be enabled".to_owned());
        } else if let Some(r) = node_reasons(reports, Feature::BpfMasquerade, Status::is_fallback) {
            masq.effective = "false".to_owned();
            masq.reason = Some(r);
        }
    }
    entries.push(masq);

    // BPF host routing: the key depends on the chart (`bpf.hostRouting` in 1.11).
    let host_key = if spec.cilium.at_least(1, 12) {
        "bpf.hostLegacyRouting"
    } else {
        "bpf.hostRouting"
    };
    let mut host = entry(host_key, &(!i.bpf_host_routing).to_string());
    if i.bpf_host_routing {
        let masq_off = masq_is_off(&entries);
        if kpr_blocked.is_some() || masq_off {
            host.effective = "true".to_owned();
            host.reason = Some("BPF host routing needs kube-proxy replacement and BPF masquerade, which cannot both be enabled".to_owned());
        } else if let Some(r) = node_reasons(reports, Feature::BpfHostRouting, Status::is_fallback)
        {
            host.effective = "true".to_owned();
            host.reason = Some(r);
        }
    }
    entries.push(host);

    // Bandwidth manager, only when asked for.
    if bandwidth_manager_requested(spec) {
        let key = if spec.cilium.at_least(1, 12) {
            "bandwidthManager.enabled"
        } else {
            "bandwidthManager"
        };
        let mut bw = entry(key, "true");
        if let Some(r) = node_reasons(reports, Feature::BandwidthManager, Status::is_fallback) {
            bw.effective = "false".to_owned();
            bw.reason = Some(r);
        }
        entries.push(bw);
    }

    // XDP acceleration.
    let mut acc = entry("loadBalancer.acceleration", &i.acceleration.to_string());
    if i.acceleration != Acceleration::Disabled {
        let outcome_nodes = |o: XdpOutcome| -> Vec<String> {
            reports
                .iter()
                .flat_map(|r| {
                    r.xdp_devices
                        .iter()
                        .filter(move |d| d.outcome == o)
                        .flat_map(move |d| {
                            d.problems
                                .iter()
                                .map(move |p| format!("node {}: {p}", r.host))
                        })
                })
                .collect()
        };
        let refused = outcome_nodes(XdpOutcome::Refused);
        // Nodes without a selected device: nothing to accelerate there, like an unsupported driver.
        let mut unsupported = outcome_nodes(XdpOutcome::Unsupported);
        unsupported.extend(
            reports
                .iter()
                .filter(|r| r.xdp_devices.is_empty())
                .filter_map(|r| {
                    let v = r.verdict(Feature::XdpNative)?;
                    Some(format!("node {}: {}", r.host, v.status.reason()?))
                }),
        );
        let any_native = reports.iter().any(|r| {
            r.xdp_devices.iter().any(|d| {
                matches!(
                    d.outcome,
                    XdpOutcome::Native | XdpOutcome::NativeSlow | XdpOutcome::Unverified
                )
            })
        });
        if !refused.is_empty() {
            // A device that has native XDP but refuses it fails the agent in either mode.
            acc.effective = "disabled".to_owned();
            acc.reason = Some(refused.join("; "));
        } else if !unsupported.is_empty() {
            let reason = unsupported.join("; ");
            if !any_native {
                acc.effective = "disabled".to_owned();
                acc.reason = Some(format!("no node has a native-XDP device: {reason}"));
            } else if i.acceleration == Acceleration::BestEffort {
                acc.reason = Some(format!("skipped devices: {reason}"));
            } else if spec.cilium.at_least(1, 15) {
                acc.effective = Acceleration::BestEffort.to_string();
                acc.reason = Some(reason);
            } else {
                acc.effective = "disabled".to_owned();
                acc.reason = Some(format!("{reason} (best-effort needs Cilium ≥ 1.15)"));
            }
        } else {
            let slow = outcome_nodes(XdpOutcome::NativeSlow);
            let unverified = outcome_nodes(XdpOutcome::Unverified);
            let notes: Vec<String> = slow.into_iter().chain(unverified).collect();
            if !notes.is_empty() {
                acc.reason = Some(notes.join("; "));
            }
        }
    }
    entries.push(acc);

    EffectiveSettings { entries }
}

fn masq_is_off(entries: &[EffectiveSetting]) -> bool {
    entries
        .iter()
        .find(|e| e.key == "bpf.masquerade")
        .is_some_and(|e| e.effective == "false")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::GATHER_SCRIPT;

    #[test]
    fn every_checked_option_and_module_is_gathered() {
        let all = BASE_KCONFIG
            .iter()
            .chain([&VXLAN, &GENEVE, &FIB_RULES, &NET_SCH_FQ]);
        for k in all {
            let short = k.name.trim_start_matches("CONFIG_");
            assert!(
                GATHER_SCRIPT.contains(&format!("|{short}|"))
                    || GATHER_SCRIPT.contains(&format!("({short}|")),
                "{} is not in the script's kconfig pattern",
                k.name
            );
            if let Some(m) = k.module {
                let mods = GATHER_SCRIPT
                    .lines()
                    .find_map(|l| l.strip_prefix("MODS=\""))
                    .expect("MODS line");
                assert!(
                    mods.trim_end_matches('"')
                        .split_whitespace()
                        .any(|x| x == m),
                    "module {m} is not in the script's MODS list"
                );
                assert!(
                    GATHER_SCRIPT.contains(&format!("{m}|")),
                    "module {m} is not in the script's loaded-module filter"
                );
            }
        }
    }

    #[test]
    fn rhel8_minor_from_os_release_or_kernel() {
        let facts = |id: &str, ver: &str, rel: &str| {
            let text = format!(
                "kubedrill-facts 1\n@@os\nID={id}\nID_LIKE=\"rhel fedora\"\nVERSION_ID={ver}\n@@kernel\nrelease={rel}\n@@end\n"
            );
            crate::facts::parse(&text).expect("facts")
        };
        assert_eq!(
            rhel8_minor(&facts("rhel", "8.6", "4.18.0-1.el8.x86_64")),
            Some(6)
        );
        assert_eq!(
            rhel8_minor(&facts("ol", "", "4.18.0-553.el8_10.x86_64")),
            Some(10)
        );
        assert_eq!(
            rhel8_minor(&facts("centos", "8", "4.18.0-348.7.1.el8_5.x86_64")),
            Some(5)
        );
        assert_eq!(
            rhel8_minor(&facts("rocky", "", "4.18.0-425.3.1.el8.x86_64")),
            Some(7)
        );
        assert_eq!(
            rhel8_minor(&facts("rocky", "", "4.18.0-12.el8.x86_64")),
            None
        );
        let k = kernel_view(&facts("rhel", "", "4.18.0-12.el8.x86_64"));
        assert_eq!(k.effective, Some(KernelVersion::new(4, 19, 57)));
        assert!(
            k.backport
                .is_some_and(|b| b.contains("minor release unknown"))
        );
        // RHEL 9 is 5.14: no mapping.
        let k = kernel_view(&facts("rhel", "9.4", "5.14.0-427.el9.x86_64"));
        assert_eq!(k.effective, k.version);
        assert_eq!(k.backport, None);
    }

    #[test]
    fn driver_table_is_unique_and_lookups_work() {
        let mut names: Vec<&str> = xdp::XDP_DRIVERS.iter().map(|(d, _)| *d).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), xdp::XDP_DRIVERS.len());
        assert_eq!(
            xdp::driver_min_kernel("virtio_net"),
            Some(KernelVersion::new(4, 10, 0))
        );
        assert_eq!(xdp::driver_min_kernel("igb"), None);
    }

    #[test]
    fn status_and_feature_names() {
        assert_eq!(Feature::XdpNative.to_string(), "native XDP");
        assert_eq!(
            serde_json::to_value(Feature::BpfHostRouting).expect("json"),
            "bpf-host-routing"
        );
        let s = Status::blocked("r", "f");
        assert!(s.is_blocked() && !s.is_degraded());
        assert_eq!(s.to_string(), "blocked: r (fix: f)");
        assert_eq!(
            serde_json::to_value(Status::Ok).expect("json"),
            serde_json::json!({"status": "ok"})
        );
    }
}
