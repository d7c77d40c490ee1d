//! The Kubernetes half of a drill (`drill.kubernetes: {from, to}`): which Kubernetes minors each
//! Cilium minor supports, the one-minor-at-a-time step kubeadm allows, the order of the Cilium
//! and Kubernetes upgrades, the worker batches, and the node commands of kubeadm's upgrade
//! procedure (`kubeadm upgrade apply` on the first control plane, `kubeadm upgrade node` on the
//! others; drain, kubelet, uncordon one batch at a time).
//!
//! Every upgrade runs kubeadm with an `UpgradeConfiguration` that skips the kube-proxy addon:
//! kubeadm 1.35's `upgrade apply` re-creates kube-proxy unless the cluster's stored
//! configuration says `proxy.disabled` (clusters first set up with v1beta3 never do;
//! kubernetes/kubeadm#1318). The drill checks afterwards all the same.

use super::path::Minor;
use crate::cilium::compat;
use crate::render::kubelet::BIN_DIR;
use crate::spec::Version;
use crate::ssh::shell::quote;
use std::fmt;

/// Oldest Kubernetes whose upgrade the drill drives: `UpgradeConfiguration` (kubeadm's v1beta4
/// API) is how it tells kubeadm to skip kube-proxy, re-apply `kubeadm_patches` and wait longer.
pub const OLDEST_TARGET: Minor = Minor::new(1, 31);

/// Which half of a drill runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Cilium's steps, then Kubernetes (the usual way: the new Cilium supports the new
    /// Kubernetes, the old one may not).
    CiliumFirst,
    /// Kubernetes, then Cilium (the new Cilium does not support the old Kubernetes).
    KubernetesFirst,
}

/// The start or the end of a drill is a pair Cilium's table refuses ([`compat::Compat::Older`]).
/// (When both are fine, Kubernetes first always is: the middle pair has the old Cilium with a
/// newer Kubernetes than the start, which is never older than Cilium's oldest.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompatError(pub String);

/// The order in which a drill upgrades Cilium (`cilium`: from, to) and Kubernetes (`k8s`) so
/// that no pair the cluster runs at — the start, the middle, the end — is one Cilium's
/// compatibility table refuses ([`compat::check`]: an older Kubernetes than tested). Cilium
/// first unless only Kubernetes first avoids a refused pair, or (both avoiding it) only
/// Kubernetes first stays on tested pairs. Returns the order and a warning per untested pair
/// on it.
pub fn order(
    cilium: (Version, Version),
    k8s: (Version, Version),
) -> Result<(Order, Vec<String>), CompatError> {
    for (c, k) in [(cilium.0, k8s.0), (cilium.1, k8s.1)] {
        let p = compat::Pair::new(c, k);
        if p.compat.refused() {
            return Err(CompatError(p.to_string()));
        }
    }
    let pairs = |o: Order| match o {
        Order::CiliumFirst => [(cilium.0, k8s.0), (cilium.1, k8s.0), (cilium.1, k8s.1)],
        Order::KubernetesFirst => [(cilium.0, k8s.0), (cilium.0, k8s.1), (cilium.1, k8s.1)],
    };
    let judge = |o: Order| {
        let ps: Vec<compat::Pair> = pairs(o)
            .into_iter()
            .map(|(c, k)| compat::Pair::new(c, k))
            .collect();
        let refused = ps
            .iter()
            .find(|p| p.compat.refused())
            .map(|p| p.to_string());
        let mut warnings: Vec<String> = ps
            .iter()
            .filter(|p| p.compat.warns())
            .map(|p| p.to_string())
            .collect();
        warnings.dedup();
        (refused, warnings)
    };
    let (c_refused, c_warn) = judge(Order::CiliumFirst);
    let (k_refused, k_warn) = judge(Order::KubernetesFirst);
    match (c_refused, k_refused) {
        (None, None) if !c_warn.is_empty() && k_warn.is_empty() => {
            Ok((Order::KubernetesFirst, k_warn))
        }
        (None, _) => Ok((Order::CiliumFirst, c_warn)),
        (Some(_), None) => Ok((Order::KubernetesFirst, k_warn)),
        (Some(refused), Some(_)) => Err(CompatError(refused)),
    }
}

