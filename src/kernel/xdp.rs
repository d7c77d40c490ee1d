//! Native XDP on one NIC: driver support, MTU, and the virtio_net queue and offload rules.

use crate::facts::{Facts, KernelVersion, Nic, QueueSource};
use serde::Serialize;

/// Drivers with native XDP and the kernel that gave it to them. From Cilium's XDP acceleration
/// docs (`kube-proxy free` guide, "Loadbalancer & NodePort XDP Acceleration": mlx4 4.8, mlx5 4.9,
/// qede 4.10, nfp 4.10, ixgbe 4.12, thunder 4.12, i40e 4.13, bnxt_en 4.11, virtio_net 4.10, tun
/// 4.14, ixgbevf 4.17, veth 4.19, ice 5.5, sfc 5.5, ena 5.6, hv_netvsc 5.6) and cilium.md.
pub const XDP_DRIVERS: &[(&str, KernelVersion)] = &[
    ("mlx4_en", KernelVersion::new(4, 8, 0)),
    ("mlx5_core", KernelVersion::new(4, 9, 0)),
    ("virtio_net", KernelVersion::new(4, 10, 0)),
    ("nfp", KernelVersion::new(4, 10, 0)),
    ("qede", KernelVersion::new(4, 10, 0)),
    ("bnxt_en", KernelVersion::new(4, 11, 0)),
    ("ixgbe", KernelVersion::new(4, 12, 0)),
    ("thunder", KernelVersion::new(4, 12, 0)),
    ("nicvf", KernelVersion::new(4, 12, 0)),
    ("i40e", KernelVersion::new(4, 13, 0)),
    ("tun", KernelVersion::new(4, 14, 0)),
    ("ixgbevf", KernelVersion::new(4, 17, 0)),
    ("veth", KernelVersion::new(4, 19, 0)),
    ("ice", KernelVersion::new(5, 5, 0)),
    ("sfc", KernelVersion::new(5, 5, 0)),
    ("ena", KernelVersion::new(5, 6, 0)),
    ("hv_netvsc", KernelVersion::new(5, 6, 0)),
];

/// Largest MTU single-buffer XDP takes on 4 KiB pages: 4096 minus the 256-byte XDP headroom,
/// `skb_shared_info` and L2 overhead (ENA's `ENA_XDP_MAX_MTU`; virtio_net's limit is a few
/// bytes higher). cilium.md: "single-buffer XDP caps the MTU near 3.5 KB … jumbo-frame labs
/// cannot use native XDP"; the kernel says "MTU too large to enable XDP".
pub const XDP_MAX_MTU: u32 = 3498;

/// From Linux 5.13 ("virtio-net: support XDP when not more queues") virtio_net attaches XDP
/// without spare queue pairs, sharing TX queues under a lock; before, it refused with
/// "Too few free TX rings available" (cilium.md, "XDP on virtio_net").
pub const VIRTIO_LOCKED_TX_FALLBACK: KernelVersion = KernelVersion::new(5, 13, 0);

/// What native XDP would do on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpOutcome {
    /// Attaches and runs at full speed.
    Native,
    /// Attaches, but slower (virtio_net sharing TX queues under a lock).
    NativeSlow,
    /// The driver (or kernel) lacks native XDP: `native` fails, `best-effort` skips the device.
    Unsupported,
    /// The driver has native XDP but this device refuses it (MTU, queues, fixed offloads).
    Refused,
    /// Could not be checked (no ethtool, unknown CPU count).
    Unverified,
}

/// One device Cilium would attach XDP to, with what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XdpDevice {
    /// Interface name.
    pub name: String,
    /// Driver, when known.
    pub driver: Option<String>,
    /// MTU, when known.
    pub mtu: Option<u32>,
    /// Current combined queues (`ethtool -l`, else sysfs RX queues).
    pub current_queues: Option<u32>,
    /// Maximum combined queues (`ethtool -l` only).
    pub max_queues: Option<u32>,
    /// The outcome.
    pub outcome: XdpOutcome,
    /// Why not [`XdpOutcome::Native`], e.g. "eth0 (virtio_net) has max 1 combined queue, needs 4".
    pub problems: Vec<String>,
    /// How to fix each problem (same order, may be shorter).
    pub fixes: Vec<String>,
    /// Facts checked, for the verdict's evidence.
    pub evidence: String,
}

