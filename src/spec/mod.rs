//! The cluster spec: what the cluster should be, merged from Kubespray's variables, kubedrill's
//! own keys and `cilium_extra_values`, with where each effective value came from.
//!
//! Precedence for each Cilium setting, lowest first: kubedrill's default, Kubespray's variable,
//! kubedrill's first-class key (`kubedrill_cilium_*`), then `cilium_extra_values` (which
//! Kubespray merges last into the chart values, so it wins here too, with a warning on conflict).

pub mod cilium;
mod extra;
pub mod patches;
pub mod rules;
pub mod version;

use crate::diag::{Diagnostic, Diagnostics, Origin};
use crate::inventory::{Host, Inventory, Var, Vars};
use cilium::*;
pub use extra::take_path;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;
pub use version::{KubeadmApi, Version};

/// kubedrill's default Kubernetes version when the inventory sets none.
pub const DEFAULT_KUBE_VERSION: Version = Version::new(1, 34, 2);
/// kubedrill's default Cilium version when the inventory sets none.
pub const DEFAULT_CILIUM_VERSION: Version = Version::new(1, 19, 6);

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// kubedrill's default.
    Default,
    /// Computed from other settings.
    Derived {
        /// From what.
        from: String,
    },
    /// An inventory variable.
    Var {
        /// Variable name.
        name: String,
        /// Where it was set.
        origin: Origin,
    },
    /// A key inside `cilium_extra_values`.
    ExtraValues {
        /// Dotted path inside the chart values.
        path: String,
        /// Where `cilium_extra_values` was set.
        origin: Origin,
    },
    /// Kept from an earlier run (a state file).
    Stored {
        /// The file.
        path: PathBuf,
    },
    /// Generated now; saved by the command that needs it.
    Generated,
}

impl Source {
    fn var(name: &str, v: &Var) -> Self {
        Source::Var {
            name: name.to_owned(),
            origin: v.origin.clone(),
        }
    }

    /// True when the user set the value (not a default, derivation or generation).
    pub fn is_explicit(&self) -> bool {
        matches!(self, Source::Var { .. } | Source::ExtraValues { .. })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("kubedrill default"),
            Source::Derived { from } => write!(f, "derived from {from}"),
            Source::Var { name, origin } => write!(f, "{name} ({origin})"),
            Source::ExtraValues { path, origin } => {
                write!(f, "cilium_extra_values.{path} ({origin})")
            }
            Source::Stored { path } => write!(f, "kept in {}", path.display()),
            Source::Generated => {
                f.write_str("generated (saved on first plan --render-dir or apply)")
            }
        }
    }
}

/// One effective setting, shown by `inventory show`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// Setting name.
    pub setting: &'static str,
    /// Effective value, as text.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// The API server endpoint every node and Cilium use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A registry mirror entry in Kubespray's `containerd_registries_mirrors` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryMirror {
    /// Registry this mirrors, e.g. `docker.io`.
    pub prefix: String,
    /// Mirror hosts, tried in order.
    pub mirrors: Vec<MirrorHost>,
}

/// One mirror host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorHost {
    /// URL of the mirror, e.g. `http://10.0.0.1:5000`.
    pub host: String,
    /// containerd capabilities (`pull`, `resolve`, `push`).
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<String>,
    /// Skip TLS verification.
    #[serde(default)]
    pub skip_verify: bool,
    /// Override the path (containerd's `override_path`).
    #[serde(default)]
    pub override_path: bool,
}

fn default_capabilities() -> Vec<String> {
    vec!["pull".to_owned(), "resolve".to_owned()]
}

/// Container runtime settings (containerd only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRuntime {
    /// Registry mirrors, written as `certs.d/<prefix>/hosts.toml`.
    pub mirrors: Vec<RegistryMirror>,
    /// Root of containerd's host configs.
    pub config_path: String,
}

