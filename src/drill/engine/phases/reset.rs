//! `reset`: revert every lab VM to the drill's snapshot (`--reset` only).

#[allow(unused_imports)]
use super::super::*;

impl Ctx<'_> {
    pub(in crate::drill::engine) async fn reset(&mut self) -> PhaseResult {
        let Some(snap) = self.d.reset.clone() else {
            return Ok(PhaseOutcome::Skipped);
        };
        let lab = self.d.lab.name.clone();
        match crate::lab::lifecycle::reset(&lab, &snap, self.d.timeouts.reset_ssh, self.progress)
            .await
        {
            Ok(r) => {
                self.say(&format!(
                    "lab {lab} reverted to {snap} in {:.1} s",
                    r.total_secs
                ));
                Ok(PhaseOutcome::Ok)
            }
            Err(e) => Err(self.fail("(lab)", "reset", &format!("lab reset {lab} {snap}"), e)),
        }
    }
}
