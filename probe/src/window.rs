//! Loss-window accounting: pure logic over probe outcomes in send order.
//!
//! A **loss window** is a maximal run of consecutive lost probes (in send order). Its
//! `start_ms` is the send time of the run's first lost probe; its `end_ms` is the send time of
//! the first successful probe after the run; `duration_ms = end_ms - start_ms`; `lost` is the
//! number of probes in the run. A run still going when the prober stops is reported with
//! `open: true` and `end_ms` = the stop time (the window lasted at least that long).
//!
//! Outcomes must be fed in send order even though they are learnt out of order (a probe times
//! out after later probes have succeeded): the prober resolves them in order before recording.

use std::time::Duration;

/// What happened to one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Echo received within the timeout, with its round-trip time.
    Ok(Duration),
    /// No (valid) echo within the timeout, or an error; the reason is for humans.
    Lost(String),
}

/// A closed or open loss window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Send time (unix ms) of the first lost probe.
    pub start_ms: u64,
    /// Send time (unix ms) of the first successful probe after the run, or the stop time if open.
    pub end_ms: u64,
    /// Probes lost in the run.
    pub lost: u64,
    /// The run was still going when the prober stopped.
    pub open: bool,
    /// Why the first probe of the run was lost.
    pub reason: String,
}

impl Window {
    /// `end_ms - start_ms`.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// Counters and RTT distribution over some span (one stats period, or the whole run).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Probes resolved (sent and either answered or given up on).
    pub sent: u64,
    /// Probes answered in time.
    pub ok: u64,
    /// Probes lost.
    pub lost: u64,
    /// RTTs of the answered probes.
    pub rtt: Histogram,
}

/// The accountant of one probe: feed it outcomes in send order, get windows back.
#[derive(Debug, Clone, Default)]
pub struct Accountant {
    open: Option<Window>,
    /// Whole-run counters.
    pub total: Counts,
    /// Counters since the last [`Accountant::take_period`].
    pub period: Counts,
    /// Loss windows closed so far (open ones are counted by [`Accountant::finish`]).
    pub windows: u64,
    /// Sum of closed windows' durations.
    pub loss_ms: u64,
    /// Longest closed window.
    pub longest_ms: u64,
}

impl Accountant {
    /// A fresh accountant.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the outcome of the probe sent at `send_ms` (unix ms). Returns the window this
    /// outcome closes, if any.
    pub fn record(&mut self, send_ms: u64, outcome: Outcome) -> Option<Window> {
        self.total.sent += 1;
        self.period.sent += 1;
        match outcome {
            Outcome::Ok(rtt) => {
                self.total.ok += 1;
                self.period.ok += 1;
                self.total.rtt.record(rtt);
                self.period.rtt.record(rtt);
                let mut w = self.open.take()?;
                w.end_ms = send_ms.max(w.start_ms);
                w.open = false;
                self.windows += 1;
                self.loss_ms += w.duration_ms();
                self.longest_ms = self.longest_ms.max(w.duration_ms());
                Some(w)
            }
            Outcome::Lost(reason) => {
                self.total.lost += 1;
                self.period.lost += 1;
                match &mut self.open {
                    Some(w) => w.lost += 1,
                    None => {
                        self.open = Some(Window {
                            start_ms: send_ms,
                            end_ms: send_ms,
                            lost: 1,
                            open: true,
                            reason,
                        })
                    }
                }
                None
            }
        }
    }

    /// Whether a window is open now.
    pub fn in_window(&self) -> bool {
        self.open.is_some()
    }

    /// Start (unix ms) of the window open now, if any.
    pub fn open_start_ms(&self) -> Option<u64> {
        self.open.as_ref().map(|w| w.start_ms)
    }

    /// Returns the period counters and starts a new period.
    pub fn take_period(&mut self) -> Counts {
        std::mem::take(&mut self.period)
    }

    /// Ends the run at `stop_ms`: returns the still-open window, if any, with `open: true` and
    /// `end_ms = stop_ms`. It is counted in `windows`, `loss_ms` and `longest_ms`.
    pub fn finish(&mut self, stop_ms: u64) -> Option<Window> {
        let mut w = self.open.take()?;
        w.end_ms = stop_ms.max(w.start_ms);
        w.open = true;
        self.windows += 1;
        self.loss_ms += w.duration_ms();
        self.longest_ms = self.longest_ms.max(w.duration_ms());
        Some(w)
    }
}

/// Sub-buckets per power of two: relative error of a percentile at most 1/64 (1.6 %).
const SUB: u32 = 64;
#[cfg(test)]
const BUCKETS: usize = (64 - SUB.trailing_zeros() as usize + 1) * SUB as usize;

/// A log-linear histogram of durations in microseconds: bounded size however long the run
/// (grown only up to the largest value's bucket: under 8 KiB for RTTs below a second), with
/// percentiles accurate to 1/64 of the value; the maximum is exact.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max_us: u64,
}

