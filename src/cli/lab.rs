//! `kubedrill lab …`: rehearsal labs on libvirt. `show` resolves a lab definition (VMs, sizes,
//! addresses, NIC queues, the accelerator that would be used) and can print its libvirt XML.

use super::{Output, print_json};
use clap::{Args, Subcommand};
use kubedrill::lab::accel::{self, HostVirt};
use kubedrill::lab::definition::{self, LabError, VmRole};
use kubedrill::lab::xml::{self, Boot, Instance, VmFiles};
use kubedrill::render::Templates;
use std::process::ExitCode;

/// `lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Resolve a lab definition: VMs, sizes, addresses, queues, accelerator; `--xml` prints the
    /// libvirt XML that `lab up` would define.
    Show(ShowArgs),
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
    }
}

fn show(a: ShowArgs, out: Output) -> anyhow::Result<ExitCode> {
    let path = definition::locate(&a.lab);
    let lab = match definition::load(&path) {
        Ok(l) => l,
        Err(LabError::Invalid(d)) => {
            super::print_diagnostics(&d);
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let host = HostVirt::probe();
    let choice = match accel::choose(lab.accel, host, lab.vms.len()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if out == Output::Json {
        print_json(&serde_json::json!({ "lab": lab, "accel": choice, "host": host }))?;
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}
