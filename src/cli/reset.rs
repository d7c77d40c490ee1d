//! `kubedrill reset`: `kubeadm reset -f` and Cilium/CNI leftovers on the inventory's nodes.

use super::exit::Exit;
use super::{Output, print_diagnostics, print_json};
use anyhow::Context;
use clap::Args;
use kubedrill::apply;
use kubedrill::diag::{Escaped, escape_terminal_line};
use kubedrill::layout::cluster::ClusterState;
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
    /// How nodes are reached.
    #[command(flatten)]
    pub ssh: super::args::SshArgs,
}

/// Run `reset`.
pub fn run(a: ResetArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((inv, spec, diags)) = super::inventory::load_for(&a.inventory, out, "reset")? else {
        return Ok(Exit::Invalid.into());
    };
    if out == Output::Text {
        print_diagnostics(&diags);
    }
    for h in &a.only_host {
        if !inv.hosts.iter().any(|x| &x.name == h) {
            eprintln!("error: --only-host {h}: no such host in the inventory");
            return Ok(Exit::Invalid.into());
        }
    }
    let scope = apply::reset::Scope::of(&inv, &a.only_host);
    let question = match &scope.via {
        None => format!(
            "reset the cluster `{}` on {} node(s): kubeadm reset -f, Cilium and CNI leftovers removed?",
            spec.label,
            scope.nodes.len()
        ),
        Some(cp) => format!(
            "remove {} from the cluster `{}`: drained and its Node deleted through {cp}, kubeadm reset -f, Cilium and CNI leftovers removed?",
            scope.nodes.join(", "),
            spec.label
        ),
    };
    if !a.yes && !super::apply::confirm(&question)? {
        eprintln!("not confirmed; nothing done");
        return Ok(Exit::Invalid.into());
    }
    // Never while an apply or a drill works on this cluster (or its lab).
    let cluster = ClusterState::of(&inv);
    let _lock = kubedrill::lock::cluster(&cluster).context("reset")?;
    if let Some(note) = cluster.legacy_note() {
        eprintln!("{note}");
    }
    let ssh = match a.ssh.settings(&inv) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return Ok(Exit::Invalid.into());
        }
    };
    let opts = apply::ApplyOptions {
        selection: apply::Selection::all(),
        concurrency: a.ssh.concurrency(),
        source: apply::node::PackageSource::Online,
        allow_degraded: true,
        ssh,
        state_dir: cluster.dir.clone(),
        delete_kube_proxy: false,
    };
    let progress = super::args::progress(out);
    let report = super::args::runtime()?
        .block_on(apply::reset::reset(
            &inv,
            &spec,
            &opts,
            &a.only_host,
            &progress,
        ))
        .context("reset")?;
    let failed = report.failures.len();
    if out == Output::Json {
        print_json(&report)?;
    } else {
        for (host, removed) in &report.removed {
            // Host names and the node's list of what it removed are outside text.
            if removed.is_empty() {
                println!("{}: nothing to remove", Escaped(host));
            } else {
                println!(
                    "{}: removed {}",
                    Escaped(host),
                    escape_terminal_line(&removed.join(", "))
                );
            }
        }
        for f in &report.failures {
            eprintln!(
                "{}: error: {}",
                Escaped(&f.host),
                Escaped(&format!("{}: {}", f.command, f.stderr))
            );
        }
    }
    Ok(if failed == 0 {
        Exit::Ok.into()
    } else {
        Exit::Failed.into()
    })
}
