//! `kubedrill inventory check|show`.

use super::exit::Exit;
use super::{Output, print_diagnostics, print_json};
use clap::{Args, Subcommand};
use kubedrill::diag::Diagnostics;
use kubedrill::inventory::{self, InventoryError};
use kubedrill::{secrets, spec};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// `inventory` subcommands.
#[derive(Debug, Subcommand)]
pub enum InventoryCmd {
    /// Validate the inventory and the cluster spec; exit 1 on any error.
    Check(InvArgs),
    /// Show hosts, groups and every effective setting with where it came from.
    Show(ShowArgs),
}

/// The inventory to read.
#[derive(Debug, Args)]
pub struct InvArgs {
    /// Kubespray inventory file (YAML or INI) or the directory holding it.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
}

/// `inventory show` options.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    inv: InvArgs,
    /// Also list every effective variable of this host with its origin.
    #[arg(long)]
    host: Option<String>,
}

#[derive(Serialize)]
struct CheckReport<'a> {
    valid: bool,
    hosts: Vec<HostRow>,
    diagnostics: &'a Diagnostics,
}

#[derive(Serialize)]
struct HostRow {
    name: String,
    role: String,
    ip: String,
    ssh: String,
    etcd: bool,
}

/// The inventory, and the spec when it could be built.
pub type Found = Option<(inventory::Inventory, Option<spec::ClusterSpec>)>;

/// Load the inventory and its spec for a command that needs both; on errors, print them (as
/// JSON or text, naming `what` could not run) and return `None`.
pub fn load_for(
    path: &std::path::Path,
    out: super::Output,
    what: &str,
) -> anyhow::Result<Option<(inventory::Inventory, spec::ClusterSpec, Diagnostics)>> {
    let (loaded, diags) = load_all(path)?;
    if let Some((inv, Some(spec))) = loaded {
        return Ok(Some((inv, spec, diags)));
    }
    if out == super::Output::Json {
        super::print_json(&serde_json::json!({ "valid": false, "diagnostics": diags }))?;
    } else {
        super::print_diagnostics(&diags);
        eprintln!(
            "no {what}: fix the errors above (kubedrill inventory check -i {})",
            path.display()
        );
    }
    Ok(None)
}

/// Load the inventory and spec, returning whatever could be built and every finding.
pub fn load_all(path: &std::path::Path) -> anyhow::Result<(Found, Diagnostics)> {
    let inv = match inventory::load(path) {
        Ok(inv) => inv,
        Err(InventoryError::Invalid(d)) => return Ok((None, d)),
        Err(e) => {
            let mut d = Diagnostics::default();
            d.push(kubedrill::diag::Diagnostic::error(e.to_string()));
            return Ok((None, d));
        }
    };
    let mut diags = inv.warnings.clone();
    let ctx = super::state::context(&inv)?;
    let spec = match spec::build(&inv, &ctx) {
        Ok((s, w)) => {
            diags.extend(w);
            Some(s)
        }
        Err(d) => {
            diags.extend(d);
            None
        }
    };
    Ok((Some((inv, spec)), diags))
}

fn rows(inv: &inventory::Inventory) -> Vec<HostRow> {
    inv.hosts
        .iter()
        .map(|h| HostRow {
            name: h.name.clone(),
            role: h.role.label().to_owned(),
            ip: h.ip.to_string(),
            ssh: format!(
                "{}{}:{}",
                h.ssh
                    .user
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default(),
                h.ssh.address,
                h.ssh.port
            ),
            etcd: h.etcd,
        })
        .collect()
}

/// Run an `inventory` subcommand.
pub fn run(cmd: InventoryCmd, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        InventoryCmd::Check(a) => check(&a.inventory, out),
        InventoryCmd::Show(a) => show(&a.inv.inventory, a.host.as_deref(), out),
    }
}

fn check(path: &std::path::Path, out: Output) -> anyhow::Result<ExitCode> {
    let (loaded, diags) = load_all(path)?;
    let valid = loaded.as_ref().is_some_and(|(_, s)| s.is_some()) && !diags.has_errors();
    let hosts = loaded
        .as_ref()
        .map(|(inv, _)| rows(inv))
        .unwrap_or_default();
    match out {
        Output::Json => print_json(&CheckReport {
            valid,
            hosts,
            diagnostics: &diags,
        })?,
        Output::Text => {
            if !hosts.is_empty() {
                println!(
                    "{:<20} {:<22} {:<16} {:<5} SSH",
                    "HOST", "ROLE", "IP", "ETCD"
                );
                for h in &hosts {
                    println!(
                        "{:<20} {:<22} {:<16} {:<5} {}",
                        h.name,
                        h.role,
                        h.ip,
                        if h.etcd { "yes" } else { "" },
                        h.ssh
                    );
                }
            }
            if let Some((inv, Some(s))) = &loaded {
                println!(
                    "\n{} nodes ({} control plane, {} worker) · Kubernetes {} ({}) · Cilium {} · endpoint {}",
                    inv.hosts.len(),
                    inv.control_planes().count(),
                    inv.workers().count(),
                    s.kubernetes,
                    s.kubeadm_api.api_version(),
                    s.cilium,
                    s.endpoint
                );
                if let Some(b) = &inv.bastion {
                    println!("bastion {} ({}:{})", b.name, b.ssh.address, b.ssh.port);
                }
            }
            print_diagnostics(&diags);
            let (e, w) = (diags.errors().count(), diags.warnings().count());
            if valid {
                println!(
                    "inventory OK ({w} warning{})",
                    if w == 1 { "" } else { "s" }
                );
            } else {
                eprintln!(
                    "inventory has {e} error{} and {w} warning{}",
                    if e == 1 { "" } else { "s" },
                    if w == 1 { "" } else { "s" }
                );
            }
        }
    }
    Ok(if valid {
        Exit::Ok.into()
    } else {
        Exit::Invalid.into()
    })
}

