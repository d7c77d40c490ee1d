//! Facts about one node, gathered by one batched remote script ([`GATHER_SCRIPT`], run as
//! `sh -s` over SSH) and parsed from its output with [`parse`].
//!
//! The output format (version 1) is line based: a header `kubedrill-facts 1`, then `@@section`
//! headers (`@@nic NAME` carries the NIC name) followed by `key=value` lines split at the first
//! `=`, and `@@end` last. `finding=TEXT` may appear in any section. Unknown sections and keys are
//! ignored so that a newer script can talk to an older kubedrill.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// The POSIX `sh` script that prints a node's facts; send it on stdin of `sh -s`.
pub const GATHER_SCRIPT: &str = include_str!("gather.sh");

/// The output format version [`GATHER_SCRIPT`] prints and [`parse`] reads.
pub const FORMAT_VERSION: u32 = 1;

const HEADER: &str = "kubedrill-facts";

/// Output that is not facts at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FactsError {
    /// No `kubedrill-facts N` line.
    #[error(
        "not kubedrill facts output: no `{HEADER} {FORMAT_VERSION}` header line; received {received:?}"
    )]
    MissingHeader {
        /// The start of what was received.
        received: String,
    },
    /// A header with a version this kubedrill cannot read.
    #[error(
        "facts format {found:?} is not supported (this kubedrill reads format {FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version text after the header word.
        found: String,
    },
}

/// Everything kubedrill knows about one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Operating system.
    pub os: OsInfo,
    /// Running kernel.
    pub kernel: KernelInfo,
    /// The Cilium-relevant options of the kernel config.
    pub kernel_config: KernelConfig,
    /// Cilium-relevant kernel modules.
    pub modules: Modules,
    /// cgroup hierarchy mounted on `/sys/fs/cgroup`.
    pub cgroup: CgroupVersion,
    /// Swap, when `/proc/swaps` was readable.
    pub swap: Option<Swap>,
    /// Online CPUs.
    pub cpus: Option<u32>,
    /// `MemTotal` in KiB.
    pub mem_total_kib: Option<u64>,
    /// Interface of the IPv4 default route.
    pub default_route_iface: Option<String>,
    /// Network interfaces except `lo`, in the order the node listed them.
    pub nics: Vec<Nic>,
    /// Tools the probes depend on.
    pub tools: Tools,
    /// Runtime and Kubernetes binaries found on `PATH`, with the first line of their version.
    pub binaries: BTreeMap<String, Option<String>>,
    /// Time synchronisation.
    pub time_sync: TimeSync,
    /// What could not be read or made sense of.
    pub findings: Vec<String>,
}

/// `/etc/os-release`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// `ID`, e.g. `debian`, `rhel`.
    pub id: String,
    /// `VERSION_ID`, e.g. `12`, `8.10`.
    pub version_id: String,
    /// `ID_LIKE`, space separated.
    pub id_like: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
    /// Distribution family derived from `ID` and `ID_LIKE`.
    pub family: OsFamily,
}

/// Distribution family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Debian, Ubuntu and derivatives.
    Debian,
    /// RHEL, CentOS, Rocky, Alma, Oracle Linux, Fedora.
    Rhel,
    /// SLES, openSUSE.
    Suse,
    /// Anything else, or unknown.
    #[default]
    Other,
}

impl OsFamily {
    /// The family of an `ID` plus `ID_LIKE`.
    pub fn classify(id: &str, id_like: &str) -> Self {
        let words = std::iter::once(id).chain(id_like.split_whitespace());
        for w in words {
            match w.to_ascii_lowercase().as_str() {
                "debian" | "ubuntu" => return OsFamily::Debian,
                "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" => {
                    return OsFamily::Rhel;
                }
                w if w == "suse" || w == "sles" || w.starts_with("opensuse") => {
                    return OsFamily::Suse;
                }
                _ => {}
            }
        }
        OsFamily::Other
    }
}

