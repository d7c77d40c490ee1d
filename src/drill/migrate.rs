//! Migrating a release's user-supplied Helm values (`helm get values cilium -n kube-system -o
//! yaml`) from one Cilium chart version to a newer one, one minor at a time, so that the file
//! passed to `helm upgrade --values` uses the names the new chart accepts.
//!
//! Each step to minor `M` applies, in order, every rule whose `since` is at most `M` (rules only
//! fire when the old form is present, so a value already migrated is left alone and a multi-step
//! migration equals the composition of its steps):
//!
//! | since | rule |
//! |---|---|
//! | 1.12 | `nativeRoutingCIDR` → `ipv4NativeRoutingCIDR` |
//! | 1.12 | `bpf.hostRouting` → `bpf.hostLegacyRouting` (same value: both mean "route through the host stack") |
//! | 1.12 | `hostServices.{enabled,hostNamespaceOnly}` → `socketLB.*`; `hostServices.protocols` dropped |
//! | 1.13 | `kubeProxyReplacement: probe` → `disabled` (warning: behaviour changes) |
//! | 1.13 | `kubeProxyReplacement` unset → set explicitly (`disabled`, from 1.14 `false`) |
//! | 1.14 | `tunnel` → `routingMode` (+ `tunnelProtocol`): migrated where `tunnel` is deprecated, one minor before 1.15 removes it |
//! | 1.14 | `kubeProxyReplacement: strict` → `true`; `partial`/`disabled`/`probe` → `false` |
//! | 1.18 | `routingMode: native` needs a native routing CIDR (blocking unless the caller gives one) |
//! | all  | `upgradeCompatibility` set to the minor first installed (`"1.11"`) |
//! | all  | image tags pinned to the version being left (`image.tag: v1.18.11`, an `override` ending in `:v1.18.11`) follow to the step's version; a pinned digest is a warning |
//! | all  | keys the target chart's values.yaml does not declare are removed (or kept) with a warning |
//!
//! Reusing values across minors (`helm upgrade --reuse-values`) is refused:
//! [`refuse_reuse_values`].

use super::chart::{ChartKeys, Charts};
use super::path::Minor;
use crate::spec::{Version, take_path};
use ipnet::IpNet;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// How to migrate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Keep keys the target chart does not declare (still warned about) instead of removing them.
    pub keep_unknown: bool,
    /// The minor first installed on the cluster, for `upgradeCompatibility`. Default: the value
    /// already in the values, else the from-version's minor. When given, it replaces the value.
    pub upgrade_compatibility: Option<Minor>,
    /// The native routing CIDR to add when a 1.18+ chart requires one and the values lack it.
    pub native_cidr: Option<IpNet>,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// A value moved to a new name (its value possibly mapped too).
    Renamed {
        /// The old dotted path.
        old_path: String,
        /// The new dotted path.
        new_path: String,
        /// The old value.
        old: Value,
        /// The new value.
        new: Value,
    },
    /// A value kept its name but changed.
    ValueMapped {
        /// Dotted path.
        path: String,
        /// The old value.
        old: Value,
        /// The new value.
        new: Value,
    },
    /// A value was removed.
    Removed {
        /// Dotted path.
        path: String,
        /// The removed value.
        old: Value,
    },
    /// A value was added.
    Added {
        /// Dotted path.
        path: String,
        /// The added value.
        new: Value,
    },
}

/// One change, at the step to chart version `at`, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The chart version of the step that made the change.
    pub at: Version,
    /// What changed.
    pub kind: ChangeKind,
    /// Why, with the source of the rule.
    pub why: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = |v: &Value| v.to_string();
        match &self.kind {
            ChangeKind::Renamed {
                old_path,
                new_path,
                old,
                new,
            } => write!(
                f,
                "{}: renamed {old_path}: {} → {new_path}: {}",
                self.at,
                j(old),
                j(new)
            )?,
            ChangeKind::ValueMapped { path, old, new } => {
                write!(f, "{}: {path}: {} → {}", self.at, j(old), j(new))?
            }
            ChangeKind::Removed { path, old } => {
                write!(f, "{}: removed {path}: {}", self.at, j(old))?
            }
            ChangeKind::Added { path, new } => write!(f, "{}: added {path}: {}", self.at, j(new))?,
        }
        write!(f, " — {}", self.why)
    }
}

/// Something to review before running the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The chart version of the step.
    pub at: Version,
    /// The dotted path concerned, if one.
    pub path: Option<String>,
    /// What to review.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {p}: {}", self.at, self.message),
            None => write!(f, "{}: {}", self.at, self.message),
        }
    }
}

/// A migration's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// The chart version the values were written for.
    pub from: Version,
    /// The chart version they are migrated to.
    pub to: Version,
    /// The values as given (a `null` document read as an empty map).
    pub original: Value,
    /// The migrated values, keys sorted (as `helm get values` prints them).
    pub values: Value,
    /// Every change, in the order made.
    pub changes: Vec<Change>,
    /// Warnings, in the order raised.
    pub warnings: Vec<Warning>,
}

impl Migration {
    /// The net difference between the original and migrated values: see [`diff`].
    pub fn diff(&self) -> String {
        diff(&self.original, &self.values)
    }

    /// The migrated values as a YAML file for `helm upgrade --values` (strings a YAML 1.1 reader
    /// would take for numbers, like `"1.10"`, are quoted).
    pub fn values_yaml(&self) -> Result<String, MigrateError> {
        let body = serde_saphyr::to_string(&self.values).map_err(|e| MigrateError::Yaml {
            message: e.to_string(),
        })?;
        let body = if body.ends_with('\n') {
            body
        } else {
            body + "\n"
        };
        Ok(format!(
            "# Cilium Helm values migrated by kubedrill from chart {} to {}.\n{body}",
            self.from, self.to
        ))
    }
}

