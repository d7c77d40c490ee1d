//! The drill definition: an optional `drill:` section in a lab file (`labs/*.yaml`).
//!
//! ```yaml
//! drill:
//!   name: cilium-1.17-to-1.18          # optional; default cilium-FROM-to-TO
//!   cilium: {from: 1.17.18, to: 1.18.12}
//!   kubernetes:                        # optional: a Kubernetes upgrade (kubeadm), with or
//!     from: 1.33.7                     # without Cilium's (a Kubernetes-only drill names
//!     to: 1.34.4                       # cilium: {from: X, to: X}); from == to: recorded only
//!     batch: 1                         # workers drained and upgraded at once
//!     bundle: ../bundles/k8s-1.34.4    # the target's offline bundle (or --kubernetes-bundle)
//!   values:                            # extra Helm values, merged after the migration
//!     hubble: {enabled: false}
//!   probes:
//!     rate_per_s: 20                   # per probe; ≥ 20 recommended
//!     kinds: [icmp-pod-pod, tcp-pod, tcp-clusterip, tcp-nodeport, udp-pod]
//!   policy:
//!     max_loss_ms: 1000                # or per kind: {tcp-nodeport: 1000, icmp-pod-pod: 2000}
//!     rollback_on_verify_failure: true
//!     soak_secs: 120
//!     pod_burst: 20
//!   resources: {interval_secs: 5}
//!   faults: [{kind: kill-agent, node: w1}]   # optional: prove the measures can fail
//! ```
//!
//! The section is read with the lab file ([`crate::lab::definition::parse`]); every finding names
//! the file, the line and the field (`labs/x.yaml:14: \`drill.probes.kinds[2]\`: …`). The upgrade
//! path is checked when the drill is resolved with the command line's overrides
//! ([`DrillDefinition::resolve`]), because `--force` may allow what the file alone does not.

use super::kubernetes;
use super::migrate::refuse_reuse_values;
use super::path::{self, Releases, UpgradePlan};
use crate::diag::{Diagnostic, Diagnostics, Origin};
use crate::report::record::ProbeKind;
use crate::spec::Version;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Default probes per second and probe.
pub const DEFAULT_RATE_PER_S: u32 = 20;
/// Below this rate a probe's resolution (1000 / rate ms) is too coarse for sub-second windows.
pub const RECOMMENDED_MIN_RATE_PER_S: u32 = 20;
/// The agent's highest rate.
pub const MAX_RATE_PER_S: u32 = 1000;
/// Default soak after the upgrade, seconds.
pub const DEFAULT_SOAK_SECS: u64 = 120;
/// Default number of pods in the burst created during each rollout.
pub const DEFAULT_POD_BURST: u32 = 20;
/// Most pods in one burst.
pub const MAX_POD_BURST: u32 = 500;
/// Default seconds between two resource samples of every agent.
pub const DEFAULT_INTERVAL_SECS: u64 = 5;

/// The probe kinds a drill runs when the file does not list them: new connections and held
/// ones for every TCP path.
pub const DEFAULT_KINDS: [ProbeKind; 8] = [
    ProbeKind::IcmpPodPod,
    ProbeKind::TcpPod,
    ProbeKind::TcpClusterip,
    ProbeKind::TcpNodeport,
    ProbeKind::UdpPod,
    ProbeKind::TcpPodHeld,
    ProbeKind::TcpClusteripHeld,
    ProbeKind::TcpNodeportHeld,
];

/// The default longest allowed interruption of a probe kind: 1 s for TCP (a connect retried
/// after its 1 s SYN timeout already failed), 2 s for ICMP and UDP, 3 s for a held connection's
/// stall (TCP's own retransmission backoff stretches a 1.5 s outage to ≈2.1 s: measured in
/// probe/tests/netns.rs).
pub fn default_max_loss_ms(kind: ProbeKind) -> u64 {
    match kind {
        ProbeKind::TcpPod | ProbeKind::TcpClusterip | ProbeKind::TcpNodeport => 1000,
        ProbeKind::IcmpPodPod | ProbeKind::UdpPod | ProbeKind::IcmpHost => 2000,
        ProbeKind::TcpPodHeld | ProbeKind::TcpClusteripHeld | ProbeKind::TcpNodeportHeld => 3000,
    }
}

// ---------------------------------------------------------------------------------------------
// The section as written
// ---------------------------------------------------------------------------------------------

