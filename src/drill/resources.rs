//! Cilium agent CPU and memory, read from the node's `/proc` over SSH (no metrics server, no
//! exec into the pod): `pidof cilium-agent`, then `/proc/PID/stat` (utime + stime, in clock
//! ticks of `getconf CLK_TCK`; the process start time) and `/proc/PID/status` (`VmRSS`), with
//! `/proc/uptime` as the node's own clock for the CPU rate.
//!
//! Everything here but [`sample`] is pure: the parsers take the files' text, and
//! [`Sampler`] turns consecutive readings into CPU millicores (1000 = one core busy). A new
//! process (the agent restarted: another PID, or the same PID with another start time) starts
//! over: its first sample is its average since it started.

use crate::host::Host;
use crate::report::record::ResourceSample;
use crate::report::time::Timestamp;
use crate::ssh::{Command, SshError};
use std::time::Duration;

/// The agent's process name.
pub const AGENT_PROCESS: &str = "cilium-agent";

/// A reading that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// `/proc/PID/stat` is not what the kernel writes.
    #[error("/proc/PID/stat: {0}")]
    Stat(String),
    /// `/proc/PID/status` has no usable `VmRSS`.
    #[error("/proc/PID/status: {0}")]
    Status(String),
    /// The sampling script's output is incomplete.
    #[error("sample output: {0}")]
    Output(String),
}

/// The fields of `/proc/PID/stat` a sample needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    /// Process id (field 1).
    pub pid: u32,
    /// User-mode CPU time, clock ticks (field 14).
    pub utime: u64,
    /// Kernel-mode CPU time, clock ticks (field 15).
    pub stime: u64,
    /// Start time after boot, clock ticks (field 22).
    pub starttime: u64,
}

/// Parse `/proc/PID/stat`. The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so the fields after it are counted from the **last** `)`.
pub fn parse_stat(text: &str) -> Result<StatFields, ResourceError> {
    let e = |m: &str| ResourceError::Stat(m.to_owned());
    let open = text
        .find('(')
        .ok_or_else(|| e("no `(` before the command name"))?;
    let close = text
        .rfind(')')
        .ok_or_else(|| e("no `)` after the command name"))?;
    if close < open {
        return Err(e("`)` before `(`"));
    }
    let pid: u32 = text[..open]
        .trim()
        .parse()
        .map_err(|_| e("the first field is not a process id"))?;
    // Field 3 (state) is index 0 after the name.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize, name: &str| -> Result<u64, ResourceError> {
        let s = rest.get(n - 3).ok_or_else(|| {
            e(&format!(
                "only {} fields, no field {n} ({name})",
                rest.len() + 2
            ))
        })?;
        s.parse::<u64>()
            .map_err(|_| e(&format!("field {n} ({name}) is `{s}`, not a number")))
    };
    Ok(StatFields {
        pid,
        utime: field(14, "utime")?,
        stime: field(15, "stime")?,
        starttime: field(22, "starttime")?,
    })
}

/// `VmRSS` of `/proc/PID/status`, in bytes (the kernel's `kB` are KiB).
pub fn parse_status_rss(text: &str) -> Result<u64, ResourceError> {
    let e = |m: String| ResourceError::Status(m);
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| e("no VmRSS line (a kernel thread, or the process is exiting)".into()))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| e(format!("`{}` has no number", line.trim())))?;
    match words.next() {
        Some("kB") => n
            .checked_mul(1024)
            .ok_or_else(|| e(format!("`{}` overflows", line.trim()))),
        other => Err(e(format!("`{}`: unit {other:?}, expected kB", line.trim()))),
    }
}

/// `/proc/uptime`'s first number (seconds since boot).
pub fn parse_uptime(text: &str) -> Result<f64, ResourceError> {
    text.split_whitespace()
        .next()
        .and_then(|w| w.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| ResourceError::Output(format!("uptime `{}` is not a number", text.trim())))
}

/// One reading of one agent process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The process.
    pub stat: StatFields,
    /// Clock ticks per second (`getconf CLK_TCK`).
    pub clk_tck: u64,
    /// Node uptime at the reading, seconds.
    pub uptime: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

impl Reading {
    /// utime + stime, seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.stat.utime.saturating_add(self.stat.stime) as f64 / self.clk_tck as f64
    }

    /// Seconds since boot when the process started.
    pub fn started_secs(&self) -> f64 {
        self.stat.starttime as f64 / self.clk_tck as f64
    }

    /// Same process as `other` (same PID and start time).
    pub fn same_process(&self, other: &Reading) -> bool {
        self.stat.pid == other.stat.pid && self.stat.starttime == other.stat.starttime
    }
}

