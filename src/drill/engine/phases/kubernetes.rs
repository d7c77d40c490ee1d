//! `kubernetes/*`: a Kubernetes minor upgrade the way kubeadm's documentation does it, with the
//! probes running: the target's binaries and images staged on every node, then node by node
//! (the first control plane with `kubeadm upgrade apply`, the others with `kubeadm upgrade
//! node`, workers one batch at a time) drain, kubeadm, kubelet, Ready at the new version,
//! uncordon; then the hard check that kube-proxy did not come back.

#[allow(unused_imports)]
use super::super::*;
use crate::drill::kubernetes::{self as k8sup, NodeKind};
use futures::StreamExt as _;

/// Time allowed for draining one node.
const DRAIN_SECS: u64 = 600;
/// Time allowed for a node to be Ready at the new version after its kubelet restarted.
const NODE_READY_SECS: u64 = 900;

impl Ctx<'_> {
    /// `kubernetes/stage`: on every node, the target's kubeadm, kubelet and kubectl in the stage
    /// directory, its image tarballs imported into containerd, and kubeadm's
    /// `UpgradeConfiguration` written — nothing running changes yet. Refuses a cluster that does
    /// not run `from`.
    pub(in crate::drill::engine) async fn k8s_stage(&mut self) -> PhaseResult {
        let phase = "kubernetes/stage";
        let d = self.d;
        let Some(up) = d.drill.kubernetes_upgrade else {
            return Ok(PhaseOutcome::Skipped);
        };
        let Some(bundle) = d.kubernetes_bundle.as_ref() else {
            return Err(self.fail(
                "(local)",
                phase,
                "kubernetes bundle",
                format!(
                    "no bundle for Kubernetes {}: name one with drill.kubernetes.bundle or --kubernetes-bundle (kubedrill bundle build --kubernetes {} --files-repo …)",
                    up.to, up.to
                ),
            ));
        };
        // The cluster must run `from`: every node's kubelet says so.
        let Some(client) = self.client() else {
            return Err(self.fail("(local)", phase, "kubernetes client", "not connected"));
        };
        self.require_nodes_at(phase, &client, up.from, |off| {
            format!(
                "the drill starts from Kubernetes {} but {off}: reset the lab to a snapshot at {} (--reset)",
                up.from, up.from
            )
        })
        .await?;
        let Some((_, bins)) = bundle.kubernetes_binaries() else {
            return Err(self.fail(
                "(local)",
                phase,
                "kubernetes bundle",
                format!(
                    "{} carries no Kubernetes release binaries (build it with --files-repo)",
                    bundle.dir.display()
                ),
            ));
        };
        let stage = k8sup::stage_dir(up.to);
        let images: Vec<&crate::bundle::Artifact> = bundle.manifest.images.iter().collect();
        let imports = crate::apply::node::image_imports(&bundle.dir, &images);
        let mut uploads: Vec<crate::apply::Upload> = bins
            .iter()
            .filter(|a| !a.file.ends_with("crictl"))
            .map(|a| crate::apply::Upload {
                local: bundle.dir.join(&a.file),
                remote: format!("{stage}/{}", crate::apply::node::file_name(&a.file)),
                sha256: a.sha256.clone(),
                mode: 0o755,
            })
            .collect();
        uploads.extend(imports.uploads);
        let apply = format!("set -e\n{}", imports.apply);
        let mut check = imports.check;
        for t in ["kubeadm", "kubelet", "kubectl"] {
            check.push_str(&format!(
                "[ -x {stage}/{t} ] || {{ echo '{t} {} not staged'; exit 1; }}\n",
                up.to
            ));
        }
        let patches =
            (!d.spec.kubeadm_patches.is_empty()).then_some(crate::spec::patches::PATCHES_DIR);
        let config = k8sup::upgrade_config(
            up.to,
            patches,
            d.spec.kubeadm_timeout.as_deref(),
            &d.spec.kubeadm_ignore_preflight_errors,
        );
        let files = vec![crate::render::RenderedFile {
            path: k8sup::UPGRADE_CONFIG.to_owned(),
            mode: 0o600,
            content: config,
            sensitive: false,
        }];
        let change = crate::apply::HostChange {
            precondition: None,
            check,
            files,
            uploads,
            apply,
            apply_label: format!(
                "stage kubeadm/kubelet/kubectl {}; import {} image tarballs",
                up.to,
                images.len()
            ),
            timeout_secs: crate::apply::node::import_timeout_secs(images.iter().map(|a| a.size)),
            error_lines: 0,
        };
        self.say(&format!(
            "  staging Kubernetes {} on {} nodes from {}",
            up.to,
            d.inventory.hosts.len(),
            bundle.dir.display()
        ));
        let redactor = crate::apply::Redactor::default();
        let mut sessions: Vec<(String, crate::host::SharedHost)> = Vec::new();
        for h in &d.inventory.hosts {
            let Some(s) = self.host(&h.name) else {
                return Err(self.fail(&h.name, phase, "ssh", "no SSH session to this host"));
            };
            sessions.push((h.name.clone(), s));
        }
        // Every node at once, `concurrency` at a time: the uploads and image imports are each
        // node's own work (on the lab, 7 minutes on the first control plane alone).
        let progress = self.progress.clone();
        let (change, redactor) = (&change, &redactor);
        let mut staging = Vec::new();
        for (h, s) in sessions {
            let p = progress.host(phase, &h);
            staging.push(async move {
                let r = crate::apply::change::run_change(s.as_ref(), phase, change, redactor, &p)
                    .await
                    .map(|_| ());
                p.finish(r.is_ok(), if r.is_ok() { "staged" } else { "failed" });
                (h, r)
            });
        }
        let results: Vec<(String, Result<(), crate::phase::Failure>)> =
            futures::stream::iter(staging)
                .buffered(d.concurrency.max(1))
                .collect()
                .await;
        for (h, r) in results {
            if let Err(f) = r {
                return Err(self.fail(&h, phase, &f.command, f.stderr));
            }
        }
        Ok(PhaseOutcome::Ok)
    }

    /// `kubernetes/<control plane>`: kubeadm's part (`upgrade apply` on the first, `upgrade
    /// node` on the others), then drain, kubelet, Ready at the new version, uncordon.
    pub(in crate::drill::engine) async fn k8s_control_plane(&mut self, i: usize) -> PhaseResult {
        let d = self.d;
        let cps: Vec<String> = d
            .inventory
            .control_planes()
            .map(|h| h.name.clone())
            .collect();
        let Some(host) = cps.get(i).cloned() else {
            return Ok(PhaseOutcome::Skipped);
        };
        let kind = if i == 0 {
            NodeKind::FirstControlPlane
        } else {
            NodeKind::ControlPlane
        };
        self.k8s_nodes(&format!("kubernetes/{host}"), &[host], kind)
            .await
    }

    /// `kubernetes/workers-<n>`: one batch of workers (`drill.kubernetes.batch` at once).
    pub(in crate::drill::engine) async fn k8s_workers(&mut self, i: usize) -> PhaseResult {
        let d = self.d;
        let Some(up) = d.drill.kubernetes_upgrade else {
            return Ok(PhaseOutcome::Skipped);
        };
        let Some(batch) = worker_batches(&d.inventory, up.batch).get(i).cloned() else {
            return Ok(PhaseOutcome::Skipped);
        };
        self.k8s_nodes(
            &format!("kubernetes/workers-{}", i + 1),
            &batch,
            NodeKind::Worker,
        )
        .await
    }

    /// The procedure on `hosts` (one control plane, or a batch of workers side by side):
    /// kubeadm, drain, kubelet, Ready at `to`, uncordon. A failure leaves the node cordoned
    /// (as a careful operator would: it says which).
    async fn k8s_nodes(&mut self, phase: &str, hosts: &[String], kind: NodeKind) -> PhaseResult {
        let d = self.d;
        let Some(up) = d.drill.kubernetes_upgrade else {
            return Ok(PhaseOutcome::Skipped);
        };
        let cp = self.cp.clone();
        self.say(&format!(
            "-- {phase}: Kubernetes {} → {} on {} ({kind})",
            up.from,
            up.to,
            hosts.join(", ")
        ));
        if self
            .confirm(
                phase,
                &format!("upgrade Kubernetes to {} on {}", up.to, hosts.join(", ")),
            )
            .is_err()
        {
            return Err(Stop);
        }
        self.changed = true;
        // The agents are watched from the first node's upgrade on, as during Cilium's steps: a
        // kubelet that restarts containers or a drained node shows in the timeline and verdict.
        self.start_agent_watch().await;
        // Node faults (drill.faults) fire during the first Cilium step; a drill without one has
        // them here, during the first control plane's upgrade.
        let faults = if kind == NodeKind::FirstControlPlane && d.drill.plan.steps().is_empty() {
            self.start_faults()
        } else {
            Vec::new()
        };
        let r = self.k8s_upgrade_nodes(phase, hosts, kind, up, &cp).await;
        self.join_faults(faults).await;
        r
    }

    /// [`Self::k8s_nodes`] once confirmed: kubeadm, drain, kubelet, Ready, uncordon.
    async fn k8s_upgrade_nodes(
        &mut self,
        phase: &str,
        hosts: &[String],
        kind: NodeKind,
        up: crate::drill::definition::KubernetesUpgrade,
        cp: &str,
    ) -> PhaseResult {
        // kubeadm first: the control plane (first node) or the node's own configuration.
        let kubeadm = k8sup::kubeadm_script(up.to, kind);
        let label = match kind {
            NodeKind::FirstControlPlane => format!("kubeadm upgrade apply v{}", up.to),
            _ => "kubeadm upgrade node".to_owned(),
        };
        let step = if kind == NodeKind::FirstControlPlane {
            "apply"
        } else {
            "node"
        };
        if kind == NodeKind::FirstControlPlane {
            for h in hosts {
                self.k8s_plan(h, up.to).await;
            }
        }
        // Every run's whole output stays in the run directory (`kubeadm-apply-cp1.log`, and
        // `.attempt-N.log` for each one run again): on a busy node the reason is in its middle.
        let runs = hosts.iter().map(|h| {
            let cmd = Command::new(kubeadm.clone())
                .privileged()
                .label(label.clone())
                .stdout_in_timeout()
                .timeout(self.kubeadm_limit());
            let s = self.host(h);
            let h = h.clone();
            let progress = self.progress.clone();
            let pause = self.d.timeouts.retry_pause;
            let (dir, base) = (self.run_dir.clone(), format!("kubeadm-{step}-{h}"));
            async move {
                let keep = |path: std::path::PathBuf, o: &crate::ssh::Output| {
                    let text = format!("{}{}", o.stdout_text(), o.stderr_text());
                    if let Err(e) = report::write_file(&path, &text) {
                        progress.println(&format!("  note: {}: {e}", path.display()));
                    }
                };
                let attempt = std::sync::atomic::AtomicU32::new(0);
                let r = match s {
                    None => Err("no SSH session to this host".to_owned()),
                    Some(s) => match super::super::exec_again_while(
                        s.as_ref(),
                        &cmd,
                        KUBEADM_ATTEMPTS,
                        pause,
                        |o| {
                            let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            let why = k8sup::transient_reason(&format!(
                                "{}\n{}",
                                o.stdout_text(),
                                o.stderr_text()
                            ))?;
                            keep(dir.join(format!("{base}.attempt-{n}.log")), o);
                            Some(format!("a busy node failed it ({why})"))
                        },
                        |line| progress.println(&format!("  {h}: {line}")),
                    )
                    .await
                    {
                        Ok(o) => {
                            keep(dir.join(format!("{base}.log")), &o);
                            if o.success() {
                                Ok(())
                            } else {
                                Err(format!(
                                    "exited with {}: {}\n{}",
                                    o.status
                                        .map_or_else(|| "a signal".into(), |s| s.to_string()),
                                    o.stdout_tail(8),
                                    o.stderr_tail(4)
                                ))
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    },
                };
                (h, r)
            }
        });
        let t = now();
        for (h, r) in futures::future::join_all(runs).await {
            match r {
                Ok(()) => {
                    self.say(&format!(
                        "  {h}: {label}: done in {:.0} s",
                        (now().unix_ms().saturating_sub(t.unix_ms())) as f64 / 1000.0
                    ));
                }
                Err(e) => return Err(self.fail(&h, phase, &label, e)),
            }
        }
        // Drain (on the first control plane, with its admin.conf), kubelet, uncordon.
        for h in hosts {
            let drain = Command::new(k8sup::drain_script(h, DRAIN_SECS))
                .privileged()
                .label(format!("kubectl drain {h}"))
                .timeout(Duration::from_secs(DRAIN_SECS + 60));
            self.k8s_kubectl(cp, phase, &drain).await?;
            self.say(&format!("  {h}: drained"));
        }
        for h in hosts {
            let kubelet = Command::new(k8sup::kubelet_script(up.to))
                .privileged()
                .label(format!(
                    "kubelet and kubectl {} installed; kubelet restarted",
                    up.to
                ))
                .timeout(Duration::from_secs(300));
            self.exec(h, phase, &kubelet).await?;
        }
        for h in hosts {
            self.k8s_wait_node(phase, h, up.to).await?;
            let uncordon = Command::new(k8sup::uncordon_script(h))
                .privileged()
                .label(format!("kubectl uncordon {h}"))
                .timeout(Duration::from_secs(120));
            self.k8s_kubectl(cp, phase, &uncordon).await?;
            self.say(&format!("  {h}: Ready at v{}, uncordoned", up.to));
        }
        self.check_kube_proxy().await;
        Ok(PhaseOutcome::Ok)
    }

    /// kubectl on the first control plane (drain, uncordon; both idempotent), run again while
    /// only the API server did not answer: it restarts with that node's new kubelet.
    async fn k8s_kubectl(&mut self, cp: &str, phase: &str, cmd: &Command) -> Result<(), Stop> {
        let pause = self.d.timeouts.retry_pause;
        self.exec_while(cp, phase, cmd, KUBEADM_ATTEMPTS, pause, |o| {
            k8sup::transient_reason(&format!("{}\n{}", o.stdout_text(), o.stderr_text()))
                .map(|why| format!("the API server did not answer ({why})"))
        })
        .await
        .map(|_| ())
    }

    /// How long one kubeadm run may take on this cluster ([`k8sup::kubeadm_limit_secs`]).
    fn kubeadm_limit(&self) -> Duration {
        Duration::from_secs(k8sup::kubeadm_limit_secs(
            self.d.spec.kubeadm_timeout.as_deref(),
        ))
    }

    /// `kubeadm upgrade plan` on `host`, once: its output kept as `kubeadm-plan-<host>.log`, its
    /// failure only said (`apply`'s own pre-flight decides).
    async fn k8s_plan(&self, host: &str, to: Version) {
        let Some(s) = self.host(host) else {
            return;
        };
        let cmd = Command::new(k8sup::plan_script(to))
            .privileged()
            .label(format!("kubeadm upgrade plan v{to}"))
            .stdout_in_timeout()
            .timeout(self.kubeadm_limit());
        let t = now();
        match s.exec(&cmd).await {
            Ok(o) => {
                let path = self.run_dir.join(format!("kubeadm-plan-{host}.log"));
                let text = format!("{}{}", o.stdout_text(), o.stderr_text());
                if let Err(e) = report::write_file(&path, &text) {
                    self.say(&format!("  note: {}: {e}", path.display()));
                }
                let verdict = if text.contains("FATAL") || !o.success() {
                    "reported a problem (kept; `apply` checks again)"
                } else {
                    "done"
                };
                self.say(&format!(
                    "  {host}: kubeadm upgrade plan v{to}: {verdict} in {:.0} s",
                    (now().unix_ms().saturating_sub(t.unix_ms())) as f64 / 1000.0
                ));
            }
            Err(e) => self.say(&format!("  {host}: kubeadm upgrade plan v{to}: {e}")),
        }
    }

    /// Every node's kubelet at `v`; else a failure saying `why` of the others (`NAME runs
    /// vX.Y.Z, …`).
    async fn require_nodes_at(
        &mut self,
        phase: &str,
        client: &kube::Client,
        v: Version,
        why: impl FnOnce(String) -> String,
    ) -> Result<(), Stop> {
        let want = format!("v{v}");
        let off: Vec<String> =
            match kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
                .list(&Default::default())
                .await
            {
                Ok(l) => l
                    .items
                    .iter()
                    .filter_map(|n| {
                        let have = kubelet_version(n);
                        (have.as_deref() != Some(want.as_str())).then(|| {
                            format!(
                                "{} runs {}",
                                n.metadata.name.clone().unwrap_or_default(),
                                have.unwrap_or_else(|| "an unknown version".into())
                            )
                        })
                    })
                    .collect(),
                Err(e) => {
                    let h = self.api_host();
                    return Err(self.fail(&h, phase, "list nodes", e));
                }
            };
        if off.is_empty() {
            return Ok(());
        }
        let h = self.api_host();
        Err(self.fail(&h, phase, "node versions", why(off.join(", "))))
    }

    /// Wait until `node` is Ready with its kubelet at `to` (the node watched).
    async fn k8s_wait_node(&mut self, phase: &str, node: &str, to: Version) -> Result<(), Stop> {
        let Some(client) = self.client() else {
            return Err(self.fail("(local)", phase, "kubernetes client", "not connected"));
        };
        let api = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client);
        let want = format!("v{to}");
        let cond = |n: Option<&k8s_openapi::api::core::v1::Node>| {
            n.is_some_and(|n| {
                kubelet_version(n).as_deref() == Some(want.as_str()) && wait::node_state(n).ready
            })
        };
        // The API answers through the first control plane, whose new kubelet restarts the static
        // pods (the API server among them): a watch that cannot connect is tried again, 5 s
        // apart, until the node is Ready or the time is up (the lab's seventh Kubernetes drill
        // failed here at once, `client error (Connect)`, seconds after cp1's kubelet restarted).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(NODE_READY_SECS);
        let mut last_error: Option<String> = None;
        loop {
            let waited = tokio::time::timeout_at(
                deadline,
                kube::runtime::wait::await_condition(api.clone(), node, cond),
            )
            .await;
            match waited {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => {
                    if last_error.is_none() {
                        self.say(&format!(
                            "  {node}: the API did not answer ({e}); waiting for it, up to {NODE_READY_SECS} s in all"
                        ));
                    }
                    last_error = Some(e.to_string());
                    if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_secs(5)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let h = self.api_host();
        Err(self.fail(
            &h,
            phase,
            &format!("wait for node {node} Ready at {want}"),
            format!(
                "not Ready at {want} within {NODE_READY_SECS} s (it stays cordoned){}",
                last_error.map_or_else(String::new, |e| format!("; the API's last error: {e}"))
            ),
        ))
    }

    /// `kubernetes/verify`: every node at the new version; kube-proxy's DaemonSet, ConfigMap and
    /// iptables chains absent — and if kube-proxy came back into a cluster that had none, it is
    /// recorded and removed (after the operator's yes on production).
    pub(in crate::drill::engine) async fn k8s_verify(&mut self) -> PhaseResult {
        let phase = "kubernetes/verify";
        let d = self.d;
        let Some(up) = d.drill.kubernetes_upgrade else {
            return Ok(PhaseOutcome::Skipped);
        };
        let Some(client) = self.client() else {
            return Err(self.fail("(local)", phase, "kubernetes client", "not connected"));
        };
        // Every node at the new version.
        let want = format!("v{}", up.to);
        self.require_nodes_at(phase, &client, up.to, |off| format!("not at {want}: {off}"))
            .await?;
        // Cilium's agents after every node's kubelet restarted: the datapath still as asked.
        let deployed = self.deployed;
        let mismatches = self.verify(deployed).await;
        for m in &mismatches {
            self.say(&format!(
                "  after the Kubernetes upgrade: {} {}",
                m.node, m.detail
            ));
        }
        self.mismatches.extend(mismatches);
        // kube-proxy: objects, then each node's iptables.
        self.check_kube_proxy().await;
        let absent_at_start = self.kube_proxy_absent_at_start.unwrap_or(false);
        let mut chains_on = Vec::new();
        for h in &d.inventory.hosts {
            let cmd = Command::new(k8sup::KUBE_PROXY_CHAINS)
                .privileged()
                .idempotent()
                .label("iptables-save | grep KUBE-SERVICES/SVC/SEP/NODEPORTS");
            let out = self.exec(&h.name, phase, &cmd).await?;
            let chains: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
            if !chains.is_empty() && absent_at_start {
                let detail = format!(
                    "kube-proxy's iptables chains on {}: {}",
                    h.name,
                    chains.join(" ")
                );
                self.say(&format!("  {detail}"));
                self.b.kube_proxy_events.push(KubeProxyEvent {
                    at: now(),
                    node: Some(h.name.clone()),
                    detail,
                });
                chains_on.push(h.name.clone());
            }
        }
        let presence = match kube_proxy::detect(&client).await {
            Ok(p) => p,
            Err(e) => {
                let h = self.api_host();
                return Err(self.fail(&h, phase, "kube-proxy objects", e));
            }
        };
        if !absent_at_start || (presence.is_absent() && chains_on.is_empty()) {
            self.say(&format!(
                "  every node at {want}; kube-proxy {}",
                if absent_at_start {
                    "still absent (no DaemonSet, ConfigMap or iptables chains)"
                } else {
                    "was there from the start"
                }
            ));
            return Ok(PhaseOutcome::Ok);
        }
        // It came back: remove it (the lab) or ask (production).
        self.confirm(
            phase,
            &format!("remove kube-proxy ({presence}) and flush its iptables rules"),
        )?;
        if !presence.is_absent() {
            match kube_proxy::remove(&client, presence.clone().confirm_removal()).await {
                Ok(r) => self.notes.push(format!(
                    "kube-proxy came back after the upgrade and was removed: {r:?}"
                )),
                Err(e) => {
                    let h = self.api_host();
                    return Err(self.fail(&h, phase, "remove kube-proxy", e));
                }
            }
        }
        for h in &chains_on {
            let cmd = Command::new(k8sup::FLUSH_KUBE_PROXY_RULES)
                .privileged()
                .label("iptables-save | grep -v KUBE | iptables-restore");
            self.exec(h, phase, &cmd).await?;
        }
        // The drill's verdict counts the sighting (policy: kube-proxy back is a no-go).
        Ok(PhaseOutcome::Ok)
    }
}

/// The kubelet version a node reports.
fn kubelet_version(n: &k8s_openapi::api::core::v1::Node) -> Option<String> {
    n.status
        .as_ref()?
        .node_info
        .as_ref()
        .map(|i| i.kubelet_version.clone())
}

/// The workers in their batches.
pub(in crate::drill::engine) fn worker_batches(inv: &Inventory, batch: u32) -> Vec<Vec<String>> {
    let workers: Vec<String> = inv
        .hosts
        .iter()
        .filter(|h| matches!(h.role, InvRole::Worker))
        .map(|h| h.name.clone())
        .collect();
    k8sup::batches(&workers, batch)
}

/// Runs of `kubeadm upgrade apply/node` while only a busy API server or container runtime failed
/// them ([`Timeouts::retry_pause`] apart): kubeadm's upgrade is idempotent, and re-running it is
/// its documented recovery. Five: on the lab the first control plane failed three in a row
/// (two client timeouts, then the runtime's) while the API server was at its busiest.
const KUBEADM_ATTEMPTS: u32 = 5;