/// What the cluster should be.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSpec {
    /// Short label (the inventory directory's name).
    pub label: String,
    /// Kubespray's `cluster_name`: kubeadm's cluster name and the DNS domain.
    pub cluster_name: String,
    /// Kubernetes version.
    pub kubernetes: Version,
    /// kubeadm config API for that version.
    pub kubeadm_api: KubeadmApi,
    /// Cilium version (also the chart version).
    pub cilium: Version,
    /// Pod CIDR (`kube_pods_subnet`).
    pub pod_cidr: Ipv4Net,
    /// Service CIDR (`kube_service_addresses`).
    pub service_cidr: Ipv4Net,
    /// Per-node pod CIDR size (`kube_network_node_prefix`).
    pub node_prefix: u8,
    /// The control-plane endpoint.
    pub endpoint: Endpoint,
    /// Port the API server binds on each control plane (`kube_apiserver_port`).
    pub apiserver_port: u16,
    /// Where the control-plane and pause images come from (Kubespray's `kube_image_repo`,
    /// often `{{ registry_host }}` offline): kubeadm's `imageRepository`.
    pub image_repo: String,
    /// How long kubeadm waits for the control plane, the kubelet and discovery
    /// (`kubedrill_kubeadm_timeout`, e.g. `15m`; kubeadm's own defaults when unset). Labs under
    /// TCG emulation set it, because every component starts several times slower there.
    pub kubeadm_timeout: Option<String>,
    /// Kubespray's `kubeadm_ignore_preflight_errors`: kubeadm pre-flight checks that report
    /// without failing (`CreateJob`, … or `all`). Passed to the drill's kubeadm upgrade
    /// (`UpgradeConfiguration`); `kubeadm init`/`join` do not read it yet. A lab under TCG sets
    /// `CreateJob`: kubeadm gives its upgrade health-check Job a hard-coded 15 s.
    pub kubeadm_ignore_preflight_errors: Vec<String>,
    /// Cilium's images when the inventory names them (Kubespray's `quay_image_repo`,
    /// `cilium_image_repo`/`_tag`, `cilium_operator_image_repo`/`_tag`); `None` keeps the
    /// chart's digest-pinned defaults.
    pub cilium_images: Option<CiliumImages>,
    /// How long the agent may take to start before its startup probe fails
    /// (`kubedrill_cilium_startup_timeout`, seconds; the chart's default when unset). Labs under
    /// TCG set it: the agent compiles its datapath at start, many times slower there.
    pub cilium_startup_timeout: Option<u64>,
    /// The agent's CPU request in millicores (`kubedrill_cilium_agent_cpu_request`; the chart's
    /// none when unset). Labs under TCG set it: the agent compiles its datapath in its own cgroup,
    /// and Cilium gives each compile a fixed 5 minutes — at the CPU weight of a pod without a
    /// request, a busy control plane starved it past that and the agent exited, again and again.
    pub cilium_agent_cpu_millis: Option<u32>,
    /// The CPU weight (cgroup v2, 1–10000) the node keeps the Cilium agent's pod at
    /// (`kubedrill_cilium_agent_cpu_weight`; the kubelet's, from the request, when unset). Labs
    /// under TCG set it: on a 2-CPU control plane no request the node can grant gave the agent
    /// enough share to finish its datapath compiles within Cilium's fixed 5 minutes.
    pub cilium_agent_cpu_weight: Option<u32>,
    /// Leader election of the controller manager and the scheduler, when the inventory sets
    /// Kubespray's `kube_controller_manager_leader_elect_*` / `kube_scheduler_leader_elect_*`
    /// (kubeadm's defaults otherwise). Labs under TCG set longer leases: a slow API server made
    /// both lose their lease, exit and restart in a loop (seen on the lab with Cilium).
    pub leader_elect: LeaderElect,
    /// Kubespray's `kubeadm_patches`, written to [`patches::PATCHES_DIR`] and named in kubeadm's
    /// `patches.directory`. Labs under TCG add some ([`patches::tcg_lab_adjustment`]).
    pub kubeadm_patches: Vec<patches::KubeadmPatch>,
    /// Remove (never install) kube-proxy.
    pub kube_proxy_remove: bool,
    /// Container runtime.
    pub runtime: ContainerRuntime,
    /// The Cilium intent.
    pub cilium_intent: CiliumIntent,
    /// `cilium_extra_values` without the keys kubedrill reads into the intent; merged last.
    pub cilium_extra_values: Map<String, Value>,
    /// Effective settings and their sources.
    pub provenance: Vec<Provenance>,
}

/// Where the Cilium agent and operator images come from, as Kubespray names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CiliumImages {
    /// Agent (and pre-flight) repository, e.g. `registry.local:5000/cilium/cilium`.
    pub agent_repo: String,
    /// Agent tag, e.g. `v1.19.7`.
    pub agent_tag: String,
    /// Operator repository. Kubespray's default ends in `/operator`, to which the chart adds
    /// `-generic`; a repository that already ends in `-generic` is used as it is.
    pub operator_repo: String,
    /// Operator tag.
    pub operator_tag: String,
}

/// State kept between runs that the spec needs.
#[derive(Debug, Clone, Default)]
pub struct SpecContext {
    /// A Maglev hash seed saved by an earlier run, with its file.
    pub stored_hash_seed: Option<(HashSeed, PathBuf)>,
}

/// A setting being resolved through the precedence layers.
struct Setting<T> {
    value: T,
    source: Source,
}

impl<T: PartialEq + fmt::Display + Clone> Setting<T> {
    fn new(value: T, source: Source) -> Self {
        Setting { value, source }
    }

    /// Override; a conflicting explicit value being overridden by `cilium_extra_values` is worth a warning.
    fn set(&mut self, name: &str, value: T, source: Source, diags: &mut Diagnostics) {
        if self.source.is_explicit()
            && matches!(source, Source::ExtraValues { .. })
            && self.value != value
        {
            let origin = match &source {
                Source::ExtraValues { origin, .. } => Some(origin.clone()),
                _ => None,
            };
            diags.push(
                Diagnostic::warning(format!(
                    "{name}: {} sets {}, {} sets {}; cilium_extra_values wins (merged last, as in Kubespray)",
                    self.source, self.value, source, value
                ))
                .at_opt(origin.as_ref())
                .field(name),
            );
        }
        self.value = value;
        self.source = source;
    }