/// The `drill:` section as written (field locations kept for messages).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    #[serde(default)]
    name: Option<Spanned<String>>,
    cilium: RawCilium,
    #[serde(default)]
    kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    values: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    reuse_values: Option<Spanned<bool>>,
    #[serde(default)]
    pin_config: Option<Spanned<bool>>,
    #[serde(default)]
    probes: Option<RawProbes>,
    #[serde(default)]
    policy: Option<RawPolicy>,
    #[serde(default)]
    resources: Option<RawResources>,
    #[serde(default)]
    faults: Option<Vec<super::fault::RawFault>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    from: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    batch: Option<Spanned<u32>>,
    #[serde(default)]
    bundle: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCilium {
    from: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    catch_up: Option<Spanned<bool>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbes {
    #[serde(default)]
    rate_per_s: Option<Spanned<u32>>,
    #[serde(default)]
    kinds: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    image: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawMaxLoss {
    Global(u64),
    PerKind(BTreeMap<String, u64>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    max_loss_ms: Option<Spanned<RawMaxLoss>>,
    #[serde(default)]
    rollback_on_verify_failure: Option<bool>,
    #[serde(default)]
    soak_secs: Option<Spanned<u64>>,
    #[serde(default)]
    pod_burst: Option<Spanned<u32>>,
    #[serde(default)]
    max_loss_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    max_container_restarts: Option<u32>,
    #[serde(default)]
    max_broken_connections: Option<u64>,
    #[serde(default)]
    max_pod_burst_failures: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    interval_secs: Option<Spanned<u64>>,
}

// ---------------------------------------------------------------------------------------------
// The validated definition
// ---------------------------------------------------------------------------------------------

/// A version with where it was written (for messages about the upgrade path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written; `None` for a value from the command line.
    #[serde(skip)]
    pub origin: Option<Origin>,
    /// The field (`drill.cilium.to`) or the option (`--to`) that set it.
    pub field: String,
}

/// Versions before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionPair {
    /// The version the lab runs when the drill starts.
    pub from: Located<Version>,
    /// The target.
    pub to: Located<Version>,
}

/// What is probed, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeSettings {
    /// Probes per second, per probe pair (1–1000).
    pub rate_per_s: u32,
    /// Kinds, each at most once, in the order written.
    pub kinds: Vec<ProbeKind>,
    /// The image of the probe pods; `None`: the pause image of the cluster's Kubernetes version
    /// (already on every node: it is the sandbox image).
    pub image: Option<String>,
}

/// The drill's thresholds and its behaviour on failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySettings {
    /// Longest allowed loss window per probe kind (every probed kind has one).
    pub max_loss_ms: BTreeMap<ProbeKind, u64>,
    /// Roll back when the agents' datapath after an upgrade step differs from the expected one.
    pub rollback_on_verify_failure: bool,
    /// Seconds of steady state after the upgrade (probing and sampling go on).
    pub soak_secs: u64,
    /// Pods created (and deleted) across the nodes during each rollout; 0 turns the burst off.
    pub pod_burst: u32,
    /// Highest allowed lost/sent of any probe pair over the run.
    pub max_loss_ratio: f64,
    /// Most agent container restarts (crashes, not rollout replacements) per node.
    pub max_container_restarts: u32,
    /// Breaks allowed per held connection probe (0: every one must survive).
    pub max_broken_connections: u64,
    /// Most failed pods in the burst, over all nodes.
    pub max_pod_burst_failures: u32,
}

/// Agent resource sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResourceSettings {
    /// Seconds between two samples of every agent (1–300).
    pub interval_secs: u64,
}

/// A validated `drill:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillDefinition {
    /// The lab file.
    pub file: PathBuf,
    /// Drill name (the same for every run of it); `None`: derived from the versions.
    pub name: Option<String>,
    /// Cilium versions.
    pub cilium: VersionPair,
    /// `drill.cilium.catch_up` (default true): upgrade to the latest patch of `from`'s minor
    /// first, as Cilium's upgrade guide asks; false where that patch cannot be had.
    pub catch_up: bool,
    /// Kubernetes versions; when they differ, the drill upgrades Kubernetes with kubeadm.
    pub kubernetes: Option<VersionPair>,
    /// `drill.kubernetes.batch`: workers drained and upgraded at once (default 1).
    pub kubernetes_batch: u32,
    /// `drill.kubernetes.bundle`: the target version's offline bundle (relative paths are the
    /// lab file's), unless `--kubernetes-bundle` names one.
    pub kubernetes_bundle: Option<PathBuf>,
    /// Extra Helm values, deep-merged into each step's migrated values.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Upgrade with `--reuse-values` (only allowed when every step stays within one minor).
    pub reuse_values: bool,
    /// Keep the agent settings a new chart would change (config drift) at their old values, with
    /// the values the target chart writes them from ([`crate::drill::drift::Drift::pins`]).
    pub pin_config: bool,
    /// Probes.
    pub probes: ProbeSettings,
    /// Policy.
    pub policy: PolicySettings,
    /// Resource sampling.
    pub resources: ResourceSettings,
    /// Deliberate failures during the first upgrade step ([`super::fault`]).
    pub faults: Vec<super::fault::Fault>,
    /// Findings that do not stop the drill (e.g. a low probe rate).
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
}

pub(super) fn line_of<T>(s: &Spanned<T>) -> Option<u32> {
    u32::try_from(s.referenced.line()).ok().filter(|l| *l > 0)
}

pub(super) fn err(
    file: &Arc<PathBuf>,
    line: Option<u32>,
    field: &str,
    msg: impl Into<String>,
) -> Diagnostic {
    Diagnostic::error(msg)
        .at(&Origin::at(file, line))
        .field(field)
}

