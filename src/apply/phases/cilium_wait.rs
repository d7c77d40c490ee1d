//! `cilium/wait`: the agent DaemonSet and the operator rolled out, every node Ready, and no
//! kube-proxy left (deleted with `--delete-kube-proxy`, which the CLI confirmed first) — all
//! through the Kubernetes API.

use crate::apply::cluster::kube_client;
use crate::apply::{Input, Run};
use crate::phase::{Failure, HostResult, Outcome, Phase, PhaseError, PhaseFuture, Step, Target};
use std::time::{Duration, Instant};

/// `cilium/wait`.
pub struct Wait;

impl<'a> Phase<Run<'a>> for Wait {
    fn name(&self) -> &str {
        "wait"
    }
    fn title(&self) -> String {
        "Wait for nodes Ready, Cilium rolled out, no kube-proxy left".into()
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![
            Step::check(
                Target::Local,
                format!(
                    "{} nodes Ready; daemonset/cilium and deployment/cilium-operator rolled out",
                    input.inv.hosts.len()
                ),
            ),
            Step::check(
                Target::Local,
                "no daemonset/kube-proxy or configmap/kube-proxy in kube-system",
            ),
        ])
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = Instant::now();
            let host = run.input.first_cp();
            let r = wait(run, &host, name).await;
            vec![HostResult::timed(host, r, t)]
        })
    }
}

async fn wait(run: &Run<'_>, host: &str, phase: &str) -> Result<Outcome, Failure> {
    use crate::k8s::{kube_proxy, wait};
    let fail = |command: &str, e: &dyn std::fmt::Display| Failure::new(host, phase, command, e);
    let (client, _fwd) = kube_client(run)
        .await
        .map_err(|e| fail("connect to the API server", &e))?;
    let p = run.progress.host(phase, host);
    p.set("cilium DaemonSet rolling out");
    // As long as the agents' startup probe allows (a lab adjustment under TCG), and a margin
    // for the image to start.
    let rollout = run
        .input
        .spec
        .cilium_startup_timeout
        .map_or(600, |s| s + 300);
    wait::cilium_rolled_out(&client, Duration::from_secs(rollout), |s| match s {
        wait::Progress::State(st) => p.set(&format!(
            "cilium agents: {} of {} ready, {} updated",
            st.ready, st.desired, st.updated
        )),
        wait::Progress::Retrying(e) => p.set(&format!("API retrying: {e}")),
    })
    .await
    .map_err(|e| fail("wait for ds/cilium", &e))?;
    p.set("cilium-operator rolling out");
    // The same allowance: under TCG the operator's liveness probe fails while the API server is
    // loaded by the agents' start, and it restarts a few times before it stays (the eighth lab
    // run: 4 restarts, Available after 7 minutes, past a fixed 5).
    wait::deployment_rolled_out(
        &client,
        "kube-system",
        "cilium-operator",
        Duration::from_secs(rollout),
        |_| {},
    )
    .await
    .map_err(|e| fail("wait for deploy/cilium-operator", &e))?;
    p.set("nodes Ready");
    wait::nodes_ready(
        &client,
        run.input.inv.hosts.len(),
        Duration::from_secs(600),
        |_| {},
    )
    .await
    .map_err(|e| fail("wait for nodes Ready", &e))?;
    let presence = kube_proxy::detect(&client)
        .await
        .map_err(|e| fail("look for kube-proxy", &e))?;
    if presence.is_absent() {
        p.finish(true, "rolled out, nodes Ready, no kube-proxy");
        return Ok(Outcome::Unchanged);
    }
    if !run.opts.delete_kube_proxy {
        p.finish(false, "kube-proxy present");
        return Err(fail(
            "look for kube-proxy",
            &"kube-proxy is present (DaemonSet or ConfigMap) beside Cilium's kube-proxy replacement",
        )
        .with_hint("pass --delete-kube-proxy (asks first) to delete both; then flush KUBE-* iptables rules on each node (kubedrill reset does it on a reset node)"));
    }
    let report = kube_proxy::remove(&client, presence.confirm_removal())
        .await
        .map_err(|e| fail("delete kube-proxy", &e))?;
    run.progress.println(&format!("{phase}: {report}"));
    p.finish(true, "kube-proxy removed");
    Ok(Outcome::Changed)
}
