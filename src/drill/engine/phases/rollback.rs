//! `rollback`: `helm rollback` when verification failed or a loss window exceeded the policy.

#[allow(unused_imports)]
use super::super::*;

impl Ctx<'_> {
    pub(in crate::drill::engine) async fn rollback(&mut self) -> PhaseResult {
        let phase = "rollback";
        let d = self.d;
        let Some(reasons) = self.rollback_reasons.clone() else {
            return Ok(PhaseOutcome::Skipped);
        };
        let cp = self.cp.clone();
        let Some(to) = self.pre_revision else {
            return Err(self.fail(
                &cp,
                phase,
                "helm rollback",
                "the revision before the drill is unknown",
            ));
        };
        self.say(&format!(
            "  rolling back to revision {to} (Cilium {}): {}",
            d.drill.from,
            reasons.join("; ")
        ));
        let cmd = match d.helm.rollback(to) {
            Ok(c) => c,
            Err(e) => return Err(self.fail(&cp, phase, "helm rollback", e)),
        };
        self.confirm(
            phase,
            &format!(
                "helm rollback cilium to revision {to} (Cilium {})",
                d.drill.from
            ),
        )?;
        self.helm(phase, &cmd).await?;
        let at = now();
        let h = self.history(phase).await?;
        if let Some(r) = h.deployed() {
            self.b.helm_events.push(HelmEvent::Rollback {
                at,
                revision: r.revision,
                to_revision: to,
            });
        }
        self.rolled_back = true;
        self.b.mark_rolled_back("upgrade/");
        if self
            .wait_rollout(phase, &format!("rollback to {}", d.drill.from))
            .await
            .is_err()
        {
            return Err(Stop);
        }
        let after = self.verify(d.drill.from).await;
        if !after.is_empty() {
            for m in &after {
                self.say(&format!("  after the rollback: {} {}", m.node, m.detail));
            }
            self.mismatches.extend(after);
        }
        self.deployed = d.drill.from;
        self.check_kube_proxy().await;
        Ok(PhaseOutcome::Ok)
    }
}
