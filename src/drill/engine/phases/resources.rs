//! `resources`: every agent's CPU and RSS sampled from /proc until the report.

#[allow(unused_imports)]
use super::super::*;

impl Ctx<'_> {
    pub(in crate::drill::engine) fn resources(&mut self) -> PhaseResult {
        let interval = Duration::from_secs(self.d.drill.definition.resources.interval_secs);
        let hosts = self.hosts.clone();
        let samples: Arc<Mutex<BTreeMap<String, Vec<ResourceSample>>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (s2, e2) = (samples.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let mut samplers: BTreeMap<String, Sampler> = BTreeMap::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                let reads = futures::future::join_all(hosts.iter().map(|(h, s)| async move {
                    (
                        h.clone(),
                        resources::sample(s.as_ref(), interval.max(Duration::from_secs(10))).await,
                    )
                }))
                .await;
                for (h, r) in reads {
                    match r {
                        Ok(reading) => {
                            let sample =
                                samplers.entry(h.clone()).or_default().next(now(), reading);
                            if let Ok(mut m) = s2.lock() {
                                m.entry(h).or_default().push(sample);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut v) = e2.lock()
                                && v.len() < 50
                            {
                                v.push(e.to_string());
                            }
                        }
                    }
                }
            }
        });
        self.sampler = Some(SamplerTask {
            stop,
            task,
            samples,
            errors,
        });
        Ok(PhaseOutcome::Ok)
    }
}