/// The devices Cilium would use: those matching `patterns` (a trailing `+` is a prefix wildcard,
/// as in Cilium's `devices`), or the default-route NIC when there are no patterns.
pub fn select<'a>(patterns: &[String], facts: &'a Facts) -> Vec<&'a Nic> {
    if patterns.is_empty() {
        return facts.default_nic().into_iter().collect();
    }
    facts
        .nics
        .iter()
        .filter(|n| patterns.iter().any(|p| matches_device(p, &n.name)))
        .collect()
}

/// Cilium's device-name match: exact, or prefix when the pattern ends in `+`.
pub fn matches_device(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The kernel that gave a driver native XDP, if it has it.
pub fn driver_min_kernel(driver: &str) -> Option<KernelVersion> {
    XDP_DRIVERS
        .iter()
        .find(|(d, _)| *d == driver)
        .map(|(_, k)| *k)
}

/// Check one device. `kernel` is the (backport-adjusted) kernel version.
pub fn check(nic: &Nic, kernel: Option<KernelVersion>, cpus: Option<u32>) -> XdpDevice {
    let mut d = XdpDevice {
        name: nic.name.clone(),
        driver: nic.driver.clone(),
        mtu: nic.mtu,
        current_queues: nic.queues.current_combined.or(nic.queues.rx),
        max_queues: nic.queues.max_combined,
        outcome: XdpOutcome::Native,
        problems: Vec::new(),
        fixes: Vec::new(),
        evidence: String::new(),
    };
    let name = &nic.name;
    let mut ev = vec![format!(
        "{name}: driver {}",
        nic.driver.as_deref().unwrap_or("unknown")
    )];
    let Some(driver) = nic.driver.as_deref() else {
        d.outcome = XdpOutcome::Unsupported;
        d.problems.push(format!(
            "{name}: driver unknown, native XDP support cannot be shown"
        ));
        d.fixes.push(
            "install ethtool so the driver can be read, or use a NIC with a native-XDP driver"
                .to_owned(),
        );
        d.evidence = ev.join(", ");
        return d;
    };
    let Some(min) = driver_min_kernel(driver) else {
        d.outcome = XdpOutcome::Unsupported;
        d.problems
            .push(format!("{name} ({driver}): driver has no native XDP"));
        d.fixes.push(format!(
            "use a NIC whose driver has native XDP ({})",
            XDP_DRIVERS
                .iter()
                .map(|(d, _)| *d)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        d.evidence = ev.join(", ");
        return d;
    };
    match kernel {
        Some(k) if k < min => {
            d.outcome = XdpOutcome::Unsupported;
            d.problems.push(format!(
                "{name} ({driver}): native XDP needs kernel {min}, node runs {k}"
            ));
            d.fixes
                .push(format!("upgrade the kernel to {min} or newer"));
            d.evidence = ev.join(", ");
            return d;
        }
        Some(_) => {}
        None => {
            d.outcome = XdpOutcome::Unverified;
            d.problems.push(format!(
                "{name} ({driver}): kernel version unknown, native XDP needs {min}"
            ));
        }
    }
    let mut refused = false;
    let mut slow = false;
    let mut unverified = d.outcome == XdpOutcome::Unverified;
    match nic.mtu {
        Some(mtu) => {
            ev.push(format!("MTU {mtu}"));
            if mtu > XDP_MAX_MTU {
                refused = true;
                d.problems.push(format!(
                    "{name} ({driver}): MTU {mtu} is above {XDP_MAX_MTU}, the single-buffer XDP limit on 4 KiB pages"
                ));
                d.fixes.push(format!(
                    "lower the MTU of {name} to {XDP_MAX_MTU} or less (e.g. 1500), or keep acceleration disabled on jumbo-frame networks"
                ));
            }
        }
        None => {
            unverified = true;
            d.problems.push(format!("{name}: MTU unknown"));
        }
    }
    if driver == "virtio_net" {
        // cilium.md "XDP on virtio_net": attached XDP wants current + CPUs ≤ max queue pairs.
        match (
            nic.queues.source,
            nic.queues.current_combined,
            nic.queues.max_combined,
            cpus,
        ) {
            (QueueSource::Ethtool, Some(cur), Some(max), Some(n)) => {
                // Once XDP is attached with queues of its own, virtio_net counts its XDP TX
                // queues (one per CPU) in the current combined channels (`virtnet_xdp_set`):
                // the stack's own are `cur - n`, or a re-check after the install would call the
                // dedicated queues it predicted "shared". (Only a count raised by hand above
                // `max - n` before the attach, then shared, reads the same; it is rare.)
                let own = nic.xdp_attached() && cur > n;
                let stack = if own { cur - n } else { cur };
                if own {
                    ev.push(format!(
                        "combined queues {cur} of max {max} ({n} of them XDP's own TX queues, attached), {n} CPUs"
                    ));
                } else {
                    ev.push(format!("combined queues {cur} of max {max}, {n} CPUs"));
                }
                let cur = stack;
                let need = u64::from(cur) + u64::from(n);
                if u64::from(max) < need {
                    let problem = format!(
                        "{name} (virtio_net) has max {max} combined queue{}, needs {need} ({cur} in use + {n} CPUs)",
                        if max == 1 { "" } else { "s" }
                    );
                    let two_n = u64::from(n) * 2;
                    let fix = if u64::from(max) >= two_n {
                        format!("`ethtool -L {name} combined {n}` (max {max} ≥ 2×{n})")
                    } else {
                        format!(
                            "set `<driver name='vhost' queues='{two_n}'/>` on the VM NIC (2 × {n} vCPUs), then `ethtool -L {name} combined {n}` in the guest"
                        )
                    };
                    match kernel {
                        Some(k) if k >= VIRTIO_LOCKED_TX_FALLBACK => {
                            slow = true;
                            d.problems.push(format!(
                                "{problem}; kernel {k} falls back to shared, locked XDP TX queues (slower)"
                            ));
                        }
                        _ => {
                            refused = true;
                            d.problems.push(format!(
                                "{problem}; kernels before {VIRTIO_LOCKED_TX_FALLBACK} refuse XDP (\"Too few free TX rings available\")"
                            ));
                        }
                    }
                    d.fixes.push(fix);
                }
            }
            (_, _, _, None) => {
                unverified = true;
                d.problems.push(format!(
                    "{name} (virtio_net): CPU count unknown, queue rule cannot be checked"
                ));
            }
            _ => {
                unverified = true;
                d.problems.push(format!(
                    "{name} (virtio_net): cannot verify queue pairs (needs max ≥ current + CPUs): ethtool not available"
                ));
                d.fixes.push("install ethtool".to_owned());
            }
        }
        // Guest offloads: without VIRTIO_NET_F_CTRL_GUEST_OFFLOADS the driver refuses XDP while
        // the host offers TSO/ECN/UFO/CSUM ("Can't set XDP while host is implementing GRO_HW/CSUM,
        // disable GRO_HW/CSUM first"); with it, the driver turns them off itself on attach.
        // ethtool shows the missing control feature as `[fixed]` guest offloads.
        if nic.offloads.is_empty() {
            unverified = true;
            d.problems.push(format!(
                "{name} (virtio_net): guest offloads unknown (ethtool -k not available)"
            ));
            if !d.fixes.iter().any(|f| f == "install ethtool") {
                d.fixes.push("install ethtool".to_owned());
            }
        } else {
            let gro = nic
                .offload("rx-gro-hw")
                .or_else(|| nic.offload("large-receive-offload"));
            let on: Vec<&str> = ["rx-gro-hw", "large-receive-offload", "rx-checksumming"]
                .into_iter()
                .filter(|o| nic.offload(o).is_some_and(|x| x.on))
                .collect();
            let fixed = gro.is_some_and(|g| g.fixed);
            if !on.is_empty() && fixed {
                refused = true;
                d.problems.push(format!(
                    "{name} (virtio_net): host offers guest offloads ({}) that the guest cannot turn off ([fixed]: no control-offloads feature); XDP is refused",
                    on.join(", ")
                ));
                d.fixes.push("in the libvirt domain: `<driver ...><host csum='off' gso='off' tso4='off' tso6='off' ecn='off' ufo='off'/><guest csum='off' tso4='off' tso6='off' ecn='off' ufo='off'/></driver>`".to_owned());
            } else if !on.is_empty() {
                ev.push(format!(
                    "guest offloads on but changeable ({}): virtio_net turns them off when XDP attaches",
                    on.join(", ")
                ));
            } else {
                ev.push("guest offloads off".to_owned());
            }
        }
    }
    d.outcome = if refused {
        XdpOutcome::Refused
    } else if unverified {
        XdpOutcome::Unverified
    } else if slow {
        XdpOutcome::NativeSlow
    } else {
        XdpOutcome::Native
    };
    if let Some(mode) = &nic.xdp {
        ev.push(format!("XDP already attached ({mode})"));
    }
    d.evidence = ev.join(", ");
    d
}

/// How an XDP program is attached to a device, as `ip link` names the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attached {
    /// No program.
    None,
    /// In the driver (`xdp`, `xdpdrv`): native XDP.
    Native,
    /// In the generic path (`xdpgeneric`): after the SKB is built, no speed-up.
    Generic,
    /// Offloaded to the NIC, or several modes at once.
    Other,
}

impl Attached {
    /// From the mode keyword `ip link` prints (`None` when no program is attached).
    pub fn from_mode(mode: Option<&str>) -> Attached {
        match mode {
            None | Some("") => Attached::None,
            Some("xdp" | "xdpdrv") => Attached::Native,
            Some("xdpgeneric") => Attached::Generic,
            Some(_) => Attached::Other,
        }
    }
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attached::None => "no XDP program",
            Attached::Native => "native XDP",
            Attached::Generic => "generic XDP",
            Attached::Other => "XDP (offload/multi)",
        })
    }
}