/// Why a Kubernetes version change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not newer.
    #[error("Kubernetes {to} is not newer than {from}: kubeadm does not downgrade")]
    NotNewer {
        /// From.
        from: Version,
        /// To.
        to: Version,
    },
    /// More than one minor.
    #[error(
        "kubeadm upgrades one minor at a time: {from} → {to} skips {skipped}; drill {from} → the latest {skipped}.x first"
    )]
    SkipsMinor {
        /// From.
        from: Version,
        /// To.
        to: Version,
        /// The first skipped minor.
        skipped: Minor,
    },
    /// Older than the drill drives.
    #[error(
        "Kubernetes {to} is older than {OLDEST_TARGET}: the drill drives kubeadm through its v1beta4 UpgradeConfiguration (kubeadm 1.31+)"
    )]
    TooOld {
        /// To.
        to: Version,
    },
    /// A major change.
    #[error("Kubernetes {from} → {to} changes the major version")]
    Major {
        /// From.
        from: Version,
        /// To.
        to: Version,
    },
}

/// Check a Kubernetes version change: newer, same major, at most one minor, target 1.31+.
pub fn check_path(from: Version, to: Version) -> Result<(), PathError> {
    if from.major != to.major {
        return Err(PathError::Major { from, to });
    }
    if to <= from {
        return Err(PathError::NotNewer { from, to });
    }
    if to.minor > from.minor + 1 {
        return Err(PathError::SkipsMinor {
            from,
            to,
            skipped: Minor::new(from.major, from.minor + 1),
        });
    }
    if Minor::new(to.major, to.minor) < OLDEST_TARGET {
        return Err(PathError::TooOld { to });
    }
    Ok(())
}

/// Workers in batches of `size` (inventory order; at least one per batch).
pub fn batches<T: Clone>(workers: &[T], size: u32) -> Vec<Vec<T>> {
    let size = usize::try_from(size.max(1)).unwrap_or(usize::MAX);
    workers.chunks(size).map(<[T]>::to_vec).collect()
}

/// Where the target's kubeadm, kubelet and kubectl wait on a node until their turn.
pub fn stage_dir(v: Version) -> String {
    format!("/var/cache/kubedrill/kubernetes/v{v}")
}

/// The `UpgradeConfiguration` kubedrill writes on every node before kubeadm runs.
pub const UPGRADE_CONFIG: &str = "/etc/kubernetes/kubedrill-upgrade.yaml";

/// The kubeconfig kubectl uses on the first control plane.
const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// What a node runs in kubeadm's procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// `kubeadm upgrade apply` (the cluster's control plane moves here).
    FirstControlPlane,
    /// `kubeadm upgrade node` on another control plane.
    ControlPlane,
    /// `kubeadm upgrade node` on a worker.
    Worker,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::FirstControlPlane => "first control plane",
            NodeKind::ControlPlane => "control plane",
            NodeKind::Worker => "worker",
        })
    }
}

fn install(v: Version, tools: &[&str]) -> String {
    tools
        .iter()
        .map(|t| {
            format!(
                "install -m 0755 {} {}\n",
                quote(&format!("{}/{t}", stage_dir(v))),
                quote(&format!("{BIN_DIR}/{t}"))
            )
        })
        .collect()
}

/// `kubeadm upgrade plan` with the target's kubeadm, once before `upgrade apply` on the first
/// control plane: read-only (its own health checks and the versions it would move to), kept in
/// the run record, never fatal — and not repeated with each `apply` run again, whose own
/// pre-flight runs the same checks (on a busy node each plan costs a Job and a minute).
pub fn plan_script(v: Version) -> String {
    let mut s = String::from("set -e\n");
    s.push_str(&install(v, &["kubeadm"]));
    s.push_str(&format!(
        "echo '== kubeadm upgrade plan'\nkubeadm upgrade plan --config {UPGRADE_CONFIG} 2>&1 || true\n"
    ));
    s
}