    fn record(&self, setting: &'static str, out: &mut Vec<Provenance>) {
        out.push(Provenance {
            setting,
            value: self.value.to_string(),
            source: self.source.clone(),
        });
    }
}

/// Cluster-level variables that must have one value on every host.
const CLUSTER_VARS: &[&str] = &[
    "kube_version",
    "cilium_version",
    "kube_pods_subnet",
    "kube_service_addresses",
    "kube_network_plugin",
    "kube_proxy_remove",
    "cilium_kube_proxy_replacement",
    "cilium_tunnel_mode",
    "cilium_loadbalancer_mode",
    "cilium_native_routing_cidr",
    "cilium_extra_values",
    "cluster_name",
    "kube_image_repo",
    "kubedrill_kubeadm_timeout",
    "kubeadm_ignore_preflight_errors",
    "kubedrill_cilium_startup_timeout",
    "kubedrill_cilium_agent_cpu_request",
    "kubedrill_cilium_agent_cpu_weight",
    "kube_controller_manager_leader_elect_lease_duration",
    "kube_controller_manager_leader_elect_renew_deadline",
    "kube_scheduler_leader_elect_lease_duration",
    "kube_scheduler_leader_elect_renew_deadline",
    "kubedrill_cilium_operator_leader_elect_lease_duration",
    "kubedrill_cilium_operator_leader_elect_renew_deadline",
    "kubeadm_patches",
    "quay_image_repo",
    "cilium_image_repo",
    "cilium_image_tag",
    "cilium_operator_image_repo",
    "cilium_operator_image_tag",
];

/// Kubespray's image variables for Cilium, in the order they are read.
const CILIUM_IMAGE_VARS: [&str; 5] = [
    "quay_image_repo",
    "cilium_image_repo",
    "cilium_image_tag",
    "cilium_operator_image_repo",
    "cilium_operator_image_tag",
];

/// An image tag: letters, digits and `._-`, at most 128 characters, not starting with `.`/`-`.
fn valid_image_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A cgroup v2 `cpu.weight`: an integer 1–10000.
pub fn cpu_weight(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|w| (1..=10_000).contains(w))
}

/// A Kubernetes CPU quantity (`500m`, `1`, `1.5`) in millicores, between 10m and 4 CPUs.
pub fn cpu_millis(s: &str) -> Option<u32> {
    let s = s.trim();
    let m = if let Some(n) = s.strip_suffix('m') {
        n.parse::<u32>().ok()?
    } else {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let w: u32 = whole.parse().ok()?;
        let f: u32 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}").parse().ok()?
        };
        w.checked_mul(1000)?.checked_add(f)?
    };
    (10..=4000).contains(&m).then_some(m)
}

/// A duration (`Ns`, `Nm`, `Nh`) in seconds, between `min` and `max` seconds.
pub fn duration_secs(s: &str, min: u64, max: u64) -> Option<u64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    (min..=max).contains(&secs).then_some(secs)
}

/// Leader-election leases of the control-plane components that elect one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LeaderElect {
    /// kube-controller-manager's.
    pub controller_manager: Option<Lease>,
    /// kube-scheduler's.
    pub scheduler: Option<Lease>,
    /// The Cilium operator's (`kubedrill_cilium_operator_leader_elect_lease_duration` /
    /// `_renew_deadline`, rendered as the operator options `leader-election-lease-duration` /
    /// `leader-election-renew-deadline` in `extraConfig`; Cilium's defaults are 15 s / 10 s).
    pub cilium_operator: Option<Lease>,
}

/// A leader-election lease (`--leader-elect-lease-duration`, `--leader-elect-renew-deadline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// How long a lease holds without renewal.
    pub duration_secs: u64,
    /// How long the leader tries to renew before it gives up (and exits).
    pub renew_deadline_secs: u64,
}

/// Kubespray's default `kube_image_repo`.
pub const DEFAULT_IMAGE_REPO: &str = "registry.k8s.io";

/// A registry host with an optional port and path: letters, digits and `.-_:/`, no `..`.
fn valid_image_repo(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.contains("..")
        && !s.starts_with('/')
        && !s.contains("://")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:/".contains(c))
}

/// A `kubedrill_kubeadm_timeout` in whole minutes (rounded up), if it is `Ns`, `Nm` or `Nh`
/// between 1 and 120 minutes.
pub fn timeout_minutes(s: &str) -> Option<u64> {
    duration_secs(s, 60, 7200).map(|secs| secs.div_ceil(60))
}

