//! Lab definitions (`labs/*.yaml`): which inventory the lab mirrors, VM sizes per group, image,
//! hypervisor, network and NIC settings.

use crate::diag::{Diagnostic, Diagnostics, Origin};
use crate::inventory::{self, Inventory, NodeRole};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default hypervisor URI.
pub const DEFAULT_URI: &str = "qemu:///system";
/// Default lab network.
pub const DEFAULT_CIDR: &str = "192.168.150.0/24";
/// First host number given to lab VMs inside the network (.1 is the host side).
pub const FIRST_HOST: u32 = 11;

/// Hardware acceleration choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when the CPU really supports it, else TCG with a warning.
    #[default]
    Auto,
    /// Hardware virtualisation (`<domain type='kvm'>`).
    Kvm,
    /// QEMU's software emulation (`<domain type='qemu'>`), slow but works everywhere.
    Tcg,
}

/// VM size; every field optional so groups can override the defaults field by field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSpec {
    /// Virtual CPUs.
    pub vcpus: Option<u32>,
    /// Memory, MiB.
    pub memory_mib: Option<u64>,
    /// Disk, GiB (the overlay's virtual size).
    pub disk_gib: Option<u64>,
}

/// A fully resolved VM size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size {
    /// Virtual CPUs (1–64).
    pub vcpus: u32,
    /// Memory, MiB (≥ 512).
    pub memory_mib: u64,
    /// Disk, GiB (≥ 4).
    pub disk_gib: u64,
}

impl Size {
    /// 2 vCPU, 2 GiB, 20 GiB disk.
    pub const DEFAULT: Size = Size {
        vcpus: 2,
        memory_mib: 2048,
        disk_gib: 20,
    };

    fn overlay(self, s: &SizeSpec) -> Size {
        Size {
            vcpus: s.vcpus.unwrap_or(self.vcpus),
            memory_mib: s.memory_mib.unwrap_or(self.memory_mib),
            disk_gib: s.disk_gib.unwrap_or(self.disk_gib),
        }
    }
}

/// NIC queue setting: `auto` (2 × vCPU, what native XDP on virtio_net needs) or a count
/// (1 reproduces libvirt's default single-queue NIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Queues {
    /// 2 × vCPU.
    #[default]
    Auto,
    /// A fixed count.
    Fixed(u32),
}

impl Serialize for Queues {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Queues::Auto => s.serialize_str("auto"),
            Queues::Fixed(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Queues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Queues::Fixed(n)),
            Raw::Text(t) if t == "auto" => Ok(Queues::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "queues: expected `auto` or a number, found `{t}`"
            ))),
        }
    }
}

/// NIC settings for every VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// virtio-net queue pairs.
    #[serde(default)]
    pub queues: Queues,
    /// Turn off the host/guest offloads that keep native XDP from attaching (see cilium.md).
    #[serde(default = "yes")]
    pub xdp_offloads: bool,
    /// MTU of the lab network.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

fn yes() -> bool {
    true
}
fn default_mtu() -> u32 {
    1500
}

impl Default for NicSpec {
    fn default() -> Self {
        Self {
            queues: Queues::Auto,
            xdp_offloads: true,
            mtu: 1500,
        }
    }
}

/// One explicitly listed VM (labs that do not mirror an inventory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Host (and VM) name.
    pub name: String,
    /// `control-plane`, `control-plane+worker` or `worker`.
    pub role: String,
    /// Per-VM size override.
    #[serde(default)]
    pub size: SizeSpec,
    /// Per-VM NIC queue override (e.g. 1, to rehearse a NIC that cannot do native XDP).
    #[serde(default)]
    pub queues: Option<Queues>,
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    name: String,
    #[serde(default)]
    mirrors: Option<PathBuf>,
    #[serde(default)]
    hosts: Vec<HostSpec>,
    #[serde(default = "default_image")]
    image: String,
    #[serde(default)]
    hypervisor: Option<String>,
    #[serde(default)]
    accel: Accel,
    #[serde(default)]
    network: Option<RawNetwork>,
    #[serde(default)]
    nic: NicSpec,
    #[serde(default)]
    sizing: RawSizing,
    #[serde(default)]
    kubernetes_version: Option<String>,
    #[serde(default)]
    cilium_version: Option<String>,
    #[serde(default)]
    drill: Option<serde::de::IgnoredAny>,
}

fn default_image() -> String {
    "debian-12".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    cidr: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSizing {
    #[serde(default)]
    defaults: SizeSpec,
    #[serde(default)]
    kube_control_plane: SizeSpec,
    #[serde(default)]
    kube_node: SizeSpec,
}

/// What a VM is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmRole {
    /// Control plane.
    ControlPlane {
        /// Also runs workloads.
        also_worker: bool,
    },
    /// Worker.
    Worker,
}