/// Why values cannot be migrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The target is older.
    #[error(
        "values for chart {from} cannot be migrated down to {to}; roll back with `helm rollback` instead"
    )]
    Downgrade {
        /// Source version.
        from: Version,
        /// Target version.
        to: Version,
    },
    /// Major versions differ.
    #[error("no values migration is known from chart {from} to {to} (major version change)")]
    MajorChange {
        /// Source version.
        from: Version,
        /// Target version.
        to: Version,
    },
    /// No chart data for a minor the migration passes through.
    #[error(
        "no chart values.yaml for Cilium {minor} (known: {known}); add it with Charts::insert (`helm show values cilium/cilium --version {minor}.N`)"
    )]
    NoChartData {
        /// The minor.
        minor: Minor,
        /// The versions held.
        known: String,
    },
    /// A value that must be a mapping is not.
    #[error("{path} is {found}, expected a mapping of Helm values")]
    NotAMap {
        /// Dotted path (`(root)` for the document).
        path: String,
        /// What was found.
        found: String,
    },
    /// A value no rule knows how to migrate.
    #[error("{path}: {value} is not valid for chart {at}; expected {expected}")]
    InvalidValue {
        /// Dotted path.
        path: String,
        /// The value found.
        value: String,
        /// What is accepted.
        expected: String,
        /// The step's chart version.
        at: Version,
    },
    /// An old and a new name disagree.
    #[error(
        "{old_path}: {old} and {new_path}: {new} disagree; chart {at} reads only {new_path}; remove one and migrate again"
    )]
    Conflict {
        /// The old name.
        old_path: String,
        /// Its value.
        old: String,
        /// The new name.
        new_path: String,
        /// Its value.
        new: String,
        /// The step's chart version.
        at: Version,
    },
    /// A 1.18+ chart fails on native routing without a native routing CIDR.
    #[error(
        "chart {at} refuses routingMode: native without ipv4NativeRoutingCIDR or ipv6NativeRoutingCIDR (\"must be set when routingMode is native\"); give the native routing CIDR (it must cover the pod CIDR, e.g. kube_pods_subnet)"
    )]
    NativeCidrRequired {
        /// The step's chart version.
        at: Version,
    },
    /// Writing YAML failed.
    #[error("serialising migrated values: {message}")]
    Yaml {
        /// Why.
        message: String,
    },
}

/// `helm upgrade --reuse-values` across minors was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing --reuse-values from Cilium {from} to {to}: across minors it keeps the old chart's values and loses the new chart's defaults, so templates break; pass the migrated values file with --values instead (reuse is fine within one minor)"
)]
pub struct ReuseValuesError {
    /// Running version.
    pub from: Version,
    /// Target version.
    pub to: Version,
}

/// Allow `helm upgrade --reuse-values` only within one minor (Cilium upgrade guide: "never
/// --reuse-values across minors"; new chart defaults would be lost).
pub fn refuse_reuse_values(from: Version, to: Version) -> Result<(), ReuseValuesError> {
    if Minor::of(from) == Minor::of(to) {
        Ok(())
    } else {
        Err(ReuseValuesError { from, to })
    }
}

/// Migrate `values` from chart `from` to chart `to` (same or newer), one minor at a time, checking
/// keys against the bundled charts.
pub fn migrate(
    values: &Value,
    from: Version,
    to: Version,
    opts: &MigrateOptions,
) -> Result<Migration, MigrateError> {
    migrate_with(values, from, to, opts, Charts::bundled())
}

/// [`migrate`] with other chart data.
pub fn migrate_with(
    values: &Value,
    from: Version,
    to: Version,
    opts: &MigrateOptions,
    charts: &Charts,
) -> Result<Migration, MigrateError> {
    if from.major != to.major {
        return Err(MigrateError::MajorChange { from, to });
    }
    if to < from {
        return Err(MigrateError::Downgrade { from, to });
    }
    let original = match values {
        Value::Null => Value::Object(Map::new()),
        Value::Object(_) => values.clone(),
        other => {
            return Err(MigrateError::NotAMap {
                path: "(root)".to_owned(),
                found: describe(other),
            });
        }
    };
    let mut values = original.as_object().cloned().unwrap_or_default();
    let (mut changes, mut warnings) = (Vec::new(), Vec::new());
    let mut prev = from;
    for (at, chart_version, chart) in steps(from, to, charts)? {
        let mut ctx = Ctx {
            values,
            from,
            prev,
            at,
            chart,
            opts,
            changes,
            warnings,
        };
        if chart_version != at {
            ctx.warn(
                None,
                format!(
                    "keys checked against chart {chart_version}, the chart held for {at}'s minor"
                ),
            );
        }
        for rule in RULES.iter().filter(|r| Minor::of(at) >= r.since) {
            (rule.apply)(&mut ctx)?;
        }
        sort_keys(&mut ctx.values);
        (values, changes, warnings) = (ctx.values, ctx.changes, ctx.warnings);
        prev = at;
    }
    Ok(Migration {
        from,
        to,
        original,
        values: Value::Object(values),
        changes,
        warnings,
    })
}