/// The script run on the node; its output is read by [`parse_output`].
pub fn script() -> String {
    format!(
        "pid=$(pidof -s {AGENT_PROCESS}) || {{ echo 'no {AGENT_PROCESS} process' >&2; exit 3; }}\n\
         echo \"clk_tck $(getconf CLK_TCK)\"\n\
         echo \"uptime $(cat /proc/uptime)\"\n\
         echo '--- stat'\n\
         cat /proc/$pid/stat || exit 4\n\
         echo '--- status'\n\
         cat /proc/$pid/status || exit 4\n"
    )
}

/// Parse the script's output into a reading.
pub fn parse_output(text: &str) -> Result<Reading, ResourceError> {
    let o = |m: &str| ResourceError::Output(m.to_owned());
    let (head, rest) = text
        .split_once("--- stat\n")
        .ok_or_else(|| o("no `--- stat` section"))?;
    let (stat, status) = rest
        .split_once("--- status\n")
        .ok_or_else(|| o("no `--- status` section"))?;
    let mut clk_tck = None;
    let mut uptime = None;
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("clk_tck ") {
            clk_tck = v.trim().parse::<u64>().ok().filter(|t| *t > 0);
        } else if let Some(v) = line.strip_prefix("uptime ") {
            uptime = Some(parse_uptime(v)?);
        }
    }
    Ok(Reading {
        clk_tck: clk_tck.ok_or_else(|| o("no usable `clk_tck` line"))?,
        uptime: uptime.ok_or_else(|| o("no `uptime` line"))?,
        stat: parse_stat(stat)?,
        rss_bytes: parse_status_rss(status)?,
    })
}

/// CPU in millicores between two readings of the same process (`None` for another process, or
/// when no time passed on the node's clock).
pub fn cpu_millicores(prev: &Reading, cur: &Reading) -> Option<u32> {
    if !prev.same_process(cur) {
        return None;
    }
    let dt = cur.uptime - prev.uptime;
    if dt <= 0.0 {
        return None;
    }
    let used = (cur.cpu_secs() - prev.cpu_secs()).max(0.0);
    Some(to_millicores(used / dt))
}

/// CPU in millicores averaged over the process's life up to this reading.
pub fn lifetime_millicores(r: &Reading) -> Option<u32> {
    let alive = r.uptime - r.started_secs();
    (alive > 0.0).then(|| to_millicores(r.cpu_secs() / alive))
}

fn to_millicores(cores: f64) -> u32 {
    let m = (cores * 1000.0).round();
    if m.is_finite() && m > 0.0 {
        m.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// Turns one node's consecutive readings into [`ResourceSample`]s.
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    prev: Option<Reading>,
    restarts_seen: u32,
}

impl Sampler {
    /// A sample from a reading taken at `at`: CPU since the previous reading of the same
    /// process, or since the process started.
    pub fn next(&mut self, at: Timestamp, r: Reading) -> ResourceSample {
        let cpu = match &self.prev {
            Some(p) if p.same_process(&r) => cpu_millicores(p, &r),
            Some(_) => {
                self.restarts_seen += 1;
                lifetime_millicores(&r)
            }
            None => lifetime_millicores(&r),
        };
        self.prev = Some(r);
        ResourceSample {
            at,
            cpu_millicores: cpu.unwrap_or(0),
            rss_bytes: r.rss_bytes,
        }
    }

    /// How many times the agent process changed between readings.
    pub fn process_changes(&self) -> u32 {
        self.restarts_seen
    }
}

/// Why a sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// SSH.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The script failed (no agent process, `/proc` vanished).
    #[error("{host}: phase resources: `{command}` exited with {status:?}: {stderr}")]
    Failed {
        /// Host.
        host: String,
        /// The command's label.
        command: String,
        /// Exit status.
        status: Option<u32>,
        /// Last lines of stderr.
        stderr: String,
    },
    /// The output did not parse.
    #[error("{host}: phase resources: {source}")]
    Parse {
        /// Host.
        host: String,
        /// Why.
        #[source]
        source: ResourceError,
    },
}

