//! `kubeadm/init` on the first control plane, kube-proxy addon skipped. The bootstrap token and
//! certificate key are made here, live only in memory and in a 0600 config removed after use.

use crate::apply::cluster::{init_change, kubeadm_failure_summary, random_hex, random_token};
use crate::apply::{Input, Run};
use crate::phase::{HostResult, Phase, PhaseError, PhaseFuture, Step, Target};
use crate::render::Secrets;
use std::time::Instant;

/// `kubeadm/init`.
pub struct Init;

impl<'a> Phase<Run<'a>> for Init {
    fn name(&self) -> &str {
        "init"
    }
    fn title(&self) -> String {
        "kubeadm init on the first control plane, kube-proxy addon skipped".into()
    }
    fn unchanged_when(&self) -> &str {
        "/etc/kubernetes/admin.conf exists and the API answers"
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        let c = init_change(input, &Secrets::placeholders())?;
        Ok(c.steps(Target::Hosts(vec![input.first_cp()])))
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = Instant::now();
            let (host, Some(s)) = run.first_cp() else {
                return Vec::new();
            };
            let secrets = Secrets {
                bootstrap_token: random_token(),
                certificate_key: random_hex(32),
                ca_cert_hash: String::new(),
            };
            run.redactor.add(&secrets.bootstrap_token);
            run.redactor.add(&secrets.certificate_key);
            let change = match init_change(&run.input, &secrets) {
                Ok(c) => c,
                Err(e) => return crate::apply::fail_all(name, "render kubeadm init config", e),
            };
            let mut r = run.one(s.as_ref(), name, &change).await;
            if let Err(f) = &mut r
                && f.command.starts_with("kubeadm init")
            {
                f.stderr = kubeadm_failure_summary(&f.stderr);
                f.hint = Some(format!(
                    "a half-finished init leaves files behind: `kubedrill reset -i INVENTORY --only-host {host}` (kubeadm reset -f), then apply again"
                ));
            }
            vec![HostResult::timed(host, r, t)]
        })
    }
}
