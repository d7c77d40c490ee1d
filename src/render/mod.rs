//! Rendering: kubeadm and containerd files from tera templates in `templates/` (embedded in the
//! binary), and the Cilium Helm values for the chart version in use. The drill reports' HTML
//! templates (`templates/report/`) are loaded here too, with HTML autoescape.
//!
//! Every string from the inventory goes through `json_encode` (a JSON string is a valid YAML and
//! TOML string), so an inventory value cannot inject keys into a rendered file.

pub mod cilium;
pub mod containerd;
pub mod kubeadm;
pub mod kubelet;

use serde::Serialize;
use std::fmt;

/// Errors while rendering.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed (a bug in a template, not in the input).
    #[error("template {name}: {message}")]
    Template {
        /// Template name.
        name: String,
        /// The tera error chain.
        message: String,
    },
    /// Serialising values failed.
    #[error("serialising {what}: {message}")]
    Serialize {
        /// What.
        what: String,
        /// Why.
        message: String,
    },
}

/// One file kubedrill would write, locally or on a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedFile {
    /// Absolute path on the node (or a local path for local files).
    pub path: String,
    /// Unix mode bits.
    pub mode: u32,
    /// The content; secrets appear only as placeholders until apply fills them in on the node.
    pub content: String,
    /// True when the file holds secrets at apply time (written 0600, never printed).
    pub sensitive: bool,
}

/// Secrets that go into kubeadm files. `plan` uses [`Secrets::placeholders`]; apply creates real
/// ones on the first control plane and writes them only into 0600 files on the nodes.
#[derive(Clone, Serialize)]
pub struct Secrets {
    /// Bootstrap token (`abcdef.0123456789abcdef`).
    pub bootstrap_token: String,
    /// Certificate key for `--upload-certs` (hex, 64 characters).
    pub certificate_key: String,
    /// `sha256:<hex>` of the cluster CA's public key (not secret, known only after init).
    pub ca_cert_hash: String,
}

impl Secrets {
    /// Placeholders that cannot be mistaken for real values.
    pub fn placeholders() -> Self {
        Secrets {
            bootstrap_token: "<bootstrap-token: created at apply, never printed>".to_owned(),
            certificate_key: "<certificate-key: created at apply, never printed>".to_owned(),
            ca_cert_hash: "sha256:<ca-cert-hash: read from the first control plane at apply>"
                .to_owned(),
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

/// The template set, loaded once.
pub struct Templates {
    tera: tera::Tera,
}

/// Templates compiled into the binary, by name.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "kubeadm/init-v1beta3.yaml",
        include_str!("../../templates/kubeadm/init-v1beta3.yaml.tera"),
    ),
    (
        "kubeadm/init-v1beta4.yaml",
        include_str!("../../templates/kubeadm/init-v1beta4.yaml.tera"),
    ),
    (
        "kubeadm/join-v1beta3.yaml",
        include_str!("../../templates/kubeadm/join-v1beta3.yaml.tera"),
    ),
    (
        "kubeadm/join-v1beta4.yaml",
        include_str!("../../templates/kubeadm/join-v1beta4.yaml.tera"),
    ),
    (
        "containerd/config.toml",
        include_str!("../../templates/containerd/config.toml.tera"),
    ),
    (
        "containerd/hosts.toml",
        include_str!("../../templates/containerd/hosts.toml.tera"),
    ),
    (
        "kubelet/kubelet.service",
        include_str!("../../templates/kubelet/kubelet.service.tera"),
    ),
    (
        "kubelet/10-kubeadm.conf",
        include_str!("../../templates/kubelet/10-kubeadm.conf.tera"),
    ),
    (
        "kubelet/crictl.yaml",
        include_str!("../../templates/kubelet/crictl.yaml.tera"),
    ),
    (
        "libvirt/domain.xml",
        include_str!("../../templates/libvirt/domain.xml.tera"),
    ),
    (
        "cloud-init/user-data.yaml",
        include_str!("../../templates/cloud-init/user-data.yaml.tera"),
    ),
    (
        "cloud-init/network-config.yaml",
        include_str!("../../templates/cloud-init/network-config.yaml.tera"),
    ),
    (
        "libvirt/network.xml",
        include_str!("../../templates/libvirt/network.xml.tera"),
    ),
    (
        "report/report.html",
        include_str!("../../templates/report/report.html.tera"),
    ),
    (
        "report/index.html",
        include_str!("../../templates/report/index.html.tera"),
    ),
];

impl Templates {
    /// Load the embedded templates. Autoescape is on only for `.html` templates (the drill
    /// reports, where every value is text to escape). It is off for everything else: YAML and
    /// TOML go through `json_encode`, libvirt XML through `escape_xml`, each value deliberately.
    pub fn load() -> Result<Self, RenderError> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![".html"]);
        // Replaces tera's own: also escapes the characters YAML 1.1 readers treat as line breaks.
        tera.register_filter("json_encode", json_encode);
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .map_err(|e| RenderError::Template {
                name: "(loading)".to_owned(),
                message: error_chain(&e),
            })?;
        Ok(Templates { tera })
    }

    /// Render one template with a serialisable context.
    pub fn render(&self, name: &str, ctx: &impl Serialize) -> Result<String, RenderError> {
        let ctx = tera::Context::from_serialize(ctx).map_err(|e| RenderError::Template {
            name: name.to_owned(),
            message: error_chain(&e),
        })?;
        self.tera
            .render(name, &ctx)
            .map_err(|e| RenderError::Template {
                name: name.to_owned(),
                message: error_chain(&e),
            })
    }
}

/// JSON-encode a value for YAML/TOML, escaping U+0085, U+2028 and U+2029 (valid JSON escapes),
/// which serde_json leaves raw and YAML 1.1 readers (Go's yaml.v2, PyYAML) treat as line breaks.
fn json_encode(
    v: &tera::Value,
    _args: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let s = serde_json::to_string(v).map_err(|e| tera::Error::msg(e.to_string()))?;
    Ok(tera::Value::String(escape_yaml_breaks(&s)))
}

/// Replace the Unicode line and paragraph separators and NEL with `\uXXXX` escapes.
pub fn escape_yaml_breaks(s: &str) -> String {
    s.replace('\u{85}', "\\u0085")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