/// Read the agent's `/proc` files on one node.
pub async fn sample(s: &dyn Host, timeout: Duration) -> Result<Reading, SampleError> {
    let label = "read cilium-agent /proc stat+status";
    let o = s
        .exec(
            &Command::new(script())
                .privileged()
                .label(label)
                .timeout(timeout)
                .idempotent(),
        )
        .await?;
    let host = s.name().to_owned();
    if !o.success() {
        return Err(SampleError::Failed {
            host,
            command: label.to_owned(),
            status: o.status,
            stderr: o.stderr_tail(2),
        });
    }
    parse_output(&o.stdout_text()).map_err(|source| SampleError::Parse { host, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "48213 (cilium-agent) S 48190 48213 48190 0 -1 1077936384 1230114 0 412 0 151234 40811 0 0 20 0 31 0 912345 1712345088 45678 18446744073709551615 1 1 0 0 0 0 0 0 1073745144 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT).expect("stat");
        assert_eq!(
            s,
            StatFields {
                pid: 48213,
                utime: 151_234,
                stime: 40_811,
                starttime: 912_345
            }
        );
        // A command name with spaces and parentheses does not shift the fields.
        let odd = STAT.replace("(cilium-agent)", "(a) b (c d))");
        assert_eq!(parse_stat(&odd).expect("odd name"), s);
    }

    #[test]
    fn stat_errors_say_what_is_missing() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("12 cilium-agent S 1").is_err());
        let short = parse_stat("12 (x) S 1 2 3").expect_err("short");
        assert!(short.to_string().contains("no field 14 (utime)"), "{short}");
        let nan = STAT.replace(" 151234 ", " 15x234 ");
        let e = parse_stat(&nan).expect_err("nan");
        assert!(
            e.to_string().contains("field 14 (utime) is `15x234`"),
            "{e}"
        );
        assert!(parse_stat("x (a) S").is_err());
    }

    #[test]
    fn rss_is_in_bytes() {
        let st = "Name:\tcilium-agent\nVmPeak:\t 1830000 kB\nVmRSS:\t  182716 kB\nRssAnon:\t 120000 kB\n";
        assert_eq!(parse_status_rss(st), Ok(182_716 * 1024));
        assert!(parse_status_rss("Name:\tkthreadd\nState:\tS\n").is_err());
        assert!(parse_status_rss("VmRSS:\t 12 MB\n").is_err());
        assert!(parse_status_rss("VmRSS:\n").is_err());
        assert!(parse_status_rss("VmRSS: 18446744073709551615 kB\n").is_err());
    }

    #[test]
    fn this_machines_own_proc_files_parse() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let s = parse_stat(&stat).expect("real stat");
        assert_eq!(s.pid, std::process::id());
        let rss = parse_status_rss(&status).expect("real status");
        // A test binary is at least a few hundred KiB resident and less than 64 GiB.
        assert!(rss > 100 * 1024 && rss < 64 << 30, "{rss}");
        let uptime = std::fs::read_to_string("/proc/uptime").expect("uptime");
        assert!(parse_uptime(&uptime).expect("uptime") > 0.0);
    }

    fn reading(pid: u32, start: u64, ticks: u64, uptime: f64, rss: u64) -> Reading {
        Reading {
            stat: StatFields {
                pid,
                utime: ticks,
                stime: 0,
                starttime: start,
            },
            clk_tck: 100,
            uptime,
            rss_bytes: rss,
        }
    }

    #[test]
    fn cpu_from_two_readings_and_restarts() {
        // 150 ticks (1.5 s of CPU) over 5 s of uptime: 300 millicores.
        let a = reading(10, 1000, 2000, 100.0, 1 << 20);
        let b = reading(10, 1000, 2150, 105.0, 2 << 20);
        assert_eq!(cpu_millicores(&a, &b), Some(300));
        // Same PID, new start time: another process.
        let c = reading(10, 10_400, 50, 105.0, 1 << 20);
        assert_eq!(cpu_millicores(&b, &c), None);
        // No time passed.
        assert_eq!(cpu_millicores(&a, &a), None);
        // Lifetime: 20 s of CPU over 90 s alive → 222 millicores.
        assert_eq!(lifetime_millicores(&a), Some(222));

        let t0 = Timestamp::from_unix_ms(1_795_000_000_000);
        let mut s = Sampler::default();
        let first = s.next(t0, a);
        assert_eq!(first.cpu_millicores, 222);
        let second = s.next(t0.plus(crate::report::time::Millis(5000)), b);
        assert_eq!(second.cpu_millicores, 300);
        assert_eq!(second.rss_bytes, 2 << 20);
        // Restarted agent (new pid): average since its start (0.5 s over 1 s alive).
        let d = reading(11, 10_400, 50, 105.0, 1 << 20);
        assert_eq!(
            s.next(t0.plus(crate::report::time::Millis(6000)), d)
                .cpu_millicores,
            500
        );
        assert_eq!(s.process_changes(), 1);
    }

    #[test]
    fn script_output_round_trip() {
        let out = format!(
            "clk_tck 100\nuptime 4312.55 8123.10\n--- stat\n{STAT}--- status\nName:\tcilium-agent\nVmRSS:\t  182716 kB\n"
        );
        let r = parse_output(&out).expect("output");
        assert_eq!(r.clk_tck, 100);
        assert!((r.uptime - 4312.55).abs() < 1e-9);
        assert_eq!(r.stat.pid, 48213);
        assert_eq!(r.rss_bytes, 182_716 * 1024);
        assert!(parse_output("clk_tck 100\n").is_err());
        let no_clk = out.replace("clk_tck 100", "clk_tck 0");
        assert!(parse_output(&no_clk).is_err());
        assert!(script().contains("pidof -s cilium-agent"));
        assert!(script().contains("getconf CLK_TCK"));
    }
}
