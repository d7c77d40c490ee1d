//! What the cluster phases (`kubeadm/init`, the joins, `kubeconfig/fetch`, `cilium/install`,
//! `cilium/wait`, `cluster/verify`) run, built here so that the phase's run and its dry run use
//! the same functions.
//!
//! Secrets (the bootstrap token, the certificate key) exist only in memory here and in 0600
//! files on the nodes that are removed right after use; every message passes the
//! [`super::Redactor`] first.

use super::{HostChange, Input, Run, Upload, node::PackageSource};
use crate::inventory::Host;
use crate::phase::PhaseError;
use crate::render::{RenderedFile, Secrets, cilium, kubeadm};
use crate::ssh::shell::quote;
use serde_json::Value;

/// The admin kubeconfig on control planes.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// Where the chart and helm go on the first control plane when they come from a bundle.
pub const CHART_DIR: &str = "/var/cache/kubedrill/charts";

/// After a failed `kubeadm init`/`join`: the kubelet's last journal lines, because a kubelet
/// that never came up is the usual reason and kubeadm itself only says it timed out.
const KUBELET_JOURNAL_ON_FAILURE: &str = "if [ $rc -ne 0 ]; then echo '--- last lines of the kubelet journal ---' >&2; journalctl -u kubelet -n 15 --no-pager -o cat >&2 2>/dev/null || true; fi\n";

