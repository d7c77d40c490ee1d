//! `kubedrill-probe`: see the crate documentation and docs/probe-agent.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use kubedrill_probe::cmd::{self, RunArgs, ServeArgs, parse_duration};

/// kubedrill's probe agent: echo responders and loss-window probers for pod and service
/// traffic, run in pods' network namespaces. Output: JSON lines on stdout.
#[derive(Parser)]
#[command(name = "kubedrill-probe", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo responders: TCP echoes every byte back on its connection; UDP echoes each datagram.
    #[command(group(ArgGroup::new("listen").required(true).multiple(true).args(["tcp", "udp"])))]
    Serve {
        /// TCP echo on ADDR:PORT (repeatable; port 0 picks one, printed in the listening event).
        #[arg(long, value_name = "ADDR:PORT")]
        tcp: Vec<SocketAddr>,
        /// UDP echo on ADDR:PORT (repeatable).
        #[arg(long, value_name = "ADDR:PORT")]
        udp: Vec<SocketAddr>,
        /// Enter this network namespace first (/proc/PID/ns/net, /run/netns/NAME).
        #[arg(long, value_name = "PATH")]
        netns: Option<PathBuf>,
        /// Stop after this long (1500ms, 30s, 5m, 1h). Without it: until SIGTERM/SIGINT or
        /// stdin EOF.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Without --duration, do not stop at stdin EOF (only at a signal).
        #[arg(long)]
        ignore_stdin: bool,
    },
    /// Run the probes of a JSON spec and report loss windows, stats and a summary.
    Run {
        /// Spec file, or - for stdin (one JSON document; then stdin EOF stops the run).
        #[arg(long, value_name = "FILE|-")]
        spec: String,
        /// Enter this network namespace (per probe thread) unless a probe names its own.
        #[arg(long, value_name = "PATH")]
        netns: Option<PathBuf>,
        /// Stop after this long (1500ms, 30s, 5m, 1h). Without it: until SIGTERM/SIGINT or
        /// stdin EOF.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Emit a stats event per probe this often (0: never).
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        stats_interval: Duration,
        /// Without --duration, do not stop at stdin EOF (only at a signal).
        #[arg(long)]
        ignore_stdin: bool,
        /// Also emit one `probe` event per probe (seq, send time, ok, RTT or reason): verbose.
        #[arg(long)]
        trace: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Serve {
            tcp,
            udp,
            netns,
            duration,
            ignore_stdin,
        } => cmd::serve(ServeArgs {
            tcp,
            udp,
            netns,
            duration,
            ignore_stdin,
        }),
        Cmd::Run {
            spec,
            netns,
            duration,
            stats_interval,
            ignore_stdin,
            trace,
        } => cmd::run(RunArgs {
            spec,
            netns,
            duration,
            stats_interval,
            ignore_stdin,
            trace,
        }),
    };
    std::process::exit(code);
}