/// Build the spec from a validated inventory. Returns the spec with its warnings, or every error.
pub fn build(
    inv: &Inventory,
    ctx: &SpecContext,
) -> Result<(ClusterSpec, Diagnostics), Diagnostics> {
    let mut diags = Diagnostics::default();
    let cp = inv.first_control_plane();
    check_cluster_vars_agree(inv, cp, &mut diags);
    let b = Builder { vars: &cp.vars };
    let spec = b.build(inv, ctx, &mut diags);
    match spec {
        Some(spec) => {
            rules::check(&spec, inv, &mut diags);
            if diags.has_errors() {
                Err(diags)
            } else {
                Ok((spec, diags))
            }
        }
        None => Err(diags),
    }
}

fn check_cluster_vars_agree(inv: &Inventory, cp: &Host, diags: &mut Diagnostics) {
    for name in CLUSTER_VARS {
        let reference = cp.vars.get(*name);
        for h in &inv.hosts {
            let other = h.vars.get(*name);
            if other.map(|v| &v.value) != reference.map(|v| &v.value) {
                let (here, there) = (describe_opt(reference), describe_opt(other));
                diags.push(
                    Diagnostic::error(format!(
                        "`{name}` differs between hosts: {} has {here}, {} has {there}",
                        cp.name, h.name
                    ))
                    .at_opt(other.or(reference).map(|v| &v.origin))
                    .field(*name)
                    .hint(
                        "cluster-wide variables belong in group_vars/k8s_cluster or group_vars/all",
                    ),
                );
                break;
            }
        }
    }
}

fn describe_opt(v: Option<&Var>) -> String {
    match v {
        Some(v) => format!(
            "{} ({})",
            crate::inventory::model::describe(&v.value),
            v.origin
        ),
        None => "it unset".to_owned(),
    }
}

struct Builder<'a> {
    vars: &'a Vars,
}

impl<'a> Builder<'a> {
    fn get(&self, name: &str) -> Option<(&'a Var, Source)> {
        self.vars.get(name).map(|v| (v, Source::var(name, v)))
    }

