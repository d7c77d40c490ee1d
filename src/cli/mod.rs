//! Command-line parsing and dispatch: one module per subcommand, each thin (parse, call the
//! library, print).

mod apply;
mod args;
mod bundle;
mod check;
mod drill;
mod exit;
mod image;
mod inventory;
mod lab;
mod plan;
mod reset;
mod shell;
pub mod state;
mod status;

use clap::{Parser, Subcommand, ValueEnum};
use kubedrill::diag::Diagnostics;
use std::process::ExitCode;

/// Rehearse Kubernetes + Cilium upgrades on a lab that mirrors production.
#[derive(Debug, Parser)]
#[command(name = "kubedrill", version, about, propagate_version = true)]
pub struct Cli {
    /// Output format for commands that print data.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// JSON on stdout.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and validate a Kubespray inventory.
    #[command(subcommand)]
    Inventory(inventory::InventoryCmd),
    /// Connect to every node, gather facts, and judge what Cilium features each kernel and NIC allow.
    Check(check::CheckArgs),
    /// Provision the cluster: node preparation, kubeadm init/join, Cilium (phases; idempotent,
    /// resumable; `--dry-run` describes).
    #[command(after_long_help = phases_help("apply", &kubedrill::apply::tree()))]
    Apply(apply::ApplyArgs),
    /// Nodes, versions, Cilium agents and their datapath beside what the inventory asks for.
    Status(status::StatusArgs),
    /// Undo a cluster on its nodes: kubeadm reset, Cilium and CNI leftovers.
    Reset(reset::ResetArgs),
    /// Offline bundles for `apply --bundle`.
    #[command(subcommand)]
    Bundle(bundle::BundleCmd),
    /// Rehearsal labs on libvirt.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Show the ordered phases an apply would run, with every file and command.
    Plan(plan::PlanArgs),
    /// List, download (with checksum) or build offline the OS images lab VMs boot from.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Upgrade drills: run a lab's drill, render a run's report, compare runs.
    #[command(subcommand)]
    Drill(drill::DrillCmd),
    /// Print the shell completion script (e.g. `kubedrill completions bash > /etc/bash_completion.d/kubedrill`).
    Completions(shell::CompletionsArgs),
    /// Print the man page (or write every page with `--dir`).
    Man(shell::ManArgs),
}

/// Run the parsed command; the exit code says whether the input was valid.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inventory(cmd) => inventory::run(cmd, cli.output),
        Command::Plan(args) => plan::run(args, cli.output),
        Command::Check(args) => check::run(args, cli.output),
        Command::Apply(args) => apply::run(args, cli.output),
        Command::Reset(args) => reset::run(args, cli.output),
        Command::Status(args) => status::run(args, cli.output),
        Command::Bundle(cmd) => bundle::run(cmd, cli.output),
        Command::Lab(cmd) => lab::run(cmd, cli.output),
        Command::Image(cmd) => image::run(cmd, cli.output),
        Command::Drill(cmd) => drill::run(cmd, cli.output),
        Command::Completions(a) => shell::completions(a),
        Command::Man(a) => shell::man(a),
    }
}

/// The phase tree as help text for `--only` and `--skip-phases`.
fn phases_help<C: kubedrill::phase::Context>(
    what: &str,
    tree: &kubedrill::phase::Tree<C>,
) -> String {
    format!(
        "Phases of {what} (names for --only and --skip-phases; a group name selects its phases):\n{}",
        tree.help()
    )
}

/// Print diagnostics to stderr (text) — JSON output carries them in the document instead.
pub fn print_diagnostics(d: &Diagnostics) {
    for x in &d.0 {
        eprintln!("{x}");
    }
}

/// Print a JSON document to stdout.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    // Terminal-safe: strings from nodes may carry C1 controls, which serde_json writes raw.
    println!("{}", kubedrill::diag::json_pretty(v)?);
    Ok(())
}