impl OsInfo {
    /// `(major, minor)` of a RHEL-family `VERSION_ID` like `8.6`.
    pub fn rhel_release(&self) -> Option<(u32, u32)> {
        if self.family != OsFamily::Rhel {
            return None;
        }
        let (a, b) = self.version_id.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// `major.minor.patch` of a kernel release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KernelVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (sublevel); 0 when the release has none.
    pub patch: u32,
}

impl KernelVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// The numeric prefix of a `uname -r` release, e.g. `4.18.0-553.el8_10.x86_64` → 4.18.0.
    pub fn parse_release(release: &str) -> Option<Self> {
        let end = release
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(release.len());
        let mut parts = release[..end].split('.');
        let num = |p: Option<&str>| p.filter(|p| !p.is_empty()).and_then(|p| p.parse().ok());
        let major = num(parts.next())?;
        let minor = num(parts.next())?;
        let patch = match parts.next() {
            None | Some("") => 0,
            Some(p) => p.parse().ok()?,
        };
        Some(KernelVersion::new(major, minor, patch))
    }
}

impl From<(u32, u32, u32)> for KernelVersion {
    fn from((a, b, c): (u32, u32, u32)) -> Self {
        KernelVersion::new(a, b, c)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The running kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// Parsed from the release, when it starts with `major.minor`.
    pub version: Option<KernelVersion>,
    /// `uname -m`.
    pub arch: String,
}

/// Where the kernel config was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KconfigSource {
    /// `/proc/config.gz` (`CONFIG_IKCONFIG_PROC`).
    ProcConfigGz,
    /// A file such as `/boot/config-$(uname -r)`.
    File {
        /// Its path.
        path: String,
    },
}

impl fmt::Display for KconfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KconfigSource::ProcConfigGz => f.write_str("/proc/config.gz"),
            KconfigSource::File { path } => f.write_str(path),
        }
    }
}

/// One kernel config option's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KconfigValue {
    /// `=y`.
    BuiltIn,
    /// `=m`.
    Module,
    /// Any other value (numbers, strings).
    Other(String),
    /// `# CONFIG_X is not set`.
    NotSet,
}

impl fmt::Display for KconfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KconfigValue::BuiltIn => f.write_str("y"),
            KconfigValue::Module => f.write_str("m"),
            KconfigValue::Other(s) => f.write_str(s),
            KconfigValue::NotSet => f.write_str("not set"),
        }
    }
}

/// The Cilium-relevant options of the kernel config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConfig {
    /// Where it was read from; `None` when no config was readable (and `options` is empty).
    pub source: Option<KconfigSource>,
    /// Option name (with `CONFIG_`) → value.
    pub options: BTreeMap<String, KconfigValue>,
}

impl KernelConfig {
    /// An option's value. With a readable config, an option the config omits is not set
    /// (Kconfig leaves out options whose dependencies are off); without one, `None`.
    pub fn get(&self, name: &str) -> Option<&KconfigValue> {
        self.source.as_ref()?;
        Some(self.options.get(name).unwrap_or(&KconfigValue::NotSet))
    }
}

/// Kernel modules relevant to Cilium (names with `_`, as in `/proc/modules`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modules {
    /// Loaded now; `None` when `/proc/modules` was not readable.
    pub loaded: Option<BTreeSet<String>>,
    /// Installed for the running kernel; `None` when that could not be checked.
    pub available: Option<BTreeSet<String>>,
}

impl Modules {
    /// Whether a module is loaded or installed; `None` when neither list is known.
    pub fn loadable(&self, name: &str) -> Option<bool> {
        let name = name.replace('-', "_");
        let loaded = self.loaded.as_ref().map(|s| s.contains(&name));
        let available = self.available.as_ref().map(|s| s.contains(&name));
        match (loaded, available) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (_, Some(false)) => Some(false),
            _ => None,
        }
    }
}

/// cgroup hierarchy on `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// cgroup v1 only.
    V1,
    /// Unified cgroup v2.
    V2,
    /// v1 controllers with a v2 hierarchy on `/sys/fs/cgroup/unified`.
    Hybrid,
    /// Not determined.
    #[default]
    Unknown,
}

/// Active swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    /// Swap devices and files in use.
    pub devices: u32,
    /// Their total size in KiB.
    pub total_kib: u64,
}

