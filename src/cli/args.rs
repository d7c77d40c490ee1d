//! Arguments and set-up shared by the commands: how nodes are reached (flattened into every
//! command that talks to them), the progress display and the async runtime.

use super::Output;
use clap::Args;
use kubedrill::connect::{SshSettings, host_key_settings};
use kubedrill::diag::Diagnostic;
use kubedrill::fleet::{DEFAULT_CONCURRENCY, Progress};
use kubedrill::inventory::Inventory;
use kubedrill::ssh::HostKeyMode;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the nodes.
#[derive(Debug, Clone, Args)]
pub struct SshArgs {
    /// known_hosts file (default: inventory variable `kubedrill_known_hosts`, else ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Host-key checking: strict (default), accept-new (record new hosts), off (dangerous).
    #[arg(long, value_name = "MODE", value_parser = |s: &str| s.parse::<HostKeyMode>())]
    pub host_key_checking: Option<HostKeyMode>,
    /// Seconds allowed for connect, handshake and authentication per host.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout: u64,
    /// Hosts worked on at once (workers join in batches of this size).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

impl SshArgs {
    /// The settings for this inventory (command line, then inventory variables, then
    /// defaults); warns on stderr when host keys are not checked.
    pub fn settings(&self, inv: &Inventory) -> Result<SshSettings, Diagnostic> {
        let host_keys =
            host_key_settings(inv, self.known_hosts.as_deref(), self.host_key_checking)?;
        if host_keys.mode == HostKeyMode::Off {
            eprintln!(
                "WARNING: host-key checking is OFF: kubedrill will talk to whatever answers at each \
                 address, including an attacker. Changed keys recorded in {} are still refused.",
                host_keys.file.display()
            );
        }
        Ok(SshSettings {
            host_keys,
            connect_timeout: Duration::from_secs(self.connect_timeout),
        })
    }

    /// Hosts at once.
    pub fn concurrency(&self) -> usize {
        usize::from(self.concurrency)
    }
}

/// Bars on a terminal, plain lines elsewhere, nothing when stdout carries JSON.
pub fn progress(out: Output) -> Progress {
    if out == Output::Json {
        Progress::quiet()
    } else {
        Progress::stderr()
    }
}

/// The one async runtime of a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