/// The steps' chart versions: `to` itself within one minor, else the held chart of every minor
/// after `from`'s, ending with `to`. Each with the chart version its keys come from.
fn steps(
    from: Version,
    to: Version,
    charts: &Charts,
) -> Result<Vec<(Version, Version, &ChartKeys)>, MigrateError> {
    let mut out = Vec::new();
    let mut minor = if Minor::of(from) == Minor::of(to) {
        Minor::of(to)
    } else {
        Minor::of(from).next()
    };
    while minor <= Minor::of(to) {
        let (held, keys) = charts
            .for_minor(minor)
            .ok_or_else(|| MigrateError::NoChartData {
                minor,
                known: charts
                    .versions()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let at = if minor == Minor::of(to) { to } else { held };
        out.push((at, held, keys));
        minor = minor.next();
    }
    Ok(out)
}

/// The values being migrated and what has been done to them.
struct Ctx<'a> {
    values: Map<String, Value>,
    /// The version the original values were written for.
    from: Version,
    /// The version the values are written for when this step starts (`from`, then each step's).
    prev: Version,
    /// The chart version of the current step.
    at: Version,
    chart: &'a ChartKeys,
    opts: &'a MigrateOptions,
    changes: Vec<Change>,
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        parts.try_fold(self.values.get(first)?, |v, k| v.as_object()?.get(k))
    }

    /// A string value (`None` when absent or not a string).
    fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    fn take(&mut self, path: &str) -> Option<Value> {
        take_path(&mut self.values, path)
    }

    /// Set a dotted path, creating parent maps.
    fn set(&mut self, path: &str, value: Value) -> Result<(), MigrateError> {
        let mut map = &mut self.values;
        let mut walked = String::new();
        let mut parts = path.split('.').peekable();
        while let Some(key) = parts.next() {
            if parts.peek().is_none() {
                map.insert(key.to_owned(), value);
                return Ok(());
            }
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(key);
            let child = map
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            map = match child {
                Value::Object(m) => m,
                other => {
                    return Err(MigrateError::NotAMap {
                        path: walked,
                        found: describe(other),
                    });
                }
            };
        }
        Ok(())
    }

    fn record(&mut self, kind: ChangeKind, why: impl Into<String>) {
        self.changes.push(Change {
            at: self.at,
            kind,
            why: why.into(),
        });
    }

    fn warn(&mut self, path: Option<&str>, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: self.at,
            path: path.map(str::to_owned),
            message: message.into(),
        });
    }

    /// Move `old_path` to `new_path` (mapping its value with `map`); a value already under the
    /// new name must agree.
    fn rename(
        &mut self,
        old_path: &str,
        new_path: &str,
        map: impl Fn(&Value) -> Value,
        why: &str,
    ) -> Result<(), MigrateError> {
        let Some(old) = self.take(old_path) else {
            return Ok(());
        };
        let new = map(&old);
        match self.get(new_path).filter(|v| !is_unset(v)) {
            Some(existing) if *existing == new => {
                self.record(
                    ChangeKind::Removed {
                        path: old_path.to_owned(),
                        old,
                    },
                    format!("{new_path} already says the same; {why}"),
                );
                Ok(())
            }
            Some(existing) => Err(MigrateError::Conflict {
                old_path: old_path.to_owned(),
                old: old.to_string(),
                new_path: new_path.to_owned(),
                new: existing.to_string(),
                at: self.at,
            }),
            None => {
                self.set(new_path, new.clone())?;
                self.record(
                    ChangeKind::Renamed {
                        old_path: old_path.to_owned(),
                        new_path: new_path.to_owned(),
                        old,
                        new,
                    },
                    why,
                );
                Ok(())
            }
        }
    }

    /// Replace the value at `path`, recording the change.
    fn map_value(&mut self, path: &str, new: Value, why: &str) -> Result<(), MigrateError> {
        let old = self.get(path).cloned().unwrap_or(Value::Null);
        self.set(path, new.clone())?;
        self.record(
            ChangeKind::ValueMapped {
                path: path.to_owned(),
                old,
                new,
            },
            why,
        );
        Ok(())
    }

    /// Add a value at `path`, recording the change.
    fn add(&mut self, path: &str, new: Value, why: &str) -> Result<(), MigrateError> {
        self.set(path, new.clone())?;
        self.record(
            ChangeKind::Added {
                path: path.to_owned(),
                new,
            },
            why,
        );
        Ok(())
    }

    fn invalid(&self, path: &str, value: &Value, expected: &str) -> MigrateError {
        MigrateError::InvalidValue {
            path: path.to_owned(),
            value: value.to_string(),
            expected: expected.to_owned(),
            at: self.at,
        }
    }
}

