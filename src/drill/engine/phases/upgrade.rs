//! `upgrade/<version>`: one child phase per step of the upgrade path.

#[allow(unused_imports)]
use super::super::*;

impl Ctx<'_> {
    /// One step of the upgrade path (`upgrade/<version>`): helm upgrade, the rollout with a pod
    /// burst, verification, and the rollback decision (which skips the later steps).
    pub(in crate::drill::engine) async fn upgrade_step(&mut self, i: usize) -> PhaseResult {
        let d = self.d;
        let cp = self.cp.clone();
        if self.watch.is_none() {
            self.start_agent_watch().await;
        }
        let steps = d.drill.plan.steps().to_vec();
        let Some(step) = steps.get(i) else {
            return Ok(PhaseOutcome::Skipped);
        };
        let name = format!("upgrade/{}", step.to());
        let t = now();
        self.say(&format!("-- {name}: {step}"));
        let (Some(chart), Some(file)) = (
            self.charts.get(&step.to()).cloned(),
            self.remote_values.get(&step.to()).cloned(),
        ) else {
            self.fail(
                &cp,
                &name,
                "helm upgrade",
                "no chart or values for this step",
            );
            self.b.phase(&name, t, now(), PhaseOutcome::Failed);
            return Err(Stop);
        };
        let built = if step.kind() == StepKind::Forced {
            d.helm.upgrade_forced(&chart, self.deployed, &file)
        } else if d.drill.definition.reuse_values {
            d.helm
                .upgrade(&chart, self.deployed, &UpgradeValues::ReuseWith(file))
        } else {
            d.helm
                .upgrade(&chart, self.deployed, &UpgradeValues::File(file))
        };
        let cmd = match built {
            Ok(c) => c,
            Err(e) => {
                self.fail(&cp, &name, "helm upgrade", e);
                self.b.phase(&name, t, now(), PhaseOutcome::Failed);
                return self.after_failed_step(&name);
            }
        };
        if self
            .confirm(&name, &format!("helm upgrade cilium to {}", step.to()))
            .is_err()
        {
            self.b.phase(&name, t, now(), PhaseOutcome::Failed);
            return self.after_failed_step(&name);
        }
        self.changed = true;
        let mut step_failure: Option<String> = None;
        if self.helm(&name, &cmd).await.is_err() {
            step_failure = Some(format!("{cmd} failed"));
        } else {
            let at = now();
            match self.history(&name).await {
                Ok(h) => {
                    if let Some(r) = h.deployed() {
                        self.b.helm_events.push(HelmEvent::Upgrade {
                            at,
                            revision: r.revision,
                            chart_version: step.to().to_string(),
                        });
                    }
                }
                Err(Stop) => step_failure = Some("helm history failed".into()),
            }
            // Faults on nodes (drill.faults) fire during the first step's rollout.
            let faults = if i == 0 {
                self.start_faults()
            } else {
                Vec::new()
            };
            // The rollout, with the pod burst while it runs.
            let burst = self.start_burst(i).await;
            if let Err(e) = self
                .wait_rollout(&name, &format!("rollout to {}", step.to()))
                .await
            {
                step_failure = Some(format!("rollout: {e}"));
            }
            if let Some(h) = burst {
                let limit = d.timeouts.burst + Duration::from_secs(120);
                let r = match tokio::time::timeout(limit, h).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.notes.push(format!(
                            "pod burst during {name}: no result within {} s",
                            limit.as_secs()
                        ));
                        Ok(Ok(crate::report::record::PodBurst {
                            start: t,
                            end: now(),
                            nodes: Vec::new(),
                        }))
                    }
                };
                match r {
                    Ok(Ok(b)) => {
                        let failed: u32 = b.nodes.iter().map(|n| n.failed).sum();
                        let created: u32 = b.nodes.iter().map(|n| n.created).sum();
                        self.say(&format!("  pod burst: {created} created, {failed} failed"));
                        self.b.bursts.push(b);
                    }
                    Ok(Err(e)) => self.notes.push(format!("pod burst during {name}: {e}")),
                    Err(e) => self.notes.push(format!("pod burst during {name}: {e}")),
                }
            }
            self.join_faults(faults).await;
            if step_failure.is_none() {
                let lagging: Vec<String> = {
                    let at = self
                        .tracker
                        .lock()
                        .map(|t| (t.nodes(), t.nodes_at(step.to())))
                        .unwrap_or_default();
                    at.0.into_iter().filter(|n| !at.1.contains(n)).collect()
                };
                if !lagging.is_empty() {
                    self.notes.push(format!(
                        "after {name}, the agent watch had not yet seen {} ready at {}",
                        lagging.join(", "),
                        step.to()
                    ));
                }
            }
        }
        let mismatches = if step_failure.is_none() {
            self.verify(step.to()).await
        } else {
            Vec::new()
        };
        for m in &mismatches {
            self.say(&format!("  mismatch: {} {}", m.node, m.detail));
        }
        self.check_kube_proxy().await;
        let windows = self.windows_so_far().await;
        let decision = policy::rollback_decision(
            &windows,
            &self.b.policy.max_interruption_ms,
            &mismatches,
            d.drill.definition.policy.rollback_on_verify_failure,
            step_failure.as_deref(),
        );
        self.mismatches.extend(mismatches);
        let outcome = if step_failure.is_some() {
            PhaseOutcome::Failed
        } else {
            PhaseOutcome::Ok
        };
        self.b.phase(&name, t, now(), outcome);
        if decision.rollback {
            for r in &decision.reasons {
                self.say(&format!("  rollback: {r}"));
            }
            self.rollback_reasons = Some(decision.reasons);
            return Ok(PhaseOutcome::Ok);
        }
        self.deployed = step.to();
        Ok(PhaseOutcome::Ok)
    }

    /// Start every node fault of the drill, each after its delay, on its node's SSH session.
    pub(super) fn start_faults(&mut self) -> Vec<JoinHandle<FaultEvent>> {
        let mut out = Vec::new();
        for f in self.d.drill.definition.faults.clone() {
            let (Some(node), Some(after), Some(cmd)) = (f.node(), f.after_secs(), f.command())
            else {
                continue;
            };
            let node = node.to_owned();
            let session = self.host(&node);
            let progress = self.progress.clone();
            self.say(&format!("  fault in {after} s: {}", f.describe()));
            out.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(after)).await;
                let at = now();
                let kind = f.kind().to_owned();
                let Some(s) = session else {
                    return FaultEvent {
                        at,
                        kind,
                        node: Some(node),
                        detail: "no SSH session".into(),
                        injected: false,
                    };
                };
                let r = s.exec(&Command::new(cmd).privileged()).await;
                let (injected, detail) = match r {
                    Ok(o) if o.success() => (true, o.stdout_text().trim().to_owned()),
                    Ok(o) => (false, o.stderr_text().trim().to_owned()),
                    Err(e) => (false, e.to_string()),
                };
                progress.println(&format!(
                    "  fault {kind} on {node}: {}{detail}",
                    if injected { "" } else { "NOT injected: " }
                ));
                FaultEvent {
                    at,
                    kind,
                    node: Some(node),
                    detail,
                    injected,
                }
            }));
        }
        out
    }

    /// Wait for the faults started by [`Self::start_faults`] and record them.
    pub(super) async fn join_faults(&mut self, faults: Vec<JoinHandle<FaultEvent>>) {
        for h in faults {
            match h.await {
                Ok(e) => self.b.faults.push(e),
                Err(e) => self.notes.push(format!("a fault task failed: {e}")),
            }
        }
    }
}
