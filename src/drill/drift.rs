//! Config drift across an upgrade: which agent settings (the `cilium-config` ConfigMap) change
//! when the release moves from what runs now to the target chart with the migrated values — also
//! when the values do not change, because a new chart has new defaults (1.13 turned
//! `enable-bpf-clock-probe` off, 1.18 `enable-l2-neigh-discovery`; 1.18.11 → 1.19.7 adds
//! `packetization-layer-pmtud-mode` and drops `enable-svc-source-range-check`, rendered here from
//! the real charts).
//!
//! The "before" side is what Helm deployed (`helm get manifest`), not a re-rendering: that is what
//! the agents read today. The "after" side is `helm template` of the target chart with the values
//! the upgrade will pass. Each change that touches the datapath says why, and where the target
//! chart's own ConfigMap template takes a changed key from one value, that value is the pin that
//! keeps the old setting ([`Drift::pins`]), checked by rendering again ([`Drift::pins_that_hold`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The agent settings of one rendering: `cilium-config`'s `data`, every value as the text the
/// agent reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentConfig(pub BTreeMap<String, String>);

/// Why a rendering could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// Not YAML documents.
    #[error("{what}: not a Kubernetes manifest: {source}")]
    Yaml {
        /// Which rendering.
        what: String,
        /// The parser's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// No `cilium-config` ConfigMap among the documents.
    #[error("{what}: no ConfigMap cilium-config among {documents} documents")]
    NoConfigMap {
        /// Which rendering.
        what: String,
        /// How many documents it had.
        documents: usize,
    },
}

#[derive(Deserialize)]
struct Doc {
    kind: Option<String>,
    metadata: Option<Meta>,
    data: Option<BTreeMap<String, Scalar>>,
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
}

/// A ConfigMap value as written: charts quote them, but `extraConfig` passes `true` or `3` through.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

impl AgentConfig {
    /// `cilium-config` out of a multi-document manifest (`helm template` or `helm get manifest`).
    /// `what` names the rendering in errors.
    pub fn from_manifest(what: &str, manifest: &str) -> Result<Self, DriftError> {
        let docs: Vec<Option<Doc>> =
            serde_saphyr::from_multiple(manifest).map_err(|source| DriftError::Yaml {
                what: what.to_string(),
                source: Box::new(source),
            })?;
        let documents = docs.len();
        docs.into_iter()
            .flatten()
            .find(|d| {
                d.kind.as_deref() == Some("ConfigMap")
                    && d.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some("cilium-config")
            })
            .map(|d| {
                AgentConfig(
                    d.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.text()))
                        .collect(),
                )
            })
            .ok_or_else(|| DriftError::NoConfigMap {
                what: what.to_string(),
                documents,
            })
    }

    /// One setting.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// How a setting differs between the two renderings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `cilium-config` key.
    pub key: String,
    /// Value now (absent: the agent uses its built-in default).
    pub before: Option<String>,
    /// Value after the upgrade.
    pub after: Option<String>,
    /// Why the key touches the datapath, if it does.
    pub datapath: Option<&'static str>,
    /// How to keep the old behaviour, if a value or `extraConfig` can.
    pub pin: Option<Pin>,
}

/// The value that keeps a setting's old value: the target chart's ConfigMap template writes the
/// key from this value. Only changed keys get one: a key the target chart stops writing usually
/// means the new agent dropped or renamed the option (putting it back through `extraConfig`
/// would pass the agent a flag it may not know), and a key it starts writing had the agent's
/// built-in default before, which the ConfigMap does not show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    /// Dotted Helm value path, e.g. `l2NeighDiscovery.enabled`.
    pub path: String,
    /// The old setting, typed as a values file wants it.
    pub value: serde_json::Value,
}

/// The sizes and Maglev settings compared side by side whether or not they change: a different
/// map size or hash seed after the upgrade is where established connections go missing.
pub const SIZING_KEYS: &[&str] = &[
    "bpf-ct-global-tcp-max",
    "bpf-ct-global-any-max",
    "bpf-nat-global-max",
    "bpf-neigh-global-max",
    "bpf-policy-map-max",
    "bpf-lb-map-max",
    "bpf-map-dynamic-size-ratio",
    "bpf-lb-maglev-table-size",
    "bpf-lb-maglev-hash-seed",
];