/// Why a CA certificate has no discovery hash.
#[derive(Debug, thiserror::Error)]
pub enum CaHashError {
    /// Not a PEM X.509 certificate.
    #[error("not a PEM X.509 certificate: {0}")]
    Pem(#[source] x509_cert::der::Error),
    /// Its public key does not encode.
    #[error("its public key does not encode as DER: {0}")]
    PublicKey(#[source] x509_cert::der::Error),
}

/// kubeadm's `--discovery-token-ca-cert-hash` of a PEM CA certificate: `sha256:` and the hex
/// SHA-256 of its DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(pem: &str) -> Result<String, CaHashError> {
    use sha2::Digest;
    use x509_cert::der::{DecodePem, Encode};
    let cert = x509_cert::Certificate::from_pem(pem.trim()).map_err(CaHashError::Pem)?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(CaHashError::PublicKey)?;
    let hex: String = sha2::Sha256::digest(&spki)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

/// Where kubedrill marks a kubeadm init/join it started (`.started`) and saw finish (`.done`).
pub const MARK_DIR: &str = "/var/lib/kubedrill";

/// Before `kubeadm init`/`join`: resume what an interrupted apply left. First the uploaded
/// config (with the token) is moved to a private name, `$cfg`, removed when the script ends:
/// the script of an interrupted apply may still be running on the node and removes only its own
/// copy, never the one just uploaded. A kubeadm still running from it (its SSH connection was
/// cut) is waited for, then private copies that interrupted scripts left (one killed by a signal
/// never ran its clean-up: seen on the lab) are removed; if that kubeadm finished the job
/// (`done_test`), nothing more is done. If kubedrill
/// itself started a kubeadm here that never finished, its half-written files would fail
/// kubeadm's preflight, so `kubeadm reset -f` clears them first — only then: files kubedrill did
/// not mark (a cluster made by someone else) are never reset.
fn resume_prologue(what: &str, done_test: &str, config: &str) -> String {
    format!(
        "cfg=$(mktemp {config}.XXXXXX) && mv -f {config} \"$cfg\" || {{ echo '{config} is missing' >&2; exit 1; }}\n\
         trap 'rm -f \"$cfg\"' EXIT\n\
         mkdir -p {MARK_DIR}\n\
         i=0; while pgrep -x kubeadm >/dev/null; do [ $i -eq 0 ] && echo 'waiting for a kubeadm {what} still running from an interrupted apply' >&2; i=$((i+1)); [ $i -lt 900 ] || break; sleep 1; done\n\
         for f in {config}.??????; do [ \"$f\" = \"$cfg\" ] || rm -f \"$f\"; done\n\
         if {done_test}; then touch {MARK_DIR}/kubeadm-{what}.done; exit 0; fi\n\
         if [ -f {MARK_DIR}/kubeadm-{what}.started ] && [ ! -f {MARK_DIR}/kubeadm-{what}.done ]; then\n\
         echo 'an earlier kubeadm {what} by kubedrill did not finish: kubeadm reset -f before trying again' >&2\n\
         kubeadm reset -f >/dev/null 2>&1 || true\n\
         fi\n\
         touch {MARK_DIR}/kubeadm-{what}.started\n"
    )
}

/// After `kubeadm init`/`join` (`rc` set): mark success.
fn mark_done(what: &str) -> String {
    format!("[ $rc -ne 0 ] || touch {MARK_DIR}/kubeadm-{what}.done\n")
}

/// stderr lines kept from a failed kubeadm run (then condensed by [`kubeadm_failure_summary`]).
pub(crate) const KUBEADM_ERROR_LINES: usize = 80;

/// kubeadm's own time limit (`kubedrill_kubeadm_timeout` or 4 minutes per wait) plus the
/// image checks and certificate work around the waits.
fn kubeadm_timeout_secs(input: &Input<'_>) -> u64 {
    let minutes = input
        .spec
        .kubeadm_timeout
        .as_deref()
        .and_then(crate::spec::timeout_minutes)
        .unwrap_or(4);
    (minutes * 60 * 2).max(900)
}

/// What matters in a failed kubeadm run's stderr: its `[ERROR …]` preflight lines and its
/// `error execution phase …` line, then the kubelet journal's tail; the rest (progress lines,
/// the `--v=5` advice) is dropped. Falls back to the last 12 lines.
pub fn kubeadm_failure_summary(stderr: &str) -> String {
    let mut keep: Vec<&str> = Vec::new();
    let mut journal = false;
    for l in stderr.lines() {
        let t = l.trim();
        if t.starts_with("--- last lines of the kubelet journal") {
            journal = true;
        }
        if journal
            || t.starts_with("[ERROR")
            || t.starts_with("error execution phase")
            || t.starts_with("error: ")
            || t.contains("timed out waiting")
            || t.contains("context deadline exceeded")
        {
            keep.push(l);
        }
    }
    if keep.is_empty() {
        let all: Vec<&str> = stderr.lines().collect();
        keep = all[all.len().saturating_sub(12)..].to_vec();
    }
    keep.join("\n")
}

/// The "kubeadm missing" precondition, with the fix that fits the package source.
fn kubeadm_precondition(input: &Input<'_>) -> (String, String) {
    let why = match input.source {
        PackageSource::Bundle(b) if !b.has_kubernetes() => format!(
            "no package source for kubeadm: it is not installed, and the bundle {} has no kubelet/kubeadm/kubectl (it was built without --kubernetes). Build a bundle with `kubedrill bundle build --kubernetes {}` on a connected machine",
            b.dir.display(),
            input.spec.kubernetes
        ),
        PackageSource::Bundle(_) => {
            "kubeadm is not installed although the bundle has it: run node/packages (it may have been skipped)".into()
        }
        PackageSource::Online => {
            "no package source for kubeadm: it is not installed (node/packages installs it from pkgs.k8s.io, or pass --bundle DIR)".into()
        }
    };
    ("command -v kubeadm >/dev/null".into(), why)
}

pub fn random_token() -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| A[rand::random_range(0..A.len())] as char)
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `kubeadm init` on the first control plane, from its rendered config (with `secrets`).
pub fn init_change(input: &Input<'_>, secrets: &Secrets) -> Result<HostChange, PhaseError> {
    let file = kubeadm::init(&input.templates, input.spec, input.inv, secrets)?;
    let mut files = vec![file.clone()];
    files.extend(kubeadm::patch_files(input.spec)?);
    let upload = if input.inv.control_planes().count() > 1 {
        " --upload-certs"
    } else {
        ""
    };
    let f = quote(&file.path);
    Ok(HostChange {
        precondition: Some(kubeadm_precondition(input)),
        check: init_done_check(),
        files,
        uploads: Vec::new(),
        // The config (with the token and certificate key) is removed whatever happens.
        apply: format!(
            "{}kubeadm init --config \"$cfg\"{upload}; rc=$?\n{KUBELET_JOURNAL_ON_FAILURE}{}exit $rc\n",
            resume_prologue(
                "init",
                &format!("[ -f {ADMIN_CONF} ] && {}", init_done_test()),
                &f
            ),
            mark_done("init"),
        ),
        apply_label: format!(
            "kubeadm init --config {}{upload}",
            kubeadm::INIT_CONFIG_PATH
        ),
        timeout_secs: kubeadm_timeout_secs(input),
        error_lines: KUBEADM_ERROR_LINES,
    })
}

/// Init is done when `admin.conf` exists and either kubedrill's init finished (its mark, removed
/// by `reset`) or the API server answers `/readyz` (a cluster kubeadm initialised before
/// kubedrill kept marks). The mark comes first: a busy API server that does not answer in time
/// is no reason to run `kubeadm init` on a control plane that has one — the eighth lab run did,
/// and kubeadm's preflight refused (ports in use, manifests present).
fn init_done_test() -> String {
    format!(
        "{{ [ -f {MARK_DIR}/kubeadm-init.done ] || kubectl --kubeconfig {ADMIN_CONF} get --raw /readyz >/dev/null 2>&1; }}"
    )
}

/// The "already done" check of `kubeadm/init` ([`init_done_test`], saying why not).
fn init_done_check() -> String {
    format!(
        "[ -f {ADMIN_CONF} ] || {{ echo 'no {ADMIN_CONF}'; exit 1; }}\n\
         {} || {{ echo 'no finished kubeadm init by kubedrill, and the API server does not answer'; exit 1; }}\n",
        init_done_test()
    )
}

/// `kubeadm join` of one node, from its rendered config (with `secrets`).
pub fn join_change(
    input: &Input<'_>,
    host: &Host,
    secrets: &Secrets,
) -> Result<HostChange, PhaseError> {
    let file = kubeadm::join(&input.templates, input.spec, input.inv, host, secrets)?;
    let f = quote(&file.path);
    let mut files = vec![file];
    files.extend(kubeadm::patch_files(input.spec)?);
    Ok(HostChange {
        precondition: Some(kubeadm_precondition(input)),
        check: "[ -f /etc/kubernetes/kubelet.conf ] || { echo 'not joined'; exit 1; }\n".into(),
        files,
        uploads: Vec::new(),
        apply: format!(
            "{}kubeadm join --config \"$cfg\"; rc=$?\n{KUBELET_JOURNAL_ON_FAILURE}{}exit $rc\n",
            resume_prologue("join", "[ -f /etc/kubernetes/kubelet.conf ]", &f),
            mark_done("join"),
        ),
        apply_label: format!("kubeadm join --config {}", kubeadm::JOIN_CONFIG_PATH),
        timeout_secs: kubeadm_timeout_secs(input),
        error_lines: KUBEADM_ERROR_LINES,
    })
}

/// The values to install: the rendered ones with the effective settings of the kernel verdicts
/// applied (a feature no node can run is turned down, as `check` printed).
pub fn effective_values(input: &Input<'_>, reports: &[crate::kernel::NodeReport]) -> Value {
    let mut v = cilium::values(input.spec, input.inv.hosts.len());
    if reports.is_empty() {
        return v;
    }
    let eff = crate::kernel::effective(input.spec, reports);
    for e in eff.changed() {
        let val = match e.effective.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            s if !s.contains(' ') => Value::String(s.to_string()),
            _ => continue, // "cannot be enabled": preflight/kernel stopped or the user allowed it
        };
        set_path(&mut v, &e.key, val);
    }
    v
}

