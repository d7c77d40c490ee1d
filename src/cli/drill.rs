//! `kubedrill drill …`: upgrade drills. `run` rehearses the lab's drill, `report` re-renders a
//! run's report from its record, `compare` puts runs of one drill side by side.

use super::exit::Exit;
use super::{Output, print_diagnostics, print_json};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use kubedrill::cilium::helm::Helm;
use kubedrill::diag::Escaped;
use kubedrill::drill::definition::Overrides;
use kubedrill::drill::engine::{self, DrillInput, Timeouts};
use kubedrill::fleet::Progress;
use kubedrill::lab::{definition, lifecycle};
use kubedrill::layout::cluster::ClusterState;
use kubedrill::report::record::Outcome;
use kubedrill::report::{self, Written};
use kubedrill::spec::Version;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `drill` subcommands.
#[derive(Debug, Subcommand)]
pub enum DrillCmd {
    /// Rehearse the lab's upgrade drill — Cilium, Kubernetes or both (the `drill:` section of its
    /// file) — and write the run's record and reports.
    Run(RunArgs),
    /// Render RUN_DIR/report.html and RUN_DIR/summary.md from RUN_DIR/run.json.
    Report(ReportArgs),
    /// Compare runs of one drill: OUT/index.html and OUT/compare.md (and each run's report).
    Compare(CompareArgs),
}

/// `drill run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Lab name, file, or name under labs/ (its file has the `drill:` section).
    pub lab: String,
    /// Revert the lab to this snapshot first (`lab reset`); runs of one drill from the same
    /// snapshot are compared.
    #[arg(long, value_name = "SNAPSHOT")]
    pub reset: Option<String>,
    /// Override `drill.cilium.from`: the Cilium version the lab runs.
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    pub from: Option<Version>,
    /// Override `drill.cilium.to`: the target version.
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    pub to: Option<Version>,
    /// Allow a path that skips a minor release (one untested jump).
    #[arg(long)]
    pub force: bool,
    /// Where run directories go (default: <state>/drills/<lab>).
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
    /// Seconds allowed for the agents to roll out after an upgrade or a rollback, and for one
    /// pre-flight (default 900 and 600; where the inventory lets the agent start for longer —
    /// `kubedrill_cilium_startup_timeout`, a lab under TCG — that time plus 10 minutes).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rollout_timeout: Option<u64>,
    /// Run the lab's drill on a production cluster: this inventory instead of the lab's, no
    /// snapshot and no reset, the same pre-flight, probes and report, and a question before each
    /// `helm upgrade`, `helm rollback` and each node's Kubernetes upgrade.
    #[arg(long, requires = "inventory", conflicts_with = "reset")]
    pub production: bool,
    /// The production inventory (with --production).
    #[arg(
        short = 'i',
        long = "inventory",
        value_name = "INVENTORY",
        requires = "production"
    )]
    pub inventory: Option<PathBuf>,
    /// Answer the production questions with yes in advance (an unattended run).
    #[arg(long, requires = "production")]
    pub yes: bool,
    /// Seconds allowed for SSH connect, handshake and authentication per node.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout: u64,
    /// The offline bundle of the Kubernetes version the drill upgrades to (`kubedrill bundle
    /// build --kubernetes TO --files-repo …`); overrides `drill.kubernetes.bundle`.
    #[arg(long, value_name = "DIR")]
    pub kubernetes_bundle: Option<PathBuf>,
}

/// The Kubernetes target's bundle, when the drill upgrades Kubernetes: opened, and checked to
/// carry that version's release binaries.
fn kubernetes_bundle(
    drill: &kubedrill::drill::definition::ResolvedDrill,
    cli: Option<&std::path::Path>,
) -> anyhow::Result<Option<kubedrill::bundle::Bundle>> {
    let Some(up) = drill.kubernetes_upgrade else {
        return Ok(None);
    };
    let Some(dir) = cli
        .map(std::path::Path::to_path_buf)
        .or_else(|| drill.definition.kubernetes_bundle.clone())
    else {
        anyhow::bail!(
            "the drill upgrades Kubernetes to {}: name its offline bundle with drill.kubernetes.bundle or --kubernetes-bundle (kubedrill bundle build --kubernetes {} --files-repo …)",
            up.to,
            up.to
        );
    };
    // Its error names the directory and keeps the cause.
    let b = kubedrill::bundle::Bundle::open(&dir)?;
    match b.kubernetes_binaries() {
        Some((v, _)) if v == up.to.to_string() => Ok(Some(b)),
        Some((v, _)) => Err(anyhow::anyhow!(
            "{}: the bundle carries Kubernetes {v}, the drill upgrades to {}",
            dir.display(),
            up.to
        )),
        None => Err(anyhow::anyhow!(
            "{}: the bundle carries no Kubernetes release binaries (build it with --kubernetes {} --files-repo …)",
            dir.display(),
            up.to
        )),
    }
}

