//! `kubedrill check`: facts and kernel-feature verdicts for every node, and the Cilium settings
//! the cluster can safely use.

use super::args::SshArgs;
use super::exit::Exit;
use super::{Output, print_diagnostics, print_json};
use anyhow::Context;
use clap::Args;
use kubedrill::check::{self, CheckReport, HostOutcome};
use kubedrill::diag::{escape_terminal, escape_terminal_line};
use kubedrill::kernel::{self, Feature, Status};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Kubespray inventory file (YAML or INI) or the directory holding it.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
    /// How nodes are reached.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Seconds the facts script may run per host (a node that streams or stalls is stopped
    /// after this).
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub gather_timeout: u64,
    /// Also write each host's facts as DIR/<host>.json.
    #[arg(long, value_name = "DIR")]
    pub save_facts: Option<PathBuf>,
}

/// Run `check`.
pub fn run(args: CheckArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((inv, spec, diags)) = super::inventory::load_for(&args.inventory, out, "check")?
    else {
        return Ok(Exit::Invalid.into());
    };
    if out == Output::Text {
        print_diagnostics(&diags);
    }
    let ssh = match args.ssh.settings(&inv) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return Ok(Exit::Invalid.into());
        }
    };
    let progress = super::args::progress(out);
    let report = super::args::runtime()?.block_on(check::run(
        &inv,
        &spec,
        ssh,
        Duration::from_secs(args.gather_timeout),
        args.ssh.concurrency(),
        &progress,
    ))?;
    if let Some(dir) = &args.save_facts {
        save_facts(&report, dir)?;
    }
    match out {
        Output::Json => print_json(&report)?,
        Output::Text => print_text(&report),
    }
    Ok(exit_code(&report))
}

fn exit_code(r: &CheckReport) -> ExitCode {
    if r.failed().next().is_some() {
        Exit::Unreachable.into()
    } else if r.requested_blocked {
        Exit::Differs.into()
    } else {
        Exit::Ok.into()
    }
}

fn save_facts(r: &CheckReport, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for h in &r.hosts {
        if let HostOutcome::Checked { facts, .. } = &h.outcome {
            // Host names are validated at load; join_name keeps it so if that ever changes.
            let p = kubedrill::files::join_name(dir, &format!("{}.json", h.host))?;
            kubedrill::files::write_atomic(&p, &serde_json::to_vec_pretty(facts)?, 0o644)
                .with_context(|| format!("writing {}", p.display()))?;
        }
    }
    Ok(())
}

fn cell(v: Option<&kernel::Verdict>) -> String {
    match v {
        None => "-".into(),
        Some(v) => {
            let s = match &v.status {
                Status::Ok => "ok",
                s if s.is_unverified() => "unverified",
                Status::Degraded { .. } => "degraded",
                Status::Blocked { .. } if v.requested => "BLOCKED",
                Status::Blocked { .. } => "no",
            };
            if v.requested {
                s.to_string()
            } else {
                format!("({s})")
            }
        }
    }
}

