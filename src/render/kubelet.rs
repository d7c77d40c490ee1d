//! kubelet's systemd unit, kubeadm's drop-in and crictl's configuration, for nodes that get
//! kubelet, kubeadm, kubectl and crictl as release binaries (a bundle built from a files
//! repository) rather than from the official packages, which would ship the same files.

use super::{RenderError, RenderedFile, Templates};
use serde::Serialize;

/// Where the binaries go: where the official packages put them.
pub const BIN_DIR: &str = "/usr/bin";
/// kubelet's unit, at the official package's path.
pub const UNIT_PATH: &str = "/usr/lib/systemd/system/kubelet.service";
/// kubeadm's drop-in for it.
pub const DROP_IN_PATH: &str = "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf";
/// crictl's configuration.
pub const CRICTL_PATH: &str = "/etc/crictl.yaml";

#[derive(Serialize)]
struct Ctx {
    bin_dir: &'static str,
}

/// The unit, the drop-in and `/etc/crictl.yaml`.
pub fn files(t: &Templates) -> Result<Vec<RenderedFile>, RenderError> {
    let ctx = Ctx { bin_dir: BIN_DIR };
    [
        ("kubelet/kubelet.service", UNIT_PATH),
        ("kubelet/10-kubeadm.conf", DROP_IN_PATH),
        ("kubelet/crictl.yaml", CRICTL_PATH),
    ]
    .into_iter()
    .map(|(name, path)| {
        Ok(RenderedFile {
            path: path.to_owned(),
            mode: 0o644,
            content: t.render(name, &ctx)?,
            sensitive: false,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_runs_the_installed_kubelet_with_kubeadms_flags() {
        let t = Templates::load().expect("templates");
        let f = files(&t).expect("render");
        let drop_in = &f[1].content;
        assert!(drop_in.contains("ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS"), "{drop_in}");
        assert!(drop_in.contains("EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env"));
        assert!(
            f[0].content
                .contains("ExecStart=/usr/bin/kubelet\nRestart=always")
        );
        assert!(
            f[2].content
                .contains("unix:///run/containerd/containerd.sock")
        );
    }
}