fn parse_version(
    file: &Arc<PathBuf>,
    s: &Spanned<String>,
    field: &str,
    d: &mut Diagnostics,
) -> Option<Located<Version>> {
    match s.value.parse::<Version>() {
        Ok(v) => Some(Located {
            value: v,
            origin: Some(Origin::at(file, line_of(s))),
            field: field.to_owned(),
        }),
        Err(e) => {
            d.push(err(file, line_of(s), field, e));
            None
        }
    }
}

fn parse_pair(
    file: &Arc<PathBuf>,
    (from, to): (&Spanned<String>, &Spanned<String>),
    prefix: &str,
    d: &mut Diagnostics,
) -> Option<VersionPair> {
    let from = parse_version(file, from, &format!("{prefix}.from"), d);
    let to = parse_version(file, to, &format!("{prefix}.to"), d);
    Some(VersionPair {
        from: from?,
        to: to?,
    })
}

fn parse_kind(s: &str) -> Option<ProbeKind> {
    ProbeKind::ALL.into_iter().find(|k| k.as_str() == s)
}

fn kind_names() -> String {
    ProbeKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The drill of a lab: its file's `drill:` section validated, and the nodes its faults name
/// checked against the lab's VMs. `Ok(None)` when the file has no such section.
pub fn of_lab(lab: &crate::lab::definition::Lab) -> Result<Option<DrillDefinition>, Diagnostics> {
    let Some(section) = &lab.drill else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        drill: Option<RawDrill>,
    }
    let file = Arc::new(lab.path.clone());
    let raw: File = serde_saphyr::from_str(&section.text).map_err(|e| {
        let line = e
            .location()
            .and_then(|l| u32::try_from(l.line()).ok())
            .filter(|l| *l > 0)
            .or(section.line);
        let msg = e.to_string();
        let first = msg
            .lines()
            .next()
            .unwrap_or("invalid drill section")
            .to_owned();
        let mut d = Diagnostics::default();
        d.push(
            Diagnostic::error(first.trim_start_matches("error: ").to_owned())
                .at(&Origin::at(&file, line))
                .field("drill"),
        );
        d
    })?;
    let Some(raw) = raw.drill else {
        return Ok(None);
    };
    let def = validate(&file, &raw, section.line)?;
    // A fault acts on a node of this lab.
    let mut d = Diagnostics::default();
    for (i, f) in def.faults.iter().enumerate() {
        if let Some(n) = f.node().filter(|n| !lab.vms.iter().any(|v| v.name == *n)) {
            d.push(
                err(
                    &file,
                    section.line,
                    &format!("drill.faults[{i}].node"),
                    format!("`{n}` is not a host of this lab"),
                )
                .hint(format!(
                    "use one of {}",
                    lab.vms
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
    }
    if d.has_errors() {
        return Err(d);
    }
    Ok(Some(def))
}

/// Validate a `drill:` section. `section_line` is the line of the `drill:` key (for findings
/// about the section as a whole).
pub fn validate(
    file: &Arc<PathBuf>,
    raw: &RawDrill,
    section_line: Option<u32>,
) -> Result<DrillDefinition, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut warnings = Vec::new();

    let name = raw.name.as_ref().and_then(|n| {
        let ok = !n.value.is_empty()
            && n.value.len() <= 63
            && n.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Some(n.value.clone())
        } else {
            d.push(
                err(
                    file,
                    line_of(n),
                    "drill.name",
                    format!("`{}` is not a usable drill name", n.value),
                )
                .hint("letters, digits, '-', '_' and '.', at most 63 characters (it names run directories)"),
            );
            None
        }
    });

    let cilium = parse_pair(
        file,
        (&raw.cilium.from, &raw.cilium.to),
        "drill.cilium",
        &mut d,
    );
    let kubernetes = raw
        .kubernetes
        .as_ref()
        .map(|k| parse_pair(file, (&k.from, &k.to), "drill.kubernetes", &mut d));
    let kubernetes_batch = match raw.kubernetes.as_ref().and_then(|k| k.batch.as_ref()) {
        None => 1,
        Some(b) if b.value == 0 => {
            d.push(err(
                file,
                line_of(b),
                "drill.kubernetes.batch",
                "0 workers at once would never finish: at least 1",
            ));
            1
        }
        Some(b) => b.value,
    };
    let kubernetes_bundle = raw
        .kubernetes
        .as_ref()
        .and_then(|k| k.bundle.as_ref())
        .map(|b| {
            let p = PathBuf::from(&b.value);
            if p.is_absolute() {
                p
            } else {
                file.parent().map_or(p.clone(), |dir| dir.join(&p))
            }
        });

    let values = match &raw.values {
        None => serde_json::Map::new(),
        Some(v) => match &v.value {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                d.push(err(
                    file,
                    line_of(v),
                    "drill.values",
                    format!(
                        "must be a map of Helm values, found {}",
                        match other {
                            serde_json::Value::Array(_) => "a list",
                            serde_json::Value::String(_) => "a string",
                            serde_json::Value::Number(_) => "a number",
                            _ => "a scalar",
                        }
                    ),
                ));
                serde_json::Map::new()
            }
        },
    };

    // Probes.
    let rp = raw.probes.as_ref();
    let rate_per_s = match rp.and_then(|p| p.rate_per_s.as_ref()) {
        None => DEFAULT_RATE_PER_S,
        Some(r) if !(1..=MAX_RATE_PER_S).contains(&r.value) => {
            d.push(err(
                file,
                line_of(r),
                "drill.probes.rate_per_s",
                format!("{} is outside 1..={MAX_RATE_PER_S}", r.value),
            ));
            DEFAULT_RATE_PER_S
        }
        Some(r) => {
            if r.value < RECOMMENDED_MIN_RATE_PER_S {
                warnings.push(
                    Diagnostic::warning(format!(
                        "{} probes/s resolves loss windows to {} ms only",
                        r.value,
                        1000 / r.value
                    ))
                    .at(&Origin::at(file, line_of(r)))
                    .field("drill.probes.rate_per_s")
                    .hint(format!(
                        "{RECOMMENDED_MIN_RATE_PER_S} or more is recommended"
                    )),
                );
            }
            r.value
        }
    };
    let mut kinds = Vec::new();
    match rp.and_then(|p| p.kinds.as_ref()) {
        None => kinds.extend(DEFAULT_KINDS),
        Some(list) => {
            if list.is_empty() {
                d.push(err(
                    file,
                    section_line,
                    "drill.probes.kinds",
                    "no probe kinds: a drill without probes cannot measure anything",
                ));
            }
            for (i, k) in list.iter().enumerate() {
                let field = format!("drill.probes.kinds[{i}]");
                match parse_kind(&k.value) {
                    Some(kind) if kinds.contains(&kind) => d.push(err(
                        file,
                        line_of(k),
                        &field,
                        format!("`{}` is listed twice", k.value),
                    )),
                    Some(kind) => kinds.push(kind),
                    None => d.push(err(
                        file,
                        line_of(k),
                        &field,
                        format!("unknown probe kind `{}`: use {}", k.value, kind_names()),
                    )),
                }
            }
        }
    }
    let image = match rp.and_then(|p| p.image.as_ref()) {
        Some(i) if i.value.trim().is_empty() || i.value.contains(char::is_whitespace) => {
            d.push(err(
                file,
                line_of(i),
                "drill.probes.image",
                format!("`{}` is not an image reference", i.value),
            ));
            None
        }
        Some(i) => Some(i.value.clone()),
        None => None,
    };

    // Policy.
    let pol = raw.policy.as_ref();
    let mut max_loss_ms: BTreeMap<ProbeKind, u64> = kinds
        .iter()
        .map(|k| (*k, default_max_loss_ms(*k)))
        .collect();
    if let Some(m) = pol.and_then(|p| p.max_loss_ms.as_ref()) {
        match &m.value {
            RawMaxLoss::Global(ms) => {
                if *ms == 0 {
                    d.push(
                        err(
                            file,
                            line_of(m),
                            "drill.policy.max_loss_ms",
                            "0 ms allows no loss window at all",
                        )
                        .hint("a rolling agent restart interrupts some traffic; give the longest interruption you accept"),
                    );
                }
                for v in max_loss_ms.values_mut() {
                    *v = *ms;
                }
            }
            RawMaxLoss::PerKind(map) => {
                for (k, ms) in map {
                    let field = format!("drill.policy.max_loss_ms.{k}");
                    match parse_kind(k) {
                        None => d.push(err(
                            file,
                            line_of(m),
                            &field,
                            format!("unknown probe kind `{k}`: use {}", kind_names()),
                        )),
                        Some(kind) if !kinds.contains(&kind) => d.push(
                            err(
                                file,
                                line_of(m),
                                &field,
                                format!("`{k}` is not probed by this drill"),
                            )
                            .hint("add it to drill.probes.kinds, or remove the limit"),
                        ),
                        Some(_) if *ms == 0 => d.push(err(
                            file,
                            line_of(m),
                            &field,
                            "0 ms allows no loss window at all",
                        )),
                        Some(kind) => {
                            max_loss_ms.insert(kind, *ms);
                        }
                    }
                }
            }
        }
    }
    let soak_secs = match pol.and_then(|p| p.soak_secs.as_ref()) {
        None => DEFAULT_SOAK_SECS,
        Some(s) if s.value > 86_400 => {
            d.push(err(
                file,
                line_of(s),
                "drill.policy.soak_secs",
                format!("{} s is more than a day", s.value),
            ));
            DEFAULT_SOAK_SECS
        }
        Some(s) => s.value,
    };
    let pod_burst = match pol.and_then(|p| p.pod_burst.as_ref()) {
        None => DEFAULT_POD_BURST,
        Some(b) if b.value > MAX_POD_BURST => {
            d.push(err(
                file,
                line_of(b),
                "drill.policy.pod_burst",
                format!("{} pods is more than {MAX_POD_BURST}", b.value),
            ));
            DEFAULT_POD_BURST
        }
        Some(b) => b.value,
    };
    let max_loss_ratio = match pol.and_then(|p| p.max_loss_ratio.as_ref()) {
        None => 0.01,
        Some(r) if !(0.0..=1.0).contains(&r.value) => {
            d.push(err(
                file,
                line_of(r),
                "drill.policy.max_loss_ratio",
                format!("{} is not between 0 and 1", r.value),
            ));
            0.01
        }
        Some(r) => r.value,
    };
    let policy = PolicySettings {
        max_loss_ms,
        rollback_on_verify_failure: pol
            .and_then(|p| p.rollback_on_verify_failure)
            .unwrap_or(true),
        soak_secs,
        pod_burst,
        max_loss_ratio,
        max_container_restarts: pol.and_then(|p| p.max_container_restarts).unwrap_or(0),
        max_broken_connections: pol.and_then(|p| p.max_broken_connections).unwrap_or(0),
        max_pod_burst_failures: pol.and_then(|p| p.max_pod_burst_failures).unwrap_or(0),
    };

    let interval_secs = match raw
        .resources
        .as_ref()
        .and_then(|r| r.interval_secs.as_ref())
    {
        None => DEFAULT_INTERVAL_SECS,
        Some(i) if !(1..=300).contains(&i.value) => {
            d.push(err(
                file,
                line_of(i),
                "drill.resources.interval_secs",
                format!("{} s is outside 1..=300", i.value),
            ));
            DEFAULT_INTERVAL_SECS
        }
        Some(i) => i.value,
    };

    let faults = super::fault::parse(file, raw.faults.as_deref().unwrap_or_default(), &mut d);

    if d.has_errors() {
        return Err(d);
    }
    // parse_pair pushed an error for every version that did not parse.
    let Some(cilium) = cilium else {
        return Err(d);
    };
    let kubernetes = kubernetes.flatten();
    Ok(DrillDefinition {
        file: file.as_ref().clone(),
        name,
        cilium,
        kubernetes,
        kubernetes_batch,
        kubernetes_bundle,
        values,
        catch_up: raw.cilium.catch_up.as_ref().is_none_or(|c| c.value),
        reuse_values: raw.reuse_values.as_ref().is_some_and(|r| r.value),
        pin_config: raw.pin_config.as_ref().is_some_and(|r| r.value),
        probes: ProbeSettings {
            rate_per_s,
            kinds,
            image,
        },
        policy,
        resources: ResourceSettings { interval_secs },
        faults,
        warnings,
    })
}

// ---------------------------------------------------------------------------------------------
// Resolution with the command line
// ---------------------------------------------------------------------------------------------

/// Command-line overrides of `drill run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--from`.
    pub from: Option<Version>,
    /// `--to`.
    pub to: Option<Version>,
    /// `--force`: allow a path that skips a minor (one untested jump, with a warning).
    pub force: bool,
}

