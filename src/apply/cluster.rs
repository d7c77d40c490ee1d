//! The cluster phases: `kubeadm/init`, the joins, `kubeconfig/fetch`, `cilium/install`,
//! `cilium/wait` and `cluster/verify`.
//!
//! Secrets (the bootstrap token, the certificate key) exist only in memory here and in 0600
//! files on the nodes that are removed right after use; every message passes the
//! [`super::Redactor`] first.

use super::{Failure, HostChange, Outcome, Run, node::PackageSource};
use crate::render::{RenderedFile, Secrets, cilium, kubeadm};
use crate::ssh::{Command, Session, shell::quote};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// The admin kubeconfig on control planes.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// Where the chart and helm go on the first control plane when they come from a bundle.
pub const CHART_DIR: &str = "/var/cache/kubedrill/charts";

/// After a failed `kubeadm init`/`join`: the kubelet's last journal lines, because a kubelet
/// that never came up is the usual reason and kubeadm itself only says it timed out.
const KUBELET_JOURNAL_ON_FAILURE: &str = "if [ $rc -ne 0 ]; then echo '--- last lines of the kubelet journal ---' >&2; journalctl -u kubelet -n 15 --no-pager -o cat >&2 2>/dev/null || true; fi\n";

/// kubeadm's `--discovery-token-ca-cert-hash` of a PEM CA certificate: `sha256:` and the hex
/// SHA-256 of its DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(pem: &str) -> Result<String, String> {
    use sha2::Digest;
    use x509_cert::der::{DecodePem, Encode};
    let cert = x509_cert::Certificate::from_pem(pem.trim()).map_err(|e| e.to_string())?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| e.to_string())?;
    let hex: String = sha2::Sha256::digest(&spki)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

/// Where kubedrill marks a kubeadm init/join it started (`.started`) and saw finish (`.done`).
pub const MARK_DIR: &str = "/var/lib/kubedrill";

