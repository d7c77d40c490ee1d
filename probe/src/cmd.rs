//! The two commands, as functions returning the process exit code: 0 success, 1 a runtime
//! failure at start-up (namespace, socket, bind), 2 bad input (command line or spec).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::engine::{self, Driver, RunOptions};
use crate::events::{Emitter, Event};
use crate::held::Held;
use crate::icmp::{self, Icmp};
use crate::spec::{self, Kind, Probe, TcpMode};
use crate::stop::{self, Reason};
use crate::tcp::Tcp;
use crate::udp::Udp;
use crate::{clock, netns, payload, serve};

/// Exit code: bad input.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: start-up failed.
pub const EXIT_FAILURE: i32 = 1;

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Spec file, or `-` for stdin (one JSON document; the rest of stdin is watched for EOF).
    pub spec: String,
    /// Namespace for probes without their own `netns`.
    pub netns: Option<PathBuf>,
    /// Stop after this long; without it, stop at stdin EOF (unless `ignore_stdin`) or a signal.
    pub duration: Option<Duration>,
    /// Stats period; zero disables stats events.
    pub stats_interval: Duration,
    /// Do not stop at stdin EOF.
    pub ignore_stdin: bool,
    /// Emit one `probe` event per probe.
    pub trace: bool,
}

/// Options of `serve`.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// TCP echo listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// UDP echo addresses.
    pub udp: Vec<SocketAddr>,
    /// Namespace to serve in.
    pub netns: Option<PathBuf>,
    /// Stop after this long; without it, stop at stdin EOF (unless `ignore_stdin`) or a signal.
    pub duration: Option<Duration>,
    /// Do not stop at stdin EOF.
    pub ignore_stdin: bool,
}

fn err(msg: impl std::fmt::Display) {
    eprintln!("kubedrill-probe: {msg}");
}

/// Reads the spec text: a file, or the first JSON document on stdin.
fn read_spec(spec: &str) -> Result<String, String> {
    if spec == "-" {
        let stdin = std::io::stdin();
        let mut it =
            serde_json::Deserializer::from_reader(stdin.lock()).into_iter::<serde_json::Value>();
        match it.next() {
            Some(Ok(v)) => Ok(v.to_string()),
            Some(Err(e)) => Err(format!(
                "spec: not a valid probe list: {e} (stdin: one JSON document expected)"
            )),
            None => Err("spec: stdin is empty (expected a JSON probe list)".to_string()),
        }
    } else {
        let mut s = String::new();
        std::fs::File::open(spec)
            .and_then(|mut f| f.read_to_string(&mut s))
            .map_err(|e| format!("spec {spec}: {e}"))?;
        Ok(s)
    }
}

/// Raises the open-files limit as far as allowed and checks it covers `need`.
fn ensure_fd_limit(need: u64) -> Result<(), String> {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Ok(());
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max.min(1 << 20),
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = want.rlim_cur;
            }
        }
        if need > r.rlim_cur {
            return Err(format!(
                "spec needs up to {need} open sockets (TCP probes hold one per probe in flight: \
                 rate_per_s x timeout_ms / 1000), but the open-files limit is {} (raise it, or \
                 lower rates or timeouts)",
                r.rlim_cur
            ));
        }
    }
    Ok(())
}

/// Waits until a stop is requested, or `duration` elapses, or stdout is gone (then requests
/// one).
fn wait_for_stop(duration: Option<Duration>, emitter: &Emitter) {
    let t0 = Instant::now();
    while !stop::requested() {
        if emitter.is_broken() {
            stop::request(Reason::StdoutClosed);
            break;
        }
        if let Some(d) = duration
            && t0.elapsed() >= d
        {
            stop::request(Reason::Duration);
            break;
        }
        // Until the wake pipe says stop (or 250 ms, to notice stdout closing and the duration).
        let mut wait = Duration::from_millis(250);
        if let Some(d) = duration {
            wait = wait.min(d.saturating_sub(t0.elapsed()));
        }
        match stop::wake_fd() {
            Some(fd) => {
                let mut pfd = [libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }];
                engine::ppoll(&mut pfd, wait);
            }
            None => std::thread::sleep(wait.min(Duration::from_millis(10))),
        }
    }
}

