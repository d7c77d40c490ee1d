//! `preflight/kernel`: the verdicts of `check`; a blocked requested feature stops here unless
//! `--allow-degraded`.

use crate::apply::{Input, Run};
use crate::phase::{Failure, HostResult, Outcome, Phase, PhaseError, PhaseFuture};
use crate::phase::{Step, step::hosts};
use std::time::Instant;

/// `preflight/kernel`.
pub struct Kernel;

impl<'a> Phase<Run<'a>> for Kernel {
    fn name(&self) -> &str {
        "kernel"
    }
    fn title(&self) -> String {
        "Gather facts and check each kernel for the requested Cilium features".into()
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![Step::check(
            hosts(input.inv.hosts.iter()),
            format!(
                "kernel, kconfig, NIC driver/queues/offloads/MTU against what Cilium {} needs (kubedrill check)",
                input.spec.cilium
            ),
        )])
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let mut out = Vec::new();
            for (host, s) in run.hosts.clone() {
                let t = Instant::now();
                let result = match crate::check::gather(s.as_ref()).await {
                    Ok(f) => {
                        let r = crate::kernel::evaluate(run.input.spec, &host, &f);
                        let blocked: Vec<String> = r
                            .verdicts
                            .iter()
                            .filter(|v| {
                                v.requested
                                    && matches!(v.status, crate::kernel::Status::Blocked { .. })
                            })
                            .map(|v| {
                                format!(
                                    "{:?}: {}",
                                    v.feature,
                                    v.status.reason().unwrap_or_default()
                                )
                            })
                            .collect();
                        run.reports.push(r);
                        if !blocked.is_empty() && !run.opts.allow_degraded {
                            Err(Failure::new(&host, name, "kernel checks", blocked.join("\n"))
                                .with_hint("fix the kernel or NIC as `kubedrill check` says, change the inventory's Cilium settings, or pass --allow-degraded"))
                        } else {
                            Ok(Outcome::Unchanged)
                        }
                    }
                    Err(e) => Err(Failure::new(&host, name, "facts script (sh -s)", e)),
                };
                out.push(HostResult::timed(host, result, t));
            }
            out
        })
    }
}