impl Swap {
    /// True when any swap is in use (kubelet refuses to start by default).
    pub fn active(&self) -> bool {
        self.devices > 0
    }
}

/// Where queue counts came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueSource {
    /// `ethtool -l`: current and maximum combined channels.
    Ethtool,
    /// `/sys/class/net/X/queues`: current RX/TX queues, maximum unknown.
    Sysfs,
    /// Nothing readable.
    #[default]
    Unknown,
}

/// A NIC's queues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queues {
    /// Current combined channels (`ethtool -l`).
    pub current_combined: Option<u32>,
    /// Maximum combined channels (`ethtool -l`).
    pub max_combined: Option<u32>,
    /// RX queues in sysfs.
    pub rx: Option<u32>,
    /// TX queues in sysfs.
    pub tx: Option<u32>,
    /// Where the combined counts came from.
    pub source: QueueSource,
}

/// One `ethtool -k` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offload {
    /// Enabled.
    pub on: bool,
    /// `[fixed]`: cannot be changed from the guest.
    pub fixed: bool,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Kernel driver (`virtio_net`, `mlx5_core`, `veth`…), when known.
    pub driver: Option<String>,
    /// No backing device (veth, bridge, tunnel, ifb…).
    #[serde(rename = "virtual")]
    pub virtual_: bool,
    /// MTU.
    pub mtu: Option<u32>,
    /// `operstate` (`up`, `down`, `unknown`…).
    pub operstate: Option<String>,
    /// MAC address.
    pub mac: Option<String>,
    /// Queue counts.
    pub queues: Queues,
    /// `ethtool -k` features kubedrill looks at; empty without ethtool.
    pub offloads: BTreeMap<String, Offload>,
    /// XDP attach mode (`xdp`, `xdpgeneric`, `xdpdrv`…) when a program is attached.
    pub xdp: Option<String>,
    /// IPv4 addresses.
    pub addresses: Vec<Ipv4Net>,
}

impl Nic {
    fn new(name: &str) -> Self {
        Nic {
            name: name.to_owned(),
            driver: None,
            virtual_: false,
            mtu: None,
            operstate: None,
            mac: None,
            queues: Queues::default(),
            offloads: BTreeMap::new(),
            xdp: None,
            addresses: Vec::new(),
        }
    }

    /// True when an XDP program is attached.
    pub fn xdp_attached(&self) -> bool {
        self.xdp.is_some()
    }

    /// An `ethtool -k` feature.
    pub fn offload(&self, name: &str) -> Option<Offload> {
        self.offloads.get(name).copied()
    }
}

/// Tools the probes depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tools {
    /// `ethtool` is installed (queue maxima and offloads are known).
    pub ethtool: bool,
    /// `ip` is installed (addresses, routes and XDP attachment are known).
    pub iproute2: bool,
}

/// Time synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSync {
    /// Running daemon: `chronyd`, `systemd-timesyncd`, `ntpd`, `openntpd`.
    pub service: Option<String>,
    /// `timedatectl`'s `NTPSynchronized`, when available.
    pub synchronized: Option<bool>,
}

impl Facts {
    /// A NIC by name.
    pub fn nic(&self, name: &str) -> Option<&Nic> {
        self.nics.iter().find(|n| n.name == name)
    }

    /// The NIC of the default route.
    pub fn default_nic(&self) -> Option<&Nic> {
        self.default_route_iface
            .as_deref()
            .and_then(|name| self.nic(name))
    }

    /// True when a binary was found on `PATH`.
    pub fn has_binary(&self, name: &str) -> bool {
        self.binaries.contains_key(name)
    }
}

/// Longest prefix of unexpected input quoted in errors.
const QUOTE_MAX: usize = 80;

fn quote_prefix(s: &str) -> String {
    let mut out: String = s.chars().take(QUOTE_MAX).collect();
    if s.chars().count() > QUOTE_MAX {
        out.push('…');
    }
    out
}

/// Strip shell-style quotes from an os-release value.
fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.replace("\\\"", "\"").replace("\\\\", "\\");
        }
    }
    v.to_owned()
}