    fn build(
        &self,
        inv: &Inventory,
        ctx: &SpecContext,
        diags: &mut Diagnostics,
    ) -> Option<ClusterSpec> {
        let mut prov = Vec::new();
        let mut ok = true;
        let mut fail = |d: Diagnostic, diags: &mut Diagnostics| {
            diags.push(d);
            ok = false;
        };

        // Plugin and runtime kubedrill supports.
        if let Some((v, _)) = self.get("kube_network_plugin") {
            match v.string("kube_network_plugin") {
                Ok(s) if s == "cilium" => {}
                Ok(s) => fail(
                    Diagnostic::error(format!(
                        "kube_network_plugin is \"{s}\"; kubedrill installs Cilium only"
                    ))
                    .at(&v.origin)
                    .field("kube_network_plugin")
                    .hint("set kube_network_plugin: cilium"),
                    diags,
                ),
                Err(d) => fail(d, diags),
            }
        }
        if let Some((v, _)) = self.get("container_manager") {
            match v.string("container_manager") {
                Ok(s) if s == "containerd" => {}
                Ok(s) => fail(
                    Diagnostic::error(format!(
                        "container_manager is \"{s}\"; kubedrill sets up containerd only"
                    ))
                    .at(&v.origin)
                    .field("container_manager"),
                    diags,
                ),
                Err(d) => fail(d, diags),
            }
        }

        let kubernetes = self.version("kube_version", DEFAULT_KUBE_VERSION, diags, &mut prov);
        let cilium_v = self.version("cilium_version", DEFAULT_CILIUM_VERSION, diags, &mut prov);
        let (Some(kubernetes), Some(cilium_v)) = (kubernetes, cilium_v) else {
            return None;
        };
        let cluster_name = match self.get("cluster_name") {
            Some((v, src)) => match v.string("cluster_name") {
                Ok(s) => Setting::new(s, src),
                Err(d) => {
                    fail(d, diags);
                    Setting::new("cluster.local".to_owned(), Source::Default)
                }
            },
            None => Setting::new("cluster.local".to_owned(), Source::Default),
        };
        cluster_name.record("cluster_name", &mut prov);
        let image_repo = match self.get("kube_image_repo") {
            Some((v, src)) => match v.string("kube_image_repo") {
                Ok(s) if valid_image_repo(&s) => {
                    Setting::new(s.trim_end_matches('/').to_owned(), src)
                }
                Ok(s) => {
                    fail(
                        Diagnostic::error(format!("\"{s}\" is not an image repository (a registry host, optionally with a path, e.g. registry.example.com:5000/k8s)"))
                            .at(&v.origin)
                            .field("kube_image_repo"),
                        diags,
                    );
                    Setting::new(DEFAULT_IMAGE_REPO.to_owned(), Source::Default)
                }
                Err(d) => {
                    fail(d, diags);
                    Setting::new(DEFAULT_IMAGE_REPO.to_owned(), Source::Default)
                }
            },
            None => Setting::new(DEFAULT_IMAGE_REPO.to_owned(), Source::Default),
        };
        image_repo.record("kube_image_repo", &mut prov);
        let kubeadm_timeout = match self.get("kubedrill_kubeadm_timeout") {
            Some((v, src)) => match v.string("kubedrill_kubeadm_timeout") {
                Ok(s) if timeout_minutes(&s).is_some() => {
                    let t = Setting::new(s, src);
                    t.record("kubedrill_kubeadm_timeout", &mut prov);
                    Some(t.value)
                }
                Ok(s) => {
                    fail(
                        Diagnostic::error(format!("\"{s}\" is not a duration between 1m and 120m (write e.g. 15m, 900s or 1h)"))
                            .at(&v.origin)
                            .field("kubedrill_kubeadm_timeout"),
                        diags,
                    );
                    None
                }
                Err(d) => {
                    fail(d, diags);
                    None
                }
            },
            None => None,
        };
        let kubeadm_ignore_preflight_errors =
            match self.preflight_errors("kubeadm_ignore_preflight_errors", &mut prov) {
                Ok(v) => v,
                Err(d) => {
                    fail(d, diags);
                    Vec::new()
                }
            };
        let cilium_startup_timeout = match self.checked_string(
            "kubedrill_cilium_startup_timeout",
            |s| duration_secs(s, 60, 7200).is_some(),
            "a duration between 1m and 120m (write e.g. 30m, 1800s or 1h)",
            &mut prov,
        ) {
            Ok(t) => t.and_then(|s| duration_secs(&s, 60, 7200)),
            Err(d) => {
                fail(d, diags);
                None
            }
        };
        let cilium_agent_cpu_millis = match self.checked_string(
            "kubedrill_cilium_agent_cpu_request",
            |s| cpu_millis(s).is_some(),
            "a CPU quantity between 10m and 4 (write e.g. 500m or 1)",
            &mut prov,
        ) {
            Ok(t) => t.and_then(|s| cpu_millis(&s)),
            Err(d) => {
                fail(d, diags);
                None
            }
        };
        let cilium_agent_cpu_weight = match self.checked_string(
            "kubedrill_cilium_agent_cpu_weight",
            |s| cpu_weight(s).is_some(),
            "a cgroup CPU weight between 1 and 10000 (write e.g. 100)",
            &mut prov,
        ) {
            Ok(t) => t.and_then(|s| cpu_weight(&s)),
            Err(d) => {
                fail(d, diags);
                None
            }
        };
        let mut lease = |component| {
            self.lease(component, &mut prov).unwrap_or_else(|d| {
                fail(d, diags);
                None
            })
        };
        let leader_elect = LeaderElect {
            controller_manager: lease("kube_controller_manager"),
            scheduler: lease("kube_scheduler"),
            cilium_operator: lease("kubedrill_cilium_operator"),
        };
        let kubeadm_patches = match self.get("kubeadm_patches") {
            None => Vec::new(),
            Some((v, src)) => match patches::parse(v) {
                Ok(p) => {
                    if !p.is_empty() {
                        prov.push(Provenance {
                            setting: "kubeadm_patches",
                            value: p
                                .iter()
                                .map(|p| format!("{} ({})", p.target.as_str(), p.kind.as_str()))
                                .collect::<Vec<_>>()
                                .join(", "),
                            source: src,
                        });
                    }
                    p
                }
                Err(d) => {
                    fail(d, diags);
                    Vec::new()
                }
            },
        };
        let cilium_images = self.cilium_images(cilium_v, &mut prov).unwrap_or_else(|d| {
            fail(d, diags);
            None
        });

        let pod_cidr = self.cidr("kube_pods_subnet", "10.233.64.0/18", diags, &mut prov)?;
        let service_cidr =
            self.cidr("kube_service_addresses", "10.233.0.0/18", diags, &mut prov)?;
        let node_prefix = match self.get("kube_network_node_prefix") {
            Some((v, src)) => match v
                .uint("kube_network_node_prefix")
                .ok()
                .and_then(|n| u8::try_from(n).ok())
            {
                Some(n) if n >= pod_cidr.prefix_len() && n <= 30 => Setting::new(n, src),
                _ => {
                    fail(
                        Diagnostic::error(format!(
                            "must be a prefix length between the pod CIDR's /{} and /30",
                            pod_cidr.prefix_len()
                        ))
                        .at(&v.origin)
                        .field("kube_network_node_prefix"),
                        diags,
                    );
                    return None;
                }
            },
            None => Setting::new(24u8.max(pod_cidr.prefix_len()), Source::Default),
        };
        node_prefix.record("kube_network_node_prefix", &mut prov);

        let apiserver_port = match self.get("kube_apiserver_port") {
            Some((v, src)) => match v.port("kube_apiserver_port") {
                Ok(p) => Setting::new(p, src),
                Err(d) => {
                    fail(d, diags);
                    Setting::new(6443, Source::Default)
                }
            },
            None => Setting::new(6443u16, Source::Default),
        };
        apiserver_port.record("kube_apiserver_port", &mut prov);
        let endpoint = self.endpoint(inv, apiserver_port.value, diags, &mut prov)?;

        let runtime = self.runtime(diags, &mut prov);

        // cilium_extra_values: read the keys kubedrill understands, keep the rest for the final merge.
        let mut extra = match self.get("cilium_extra_values") {
            None => None,
            Some((v, _)) => match &*v.value {
                Value::Object(m) => Some((m.clone(), v.origin.clone())),
                Value::Null => None,
                other => {
                    fail(
                        Diagnostic::error(format!(
                            "must be a mapping of Cilium chart values, found {}",
                            crate::inventory::model::describe(other)
                        ))
                        .at(&v.origin)
                        .field("cilium_extra_values"),
                        diags,
                    );
                    None
                }
            },
        };
        let intent = extra::intent(self, &mut extra, pod_cidr, ctx, diags, &mut prov)?;
        let kube_proxy_remove = {
            let default = intent.kube_proxy_replacement == KubeProxyReplacement::True;
            let mut s = Setting::new(
                default,
                Source::Derived {
                    from: "kube-proxy replacement".to_owned(),
                },
            );
            if let Some((v, src)) = self.get("kube_proxy_remove") {
                match v.bool("kube_proxy_remove") {
                    Ok(b) => s.set("kube_proxy_remove", b, src, diags),
                    Err(d) => fail(d, diags),
                }
            }
            s.record("kube_proxy_remove", &mut prov);
            s
        };
        if !ok {
            return None;
        }
        Some(ClusterSpec {
            label: inv.cluster_label(),
            cluster_name: cluster_name.value,
            kubernetes,
            kubeadm_api: KubeadmApi::for_kubernetes(kubernetes),
            cilium: cilium_v,
            pod_cidr,
            service_cidr,
            node_prefix: node_prefix.value,
            endpoint,
            apiserver_port: apiserver_port.value,
            image_repo: image_repo.value,
            kubeadm_timeout,
            kubeadm_ignore_preflight_errors,
            cilium_images,
            cilium_startup_timeout,
            cilium_agent_cpu_millis,
            cilium_agent_cpu_weight,
            leader_elect,
            kubeadm_patches,
            kube_proxy_remove: kube_proxy_remove.value,
            runtime,
            cilium_intent: intent,
            cilium_extra_values: extra.map(|(m, _)| m).unwrap_or_default(),
            provenance: prov,
        })
    }