/// The drill as it will run: the definition, the effective versions and the upgrade path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedDrill {
    /// Drill name.
    pub name: String,
    /// The definition.
    pub definition: DrillDefinition,
    /// The version the lab must run at the start.
    pub from: Version,
    /// The target.
    pub to: Version,
    /// Kubernetes (from, to), recorded.
    pub kubernetes: Option<(Version, Version)>,
    /// The Kubernetes upgrade, when the versions differ.
    pub kubernetes_upgrade: Option<KubernetesUpgrade>,
    /// The steps.
    #[serde(skip)]
    pub plan: UpgradePlan,
    /// The steps as text (`1.17.18 → 1.18.12 (minor upgrade)`).
    pub steps: Vec<String>,
    /// Was `--force` given.
    pub forced: bool,
    /// Path warnings (forced steps).
    pub warnings: Vec<String>,
}

/// A drill's Kubernetes upgrade (kubeadm's procedure, one minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KubernetesUpgrade {
    /// From.
    pub from: Version,
    /// To.
    pub to: Version,
    /// Before or after Cilium's steps ([`super::kubernetes::order`]).
    pub order: super::kubernetes::Order,
    /// Workers at once.
    pub batch: u32,
}

/// Why a drill cannot run as asked.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A finding about the definition or the overrides, with file, line and field.
    #[error("{0}")]
    Invalid(Diagnostic),
}

