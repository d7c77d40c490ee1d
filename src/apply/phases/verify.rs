//! `cluster/verify`: every agent's own status (`cilium-dbg status --verbose`, through the API's
//! exec) against what the spec and the kernel verdicts say should be in force.

use crate::apply::cluster::kube_client;
use crate::apply::{Input, Run};
use crate::phase::step::hosts;
use crate::phase::{Failure, HostResult, Outcome, Phase, PhaseError, PhaseFuture, Step};
use std::time::{Duration, Instant};

/// `cluster/verify`.
pub struct Verify;

impl<'a> Phase<Run<'a>> for Verify {
    fn name(&self) -> &str {
        "verify"
    }
    fn title(&self) -> String {
        "Read each agent's status: KPR, DSR, Maglev, XDP mode in force".into()
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        let i = &input.spec.cilium_intent;
        Ok(vec![Step::check(
            hosts(input.inv.hosts.iter()),
            format!(
                "cilium-dbg status --verbose: KubeProxyReplacement True, LB mode {}, algorithm {}, XDP {}",
                i.lb_mode, i.algorithm, i.acceleration
            ),
        )])
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = Instant::now();
            let host = run.input.first_cp();
            let r = verify(run, &host, name).await;
            vec![HostResult::timed(host, r, t)]
        })
    }
}

async fn verify(run: &Run<'_>, host: &str, phase: &str) -> Result<Outcome, Failure> {
    use crate::k8s::{agents, status};
    let (client, _fwd) = kube_client(run)
        .await
        .map_err(|e| Failure::new(host, phase, "connect to the API server", e))?;
    let list = agents::list_agents(&client)
        .await
        .map_err(|e| Failure::new(host, phase, "list cilium agents", e))?;
    let eff = crate::kernel::effective(run.input.spec, &run.reports);
    let expected = status::ExpectedDatapath::from_spec(run.input.spec, &eff);
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
        Err(Failure::new(
            host,
            phase,
            "cilium-dbg status --verbose (every agent)",
            problems.join("\n"),
        )
        .with_hint(
            "compare with `kubedrill check`: a feature the kernel cannot run is turned down there",
        ))
    }
}