/// A migration rule: applied at every step to a minor ≥ `since`.
struct Rule {
    since: Minor,
    apply: fn(&mut Ctx<'_>) -> Result<(), MigrateError>,
}

/// The rules, in the order applied. Renames come first so later rules see the new names; pruning
/// comes last.
const RULES: &[Rule] = &[
    Rule {
        since: Minor::new(1, 12),
        apply: native_routing_cidr_rename,
    },
    Rule {
        since: Minor::new(1, 12),
        apply: host_routing_rename,
    },
    Rule {
        since: Minor::new(1, 12),
        apply: host_services_to_socket_lb,
    },
    Rule {
        since: Minor::new(1, 13),
        apply: kpr_probe_removed,
    },
    Rule {
        since: Minor::new(1, 13),
        apply: kpr_explicit,
    },
    Rule {
        since: Minor::new(1, 14),
        apply: tunnel_to_routing_mode,
    },
    Rule {
        since: Minor::new(1, 14),
        apply: kpr_boolean,
    },
    Rule {
        since: Minor::new(1, 18),
        apply: native_routing_needs_cidr,
    },
    Rule {
        since: Minor::new(1, 0),
        apply: upgrade_compatibility,
    },
    Rule {
        since: Minor::new(1, 0),
        apply: image_tags_follow,
    },
    Rule {
        since: Minor::new(1, 0),
        apply: prune_unknown,
    },
];

/// Source: chart 1.11.20 values.yaml ("nativeRoutingCIDR ... Deprecated in favor of
/// ipv4NativeRoutingCIDR, will be removed in 1.12"); upgrade note cilium/cilium#18095; the 1.12
/// chart no longer mentions it.
fn native_routing_cidr_rename(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    ctx.rename(
        "nativeRoutingCIDR",
        "ipv4NativeRoutingCIDR",
        Value::clone,
        "nativeRoutingCIDR was removed in 1.12 (cilium/cilium#18095)",
    )
}

/// Source: chart 1.12.19 values.yaml (`bpf.hostRouting`: "Deprecated in favor of
/// bpf.hostLegacyRouting. To be removed in 1.13."). Not inverted: both keys are documented as
/// "route traffic via host stack (true) or directly ... out of BPF (false)" (charts 1.11.20 and
/// 1.12.19), so the value is kept as is.
fn host_routing_rename(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    ctx.rename(
        "bpf.hostRouting",
        "bpf.hostLegacyRouting",
        Value::clone,
        "bpf.hostRouting is deprecated in 1.12 and removed in 1.13 (chart 1.12 values.yaml); same meaning, true = host stack",
    )
}

/// Source: cilium/cilium#20369 ("Rename host-reachable services to socket LB", 1.12: chart 1.11's
/// `hostServices` became `socketLB` with `enabled` and `hostNamespaceOnly`) and cilium/cilium#22083
/// (socket-LB protocols removed: it always handles TCP and UDP).
fn host_services_to_socket_lb(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    let why = "host-reachable services were renamed socket LB in 1.12 (cilium/cilium#20369)";
    ctx.rename(
        "hostServices.enabled",
        "socketLB.enabled",
        Value::clone,
        why,
    )?;
    ctx.rename(
        "hostServices.hostNamespaceOnly",
        "socketLB.hostNamespaceOnly",
        Value::clone,
        why,
    )?;
    if let Some(old) = ctx.take("hostServices.protocols") {
        if old.as_str().map(str::trim) != Some("tcp,udp") {
            ctx.warn(
                Some("hostServices.protocols"),
                format!(
                    "was {old}; socket LB always handles TCP and UDP (needs a 4.19.57+ kernel)"
                ),
            );
        }
        ctx.record(
            ChangeKind::Removed {
                path: "hostServices.protocols".to_owned(),
                old,
            },
            "socket LB protocols are no longer configurable (cilium/cilium#22083)",
        );
    }
    Ok(())
}

/// Source: cilium/cilium#22083 ("Get rid of KPR=probe": deprecated in 1.12, removed in 1.13); the
/// 1.13 chart lists only disabled, partial, strict.
fn kpr_probe_removed(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    if ctx.get_str("kubeProxyReplacement") != Some("probe") {
        return Ok(());
    }
    let new = if ctx.at.at_least(1, 14) {
        json!(false)
    } else {
        json!("disabled")
    };
    ctx.warn(
        Some("kubeProxyReplacement"),
        format!(
            "probe (removed in 1.13) enabled whatever kube-proxy replacement features the kernel supported; now {new}, so kube-proxy must handle services. If kube-proxy is gone, set {} instead",
            if ctx.at.at_least(1, 14) { "true" } else { "strict" }
        ),
    );
    ctx.map_value(
        "kubeProxyReplacement",
        new,
        "kubeProxyReplacement=probe was removed in 1.13 (cilium/cilium#22083)",
    )
}

/// Source: cilium/cilium#27344 (1.12 → 1.13 upgrade fails: "kubeproxyReplacement must be explicitly
/// set to a valid value (disabled, partial, or strict)" when the values do not set it) and
/// cilium/cilium#36131 (the same for 1.16.0–1.16.4: "(true or false)"). Setting it explicitly
/// avoids the chart's computed default.
fn kpr_explicit(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    if ctx
        .get("kubeProxyReplacement")
        .is_some_and(|v| !v.is_null())
    {
        return Ok(());
    }
    let new = if ctx.at.at_least(1, 14) {
        json!(false)
    } else {
        json!("disabled")
    };
    ctx.warn(
        Some("kubeProxyReplacement"),
        format!(
            "was not set; set to {new} (the default since 1.10, kube-proxy handles services). A cluster first installed before 1.10 ran probe; one without kube-proxy needs true/strict"
        ),
    );
    ctx.add(
        "kubeProxyReplacement",
        new,
        "charts 1.13 and 1.16.0–1.16.4 fail when kubeProxyReplacement is not set explicitly (cilium/cilium#27344, #36131)",
    )
}

/// Source: chart 1.14.19 values.yaml (`tunnel`: "Deprecated in favor of tunnelProtocol and
/// routingMode. To be removed in 1.15."), removed by cilium/cilium#29053 (1.15). Migrated at
/// 1.14, not 1.15: the 1.14 chart already reads routingMode/tunnelProtocol, so the drill tests the
/// new names on the chart that still accepts both, and a 1.15 upgrade changes no routing values.
fn tunnel_to_routing_mode(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    let Some(tunnel) = ctx.get("tunnel").cloned() else {
        return Ok(());
    };
    let why = "tunnel is deprecated in 1.14 and removed in 1.15 (cilium/cilium#29053)";
    let (mode, protocol) = match tunnel.as_str().map(str::trim) {
        Some("") => (None, None),
        Some("disabled") => (Some("native"), None),
        Some(p @ ("vxlan" | "geneve")) => (Some("tunnel"), Some(p)),
        _ => return Err(ctx.invalid("tunnel", &tunnel, "disabled, vxlan or geneve")),
    };
    let Some(mode) = mode else {
        ctx.take("tunnel");
        ctx.record(
            ChangeKind::Removed {
                path: "tunnel".to_owned(),
                old: tunnel,
            },
            why,
        );
        return Ok(());
    };
    if let Some(p) = protocol {
        agree(ctx, "tunnel", &tunnel, "tunnelProtocol", p)?;
    }
    ctx.rename("tunnel", "routingMode", |_| json!(mode), why)?;
    match (protocol, ctx.get("tunnelProtocol")) {
        (Some(p), None) => ctx.add("tunnelProtocol", json!(p), why),
        (Some(p), Some(v)) if is_unset(v) => ctx.map_value("tunnelProtocol", json!(p), why),
        _ => Ok(()),
    }
}

/// An old value that implies `want` at `new_path` must not contradict a value already there.
fn agree(
    ctx: &Ctx<'_>,
    old_path: &str,
    old: &Value,
    new_path: &str,
    want: &str,
) -> Result<(), MigrateError> {
    match ctx.get(new_path) {
        Some(v) if is_unset(v) || v.as_str() == Some(want) => Ok(()),
        Some(v) => Err(MigrateError::Conflict {
            old_path: old_path.to_owned(),
            old: old.to_string(),
            new_path: new_path.to_owned(),
            new: v.to_string(),
            at: ctx.at,
        }),
        _ => Ok(()),
    }
}

/// Kube-proxy replacement features a user may enable one by one (the old `partial` mode).
const KPR_FEATURES: &[&str] = &[
    "nodePort.enabled",
    "hostPort.enabled",
    "externalIPs.enabled",
    "socketLB.enabled",
];

/// Source: chart 1.14.19 values.yaml ("Valid options are "true", "false", "disabled"
/// (deprecated), "partial" (deprecated), "strict" (deprecated)"), cilium/cilium#26577 (docs:
/// `false` now means what `partial` meant: only the features enabled one by one) and
/// cilium/cilium#27060; the old strings are rejected from 1.16, whose chart accepts only "a valid
/// value (true or false)" (error quoted in cilium/cilium#36131).
fn kpr_boolean(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    let Some(old) = ctx.get("kubeProxyReplacement").cloned() else {
        return Ok(());
    };
    let why = "strict/partial/disabled are deprecated in 1.14 and rejected from 1.16 (cilium/cilium#26577)";
    let enabled: Vec<&str> = KPR_FEATURES
        .iter()
        .copied()
        .filter(|p| ctx.get(p) == Some(&json!(true)))
        .collect();
    let new = match &old {
        Value::Bool(_) | Value::Null => return Ok(()),
        Value::String(s) => match s.trim() {
            "true" | "false" => return Ok(()),
            "strict" => json!(true),
            "partial" => {
                ctx.warn(
                    Some("kubeProxyReplacement"),
                    format!(
                        "partial → false: false keeps only the features enabled one by one ({}); check that these are the ones partial used",
                        list_or_none(&enabled)
                    ),
                );
                json!(false)
            }
            "disabled" => {
                if !enabled.is_empty() {
                    ctx.warn(
                        Some("kubeProxyReplacement"),
                        format!(
                            "disabled → false: disabled ignored {}, false enables them; remove them to keep the old behaviour",
                            enabled.join(", ")
                        ),
                    );
                }
                json!(false)
            }
            _ => return Err(ctx.invalid("kubeProxyReplacement", &old, "true or false")),
        },
        _ => return Err(ctx.invalid("kubeProxyReplacement", &old, "true or false")),
    };
    ctx.map_value("kubeProxyReplacement", new, why)
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none set".to_owned()
    } else {
        items.join(", ")
    }
}