/// Parse the output of [`GATHER_SCRIPT`]. Lines before the header (a login banner) are
/// skipped with a finding; unknown sections and keys are ignored; unreadable values become
/// findings. Only output without a header, or with another format version, is an error.
pub fn parse(stdout: &str) -> Result<Facts, FactsError> {
    let mut lines = stdout.lines().map(|l| l.trim_end_matches('\r'));
    let mut skipped = 0usize;
    let version = loop {
        match lines.next() {
            Some(l) => match l.trim().strip_prefix(HEADER) {
                Some(rest) if rest.is_empty() || rest.starts_with(' ') => break rest.trim(),
                _ => skipped += 1,
            },
            None => {
                return Err(FactsError::MissingHeader {
                    received: quote_prefix(stdout.trim_start()),
                });
            }
        }
    };
    if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        return Err(FactsError::UnsupportedVersion {
            found: quote_prefix(version),
        });
    }
    let mut p = Parser::default();
    if skipped > 0 {
        p.findings
            .push(format!("{skipped} line(s) before the facts header ignored"));
    }
    for line in lines {
        p.line(line);
    }
    Ok(p.finish())
}

#[derive(Default)]
enum Section {
    #[default]
    None,
    Os,
    Kernel,
    Kconfig,
    Modules,
    System,
    Nic(usize),
    Links,
    Binaries,
    TimeSync,
    End,
    Unknown,
}

#[derive(Default)]
struct Parser {
    section: Section,
    os: OsInfo,
    kernel: KernelInfo,
    kconfig: KernelConfig,
    loaded: Option<BTreeSet<String>>,
    available: Option<BTreeSet<String>>,
    cgroup: CgroupVersion,
    swap_devices: Option<u32>,
    swap_total: Option<u64>,
    cpus: Option<u32>,
    mem: Option<u64>,
    default_iface: Option<String>,
    nics: Vec<Nic>,
    xdp: Vec<(String, String)>,
    addrs: Vec<(String, Ipv4Net)>,
    tools: Tools,
    binaries: BTreeMap<String, Option<String>>,
    time_sync: TimeSync,
    findings: Vec<String>,
    ended: bool,
}