/// Everything printed here that came from nodes or the inventory (host names, kernel releases,
/// NIC names, errors quoting stderr) goes through the terminal escaper: the table cells in
/// [`print_table`], the notes and errors where they are printed.
fn print_text(r: &CheckReport) {
    println!(
        "check {} · Kubernetes {} · Cilium {} · host keys {} ({})",
        escape_terminal_line(&r.cluster),
        r.kubernetes,
        r.cilium,
        serde_json::to_value(r.host_keys.mode)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        escape_terminal_line(&r.host_keys.file.display().to_string())
    );
    if r.host_keys_learned > 0 {
        println!(
            "recorded {} new host key(s) in {}",
            r.host_keys_learned,
            r.host_keys.file.display()
        );
    }
    println!();
    let mut header = vec![
        "HOST".to_string(),
        "KERNEL".to_string(),
        "XDP DEVICE".to_string(),
    ];
    header.extend(Feature::ALL.iter().map(|f| short(*f).to_string()));
    let mut rows = vec![header];
    for h in &r.hosts {
        let mut row = vec![h.host.clone()];
        match &h.outcome {
            HostOutcome::Checked { report, .. } => {
                row.push(report.kernel.release.clone());
                row.push(
                    report
                        .xdp_devices
                        .iter()
                        .map(|d| {
                            format!(
                                "{} {} q{}/{}",
                                d.name,
                                d.driver.as_deref().unwrap_or("?"),
                                opt(d.current_queues),
                                opt(d.max_queues)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                row.extend(Feature::ALL.iter().map(|f| cell(report.verdict(*f))));
            }
            HostOutcome::Failed { .. } => {
                row.push("UNREACHABLE".into());
                row.push(String::new());
                row.extend(Feature::ALL.iter().map(|_| "-".to_string()));
            }
        }
        rows.push(row);
    }
    print_table(&rows);
    println!("(parenthesised: not requested by the inventory, shown for information)");

    let mut notes = Vec::new();
    for h in &r.hosts {
        if let HostOutcome::Checked { report, .. } = &h.outcome {
            for v in &report.verdicts {
                match &v.status {
                    Status::Ok => {}
                    Status::Degraded { reason, fallback } if v.requested => notes.push(format!(
                        "  {} {}: degraded: {reason}\n      Cilium will instead: {fallback}",
                        h.host, v.feature
                    )),
                    Status::Blocked { reason, fix } if v.requested => notes.push(format!(
                        "  {} {}: BLOCKED: {reason}\n      fix: {fix}",
                        h.host, v.feature
                    )),
                    _ => {}
                }
            }
        }
    }
    if !notes.is_empty() {
        println!("\nfindings on requested features:");
        for n in notes {
            println!("{}", escape_terminal(&n));
        }
    }

    println!("\neffective Cilium settings (chart {}):", r.cilium);
    let mut rows = vec![vec![
        "VALUE".to_string(),
        "INVENTORY ASKED".to_string(),
        "SAFE FOR ALL NODES".to_string(),
        "WHY".to_string(),
    ]];
    for e in &r.effective.entries {
        let mark = if e.requested == e.effective { "" } else { " *" };
        rows.push(vec![
            e.key.clone(),
            e.requested.clone(),
            format!("{}{mark}", e.effective),
            e.reason.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows);

    let failed: Vec<_> = r.failed().collect();
    if !failed.is_empty() {
        println!("\nnot checked:");
        for (_, err) in &failed {
            // Errors start with the host name.
            println!("  {}", escape_terminal(err));
        }
    }
    let checked = r.hosts.len() - failed.len();
    let mut verdict = Vec::new();
    if !failed.is_empty() {
        verdict.push(format!("{} not checked", failed.len()));
    }
    if r.requested_blocked {
        verdict.push("a requested feature is blocked".to_string());
    }
    if verdict.is_empty() {
        verdict.push("every requested feature can run".to_string());
    }
    println!(
        "\n{checked}/{} hosts checked in {:.2} s; {}",
        r.hosts.len(),
        r.duration_ms as f64 / 1000.0,
        verdict.join("; "),
    );
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "?".into(), |n| n.to_string())
}

fn short(f: Feature) -> &'static str {
    match f {
        Feature::BaselineKernel => "BASELINE",
        Feature::KernelConfig => "KCONFIG",
        Feature::SocketLb => "SOCKET-LB",
        Feature::BpfHostRouting => "HOST-ROUTING",
        Feature::BpfMasquerade => "BPF-MASQ",
        Feature::BandwidthManager => "BW-MANAGER",
        Feature::XdpNative => "XDP",
    }
}

fn print_table(rows: &[Vec<String>]) {
    // Cells are escaped before widths are measured, so columns line up with what is shown.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| escape_terminal_line(c).into_owned())
                .collect()
        })
        .collect();
    let rows = &rows;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i + 1 == r.len() {
                    s.clone()
                } else {
                    format!("{s:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("  {}", line.join("  ").trim_end());
    }
}