/// Source: cilium/cilium#38372 (1.18 chart: "ipv4NativeRoutingCIDR or ipv6NativeRoutingCIDR must be
/// set when routingMode is native"); chart 1.20.0 adds `nativeRoutingCIDRFromClusterPool`, which
/// derives the CIDR instead.
fn native_routing_needs_cidr(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    if ctx.get_str("routingMode").map(str::trim) != Some("native") {
        return Ok(());
    }
    let set = |p: &str| ctx.get_str(p).is_some_and(|s| !s.trim().is_empty());
    let from_pool = ctx.get("nativeRoutingCIDRFromClusterPool") == Some(&json!(true));
    if set("ipv4NativeRoutingCIDR") || set("ipv6NativeRoutingCIDR") || from_pool {
        return Ok(());
    }
    let Some(cidr) = ctx.opts.native_cidr else {
        return Err(MigrateError::NativeCidrRequired { at: ctx.at });
    };
    let path = match cidr {
        IpNet::V4(_) => "ipv4NativeRoutingCIDR",
        IpNet::V6(_) => "ipv6NativeRoutingCIDR",
    };
    ctx.add(
        path,
        json!(cidr.trunc().to_string()),
        "1.18+ charts fail on routingMode: native without a native routing CIDR (cilium/cilium#38372); given by the caller",
    )
}

/// Source: every chart's values.yaml ("upgradeCompatibility helps users upgrading to ensure that
/// the configMap for Cilium will not change critical values ... For example: '1.7', '1.8'"):
/// commented out in 1.11–1.15, a real key (`null`) from 1.16; the upgrade guide asks to set it to
/// the version first installed. Written as a string: unquoted, YAML reads 1.10 as 1.1.
fn upgrade_compatibility(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    const PATH: &str = "upgradeCompatibility";
    let why = "the minor first installed, so the new chart keeps that install's defaults (Cilium upgrade guide)";
    let existing = ctx.get(PATH).cloned().filter(|v| !is_unset(v));
    let want = ctx.opts.upgrade_compatibility;
    match (existing, want) {
        (None, _) => {
            let minor = want.unwrap_or(Minor::of(ctx.from));
            ctx.add(PATH, json!(minor.to_string()), why)
        }
        (Some(Value::String(s)), Some(w)) if s.trim() == w.to_string() => Ok(()),
        (Some(_), Some(w)) => ctx.map_value(PATH, json!(w.to_string()), "set by the caller"),
        (Some(Value::String(s)), None) if s.trim().parse::<Minor>().is_ok() => Ok(()),
        (Some(v), None) => Err(ctx.invalid(
            PATH,
            &v,
            "a quoted minor like \"1.11\" (give the minor first installed to replace it)",
        )),
    }
}

/// Values that pin Cilium's own images by tag (a mirror, an offline registry, Kubespray's
/// `cilium_version` written into `image.tag`) would keep the old agent running under the new
/// chart: the upgrade would change the chart and not the datapath. A `tag` equal to the version
/// being left (with or without the `v`) and an `override` reference ending in `:v<that version>`
/// follow to the step's version; tags of other images (Envoy, Hubble UI, …) never equal it. A
/// digest next to such a tag still names the old image: a warning, never a guess.
fn image_tags_follow(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    let (prev, at) = (ctx.prev, ctx.at);
    if prev == at {
        return Ok(());
    }
    let mut found = Vec::new();
    pinned_images(&Value::Object(ctx.values.clone()), "", prev, &mut found);
    let why = format!(
        "the values pin this image at {prev}; with it the {at} chart would keep running the {prev} image"
    );
    for (path, old, digest) in found {
        let new = match old.as_str() {
            Some(s) if path.ends_with(".override") => {
                s.replacen(&format!(":v{prev}"), &format!(":v{at}"), 1)
            }
            Some(s) if s.starts_with('v') => format!("v{at}"),
            _ => at.to_string(),
        };
        ctx.map_value(&path, json!(new), &why)?;
        if digest {
            ctx.warn(
                Some(&path),
                format!("a digest is pinned next to it and still names the {prev} image: remove it or give the {at} image's digest"),
            );
        }
    }
    Ok(())
}