/// One VM of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmSpec {
    /// Host name (same as production when mirroring).
    pub name: String,
    /// Role.
    pub role: VmRole,
    /// In the etcd group.
    pub etcd: bool,
    /// Size.
    pub size: Size,
    /// virtio-net queue pairs.
    pub queues: u32,
    /// Lab address.
    pub address: Ipv4Addr,
}

/// A validated lab.
#[derive(Debug, Clone, Serialize)]
pub struct Lab {
    /// The definition file.
    pub path: PathBuf,
    /// Lab name (a DNS label; prefixes every libvirt object).
    pub name: String,
    /// The production inventory it mirrors, if any.
    pub mirrors: Option<PathBuf>,
    /// Base image name (`kubedrill image ls`).
    pub image: String,
    /// libvirt URI.
    pub uri: String,
    /// Acceleration choice.
    pub accel: Accel,
    /// Lab network; VMs get .11, .12, … in declaration order.
    pub cidr: Ipv4Net,
    /// NIC settings.
    pub nic: NicSpec,
    /// VMs, control planes first.
    pub vms: Vec<VmSpec>,
    /// Kubernetes version for a lab that does not mirror an inventory.
    pub kubernetes_version: Option<String>,
    /// Cilium version for a lab that does not mirror an inventory.
    pub cilium_version: Option<String>,
    /// The `drill:` section, if the file has one: the upgrade rehearsed on this lab, read by
    /// [`crate::drill::definition::of_lab`] (the lab keeps it unread, so that `lab` does not
    /// depend on `drill`).
    pub drill: Option<DrillSection>,
}

/// A lab file's `drill:` section, unread.
#[derive(Debug, Clone, Serialize)]
pub struct DrillSection {
    /// The whole lab file (the section's findings name its lines).
    #[serde(skip)]
    pub text: Arc<str>,
    /// The line of the `drill:` key.
    pub line: Option<u32>,
}

impl Lab {
    /// Total guest memory, MiB.
    pub fn memory_mib(&self) -> u64 {
        // Bounded by validation (≤ 256 VMs × 1 TiB), saturating all the same.
        self.vms
            .iter()
            .fold(0u64, |a, v| a.saturating_add(v.size.memory_mib))
    }

    /// The host side of the lab network (its first address).
    pub fn gateway(&self) -> Ipv4Addr {
        let n = u32::from(self.cidr.network());
        Ipv4Addr::from(n + 1)
    }
}

/// Why a lab file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Read failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Findings with file, line and field.
    #[error("invalid lab definition:\n{0}")]
    Invalid(Diagnostics),
}

/// The largest lab file read: a lab is a page of YAML a person wrote.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The most VMs one lab may define.
pub const MAX_VMS: usize = 256;

/// Per-VM upper bounds: 1 TiB of memory, 64 TiB of disk.
pub const MAX_MEMORY_MIB: u64 = 1024 * 1024;
/// See [`MAX_MEMORY_MIB`].
pub const MAX_DISK_GIB: u64 = 64 * 1024;

/// Find a lab: a path to a file, or a name under `labs/` (`quickstart` → `labs/quickstart.yaml`).
pub fn locate(arg: &str) -> PathBuf {
    let p = PathBuf::from(arg);
    if p.exists() || arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml") {
        return p;
    }
    PathBuf::from("labs").join(format!("{arg}.yaml"))
}

