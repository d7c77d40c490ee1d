//! `kubedrill apply`: run the phase tree on the inventory's nodes (or describe it with
//! `--dry-run`).

use super::args::{self, SshArgs};
use super::exit::Exit;
use super::{Output, print_diagnostics, print_json};
use anyhow::Context;
use clap::Args;
use kubedrill::apply::{self, ApplyOptions, Selection, node::PackageSource};
use kubedrill::bundle::Bundle;
use kubedrill::diag::Escaped;
use kubedrill::layout::cluster::ClusterState;
use std::path::PathBuf;
use std::process::ExitCode;

/// `apply` options.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Kubespray inventory file (YAML or INI) or the directory holding it.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
    /// Offline bundle directory (`kubedrill bundle build`): packages, helm, chart, images.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Describe what would run, phase by phase, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Phases (or groups: node, kubeadm, cilium, …) to leave out, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PHASES")]
    pub skip_phases: Vec<String>,
    /// Run only these phases (or groups), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PHASES")]
    pub only: Vec<String>,
    /// Go on when a requested Cilium feature is blocked on some node (it is turned down).
    #[arg(long)]
    pub allow_degraded: bool,
    /// Delete a kube-proxy DaemonSet/ConfigMap found in the cluster (converting a cluster).
    #[arg(long)]
    pub delete_kube_proxy: bool,
    /// Do not ask before deleting kube-proxy.
    #[arg(long)]
    pub yes: bool,
    /// How nodes are reached.
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// Run `apply`.
pub fn run(a: ApplyArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((inv, spec, diags)) = super::inventory::load_for(&a.inventory, out, "apply")? else {
        return Ok(Exit::Invalid.into());
    };
    if out == Output::Text {
        print_diagnostics(&diags);
    }
    let selection = match apply::tree().select(&a.skip_phases, &a.only) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Invalid.into());
        }
    };
    let source = match &a.bundle {
        Some(dir) => match Bundle::open(dir) {
            Ok(b) => PackageSource::Bundle(Box::new(b)),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Exit::Invalid.into());
            }
        },
        None => PackageSource::Online,
    };
    if a.dry_run {
        return dry_run(&inv, &spec, &selection, &source, out);
    }
    if a.delete_kube_proxy
        && !a.yes
        && !confirm(
            "delete the kube-proxy DaemonSet and ConfigMap if found (service traffic stops until Cilium replaces it)?",
        )?
    {
        eprintln!("not confirmed; nothing done");
        return Ok(Exit::Invalid.into());
    }
    // One apply per cluster (and lab) at a time, held until this process ends.
    let cluster = ClusterState::of(&inv);
    let _lock = kubedrill::lock::cluster(&cluster).context("apply")?;
    if let Some(note) = cluster.legacy_note() {
        eprintln!("{note}");
    }
    cluster
        .prepare()
        .with_context(|| format!("apply: state directory {}", cluster.dir.display()))?;
    let ssh = match a.ssh.settings(&inv) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return Ok(Exit::Invalid.into());
        }
    };
    // Kept before any node is touched: a new seed on every run made each re-run `helm upgrade`
    // the release and move every Maglev flow to other backends (seen on the lab).
    if let Some(p) = super::state::save_generated_seed(&spec, &inv)? {
        eprintln!(
            "saved the cluster's Maglev hash seed to {} (0600; every later apply and upgrade uses it)",
            p.display()
        );
    }
    let opts = ApplyOptions {
        selection,
        concurrency: a.ssh.concurrency(),
        source,
        allow_degraded: a.allow_degraded,
        ssh,
        state_dir: cluster.dir.clone(),
        delete_kube_proxy: a.delete_kube_proxy,
    };
    let progress = args::progress(out);
    let report = args::runtime()?
        .block_on(apply::apply(&inv, &spec, &opts, &progress))
        .context("apply")?;
    if out == Output::Json {
        print_json(&report)?;
    } else {
        for p in &report.phases {
            let mut counts = std::collections::BTreeMap::<&str, usize>::new();
            for h in &p.hosts {
                *counts.entry(h.outcome.label()).or_default() += 1;
            }
            let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            println!("{:<28} {}", p.phase, summary.join(", "));
        }
        for f in &report.failures {
            // Failures quote what the node printed (stderr, journal lines).
            eprintln!("\nerror: {}", Escaped(&f.to_string()));
        }
        if let Some(k) = &report.kubeconfig {
            println!("kubeconfig: {} (mode 0600)", k.display());
        }
        println!(
            "{} in {:.1} s; journal {}",
            if !report.ok() {
                "stopped"
            } else if report.unchanged() {
                "unchanged"
            } else {
                "applied"
            },
            report.secs,
            report.journal.display()
        );
    }
    Ok(if report.ok() {
        Exit::Ok.into()
    } else {
        Exit::Failed.into()
    })
}

/// Ask a yes/no question on the terminal (no terminal: no).
pub(crate) fn confirm(q: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!("{q} — not a terminal: pass --yes to confirm");
        return Ok(false);
    }
    eprint!("{q} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn dry_run(
    inv: &kubedrill::inventory::Inventory,
    spec: &kubedrill::spec::ClusterSpec,
    selection: &Selection,
    source: &PackageSource,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let plan =
        kubedrill::plan::build_for(spec, inv, source, selection).context("rendering the plan")?;
    let phases = &plan.phases;
    if out == Output::Json {
        print_json(&phases)?;
        return Ok(Exit::Ok.into());
    }
    println!(
        "dry run: {} nodes · Kubernetes {} · Cilium {} · packages from {}",
        plan.nodes,
        plan.kubernetes,
        plan.cilium,
        match source {
            PackageSource::Bundle(b) => format!(
                "the bundle {} ({} packages{})",
                b.dir.display(),
                b.manifest.packages.len(),
                if b.has_kubernetes() {
                    ""
                } else {
                    "; no kubelet/kubeadm/kubectl"
                }
            ),
            PackageSource::Online => "the distribution and pkgs.k8s.io".into(),
        }
    );
    for (i, p) in phases.iter().enumerate() {
        super::plan::print_phase(i, p, "skipped (unchanged) when");
    }
    Ok(Exit::Ok.into())
}
