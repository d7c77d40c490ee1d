//! The JSON-lines output: one event per line on stdout, each written and flushed whole under a
//! lock, so a caller reading over SSH sees every window as soon as it closes.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::spec::Kind;
use crate::window::Histogram;

/// RTT percentiles in milliseconds (microsecond resolution); absent when nothing was answered.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RttMs {
    /// Median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Maximum (exact).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl RttMs {
    /// Percentiles of a histogram.
    pub fn of(h: &Histogram) -> Self {
        let ms = |us: Option<u64>| us.map(|u| u as f64 / 1000.0);
        RttMs {
            p50: ms(h.quantile_us(0.5)),
            p99: ms(h.quantile_us(0.99)),
            max: ms(h.max_us()),
        }
    }
}

/// One output line. `event` names the variant; timestamps are unix milliseconds.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A probe started measuring (after its namespace and socket were set up).
    Start {
        /// When.
        ts_ms: u64,
        /// Probe id.
        probe: &'a str,
        /// Probe kind.
        kind: Kind,
        /// Target as written in the spec.
        target: &'a str,
        /// Probes per second.
        rate_per_s: u32,
        /// Time between sends, ms (rounded up).
        interval_ms: u64,
        /// Probe timeout, ms.
        timeout_ms: u32,
        /// Network namespace entered, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        netns: Option<String>,
        /// Kind-specific detail: `ping`/`raw` socket for ICMP, the mode for TCP, `connected`
        /// for UDP.
        socket: &'a str,
    },
    /// A loss window: consecutive lost probes (see `window`).
    Loss {
        /// Probe id.
        probe: &'a str,
        /// Probe kind.
        kind: Kind,
        /// Target as written in the spec.
        target: &'a str,
        /// Send time of the first lost probe.
        start_ms: u64,
        /// Send time of the first successful probe after the loss (stop time if `open`).
        end_ms: u64,
        /// `end_ms - start_ms`.
        duration_ms: u64,
        /// Probes lost in the window.
        lost: u64,
        /// The window was still open when the prober stopped.
        open: bool,
        /// Why the window's first probe was lost.
        reason: &'a str,
        /// The probe interval: the window's edges are each known to about this much.
        interval_ms: u64,
    },
    /// One probe's outcome (only with `run --trace`).
    Probe {
        /// Probe id.
        probe: &'a str,
        /// Sequence number (0, 1, … per probe).
        seq: u64,
        /// Send time.
        send_ms: u64,
        /// Answered in time.
        ok: bool,
        /// Round-trip time, if answered.
        #[serde(skip_serializing_if = "Option::is_none")]
        rtt_ms: Option<f64>,
        /// Why it was lost, if it was.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    /// Periodic counters of one probe.
    Stats {
        /// When.
        ts_ms: u64,
        /// Probe id.
        probe: &'a str,
        /// Probe kind.
        kind: Kind,
        /// Target as written in the spec.
        target: &'a str,
        /// Length of the period these counters cover.
        period_ms: u64,
        /// Probes resolved in the period.
        sent: u64,
        /// Probes answered in the period.
        ok: u64,
        /// Probes lost in the period.
        lost: u64,
        /// RTTs of the period's answered probes.
        rtt_ms: RttMs,
        /// Probes resolved since start.
        total_sent: u64,
        /// Probes answered since start.
        total_ok: u64,
        /// Probes lost since start.
        total_lost: u64,
        /// Start of the loss window open right now, if one is.
        #[serde(skip_serializing_if = "Option::is_none")]
        open_window_start_ms: Option<u64>,
    },
    /// The final counters of one probe, after every in-flight probe was resolved.
    Summary {
        /// When.
        ts_ms: u64,
        /// Probe id.
        probe: &'a str,
        /// Probe kind.
        kind: Kind,
        /// Target as written in the spec.
        target: &'a str,
        /// Send time of the first probe (start time if none was sent).
        start_ms: u64,
        /// When sending stopped.
        end_ms: u64,
        /// Probes sent and resolved.
        sent: u64,
        /// Probes answered.
        ok: u64,
        /// Probes lost.
        lost: u64,
        /// Send slots skipped because the prober could not keep up (scheduling stalls).
        skipped: u64,
        /// Loss windows (including an open one).
        windows: u64,
        /// Sum of the windows' durations.
        loss_ms: u64,
        /// Longest window.
        longest_window_ms: u64,
        /// RTTs over the whole run.
        rtt_ms: RttMs,
        /// A held connection's history (`tcp_mode: persistent` only).
        #[serde(skip_serializing_if = "Option::is_none")]
        connections: Option<crate::engine::Connections>,
        /// Why the run stopped.
        stop: &'a str,
    },
    /// `serve` is ready: the addresses it listens on (with the ports actually bound).
    Listening {
        /// When.
        ts_ms: u64,
        /// TCP echo listeners.
        tcp: Vec<String>,
        /// UDP echo sockets.
        udp: Vec<String>,
    },
    /// `serve` stopped.
    Stopped {
        /// When.
        ts_ms: u64,
        /// TCP connections accepted.
        tcp_connections: u64,
        /// UDP datagrams echoed.
        udp_datagrams: u64,
        /// Why it stopped.
        stop: &'a str,
    },
}

/// Writes events, one JSON line each, flushing after every line.
pub struct Emitter {
    out: Mutex<Box<dyn Write + Send>>,
    broken: AtomicBool,
}

impl Emitter {
    /// An emitter writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Emitter {
            out: Mutex::new(out),
            broken: AtomicBool::new(false),
        }
    }

    /// An emitter on the process's stdout.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }

    /// Writes one event line and flushes. Returns false (and stays broken) once a write failed,
    /// e.g. because the reader went away.
    pub fn emit(&self, ev: &Event<'_>) -> bool {
        if self.broken.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut line) = serde_json::to_vec(ev) else {
            return true;
        };
        line.push(b'\n');
        let mut out = match self.out.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            self.broken.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Whether a write has failed.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn loss_line_format() {
        let buf = Buf::default();
        let e = Emitter::new(Box::new(buf.clone()));
        assert!(e.emit(&Event::Loss {
            probe: "p",
            kind: Kind::Udp,
            target: "10.0.0.1:7",
            start_ms: 1000,
            end_ms: 1500,
            duration_ms: 500,
            lost: 25,
            open: false,
            reason: "timeout",
            interval_ms: 20,
        }));
        let s = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            s,
            "{\"event\":\"loss\",\"probe\":\"p\",\"kind\":\"udp\",\"target\":\"10.0.0.1:7\",\
             \"start_ms\":1000,\"end_ms\":1500,\"duration_ms\":500,\"lost\":25,\"open\":false,\
             \"reason\":\"timeout\",\"interval_ms\":20}\n"
        );
    }

    #[test]
    fn broken_writer_is_remembered() {
        struct Fail;
        impl Write for Fail {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = Emitter::new(Box::new(Fail));
        let ev = Event::Listening {
            ts_ms: 1,
            tcp: vec![],
            udp: vec![],
        };
        assert!(!e.emit(&ev));
        assert!(e.is_broken());
        assert!(!e.emit(&ev));
    }
}