/// Read and validate a lab definition (and the inventory it mirrors).
pub fn load(path: &Path) -> Result<Lab, LabError> {
    let text =
        crate::files::read_text_bounded(path, MAX_FILE_BYTES).map_err(|source| LabError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    parse(path, &text)
}

fn err(file: &Arc<PathBuf>, line: Option<u32>, field: &str, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(msg)
        .at(&Origin::at(file, line))
        .field(field)
}

/// Validate lab text (the path is for messages and for resolving `mirrors`).
pub fn parse(path: &Path, text: &str) -> Result<Lab, LabError> {
    let file = Arc::new(path.to_path_buf());
    let raw: RawLab = serde_saphyr::from_str(text).map_err(|e| {
        let line = e
            .location()
            .and_then(|l| u32::try_from(l.line()).ok())
            .filter(|l| *l > 0);
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid YAML").to_owned();
        let mut d = Diagnostics::default();
        d.push(
            Diagnostic::error(first.trim_start_matches("error: ").to_owned())
                .at(&Origin::at(&file, line)),
        );
        LabError::Invalid(d)
    })?;
    let line_of = |key: &str| -> Option<u32> {
        text.lines()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")))
            .and_then(|i| u32::try_from(i + 1).ok())
    };
    let mut d = Diagnostics::default();

    if !is_dns_label(&raw.name) || raw.name.len() > 40 {
        d.push(
            err(
                &file,
                line_of("name"),
                "name",
                format!("`{}` is not a valid lab name", raw.name),
            )
            .hint("use lowercase letters, digits and '-', at most 40 characters"),
        );
    }
    let cidr_text = raw
        .network
        .as_ref()
        .and_then(|n| n.cidr.clone())
        .unwrap_or_else(|| DEFAULT_CIDR.to_string());
    let cidr = match cidr_text.parse::<Ipv4Net>() {
        Ok(c) if c.prefix_len() <= 28 => c.trunc(),
        Ok(_) => {
            d.push(err(
                &file,
                line_of("cidr"),
                "network.cidr",
                "the lab network needs at least a /28",
            ));
            DEFAULT_CIDR.parse().unwrap_or_default()
        }
        Err(_) => {
            d.push(err(
                &file,
                line_of("cidr"),
                "network.cidr",
                format!("`{cidr_text}` is not an IPv4 CIDR"),
            ));
            DEFAULT_CIDR.parse().unwrap_or_default()
        }
    };
    let uri = raw
        .hypervisor
        .clone()
        .unwrap_or_else(|| DEFAULT_URI.to_string());
    if !uri.contains("://") {
        d.push(
            err(
                &file,
                line_of("hypervisor"),
                "hypervisor",
                format!("`{uri}` is not a libvirt URI"),
            )
            .hint("e.g. qemu:///system or qemu+ssh://user@host/system"),
        );
    }
    if let Queues::Fixed(q) = raw.nic.queues
        && !(1..=256).contains(&q)
    {
        d.push(err(
            &file,
            line_of("queues"),
            "nic.queues",
            "queues must be 1–256 or `auto`",
        ));
    }
    if !(576..=65_000).contains(&raw.nic.mtu) {
        d.push(err(
            &file,
            line_of("mtu"),
            "nic.mtu",
            "MTU must be 576–65000",
        ));
    }

    let base = Size::DEFAULT.overlay(&raw.sizing.defaults);
    let cp_size = base.overlay(&raw.sizing.kube_control_plane);
    let worker_size = base.overlay(&raw.sizing.kube_node);

    // Hosts: from the mirrored inventory, or listed.
    let mut hosts: Vec<(String, VmRole, bool, SizeSpec, Option<Queues>)> = Vec::new();
    let mirrors = raw.mirrors.as_ref().map(|m| {
        if m.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(m)
        } else {
            m.clone()
        }
    });
    match (&mirrors, raw.hosts.is_empty()) {
        (Some(_), false) => d.push(err(
            &file,
            line_of("hosts"),
            "hosts",
            "a lab either mirrors an inventory or lists hosts, not both",
        )),
        (None, true) => d.push(
            err(&file, None, "hosts", "the lab has no hosts")
                .hint("set `mirrors: path/to/inventory` or list `hosts:`"),
        ),
        (Some(inv_path), true) => match inventory::load(inv_path) {
            Ok(inv) => hosts.extend(mirror_hosts(&inv)),
            Err(e) => d.push(err(
                &file,
                line_of("mirrors"),
                "mirrors",
                format!("cannot use {}: {e}", inv_path.display()),
            )),
        },
        (None, false) => {
            for h in &raw.hosts {
                let role = match h.role.as_str() {
                    "control-plane" => VmRole::ControlPlane { also_worker: false },
                    "control-plane+worker" => VmRole::ControlPlane { also_worker: true },
                    "worker" => VmRole::Worker,
                    other => {
                        d.push(err(
                            &file,
                            line_of("role"),
                            &format!("hosts.{}.role", h.name),
                            format!("unknown role `{other}`: use control-plane, control-plane+worker or worker"),
                        ));
                        continue;
                    }
                };
                let etcd = matches!(role, VmRole::ControlPlane { .. });
                hosts.push((h.name.clone(), role, etcd, h.size, h.queues));
            }
        }
    }

    let mut vms = Vec::new();
    let capacity = cidr.hosts().count() as u32;
    for (i, (name, role, etcd, size_spec, queues)) in hosts.into_iter().enumerate() {
        if !is_dns_label(&name) {
            d.push(err(
                &file,
                None,
                "hosts",
                format!("`{name}` cannot be a VM name (RFC 1123 label)"),
            ));
            continue;
        }
        if vms.iter().any(|v: &VmSpec| v.name == name) {
            d.push(err(
                &file,
                None,
                "hosts",
                format!("host `{name}` is listed twice"),
            ));
            continue;
        }
        let group_size = match role {
            VmRole::ControlPlane { .. } => cp_size,
            VmRole::Worker => worker_size,
        };
        let size = group_size.overlay(&size_spec);
        if !(1..=64).contains(&size.vcpus)
            || !(512..=MAX_MEMORY_MIB).contains(&size.memory_mib)
            || !(4..=MAX_DISK_GIB).contains(&size.disk_gib)
        {
            d.push(err(
                &file,
                None,
                &format!("sizing ({name})"),
                format!(
                    "{name}: {} vCPU, {} MiB, {} GiB is out of range (1–64 vCPU, 512–{MAX_MEMORY_MIB} MiB, 4–{MAX_DISK_GIB} GiB)",
                    size.vcpus, size.memory_mib, size.disk_gib
                ),
            ));
            continue;
        }
        if vms.len() >= MAX_VMS {
            d.push(err(
                &file,
                line_of("hosts"),
                "hosts",
                format!("more than {MAX_VMS} VMs; a lab holds at most {MAX_VMS}"),
            ));
            break;
        }
        let offset = FIRST_HOST + i as u32;
        if offset + 1 >= capacity {
            d.push(err(
                &file,
                line_of("cidr"),
                "network.cidr",
                format!("{cidr} is too small for the lab's hosts"),
            ));
            break;
        }
        let queues = match queues.unwrap_or(raw.nic.queues) {
            Queues::Auto => size.vcpus * 2,
            Queues::Fixed(q) => q,
        };
        vms.push(VmSpec {
            name,
            role,
            etcd,
            size,
            queues,
            address: Ipv4Addr::from(u32::from(cidr.network()) + offset),
        });
    }
    if !vms
        .iter()
        .any(|v| matches!(v.role, VmRole::ControlPlane { .. }))
        && !d.has_errors()
    {
        d.push(err(
            &file,
            None,
            "hosts",
            "the lab needs at least one control plane",
        ));
    }
    // The drill section is the drill module's to read ([`crate::drill::definition::of_lab`]).
    let drill = raw.drill.as_ref().map(|_| DrillSection {
        text: Arc::from(text),
        line: line_of("drill"),
    });
    if d.has_errors() {
        return Err(LabError::Invalid(d));
    }
    Ok(Lab {
        path: path.to_path_buf(),
        name: raw.name,
        mirrors,
        image: raw.image,
        uri,
        accel: raw.accel,
        cidr,
        nic: raw.nic,
        vms,
        kubernetes_version: raw.kubernetes_version,
        cilium_version: raw.cilium_version,
        drill,
    })
}