/// kubeadm's part on a node: the target's kubeadm installed, then `kubeadm upgrade apply`
/// (first control plane, after [`plan_script`]) or `kubeadm upgrade node`. Idempotent: kubeadm
/// says so when the node is already there, so a run that failed can be run again.
pub fn kubeadm_script(v: Version, kind: NodeKind) -> String {
    let mut s = String::from("set -e\n");
    s.push_str(&install(v, &["kubeadm"]));
    match kind {
        NodeKind::FirstControlPlane => {
            s.push_str(&format!(
                "echo '== kubeadm upgrade apply'\nkubeadm upgrade apply --config {UPGRADE_CONFIG} --yes 2>&1\n"
            ));
        }
        NodeKind::ControlPlane | NodeKind::Worker => {
            s.push_str(&format!(
                "echo '== kubeadm upgrade node'\nkubeadm upgrade node --config {UPGRADE_CONFIG} 2>&1\n"
            ));
        }
    }
    s
}

/// The target's kubelet and kubectl installed and the kubelet restarted (the node is drained).
pub fn kubelet_script(v: Version) -> String {
    let mut s = String::from("set -e\n");
    s.push_str(&install(v, &["kubelet", "kubectl"]));
    s.push_str("systemctl daemon-reload\nsystemctl restart kubelet\n");
    s
}

/// `kubectl drain` of `node`, run on the first control plane. The drill's own probe pods stay
/// (`--pod-selector` leaves pods with [`super::layout::ROLE_LABEL`] alone): they measure the
/// datapath through the node's upgrade; evicting them would measure their rescheduling instead.
pub fn drain_script(node: &str, timeout_secs: u64) -> String {
    format!(
        "kubectl --kubeconfig {ADMIN_CONF} drain {} --ignore-daemonsets --delete-emptydir-data --pod-selector {} --timeout {timeout_secs}s 2>&1\n",
        quote(node),
        quote(&format!("!{}", super::layout::ROLE_LABEL)),
    )
}

/// `kubectl uncordon` of `node`, run on the first control plane.
pub fn uncordon_script(node: &str) -> String {
    format!(
        "kubectl --kubeconfig {ADMIN_CONF} uncordon {} 2>&1\n",
        quote(node)
    )
}

/// What kubeadm prints when only a busy node failed it — the API server overloaded or restarting
/// (client-go's timeouts; Helm's list, [`crate::cilium::helm::TRANSIENT_API_ERRORS`]), or the
/// container runtime not answering kubeadm's pre-flight in time. Seen on the lab with cp1 at load
/// 23–31: `TLS handshake timeout` reading the `kubeadm-config` ConfigMap at the very start of
/// `kubeadm upgrade apply`; `Client.Timeout exceeded while awaiting headers`; and `[ERROR
/// ContainerRuntimeVersion]: could not connect to the container runtime: … DeadlineExceeded`
/// right after the stage imported the new images; and client-go's `unexpected error when reading
/// response body. Please retry. Original error: context deadline exceeded` — the API server's
/// answer cut off (the ninth drill, reading `kubeadm-config` before anything changed).
pub const TRANSIENT_KUBEADM_ERRORS: &[&str] = &[
    "net/http: TLS handshake timeout",
    "Client.Timeout exceeded while awaiting headers",
    "request canceled (Client.Timeout",
    "connect: connection refused",
    "could not connect to the container runtime",
    "unexpected error when reading response body. Please retry",
];

/// How long kubedrill lets one `kubeadm upgrade apply`/`node` run before stopping it: never
/// shorter than kubeadm's own waits. kubeadm waits for each static pod it replaces (etcd, API
/// server, controller manager, scheduler: the hash change, then the component's health, each
/// bounded by the `kubedrill_kubeadm_timeout` given to it) and rolls that component back itself
/// when a wait fails; stopping it earlier leaves a half-upgraded control plane without that
/// rollback (the thirteenth lab run: stopped at 30 minutes with the new API server still
/// starting). 30 minutes with kubeadm's own defaults.
pub fn kubeadm_limit_secs(kubeadm_timeout: Option<&str>) -> u64 {
    const DEFAULT: u64 = 1800;
    kubeadm_timeout
        .and_then(crate::spec::timeout_minutes)
        .map_or(DEFAULT, |m| DEFAULT.max(8 * m * 60 + 600))
}

