//! libvirt XML for a lab: one network and one domain per VM, each marked as kubedrill's.

use super::definition::{Lab, VmSpec};
use crate::render::{RenderError, Templates};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;
use std::path::Path;

/// XML namespace of kubedrill's domain metadata.
pub const NAMESPACE: &str = "https://kubedrill.dev/xmlns/lab/1";
/// Prefix of every libvirt object name kubedrill creates.
pub const PREFIX: &str = "kd-";

/// Identity of one creation of a lab: what ownership checks compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Instance {
    /// Lab name.
    pub lab: String,
    /// Creation time (RFC 3339, UTC).
    pub created: String,
    /// Random 128-bit id (hex), unique per `lab up`.
    pub id: String,
}

impl Instance {
    /// A new instance now.
    pub fn new(lab: &str) -> Self {
        Self {
            lab: lab.to_string(),
            created: now_rfc3339(),
            id: random_hex(16),
        }
    }
}

/// How a VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Boot {
    /// The image's own bootloader (cloud images).
    Disk,
    /// Direct kernel boot (images kubedrill builds).
    Direct {
        /// Kernel path on the hypervisor.
        kernel: String,
        /// Initrd path.
        initrd: String,
        /// Kernel command line.
        cmdline: String,
    },
}

/// Files of one VM on the hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    /// qcow2 overlay.
    pub disk: String,
    /// NoCloud seed ISO.
    pub seed: String,
    /// Serial console log.
    pub console_log: String,
}

impl VmFiles {
    /// The standard layout under the lab's directory.
    pub fn under(dir: &Path, vm: &str) -> Self {
        let p = |f: String| dir.join(f).display().to_string();
        Self {
            disk: p(format!("{vm}.qcow2")),
            seed: p(format!("{vm}-seed.iso")),
            console_log: p(format!("{vm}-console.log")),
        }
    }
}

/// libvirt name of the lab's network.
pub fn network_name(lab: &str) -> String {
    format!("{PREFIX}{lab}")
}

/// libvirt name of a VM's domain.
pub fn domain_name(lab: &str, vm: &str) -> String {
    format!("{PREFIX}{lab}-{vm}")
}

/// Bridge device name (≤ 15 characters, stable per lab).
pub fn bridge_name(lab: &str) -> String {
    format!("kd{}", &hex(&Sha256::digest(lab.as_bytes()))[..8])
}

