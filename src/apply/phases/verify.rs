//! `cluster/verify`: every agent's own status (`cilium-dbg status --verbose`, through the API's
//! exec) against what the spec and the kernel verdicts say should be in force, and the XDP
//! program each node's devices carry against what `check` predicted for them.

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
        "Read each agent's status and each node's XDP attachment against the spec and `check`"
            .into()
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        let i = &input.spec.cilium_intent;
        Ok(vec![
            Step::check(
                hosts(input.inv.hosts.iter()),
                format!(
                    "cilium-dbg status --verbose: KubeProxyReplacement True, LB mode {}, algorithm {}, XDP {}",
                    i.lb_mode, i.algorithm, i.acceleration
                ),
            ),
            Step::check(
                hosts(input.inv.hosts.iter()),
                "facts script (ip link): the XDP program on each device `check` judged, as it predicted",
            ),
        ])
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

/// What differs now, what was confirmed, and how many agents were read. Only a failure to reach
/// the API is an error.
async fn verify_once(
    run: &Run<'_>,
    client: &kube::Client,
    host: &str,
    phase: &str,
) -> Result<(Vec<String>, Vec<String>, usize), Failure> {
    use crate::k8s::{agents, status};
    let list = agents::list_agents(client)
        .await
        .map_err(|e| Failure::new(host, phase, "list cilium agents", e))?;
    let eff = crate::kernel::effective(run.input.spec, &run.reports);
    let expected = status::ExpectedDatapath::from_spec(run.input.spec, &eff);
    let mut problems = Vec::new();
    let mut confirmed = Vec::new();
    for a in &list {
        let node = a.node.clone().unwrap_or_else(|| a.name.clone());
        match agents::agent_status(client, a, Duration::from_secs(60)).await {
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
    // XDP per node: the agent reports only the configured mode (`Best-Effort`), so what was
    // attached is read from each node's links and held against what `check` predicted there.
    let acceleration = expected
        .acceleration
        .unwrap_or(run.input.spec.cilium_intent.acceleration);
    // One facts script per node, all nodes at once (the same script `check` runs).
    let gathered = futures::future::join_all(run.reports.iter().filter_map(|r| {
        let s = run.hosts.get(&r.host)?.clone();
        Some(async move { (r, crate::check::gather(s.as_ref()).await) })
    }))
    .await;
    for (r, facts) in gathered {
        match facts {
            Ok(f) => {
                for (line, ok) in
                    crate::kernel::xdp::compare_attached(&r.xdp_devices, acceleration, &f)
                {
                    if ok {
                        confirmed.push(format!("{phase}: {}: {line}", r.host));
                    } else {
                        problems.push(format!("{}: {line}", r.host));
                    }
                }
            }
            Err(e) => problems.push(format!("{}: facts script: {e}", r.host)),
        }
    }
    Ok((problems, confirmed, list.len()))
}

/// How long differences may last before they are failures: an agent reports Ready before it has
/// compiled and attached its whole datapath (on the lab under TCG, cp1's bpf_host and XDP
/// programs came ≈5 minutes after Ready), so a missing program is first "not yet".
fn settle_time(run: &Run<'_>) -> Duration {
    match run.input.spec.cilium_startup_timeout {
        Some(secs) => Duration::from_secs(secs.min(900)),
        None => Duration::from_secs(120),
    }
}

async fn verify(run: &Run<'_>, host: &str, phase: &str) -> Result<Outcome, Failure> {
    // One API connection (and port forward) for every re-read.
    let (client, _fwd) = kube_client(run)
        .await
        .map_err(|e| Failure::new(host, phase, "connect to the API server", e))?;
    let deadline = Instant::now() + settle_time(run);
    let mut last = String::new();
    loop {
        let (problems, confirmed, agents) = verify_once(run, &client, host, phase).await?;
        if problems.is_empty() {
            for line in confirmed {
                run.progress.println(&line);
            }
            run.progress.println(&format!(
                "{phase}: {agents} agents report the expected datapath"
            ));
            return Ok(Outcome::Unchanged);
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                host,
                phase,
                "cilium-dbg status --verbose (every agent)",
                problems.join("\n"),
            )
            .with_hint(
                "compare with `kubedrill check`: a feature the kernel cannot run is turned down there",
            ));
        }
        let now = problems.join("; ");
        if now != last {
            run.progress.println(&format!(
                "{phase}: not yet ({}s left): {now}",
                deadline.saturating_duration_since(Instant::now()).as_secs()
            ));
            last = now;
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}