/// The first transient error `output` (kubeadm's, failed) names, if any: then only a busy API
/// server or container runtime failed it.
pub fn transient_reason(output: &str) -> Option<&'static str> {
    TRANSIENT_KUBEADM_ERRORS
        .iter()
        .chain(crate::cilium::helm::TRANSIENT_API_ERRORS)
        .find(|e| output.contains(*e))
        .copied()
}

/// Prints one line per iptables chain of kube-proxy's service translation on the node.
pub const KUBE_PROXY_CHAINS: &str = "iptables-save 2>/dev/null | grep -E '^:KUBE-(SERVICES|SVC-|SEP-|NODEPORTS|EXT-)' | cut -d' ' -f1 | sort -u || true\n";

/// Removes the KUBE-* rules kube-proxy left on a node (Cilium's kube-proxy-free guide; the
/// kubelet re-creates its own KUBE-FIREWALL / canary chains).
pub const FLUSH_KUBE_PROXY_RULES: &str = "iptables-save | grep -v KUBE | iptables-restore\n";

/// The `UpgradeConfiguration` (kubeadm v1beta4) for `v`: the kube-proxy addon skipped, the
/// `kubeadm_patches` directory re-applied to the new manifests, and kubedrill_kubeadm_timeout
/// for every wait when set.
pub fn upgrade_config(
    v: Version,
    patches_dir: Option<&str>,
    timeout: Option<&str>,
    ignore_preflight_errors: &[String],
) -> String {
    // `plan` runs the same cluster health checks as `apply` (kubeadm's CreateJob among them):
    // the errors the inventory ignores are ignored there too, or the plan says nothing.
    let mut ignored = String::new();
    if !ignore_preflight_errors.is_empty() {
        ignored.push_str("  ignorePreflightErrors:\n");
        for e in ignore_preflight_errors {
            ignored.push_str(&format!("  - {}\n", json(e)));
        }
    }
    let mut phase = String::new();
    phase.push_str("  skipPhases:\n  - addon/kube-proxy\n");
    phase.push_str(&ignored);
    if let Some(p) = patches_dir {
        phase.push_str(&format!("  patches:\n    directory: {}\n", json(p)));
    }
    let mut s = format!(
        "# rendered by kubedrill for the Kubernetes {v} upgrade drill: kube-proxy is not\n\
         # brought back (Cilium replaces it); kubeadm_patches are applied to the new manifests.\n\
         apiVersion: kubeadm.k8s.io/v1beta4\nkind: UpgradeConfiguration\n\
         apply:\n  kubernetesVersion: {}\n{phase}node:\n{phase}plan:\n  kubernetesVersion: {}\n{ignored}",
        json(&format!("v{v}")),
        json(&format!("v{v}")),
    );
    if let Some(t) = timeout {
        let t = json(t);
        s.push_str("timeouts:\n");
        for k in [
            "controlPlaneComponentHealthCheck",
            "kubeletHealthCheck",
            "kubernetesAPICall",
            "etcdAPICall",
            "upgradeManifests",
        ] {
            s.push_str(&format!("  {k}: {t}\n"));
        }
    }
    s
}