    /// An optional string variable that must pass `valid` (an error naming file, line and
    /// field otherwise), recorded in the provenance when set.
    /// A list of kubeadm pre-flight check names (a YAML list, or one comma-separated string as
    /// the command line takes it); empty when unset.
    fn preflight_errors(
        &self,
        name: &'static str,
        prov: &mut Vec<Provenance>,
    ) -> Result<Vec<String>, Diagnostic> {
        let Some((v, src)) = self.get(name) else {
            return Ok(Vec::new());
        };
        let items: Vec<String> = match &*v.value {
            Value::Array(a) => a
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    _ => Err(()),
                })
                .collect::<Result<_, _>>()
                .map_err(|()| {
                    Diagnostic::error("every item must be a pre-flight check name (a string)")
                        .at(&v.origin)
                        .field(name)
                })?,
            _ => v
                .string(name)?
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if let Some(bad) = items
            .iter()
            .find(|i| i.is_empty() || !i.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(Diagnostic::error(format!(
                "\"{bad}\" is not a kubeadm pre-flight check name (letters, digits and dashes, e.g. CreateJob, or all)"
            ))
            .at(&v.origin)
            .field(name));
        }
        Setting::new(items.join(","), src).record(name, prov);
        Ok(items)
    }

    fn checked_string(
        &self,
        name: &'static str,
        valid: impl Fn(&str) -> bool,
        expect: &str,
        prov: &mut Vec<Provenance>,
    ) -> Result<Option<String>, Diagnostic> {
        let Some((v, src)) = self.get(name) else {
            return Ok(None);
        };
        let s = v.string(name)?;
        if !valid(&s) {
            return Err(Diagnostic::error(format!("\"{s}\" is not {expect}"))
                .at(&v.origin)
                .field(name));
        }
        let t = Setting::new(s, src);
        t.record(name, prov);
        Ok(Some(t.value))
    }

    /// `<component>_leader_elect_lease_duration` and `_renew_deadline` (Kubespray's defaults 15s
    /// and 10s for the one left unset); `None` when neither is set. The deadline must be shorter
    /// than the lease, as the components themselves require.
    fn lease(
        &self,
        component: &'static str,
        prov: &mut Vec<Provenance>,
    ) -> Result<Option<Lease>, Diagnostic> {
        let names: [&'static str; 2] = match component {
            "kube_controller_manager" => [
                "kube_controller_manager_leader_elect_lease_duration",
                "kube_controller_manager_leader_elect_renew_deadline",
            ],
            "kubedrill_cilium_operator" => [
                "kubedrill_cilium_operator_leader_elect_lease_duration",
                "kubedrill_cilium_operator_leader_elect_renew_deadline",
            ],
            _ => [
                "kube_scheduler_leader_elect_lease_duration",
                "kube_scheduler_leader_elect_renew_deadline",
            ],
        };
        let mut got = [None, None];
        for (i, name) in names.iter().enumerate() {
            got[i] = self
                .checked_string(
                    name,
                    |s| duration_secs(s, 1, 3600).is_some(),
                    "a duration between 1s and 1h (write e.g. 15s or 1m)",
                    prov,
                )?
                .and_then(|s| duration_secs(&s, 1, 3600));
        }
        if got.iter().all(Option::is_none) {
            return Ok(None);
        }
        let lease = Lease {
            duration_secs: got[0].unwrap_or(15),
            renew_deadline_secs: got[1].unwrap_or(10),
        };
        if lease.renew_deadline_secs >= lease.duration_secs {
            let at = self.get(names[1]).or_else(|| self.get(names[0]));
            let mut d = Diagnostic::error(format!(
                "the renew deadline ({}s) must be shorter than the lease duration ({}s)",
                lease.renew_deadline_secs, lease.duration_secs
            ))
            .field(names[1]);
            if let Some((v, _)) = at {
                d = d.at(&v.origin);
            }
            return Err(d);
        }
        Ok(Some(lease))
    }

    /// Kubespray's Cilium image variables, with its defaults for the ones left unset
    /// (`{{ quay_image_repo }}/cilium/cilium`, `v{{ cilium_version }}`, …); `None` when none
    /// is set, so the chart's digest-pinned images stay.
    fn cilium_images(
        &self,
        cilium: Version,
        prov: &mut Vec<Provenance>,
    ) -> Result<Option<CiliumImages>, Diagnostic> {
        if CILIUM_IMAGE_VARS.iter().all(|n| self.get(n).is_none()) {
            return Ok(None);
        }
        const REPO: &str = "an image repository (a registry host, optionally with a path, e.g. registry.example.com:5000/cilium/cilium)";
        const TAG: &str = "an image tag (letters, digits, `.`, `_`, `-`)";
        let mut repo = |name: &'static str| {
            self.checked_string(name, valid_image_repo, REPO, prov)
                .map(|r| r.map(|s| s.trim_end_matches('/').to_owned()))
        };
        let quay = repo("quay_image_repo")?.unwrap_or_else(|| "quay.io".into());
        let agent_repo =
            repo("cilium_image_repo")?.unwrap_or_else(|| format!("{quay}/cilium/cilium"));
        let operator_repo = repo("cilium_operator_image_repo")?
            .unwrap_or_else(|| format!("{quay}/cilium/operator"));
        let default_tag = format!("v{cilium}");
        let agent_tag = self
            .checked_string("cilium_image_tag", valid_image_tag, TAG, prov)?
            .unwrap_or_else(|| default_tag.clone());
        let operator_tag = self
            .checked_string("cilium_operator_image_tag", valid_image_tag, TAG, prov)?
            .unwrap_or(default_tag);
        Ok(Some(CiliumImages {
            agent_repo,
            agent_tag,
            operator_repo,
            operator_tag,
        }))
    }

    fn version(
        &self,
        name: &'static str,
        default: Version,
        diags: &mut Diagnostics,
        prov: &mut Vec<Provenance>,
    ) -> Option<Version> {
        let s = match self.get(name) {
            None => Setting::new(default, Source::Default),
            Some((v, src)) => {
                let parsed = match &*v.value {
                    Value::Number(n) if n.is_f64() => Err(format!(
                        "{n} is a number (YAML reads 1.30 as 1.3); quote the full version, e.g. \"1.30.4\""
                    )),
                    _ => v
                        .string(name)
                        .map_err(|d| d.message)
                        .and_then(|s| s.parse::<Version>()),
                };
                match parsed {
                    Ok(ver) => Setting::new(ver, src),
                    Err(msg) => {
                        diags.push(Diagnostic::error(msg).at(&v.origin).field(name));
                        return None;
                    }
                }
            }
        };
        s.record(name, prov);
        Some(s.value)
    }

    fn cidr(
        &self,
        name: &'static str,
        default: &str,
        diags: &mut Diagnostics,
        prov: &mut Vec<Provenance>,
    ) -> Option<Ipv4Net> {
        let (text, src, origin) = match self.get(name) {
            None => (default.to_owned(), Source::Default, None),
            Some((v, src)) => match v.string(name) {
                Ok(s) => (s, src, Some(v.origin.clone())),
                Err(d) => {
                    diags.push(d);
                    return None;
                }
            },
        };
        let err = |msg: String| Diagnostic::error(msg).at_opt(origin.as_ref()).field(name);
        match text.trim().parse::<IpNet>() {
            Ok(IpNet::V4(net)) if net.trunc() == net => {
                Setting::new(net, src).record(name, prov);
                Some(net)
            }
            Ok(IpNet::V4(net)) => {
                diags.push(err(format!(
                    "\"{text}\" has host bits set; did you mean {}?",
                    net.trunc()
                )));
                None
            }
            Ok(IpNet::V6(_)) => {
                diags.push(err(format!(
                    "\"{text}\" is IPv6; kubedrill builds IPv4 clusters"
                )));
                None
            }
            Err(_) => {
                diags.push(err(format!("\"{text}\" is not a CIDR like 10.233.64.0/18")));
                None
            }
        }
    }

    fn endpoint(
        &self,
        inv: &Inventory,
        apiserver_port: u16,
        diags: &mut Diagnostics,
        prov: &mut Vec<Provenance>,
    ) -> Option<Endpoint> {
        #[derive(Deserialize)]
        struct Lb {
            address: Option<String>,
            port: Option<u16>,
        }
        if let Some((v, src)) = self.get("loadbalancer_apiserver") {
            let lb: Lb = match serde_json::from_value((*v.value).clone()) {
                Ok(lb) => lb,
                Err(e) => {
                    diags.push(
                        Diagnostic::error(format!(
                            "must be a mapping with `address` and `port`: {e}"
                        ))
                        .at(&v.origin)
                        .field("loadbalancer_apiserver"),
                    );
                    return None;
                }
            };
            let port = lb.port.unwrap_or(apiserver_port);
            let (host, host_src) = match self.get("apiserver_loadbalancer_domain_name") {
                Some((d, dsrc)) => match d.string("apiserver_loadbalancer_domain_name") {
                    Ok(s) => (s, dsrc),
                    Err(e) => {
                        diags.push(e);
                        return None;
                    }
                },
                None => match lb.address {
                    Some(a) => (a, src.clone()),
                    None => {
                        diags.push(
                            Diagnostic::error("has no `address` and apiserver_loadbalancer_domain_name is not set")
                                .at(&v.origin)
                                .field("loadbalancer_apiserver"),
                        );
                        return None;
                    }
                },
            };
            let e = Endpoint { host, port };
            prov.push(Provenance {
                setting: "control_plane_endpoint",
                value: e.to_string(),
                source: host_src,
            });
            return Some(e);
        }
        if let Some((d, dsrc)) = self.get("apiserver_loadbalancer_domain_name") {
            let host = d
                .string("apiserver_loadbalancer_domain_name")
                .map_err(|e| diags.push(e))
                .ok()?;
            let e = Endpoint {
                host,
                port: apiserver_port,
            };
            prov.push(Provenance {
                setting: "control_plane_endpoint",
                value: e.to_string(),
                source: dsrc,
            });
            return Some(e);
        }
        let cp = inv.first_control_plane();
        let from = if cp.vars.contains_key("access_ip") {
            "access_ip"
        } else {
            "ip"
        };
        let e = Endpoint {
            host: cp.access_ip.to_string(),
            port: apiserver_port,
        };
        prov.push(Provenance {
            setting: "control_plane_endpoint",
            value: e.to_string(),
            source: Source::Derived {
                from: format!("the first control plane `{}`'s {from}", cp.name),
            },
        });
        Some(e)
    }

    fn runtime(&self, diags: &mut Diagnostics, prov: &mut Vec<Provenance>) -> ContainerRuntime {
        let mut mirrors = Vec::new();
        if let Some((v, src)) = self.get("containerd_registries_mirrors") {
            match serde_json::from_value::<Vec<RegistryMirror>>((*v.value).clone()) {
                Ok(m) => {
                    for (i, mirror) in m.iter().enumerate() {
                        let valid = !mirror.prefix.is_empty()
                            && !mirror.prefix.contains("..")
                            && mirror.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-.:_".contains(c));
                        if !valid {
                            diags.push(
                                Diagnostic::error(format!("entry {i}: prefix \"{}\" is not a registry host name", mirror.prefix))
                                    .at(&v.origin)
                                    .field("containerd_registries_mirrors"),
                            );
                        }
                        for h in &mirror.mirrors {
                            if !(h.host.starts_with("http://") || h.host.starts_with("https://")) {
                                diags.push(
                                    Diagnostic::error(format!("mirror host \"{}\" must start with http:// or https://", h.host))
                                        .at(&v.origin)
                                        .field("containerd_registries_mirrors"),
                                );
                            }
                        }
                    }
                    prov.push(Provenance {
                        setting: "registry_mirrors",
                        value: m.iter().map(|m| m.prefix.as_str()).collect::<Vec<_>>().join(", "),
                        source: src,
                    });
                    mirrors = m;
                }
                Err(e) => diags.push(
                    Diagnostic::error(format!("must be a list of {{prefix, mirrors: [{{host, capabilities, skip_verify}}]}}: {e}"))
                        .at(&v.origin)
                        .field("containerd_registries_mirrors"),
                ),
            }
        }
        ContainerRuntime {
            mirrors,
            config_path: "/etc/containerd/certs.d".to_owned(),
        }
    }
}