/// Rules that mark a key as touching the datapath, first match wins: (prefix or exact key, why).
const DATAPATH: &[(&str, &str)] = &[
    (
        "bpf-lb-maglev-",
        "Maglev backend selection: a new table or seed re-maps flows to backends",
    ),
    ("bpf-lb-", "service load-balancing in BPF"),
    (
        "bpf-ct-",
        "connection-tracking map size: resized maps lose established entries",
    ),
    ("bpf-nat-", "NAT map size"),
    ("bpf-neigh-", "neighbour map size"),
    ("bpf-policy-map-", "policy map size"),
    (
        "bpf-map-dynamic-size-ratio",
        "sizes every BPF map from memory",
    ),
    ("bpf-", "BPF datapath setting"),
    ("enable-bpf-", "BPF datapath feature"),
    ("kube-proxy-replacement", "kube-proxy replacement"),
    (
        "enable-l2-neigh-discovery",
        "L2 neighbour discovery (ARP/ND for nodes' next hops)",
    ),
    ("routing-mode", "routing mode"),
    ("tunnel", "encapsulation"),
    ("auto-direct-node-routes", "native routing between nodes"),
    ("direct-routing-", "the device DSR and NodePort use"),
    ("devices", "devices the datapath attaches to"),
    ("enable-ipv4-masquerade", "masquerading"),
    ("enable-ipv6-masquerade", "masquerading"),
    (
        "enable-host-legacy-routing",
        "host routing (BPF or the kernel stack)",
    ),
    ("enable-endpoint-routes", "per-endpoint routes"),
    ("enable-xdp-", "XDP"),
    ("node-port-", "NodePort"),
    ("enable-node-port", "NodePort"),
    ("enable-health-check-nodeport", "NodePort health checks"),
    (
        "enable-svc-source-range-check",
        "loadBalancerSourceRanges enforcement",
    ),
    (
        "enable-no-service-endpoints-routable",
        "traffic to services without endpoints",
    ),
    ("enable-internal-traffic-policy", "internalTrafficPolicy"),
    ("enable-service-topology", "topology-aware routing"),
    ("enable-session-affinity", "service session affinity"),
    ("enable-socket-lb", "socket-level load-balancing"),
    ("enable-host-firewall", "host firewall"),
    ("enable-bandwidth-manager", "bandwidth manager (EDT)"),
    ("enable-local-redirect-policy", "local redirect policy"),
    (
        "install-no-conntrack-iptables-rules",
        "conntrack bypass rules",
    ),
    ("packetization-layer-pmtud-mode", "path MTU discovery"),
    ("mtu", "MTU"),
    ("datapath-mode", "datapath mode (veth, netkit)"),
    ("enable-wireguard", "encryption"),
    ("enable-ipsec", "encryption"),
    ("enable-policy", "policy enforcement"),
];

/// Why `key` touches the datapath, if it does.
pub fn datapath_reason(key: &str) -> Option<&'static str> {
    DATAPATH.iter().find_map(|(rule, why)| {
        let hit = if rule.ends_with('-') {
            key.starts_with(rule)
        } else {
            key == *rule || key.starts_with(&format!("{rule}-"))
        };
        hit.then_some(*why)
    })
}

/// Which value sets which key, read from a chart's `templates/cilium-configmap.yaml`: lines of
/// the plain form `  key: {{ .Values.a.b | quote }}`. A key written from exactly one value path
/// (other branches may compute a default, as `enable-bpf-clock-probe` does) gets it; keys written
/// only from computed variables, or from two different values, get none. A candidate is no
/// promise — the template may guard it with another condition — so a drill renders again with
/// the pins and keeps only those that took effect.
pub fn value_paths(configmap_template: &str) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in configmap_template.lines() {
        let Some((key, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            continue;
        }
        let paths = seen.entry(key.to_string()).or_default();
        let plain = rest
            .trim()
            .strip_prefix("{{")
            .and_then(|r| r.strip_suffix("}}"))
            .map(|r| r.trim_matches('-').trim())
            .and_then(|r| {
                let (expr, filter) = r.split_once('|').unwrap_or((r, ""));
                let filter = filter.trim();
                (filter.is_empty() || filter == "quote")
                    .then(|| expr.trim().strip_prefix(".Values."))
                    .flatten()
            })
            .filter(|p| {
                p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
            });
        if let Some(p) = plain
            && !paths.iter().any(|q| q == p)
        {
            paths.push(p.to_string());
        }
    }
    seen.into_iter()
        .filter_map(|(k, mut p)| (p.len() == 1).then(|| (k, p.remove(0))))
        .collect()
}

