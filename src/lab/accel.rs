//! KVM or TCG: `/dev/kvm` alone is not enough (some machines expose it without hardware
//! virtualisation, e.g. `kvm_pvm`, where a stock guest kernel never finishes booting). KVM is
//! chosen only when the CPU advertises `vmx` or `svm` *and* `/dev/kvm` can be opened.

use super::definition::Accel;
use serde::Serialize;
use std::path::Path;

/// The accelerator a lab will use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccelChoice {
    /// libvirt domain type: `kvm` or `qemu` (TCG).
    pub domain_type: &'static str,
    /// Why, in one line (shown to the user).
    pub reason: String,
    /// A warning to print (TCG chosen automatically).
    pub warning: Option<String>,
}

/// What the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostVirt {
    /// `vmx` (Intel VT-x) or `svm` (AMD-V) in `/proc/cpuinfo`.
    pub cpu_flags: bool,
    /// `/dev/kvm` exists and opens read-write.
    pub dev_kvm: bool,
}

impl HostVirt {
    /// Probe this machine.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpu_flags: cpu_has_virt_flags(&cpuinfo),
            dev_kvm: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(Path::new("/dev/kvm"))
                .is_ok(),
        }
    }
}

/// `vmx` or `svm` on a `flags` line.
pub fn cpu_has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Decide, given the request and the host. `--accel kvm` on a host without it is an error.
pub fn choose(requested: Accel, host: HostVirt, vms: usize) -> Result<AccelChoice, String> {
    let usable = host.cpu_flags && host.dev_kvm;
    match requested {
        Accel::Kvm if usable => Ok(AccelChoice {
            domain_type: "kvm",
            reason: "KVM requested and available".into(),
            warning: None,
        }),
        Accel::Kvm => Err(format!(
            "--accel kvm: this host cannot run KVM guests ({}); use --accel tcg or auto",
            why_not(host)
        )),
        Accel::Tcg => Ok(AccelChoice {
            domain_type: "qemu",
            reason: "TCG requested".into(),
            warning: None,
        }),
        Accel::Auto if usable => Ok(AccelChoice {
            domain_type: "kvm",
            reason: "CPU has vmx/svm and /dev/kvm is usable".into(),
            warning: None,
        }),
        Accel::Auto => Ok(AccelChoice {
            domain_type: "qemu",
            reason: format!("no usable KVM ({})", why_not(host)),
            warning: Some(format!(
                "no hardware virtualisation ({}): using QEMU's TCG emulation. Guests run ~25× \
                 slower; expect about 70–110 s for one VM to answer SSH and {} s for {vms} \
                 booting together, instead of well under a minute with KVM",
                why_not(host),
                tcg_estimate_secs(vms)
            )),
        }),
    }
}

fn why_not(h: HostVirt) -> &'static str {
    match (h.cpu_flags, h.dev_kvm) {
        (false, true) => "/dev/kvm exists but the CPU shows no vmx/svm flag",
        (false, false) => "no vmx/svm CPU flag and no /dev/kvm",
        (true, false) => "/dev/kvm is missing or not accessible",
        (true, true) => "KVM is available",
    }
}

/// Rough SSH-ready time under TCG on a 2-core host (measured: 1 VM 67–112 s, 3 VMs 160–210 s).
pub fn tcg_estimate_secs(vms: usize) -> String {
    let lo = 70 + 45 * vms.saturating_sub(1);
    let hi = 115 + 50 * vms.saturating_sub(1);
    format!("{lo}–{hi}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVM: HostVirt = HostVirt {
        cpu_flags: false,
        dev_kvm: true,
    };
    const REAL: HostVirt = HostVirt {
        cpu_flags: true,
        dev_kvm: true,
    };

    #[test]
    fn dev_kvm_without_flags_means_tcg() {
        let c = choose(Accel::Auto, PVM, 2).expect("auto");
        assert_eq!(c.domain_type, "qemu");
        let w = c.warning.expect("warned");
        assert!(w.contains("no vmx/svm") && w.contains("TCG"), "{w}");
        assert!(choose(Accel::Kvm, PVM, 2).is_err());
        assert_eq!(
            choose(Accel::Auto, REAL, 2).expect("kvm").domain_type,
            "kvm"
        );
        assert_eq!(
            choose(Accel::Tcg, REAL, 2).expect("tcg").domain_type,
            "qemu"
        );
    }

    #[test]
    fn flags() {
        assert!(cpu_has_virt_flags("flags\t\t: fpu vme de vmx sse\n"));
        assert!(cpu_has_virt_flags("processor: 0\nflags : svm lm\n"));
        assert!(!cpu_has_virt_flags(
            "flags : fpu hypervisor\nvmx flags : ept\n"
        ));
    }

    #[test]
    fn this_machine_is_probed_without_panicking() {
        let h = HostVirt::probe();
        let c = choose(Accel::Auto, h, 1).expect("auto never fails");
        assert!(c.domain_type == "kvm" || c.warning.is_some());
    }
}
