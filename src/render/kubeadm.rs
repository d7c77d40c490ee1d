//! kubeadm `InitConfiguration`/`ClusterConfiguration`/`KubeletConfiguration` and
//! `JoinConfiguration` in the config API the target Kubernetes needs.

use super::{RenderError, RenderedFile, Secrets, Templates};
use crate::inventory::{Host, Inventory, NodeRole};
use crate::spec::{ClusterSpec, KubeadmApi};
use serde::Serialize;

/// Where kubedrill puts kubeadm's config on a node.
pub const INIT_CONFIG_PATH: &str = "/etc/kubernetes/kubedrill/kubeadm-init.yaml";
/// Where kubedrill puts a join config on a node.
pub const JOIN_CONFIG_PATH: &str = "/etc/kubernetes/kubedrill/kubeadm-join.yaml";

#[derive(Serialize)]
struct NodeCtx<'a> {
    name: &'a str,
    ip: String,
    role: &'static str,
    control_plane: bool,
    /// A control plane that also runs workloads: no control-plane taint.
    untaint: bool,
}

#[derive(Serialize)]
struct Ctx<'a> {
    node: NodeCtx<'a>,
    kubernetes_version: String,
    kubernetes_version_tag: String,
    cluster_name: &'a str,
    endpoint: String,
    apiserver_port: u16,
    pod_cidr: String,
    service_cidr: String,
    cert_sans: Vec<String>,
    upload_certs: bool,
    secrets: &'a Secrets,
    /// `imageRepository`, when not kubeadm's default.
    image_repo: Option<&'a str>,
    /// kubeadm's waits (`15m0s`), when raised.
    timeout: Option<String>,
    /// Leader-election flags per component (`controllerManager`, `scheduler`), when set.
    leader_elect: Vec<LeaderArgs>,
    /// kubeadm's `patches.directory`, when the inventory has `kubeadm_patches`.
    patches_dir: Option<&'static str>,
    /// Kubespray's `kubeadm_ignore_preflight_errors`, into `nodeRegistration` as Kubespray does.
    ignore_preflight_errors: &'a [String],
}

/// The `extraArgs` of one component's leader election.
#[derive(Serialize)]
struct LeaderArgs {
    /// `controllerManager` or `scheduler` (the ClusterConfiguration key).
    component: &'static str,
    /// `--leader-elect-lease-duration`, e.g. `60s`.
    lease_duration: String,
    /// `--leader-elect-renew-deadline`.
    renew_deadline: String,
}

fn api_suffix(api: KubeadmApi) -> &'static str {
    match api {
        KubeadmApi::V1beta3 => "v1beta3",
        KubeadmApi::V1beta4 => "v1beta4",
    }
}

/// Names and addresses the API server certificate must cover: the endpoint, every control
/// plane's name, `ip` and `access_ip`, and `localhost`.
pub fn cert_sans(spec: &ClusterSpec, inv: &Inventory) -> Vec<String> {
    let mut sans: Vec<String> = vec![spec.endpoint.host.clone()];
    for h in inv.control_planes() {
        sans.push(h.name.clone());
        sans.push(h.ip.to_string());
        sans.push(h.access_ip.to_string());
    }
    sans.push("localhost".to_owned());
    sans.push("127.0.0.1".to_owned());
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

fn ctx<'a>(
    spec: &'a ClusterSpec,
    inv: &Inventory,
    host: &'a Host,
    secrets: &'a Secrets,
) -> Ctx<'a> {
    let control_plane = host.role.is_control_plane();
    Ctx {
        node: NodeCtx {
            name: &host.name,
            ip: host.ip.to_string(),
            role: host.role.label(),
            control_plane,
            untaint: host.role == NodeRole::ControlPlane { also_worker: true },
        },
        kubernetes_version: spec.kubernetes.to_string(),
        kubernetes_version_tag: format!("v{}", spec.kubernetes),
        cluster_name: &spec.cluster_name,
        endpoint: spec.endpoint.to_string(),
        apiserver_port: spec.apiserver_port,
        pod_cidr: spec.pod_cidr.to_string(),
        service_cidr: spec.service_cidr.to_string(),
        cert_sans: cert_sans(spec, inv),
        upload_certs: inv.control_planes().count() > 1,
        secrets,
        image_repo: (spec.image_repo != crate::spec::DEFAULT_IMAGE_REPO)
            .then_some(spec.image_repo.as_str()),
        timeout: spec
            .kubeadm_timeout
            .as_deref()
            .and_then(crate::spec::timeout_minutes)
            .map(|m| format!("{m}m0s")),
        leader_elect: [
            ("controllerManager", spec.leader_elect.controller_manager),
            ("scheduler", spec.leader_elect.scheduler),
        ]
        .into_iter()
        .filter_map(|(component, lease)| {
            lease.map(|l| LeaderArgs {
                component,
                lease_duration: format!("{}s", l.duration_secs),
                renew_deadline: format!("{}s", l.renew_deadline_secs),
            })
        })
        .collect(),
        patches_dir: (!spec.kubeadm_patches.is_empty())
            .then_some(crate::spec::patches::PATCHES_DIR),
        ignore_preflight_errors: &spec.kubeadm_ignore_preflight_errors,
    }
}

/// The files of `kubeadm_patches`, as Kubespray writes them, for every node kubeadm runs on.
pub fn patch_files(spec: &ClusterSpec) -> Result<Vec<RenderedFile>, RenderError> {
    spec.kubeadm_patches
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let body =
                serde_json::to_string_pretty(&p.patch).map_err(|e| RenderError::Serialize {
                    what: format!("kubeadm_patches[{i}]"),
                    message: e.to_string(),
                })?;
            Ok(RenderedFile {
                path: format!("{}/{}", crate::spec::patches::PATCHES_DIR, p.file_name(i)),
                mode: 0o600,
                content: format!(
                    "# kubeadm_patches[{i}], rendered by kubedrill (JSON is YAML)\n{body}\n"
                ),
                sensitive: false,
            })
        })
        .collect()
}

/// The init configuration for the first control plane.
pub fn init(
    t: &Templates,
    spec: &ClusterSpec,
    inv: &Inventory,
    secrets: &Secrets,
) -> Result<RenderedFile, RenderError> {
    let host = inv.first_control_plane();
    let name = format!("kubeadm/init-{}.yaml", api_suffix(spec.kubeadm_api));
    Ok(RenderedFile {
        path: INIT_CONFIG_PATH.to_owned(),
        mode: 0o600,
        content: t.render(&name, &ctx(spec, inv, host, secrets))?,
        sensitive: true,
    })
}

/// The join configuration for a node other than the first control plane.
pub fn join(
    t: &Templates,
    spec: &ClusterSpec,
    inv: &Inventory,
    host: &Host,
    secrets: &Secrets,
) -> Result<RenderedFile, RenderError> {
    let name = format!("kubeadm/join-{}.yaml", api_suffix(spec.kubeadm_api));
    Ok(RenderedFile {
        path: JOIN_CONFIG_PATH.to_owned(),
        mode: 0o600,
        content: t.render(&name, &ctx(spec, inv, host, secrets))?,
        sensitive: true,
    })
}
