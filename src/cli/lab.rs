//! `kubedrill lab …`: rehearsal labs on libvirt. `show` resolves a lab definition (VMs, sizes,
//! addresses, NIC queues, the accelerator that would be used) and can print its libvirt XML.

use super::exit::Exit;
use super::{Output, print_json};
use anyhow::Context;
use clap::{Args, Subcommand};
use kubedrill::diag::Escaped;
use kubedrill::drill::definition::DrillDefinition;
use kubedrill::fleet::Progress;
use kubedrill::lab::accel::{self, HostVirt};
use kubedrill::lab::definition::{self, LabError, VmRole};
use kubedrill::lab::lifecycle;
use kubedrill::lab::xml::{self, Boot, Instance, VmFiles};
use kubedrill::render::Templates;
use std::process::ExitCode;

/// `lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Create the lab's VMs, wait until each answers SSH, write its inventory and known_hosts.
    Up(UpArgs),
    /// Remove exactly what `lab up` created (marked domains, the recorded network, the files).
    Down(NameArgs),
    /// Labs recorded on this machine and their VMs' states.
    Ls,
    /// Snapshot every VM of the lab (memory and disk).
    Snapshot(SnapArgs),
    /// Return every VM to a snapshot, wait for SSH, set the guests' clocks.
    Reset(ResetArgs),
    /// Resolve a lab definition: VMs, sizes, addresses, queues, accelerator; `--xml` prints the
    /// libvirt XML that `lab up` would define.
    Show(ShowArgs),
}

/// `lab up` options.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Lab file, or a name under labs/.
    pub lab: String,
    /// Accelerator: auto (default: the lab file's), kvm, tcg.
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// Seconds to wait for every VM to answer SSH.
    #[arg(long, default_value_t = 600, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ssh_timeout: u64,
    /// Isolated network (no NAT to the outside).
    #[arg(long)]
    pub isolated: bool,
}

/// `--accel`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AccelArg {
    /// KVM when usable, else TCG.
    Auto,
    /// KVM.
    Kvm,
    /// TCG.
    Tcg,
}

/// A lab by name (or its file).
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Lab name, file, or name under labs/.
    pub lab: String,
}

/// A lab and a snapshot name.
#[derive(Debug, Args)]
pub struct SnapArgs {
    /// Lab name, file, or name under labs/.
    pub lab: String,
    /// Snapshot name.
    pub snapshot: String,
}

/// `lab reset` options.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Lab name, file, or name under labs/.
    pub lab: String,
    /// Snapshot name.
    pub snapshot: String,
    /// Seconds to wait for every VM to answer SSH after the revert.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ssh_timeout: u64,
}

/// The lab name from an argument that may be a file.
/// A lab that is not a loadable file must be a plain lab name: never a path, which would
/// steer what `lab down` deletes.
fn lab_name(arg: &str) -> anyhow::Result<String> {
    let p = definition::locate(arg);
    match definition::load(&p) {
        Ok(l) => Ok(l.name),
        Err(_) if definition::is_dns_label(arg) => Ok(arg.to_string()),
        Err(e) => anyhow::bail!(
            "`{}` is neither a lab name (lowercase letters, digits and `-`) nor a lab file that loads: {e}",
            arg.escape_debug()
        ),
    }
}

/// `lab show` options.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Lab file, or a name under labs/ (`quickstart` → labs/quickstart.yaml).
    pub lab: String,
    /// Also print the network and domain XML.
    #[arg(long)]
    pub xml: bool,
}

/// Run a `lab` subcommand.
pub fn run(cmd: LabCmd, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCmd::Show(a) => show(a, out),
        LabCmd::Up(a) => up(a, out),
        LabCmd::Down(a) => {
            let name = lab_name(&a.lab)?;
            let _lock = kubedrill::lock::lab(&name).context("lab down")?;
            match lifecycle::down(&name) {
                Ok(td) => {
                    if out == Output::Json {
                        print_json(&td)?;
                    } else {
                        for r in &td.removed {
                            println!("removed {r}");
                        }
                        println!("lab {name} is down");
                    }
                    Ok(Exit::Ok.into())
                }
                Err(e) => {
                    eprintln!("error: {}", Escaped(&kubedrill::diag::chain(&e)));
                    Ok(Exit::Invalid.into())
                }
            }
        }
        LabCmd::Ls => {
            let labs = lifecycle::list();
            if out == Output::Json {
                print_json(&labs)?;
            } else if labs.is_empty() {
                println!("no labs");
            } else {
                for l in labs {
                    println!("{} (created {}, {})", l.lab, l.instance.created, l.uri);
                    for (d, s) in l.domains {
                        println!("  {d:<32} {s}");
                    }
                }
            }
            Ok(Exit::Ok.into())
        }
        LabCmd::Snapshot(a) => {
            let name = lab_name(&a.lab)?;
            let _lock = kubedrill::lock::lab(&name).context("lab snapshot")?;
            timed("snapshot", lifecycle::snapshot(&name, &a.snapshot))
        }
        LabCmd::Reset(a) => reset(a, out),
    }
}