/// The differences between two renderings, with reasons and pins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Every key whose value differs, in key order.
    pub changes: Vec<Change>,
    /// [`SIZING_KEYS`] before and after, changed or not.
    pub sizing: Vec<(String, Option<String>, Option<String>)>,
}

/// Keys whose agent flag defaults to empty, so that a chart starting (or stopping) to write them
/// as `""` changes nothing: the first real drill (1.19.7 -> 1.20.2, whose chart writes
/// `devices: ""` by default) flagged exactly that as a datapath change. Each is checked in the
/// agent's flag definition of 1.19 and 1.20.
const EMPTY_BY_DEFAULT: &[&str] = &[
    // pkg/datapath/linux/devices_controller.go: StringSlice, default [] (detect the devices).
    "devices",
    // daemon/cmd/daemon_main.go: String, default "".
    "ipv4-native-routing-cidr",
];

/// The same setting for the agent: equal, or unset against `""` where the flag's default is empty.
fn same_setting(key: &str, before: Option<&String>, after: Option<&String>) -> bool {
    let empty = |v: Option<&String>| v.is_none_or(|v| v.is_empty());
    before == after || (EMPTY_BY_DEFAULT.contains(&key) && empty(before) && empty(after))
}

/// Compare; `paths` is [`value_paths`] of the target chart (empty: no value pins).
pub fn diff(before: &AgentConfig, after: &AgentConfig, paths: &BTreeMap<String, String>) -> Drift {
    let mut keys: Vec<&String> = before.0.keys().chain(after.0.keys()).collect();
    keys.sort();
    keys.dedup();
    let changes = keys
        .into_iter()
        .filter_map(|k| {
            let (b, a) = (before.0.get(k), after.0.get(k));
            if same_setting(k, b, a) {
                return None;
            }
            let pin = match (b, a) {
                (Some(old), Some(_)) => paths.get(k).map(|p| Pin {
                    path: p.clone(),
                    value: typed(old),
                }),
                _ => None,
            };
            Some(Change {
                key: k.clone(),
                before: b.cloned(),
                after: a.cloned(),
                datapath: datapath_reason(k),
                pin,
            })
        })
        .collect();
    let sizing = SIZING_KEYS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                before.get(k).map(str::to_string),
                after.get(k).map(str::to_string),
            )
        })
        .collect();
    Drift { changes, sizing }
}

/// A ConfigMap text as a values-file scalar: `true`/`false` and integers typed, the rest text.
fn typed(s: &str) -> serde_json::Value {
    match s {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        _ => s
            .parse::<i64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| serde_json::Value::String(s.to_string())),
    }
}

impl Drift {
    /// The record of one step (`pinned`: the keys the upgrade's values keep at their old value).
    pub fn record(
        &self,
        from: &str,
        to: &str,
        pinned: Vec<String>,
    ) -> crate::report::record::ConfigDrift {
        use crate::report::record::{ConfigChange, ConfigDrift};
        ConfigDrift {
            from: from.to_string(),
            to: to.to_string(),
            changes: self
                .changes
                .iter()
                .map(|c| ConfigChange {
                    key: c.key.clone(),
                    before: c.before.clone(),
                    after: c.after.clone(),
                    datapath: c.datapath.map(str::to_string),
                    pin: c.pin.as_ref().map(|p| format!("{}={}", p.path, p.value)),
                })
                .collect(),
            sizing: self
                .sizing
                .iter()
                .map(|(k, b, a)| ConfigChange {
                    key: k.clone(),
                    before: b.clone(),
                    after: a.clone(),
                    datapath: datapath_reason(k).map(str::to_string),
                    pin: None,
                })
                .collect(),
            pinned,
        }
    }