fn bucket_of(v: u64) -> usize {
    if v < u64::from(SUB) {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= log2(SUB)
    let shift = msb - SUB.trailing_zeros();
    let sub = (v >> shift) as usize - SUB as usize; // 0..SUB
    ((shift as usize + 1) * SUB as usize) + sub
}

/// The largest value mapping to bucket `b` (so percentiles never under-report).
fn bucket_high(b: usize) -> u64 {
    let s = SUB as usize;
    if b < s {
        return b as u64;
    }
    let shift = (b / s - 1) as u32;
    let sub = (b % s) as u128 + u128::from(SUB);
    u64::try_from(((sub + 1) << shift) - 1).unwrap_or(u64::MAX)
}

impl Histogram {
    /// Adds one duration.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let b = bucket_of(us);
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.n += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Number of durations recorded.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// No durations recorded.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The `q`-quantile (0..=1) in microseconds, `None` when empty. Never above the maximum.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_high(b).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    /// The exact maximum in microseconds, `None` when empty.
    pub fn max_us(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a script of outcomes: `.` ok, `x` lost; probe `i` is sent at `t0 + i * step`.
    fn run(script: &str, t0: u64, step: u64) -> (Vec<Window>, Accountant) {
        let mut a = Accountant::new();
        let mut out = Vec::new();
        for (i, c) in script.chars().enumerate() {
            let t = t0 + i as u64 * step;
            let o = match c {
                '.' => Outcome::Ok(Duration::from_micros(100 + i as u64)),
                'x' => Outcome::Lost(format!("timeout #{i}")),
                _ => unreachable!(),
            };
            out.extend(a.record(t, o));
        }
        (out, a)
    }

    #[test]
    fn no_loss_no_window() {
        let (w, mut a) = run("..........", 1000, 20);
        assert!(w.is_empty());
        assert_eq!(a.finish(2000), None);
        assert_eq!((a.total.sent, a.total.ok, a.total.lost), (10, 10, 0));
        assert_eq!(a.windows, 0);
    }

    #[test]
    fn one_window_spans_first_loss_to_next_success() {
        // Probes every 20 ms from t=1000; lost: #3..=#7; first success after: #8 at 1160.
        let (w, mut a) = run("...xxxxx..", 1000, 20);
        assert_eq!(
            w,
            vec![Window {
                start_ms: 1060,
                end_ms: 1160,
                lost: 5,
                open: false,
                reason: "timeout #3".into()
            }]
        );
        assert_eq!(w[0].duration_ms(), 100);
        assert_eq!(a.finish(5000), None);
        assert_eq!((a.windows, a.loss_ms, a.longest_ms), (1, 100, 100));
        assert_eq!((a.total.sent, a.total.ok, a.total.lost), (10, 5, 5));
    }

    #[test]
    fn separate_runs_are_separate_windows() {
        let (w, a) = run(".x..xx.xxx.", 0, 10);
        let spans: Vec<_> = w.iter().map(|w| (w.start_ms, w.end_ms, w.lost)).collect();
        assert_eq!(spans, vec![(10, 20, 1), (40, 60, 2), (70, 100, 3)]);
        assert_eq!((a.windows, a.loss_ms, a.longest_ms), (3, 60, 30));
    }

    #[test]
    fn open_window_at_exit() {
        let (w, mut a) = run("..xxx", 0, 10);
        assert!(w.is_empty());
        assert!(a.in_window());
        let open = a.finish(75).unwrap();
        assert_eq!(
            (open.start_ms, open.end_ms, open.lost, open.open),
            (20, 75, 3, true)
        );
        assert_eq!(open.duration_ms(), 55);
        assert!(!a.in_window());
        assert_eq!(a.finish(100), None, "reported once");
        assert_eq!(a.windows, 1);
    }

    #[test]
    fn loss_from_the_first_probe_and_all_lost() {
        let (w, _) = run("xx.", 500, 10);
        assert_eq!((w[0].start_ms, w[0].end_ms, w[0].lost), (500, 520, 2));
        let (w, mut a) = run("xxxx", 0, 10);
        assert!(w.is_empty());
        let open = a.finish(40).unwrap();
        assert_eq!((open.start_ms, open.lost, open.open), (0, 4, true));
    }

    #[test]
    fn periods_reset_totals_do_not() {
        let (_, mut a) = run("..x", 0, 10);
        let p = a.take_period();
        assert_eq!((p.sent, p.ok, p.lost, p.rtt.len()), (3, 2, 1, 2));
        a.record(100, Outcome::Ok(Duration::from_millis(1)));
        assert_eq!((a.period.sent, a.period.ok), (1, 1));
        assert_eq!((a.total.sent, a.total.ok, a.total.lost), (4, 3, 1));
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5).unwrap();
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((500..=500 + 500 / 64 + 1).contains(&p50), "{p50}");
        assert!((990..=990 + 990 / 64 + 1).contains(&p99), "{p99}");
        assert_eq!(h.max_us(), Some(1000));
        assert_eq!(h.quantile_us(1.0), Some(1000));
        h.record(Duration::from_secs(100_000));
        assert_eq!(h.max_us(), Some(100_000_000_000));
    }

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..200_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS);
            assert!(b >= last);
            last = b;
            let hi = bucket_high(b);
            assert!(hi >= v, "{v} -> {b} -> {hi}");
            assert!(hi - v <= v / 64 + 1, "{v} -> {hi}");
        }
    }
}