/// Stable locally administered MAC in QEMU's 52:54:00 range.
pub fn mac(lab: &str, vm: &str) -> String {
    let h = Sha256::digest(format!("{lab}/{vm}").as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

#[derive(Serialize)]
struct DomainCtx<'a> {
    domain_type: &'a str,
    name: String,
    uuid: String,
    lab: &'a str,
    vm: &'a str,
    namespace: &'a str,
    created: &'a str,
    instance: &'a str,
    memory_mib: u64,
    vcpus: u32,
    boot: &'a Boot,
    disk: &'a str,
    seed: &'a str,
    console_log: &'a str,
    mac: String,
    network: String,
    queues: u32,
    xdp_offloads: bool,
    mtu: u32,
}

/// Domain XML for one VM.
#[allow(clippy::too_many_arguments)]
pub fn domain(
    t: &Templates,
    lab: &Lab,
    vm: &VmSpec,
    inst: &Instance,
    domain_type: &str,
    boot: &Boot,
    files: &VmFiles,
    uuid: &str,
) -> Result<String, RenderError> {
    t.render(
        "libvirt/domain.xml",
        &DomainCtx {
            domain_type,
            name: domain_name(&lab.name, &vm.name),
            uuid: uuid.to_string(),
            lab: &lab.name,
            vm: &vm.name,
            namespace: NAMESPACE,
            created: &inst.created,
            instance: &inst.id,
            memory_mib: vm.size.memory_mib,
            vcpus: vm.size.vcpus,
            boot,
            disk: &files.disk,
            seed: &files.seed,
            console_log: &files.console_log,
            mac: mac(&lab.name, &vm.name),
            network: network_name(&lab.name),
            queues: vm.queues,
            xdp_offloads: lab.nic.xdp_offloads,
            mtu: lab.nic.mtu,
        },
    )
}

#[derive(Serialize)]
struct NetHost {
    mac: String,
    name: String,
    ip: Ipv4Addr,
}

#[derive(Serialize)]
struct NetworkCtx {
    name: String,
    uuid: String,
    mode: &'static str,
    bridge: String,
    mtu: u32,
    gateway: Ipv4Addr,
    netmask: Ipv4Addr,
    dhcp_start: Ipv4Addr,
    dhcp_end: Ipv4Addr,
    hosts: Vec<NetHost>,
}

/// Network XML: the lab's bridge with fixed DHCP leases for every VM. `nat` gives guests a
/// way out (package mirrors); isolated keeps them on the bridge only.
pub fn network(t: &Templates, lab: &Lab, uuid: &str, nat: bool) -> Result<String, RenderError> {
    let base = u32::from(lab.cidr.network());
    let last = u32::from(lab.cidr.broadcast()) - 1;
    t.render(
        "libvirt/network.xml",
        &NetworkCtx {
            name: network_name(&lab.name),
            uuid: uuid.to_string(),
            mode: if nat { "nat" } else { "isolated" },
            bridge: bridge_name(&lab.name),
            mtu: lab.nic.mtu,
            gateway: lab.gateway(),
            netmask: lab.cidr.netmask(),
            dhcp_start: Ipv4Addr::from((base + 200).min(last)),
            dhcp_end: Ipv4Addr::from(last),
            hosts: lab
                .vms
                .iter()
                .map(|v| NetHost {
                    mac: mac(&lab.name, &v.name),
                    name: v.name.clone(),
                    ip: v.address,
                })
                .collect(),
        },
    )
}

/// Read kubedrill's mark from a domain's metadata element (as libvirt returns it).
pub fn parse_mark(metadata: &str) -> Option<Instance> {
    // libvirt hands the element back with or without our prefix.
    let get = |tag: &str| -> Option<String> {
        let open = [format!("<{tag}>"), format!(":{tag}>")]
            .iter()
            .find_map(|pat| metadata.find(pat.as_str()).map(|i| i + pat.len()))?;
        let rest = &metadata[open..];
        let close = rest.find("</")?;
        Some(unescape(&rest[..close]))
    };
    Some(Instance {
        lab: get("name")?,
        created: get("created")?,
        id: get("instance")?,
    })
}

/// Escape text for XML content or a quoted attribute.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A random RFC 4122 version-4 UUID.
pub fn random_uuid() -> String {
    let h = random_hex(16);
    let mut b: Vec<char> = h.chars().collect();
    b[12] = '4';
    b[16] = ['8', '9', 'a', 'b'][usize::from(b[16].to_digit(16).unwrap_or(0) as u8 & 3)];
    let s: String = b.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex(&v)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_round_trip() {
        let md = "<kubedrill:lab xmlns:kubedrill=\"https://kubedrill.dev/xmlns/lab/1\">\n  <kubedrill:name>a&amp;b</kubedrill:name>\n  <kubedrill:vm>cp1</kubedrill:vm>\n  <kubedrill:created>2026-11-22T01:00:00Z</kubedrill:created>\n  <kubedrill:instance>00ff</kubedrill:instance>\n</kubedrill:lab>";
        let m = parse_mark(md).expect("mark");
        assert_eq!(m.lab, "a&b");
        assert_eq!(m.id, "00ff");
        assert!(parse_mark("<other/>").is_none());
        let plain = "<lab>\n  <name>x</name>\n  <vm>cp1</vm>\n  <created>t</created>\n  <instance>ab</instance>\n</lab>";
        assert_eq!(parse_mark(plain).expect("unprefixed").id, "ab");
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(bridge_name("quickstart").len(), 10);
        assert_eq!(mac("l", "cp1"), mac("l", "cp1"));
        assert_ne!(mac("l", "cp1"), mac("l", "w1"));
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(now_rfc3339().len(), 20);
    }
}