    /// The changes that touch the datapath.
    pub fn datapath(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.datapath.is_some())
    }

    /// Values that keep the old setting of every change that has a pin, as a values tree to
    /// merge into the migrated values.
    pub fn pins(&self) -> serde_json::Value {
        self.pins_where(|_| true)
    }

    /// [`Drift::pins`] of these keys only (those [`Drift::pins_that_hold`] found).
    pub fn pins_of(&self, keys: &[String]) -> serde_json::Value {
        self.pins_where(|k| keys.iter().any(|x| x == k))
    }

    fn pins_where(&self, keep: impl Fn(&str) -> bool) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for c in self.changes.iter().filter(|c| keep(&c.key)) {
            if let Some(pin) = &c.pin {
                set_path(&mut root, &pin.path, pin.value.clone());
            }
        }
        serde_json::Value::Object(root)
    }

    /// The changes whose pin took effect: `pinned` is the target rendered again with
    /// [`Drift::pins`] merged into the values; a pin counts when the key is back to its old value.
    pub fn pins_that_hold(&self, pinned: &AgentConfig) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| c.pin.is_some() && pinned.0.get(&c.key) == c.before.as_ref())
            .map(|c| c.key.clone())
            .collect()
    }

    /// Plain lines for the terminal and the report: one per change, datapath first.
    pub fn lines(&self) -> Vec<String> {
        let show = |v: &Option<String>| {
            v.as_deref()
                .map_or("(unset)".to_string(), |v| format!("{v:?}"))
        };
        let mut out = Vec::new();
        let (dp, other): (Vec<&Change>, Vec<&Change>) =
            self.changes.iter().partition(|c| c.datapath.is_some());
        for c in dp.iter().chain(other.iter()) {
            let mut l = format!("{}: {} -> {}", c.key, show(&c.before), show(&c.after));
            if let Some(why) = c.datapath {
                l.push_str(&format!("  [datapath: {why}]"));
            }
            if let Some(p) = &c.pin {
                l.push_str(&format!("  pin: {}={}", p.path, p.value));
            }
            out.push(l);
        }
        out
    }
}