/// The drill's time limits: the defaults, raised where the agents may take longer to start than
/// the default rollout allows (a lab under TCG compiles the datapath for many minutes), unless
/// `--rollout-timeout` says otherwise.
fn timeouts(rollout: Option<u64>, agent_startup_secs: Option<u64>) -> Timeouts {
    let d = Timeouts::default();
    let slow = agent_startup_secs.map(|s| Duration::from_secs(s.saturating_add(600)));
    let at_least = |t: Duration| slow.map_or(t, |s| s.max(t));
    Timeouts {
        rollout: rollout.map_or_else(|| at_least(d.rollout), Duration::from_secs),
        preflight: rollout.map_or_else(|| at_least(d.preflight), Duration::from_secs),
        ..d
    }
}

/// The first SIGINT or SIGTERM (named): the drill stops and still writes its report; a second
/// SIGINT exits at once (130), leaving the probes to stop by their own time limit.
async fn interrupt() -> String {
    let why = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    };
    eprintln!(
        "{why}: the drill stops; its report is written (Ctrl-C again exits at once, without it)"
    );
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("second SIGINT: exiting without the report");
            std::process::exit(130);
        }
    });
    why.to_owned()
}

fn parse_version(s: &str) -> Result<Version, String> {
    s.parse()
}

/// `drill run`.
fn run_drill(a: RunArgs, out: Output) -> anyhow::Result<ExitCode> {
    let path = definition::locate(&a.lab);
    let lab = match definition::load(&path) {
        Ok(l) => l,
        Err(definition::LabError::Invalid(d)) => {
            print_diagnostics(&d);
            return Ok(Exit::Invalid.into());
        }
        Err(e) => return Err(e).context("drill run"),
    };
    let def = match kubedrill::drill::definition::of_lab(&lab) {
        Ok(d) => d,
        Err(d) => {
            print_diagnostics(&d);
            return Ok(Exit::Invalid.into());
        }
    };
    let Some(def) = def else {
        eprintln!(
            "error: {}: lab `{}` has no `drill:` section; add one, e.g.\n\ndrill:\n  cilium: {{from: 1.17.18, to: 1.18.12}}\n",
            path.display(),
            lab.name
        );
        return Ok(Exit::Invalid.into());
    };
    if out == Output::Text {
        for w in &def.warnings {
            eprintln!("{w}");
        }
    }
    let drill = match def.resolve(&Overrides {
        from: a.from,
        to: a.to,
        force: a.force,
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}", e.diagnostic());
            return Ok(Exit::Invalid.into());
        }
    };
    for w in &drill.warnings {
        eprintln!("warning: {w}");
    }
    let k8s_bundle = match kubernetes_bundle(&drill, a.kubernetes_bundle.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Invalid.into());
        }
    };
    if a.production && !def.faults.is_empty() {
        eprintln!(
            "error: {}: `drill.faults` injects failures on purpose: a lab only, never with --production",
            path.display()
        );
        return Ok(Exit::Invalid.into());
    }
    if a.production && !a.yes && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "error: --production asks before each helm upgrade and rollback: run it on a terminal, or pass --yes"
        );
        return Ok(Exit::Invalid.into());
    }
    let inv_path = match (&a.inventory, a.production) {
        (Some(p), true) => p.clone(),
        _ => lifecycle::lab_dir(&lab.name)
            .join("inventory")
            .join("hosts.yaml"),
    };
    if a.production && !inv_path.exists() {
        eprintln!("error: {}: no such inventory", inv_path.display());
        return Ok(Exit::Invalid.into());
    }
    if !a.production && !inv_path.is_file() {
        eprintln!(
            "error: lab `{}` is not up here: no {} (run `kubedrill lab up {}` and `kubedrill apply -i {}` first)",
            lab.name,
            inv_path.display(),
            lab.name,
            inv_path.display()
        );
        return Ok(Exit::Invalid.into());
    }
    let Some((inventory, spec, diags)) = super::inventory::load_for(&inv_path, out, "drill")?
    else {
        return Ok(Exit::Invalid.into());
    };
    if out == Output::Text {
        print_diagnostics(&diags);
    }
    // The lab and its cluster, until this process ends: a `lab reset`, `lab down`, `apply` or
    // another drill meanwhile fails at once, naming this one.
    let cluster = ClusterState::of(&inventory);
    let _locks = kubedrill::lock::cluster(&cluster).context("drill run")?;
    let _lab_lock = match a.production || cluster.lab.as_deref() == Some(lab.name.as_str()) {
        true => None,
        false => Some(kubedrill::lock::lab(&lab.name).context("drill run")?),
    };
    if let Some(note) = cluster.legacy_note() {
        eprintln!("{note}");
    }
    let host_keys = match kubedrill::check::host_key_settings(&inventory, None, None) {
        Ok(h) => h,
        Err(d) => {
            eprintln!("{d}");
            return Ok(Exit::Invalid.into());
        }
    };
    let timeouts = timeouts(a.rollout_timeout, spec.cilium_startup_timeout);
    let production = a.production.then(|| {
        let yes = a.yes;
        engine::Production {
            cluster: spec.label.clone(),
            confirm: engine::Confirm(std::sync::Arc::new(move |q: &str| {
                if yes {
                    eprintln!("{q}: yes (--yes)");
                    return true;
                }
                super::apply::confirm(&format!("{q}?")).unwrap_or(false)
            })),
        }
    });
    let runs_name = match &production {
        Some(p) => format!("production-{}", p.cluster),
        None => lab.name.clone(),
    };
    let input = DrillInput {
        runs_dir: a
            .runs_dir
            .clone()
            .unwrap_or_else(|| engine::default_runs_dir(&runs_name)),
        kubeconfig: cluster.kubeconfig(),
        lab,
        drill,
        inventory,
        spec,
        reset: a.reset,
        host_keys,
        connect_timeout: Duration::from_secs(a.connect_timeout),
        concurrency: usize::from(kubedrill::fleet::DEFAULT_CONCURRENCY),
        timeouts,
        helm: Helm::default(),
        production,
        kubernetes_bundle: k8s_bundle,
        probe_agent: None,
    };
    let progress = if out == Output::Json {
        Progress::quiet()
    } else {
        Progress::stderr()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt
        .block_on(engine::run_until(&input, &progress, interrupt()))
        .context("drill run")?;
    if out == Output::Json {
        print_json(&r)?;
    } else {
        // Failures, reasons and notes quote node and cluster output: escaped.
        for f in &r.failures {
            eprintln!("error: {}", Escaped(&f.to_string()));
        }
        println!(
            "drill {}: verdict {}{}",
            r.run_id,
            r.verdict.outcome.as_str(),
            if r.rolled_back { " (rolled back)" } else { "" }
        );
        for reason in &r.verdict.reasons {
            println!("  - {}", Escaped(reason));
        }
        if r.verdict.outcome != Outcome::Pass {
            for n in &r.notes {
                println!("  note: {}", Escaped(n));
            }
        }
        print_written(&r.written);
        if let Some(c) = &r.comparison {
            println!("compared with earlier runs: {}", c.display());
        }
    }
    Ok(if r.verdict.outcome == Outcome::Pass {
        Exit::Ok.into()
    } else {
        Exit::Failed.into()
    })
}

