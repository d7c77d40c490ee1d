//! `kubeadm/join-control-plane` (one at a time: etcd membership changes serially) and
//! `kubeadm/join-worker` (in batches of `--concurrency`). Fresh secrets come from the first
//! control plane: a token (captured, never shown), the CA hash (computed here, so nodes need no
//! openssl) and, for control planes, the certificates re-uploaded under a new key.

use crate::apply::cluster::{ca_cert_hash, join_change, kubeadm_failure_summary, random_hex};
use crate::apply::{HostChange, Input, Run};
use crate::inventory::Host;
use crate::phase::{Failure, HostResult, Outcome, Phase, PhaseError, PhaseFuture, Step, Target};
use crate::render::{Secrets, kubeadm};
use crate::ssh::shell::quote;
use std::sync::Arc;
use std::time::Instant;

/// A join phase.
pub struct Join {
    /// Control planes (else workers).
    pub control_plane: bool,
}

impl Join {
    fn nodes<'i>(&self, input: &'i Input<'_>) -> Vec<&'i Host> {
        if self.control_plane {
            input.inv.control_planes().skip(1).collect()
        } else {
            input.inv.workers().collect()
        }
    }
}

impl<'a> Phase<Run<'a>> for Join {
    fn name(&self) -> &str {
        if self.control_plane {
            "join-control-plane"
        } else {
            "join-worker"
        }
    }
    fn title(&self) -> String {
        if self.control_plane {
            "Join the other control planes, one at a time".into()
        } else {
            "Join the workers, in batches of --concurrency".into()
        }
    }
    fn unchanged_when(&self) -> &str {
        "the node is already registered"
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        let nodes = self.nodes(input);
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let cp = Target::Hosts(vec![input.first_cp()]);
        let mut steps = vec![
            Step::run(
                cp.clone(),
                "kubeadm token create --ttl 30m (captured, never shown)",
            ),
            Step::check(
                cp.clone(),
                "read /etc/kubernetes/pki/ca.crt (its key hash is computed locally)",
            ),
        ];
        if self.control_plane {
            steps.push(Step::run(
                cp,
                "kubeadm init phase upload-certs --upload-certs (under a new certificate key)",
            ));
        }
        let secrets = Secrets::placeholders();
        for h in nodes {
            steps.extend(
                join_change(input, h, &secrets)?.steps(Target::Hosts(vec![h.name.clone()])),
            );
        }
        Ok(steps)
    }
    fn skip_reason(&self, run: &Run<'a>) -> Option<String> {
        self.nodes(&run.input)
            .is_empty()
            .then(|| "no such nodes".to_string())
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let mut out = Vec::new();
            let nodes: Vec<Host> = self.nodes(&run.input).into_iter().cloned().collect();
            // Which still need to join (one round trip each).
            let mut pending = Vec::new();
            for h in &nodes {
                let Some(s) = run.hosts.get(&h.name).cloned() else {
                    continue;
                };
                let t = Instant::now();
                match run
                    .capture(
                        s.as_ref(),
                        name,
                        "joined?",
                        "test -f /etc/kubernetes/kubelet.conf && echo yes || echo no",
                    )
                    .await
                {
                    Ok(o) if o.trim() == "yes" => {
                        out.push(HostResult::timed(&h.name, Ok(Outcome::Unchanged), t))
                    }
                    Ok(_) => pending.push(h.clone()),
                    Err(f) => out.push(HostResult::timed(&h.name, Err(f), t)),
                }
            }
            if pending.is_empty() || out.iter().any(|r| r.result.is_err()) {
                return out;
            }
            let t = Instant::now();
            let secrets = match secrets(run, name, self.control_plane).await {
                Ok(s) => s,
                Err(f) => {
                    out.push(HostResult::timed(run.input.first_cp(), Err(f), t));
                    return out;
                }
            };
            let concurrency = if self.control_plane {
                1
            } else {
                run.opts.concurrency.max(1)
            };
            let mut items: Vec<(String, Arc<HostChange>)> = Vec::new();
            for h in &pending {
                match join_change(&run.input, h, &secrets) {
                    Ok(c) => items.push((h.name.clone(), Arc::new(c))),
                    Err(e) => {
                        out.extend(crate::apply::fail_all(
                            name,
                            "render kubeadm join config",
                            e,
                        ));
                        return out;
                    }
                }
            }
            for mut r in run.on_hosts(name, items, concurrency).await {
                if let Err(f) = &mut r.result
                    && f.command.starts_with("kubeadm join")
                {
                    f.stderr = kubeadm_failure_summary(&f.stderr);
                    f.hint = Some(format!(
                        "a half-finished join leaves files behind: `kubedrill reset -i INVENTORY --only-host {}` (kubeadm reset -f), then apply again",
                        f.host
                    ));
                }
                out.push(r);
            }
            out
        })
    }
}

/// A token, the CA hash and (for control planes) a new certificate key with the certificates
/// uploaded under it — all from the first control plane.
async fn secrets(run: &mut Run<'_>, phase: &str, control_plane: bool) -> Result<Secrets, Failure> {
    let (cp, Some(cps)) = run.first_cp() else {
        return Err(Failure::new(
            run.input.first_cp(),
            phase,
            "ssh connect",
            "no session to the first control plane",
        ));
    };
    let token = run
        .capture(
            cps.as_ref(),
            phase,
            "kubeadm token create",
            "kubeadm token create --ttl 30m --description 'kubedrill join'",
        )
        .await?
        .trim()
        .to_string();
    run.redactor.add(&token);
    let pem = run
        .capture(
            cps.as_ref(),
            phase,
            "read the cluster CA",
            "cat /etc/kubernetes/pki/ca.crt",
        )
        .await?;
    let hash = ca_cert_hash(&pem).map_err(|e| {
        Failure::new(
            &cp,
            phase,
            "read the cluster CA",
            format!("/etc/kubernetes/pki/ca.crt: {e}"),
        )
    })?;
    let mut secrets = Secrets {
        bootstrap_token: token,
        certificate_key: String::new(),
        ca_cert_hash: hash,
    };
    if control_plane {
        secrets.certificate_key = random_hex(32);
        run.redactor.add(&secrets.certificate_key);
        let init = kubeadm::init(
            &run.input.templates,
            run.input.spec,
            run.input.inv,
            &secrets,
        )
        .map_err(|e| Failure::new(&cp, phase, "render", e))?;
        let f = quote(&init.path);
        cps.upload(init.content.as_bytes(), &init.path, 0o600, true)
            .await
            .map_err(|e| {
                crate::apply::change::exec_failure(
                    &cp,
                    phase,
                    "write kubeadm config",
                    &e,
                    &run.redactor,
                )
            })?;
        run.capture(
            cps.as_ref(),
            phase,
            "kubeadm init phase upload-certs --upload-certs",
            &format!("kubeadm init phase upload-certs --upload-certs --config {f} >/dev/null; rc=$?; rm -f {f}; exit $rc"),
        )
        .await?;
    }
    Ok(secrets)
}