/// Before `kubeadm init`/`join`: resume what an interrupted apply left. A kubeadm still running
/// from it (its SSH connection was cut) is waited for; if that finished the job (`done_test`),
/// nothing more is done. If kubedrill itself started a kubeadm here that never finished, its
/// half-written files would fail kubeadm's preflight, so `kubeadm reset -f` clears them first —
/// only then: files kubedrill did not mark (a cluster made by someone else) are never reset.
fn resume_prologue(what: &str, done_test: &str, config: &str) -> String {
    format!(
        "mkdir -p {MARK_DIR}\n\
         i=0; while pgrep -x kubeadm >/dev/null; do [ $i -eq 0 ] && echo 'waiting for a kubeadm {what} still running from an interrupted apply' >&2; i=$((i+1)); [ $i -lt 900 ] || break; sleep 1; done\n\
         if {done_test}; then rm -f {config}; touch {MARK_DIR}/kubeadm-{what}.done; exit 0; fi\n\
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
const KUBEADM_ERROR_LINES: usize = 80;

/// kubeadm's own time limit (`kubedrill_kubeadm_timeout` or 4 minutes per wait) plus the
/// image checks and certificate work around the waits.
fn kubeadm_timeout_secs(run: &Run<'_>) -> u64 {
    let minutes = run
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
fn kubeadm_precondition(run: &Run<'_>) -> (String, String) {
    let why = match &run.opts.source {
        PackageSource::Bundle(b) if !b.has_kubernetes() => format!(
            "no package source for kubeadm: it is not installed, and the bundle {} has no kubelet/kubeadm/kubectl (it was built without --kubernetes). Build a bundle with `kubedrill bundle build --kubernetes {}` on a connected machine",
            b.dir.display(),
            run.spec.kubernetes
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

fn random_token() -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| A[rand::random_range(0..A.len())] as char)
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Run<'_> {
    fn first_cp(&self) -> (String, Option<Arc<Session>>) {
        let name = self.inv.first_control_plane().name.clone();
        let s = self.sessions.get(&name).cloned();
        (name, s)
    }

    fn record_one(&mut self, phase: &str, host: &str, r: Result<Outcome, Failure>, t: Instant) {
        self.record(phase, host, r, t.elapsed().as_secs_f64());
    }

    async fn one(&self, s: &Session, phase: &str, c: &HostChange) -> Result<Outcome, Failure> {
        let p = self.progress.host(phase, &s.destination().name);
        let r = super::run_change(s, phase, c, &self.redactor, &p).await;
        match &r {
            Ok(o) => p.finish(true, o.label()),
            Err(f) => p.finish(false, &f.command),
        }
        r
    }

    /// Run a read-only or secret-producing command; stdout is returned, never logged.
    async fn capture(
        &self,
        s: &Session,
        phase: &str,
        label: &str,
        script: &str,
    ) -> Result<String, Failure> {
        let host = s.destination().name.clone();
        let o = s
            .exec(&Command::new(script).privileged().label(label))
            .await
            .map_err(|e| super::exec_failure(&host, phase, label, &e, &self.redactor))?;
        if !o.success() {
            return Err(Failure {
                host,
                phase: phase.into(),
                command: label.into(),
                status: o.status,
                stderr: self.redactor.apply(&o.stderr_tail(6)),
                hint: None,
            });
        }
        Ok(o.stdout_text())
    }
}

/// `kubeadm/init` on the first control plane.
pub async fn init(run: &mut Run<'_>) {
    let phase = "kubeadm/init";
    let t = Instant::now();
    let (host, Some(s)) = run.first_cp() else {
        return;
    };
    let secrets = Secrets {
        bootstrap_token: random_token(),
        certificate_key: random_hex(32),
        ca_cert_hash: String::new(),
    };
    run.redactor.add(&secrets.bootstrap_token);
    run.redactor.add(&secrets.certificate_key);
    let file = match kubeadm::init(&run.templates, run.spec, run.inv, &secrets) {
        Ok(f) => f,
        Err(e) => {
            run.fail_all(phase, "render kubeadm init config", &e.to_string());
            return;
        }
    };
    let upload = if run.inv.control_planes().count() > 1 {
        " --upload-certs"
    } else {
        ""
    };
    let f = quote(&file.path);
    let change = HostChange {
        precondition: Some(kubeadm_precondition(run)),
        check: format!(
            "[ -f {ADMIN_CONF} ] || {{ echo 'no {ADMIN_CONF}'; exit 1; }}\n\
             kubectl --kubeconfig {ADMIN_CONF} get --raw /readyz >/dev/null 2>&1 || {{ echo 'the API server does not answer'; exit 1; }}\n"
        ),
        files: vec![file],
        uploads: Vec::new(),
        // The config (with the token and certificate key) is removed whatever happens.
        apply: format!(
            "{}kubeadm init --config {f}{upload}; rc=$?; rm -f {f}\n{KUBELET_JOURNAL_ON_FAILURE}{}exit $rc\n",
            resume_prologue(
                "init",
                &format!(
                    "[ -f {ADMIN_CONF} ] && kubectl --kubeconfig {ADMIN_CONF} get --raw /readyz >/dev/null 2>&1"
                ),
                &f
            ),
            mark_done("init"),
        ),
        apply_label: format!(
            "kubeadm init --config {}{upload}",
            kubeadm::INIT_CONFIG_PATH
        ),
        timeout_secs: kubeadm_timeout_secs(run),
        error_lines: KUBEADM_ERROR_LINES,
    };
    let mut r = run.one(&s, phase, &change).await;
    if let Err(f) = &mut r
        && f.command.starts_with("kubeadm init")
    {
        f.stderr = kubeadm_failure_summary(&f.stderr);
        f.hint = Some(format!(
            "a half-finished init leaves files behind: `kubedrill reset -i INVENTORY --only-host {host}` (kubeadm reset -f), then apply again"
        ));
    }
    run.record_one(phase, &host, r, t);
}

/// `kubeadm/join-control-plane` (one at a time) or `kubeadm/join-worker` (in batches).
pub async fn join(run: &mut Run<'_>, control_plane: bool) {
    let phase = if control_plane {
        "kubeadm/join-control-plane"
    } else {
        "kubeadm/join-worker"
    };
    let hosts: Vec<crate::inventory::Host> = if control_plane {
        run.inv.control_planes().skip(1).cloned().collect()
    } else {
        run.inv.workers().cloned().collect()
    };
    if hosts.is_empty() {
        run.skip_phase(phase, "no such nodes");
        return;
    }
    // Which still need to join (one round trip each).
    let mut pending = Vec::new();
    for h in &hosts {
        let Some(s) = run.sessions.get(&h.name).cloned() else {
            continue;
        };
        let t = Instant::now();
        match run
            .capture(
                &s,
                phase,
                "joined?",
                "test -f /etc/kubernetes/kubelet.conf && echo yes || echo no",
            )
            .await
        {
            Ok(o) if o.trim() == "yes" => run.record_one(phase, &h.name, Ok(Outcome::Unchanged), t),
            Ok(_) => pending.push((h.clone(), s)),
            Err(f) => run.record_one(phase, &h.name, Err(f), t),
        }
    }
    if pending.is_empty() || !run.failures.is_empty() {
        return;
    }
    // Fresh secrets from the first control plane: a token (kubeadm prints it on stdout, which is
    // captured, never shown), the CA hash, and for control planes the certificates re-uploaded
    // under a new key passed in a 0600 file.
    let (cp, Some(cps)) = run.first_cp() else {
        return;
    };
    let t = Instant::now();
    let token = match run
        .capture(
            &cps,
            phase,
            "kubeadm token create",
            "kubeadm token create --ttl 30m --description 'kubedrill join'",
        )
        .await
    {
        Ok(tok) => tok.trim().to_string(),
        Err(f) => return run.record_one(phase, &cp, Err(f), t),
    };
    run.redactor.add(&token);
    // The CA certificate is public; its key hash is computed here, so nodes need no openssl.
    let pem = match run
        .capture(
            &cps,
            phase,
            "read the cluster CA",
            "cat /etc/kubernetes/pki/ca.crt",
        )
        .await
    {
        Ok(p) => p,
        Err(f) => return run.record_one(phase, &cp, Err(f), t),
    };
    let hash = match ca_cert_hash(&pem) {
        Ok(h) => h,
        Err(e) => {
            let f = Failure {
                host: cp.clone(),
                phase: phase.into(),
                command: "read the cluster CA".into(),
                status: None,
                stderr: format!("/etc/kubernetes/pki/ca.crt: {e}"),
                hint: None,
            };
            return run.record_one(phase, &cp, Err(f), t);
        }
    };
    let mut secrets = Secrets {
        bootstrap_token: token,
        certificate_key: String::new(),
        ca_cert_hash: hash,
    };
    if control_plane {
        secrets.certificate_key = random_hex(32);
        run.redactor.add(&secrets.certificate_key);
        let init = match kubeadm::init(&run.templates, run.spec, run.inv, &secrets) {
            Ok(f) => f,
            Err(e) => return run.fail_all(phase, "render", &e.to_string()),
        };
        let f = quote(&init.path);
        let put = cps
            .upload(init.content.as_bytes(), &init.path, 0o600, true)
            .await
            .map_err(|e| {
                super::exec_failure(&cp, phase, "write kubeadm config", &e, &run.redactor)
            });
        if let Err(f) = put {
            return run.record_one(phase, &cp, Err(f), t);
        }
        if let Err(f) = run
            .capture(
                &cps,
                phase,
                "kubeadm init phase upload-certs --upload-certs",
                &format!("kubeadm init phase upload-certs --upload-certs --config {f} >/dev/null; rc=$?; rm -f {f}; exit $rc"),
            )
            .await
        {
            return run.record_one(phase, &cp, Err(f), t);
        }
    }
    // Control planes one at a time (etcd membership changes serially); workers in batches of
    // --concurrency.
    let concurrency = if control_plane {
        1
    } else {
        run.opts.concurrency.max(1)
    };
    let mut items = Vec::new();
    for (h, _) in &pending {
        let file = match kubeadm::join(&run.templates, run.spec, run.inv, h, &secrets) {
            Ok(f) => f,
            Err(e) => return run.fail_all(phase, "render kubeadm join config", &e.to_string()),
        };
        let f = quote(&file.path);
        items.push((
            h.name.clone(),
            Arc::new(HostChange {
                precondition: Some(kubeadm_precondition(run)),
                check: "[ -f /etc/kubernetes/kubelet.conf ] || { echo 'not joined'; exit 1; }\n"
                    .into(),
                files: vec![file],
                uploads: Vec::new(),
                apply: format!(
                    "{}kubeadm join --config {f}; rc=$?; rm -f {f}\n{KUBELET_JOURNAL_ON_FAILURE}{}exit $rc\n",
                    resume_prologue("join", "[ -f /etc/kubernetes/kubelet.conf ]", &f),
                    mark_done("join"),
                ),
                apply_label: format!("kubeadm join --config {}", kubeadm::JOIN_CONFIG_PATH),
                timeout_secs: kubeadm_timeout_secs(run),
                error_lines: KUBEADM_ERROR_LINES,
            }),
        ));
    }
    run.on_hosts(phase, items, concurrency).await;
    for f in run.failures.iter_mut() {
        if f.phase == phase && f.command.starts_with("kubeadm join") {
            f.stderr = kubeadm_failure_summary(&f.stderr);
            f.hint = Some(format!(
                "a half-finished join leaves files behind: `kubedrill reset -i INVENTORY --only-host {}` (kubeadm reset -f), then apply again",
                f.host
            ));
        }
    }
}

/// `kubeconfig/fetch`: admin.conf to `<state>/clusters/<cluster>/admin.conf`, mode 0600.
pub async fn fetch_kubeconfig(run: &mut Run<'_>) {
    let phase = "kubeconfig/fetch";
    let t = Instant::now();
    let (host, Some(s)) = run.first_cp() else {
        return;
    };
    let text = match run
        .capture(&s, phase, "read admin.conf", &format!("cat {ADMIN_CONF}"))
        .await
    {
        Ok(t) => t,
        Err(mut f) => {
            f.hint = Some("kubeadm/init has not run on the first control plane".into());
            return run.record_one(phase, &host, Err(f), t);
        }
    };
    let path = run.opts.state_dir.join("admin.conf");
    let same = std::fs::read_to_string(&path).is_ok_and(|old| old == text);
    let r = if same {
        Ok(Outcome::Unchanged)
    } else {
        crate::files::write_private(&path, text.as_bytes())
            .map(|()| Outcome::Changed)
            .map_err(|e| Failure {
                host: "(local)".into(),
                phase: phase.into(),
                command: format!("write {}", path.display()),
                status: None,
                stderr: e.to_string(),
                hint: None,
            })
    };
    run.kubeconfig = Some(path);
    run.record_one(phase, &host, r, t);
}

/// The values to install: the rendered ones with the effective settings of the kernel verdicts
/// applied (a feature no node can run is turned down, as `check` printed).
pub fn effective_values(run: &Run<'_>) -> Value {
    let mut v = cilium::values(run.spec, run.inv.hosts.len());
    if run.reports.is_empty() {
        return v;
    }
    let eff = crate::kernel::effective(run.spec, &run.reports);
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

/// `cilium/install`: helm (from the bundle when the node has none), the chart (bundle or
/// repository), the values file, `helm upgrade --install`.
pub async fn cilium_install(run: &mut Run<'_>) {
    let phase = "cilium/install";
    let t = Instant::now();
    let (host, Some(s)) = run.first_cp() else {
        return;
    };
    let values = effective_values(run);
    let content = match serde_json::to_string_pretty(&values) {
        Ok(c) => format!(
            "# Cilium {} values rendered by kubedrill (JSON is YAML)\n{c}\n",
            run.spec.cilium
        ),
        Err(e) => return run.fail_all(phase, "values", &e.to_string()),
    };
    let version = run.spec.cilium.to_string();
    let mut uploads = Vec::new();
    let mut prepare = String::new();
    let chart = match &run.opts.source {
        PackageSource::Bundle(b) => {
            if let Some(h) = b.binary("helm") {
                uploads.push(super::Upload {
                    local: b.dir.join(&h.file),
                    remote: "/usr/local/lib/kubedrill/helm".into(),
                    sha256: h.sha256.clone(),
                    mode: 0o755,
                });
                prepare.push_str("command -v helm >/dev/null || install -m 0755 /usr/local/lib/kubedrill/helm /usr/local/bin/helm\n");
            }
            match b.chart(&version) {
                Some(c) => {
                    let remote = format!("{CHART_DIR}/cilium-{version}.tgz");
                    uploads.push(super::Upload {
                        local: b.dir.join(&c.file),
                        remote: remote.clone(),
                        sha256: c.sha256.clone(),
                        mode: 0o644,
                    });
                    remote
                }
                None => {
                    prepare.push_str("helm repo add cilium https://helm.cilium.io >/dev/null 2>&1 || true\nhelm repo update cilium >/dev/null\n");
                    "cilium/cilium".into()
                }
            }
        }
        PackageSource::Online => {
            prepare.push_str("helm repo add cilium https://helm.cilium.io >/dev/null 2>&1 || true\nhelm repo update cilium >/dev/null\n");
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
    let change = HostChange {
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
        apply: format!(
            "set -e\n{prepare}helm upgrade --install cilium {} --version {version} --namespace kube-system --values {} {kc}\n",
            quote(&chart),
            cilium::VALUES_PATH
        ),
        apply_label: format!("helm upgrade --install cilium {chart} --version {version}"),
        timeout_secs: 600,
        error_lines: 0,
    };
    let r = run.one(&s, phase, &change).await;
    run.record_one(phase, &host, r, t);
}

/// A kube client for the cluster: the fetched admin kubeconfig, with the API server reached
/// through the first control plane's SSH connection (TLS still verified against the
/// kubeconfig's server name).
pub async fn kube_client(
    run: &Run<'_>,
) -> Result<(kube::Client, crate::ssh::forward::Forward), String> {
    let (_, Some(s)) = run.first_cp() else {
        return Err("no session to the first control plane".into());
    };
    let kubeconfig = run.opts.state_dir.join("admin.conf");
    if !kubeconfig.exists() {
        return Err(format!(
            "{} does not exist: kubeconfig/fetch has not run",
            kubeconfig.display()
        ));
    }
    let (client, fwd) =
        crate::k8s::client::client_via_ssh(&kubeconfig, s, std::time::Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
    Ok((client, fwd))
}

fn api_failure(host: &str, phase: &str, command: &str, e: impl std::fmt::Display) -> Failure {
    Failure {
        host: host.into(),
        phase: phase.into(),
        command: command.into(),
        status: None,
        stderr: e.to_string(),
        hint: None,
    }
}

/// `cilium/wait`: the agent DaemonSet and the operator rolled out, every node Ready, and no
/// kube-proxy left (deleted with `--delete-kube-proxy`, which the CLI confirmed first) — all
/// through the Kubernetes API.
pub async fn cilium_wait(run: &mut Run<'_>) {
    let phase = "cilium/wait";
    let t = Instant::now();
    let (host, _) = run.first_cp();
    let r = cilium_wait_inner(run, &host, phase).await;
    run.record_one(phase, &host, r, t);
}

async fn cilium_wait_inner(run: &Run<'_>, host: &str, phase: &str) -> Result<Outcome, Failure> {
    use crate::k8s::{kube_proxy, wait};
    use std::time::Duration;
    let (client, _fwd) = kube_client(run)
        .await
        .map_err(|e| api_failure(host, phase, "connect to the API server", e))?;
    let p = run.progress.host(phase, host);
    p.set("cilium DaemonSet rolling out");
    wait::cilium_rolled_out(&client, Duration::from_secs(600), |_| {})
        .await
        .map_err(|e| api_failure(host, phase, "wait for ds/cilium", e))?;
    p.set("cilium-operator rolling out");
    wait::deployment_rolled_out(
        &client,
        "kube-system",
        "cilium-operator",
        Duration::from_secs(300),
        |_| {},
    )
    .await
    .map_err(|e| api_failure(host, phase, "wait for deploy/cilium-operator", e))?;
    p.set("nodes Ready");
    wait::nodes_ready(
        &client,
        run.inv.hosts.len(),
        Duration::from_secs(600),
        |_| {},
    )
    .await
    .map_err(|e| api_failure(host, phase, "wait for nodes Ready", e))?;
    let presence = kube_proxy::detect(&client)
        .await
        .map_err(|e| api_failure(host, phase, "look for kube-proxy", e))?;
    if presence.is_absent() {
        p.finish(true, "rolled out, nodes Ready, no kube-proxy");
        return Ok(Outcome::Unchanged);
    }
    if !run.opts.delete_kube_proxy {
        p.finish(false, "kube-proxy present");
        return Err(Failure {
            host: host.into(),
            phase: phase.into(),
            command: "look for kube-proxy".into(),
            status: None,
            stderr: "kube-proxy is present (DaemonSet or ConfigMap) beside Cilium's kube-proxy replacement".into(),
            hint: Some("pass --delete-kube-proxy (asks first) to delete both; then flush KUBE-* iptables rules on each node (kubedrill reset does it on a reset node)".into()),
        });
    }
    let report = kube_proxy::remove(&client, presence.confirm_removal())
        .await
        .map_err(|e| api_failure(host, phase, "delete kube-proxy", e))?;
    run.progress.println(&format!("{phase}: {report}"));
    p.finish(true, "kube-proxy removed");
    Ok(Outcome::Changed)
}

/// `cluster/verify`: every agent's own status (`cilium-dbg status --verbose`, through the API's
/// exec) against what the spec and the kernel verdicts say should be in force.
pub async fn verify(run: &mut Run<'_>) {
    let phase = "cluster/verify";
    let t = Instant::now();
    let (host, _) = run.first_cp();
    let r = verify_inner(run, &host, phase).await;
    run.record_one(phase, &host, r, t);
}

async fn verify_inner(run: &Run<'_>, host: &str, phase: &str) -> Result<Outcome, Failure> {
    use crate::k8s::{agents, status};
    use std::time::Duration;
    let (client, _fwd) = kube_client(run)
        .await
        .map_err(|e| api_failure(host, phase, "connect to the API server", e))?;
    let list = agents::list_agents(&client)
        .await
        .map_err(|e| api_failure(host, phase, "list cilium agents", e))?;
    let eff = crate::kernel::effective(run.spec, &run.reports);
    let expected = status::ExpectedDatapath::from_spec(run.spec, &eff);
    let mut problems = Vec::new();
    for a in &list {
        let node = a.node.clone().unwrap_or_else(|| a.name.clone());
        match agents::agent_status(&client, a, Duration::from_secs(60)).await {
            Ok(rep) => {
                for m in status::compare(&expected, &rep.status) {
                    problems.push(format!("{node}: {m}"));
                }
            }
            Err(e) => problems.push(format!("{node}: {e}")),
        }
    }
    if list.is_empty() {
        problems.push("no cilium agent pods found".into());
    }
    if problems.is_empty() {
        run.progress.println(&format!(
            "{phase}: {} agents report the expected datapath",
            list.len()
        ));
        Ok(Outcome::Unchanged)
    } else {
        Err(Failure {
            host: host.into(),
            phase: phase.into(),
            command: "cilium-dbg status --verbose (every agent)".into(),
            status: None,
            stderr: problems.join("\n"),
            hint: Some("compare with `kubedrill check`: a feature the kernel cannot run is turned down there".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_interrupted_kubeadm_is_awaited_or_reset_only_when_kubedrill_started_it() {
        let p = resume_prologue(
            "init",
            "false",
            "/etc/kubernetes/kubedrill/kubeadm-init.yaml",
        );
        assert!(p.contains("while pgrep -x kubeadm"), "{p}");
        assert!(
            p.contains("if [ -f /var/lib/kubedrill/kubeadm-init.started ] && [ ! -f /var/lib/kubedrill/kubeadm-init.done ]"),
            "{p}"
        );
        // The early exit still removes the config with the token.
        assert!(
            p.contains("if false; then rm -f /etc/kubernetes/kubedrill/kubeadm-init.yaml;"),
            "{p}"
        );
        let script = format!("{p}exit 7\n");
        // Run it for real in a scratch root: no marks, so no reset and the start is marked.
        let dir = tempfile::tempdir().expect("tmp");
        let s = script.replace(MARK_DIR, &dir.path().display().to_string());
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(&s)
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("sh");
        assert_eq!(o.status.code(), Some(7), "{o:?}");
        assert!(dir.path().join("kubeadm-init.started").exists());
        assert!(!String::from_utf8_lossy(&o.stderr).contains("kubeadm reset"));
        // Started but never done: the next attempt says it resets first.
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.replace("kubeadm reset -f >/dev/null 2>&1", "echo RESET >&2"))
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("sh");
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("did not finish: kubeadm reset -f before trying again")
                && String::from_utf8_lossy(&o.stderr).contains("RESET"),
            "{o:?}"
        );
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
        assert!(ca_cert_hash("not a certificate").is_err());
    }
}