/// `(path, value, digest pinned)` of every image reference in `v` that names version `prev`.
fn pinned_images(v: &Value, prefix: &str, prev: Version, out: &mut Vec<(String, Value, bool)>) {
    let Value::Object(map) = v else { return };
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let digest_pinned = map.get("useDigest") == Some(&json!(true))
        && map
            .get("digest")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty());
    if let Some(Value::String(t)) = map.get("tag")
        && (t.trim() == format!("v{prev}") || t.trim() == prev.to_string())
    {
        out.push((join("tag"), json!(t.trim()), digest_pinned));
    }
    if let Some(Value::String(o)) = map.get("override") {
        let (reference, digest) = match o.split_once('@') {
            Some((r, _)) => (r, true),
            None => (o.as_str(), false),
        };
        if reference.ends_with(&format!(":v{prev}")) {
            out.push((join("override"), json!(o), digest));
        }
    }
    for (k, child) in map {
        pinned_images(child, &join(k), prev, out);
    }
}

/// Source: the target chart's own values.yaml (bundled from cilium/charts, see
/// tests/data/cilium-values/README.md); removed keys with a known reason say it.
fn prune_unknown(ctx: &mut Ctx<'_>) -> Result<(), MigrateError> {
    let mut unknown = Vec::new();
    walk_unknown(
        &mut ctx.values,
        "",
        ctx.chart,
        ctx.opts.keep_unknown,
        &mut unknown,
    );
    for (path, old) in unknown {
        let reason = KNOWN_REMOVALS
            .iter()
            .find(|(p, _)| path == *p || path.starts_with(&format!("{p}.")))
            .map_or(String::new(), |(_, r)| format!(": {r}"));
        let what = format!("not declared by chart {}'s values.yaml{reason}", ctx.at);
        if ctx.opts.keep_unknown {
            ctx.warn(Some(&path), format!("{what}; kept as asked"));
        } else {
            ctx.warn(Some(&path), format!("{what}; removed (was {old})"));
            ctx.record(ChangeKind::Removed { path, old }, what);
        }
    }
    Ok(())
}

/// Keys removed from the chart whose replacement is known.
const KNOWN_REMOVALS: &[(&str, &str)] = &[
    (
        "externalIPs",
        "removed in 1.17; ExternalIPs are served whenever kubeProxyReplacement is true and the flag was a no-op otherwise (cilium/cilium#39581, #40480)",
    ),
    (
        "hostPort",
        "removed in 1.18; HostPort is served whenever kubeProxyReplacement is true (cilium/cilium#39581, #40480)",
    ),
    (
        "nodePort.enabled",
        "removed in 1.19; NodePort is served whenever kubeProxyReplacement is true, and kube-proxy replacement features can no longer be enabled one by one (cilium/cilium#39581, #40480)",
    ),
];

/// Collect (and unless `keep`, remove) the keys under `map` the chart does not declare. Maps the
/// chart lists children for are checked key by key; others (free-form, `{}`) are taken whole.
fn walk_unknown(
    map: &mut Map<String, Value>,
    prefix: &str,
    chart: &ChartKeys,
    keep: bool,
    out: &mut Vec<(String, Value)>,
) {
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if !chart.declares(&path) {
            let value = if keep {
                map.get(&key).cloned()
            } else {
                map.shift_remove(&key)
            };
            out.extend(value.map(|v| (path, v)));
            continue;
        }
        if !chart.checks_children(&path) {
            continue;
        }
        if let Some(Value::Object(child)) = map.get_mut(&key) {
            let was_empty = child.is_empty();
            walk_unknown(child, &path, chart, keep, out);
            if child.is_empty() && !was_empty {
                map.shift_remove(&key);
            }
        }
    }
}

/// Sort map keys recursively (Helm prints values sorted; diffs stay stable).
fn sort_keys(map: &mut Map<String, Value>) {
    map.sort_keys();
    for v in map.values_mut() {
        if let Value::Object(m) = v {
            sort_keys(m);
        }
    }
}