fn timed(
    what: &str,
    r: Result<std::time::Duration, lifecycle::LifecycleError>,
) -> anyhow::Result<ExitCode> {
    match r {
        Ok(d) => {
            println!("{what} done in {:.1} s", d.as_secs_f64());
            Ok(Exit::Ok.into())
        }
        Err(e) => {
            eprintln!("error: {}", Escaped(&kubedrill::diag::chain(&e)));
            Ok(Exit::Invalid.into())
        }
    }
}

/// Load a lab definition and its drill, printing their errors (file, line, field) when either
/// is invalid.
fn load_lab(arg: &str) -> Option<(definition::Lab, Option<DrillDefinition>)> {
    match definition::load(&definition::locate(arg)) {
        Ok(l) => match kubedrill::drill::definition::of_lab(&l) {
            Ok(d) => Some((l, d)),
            Err(d) => {
                super::print_diagnostics(&d);
                None
            }
        },
        Err(LabError::Invalid(d)) => {
            super::print_diagnostics(&d);
            None
        }
        Err(e) => {
            eprintln!("error: {}", Escaped(&kubedrill::diag::chain(&e)));
            None
        }
    }
}

fn up(a: UpArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((lab, _)) = load_lab(&a.lab) else {
        return Ok(Exit::Invalid.into());
    };
    // Two `lab up` at once would both define VMs and one record would lose the other's.
    let _lock = kubedrill::lock::lab(&lab.name).context("lab up")?;
    let opts = lifecycle::UpOptions {
        accel: a.accel.map(|x| match x {
            AccelArg::Auto => definition::Accel::Auto,
            AccelArg::Kvm => definition::Accel::Kvm,
            AccelArg::Tcg => definition::Accel::Tcg,
        }),
        ssh_timeout: std::time::Duration::from_secs(a.ssh_timeout),
        nat: !a.isolated,
    };
    let progress = if out == Output::Json {
        Progress::quiet()
    } else {
        Progress::stderr()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match rt.block_on(lifecycle::up(&lab, &opts, &progress)) {
        Ok(r) => {
            if out == Output::Json {
                print_json(&r)?;
            } else {
                println!(
                    "lab {} is up ({}) in {:.0} s: defined in {:.1} s; SSH ready: {}",
                    r.lab,
                    if r.domain_type == "kvm" { "KVM" } else { "TCG" },
                    r.total_secs,
                    r.define_secs,
                    r.ssh_ready_secs
                        .iter()
                        .map(|(v, s)| format!("{v} {s:.0} s"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for b in &r.boot {
                    println!(
                        "  {}: boot to sshd {:.0} s, then first-boot setup (cloud-init) {:.0} s",
                        b.vm, b.boot_secs, b.first_boot_secs
                    );
                }
                println!("inventory: {}", r.inventory.display());
                println!("next: kubedrill check -i {}", r.inventory.display());
            }
            Ok(Exit::Ok.into())
        }
        Err(e) => {
            eprintln!("error: {}", Escaped(&kubedrill::diag::chain(&e)));
            if lifecycle::lab_dir(&lab.name).join("state.json").exists() {
                eprintln!(
                    "(whatever was created is recorded: `kubedrill lab down {}` removes it)",
                    lab.name
                );
            }
            Ok(Exit::Invalid.into())
        }
    }
}

fn reset(a: ResetArgs, out: Output) -> anyhow::Result<ExitCode> {
    let progress = if out == Output::Json {
        Progress::quiet()
    } else {
        Progress::stderr()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let name = lab_name(&a.lab)?;
    // Never under a running drill or apply on this lab.
    let _lock = kubedrill::lock::lab(&name).context("lab reset")?;
    let timeout = std::time::Duration::from_secs(a.ssh_timeout);
    match rt.block_on(lifecycle::reset(&name, &a.snapshot, timeout, &progress)) {
        Ok(r) => {
            if out == Output::Json {
                print_json(&r)?;
            } else {
                println!(
                    "reset done in {:.1} s: reverted in {:.1} s, SSH ready {:.1} s later; clocks set on {}",
                    r.total_secs,
                    r.revert_secs,
                    r.ssh_secs,
                    if r.clock_synced.is_empty() {
                        "none".to_string()
                    } else {
                        r.clock_synced.join(", ")
                    }
                );
            }
            Ok(Exit::Ok.into())
        }
        Err(e) => {
            eprintln!("error: {}", Escaped(&kubedrill::diag::chain(&e)));
            Ok(Exit::Invalid.into())
        }
    }
}

fn show(a: ShowArgs, out: Output) -> anyhow::Result<ExitCode> {
    let Some((lab, drill)) = load_lab(&a.lab) else {
        return Ok(Exit::Invalid.into());
    };
    let host = HostVirt::probe();
    let choice = match accel::choose(lab.accel, host, lab.vms.len()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", Escaped(&e));
            return Ok(Exit::Invalid.into());
        }
    };
    if out == Output::Json {
        print_json(
            &serde_json::json!({ "lab": lab, "drill": drill, "accel": choice, "host": host }),
        )?;
        return Ok(Exit::Ok.into());
    }
    if let Some(w) = &choice.warning {
        eprintln!("warning: {w}");
    }
    println!(
        "lab {} · {} · {} VMs, {} MiB guest memory · network {} · image {} · {} ({})",
        lab.name,
        lab.uri,
        lab.vms.len(),
        lab.memory_mib(),
        lab.cidr,
        lab.image,
        if choice.domain_type == "kvm" {
            "KVM"
        } else {
            "TCG"
        },
        choice.reason
    );
    if let Some(m) = &lab.mirrors {
        println!("mirrors {}", m.display());
    }
    for v in &lab.vms {
        let role = match v.role {
            VmRole::ControlPlane { also_worker: true } => "control-plane+worker",
            VmRole::ControlPlane { .. } => "control-plane",
            VmRole::Worker => "worker",
        };
        println!(
            "  {:<12} {:<22} {:<15} {} vCPU  {:>5} MiB  {:>3} GiB  NIC queues {}{}",
            v.name,
            role,
            v.address,
            v.size.vcpus,
            v.size.memory_mib,
            v.size.disk_gib,
            v.queues,
            if v.queues < 2 * v.size.vcpus {
                "  (fewer than 2 × vCPU: native XDP will not get its spare queues)"
            } else {
                ""
            }
        );
    }
    if let Some(d) = &drill {
        for w in &d.warnings {
            eprintln!("{w}");
        }
        let kinds: Vec<&str> = d.probes.kinds.iter().map(|k| k.as_str()).collect();
        let resolved = d.resolve(&kubedrill::drill::definition::Overrides::default());
        let path = match &resolved {
            Ok(r) if r.steps.is_empty() => "stays".to_owned(),
            Ok(r) => r.steps.join(", "),
            Err(e) => format!("no path without overrides: {}", e.diagnostic().message),
        };
        let k8s = match resolved.as_ref().ok().and_then(|r| r.kubernetes_upgrade) {
            Some(k) => format!(
                " · Kubernetes {} → {} ({}, workers {} at a time)",
                k.from,
                k.to,
                match k.order {
                    kubedrill::drill::kubernetes::Order::CiliumFirst => "after Cilium",
                    kubedrill::drill::kubernetes::Order::KubernetesFirst => "before Cilium",
                },
                k.batch
            ),
            None => String::new(),
        };
        println!(
            "drill: Cilium {} → {} ({path}){k8s} · probes {} at {}/s · soak {} s · pod burst {}",
            d.cilium.from.value,
            d.cilium.to.value,
            kinds.join(", "),
            d.probes.rate_per_s,
            d.policy.soak_secs,
            d.policy.pod_burst
        );
    }
    if a.xml {
        let t = Templates::load()?;
        let inst = Instance::new(&lab.name);
        println!("\n{}", xml::network(&t, &lab, &xml::random_uuid(), true)?);
        let dir = std::path::PathBuf::from("<lab dir>");
        for v in &lab.vms {
            let files = VmFiles::under(&dir, &v.name);
            println!(
                "{}",
                xml::domain(
                    &t,
                    &lab,
                    v,
                    &inst,
                    choice.domain_type,
                    &Boot::Disk,
                    &files,
                    &xml::random_uuid()
                )?
            );
        }
    }
    Ok(Exit::Ok.into())
}