#[derive(Serialize)]
struct ShowReport<'a> {
    inventory: &'a inventory::Inventory,
    spec: Option<&'a spec::ClusterSpec>,
    host_vars: Option<serde_json::Value>,
    diagnostics: &'a Diagnostics,
}

fn show(path: &std::path::Path, host: Option<&str>, out: Output) -> anyhow::Result<ExitCode> {
    let (loaded, diags) = load_all(path)?;
    let Some((inv, spec)) = loaded else {
        if out == Output::Json {
            print_json(&serde_json::json!({ "valid": false, "diagnostics": diags }))?;
        } else {
            print_diagnostics(&diags);
        }
        return Ok(Exit::Invalid.into());
    };
    let host_vars = match host {
        None => None,
        Some(name) => {
            let h = inv.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
                anyhow::anyhow!("host `{name}` is not a Kubernetes node of this inventory")
            })?;
            Some(serde_json::to_value(&h.vars)?)
        }
    };
    match out {
        // Secret-shaped variables and values never leave in clear (see `kubedrill::secrets`).
        Output::Json => print_json(&secrets::redact_json(&serde_json::to_value(ShowReport {
            inventory: &inv,
            spec: spec.as_ref(),
            host_vars,
            diagnostics: &diags,
        })?))?,
        Output::Text => {
            println!("inventory {} ({:?})", inv.path.display(), inv.format);
            println!("\nGROUPS");
            for (g, members) in &inv.groups {
                if !members.is_empty() {
                    println!(
                        "  {:<20} {}",
                        kubedrill::diag::escape_terminal_line(g),
                        summarize(members)
                    );
                }
            }
            println!("\nHOSTS");
            for h in &inv.hosts {
                println!(
                    "  {:<20} {:<22} ip {:<15} access_ip {:<15} ssh {}:{}{}",
                    h.name,
                    h.role.label(),
                    h.ip,
                    h.access_ip,
                    kubedrill::diag::escape_terminal_line(&h.ssh.address),
                    h.ssh.port,
                    h.etcd_member_name
                        .as_deref()
                        .map(|n| format!(" etcd {n}"))
                        .unwrap_or_default()
                );
            }
            if let Some(s) = &spec {
                println!("\nEFFECTIVE SETTINGS (and where each came from)");
                for p in &s.provenance {
                    let value = if secrets::is_secret_path(p.setting) {
                        secrets::REDACTED.to_owned()
                    } else {
                        p.value.to_string()
                    };
                    // Values are inventory text: escaped for the terminal, one line.
                    let value = kubedrill::diag::escape_terminal_line(&value);
                    println!("  {:<26} {:<30} {}", p.setting, value, p.source);
                }
                if !s.cilium_extra_values.is_empty() {
                    println!(
                        "\ncilium_extra_values merged last: {}",
                        secrets::redact_json(&serde_json::Value::Object(
                            s.cilium_extra_values.clone()
                        ))
                    );
                }
            }
            if let (Some(name), Some(h)) = (
                host,
                inv.hosts.iter().find(|h| Some(h.name.as_str()) == host),
            ) {
                println!("\nVARIABLES OF {name}");
                for (k, v) in &h.vars {
                    let value = if secrets::is_secret_name(k) {
                        secrets::REDACTED.to_owned()
                    } else {
                        short(&secrets::redact_json(&v.value))
                    };
                    // Names and values are inventory text: escaped for the terminal.
                    let k = kubedrill::diag::escape_terminal_line(k);
                    let value = kubedrill::diag::escape_terminal_line(&value);
                    println!("  {k:<34} {value:<30} {}", v.origin);
                }
            }
            print_diagnostics(&diags);
        }
    }
    Ok(if diags.has_errors() || spec.is_none() {
        Exit::Invalid.into()
    } else {
        Exit::Ok.into()
    })
}

fn summarize(items: &[String]) -> String {
    if items.len() <= 8 {
        items.join(", ")
    } else {
        format!(
            "{}, … ({} more, {} in all)",
            items[..6].join(", "),
            items.len() - 6,
            items.len()
        )
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s
    }
}