/// `null` or an empty string: the chart's default applies.
fn is_unset(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

/// Every leaf of a values tree by dotted path; lists, scalars and empty maps are leaves.
fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(child, &p, out);
            }
        }
        Value::Object(_) | Value::Null if prefix.is_empty() => {}
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// A stable, line-oriented diff of two values trees: one `- path: old` / `+ path: new` line per
/// changed leaf (dotted paths, values as JSON), sorted by path, `-` before `+`; empty when equal.
pub fn diff(before: &Value, after: &Value) -> String {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(before, "", &mut a);
    leaves(after, "", &mut b);
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = String::new();
    for p in paths {
        let (old, new) = (a.get(p), b.get(p));
        if old == new {
            continue;
        }
        if let Some(o) = old {
            out.push_str(&format!("- {p}: {o}\n"));
        }
        if let Some(n) = new {
            out.push_str(&format!("+ {p}: {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("test version")
    }

    fn run(values: Value, from: &str, to: &str) -> Result<Migration, MigrateError> {
        migrate(&values, v(from), v(to), &MigrateOptions::default())
    }

    fn ok(values: Value, from: &str, to: &str) -> Migration {
        run(values, from, to).unwrap_or_else(|e| panic!("{from} → {to}: {e}"))
    }

    fn warned(m: &Migration, needle: &str) -> bool {
        m.warnings.iter().any(|w| w.to_string().contains(needle))
    }

    #[test]
    fn tunnel_vxlan_becomes_tunnel_routing_with_protocol() {
        let m = ok(json!({"tunnel": "vxlan"}), "1.13.18", "1.14.19");
        assert_eq!(m.values["routingMode"], json!("tunnel"));
        assert_eq!(m.values["tunnelProtocol"], json!("vxlan"));
        assert!(m.values.get("tunnel").is_none());
        let m = ok(
            json!({"tunnel": "geneve", "tunnelProtocol": ""}),
            "1.13.18",
            "1.14.19",
        );
        assert_eq!(m.values["tunnelProtocol"], json!("geneve"));
        // Still on 1.13: untouched.
        let m = ok(json!({"tunnel": "vxlan"}), "1.12.19", "1.13.18");
        assert_eq!(m.values["tunnel"], json!("vxlan"));
    }

    #[test]
    fn deprecated_tunnel_left_in_1_14_values_is_migrated_on_the_way_to_1_15() {
        let m = ok(
            json!({"tunnel": "disabled", "kubeProxyReplacement": "strict", "ipv4NativeRoutingCIDR": "10.0.0.0/8"}),
            "1.14.19",
            "1.15.19",
        );
        assert_eq!(m.values["routingMode"], json!("native"));
        assert_eq!(m.values["kubeProxyReplacement"], json!(true));
        assert!(m.values.get("tunnel").is_none());
    }

    #[test]
    fn tunnel_conflicting_with_routing_mode_is_refused() {
        let e = run(
            json!({"tunnel": "disabled", "routingMode": "tunnel"}),
            "1.13.18",
            "1.14.19",
        )
        .unwrap_err();
        assert!(matches!(e, MigrateError::Conflict { .. }), "{e}");
        assert!(e.to_string().contains("tunnel: \"disabled\""), "{e}");
        let e = run(
            json!({"tunnel": "vxlan", "tunnelProtocol": "geneve"}),
            "1.13.18",
            "1.14.19",
        )
        .unwrap_err();
        assert!(e.to_string().contains("tunnelProtocol"), "{e}");
        // Agreeing names: the old one is dropped.
        let m = ok(
            json!({"tunnel": "disabled", "routingMode": "native", "ipv4NativeRoutingCIDR": "10.0.0.0/8"}),
            "1.13.18",
            "1.14.19",
        );
        assert_eq!(m.values["routingMode"], json!("native"));
        assert!(m.values.get("tunnel").is_none());
        let e = run(json!({"tunnel": "ipip"}), "1.13.18", "1.14.19").unwrap_err();
        assert!(
            matches!(&e, MigrateError::InvalidValue { path, .. } if path == "tunnel"),
            "{e}"
        );
    }

    #[test]
    fn native_cidr_rename_conflict() {
        let e = run(
            json!({"nativeRoutingCIDR": "10.0.0.0/8", "ipv4NativeRoutingCIDR": "10.1.0.0/16"}),
            "1.11.20",
            "1.12.19",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("nativeRoutingCIDR: \"10.0.0.0/8\" and ipv4NativeRoutingCIDR: \"10.1.0.0/16\" disagree"),
            "{e}"
        );
    }

    #[test]
    fn kube_proxy_replacement_strings() {
        let kpr = |old: Value, from: &str, to: &str| {
            let m = ok(json!({ "kubeProxyReplacement": old }), from, to);
            (m.values["kubeProxyReplacement"].clone(), m)
        };
        assert_eq!(kpr(json!("strict"), "1.13.18", "1.14.19").0, json!(true));
        assert_eq!(kpr(json!("disabled"), "1.13.18", "1.14.19").0, json!(false));
        let (new, m) = kpr(json!("partial"), "1.13.18", "1.14.19");
        assert_eq!(new, json!(false));
        assert!(warned(&m, "partial → false"), "{:?}", m.warnings);
        assert_eq!(kpr(json!("true"), "1.14.19", "1.15.19").0, json!("true"));
        assert_eq!(kpr(json!(true), "1.14.19", "1.15.19").0, json!(true));
        // Still strings on 1.13.
        assert_eq!(
            kpr(json!("strict"), "1.12.19", "1.13.18").0,
            json!("strict")
        );
        // probe is gone in 1.13: disabled there, false from 1.14, with a warning either way.
        let (new, m) = kpr(json!("probe"), "1.12.19", "1.13.18");
        assert_eq!(new, json!("disabled"));
        assert!(warned(&m, "probe (removed in 1.13)"), "{:?}", m.warnings);
        let (new, m) = kpr(json!("probe"), "1.12.19", "1.14.19");
        assert_eq!(new, json!(false));
        assert!(warned(&m, "probe"), "{:?}", m.warnings);
        let e = run(
            json!({"kubeProxyReplacement": "maybe"}),
            "1.13.18",
            "1.14.19",
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected true or false"), "{e}");
    }

    #[test]
    fn disabled_with_features_enabled_warns() {
        let m = ok(
            json!({"kubeProxyReplacement": "disabled", "nodePort": {"enabled": true}}),
            "1.13.18",
            "1.14.19",
        );
        assert!(
            warned(&m, "disabled ignored nodePort.enabled"),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn unset_kube_proxy_replacement_is_made_explicit_from_1_13() {
        let m = ok(json!({}), "1.12.19", "1.13.18");
        assert_eq!(m.values["kubeProxyReplacement"], json!("disabled"));
        assert!(warned(&m, "was not set"));
        let m = ok(json!({}), "1.15.19", "1.16.19");
        assert_eq!(m.values["kubeProxyReplacement"], json!(false));
        let m = ok(json!({}), "1.11.20", "1.12.19");
        assert!(m.values.get("kubeProxyReplacement").is_none());
    }

    #[test]
    fn host_routing_rename_keeps_the_value() {
        let m = ok(json!({"bpf": {"hostRouting": true}}), "1.11.20", "1.12.19");
        assert_eq!(m.values["bpf"], json!({"hostLegacyRouting": true}));
    }

    #[test]
    fn host_services_become_socket_lb() {
        let m = ok(
            json!({"hostServices": {"enabled": true, "protocols": "tcp"}}),
            "1.11.20",
            "1.12.19",
        );
        assert_eq!(m.values["socketLB"], json!({"enabled": true}));
        assert!(m.values.get("hostServices").is_none());
        assert!(warned(&m, "always handles TCP and UDP"), "{:?}", m.warnings);
    }

    #[test]
    fn upgrade_compatibility_default_keep_and_override() {
        let m = ok(json!({}), "1.14.2", "1.15.19");
        assert_eq!(m.values["upgradeCompatibility"], json!("1.14"));
        let m = ok(json!({"upgradeCompatibility": "1.9"}), "1.14.2", "1.15.19");
        assert_eq!(m.values["upgradeCompatibility"], json!("1.9"));
        // A number is ambiguous (1.10 reads as 1.1): refused unless the caller says.
        let e = run(json!({"upgradeCompatibility": 1.1}), "1.14.2", "1.15.19").unwrap_err();
        assert!(e.to_string().contains("quoted minor"), "{e}");
        let opts = MigrateOptions {
            upgrade_compatibility: Some(Minor::new(1, 10)),
            ..MigrateOptions::default()
        };
        let m = migrate(
            &json!({"upgradeCompatibility": 1.1}),
            v("1.14.2"),
            v("1.15.19"),
            &opts,
        )
        .unwrap();
        assert_eq!(m.values["upgradeCompatibility"], json!("1.10"));
    }

    #[test]
    fn free_form_maps_keep_their_keys() {
        let values = json!({
            "podAnnotations": {"team": "net"},
            "nodeSelector": {"disktype": "ssd"},
            "resources": {"limits": {"memory": "2Gi"}},
            "operator": {"podLabels": {"a": "b"}, "nodeSelector": {"zone": "x"}},
            "loadBalancer": {"nonsense": 1},
        });
        let m = ok(values, "1.19.6", "1.20.0");
        assert_eq!(m.values["podAnnotations"], json!({"team": "net"}));
        assert_eq!(m.values["nodeSelector"], json!({"disktype": "ssd"}));
        assert_eq!(m.values["resources"]["limits"]["memory"], json!("2Gi"));
        assert_eq!(
            m.values["operator"],
            json!({"nodeSelector": {"zone": "x"}, "podLabels": {"a": "b"}})
        );
        // A structured map is checked key by key; emptied, it goes.
        assert!(m.values.get("loadBalancer").is_none(), "{}", m.values);
        assert!(warned(&m, "loadBalancer.nonsense"));
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let e = run(json!([1, 2]), "1.14.19", "1.15.19").unwrap_err();
        assert!(e.to_string().contains("(root) is a list"), "{e}");
        let m = ok(Value::Null, "1.14.19", "1.15.19");
        assert_eq!(m.original, json!({}));
        let e = run(
            json!({"bpf": true, "hostServices": {"enabled": true}, "socketLB": 3}),
            "1.11.20",
            "1.12.19",
        )
        .unwrap_err();
        assert!(e.to_string().contains("socketLB is the number 3"), "{e}");
        let e = run(json!({}), "1.15.19", "1.14.19").unwrap_err();
        assert!(matches!(e, MigrateError::Downgrade { .. }), "{e}");
        let e = run(json!({}), "1.20.0", "1.21.0").unwrap_err();
        assert!(
            e.to_string()
                .contains("no chart values.yaml for Cilium 1.21"),
            "{e}"
        );
        let e = run(json!({}), "1.20.0", "2.0.0").unwrap_err();
        assert!(matches!(e, MigrateError::MajorChange { .. }), "{e}");
    }

    #[test]
    fn other_chart_data_can_be_supplied() {
        let mut charts = Charts::new();
        charts.insert(
            v("1.21.0"),
            "kubeProxyReplacement: \"false\"\nupgradeCompatibility: null\nnewThing: {}\n",
        );
        charts.insert(
            v("1.20.0"),
            "kubeProxyReplacement: \"false\"\nupgradeCompatibility: null\n",
        );
        let m = migrate_with(
            &json!({"kubeProxyReplacement": true, "newThing": {"x": 1}, "old": 1}),
            v("1.20.0"),
            v("1.21.3"),
            &MigrateOptions::default(),
            &charts,
        )
        .unwrap();
        assert_eq!(
            m.values,
            json!({"kubeProxyReplacement": true, "newThing": {"x": 1}, "upgradeCompatibility": "1.20"})
        );
        assert!(
            warned(&m, "keys checked against chart 1.21.0"),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn same_minor_migration_only_prunes_and_records_compatibility() {
        let m = ok(
            json!({"kubeProxyReplacement": true, "routingMode": "native", "ipv4NativeRoutingCIDR": "10.0.0.0/8"}),
            "1.19.2",
            "1.19.6",
        );
        assert_eq!(m.diff(), "+ upgradeCompatibility: \"1.19\"\n");
    }

    #[test]
    fn diff_of_equal_trees_is_empty_and_lists_are_leaves() {
        let a = json!({"devices": ["eth0"], "x": {"y": 1}});
        assert_eq!(diff(&a, &a), "");
        let b = json!({"devices": ["eth0", "eth1"], "x": {"y": 1, "z": {}}});
        assert_eq!(
            diff(&a, &b),
            "- devices: [\"eth0\"]\n+ devices: [\"eth0\",\"eth1\"]\n+ x.z: {}\n"
        );
    }

    #[test]
    fn reuse_values() {
        assert!(refuse_reuse_values(v("1.18.1"), v("1.18.12")).is_ok());
        assert!(refuse_reuse_values(v("1.18.12"), v("1.19.6")).is_err());
    }
}