/// Same names, roles and order as production (control planes first).
fn mirror_hosts(inv: &Inventory) -> Vec<(String, VmRole, bool, SizeSpec, Option<Queues>)> {
    let mut out: Vec<_> = inv
        .hosts
        .iter()
        .map(|h| {
            let role = match h.role {
                NodeRole::ControlPlane { also_worker } => VmRole::ControlPlane { also_worker },
                NodeRole::Worker => VmRole::Worker,
            };
            (h.name.clone(), role, h.etcd, SizeSpec::default(), None)
        })
        .collect();
    out.sort_by_key(|(_, r, ..)| matches!(r, VmRole::Worker));
    out
}

/// RFC 1123 label: lowercase letters, digits, '-', not at either end, 1–63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_hosts() {
        let lab = parse(
            Path::new("labs/t.yaml"),
            "name: t\nhosts:\n  - {name: cp1, role: control-plane}\n  - {name: w1, role: worker, queues: 1}\nsizing:\n  kube_node: {memory_mib: 1024}\n",
        )
        .expect("valid");
        assert_eq!(lab.vms.len(), 2);
        assert_eq!(lab.vms[0].address, Ipv4Addr::new(192, 168, 150, 11));
        assert_eq!(lab.vms[0].queues, 4);
        assert_eq!(lab.vms[1].queues, 1);
        assert_eq!(lab.vms[1].size.memory_mib, 1024);
        assert_eq!(lab.memory_mib(), 3072);
        assert_eq!(lab.gateway(), Ipv4Addr::new(192, 168, 150, 1));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(
            Path::new("labs/bad.yaml"),
            "name: Bad_Name\nnetwork:\n  cidr: 10.0.0.0/30\nhosts:\n  - {name: cp1, role: boss}\n",
        )
        .expect_err("invalid");
        let LabError::Invalid(d) = e else {
            panic!("expected diagnostics")
        };
        let text: Vec<String> = d.0.iter().map(|x| x.to_string()).collect();
        let all = text.join("\n");
        assert!(all.contains("labs/bad.yaml:1"), "{all}");
        assert!(all.contains("network.cidr"), "{all}");
        assert!(all.contains("unknown role `boss`"), "{all}");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let e = parse(Path::new("l.yaml"), "name: a\nhosts: []\nvcpu: 2\n").expect_err("bad");
        assert!(e.to_string().contains("l.yaml:3"), "{e}");
    }
}