fn json(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_failures_of_the_api_server_are_transient_and_others_are_not() {
        // As the lab's first Kubernetes drill printed it.
        let lab = "error: [upgrade] FATAL: failed to get config map: Get \"https://10.234.0.11:6443/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s\": net/http: TLS handshake timeout (Client.Timeout exceeded while awaiting headers)";
        assert_eq!(
            transient_reason(lab),
            Some("net/http: TLS handshake timeout")
        );
        assert!(transient_reason(
            "unexpected error when reading response body. Please retry. Original error: net/http: request canceled (Client.Timeout or context cancellation while reading body)"
        )
        .is_some());
        assert!(transient_reason("etcdserver: request timed out").is_some());
        // The lab's ninth Kubernetes drill, the first thing `kubeadm upgrade apply` reads.
        assert_eq!(
            transient_reason(
                "E1207 17:35:03.395034   17295 request.go:1196] \"Unexpected error when reading response body\" err=\"context deadline exceeded\"\nerror: [upgrade] FATAL: failed to get config map: unexpected error when reading response body. Please retry. Original error: context deadline exceeded"
            ),
            Some("unexpected error when reading response body. Please retry")
        );
        // The lab's fourth Kubernetes drill, right after the stage imported the images.
        assert_eq!(
            transient_reason(
                "[upgrade/preflight] Running preflight checks\n[preflight] Some fatal errors occurred:\n\t[ERROR ContainerRuntimeVersion]: could not connect to the container runtime: failed to create new CRI runtime service: validate service connection: validate CRI v1 runtime API for endpoint \"unix:///run/containerd/containerd.sock\": rpc error: code = DeadlineExceeded desc = context deadline exceeded"
            ),
            Some("could not connect to the container runtime")
        );
        for final_ in [
            "[upgrade/version] FATAL: the --version argument is invalid",
            "couldn't create upgrade plan: context deadline exceeded",
            "[ERROR CoreDNSUnsupportedPlugins]",
        ] {
            assert_eq!(transient_reason(final_), None, "{final_}");
        }
    }

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    #[test]
    fn order_keeps_every_pair_supported() {
        let cf = |c: (&str, &str), k: (&str, &str)| order((v(c.0), v(c.1)), (v(k.0), v(k.1)));
        // Kubernetes alone, on tested pairs.
        assert_eq!(
            cf(("1.19.7", "1.19.7"), ("1.34.4", "1.35.4")),
            Ok((Order::CiliumFirst, vec![]))
        );
        // 1.18 is tested up to 1.33, 1.19 from 1.32: Cilium first stays tested.
        assert_eq!(
            cf(("1.18.11", "1.19.7"), ("1.33.7", "1.34.4")).map(|o| o.0),
            Ok(Order::CiliumFirst)
        );
        // 1.20 does not support 1.32: Kubernetes first.
        assert_eq!(
            cf(("1.19.7", "1.20.0"), ("1.32.3", "1.33.7")).map(|o| o.0),
            Ok(Order::KubernetesFirst)
        );
        // Untested end: a warning, not a refusal.
        let (o, w) = cf(("1.18.11", "1.18.11"), ("1.33.7", "1.34.4")).expect("newer warns");
        assert_eq!(o, Order::CiliumFirst);
        assert!(w.iter().any(|w| w.contains("not tested upstream")), "{w:?}");
        // The start itself unsupported.
        let e = cf(("1.20.0", "1.20.0"), ("1.31.1", "1.32.1")).expect_err("older");
        assert!(e.to_string().contains("unsupported"), "{e}");
    }

    #[test]
    fn kubernetes_first_when_the_new_cilium_refuses_the_old_kubernetes() {
        // 1.15 (1.26–1.29) → 1.20 (1.33–1.36) with 1.29 → 1.33: start and end are fine, but 1.20
        // does not support 1.29 (Cilium first), and 1.15 with 1.33 only warns (Kubernetes
        // first): Kubernetes first.
        assert_eq!(
            order((v("1.15.19"), v("1.20.0")), (v("1.29.9"), v("1.33.1"))).map(|o| o.0),
            Ok(Order::KubernetesFirst)
        );
        // 1.16 (1.27–1.30) → 1.20 (1.33–1.36) with 1.33 → 1.34: the start only warns.
        assert!(
            order((v("1.16.19"), v("1.20.0")), (v("1.33.1"), v("1.34.1")))
                .is_ok_and(|o| !o.1.is_empty())
        );
    }

    #[test]
    fn path_is_one_minor_forward() {
        assert_eq!(check_path(v("1.34.4"), v("1.35.4")), Ok(()));
        assert_eq!(check_path(v("1.34.1"), v("1.34.4")), Ok(()));
        assert!(matches!(
            check_path(v("1.33.1"), v("1.35.4")),
            Err(PathError::SkipsMinor { .. })
        ));
        assert!(
            check_path(v("1.33.1"), v("1.35.4"))
                .unwrap_err()
                .to_string()
                .contains("skips 1.34")
        );
        assert!(matches!(
            check_path(v("1.35.4"), v("1.34.4")),
            Err(PathError::NotNewer { .. })
        ));
        assert!(matches!(
            check_path(v("1.29.1"), v("1.30.1")),
            Err(PathError::TooOld { .. })
        ));
    }

    #[test]
    fn batches_split_in_order() {
        let w = ["a", "b", "c"];
        assert_eq!(batches(&w, 2), vec![vec!["a", "b"], vec!["c"]]);
        assert_eq!(batches(&w, 0), vec![vec!["a"], vec!["b"], vec!["c"]]);
        assert!(batches::<&str>(&[], 1).is_empty());
    }

    #[test]
    fn scripts_name_the_staged_binaries_and_the_config() {
        let s = kubeadm_script(v("1.35.4"), NodeKind::FirstControlPlane);
        assert!(s.contains("install -m 0755 /var/cache/kubedrill/kubernetes/v1.35.4/kubeadm"));
        assert!(s.contains(
            "kubeadm upgrade apply --config /etc/kubernetes/kubedrill-upgrade.yaml --yes"
        ));
        assert!(!s.contains("upgrade plan"), "{s}");
        let p = plan_script(v("1.35.4"));
        assert!(p.contains("v1.35.4/kubeadm") && p.contains("kubeadm upgrade plan --config"));
        assert!(p.contains("|| true") && !p.contains("apply"), "{p}");
        let n = kubeadm_script(v("1.35.4"), NodeKind::Worker);
        assert!(n.contains("kubeadm upgrade node --config") && !n.contains("apply"));
        let k = kubelet_script(v("1.35.4"));
        assert!(k.contains("v1.35.4/kubelet") && k.contains("systemctl restart kubelet"));
        let d = drain_script("w1", 300);
        assert!(
            d.contains("drain w1") && d.contains("'!kubedrill.io/role'"),
            "{d}"
        );
    }

    #[test]
    fn kubeadm_is_given_at_least_its_own_waits() {
        assert_eq!(kubeadm_limit_secs(None), 1800);
        assert_eq!(kubeadm_limit_secs(Some("2m")), 1800);
        // Four components, two waits each, of 20 minutes: 160 minutes and a margin.
        assert_eq!(kubeadm_limit_secs(Some("20m")), 8 * 20 * 60 + 600);
        assert_eq!(kubeadm_limit_secs(Some("nonsense")), 1800);
    }

    #[test]
    fn upgrade_config_skips_kube_proxy_and_keeps_patches() {
        let c = upgrade_config(
            v("1.35.4"),
            Some("/etc/kubernetes/patches"),
            Some("20m"),
            &["CreateJob".to_owned()],
        );
        let doc: serde_json::Value = serde_saphyr::from_str(&c).expect("yaml");
        assert_eq!(doc["kind"], "UpgradeConfiguration");
        assert_eq!(doc["apply"]["kubernetesVersion"], "v1.35.4");
        assert_eq!(doc["apply"]["skipPhases"][0], "addon/kube-proxy");
        assert_eq!(
            doc["node"]["patches"]["directory"],
            "/etc/kubernetes/patches"
        );
        assert_eq!(doc["timeouts"]["upgradeManifests"], "20m");
        assert_eq!(doc["apply"]["ignorePreflightErrors"][0], "CreateJob");
        assert_eq!(doc["node"]["ignorePreflightErrors"][0], "CreateJob");
        assert_eq!(doc["plan"]["ignorePreflightErrors"][0], "CreateJob");
        let plain = upgrade_config(v("1.35.4"), None, None, &[]);
        assert!(
            !plain.contains("directory:")
                && !plain.contains("timeouts:")
                && !plain.contains("ignorePreflightErrors"),
            "{plain}"
        );
    }
}
