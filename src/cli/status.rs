//! `kubedrill status`: nodes, versions, Cilium agents and their datapath beside what the
//! inventory asked for.

use super::exit::Exit;
use super::{Output, print_diagnostics, print_json};
use clap::Args;
use kubedrill::diag::{Escaped, escape_terminal_line};
use std::path::PathBuf;
use std::process::ExitCode;

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Kubespray inventory file (YAML or INI) or the directory holding it.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
    /// How nodes are reached.
    #[command(flatten)]
    pub ssh: super::args::SshArgs,
}

/// Run `status`: exit 0 when every node is Ready with an agent that runs what was asked for,
/// 3 when something differs, 1 when the status cannot be read.
pub fn run(a: StatusArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((inv, spec, diags)) = super::inventory::load_for(&a.inventory, out, "status")? else {
        return Ok(Exit::Invalid.into());
    };
    if out == Output::Text {
        print_diagnostics(&diags);
    }
    let ssh = match a.ssh.settings(&inv) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return Ok(Exit::Invalid.into());
        }
    };
    let st = match super::args::runtime()?.block_on(kubedrill::status::read(&inv, &spec, &ssh)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(note) = kubedrill::layout::cluster::ClusterState::of(&inv).legacy_note() {
                eprintln!("{note}");
            }
            return Ok(Exit::Invalid.into());
        }
    };
    let healthy = st
        .nodes
        .iter()
        .all(|n| n.ready && n.mismatches.is_empty() && n.agent.as_ref().is_some_and(|a| a.ready));
    if out == Output::Json {
        print_json(&st)?;
    } else {
        println!(
            "cluster {} · asked for: KPR {:?}, LB {:?}, {:?}, XDP {:?}, routing {:?}",
            st.cluster,
            st.expected.kube_proxy_replacement,
            st.expected.lb_mode,
            st.expected.algorithm,
            st.expected.acceleration,
            st.expected.routing
        );
        println!(
            "{:<14} {:<6} {:<10} {:<9} {:<26} {:<14} {:<10} {:<12}",
            "NODE", "READY", "KUBELET", "CILIUM", "AGENT", "KPR", "LB", "XDP"
        );
        for n in &st.nodes {
            let (agent, version, kpr, lb, xdp) = match &n.agent {
                None => (
                    "none".to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ),
                Some(a) => {
                    let d = a.datapath.as_ref();
                    (
                        format!(
                            "{} ({} restarts)",
                            if a.ready { "ready" } else { "NOT READY" },
                            a.restarts
                        ),
                        a.version.clone().unwrap_or_else(|| "?".into()),
                        d.and_then(|d| d.kube_proxy_replacement.as_ref())
                            .map(|k| format!("{k:?}"))
                            .unwrap_or_else(|| "?".into()),
                        d.and_then(|d| d.lb_mode.as_ref())
                            .map(|k| format!("{k:?}"))
                            .unwrap_or_else(|| "?".into()),
                        d.and_then(|d| d.xdp_acceleration.as_ref())
                            .map(|k| format!("{k:?}"))
                            .unwrap_or_else(|| "?".into()),
                    )
                }
            };
            // Node names, versions and messages come from the cluster: escaped, one line each.
            println!(
                "{:<14} {:<6} {:<10} {:<9} {:<26} {:<14} {:<10} {:<12}",
                escape_terminal_line(&n.node),
                if !n.registered {
                    "absent"
                } else if n.ready {
                    "yes"
                } else {
                    "NO"
                },
                escape_terminal_line(n.kubelet.as_deref().unwrap_or("-")),
                escape_terminal_line(&version),
                agent,
                kpr,
                lb,
                xdp
            );
            for m in &n.mismatches {
                println!("    {}", Escaped(m));
            }
            if let Some(e) = n.agent.as_ref().and_then(|a| a.error.as_ref()) {
                println!("    agent status: {}", Escaped(e));
            }
        }
    }
    Ok(if healthy {
        Exit::Ok.into()
    } else {
        Exit::Differs.into()
    })
}
