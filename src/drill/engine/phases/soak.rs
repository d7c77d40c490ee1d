//! `soak`: keep probing and sampling; judge agent memory growth.

#[allow(unused_imports)]
use super::super::*;

impl Ctx<'_> {
    pub(in crate::drill::engine) async fn soak(&mut self) -> PhaseResult {
        let secs = self.d.drill.definition.policy.soak_secs;
        if secs == 0 {
            return Ok(PhaseOutcome::Skipped);
        }
        let start = now();
        let end_at = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < end_at {
            let left = end_at.saturating_duration_since(tokio::time::Instant::now());
            self.say(&format!("  soak: {} s left", left.as_secs()));
            tokio::time::sleep(left.min(Duration::from_secs(30))).await;
            self.check_kube_proxy().await;
        }
        let soak = Window { start, end: now() };
        self.b.soak = Some(soak);
        if let Some(s) = &self.sampler
            && let Ok(m) = s.samples.lock()
        {
            let th = LeakThresholds::default();
            for (node, samples) in m.iter() {
                let series: Vec<(Timestamp, u64)> = samples
                    .iter()
                    .filter(|x| soak.contains(x.at))
                    .map(|x| (x.at, x.rss_bytes))
                    .collect();
                self.leaks.push((node.clone(), leak::analyse(&series, &th)));
            }
        }
        Ok(PhaseOutcome::Ok)
    }
}