type Setup = Result<(Box<dyn Driver>, &'static str), String>;

fn setup_probe(index: usize, probe: &Probe, token: u64) -> Setup {
    if let Some(ns) = &probe.netns {
        netns::enter(ns)?;
    }
    match probe.kind {
        Kind::Icmp => {
            let d = Icmp::open(probe, token, icmp::ident_for(index))?;
            let k = d.socket_kind();
            Ok((Box::new(d), k))
        }
        Kind::Udp => Ok((Box::new(Udp::open(probe, token)?), "connected")),
        Kind::Tcp => match probe.tcp_mode {
            TcpMode::ConnectEcho => Ok((Box::new(Tcp::open(probe)?), "connect-echo")),
            TcpMode::Persistent => Ok((Box::new(Held::open(probe)?), "persistent")),
        },
    }
}

/// `kubedrill-probe run`.
pub fn run(args: RunArgs) -> i32 {
    clock::init();
    let text = match read_spec(&args.spec) {
        Ok(t) => t,
        Err(e) => {
            err(e);
            return EXIT_USAGE;
        }
    };
    let probes = match spec::parse_spec(&text, args.netns.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            for line in &e.0 {
                err(line);
            }
            return EXIT_USAGE;
        }
    };
    let need: u64 = probes
        .iter()
        .map(|p| {
            if p.kind == Kind::Tcp {
                p.max_in_flight() + 2
            } else {
                2
            }
        })
        .sum::<u64>()
        + 64;
    if let Err(e) = ensure_fd_limit(need) {
        err(e);
        return EXIT_USAGE;
    }
    stop::install_signal_handlers();
    if args.duration.is_none() && !args.ignore_stdin {
        stop::stop_on_eof(std::io::stdin());
    }

    let emitter = Arc::new(Emitter::stdout());
    let stats_every = (!args.stats_interval.is_zero()).then_some(args.stats_interval);
    let trace = args.trace;
    let (setup_tx, setup_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    for (index, probe) in probes.iter().cloned().enumerate() {
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        go.push(go_tx);
        let setup_tx = setup_tx.clone();
        let emitter = emitter.clone();
        let id = probe.id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let token = payload::random_token();
                let (mut driver, socket) = match setup_probe(index, &probe, token) {
                    Ok(x) => {
                        let _ = setup_tx.send((index, Ok(())));
                        x
                    }
                    Err(e) => {
                        let _ = setup_tx.send((index, Err(e)));
                        return;
                    }
                };
                drop(setup_tx);
                if go_rx.recv() != Ok(true) {
                    return;
                }
                emitter.emit(&Event::Start {
                    ts_ms: clock::now_ms(),
                    probe: &probe.id,
                    kind: probe.kind,
                    target: &probe.target_text,
                    rate_per_s: probe.rate_per_s,
                    interval_ms: probe.interval_ms(),
                    timeout_ms: probe.timeout_ms,
                    netns: probe.netns.as_ref().map(|p| p.display().to_string()),
                    socket,
                });
                let stop_fn = stop::requested;
                let reason_fn = || stop::reason().as_str();
                engine::run(
                    &probe,
                    driver.as_mut(),
                    token,
                    &emitter,
                    &RunOptions {
                        stats_every,
                        trace,
                        stop: &stop_fn,
                        stop_reason: &reason_fn,
                        wake_fd: stop::wake_fd(),
                    },
                );
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                err(format!("cannot start a thread for probe {id:?}: {e}"));
                stop::request(Reason::Error);
                return EXIT_FAILURE;
            }
        }
    }
    drop(setup_tx);

    let mut failed = Vec::new();
    for _ in 0..probes.len() {
        match setup_rx.recv() {
            Ok((i, Err(e))) => failed.push((i, e)),
            Ok((_, Ok(()))) => {}
            Err(_) => break,
        }
    }
    if !failed.is_empty() {
        failed.sort_by_key(|f| f.0);
        for (i, e) in failed {
            err(format!("probe {:?}: {e}", probes[i].id));
        }
        for g in &go {
            let _ = g.send(false);
        }
        return EXIT_FAILURE;
    }
    for g in &go {
        let _ = g.send(true);
    }
    wait_for_stop(args.duration, &emitter);
    let mut code = 0;
    for h in handles {
        if h.join().is_err() {
            err("a probe thread failed");
            code = EXIT_FAILURE;
        }
    }
    code
}

/// `kubedrill-probe serve`.
pub fn serve(args: ServeArgs) -> i32 {
    clock::init();
    if args.tcp.is_empty() && args.udp.is_empty() {
        err("serve: give at least one of --tcp ADDR:PORT, --udp ADDR:PORT");
        return EXIT_USAGE;
    }
    if let Some(ns) = &args.netns
        && let Err(e) = netns::enter(ns)
    {
        err(e);
        return EXIT_FAILURE;
    }
    let counters = Arc::new(serve::Counters::default());
    let mut tcp_addrs = Vec::new();
    let mut udp_addrs = Vec::new();
    let mut listeners = Vec::new();
    let mut sockets = Vec::new();
    for a in &args.tcp {
        match serve::bind_tcp(*a) {
            Ok(l) => {
                tcp_addrs.push(l.local_addr().map_or(a.to_string(), |x| x.to_string()));
                listeners.push(l);
            }
            Err(e) => {
                err(e);
                return EXIT_FAILURE;
            }
        }
    }
    for a in &args.udp {
        match serve::bind_udp(*a) {
            Ok(s) => {
                udp_addrs.push(s.local_addr().map_or(a.to_string(), |x| x.to_string()));
                sockets.push(s);
            }
            Err(e) => {
                err(e);
                return EXIT_FAILURE;
            }
        }
    }
    stop::install_signal_handlers();
    for l in listeners {
        let c = counters.clone();
        if std::thread::Builder::new()
            .name("tcp-accept".into())
            .spawn(move || serve::tcp_accept_loop(l, c))
            .is_err()
        {
            err("cannot start the TCP accept thread");
            return EXIT_FAILURE;
        }
    }
    for s in sockets {
        let c = counters.clone();
        if std::thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || serve::udp_echo_loop(s, c))
            .is_err()
        {
            err("cannot start the UDP echo thread");
            return EXIT_FAILURE;
        }
    }
    let emitter = Emitter::stdout();
    emitter.emit(&Event::Listening {
        ts_ms: clock::now_ms(),
        tcp: tcp_addrs,
        udp: udp_addrs,
    });
    if args.duration.is_none() && !args.ignore_stdin {
        stop::stop_on_eof(std::io::stdin());
    }
    wait_for_stop(args.duration, &emitter);
    use std::sync::atomic::Ordering::Relaxed;
    emitter.emit(&Event::Stopped {
        ts_ms: clock::now_ms(),
        tcp_connections: counters.tcp_connections.load(Relaxed),
        udp_datagrams: counters.udp_datagrams.load(Relaxed),
        stop: stop::reason().as_str(),
    });
    0
}

/// Parses a duration: `1500ms`, `2s`, `1.5` (seconds), `3m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (e.g. 1500ms, 30s, 1.5, 5m, 1h)"))?;
    let secs = v * mult;
    if !(0.0..=366.0 * 86400.0).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "x", "-1", "1d", "NaN", "inf", "1e30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
