//! `kubedrill reset`: `kubeadm reset -f` and Cilium/CNI leftovers on the inventory's nodes.

use super::{Output, print_diagnostics, print_json};
use anyhow::Context;
use clap::Args;
use kubedrill::apply;
use kubedrill::apply::state::ClusterState;
use kubedrill::check;
use kubedrill::diag::{Escaped, escape_terminal_line};
use kubedrill::fleet::{DEFAULT_CONCURRENCY, Progress};
use kubedrill::ssh::HostKeyMode;
use std::path::PathBuf;
use std::process::ExitCode;

/// `reset` options.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Kubespray inventory file (YAML or INI) or the directory holding it.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Only these hosts (repeatable); default every host.
    #[arg(long = "only-host", value_name = "HOST")]
    pub only_host: Vec<String>,
    /// Hosts worked on at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// known_hosts file (default: inventory variable `kubedrill_known_hosts`, else ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Host-key checking: strict (default), accept-new, off (dangerous).
    #[arg(long, value_name = "MODE", value_parser = |s: &str| s.parse::<HostKeyMode>())]
    pub host_key_checking: Option<HostKeyMode>,
}

/// Run `reset`.
pub fn run(a: ResetArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((inv, spec, diags)) = super::inventory::load_for(&a.inventory, out, "reset")? else {
        return Ok(ExitCode::from(1));
    };
    if out == Output::Text {
        print_diagnostics(&diags);
    }
    for h in &a.only_host {
        if !inv.hosts.iter().any(|x| &x.name == h) {
            eprintln!("error: --only-host {h}: no such host in the inventory");
            return Ok(ExitCode::from(1));
        }
    }
    let n = if a.only_host.is_empty() {
        inv.hosts.len()
    } else {
        a.only_host.len()
    };
    if !a.yes
        && !super::apply::confirm(&format!(
            "reset the cluster `{}` on {n} node(s): kubeadm reset -f, Cilium and CNI leftovers removed?",
            spec.label
        ))?
    {
        eprintln!("not confirmed; nothing done");
        return Ok(ExitCode::from(1));
    }
    // Never while an apply or a drill works on this cluster (or its lab).
    let cluster = ClusterState::of(&inv);
    let _lock = kubedrill::lock::cluster(&cluster).context("reset")?;
    if let Some(note) = cluster.legacy_note() {
        eprintln!("{note}");
    }
    let host_keys =
        match check::host_key_settings(&inv, a.known_hosts.as_deref(), a.host_key_checking) {
            Ok(s) => s,
            Err(d) => {
                eprintln!("{d}");
                return Ok(ExitCode::from(1));
            }
        };
    let progress = if out == Output::Json {
        Progress::quiet()
    } else {
        Progress::stderr()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(apply::reset::reset(
        &inv,
        &host_keys,
        &a.only_host,
        usize::from(a.concurrency),
        &progress,
    ))?;
    // The local kubeconfig of a cluster that no longer exists.
    if a.only_host.is_empty() {
        let _ = std::fs::remove_file(cluster.kubeconfig());
    }
    let failed = results.iter().filter(|r| r.result.is_err()).count();
    if out == Output::Json {
        print_json(&results)?;
    } else {
        for r in &results {
            match &r.result {
                // Host names and the node's list of what it removed are outside text.
                Ok(v) if v.is_empty() => println!("{}: nothing to remove", Escaped(&r.host)),
                Ok(v) => println!(
                    "{}: removed {}",
                    Escaped(&r.host),
                    escape_terminal_line(&v.join(", "))
                ),
                Err(e) => eprintln!("{}: error: {}", Escaped(&r.host), Escaped(e)),
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
