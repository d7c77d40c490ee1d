//! containerd `config.toml` (systemd cgroups, registry mirrors through `certs.d/`) and one
//! `hosts.toml` per mirrored registry.

use super::{RenderError, RenderedFile, Templates};
use crate::spec::{ClusterSpec, Version};
use serde::Serialize;

/// Where containerd reads its configuration.
pub const CONFIG_PATH: &str = "/etc/containerd/config.toml";

/// The pause image kubeadm expects for a Kubernetes minor, from `kube_image_repo`.
pub fn sandbox_image_from(repo: &str, k: Version) -> String {
    let default = sandbox_image(k);
    let tag = default.rsplit(':').next().unwrap_or("3.10.1");
    format!("{repo}/pause:{tag}")
}

/// The pause image kubeadm expects for a Kubernetes minor (from registry.k8s.io).
pub fn sandbox_image(k: Version) -> String {
    let tag = match k.minor_pair() {
        (1, ..=22) => "3.5",
        (1, 23) => "3.6",
        (1, 24) => "3.7",
        (1, 25) => "3.8",
        (1, 26..=30) => "3.9",
        (1, 31..=33) => "3.10",
        _ => "3.10.1",
    };
    format!("registry.k8s.io/pause:{tag}")
}

#[derive(Serialize)]
struct ConfigCtx<'a> {
    sandbox_image: String,
    config_path: &'a str,
}

#[derive(Serialize)]
struct HostsCtx<'a> {
    prefix: &'a str,
    server: String,
    mirrors: &'a [crate::spec::MirrorHost],
}

/// `config.toml` and the `hosts.toml` files of every mirrored registry.
pub fn files(t: &Templates, spec: &ClusterSpec) -> Result<Vec<RenderedFile>, RenderError> {
    let mut out = vec![RenderedFile {
        path: CONFIG_PATH.to_owned(),
        mode: 0o644,
        content: t.render(
            "containerd/config.toml",
            &ConfigCtx {
                sandbox_image: sandbox_image_from(&spec.image_repo, spec.kubernetes),
                config_path: &spec.runtime.config_path,
            },
        )?,
        sensitive: false,
    }];
    for m in &spec.runtime.mirrors {
        // docker.io's real endpoint is registry-1.docker.io (containerd's own convention).
        let server = if m.prefix == "docker.io" {
            "https://registry-1.docker.io".to_owned()
        } else {
            format!("https://{}", m.prefix)
        };
        out.push(RenderedFile {
            path: format!("{}/{}/hosts.toml", spec.runtime.config_path, m.prefix),
            mode: 0o644,
            content: t.render(
                "containerd/hosts.toml",
                &HostsCtx {
                    prefix: &m.prefix,
                    server,
                    mirrors: &m.mirrors,
                },
            )?,
            sensitive: false,
        });
    }
    Ok(out)
}