/// What the running agent should have attached to a device `check` looked at: with
/// `best-effort`, native XDP exactly where `check` found the driver and device able to take it.
pub fn expected_attach(acceleration: crate::spec::cilium::Acceleration, d: &XdpDevice) -> Attached {
    use crate::spec::cilium::Acceleration as A;
    match acceleration {
        A::Disabled => Attached::None,
        // A device that could not take it stopped the apply at preflight/kernel.
        A::Native => Attached::Native,
        A::BestEffort => match d.outcome {
            XdpOutcome::Native | XdpOutcome::NativeSlow | XdpOutcome::Unverified => {
                Attached::Native
            }
            XdpOutcome::Unsupported | XdpOutcome::Refused => Attached::None,
        },
    }
}

/// One line per device of `predicted` (the devices `check` judged on this node): what is
/// attached now (`facts` gathered from the running node) against what `check` predicted, and
/// whether they agree.
pub fn compare_attached(
    predicted: &[XdpDevice],
    acceleration: crate::spec::cilium::Acceleration,
    facts: &Facts,
) -> Vec<(String, bool)> {
    predicted
        .iter()
        .map(|d| {
            let want = expected_attach(acceleration, d);
            let got = Attached::from_mode(facts.nic(&d.name).and_then(|n| n.xdp.as_deref()));
            let outcome = match d.outcome {
                XdpOutcome::Native => "able",
                XdpOutcome::NativeSlow => "able, TX queues shared",
                XdpOutcome::Unverified => "unverified",
                XdpOutcome::Unsupported => "unsupported",
                XdpOutcome::Refused => "refused",
            };
            let why = match d.problems.first() {
                Some(p) if !matches!(d.outcome, XdpOutcome::Native | XdpOutcome::NativeSlow) => {
                    format!("{outcome}: {p}")
                }
                _ => outcome.to_owned(),
            };
            (
                format!("{}: {got} attached; check predicted {want} ({why})", d.name),
                got == want,
            )
        })
        .collect()
}
