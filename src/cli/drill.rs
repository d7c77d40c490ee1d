//! `kubedrill drill …`: upgrade drills. `report` re-renders a run's report from its record,
//! `compare` puts runs of one drill side by side.

use super::{Output, print_json};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use kubedrill::report::{self, Written};
use std::path::PathBuf;
use std::process::ExitCode;

/// `drill` subcommands.
#[derive(Debug, Subcommand)]
pub enum DrillCmd {
    /// Render RUN_DIR/report.html and RUN_DIR/summary.md from RUN_DIR/run.json.
    Report(ReportArgs),
    /// Compare runs of one drill: OUT/index.html and OUT/compare.md (and each run's report).
    Compare(CompareArgs),
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
    Ok(ExitCode::SUCCESS)
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