/// `drill report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory (holds run.json).
    pub run_dir: PathBuf,
}

/// `drill compare` options.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run directories (each holds run.json).
    #[arg(required = true, num_args = 1..)]
    pub run_dirs: Vec<PathBuf>,
    /// Output directory for index.html and compare.md.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
}

/// Run a `drill` subcommand.
pub fn run(cmd: DrillCmd, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        DrillCmd::Run(args) => return run_drill(args, out),
        DrillCmd::Report(args) => {
            let w = report::write(&args.run_dir)
                .with_context(|| format!("drill report {}", args.run_dir.display()))?;
            if out == Output::Json {
                print_json(&w)?;
            } else {
                print_written(&w);
            }
        }
        DrillCmd::Compare(args) => {
            let c = report::compare(&args.run_dirs, &args.out).context("drill compare")?;
            if out == Output::Json {
                print_json(&c)?;
            } else {
                for w in &c.runs {
                    print_written(w);
                }
                println!("wrote {}", c.index.display());
                println!("wrote {}", c.markdown.display());
            }
        }
    }
    Ok(Exit::Ok.into())
}

fn print_written(w: &Written) {
    let leak = if w.leaking_nodes.is_empty() {
        String::new()
    } else {
        format!("; leak flagged on {}", w.leaking_nodes.join(", "))
    };
    println!(
        "{}: verdict {}{leak}; wrote {} and {}",
        w.record.display(),
        w.verdict.as_str(),
        w.html.display(),
        w.markdown.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_agents_raise_the_rollout_and_preflight_limits() {
        let d = Timeouts::default();
        assert_eq!(timeouts(None, None), d);
        // A TCG lab: the agent's startup probe allows 40 minutes.
        let t = timeouts(None, Some(2400));
        assert_eq!(t.rollout, Duration::from_secs(3000));
        assert_eq!(t.preflight, Duration::from_secs(3000));
        assert_eq!(t.helm, d.helm);
        // A short startup allowance never lowers the defaults; the option wins over both.
        assert_eq!(timeouts(None, Some(60)).rollout, d.rollout);
        let t = timeouts(Some(120), Some(2400));
        assert_eq!(
            (t.rollout, t.preflight),
            (Duration::from_secs(120), Duration::from_secs(120))
        );
    }
}