/// Set a dotted path in a JSON object tree, creating maps on the way (an existing scalar on the
/// way is replaced: the pin wins).
fn set_path(
    root: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    value: serde_json::Value,
) {
    let mut parts = path.split('.').peekable();
    let mut cur = root;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_string(), value);
            return;
        }
        let next = cur
            .entry(p.to_string())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if !next.is_object() {
            *next = serde_json::Value::Object(serde_json::Map::new());
        }
        let serde_json::Value::Object(m) = next else {
            return;
        };
        cur = m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "---\n# Source: cilium/templates/cilium-agent/serviceaccount.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: cilium\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cilium-config\n  namespace: kube-system\ndata:\n  enable-bpf-clock-probe: \"true\"\n  enable-l2-neigh-discovery: \"true\"\n  enable-svc-source-range-check: \"true\"\n  bpf-lb-maglev-table-size: \"16381\"\n  mesh-auth-enabled: \"true\"\n  cluster-name: default\n";
    const AFTER: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cilium-config\ndata:\n  enable-bpf-clock-probe: \"false\"\n  enable-l2-neigh-discovery: \"false\"\n  packetization-layer-pmtud-mode: blackhole\n  bpf-lb-maglev-table-size: \"16381\"\n  mesh-auth-enabled: \"false\"\n  cluster-name: default\n  extra-from-values: true\n";
    const TEMPLATE: &str = "{{- if hasKey .Values \"bpfClockProbe\" }}\n  enable-bpf-clock-probe: {{ .Values.bpfClockProbe | quote }}\n{{- else if eq $defaultBpfClockProbe \"true\" }}\n  enable-bpf-clock-probe: {{ $defaultBpfClockProbe | quote }}\n{{- end }}\n  enable-l2-neigh-discovery: {{ .Values.l2NeighDiscovery.enabled | quote }}\n  mesh-auth-enabled: {{ .Values.authentication.enabled | quote }}\n  bpf-ct-global-tcp-max: \"{{ $bpfCtTcpMax | int }}\"\n  routing-mode: {{ .Values.routingMode | default \"tunnel\" | quote }}\n";

    #[test]
    fn reads_the_configmap_out_of_a_manifest() {
        let c = AgentConfig::from_manifest("before", BEFORE).expect("config");
        assert_eq!(c.get("enable-bpf-clock-probe"), Some("true"));
        assert_eq!(c.get("cluster-name"), Some("default"));
        let a = AgentConfig::from_manifest("after", AFTER).expect("config");
        assert_eq!(
            a.get("extra-from-values"),
            Some("true"),
            "unquoted extraConfig"
        );
        let e = AgentConfig::from_manifest("x", "kind: Service\nmetadata: {name: a}\n")
            .expect_err("none");
        assert!(
            e.to_string().contains("no ConfigMap cilium-config among 1"),
            "{e}"
        );
        let e = AgentConfig::from_manifest("x", "a: [\n").expect_err("bad");
        assert!(
            e.to_string().starts_with("x: not a Kubernetes manifest"),
            "{e}"
        );
    }

    #[test]
    fn value_paths_only_for_plain_single_sources() {
        let p = value_paths(TEMPLATE);
        assert_eq!(
            p.get("enable-l2-neigh-discovery").map(String::as_str),
            Some("l2NeighDiscovery.enabled")
        );
        assert_eq!(
            p.get("mesh-auth-enabled").map(String::as_str),
            Some("authentication.enabled")
        );
        // One branch from the value, another from a computed default: the value.
        assert_eq!(
            p.get("enable-bpf-clock-probe").map(String::as_str),
            Some("bpfClockProbe")
        );
        // Two different values: none.
        let two = value_paths("  a-b: {{ .Values.x | quote }}\n  a-b: {{ .Values.y | quote }}\n");
        assert!(two.is_empty(), "{two:?}");
        // Computed or defaulted: no pin rather than a wrong one.
        assert!(!p.contains_key("bpf-ct-global-tcp-max"));
        assert!(!p.contains_key("routing-mode"));
    }

    #[test]
    fn diff_names_datapath_changes_and_their_pins() {
        let b = AgentConfig::from_manifest("before", BEFORE).expect("before");
        let a = AgentConfig::from_manifest("after", AFTER).expect("after");
        let d = diff(&b, &a, &value_paths(TEMPLATE));
        let keys: Vec<&str> = d.changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "enable-bpf-clock-probe",
                "enable-l2-neigh-discovery",
                "enable-svc-source-range-check",
                "extra-from-values",
                "mesh-auth-enabled",
                "packetization-layer-pmtud-mode"
            ]
        );
        let dp: Vec<&str> = d.datapath().map(|c| c.key.as_str()).collect();
        assert_eq!(
            dp,
            [
                "enable-bpf-clock-probe",
                "enable-l2-neigh-discovery",
                "enable-svc-source-range-check",
                "packetization-layer-pmtud-mode"
            ]
        );
        assert_eq!(
            d.pins(),
            serde_json::json!({
                "bpfClockProbe": true,
                "l2NeighDiscovery": {"enabled": true},
                "authentication": {"enabled": true}
            })
        );
        assert_eq!(
            d.pins_of(&["mesh-auth-enabled".to_string()]),
            serde_json::json!({"authentication": {"enabled": true}})
        );
        // Dropped and new keys get no pin.
        let dropped = d
            .changes
            .iter()
            .find(|c| c.key == "enable-svc-source-range-check");
        assert!(dropped.is_some_and(|c| c.pin.is_none() && c.after.is_none()));
        // Unchanged sizing is still shown side by side.
        assert!(d.sizing.contains(&(
            "bpf-lb-maglev-table-size".into(),
            Some("16381".into()),
            Some("16381".into())
        )));
        let lines = d.lines();
        assert!(
            lines[0].starts_with("enable-bpf-clock-probe: \"true\" -> \"false\"  [datapath:"),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("pin: l2NeighDiscovery.enabled=true")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("packetization-layer-pmtud-mode: (unset) -> \"blackhole\"")),
            "{lines:?}"
        );
    }

    #[test]
    fn an_empty_value_where_the_agent_default_is_empty_is_no_change() {
        let cm = |data: &str| {
            AgentConfig::from_manifest(
                "x",
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cilium-config\ndata:\n{data}"
                ),
            )
            .expect("configmap")
        };
        let before = cm("  routing-mode: native\n  tunnel-protocol: vxlan\n");
        let after = cm(
            "  routing-mode: native\n  devices: \"\"\n  ipv4-native-routing-cidr: \"\"\n  tunnel-protocol: \"\"\n",
        );
        let d = diff(&before, &after, &BTreeMap::new());
        let keys: Vec<&str> = d.changes.iter().map(|c| c.key.as_str()).collect();
        // `tunnel-protocol` defaults to vxlan in the agent: "" is a change there.
        assert_eq!(keys, ["tunnel-protocol"]);
        // A real value is a change, in both directions.
        let set = cm("  routing-mode: native\n  devices: eth0\n  tunnel-protocol: vxlan\n");
        let keys: Vec<String> = diff(&set, &after, &BTreeMap::new())
            .changes
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(keys, ["devices", "tunnel-protocol"]);
    }

    #[test]
    fn datapath_rules() {
        assert!(datapath_reason("bpf-lb-maglev-hash-seed").is_some_and(|w| w.contains("Maglev")));
        assert!(datapath_reason("kube-proxy-replacement-healthz-bind-address").is_some());
        assert!(datapath_reason("tunnel-protocol").is_some());
        assert_eq!(datapath_reason("cluster-name"), None);
        assert_eq!(datapath_reason("mesh-auth-enabled"), None);
        assert_eq!(datapath_reason("mtu-extra"), Some("MTU"));
        assert_eq!(datapath_reason("devicesx"), None);
    }
}