impl Parser {
    fn number<T: std::str::FromStr>(&mut self, key: &str, v: &str) -> Option<T> {
        match v.trim().parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.findings
                    .push(format!("{key}: unreadable number {:?}", quote_prefix(v)));
                None
            }
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(h) = line.strip_prefix("@@") {
            let (name, arg) = h.split_once(' ').unwrap_or((h, ""));
            self.section = match name.trim() {
                "os" => Section::Os,
                "kernel" => Section::Kernel,
                "kconfig" => Section::Kconfig,
                "modules" => Section::Modules,
                "system" => Section::System,
                "links" => Section::Links,
                "binaries" => Section::Binaries,
                "timesync" => Section::TimeSync,
                "end" => {
                    self.ended = true;
                    Section::End
                }
                "nic" if !arg.trim().is_empty() => {
                    self.nics.push(Nic::new(arg.trim()));
                    Section::Nic(self.nics.len() - 1)
                }
                _ => Section::Unknown,
            };
            return;
        }
        if matches!(self.section, Section::Kconfig)
            && let Some(name) = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
        {
            if name.starts_with("CONFIG_") {
                self.kconfig
                    .options
                    .insert(name.to_owned(), KconfigValue::NotSet);
            }
            return;
        }
        let Some((key, value)) = line.split_once('=') else {
            return;
        };
        if key == "finding" {
            self.findings.push(value.to_owned());
            return;
        }
        match self.section {
            Section::Os => match key {
                "ID" => self.os.id = unquote(value),
                "VERSION_ID" => self.os.version_id = unquote(value),
                "ID_LIKE" => self.os.id_like = unquote(value),
                "PRETTY_NAME" => self.os.pretty_name = unquote(value),
                _ => {}
            },
            Section::Kernel => match key {
                "release" => self.kernel.release = value.trim().to_owned(),
                "arch" => self.kernel.arch = value.trim().to_owned(),
                _ => {}
            },
            Section::Kconfig => match key {
                "source" => {
                    self.kconfig.source = match value {
                        "none" | "" => None,
                        "/proc/config.gz" => Some(KconfigSource::ProcConfigGz),
                        path => Some(KconfigSource::File {
                            path: path.to_owned(),
                        }),
                    }
                }
                k if k.starts_with("CONFIG_") => {
                    let v = match value {
                        "y" => KconfigValue::BuiltIn,
                        "m" => KconfigValue::Module,
                        "n" => KconfigValue::NotSet,
                        other => KconfigValue::Other(other.to_owned()),
                    };
                    self.kconfig.options.insert(k.to_owned(), v);
                }
                _ => {}
            },
            Section::Modules => match key {
                "loaded_source" => {
                    self.loaded.get_or_insert_with(BTreeSet::new);
                }
                "loaded" => {
                    self.loaded
                        .get_or_insert_with(BTreeSet::new)
                        .insert(value.trim().replace('-', "_"));
                }
                "available_source" if value != "none" => {
                    self.available.get_or_insert_with(BTreeSet::new);
                }
                "available" => {
                    self.available
                        .get_or_insert_with(BTreeSet::new)
                        .insert(value.trim().replace('-', "_"));
                }
                _ => {}
            },
            Section::System => match key {
                "cgroup" => {
                    self.cgroup = match value {
                        "v1" => CgroupVersion::V1,
                        "v2" => CgroupVersion::V2,
                        "hybrid" => CgroupVersion::Hybrid,
                        _ => CgroupVersion::Unknown,
                    }
                }
                "swap_devices" => self.swap_devices = self.number(key, value),
                "swap_total_kib" => self.swap_total = self.number(key, value),
                "cpus" => self.cpus = self.number(key, value).filter(|n| *n > 0),
                "mem_total_kib" => self.mem = self.number(key, value),
                "default_route_iface" if !value.trim().is_empty() => {
                    self.default_iface = Some(value.trim().to_owned())
                }
                "ethtool" => self.tools.ethtool = value == "yes",
                "iproute2" => self.tools.iproute2 = value == "yes",
                _ => {}
            },
            Section::Nic(i) => self.nic_line(i, key, value),
            Section::Links => {
                let mut words = value.split_whitespace();
                let (Some(name), Some(arg)) = (words.next(), words.next()) else {
                    return;
                };
                match key {
                    "xdp" => self.xdp.push((name.to_owned(), arg.to_owned())),
                    "addr" => match arg.parse::<Ipv4Net>() {
                        Ok(net) => self.addrs.push((name.to_owned(), net)),
                        Err(_) => self.findings.push(format!(
                            "{name}: unreadable address {:?}",
                            quote_prefix(arg)
                        )),
                    },
                    _ => {}
                }
            }
            Section::Binaries => {
                if key == "found" {
                    self.binaries.entry(value.trim().to_owned()).or_insert(None);
                } else if let Some(name) = key.strip_prefix("version.") {
                    let v = value.trim();
                    if !v.is_empty() {
                        self.binaries.insert(name.to_owned(), Some(quote_prefix(v)));
                    }
                }
            }
            Section::TimeSync => match key {
                "process" => {
                    let service = match value.trim() {
                        // /proc/PID/comm is cut at 15 characters.
                        "systemd-timesyn" | "timesyncd" => "systemd-timesyncd",
                        other => other,
                    };
                    if self.time_sync.service.is_none() {
                        self.time_sync.service = Some(service.to_owned());
                    }
                }
                "ntp_synchronized" => {
                    self.time_sync.synchronized = match value.trim() {
                        "yes" => Some(true),
                        "no" => Some(false),
                        _ => None,
                    }
                }
                _ => {}
            },
            Section::None | Section::End | Section::Unknown => {}
        }
    }

    fn nic_line(&mut self, i: usize, key: &str, value: &str) {
        let number = |v: &str| v.trim().parse::<u32>().ok();
        let bad = match key {
            "mtu" | "sysfs_rx_queues" | "sysfs_tx_queues" => number(value).is_none(),
            // ethtool prints `n/a` for channel kinds a driver does not have.
            "combined_max" | "combined_current" => number(value).is_none() && value.trim() != "n/a",
            _ => false,
        };
        if bad {
            let name = self.nics.get(i).map(|n| n.name.clone()).unwrap_or_default();
            self.findings.push(format!(
                "{name}: {key}: unreadable number {:?}",
                quote_prefix(value)
            ));
        }
        let Some(nic) = self.nics.get_mut(i) else {
            return;
        };
        match key {
            "virtual" => nic.virtual_ = value == "yes",
            "driver" if !value.trim().is_empty() => nic.driver = Some(value.trim().to_owned()),
            "mtu" => nic.mtu = number(value),
            "operstate" => nic.operstate = Some(value.trim().to_owned()),
            "mac" => nic.mac = Some(value.trim().to_owned()),
            "sysfs_rx_queues" => nic.queues.rx = number(value).filter(|n| *n > 0),
            "sysfs_tx_queues" => nic.queues.tx = number(value).filter(|n| *n > 0),
            "combined_max" => nic.queues.max_combined = number(value),
            "combined_current" => nic.queues.current_combined = number(value),
            "offload" => {
                // `tcp-segmentation-offload: on [fixed]`
                if let Some((name, state)) = value.split_once(':') {
                    let state = state.trim();
                    let on = state.starts_with("on");
                    let known = on || state.starts_with("off");
                    if known && !name.trim().is_empty() {
                        nic.offloads.insert(
                            name.trim().to_owned(),
                            Offload {
                                on,
                                fixed: state.contains("[fixed]"),
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Facts {
        for (name, mode) in self.xdp {
            if let Some(n) = self.nics.iter_mut().find(|n| n.name == name) {
                n.xdp = Some(mode);
            }
        }
        for (name, net) in self.addrs {
            if let Some(n) = self.nics.iter_mut().find(|n| n.name == name) {
                n.addresses.push(net);
            }
        }
        for n in &mut self.nics {
            let q = &mut n.queues;
            q.source = if q.current_combined.is_some() || q.max_combined.is_some() {
                QueueSource::Ethtool
            } else if q.rx.is_some() || q.tx.is_some() {
                QueueSource::Sysfs
            } else {
                QueueSource::Unknown
            };
        }
        self.os.family = OsFamily::classify(&self.os.id, &self.os.id_like);
        self.kernel.version = KernelVersion::parse_release(&self.kernel.release);
        if self.kernel.release.is_empty() {
            self.findings.push("kernel release missing".to_owned());
        } else if self.kernel.version.is_none() {
            self.findings.push(format!(
                "kernel release {:?} does not start with major.minor",
                quote_prefix(&self.kernel.release)
            ));
        }
        if !self.ended {
            self.findings
                .push("output ended before `@@end` (truncated?)".to_owned());
        }
        let swap = match (self.swap_devices, self.swap_total) {
            (Some(devices), total) => Some(Swap {
                devices,
                total_kib: total.unwrap_or(0),
            }),
            (None, _) => None,
        };
        Facts {
            os: self.os,
            kernel: self.kernel,
            kernel_config: self.kconfig,
            modules: Modules {
                loaded: self.loaded,
                available: self.available,
            },
            cgroup: self.cgroup,
            swap,
            cpus: self.cpus,
            mem_total_kib: self.mem,
            default_route_iface: self.default_iface,
            nics: self.nics,
            tools: self.tools,
            binaries: self.binaries,
            time_sync: self.time_sync,
            findings: self.findings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "kubedrill-facts 1\n@@kernel\nrelease=6.1.0-27-amd64\n@@end\n";

    #[test]
    fn kernel_releases() {
        let cases = [
            ("6.1.0-27-amd64", Some((6, 1, 0))),
            ("4.18.0-553.el8_10.x86_64", Some((4, 18, 0))),
            ("5.15.0-1050-azure", Some((5, 15, 0))),
            ("6.18.44-fc-v769", Some((6, 18, 44))),
            ("5.4", Some((5, 4, 0))),
            ("4.9.0+", Some((4, 9, 0))),
            ("6.8.0-rc1", Some((6, 8, 0))),
            ("", None),
            ("6", None),
            ("linux-6.1", None),
            ("99999999999.1.0", None),
        ];
        for (rel, want) in cases {
            assert_eq!(
                KernelVersion::parse_release(rel),
                want.map(KernelVersion::from),
                "{rel}"
            );
        }
    }

    #[test]
    fn no_header_is_an_error_quoting_the_input() {
        let e = parse("bash: sh: command not found\n").unwrap_err();
        assert!(
            matches!(&e, FactsError::MissingHeader { received } if received.starts_with("bash: sh")),
            "{e}"
        );
        assert!(e.to_string().contains("command not found"));
        let long = "x".repeat(10_000);
        match parse(&long) {
            Err(FactsError::MissingHeader { received }) => {
                assert!(received.chars().count() <= QUOTE_MAX + 1)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(""), Err(FactsError::MissingHeader { .. })));
    }

    #[test]
    fn other_format_versions_are_refused() {
        assert!(matches!(
            parse("kubedrill-facts 2\n@@end\n"),
            Err(FactsError::UnsupportedVersion { found }) if found == "2"
        ));
        assert!(matches!(
            parse("kubedrill-facts\n"),
            Err(FactsError::UnsupportedVersion { .. })
        ));
        // Not the header: a longer word.
        assert!(matches!(
            parse("kubedrill-factsX 1\n"),
            Err(FactsError::MissingHeader { .. })
        ));
    }

    #[test]
    fn banner_lines_before_the_header_are_skipped() {
        let f = parse(&format!("Welcome!\n\n{MINIMAL}")).unwrap();
        assert_eq!(f.kernel.version, Some(KernelVersion::new(6, 1, 0)));
        assert!(f.findings.iter().any(|x| x.contains("2 line(s)")));
    }

    #[test]
    fn garbage_and_huge_numbers_do_not_panic() {
        let input = "kubedrill-facts 1\n\
            @@system\n\
            cpus=99999999999999999999999\n\
            mem_total_kib=-5\n\
            swap_devices=1\n\
            swap_total_kib=184467440737095516150\n\
            no equals sign here\n\
            =\n\
            ==\n\
            @@nic\n\
            mtu=1500\n\
            @@nic eth0\n\
            mtu=4294967296\n\
            combined_max=n/a\n\
            combined_current=abc\n\
            offload=rx-gro-hw\n\
            offload=rx-gro-hw: maybe\n\
            offload=: on\n\
            @@links\n\
            addr=eth0 300.1.1.1/24\n\
            addr=eth0\n\
            xdp=\n\
            @@whatever future\n\
            key=value\n\
            @@kconfig\n\
            # CONFIG_ is not set\n\
            # not a config line\n\
            CONFIG_BPF=\n\
            \u{0}\u{ffff}=\u{1}\n\
            @@end\n";
        let f = parse(input).unwrap();
        assert_eq!(f.cpus, None);
        assert_eq!(f.mem_total_kib, None);
        assert_eq!(f.swap.map(|s| s.total_kib), Some(0));
        assert_eq!(f.nics.len(), 1, "a @@nic without a name is ignored");
        let eth0 = f.nic("eth0").unwrap();
        assert_eq!(eth0.mtu, None);
        assert_eq!(eth0.queues.max_combined, None);
        assert_eq!(eth0.queues.source, QueueSource::Unknown);
        assert!(eth0.offloads.is_empty());
        assert!(eth0.addresses.is_empty());
        assert!(f.findings.iter().any(|x| x.contains("cpus")));
        assert!(f.findings.iter().any(|x| x.contains("300.1.1.1")));
        assert!(
            f.findings
                .iter()
                .any(|x| x.contains("kernel release missing"))
        );
        assert_eq!(
            f.kernel_config.options.get("CONFIG_BPF"),
            Some(&KconfigValue::Other(String::new()))
        );
    }

    #[test]
    fn truncated_output_is_a_finding() {
        let f = parse("kubedrill-facts 1\n@@kernel\nrelease=5.10.0\n").unwrap();
        assert!(f.findings.iter().any(|x| x.contains("truncated")));
        let f = parse(MINIMAL).unwrap();
        assert!(!f.findings.iter().any(|x| x.contains("truncated")));
    }

    #[test]
    fn kconfig_missing_option_is_not_set_only_with_a_source() {
        let f = parse("kubedrill-facts 1\n@@kconfig\nsource=none\nCONFIG_BPF=y\n@@end\n").unwrap();
        assert_eq!(f.kernel_config.get("CONFIG_BPF"), None);
        let f = parse(
            "kubedrill-facts 1\n@@kconfig\nsource=/boot/config-x\nCONFIG_BPF=y\nCONFIG_VXLAN=m\n# CONFIG_GENEVE is not set\n@@end\n",
        )
        .unwrap();
        let k = &f.kernel_config;
        assert_eq!(
            k.source,
            Some(KconfigSource::File {
                path: "/boot/config-x".into()
            })
        );
        assert_eq!(k.get("CONFIG_BPF"), Some(&KconfigValue::BuiltIn));
        assert_eq!(k.get("CONFIG_VXLAN"), Some(&KconfigValue::Module));
        assert_eq!(k.get("CONFIG_GENEVE"), Some(&KconfigValue::NotSet));
        assert_eq!(k.get("CONFIG_NETKIT"), Some(&KconfigValue::NotSet));
    }

    #[test]
    fn os_release_quotes_and_family() {
        let f = parse(
            "kubedrill-facts 1\n@@os\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"8.6\"\nPRETTY_NAME='Rocky Linux 8.6 (Green Obsidian)'\n@@end\n",
        )
        .unwrap();
        assert_eq!(f.os.id, "rocky");
        assert_eq!(f.os.family, OsFamily::Rhel);
        assert_eq!(f.os.rhel_release(), Some((8, 6)));
        assert_eq!(f.os.pretty_name, "Rocky Linux 8.6 (Green Obsidian)");
        assert_eq!(OsFamily::classify("ubuntu", "debian"), OsFamily::Debian);
        assert_eq!(
            OsFamily::classify("opensuse-leap", "suse opensuse"),
            OsFamily::Suse
        );
        assert_eq!(OsFamily::classify("arch", ""), OsFamily::Other);
    }

    #[test]
    fn nic_queues_offloads_links_and_modules() {
        let f = parse(
            "kubedrill-facts 1\n@@system\ndefault_route_iface=ens3\n@@nic ens3\nvirtual=no\ndriver=virtio_net\nmtu=1500\nsysfs_rx_queues=2\nsysfs_tx_queues=2\ncombined_max=4\ncombined_current=2\noffload=rx-gro-hw: on [fixed]\noffload=tcp-segmentation-offload: off\n\
             @@links\nxdp=ens3 xdpdrv\naddr=ens3 10.0.0.5/24\naddr=ghost 10.9.9.9/32\n\
             @@modules\nloaded_source=/proc/modules\nloaded=vxlan\navailable_source=modules.dep\navailable=sch_fq\n\
             @@binaries\nfound=kubelet\nversion.kubelet=Kubernetes v1.33.1\nfound=runc\n\
             @@timesync\nprocess=systemd-timesyn\nntp_synchronized=yes\n@@end\n",
        )
        .unwrap();
        let n = f.default_nic().unwrap();
        assert_eq!(n.driver.as_deref(), Some("virtio_net"));
        assert_eq!(n.queues.source, QueueSource::Ethtool);
        assert_eq!(
            (n.queues.current_combined, n.queues.max_combined),
            (Some(2), Some(4))
        );
        assert_eq!(
            n.offload("rx-gro-hw"),
            Some(Offload {
                on: true,
                fixed: true
            })
        );
        assert_eq!(
            n.offload("tcp-segmentation-offload"),
            Some(Offload {
                on: false,
                fixed: false
            })
        );
        assert!(n.xdp_attached());
        assert_eq!(n.addresses, vec!["10.0.0.5/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(f.modules.loadable("vxlan"), Some(true));
        assert_eq!(f.modules.loadable("sch_fq"), Some(true));
        assert_eq!(f.modules.loadable("geneve"), Some(false));
        assert_eq!(f.binaries.get("runc"), Some(&None));
        assert!(f.has_binary("kubelet") && !f.has_binary("helm"));
        assert_eq!(f.time_sync.service.as_deref(), Some("systemd-timesyncd"));
        assert_eq!(f.time_sync.synchronized, Some(true));
    }
}
