//! `kubedrill plan`: the ordered phase tree of an apply, and optionally the files it would write.

use super::exit::Exit;
use super::{Output, print_diagnostics, print_json};
use anyhow::Context;
use clap::Args;
use kubedrill::plan::{self, Step, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `plan` options.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Kubespray inventory file (YAML or INI) or the directory holding it.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
    /// Write every file the plan would write under DIR/<host>/<path> (and DIR/local/).
    #[arg(long, value_name = "DIR")]
    pub render_dir: Option<PathBuf>,
}

/// Run `plan`.
pub fn run(args: PlanArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((inv, spec, diags)) = super::inventory::load_for(&args.inventory, out, "plan")? else {
        return Ok(Exit::Invalid.into());
    };
    let plan = plan::build(&spec, &inv).context("rendering the plan")?;
    if let Some(dir) = &args.render_dir {
        let n = write_files(&plan, dir)?;
        if let Some(p) = super::state::save_generated_seed(&spec, &inv)? {
            eprintln!(
                "saved the cluster's Maglev hash seed to {} (keep it: every run and upgrade must use the same seed)",
                p.display()
            );
        }
        eprintln!("wrote {n} files under {}", dir.display());
    }
    match out {
        Output::Json => print_json(&redact_private_files(
            serde_json::json!({ "plan": plan, "diagnostics": diags }),
        ))?,
        Output::Text => {
            print_diagnostics(&diags);
            println!(
                "plan for {} nodes · Kubernetes {} ({}) · Cilium {} · endpoint {}",
                plan.nodes, plan.kubernetes, plan.kubeadm_api, plan.cilium, plan.endpoint
            );
            for (i, p) in plan.phases.iter().enumerate() {
                print_phase(i, p, "unchanged when");
            }
        }
    }
    Ok(Exit::Ok.into())
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Local => "local".to_owned(),
        Target::Hosts(h) if h.len() <= 4 => h.join(","),
        Target::Hosts(h) => format!("{},… ({} hosts)", h[..3].join(","), h.len()),
    }
}

/// One phase of a plan as text: number, name, title, when a re-run leaves it alone, steps.
pub(crate) fn print_phase(i: usize, p: &plan::PlannedPhase, unchanged: &str) {
    println!("\n[{:>2}] {:<28} {}", i + 1, p.def.name, p.def.title);
    println!("     {unchanged}: {}", p.def.unchanged_when);
    for s in &p.steps {
        println!("     {}", step_line(s));
    }
}

pub(crate) fn step_line(s: &Step) -> String {
    match s {
        Step::Write { target, file } => format!(
            "write {} (mode {:04o}{}) on {}",
            file.path,
            file.mode,
            if file.sensitive {
                ", holds secrets at apply"
            } else {
                ""
            },
            target_text(target)
        ),
        Step::Upload {
            target,
            remote,
            sha256,
            ..
        } => format!(
            "copy  {remote} (sha256 {}…, unless already there) to {}",
            sha256.get(..12).unwrap_or(sha256),
            target_text(target)
        ),
        Step::Run {
            target, command, ..
        } => format!("run   {command} on {}", target_text(target)),
        Step::Check { target, what } => format!("check {what} on {}", target_text(target)),
    }
}

/// Write each planned file under `dir`: node files at DIR/<host>/<absolute path>, local files at DIR/local/<path>.
fn write_files(plan: &plan::Plan, dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for p in &plan.phases {
        for s in &p.steps {
            let Step::Write { target, file } = s else {
                continue;
            };
            let hosts: Vec<String> = match target {
                Target::Local => vec!["local".to_owned()],
                Target::Hosts(h) => h.clone(),
            };
            let rel = Path::new(file.path.trim_start_matches('/'));
            if rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                anyhow::bail!(
                    "refusing to write outside the render directory: {}",
                    file.path
                );
            }
            for h in hosts {
                let dest = kubedrill::files::join_name(dir, &h)?.join(rel);
                kubedrill::files::write_atomic(&dest, file.content.as_bytes(), file.mode)
                    .with_context(|| format!("writing {}", dest.display()))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The content of files written 0600 or holding secrets at apply (the Cilium values with
/// `cilium_extra_values`, join configurations) is not printed: `--render-dir` writes it into
/// files with the same modes instead.
fn redact_private_files(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                let private = m.get("sensitive").and_then(|s| s.as_bool()) == Some(true)
                    || m.get("mode")
                        .and_then(|x| x.as_u64())
                        .is_some_and(|mode| mode & 0o077 == 0);
                if private
                    && m.contains_key("path")
                    && let Some(c) = m.get_mut("content")
                {
                    *c = serde_json::Value::String(format!(
                        "{} (private file: see --render-dir)",
                        kubedrill::secrets::REDACTED
                    ));
                }
                m.values_mut().for_each(walk);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}
