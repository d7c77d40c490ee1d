//! Memory-leak detection over a node's agent RSS samples in the soak window.
//!
//! A least-squares line through (time, RSS) gives the growth rate in bytes per minute and the
//! relative growth over the window (fitted end / fitted start − 1). A series is flagged as
//! leaking when the rate and the relative growth both exceed their thresholds **and** the growth
//! is monotone-ish: the series is cut into [`LeakThresholds::segments`] consecutive parts and
//! each part's mean must not be below the previous one's (noise inside a part averages out, a
//! one-off spike or a sawtooth does not pass). For a flagged series the fitted line also says
//! when the agent would reach its memory limit (the 2 GiB limit that, in the incident this tool
//! was built after, pushed a leaking agent into restarts).

use super::time::{Millis, Timestamp};
use serde::{Deserialize, Serialize};

/// One MiB.
pub const MIB: u64 = 1024 * 1024;
/// One GiB.
pub const GIB: u64 = 1024 * MIB;

/// When memory growth counts as a leak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeakThresholds {
    /// Fitted growth rate above which a series may be a leak (default 1 MiB/min).
    pub min_slope_bytes_per_min: f64,
    /// Relative growth over the window above which a series may be a leak (default 0.10).
    pub min_relative_growth: f64,
    /// Fewest samples to judge at all (default 6).
    pub min_samples: usize,
    /// Shortest window to judge at all (default 60 s).
    pub min_span_ms: Millis,
    /// Parts whose means must not decrease for the growth to count as monotone (default 4).
    pub segments: usize,
    /// The agent's memory limit, for the time-to-limit estimate (default 2 GiB).
    pub memory_limit_bytes: u64,
}

impl Default for LeakThresholds {
    fn default() -> Self {
        LeakThresholds {
            min_slope_bytes_per_min: MIB as f64,
            min_relative_growth: 0.10,
            min_samples: 6,
            min_span_ms: Millis(60_000),
            segments: 4,
            memory_limit_bytes: 2 * GIB,
        }
    }
}

impl LeakThresholds {
    /// Inconsistent settings, as `field: problem` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.min_slope_bytes_per_min.is_finite() || self.min_slope_bytes_per_min < 0.0 {
            p.push("min_slope_bytes_per_min: must be a number ≥ 0".to_owned());
        }
        if !self.min_relative_growth.is_finite() || self.min_relative_growth < 0.0 {
            p.push("min_relative_growth: must be a number ≥ 0".to_owned());
        }
        if self.segments < 2 {
            p.push("segments: must be at least 2".to_owned());
        }
        if self.min_samples < 3 || self.min_samples < self.segments {
            p.push("min_samples: must be at least 3 and at least `segments`".to_owned());
        }
        if self.memory_limit_bytes == 0 {
            p.push("memory_limit_bytes: must be positive".to_owned());
        }
        p
    }
}

/// The outcome of [`analyse`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum LeakVerdict {
    /// Too few samples, or too short a window, to judge.
    InsufficientData {
        /// Samples in the window.
        samples: usize,
        /// Time between the first and last sample.
        span: Millis,
    },
    /// Judged.
    Judged(LeakAnalysis),
}

impl LeakVerdict {
    /// True when judged and flagged as a leak.
    pub fn leaking(&self) -> bool {
        matches!(self, LeakVerdict::Judged(a) if a.leaking)
    }
}

/// The numbers behind a judged series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakAnalysis {
    /// Samples used.
    pub samples: usize,
    /// Time between the first and last sample.
    pub span: Millis,
    /// Least-squares slope.
    pub slope_bytes_per_min: f64,
    /// Fitted growth over the window relative to the fitted start.
    pub relative_growth: f64,
    /// Whether the segment means never decrease.
    pub monotone: bool,
    /// Slope and growth above their thresholds, and monotone.
    pub leaking: bool,
    /// RSS of the first sample.
    pub first_rss_bytes: u64,
    /// RSS of the last sample.
    pub last_rss_bytes: u64,
    /// Highest RSS.
    pub peak_rss_bytes: u64,
    /// For a leaking series: from the last sample until the fitted line reaches the memory limit
    /// (zero if it is already there).
    pub time_to_limit: Option<Millis>,
}