fn set_path(v: &mut Value, key: &str, val: Value) {
    let mut cur = v;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let Some(m) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            m.insert((*p).to_string(), val);
            return;
        }
        cur = m
            .entry((*p).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// How many times `cilium/install` runs `helm upgrade --install` while the API server is what
/// fails it ([`crate::cilium::helm::TRANSIENT_API_ERRORS`]).
pub const HELM_ATTEMPTS: u32 = 3;

/// `cilium/install` on the first control plane: helm (from the bundle when the node has none),
/// the chart (bundle or repository), the values file, `helm upgrade --install`.
pub fn install_change(input: &Input<'_>, values: &Value) -> Result<HostChange, PhaseError> {
    let content = format!(
        "# Cilium {} values rendered by kubedrill (JSON is YAML)\n{}\n",
        input.spec.cilium,
        serde_json::to_string_pretty(values).map_err(|e| PhaseError::Refused(e.to_string()))?
    );
    let version = input.spec.cilium.to_string();
    let mut uploads = Vec::new();
    let mut prepare = String::new();
    const REPO: &str = "helm repo add cilium https://helm.cilium.io >/dev/null 2>&1 || true\nhelm repo update cilium >/dev/null\n";
    let chart = match input.source {
        PackageSource::Bundle(b) => {
            if let Some(h) = b.binary("helm") {
                uploads.push(Upload {
                    local: b.dir.join(&h.file),
                    remote: "/usr/local/lib/kubedrill/helm".into(),
                    sha256: h.sha256.clone(),
                    mode: 0o755,
                });
                prepare.push_str("command -v helm >/dev/null || install -m 0755 /usr/local/lib/kubedrill/helm /usr/local/bin/helm\n");
            }
            let (charts, installed) = bundle_charts(b, &version);
            uploads.extend(charts);
            installed.unwrap_or_else(|| {
                prepare.push_str(REPO);
                "cilium/cilium".into()
            })
        }
        PackageSource::Online => {
            prepare.push_str(REPO);
            "cilium/cilium".into()
        }
    };
    let values_file = RenderedFile {
        path: cilium::VALUES_PATH.into(),
        mode: 0o600,
        content,
        // 0600: cilium_extra_values can hold keys and passwords. Not `sensitive`: the
        // file stays on the node so a re-run can see it unchanged.
        sensitive: false,
    };
    let kc = format!("--kubeconfig {ADMIN_CONF}");
    let images_check = match input.source {
        PackageSource::Bundle(_) => images_present_check(&chart, &version, &input.spec.runtime),
        PackageSource::Online => String::new(),
    };
    Ok(HostChange {
        precondition: uploads
            .iter()
            .all(|u| !u.remote.ends_with("/helm"))
            .then(|| {
                (
                    "command -v helm >/dev/null".to_string(),
                    "no helm on the first control plane and none in the bundle: add it with `kubedrill bundle build --helm VERSION`, or install helm there".to_string(),
                )
            }),
        check: format!(
            "st=$(helm status cilium -n kube-system {kc} -o json 2>/dev/null) || {{ echo 'release cilium is not installed'; exit 1; }}\n\
             echo \"$st\" | grep -q '\"status\":\"deployed\"' || {{ echo 'release cilium is not deployed'; exit 1; }}\n\
             helm list -n kube-system {kc} -o json 2>/dev/null | grep -q '\"chart\":\"cilium-{version}\"' || {{ echo 'release cilium runs another chart version'; exit 1; }}\n"
        ),
        files: vec![values_file],
        uploads,
        // An overloaded API server (a small control plane, TCG) fails single requests: the same
        // declarative command again, up to HELM_ATTEMPTS times.
        apply: format!(
            "set -e\n{prepare}{images_check}{}",
            crate::cilium::helm::retrying(
                &format!(
                    "helm upgrade --install cilium {} --version {version} --namespace kube-system --values {} {kc}",
                    quote(&chart),
                    cilium::VALUES_PATH
                ),
                HELM_ATTEMPTS,
                20
            )
        ),
        apply_label: format!("helm upgrade --install cilium {chart} --version {version}"),
        timeout_secs: 600 * u64::from(HELM_ATTEMPTS),
        error_lines: 0,
    })
}

/// Offline, an image the chart would run that no node has and no registry mirror serves fails
/// the install before anything is deployed — instead of pods stuck in ImagePullBackOff (e.g. the
/// chart's Envoy DaemonSet when the bundle carries no Envoy image). The chart is rendered with
/// the same values helm is about to install; images are looked for in containerd on this node
/// (every node imported the same bundle).
fn images_present_check(
    chart: &str,
    version: &str,
    runtime: &crate::spec::ContainerRuntime,
) -> String {
    format!(
        "missing=''\n\
         have=$(ctr -n k8s.io images ls -q)\n\
         for img in $(helm template cilium {} --version {version} --namespace kube-system --values {} \\\n\
           | sed -nE 's/^[[:space:]]*image:[[:space:]]*\"?([^\"[:space:]]+)\"?.*$/\\1/p' | sort -u); do\n\
           case \"${{img%%/*}}\" in {}) continue ;; esac\n\
           printf '%s\\n' \"$have\" | grep -qxF \"$img\" || missing=\"$missing $img\"\n\
         done\n\
         if [ -n \"$missing\" ]; then\n\
           echo \"the chart would run images that no node has and no registry mirror serves:$missing\" >&2\n\
           echo \"add them to the bundle (--image), name a mirror (containerd_registries_mirrors), or turn the component off in cilium_extra_values (e.g. envoy.enabled: false)\" >&2\n\
           exit 1\n\
         fi\n",
        quote(chart),
        cilium::VALUES_PATH,
        if runtime.mirrors.is_empty() {
            "''".to_owned()
        } else {
            runtime
                .mirrors
                .iter()
                .map(|m| quote(&m.prefix))
                .collect::<Vec<_>>()
                .join("|")
        }
    )
}

/// A kube client for the cluster: the fetched admin kubeconfig, with the API server reached
/// through the first control plane's SSH connection (TLS still verified against the
/// kubeconfig's server name).
pub async fn kube_client(
    run: &Run<'_>,
) -> Result<(kube::Client, crate::ssh::forward::Forward), String> {
    let Some(s) = run.sessions.get(&run.input.first_cp()).cloned() else {
        return Err("no SSH session to the first control plane".into());
    };
    let kubeconfig = run.opts.state_dir.join("admin.conf");
    if !kubeconfig.exists() {
        return Err(format!(
            "{} does not exist: kubeconfig/fetch has not run",
            kubeconfig.display()
        ));
    }
    crate::k8s::client::client_via_ssh(&kubeconfig, s, std::time::Duration::from_secs(15))
        .await
        .map_err(|e| e.to_string())
}

/// Every chart of the bundle, uploaded to [`CHART_DIR`] on the control plane, and the remote
/// archive of `version` when the bundle has it. The others go along for `drill run`, which
/// upgrades to them from that node.
fn bundle_charts(b: &crate::bundle::Bundle, version: &str) -> (Vec<Upload>, Option<String>) {
    let mut installed = None;
    let uploads = b
        .manifest
        .charts
        .iter()
        .filter_map(|c| {
            let name = std::path::Path::new(&c.file).file_name()?.to_string_lossy();
            let remote = format!("{CHART_DIR}/{name}");
            if b.chart(version) == Some(c) {
                installed = Some(remote.clone());
            }
            Some(Upload {
                local: b.dir.join(&c.file),
                remote,
                sha256: c.sha256.clone(),
                mode: 0o644,
            })
        })
        .collect();
    (uploads, installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_chart_goes_to_the_control_plane() {
        let chart = |v: &str| crate::bundle::Artifact {
            file: format!("charts/cilium-{v}.tgz"),
            sha256: format!("sum-{v}"),
            size: 1,
            source: "file:///charts".into(),
        };
        let manifest: crate::bundle::Manifest = serde_json::from_value(serde_json::json!({
            "schema": crate::bundle::SCHEMA, "created": "2026-12-06T00:00:00Z", "family": "deb",
            "release": "bookworm", "requested": [], "packages": [],
            "charts": [chart("1.18.11"), chart("1.19.7")],
        }))
        .expect("manifest");
        let b = crate::bundle::Bundle {
            dir: "/b".into(),
            manifest,
        };
        let (up, installed) = bundle_charts(&b, "1.18.11");
        assert_eq!(
            installed.as_deref(),
            Some("/var/cache/kubedrill/charts/cilium-1.18.11.tgz")
        );
        let remotes: Vec<&str> = up.iter().map(|u| u.remote.as_str()).collect();
        assert_eq!(
            remotes,
            [
                "/var/cache/kubedrill/charts/cilium-1.18.11.tgz",
                "/var/cache/kubedrill/charts/cilium-1.19.7.tgz"
            ]
        );
        assert_eq!(up[1].sha256, "sum-1.19.7");
        assert_eq!(
            up[1].local,
            std::path::Path::new("/b/charts/cilium-1.19.7.tgz")
        );
        // A version the bundle lacks: the charts still go along, helm takes the online repo.
        assert_eq!(bundle_charts(&b, "1.20.2").1, None);
    }

    #[test]
    fn token_and_key_shapes() {
        let t = random_token();
        let (a, b) = t.split_once('.').expect("dot");
        assert_eq!((a.len(), b.len()), (6, 16));
        assert!(
            t.chars()
                .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(random_hex(32).len(), 64);
        assert_ne!(random_token(), random_token());
    }

    #[test]
    fn set_path_creates_nested_keys() {
        let mut v = serde_json::json!({"loadBalancer": {"mode": "dsr"}});
        set_path(
            &mut v,
            "loadBalancer.acceleration",
            Value::String("best-effort".into()),
        );
        set_path(&mut v, "bpf.masquerade", Value::Bool(false));
        assert_eq!(v["loadBalancer"]["acceleration"], "best-effort");
        assert_eq!(v["loadBalancer"]["mode"], "dsr");
        assert_eq!(v["bpf"]["masquerade"], false);
    }

    #[test]
    fn kubeadm_failures_keep_its_errors_and_the_kubelet_journal() {
        // kubeadm 1.34's preflight failure, then the kubelet journal the apply script appends.
        let stderr = "[init] Using Kubernetes version: v1.34.4
[preflight] Running pre-flight checks
[preflight] Some fatal errors occurred:
\t[ERROR Mem]: the system RAM (1465 MB) is less than the minimum 1700 MB
\t[ERROR FileExisting-crictl]: crictl not found in system path
[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`
error execution phase preflight: preflight checks failed
To see the stack trace of this error execute with --v=5 or higher
--- last lines of the kubelet journal ---
E1206 02:01:02 run.go:72] \"command failed\" err=\"failed to load kubelet config file, path: /var/lib/kubelet/config.yaml\"";
        let s = kubeadm_failure_summary(stderr);
        assert_eq!(
            s.lines().collect::<Vec<_>>(),
            [
                "\t[ERROR Mem]: the system RAM (1465 MB) is less than the minimum 1700 MB",
                "\t[ERROR FileExisting-crictl]: crictl not found in system path",
                "error execution phase preflight: preflight checks failed",
                "--- last lines of the kubelet journal ---",
                "E1206 02:01:02 run.go:72] \"command failed\" err=\"failed to load kubelet config file, path: /var/lib/kubelet/config.yaml\"",
            ]
        );
        // Nothing recognisable: the last lines as they are.
        assert_eq!(kubeadm_failure_summary("a\nb"), "a\nb");
    }

    #[test]
    fn offline_install_refuses_images_no_node_has() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path();
        // A chart that renders three images (one digest-pinned, as the chart's Envoy is), and a
        // containerd that holds the two the bundle imported.
        std::fs::write(
            bin.join("helm"),
            "#!/bin/sh\ncat <<'Y'\n      containers:\n        - name: cilium-agent\n          image: \"quay.io/cilium/cilium:v1.19.7\"\n          image: quay.io/cilium/operator-generic:v1.19.7\n          image: \"quay.io/cilium/cilium-envoy:v1.35.9@sha256:abc\"\n          imagePullPolicy: IfNotPresent\nY\n",
        )
        .expect("helm");
        std::fs::write(
            bin.join("ctr"),
            "#!/bin/sh\nprintf '%s\\n' quay.io/cilium/cilium:v1.19.7 quay.io/cilium/operator-generic:v1.19.7 registry.k8s.io/pause:3.10.1\n",
        )
        .expect("ctr");
        for f in ["helm", "ctr"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(f), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let run = |mirrors: Vec<crate::spec::RegistryMirror>| {
            let rt = crate::spec::ContainerRuntime {
                mirrors,
                config_path: "/etc/containerd/certs.d".into(),
            };
            let script = format!(
                "{}echo INSTALL\n",
                images_present_check("/c/cilium-1.19.7.tgz", "1.19.7", &rt)
            );
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .expect("sh")
        };
        let o = run(Vec::new());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(
            err.contains(
                "no registry mirror serves: quay.io/cilium/cilium-envoy:v1.35.9@sha256:abc\n"
            ),
            "{err}"
        );
        assert!(err.contains("envoy.enabled: false"), "{err}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains("INSTALL"));
        // A mirror for quay.io serves what the nodes lack: helm may go ahead.
        let o = run(vec![crate::spec::RegistryMirror {
            prefix: "quay.io".into(),
            mirrors: Vec::new(),
        }]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("INSTALL"));
    }

    #[test]
    fn an_interrupted_kubeadm_is_awaited_or_reset_only_when_kubedrill_started_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = dir.path().join("kubeadm-init.yaml");
        let config = config.display().to_string();
        let p = resume_prologue("init", "false", &config);
        assert!(p.contains("while pgrep -x kubeadm"), "{p}");
        assert!(
            p.contains("if [ -f /var/lib/kubedrill/kubeadm-init.started ] && [ ! -f /var/lib/kubedrill/kubeadm-init.done ]"),
            "{p}"
        );
        // The uploaded config (with the token) is taken to a private name first.
        assert!(
            p.starts_with(&format!("cfg=$(mktemp {config}.XXXXXX) && mv -f {config}")),
            "{p}"
        );
        let script = format!("{p}test -f \"$cfg\" || exit 9\nexit 7\n");
        // Run it for real in a scratch root: no marks, so no reset and the start is marked.
        let marks = dir.path().join("marks");
        let s = script.replace(MARK_DIR, &marks.display().to_string());
        let run = |s: &str| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(s)
                .env("PATH", "/usr/bin:/bin")
                .output()
                .expect("sh")
        };
        std::fs::write(&config, "token: secret\n").expect("config");
        let o = run(&s);
        assert_eq!(o.status.code(), Some(7), "{o:?}");
        assert!(marks.join("kubeadm-init.started").exists());
        assert!(!String::from_utf8_lossy(&o.stderr).contains("kubeadm reset"));
        // Neither the uploaded config nor its private copy outlives the script.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("kubeadm-init"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A private copy an interrupted script left behind is removed by the next one.
        std::fs::write(&config, "token: secret\n").expect("config");
        let stale = format!("{config}.AbC123");
        std::fs::write(&stale, "token: secret\n").expect("stale");
        let o = run(&s);
        assert_eq!(o.status.code(), Some(7), "{o:?}");
        assert!(!std::path::Path::new(&stale).exists(), "stale copy left");
        // No config (another run's clean-up took it): a clear error, nothing else done.
        let o = run(&s);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("kubeadm-init.yaml is missing"));
        // Started but never done: the next attempt says it resets first.
        std::fs::write(&config, "token: secret\n").expect("config");
        let o = run(&s.replace("kubeadm reset -f >/dev/null 2>&1", "echo RESET >&2"));
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("did not finish: kubeadm reset -f before trying again")
                && String::from_utf8_lossy(&o.stderr).contains("RESET"),
            "{o:?}"
        );
    }

    /// The check run by `sh` in a scratch root, with a `kubectl` that never answers: the mark
    /// of a finished init (with `admin.conf`) is enough, and nothing else is.
    #[test]
    fn init_is_done_by_its_mark_even_when_the_api_server_is_slow() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().display().to_string();
        let bin = dir.path().join("bin");
        crate::files::write_atomic(&bin.join("kubectl"), b"#!/bin/sh\nexit 1\n", 0o755)
            .expect("kubectl");
        let check = init_done_check()
            .replace(MARK_DIR, &format!("{root}/marks"))
            .replace(ADMIN_CONF, &format!("{root}/admin.conf"));
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(&check)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .expect("sh")
        };
        let o = run();
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("no "), "{o:?}");
        std::fs::write(dir.path().join("admin.conf"), "x").expect("admin.conf");
        let o = run();
        assert_eq!(o.status.code(), Some(1), "no mark, no answer: {o:?}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("does not answer"));
        std::fs::create_dir_all(dir.path().join("marks")).expect("marks");
        std::fs::write(dir.path().join("marks/kubeadm-init.done"), "").expect("mark");
        assert_eq!(run().status.code(), Some(0), "the mark is enough");
    }

    #[test]
    fn ca_cert_hash_is_what_openssl_computes() {
        // `openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | sha256sum`
        let pem = include_str!("../../tests/data/tls/ca.crt");
        assert_eq!(
            ca_cert_hash(pem).expect("hash"),
            "sha256:3e6db4a350b26b130479b629d41f7011f86419ebb99dfd181c9b34399942a555"
        );
        let pem = include_str!("../../tests/data/tls/apiserver.crt");
        assert_eq!(
            ca_cert_hash(pem).expect("hash"),
            "sha256:4b3df06aced01d67d46d623176294ee7a33d05a0051408875fb2dbf9c1c5124f"
        );
        let e = ca_cert_hash("not a certificate").expect_err("no PEM");
        assert!(matches!(e, CaHashError::Pem(_)), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    }
}