impl ResolveError {
    /// The finding.
    pub fn diagnostic(&self) -> &Diagnostic {
        match self {
            ResolveError::Invalid(d) => d,
        }
    }
}

fn located_err(l: &Located<Version>, msg: String, hint: Option<&str>) -> Diagnostic {
    let mut d = Diagnostic::error(msg)
        .at_opt(l.origin.as_ref())
        .field(l.field.clone());
    if let Some(h) = hint {
        d = d.hint(h);
    }
    d
}

impl DrillDefinition {
    /// Apply the overrides and check the upgrade path with [`path::plan`] on the bundled release
    /// table: a skipped minor is an error unless `force`; a downgrade or a major change always
    /// is, and so is the same version unless Kubernetes changes (Cilium then stays). A
    /// Kubernetes change must be one minor forward ([`kubernetes::check_path`]) and keep every
    /// Cilium/Kubernetes pair the cluster passes through supported ([`kubernetes::order`];
    /// `force` accepts an untested newer Kubernetes). `--reuse-values` is refused across minors.
    pub fn resolve(&self, o: &Overrides) -> Result<ResolvedDrill, ResolveError> {
        let pick = |file: &Located<Version>, cli: Option<Version>, flag: &str| match cli {
            Some(v) => Located {
                value: v,
                origin: None,
                field: flag.to_owned(),
            },
            None => file.clone(),
        };
        let from = pick(&self.cilium.from, o.from, "--from");
        let to = pick(&self.cilium.to, o.to, "--to");
        let k8s_change = self
            .kubernetes
            .as_ref()
            .filter(|k| k.from.value != k.to.value);
        let opts = path::PathOptions {
            force: o.force,
            catch_up: self.catch_up,
        };
        let plan = if from.value == to.value && k8s_change.is_some() {
            path::UpgradePlan::stay()
        } else {
            path::plan_with(from.value, to.value, &Releases::default(), opts).map_err(|e| {
                let hint = match e {
                    path::PathError::SkippedMinor { .. } | path::PathError::UnknownMinor { .. } => {
                        Some("pass --force to take the untested jump")
                    }
                    _ => None,
                };
                ResolveError::Invalid(located_err(&to, e.to_string(), hint))
            })?
        };
        if self.reuse_values {
            for s in plan.steps() {
                refuse_reuse_values(s.from(), s.to()).map_err(|e| {
                    ResolveError::Invalid(
                        Diagnostic::error(format!("step {s}: {e}"))
                            .at(&Origin::at(&Arc::new(self.file.clone()), None))
                            .field("drill.reuse_values"),
                    )
                })?;
            }
        }
        if plan.steps().is_empty() && self.faults.contains(&super::fault::Fault::BadValue) {
            return Err(ResolveError::Invalid(
                Diagnostic::error(
                    "the bad-value fault goes into the new Cilium agents' values, but this drill upgrades only Kubernetes",
                )
                .at(&Origin::at(&Arc::new(self.file.clone()), None))
                .field("drill.faults")
                .hint("use kill-agent or link-down, or add a Cilium upgrade"),
            ));
        }
        let mut k8s_warnings = Vec::new();
        let kubernetes_upgrade = match k8s_change {
            None => None,
            Some(k) => {
                kubernetes::check_path(k.from.value, k.to.value)
                    .map_err(|e| ResolveError::Invalid(located_err(&k.to, e.to_string(), None)))?;
                let (order, compat_warnings) =
                    kubernetes::order((from.value, to.value), (k.from.value, k.to.value)).map_err(
                        |e| ResolveError::Invalid(located_err(&k.to, e.to_string(), None)),
                    )?;
                k8s_warnings = compat_warnings;
                Some(KubernetesUpgrade {
                    from: k.from.value,
                    to: k.to.value,
                    order,
                    batch: self.kubernetes_batch,
                })
            }
        };
        let kubernetes = self.kubernetes.as_ref().map(|k| (k.from.value, k.to.value));
        let name = self.name.clone().unwrap_or_else(|| {
            let k8s = kubernetes_upgrade.map(|k| format!("kubernetes-{}-to-{}", k.from, k.to));
            match (plan.steps().is_empty(), k8s) {
                (true, Some(k)) => k,
                (false, Some(k)) => format!("cilium-{}-to-{}-{k}", from.value, to.value),
                (_, None) => format!("cilium-{}-to-{}", from.value, to.value),
            }
        });
        Ok(ResolvedDrill {
            name,
            definition: self.clone(),
            from: from.value,
            to: to.value,
            kubernetes,
            kubernetes_upgrade,
            steps: plan.steps().iter().map(|s| s.to_string()).collect(),
            warnings: plan
                .warnings()
                .iter()
                .cloned()
                .chain(k8s_warnings)
                .collect(),
            plan,
            forced: o.force,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DrillDefinition, Diagnostics> {
        #[derive(Deserialize)]
        struct Wrap {
            drill: RawDrill,
        }
        let w: Wrap = serde_saphyr::from_str(text).map_err(|e| {
            let mut d = Diagnostics::default();
            d.push(Diagnostic::error(e.to_string()));
            d
        })?;
        validate(&Arc::new(PathBuf::from("labs/t.yaml")), &w.drill, Some(1))
    }

    #[test]
    fn defaults_fill_everything_but_versions() {
        let d = parse("drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n").expect("valid");
        assert_eq!(d.cilium.from.value, Version::new(1, 17, 18));
        assert_eq!(d.cilium.to.field, "drill.cilium.to");
        assert_eq!(d.probes.rate_per_s, 20);
        assert_eq!(d.probes.kinds, DEFAULT_KINDS);
        assert_eq!(d.policy.max_loss_ms[&ProbeKind::TcpNodeport], 1000);
        assert_eq!(d.policy.max_loss_ms[&ProbeKind::UdpPod], 2000);
        assert!(!d.policy.max_loss_ms.contains_key(&ProbeKind::IcmpHost));
        assert!(d.policy.rollback_on_verify_failure);
        assert_eq!(d.policy.soak_secs, 120);
        assert_eq!(d.resources.interval_secs, 5);
        let r = d.resolve(&Overrides::default()).expect("path");
        assert_eq!(r.name, "cilium-1.17.18-to-1.18.12");
        assert_eq!(r.plan.steps().len(), 1);
    }

    #[test]
    fn global_and_per_kind_limits() {
        let g = parse(
            "drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  policy:\n    max_loss_ms: 500\n",
        )
        .expect("valid");
        assert!(g.policy.max_loss_ms.values().all(|v| *v == 500));
        let p = parse("drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  policy:\n    max_loss_ms: {tcp-nodeport: 300}\n")
            .expect("valid");
        assert_eq!(p.policy.max_loss_ms[&ProbeKind::TcpNodeport], 300);
        assert_eq!(p.policy.max_loss_ms[&ProbeKind::TcpPod], 1000);
    }

    #[test]
    fn low_rate_is_a_warning() {
        let d =
            parse("drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  probes:\n    rate_per_s: 5\n")
                .expect("valid");
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0].to_string().contains("labs/t.yaml:4"),
            "{}",
            d.warnings[0]
        );
    }

    #[test]
    fn catch_up_false_leaves_from_the_installed_patch_with_a_warning() {
        let steps = |d: &DrillDefinition| -> (Vec<String>, Vec<String>) {
            let r = d.resolve(&Overrides::default()).expect("path");
            (
                r.plan.steps().iter().map(|s| s.to_string()).collect(),
                r.warnings.clone(),
            )
        };
        let d = parse("drill:\n  cilium: {from: 1.18.11, to: 1.19.7}\n").expect("valid");
        assert!(d.catch_up);
        assert_eq!(steps(&d).0.len(), 2, "{:?}", steps(&d));
        let d = parse("drill:\n  cilium: {from: 1.18.11, to: 1.19.7, catch_up: false}\n")
            .expect("valid");
        let (s, w) = steps(&d);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].starts_with("1.18.11 → 1.19.7"), "{s:?}");
        assert!(w.iter().any(|w| w.contains("1.18.12")), "{w:?}");
        let e = parse("drill:\n  cilium: {from: 1.18.11, to: 1.19.7, catch_up: 3}\n")
            .expect_err("not a boolean");
        assert!(
            e.to_string().contains("catch_up") || e.to_string().contains("labs/t.yaml"),
            "{e}"
        );
        let e = parse(
            "drill:\n  cilium: {from: 1.18.11, to: 1.19.7}\n  kubernetes: {from: 1.34.4, to: 1.34.4, catch_up: false}\n",
        )
        .expect_err("cilium only");
        assert!(e.to_string().contains("catch_up"), "{e}");
    }

    #[test]
    fn skipped_minor_needs_force_and_overrides_win() {
        let d = parse("drill:\n  cilium:\n    from: 1.17.18\n    to: 1.18.12\n").expect("valid");
        // The bundled table has every minor, so a skip needs a table gap: use an override
        // outside it instead, which is an unknown minor.
        let e = d
            .resolve(&Overrides {
                to: Some(Version::new(1, 22, 0)),
                ..Overrides::default()
            })
            .expect_err("unknown minor");
        let text = e.diagnostic().to_string();
        assert!(text.contains("`--to`"), "{text}");
        assert!(text.contains("--force"), "{text}");
        let forced = d
            .resolve(&Overrides {
                to: Some(Version::new(1, 22, 0)),
                force: true,
                ..Overrides::default()
            })
            .expect("forced");
        assert!(!forced.warnings.is_empty());
        // A downgrade written in the file names the file, the line and the field.
        let down = parse("drill:\n  cilium:\n    from: 1.18.12\n    to: 1.17.18\n").expect("valid");
        let e = down.resolve(&Overrides::default()).expect_err("downgrade");
        let text = e.diagnostic().to_string();
        assert!(text.contains("labs/t.yaml:4: `drill.cilium.to`"), "{text}");
    }

    #[test]
    fn a_kubernetes_only_drill_takes_node_faults_but_refuses_bad_value() {
        let k8s = "drill:\n  cilium: {from: 1.19.7, to: 1.19.7}\n  kubernetes: {from: 1.34.4, to: 1.35.4}\n  faults:\n";
        let nodes = parse(&format!(
            "{k8s}    - {{kind: link-down, node: w1, secs: 5}}\n    - {{kind: kill-agent, node: w1}}\n"
        ))
        .expect("valid");
        let r = nodes
            .resolve(&Overrides::default())
            .expect("node faults fire in kubernetes/cp1");
        assert_eq!(r.definition.faults.len(), 2);
        let bad = parse(&format!("{k8s}    - {{kind: bad-value}}\n")).expect("valid alone");
        let e = bad
            .resolve(&Overrides::default())
            .expect_err("no Cilium step to break");
        let text = e.diagnostic().to_string();
        assert!(
            text.contains("`drill.faults`") && text.contains("only Kubernetes"),
            "{text}"
        );
        // With a Cilium step it is the step's values that carry it.
        let both = parse(
            "drill:\n  cilium: {from: 1.18.11, to: 1.19.7}\n  kubernetes: {from: 1.34.4, to: 1.35.4}\n  faults: [{kind: bad-value}]\n",
        )
        .expect("valid");
        assert!(both.resolve(&Overrides::default()).is_ok());
    }

    #[test]
    fn kubernetes_upgrade_resolves_with_its_order_batch_and_bundle() {
        let d = parse("drill:\n  cilium: {from: 1.19.7, to: 1.19.7}\n  kubernetes:\n    from: 1.34.4\n    to: 1.35.4\n    batch: 2\n    bundle: ../bundles/k8s\n")
            .expect("valid");
        assert_eq!(
            d.kubernetes_bundle,
            Some(PathBuf::from("labs/../bundles/k8s"))
        );
        let r = d.resolve(&Overrides::default()).expect("kubernetes alone");
        assert!(r.plan.steps().is_empty());
        assert_eq!(r.name, "kubernetes-1.34.4-to-1.35.4");
        let k = r.kubernetes_upgrade.expect("upgrade");
        assert_eq!(
            (k.from, k.to, k.batch),
            (Version::new(1, 34, 4), Version::new(1, 35, 4), 2)
        );
        assert_eq!(k.order, kubernetes::Order::CiliumFirst);
        // Both: named after both; Cilium 1.18 first would meet 1.32 fine.
        let both = parse("drill:\n  cilium: {from: 1.17.16, to: 1.18.11, catch_up: false}\n  kubernetes: {from: 1.31.2, to: 1.32.1}\n")
            .expect("valid")
            .resolve(&Overrides::default())
            .expect("both");
        assert_eq!(
            both.name,
            "cilium-1.17.16-to-1.18.11-kubernetes-1.31.2-to-1.32.1"
        );
        // Recorded only.
        let same = parse("drill:\n  cilium: {from: 1.17.18, to: 1.18.12}\n  kubernetes: {from: 1.33.7, to: 1.33.7}\n")
            .expect("valid");
        let r = same.resolve(&Overrides::default()).expect("record only");
        assert_eq!(
            r.kubernetes,
            Some((Version::new(1, 33, 7), Version::new(1, 33, 7)))
        );
        assert!(r.kubernetes_upgrade.is_none());
        // Cilium unchanged and Kubernetes unchanged: nothing to drill.
        assert!(
            parse("drill:\n  cilium: {from: 1.19.7, to: 1.19.7}\n")
                .expect("valid")
                .resolve(&Overrides::default())
                .is_err()
        );
    }

    #[test]
    fn kubernetes_upgrade_refusals_name_the_field_and_the_reason() {
        let cases = [
            // two minors
            (
                "cilium: {from: 1.19.7, to: 1.19.7}\n  kubernetes: {from: 1.33.1, to: 1.35.4}",
                "one minor at a time",
            ),
            // downgrade
            (
                "cilium: {from: 1.19.7, to: 1.19.7}\n  kubernetes: {from: 1.35.4, to: 1.34.4}",
                "does not downgrade",
            ),
            // 1.20 does not support 1.32 at the start
            (
                "cilium: {from: 1.20.0, to: 1.20.0}\n  kubernetes: {from: 1.32.1, to: 1.33.1}",
                "unsupported",
            ),
        ];
        for (body, want) in cases {
            let e = parse(&format!("drill:\n  {body}\n"))
                .expect("valid")
                .resolve(&Overrides::default())
                .expect_err(body);
            let msg = e.to_string();
            assert!(
                msg.contains(want) && msg.contains("drill.kubernetes.to"),
                "{body}: {msg}"
            );
        }
        // 1.18 is tested up to 1.33: a warning, not a refusal.
        let untested = parse("drill:\n  cilium: {from: 1.18.11, to: 1.18.11}\n  kubernetes: {from: 1.33.1, to: 1.34.4}\n")
            .expect("valid")
            .resolve(&Overrides::default())
            .expect("newer Kubernetes warns");
        assert!(
            untested
                .warnings
                .iter()
                .any(|w| w.contains("not tested upstream")),
            "{:?}",
            untested.warnings
        );
        let e = parse("drill:\n  cilium: {from: 1.19.7, to: 1.19.7}\n  kubernetes: {from: 1.34.4, to: 1.35.4, batch: 0}\n")
            .expect_err("batch 0");
        assert!(e.to_string().contains("drill.kubernetes.batch"), "{e}");
    }

    #[test]
    fn reuse_values_across_minors_is_refused() {
        let d = parse("drill:\n  cilium: {from: 1.17.3, to: 1.18.12}\n  reuse_values: true\n")
            .expect("valid");
        let e = d.resolve(&Overrides::default()).expect_err("reuse");
        assert!(e.to_string().contains("drill.reuse_values"), "{e}");
        let ok = parse("drill:\n  cilium: {from: 1.17.3, to: 1.17.18}\n  reuse_values: true\n")
            .expect("valid");
        assert!(ok.resolve(&Overrides::default()).is_ok());
    }

    #[test]
    fn pin_config_is_off_unless_asked() {
        let off = parse("drill:\n  cilium: {from: 1.18.11, to: 1.19.7}\n").expect("valid");
        assert!(!off.pin_config);
        let on = parse("drill:\n  cilium: {from: 1.18.11, to: 1.19.7}\n  pin_config: true\n")
            .expect("valid");
        assert!(on.pin_config);
        let e = parse("drill:\n  cilium: {from: 1.18.11, to: 1.19.7}\n  pin_config: maybe\n")
            .expect_err("not a bool");
        assert!(
            e.to_string().contains("pin_config") || e.to_string().contains(":3"),
            "{e}"
        );
    }
}