/// Judge one node's RSS series (time order; the caller picks the window).
pub fn analyse(samples: &[(Timestamp, u64)], th: &LeakThresholds) -> LeakVerdict {
    let n = samples.len();
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return LeakVerdict::InsufficientData {
            samples: 0,
            span: Millis(0),
        };
    };
    let span = last.0.since(first.0);
    if n < th.min_samples.max(3) || span < th.min_span_ms || span == Millis(0) {
        return LeakVerdict::InsufficientData { samples: n, span };
    }
    let t0 = first.0;
    let xs: Vec<f64> = samples.iter().map(|s| s.0.since(t0).minutes()).collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.1 as f64).collect();
    let nf = n as f64;
    let mx = xs.iter().sum::<f64>() / nf;
    let my = ys.iter().sum::<f64>() / nf;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(&ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let intercept = my - slope * mx;
    let x_end = span.minutes();
    let fitted_start = intercept.max(1.0);
    let fitted_end = intercept + slope * x_end;
    let relative_growth = slope * x_end / fitted_start;

    let k = th.segments.clamp(2, n);
    let means: Vec<f64> = (0..k)
        .map(|i| {
            let part = &ys[i * n / k..(i + 1) * n / k];
            part.iter().sum::<f64>() / part.len().max(1) as f64
        })
        .collect();
    let monotone = means.windows(2).all(|w| w[1] >= w[0]);
    let leaking =
        slope > th.min_slope_bytes_per_min && relative_growth > th.min_relative_growth && monotone;
    let time_to_limit = (leaking && slope > 0.0).then(|| {
        let remaining = th.memory_limit_bytes as f64 - fitted_end;
        if remaining <= 0.0 {
            Millis(0)
        } else {
            // Capped at ~31 years: beyond that the estimate means nothing anyway.
            Millis((remaining / slope * 60_000.0).min(1e12) as u64)
        }
    });
    LeakVerdict::Judged(LeakAnalysis {
        samples: n,
        span,
        slope_bytes_per_min: slope,
        relative_growth,
        monotone,
        leaking,
        first_rss_bytes: first.1,
        last_rss_bytes: last.1,
        peak_rss_bytes: samples.iter().map(|s| s.1).max().unwrap_or(0),
        time_to_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_166_040_000;

    /// Samples every 5 s for `minutes`, RSS from `f(minutes since start)`.
    fn series(minutes: u64, f: impl Fn(f64, usize) -> f64) -> Vec<(Timestamp, u64)> {
        (0..=minutes * 12)
            .map(|i| {
                let ms = i * 5000;
                let rss = f(ms as f64 / 60_000.0, i as usize);
                (Timestamp::from_unix_ms(T0 + ms as i64), rss.max(0.0) as u64)
            })
            .collect()
    }

    /// Deterministic noise in [-1, 1] (a small LCG, no `rand` in unit tests).
    fn noise(i: usize) -> f64 {
        let mut x = (i as u64)
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 33;
        (x % 2001) as f64 / 1000.0 - 1.0
    }

    fn judged(v: LeakVerdict) -> LeakAnalysis {
        match v {
            LeakVerdict::Judged(a) => a,
            other => panic!("expected a judged series, got {other:?}"),
        }
    }

    #[test]
    fn flat_series_is_not_a_leak() {
        let s = series(5, |_, _| 180.0 * MIB as f64);
        let a = judged(analyse(&s, &LeakThresholds::default()));
        assert!(!a.leaking);
        assert!(a.slope_bytes_per_min.abs() < 1.0);
        assert!(a.relative_growth.abs() < 1e-9);
        assert_eq!(a.time_to_limit, None);
        assert_eq!(a.peak_rss_bytes, 180 * MIB);
    }

    #[test]
    fn noisy_flat_series_is_not_a_leak() {
        // ±6 MiB of noise around 180 MiB: far more than a 1 MiB/min trend per sample.
        let s = series(5, |_, i| 180.0 * MIB as f64 + 6.0 * MIB as f64 * noise(i));
        let a = judged(analyse(&s, &LeakThresholds::default()));
        assert!(!a.leaking, "{a:?}");
        assert!(a.relative_growth.abs() < 0.05, "{a:?}");
    }

    #[test]
    fn leaking_series_is_flagged_with_time_to_limit() {
        // 180 MiB growing 24 MiB/min for 3 minutes, with ±2 MiB noise.
        let s = series(3, |m, i| (180.0 + 24.0 * m + 2.0 * noise(i)) * MIB as f64);
        let a = judged(analyse(&s, &LeakThresholds::default()));
        assert!(a.leaking, "{a:?}");
        assert!(a.monotone);
        let slope_mib = a.slope_bytes_per_min / MIB as f64;
        assert!((slope_mib - 24.0).abs() < 1.0, "slope {slope_mib}");
        assert!((a.relative_growth - 72.0 / 180.0).abs() < 0.03, "{a:?}");
        // Fitted end ≈ 252 MiB; (2048 − 252) / 24 ≈ 74.8 min.
        let ttl = a.time_to_limit.expect("time to limit").minutes();
        assert!((ttl - 74.8).abs() < 3.0, "time to limit {ttl} min");
    }

    #[test]
    fn slow_growth_below_thresholds_is_not_a_leak() {
        // 0.5 MiB/min: monotone, but under the rate threshold.
        let s = series(5, |m, _| (180.0 + 0.5 * m) * MIB as f64);
        let a = judged(analyse(&s, &LeakThresholds::default()));
        assert!(a.monotone && !a.leaking, "{a:?}");
        // 2 MiB/min on 2 GiB for 3 minutes: fast enough, but only 0.3 % growth.
        let s = series(3, |m, _| (2000.0 + 2.0 * m) * MIB as f64);
        let a = judged(analyse(&s, &LeakThresholds::default()));
        assert!(!a.leaking, "{a:?}");
    }

    #[test]
    fn sawtooth_is_not_monotone() {
        // Grows 30 MiB/min but drops back each minute (garbage collection): not a leak.
        let s = series(4, |m, _| (180.0 + 30.0 * (m % 1.0) + 5.0 * m) * MIB as f64);
        let th = LeakThresholds {
            segments: 8,
            ..LeakThresholds::default()
        };
        let a = judged(analyse(&s, &th));
        assert!(!a.monotone && !a.leaking, "{a:?}");
    }

    #[test]
    fn too_little_data_is_not_judged() {
        let s = series(5, |_, _| 1.0);
        assert!(matches!(
            analyse(&s[..3], &LeakThresholds::default()),
            LeakVerdict::InsufficientData { samples: 3, .. }
        ));
        assert!(matches!(
            analyse(&[], &LeakThresholds::default()),
            LeakVerdict::InsufficientData { samples: 0, .. }
        ));
        // Eight samples over 35 s: enough samples, too short.
        assert!(matches!(
            analyse(&s[..8], &LeakThresholds::default()),
            LeakVerdict::InsufficientData {
                samples: 8,
                span: Millis(35_000)
            }
        ));
    }

    #[test]
    fn already_past_the_limit_means_zero_time_left() {
        let s = series(2, |m, _| (2100.0 + 300.0 * m) * MIB as f64);
        let a = judged(analyse(&s, &LeakThresholds::default()));
        assert!(a.leaking);
        assert_eq!(a.time_to_limit, Some(Millis(0)));
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(LeakThresholds::default().problems().is_empty());
        let bad = LeakThresholds {
            min_slope_bytes_per_min: f64::NAN,
            segments: 1,
            min_samples: 2,
            memory_limit_bytes: 0,
            ..LeakThresholds::default()
        };
        assert_eq!(bad.problems().len(), 4);
    }
}
