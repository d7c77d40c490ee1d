//! The Cilium intent: what the cluster's datapath should be, independent of chart value names.

use base64::Engine;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::fmt;

/// How pod traffic crosses nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingMode {
    /// Native routing: pod addresses routed by the network (`routingMode: native`).
    Native(NativeRouting),
    /// Encapsulation (`routingMode: tunnel`).
    Tunnel(TunnelProtocol),
}

/// Tunnel encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelProtocol {
    /// VXLAN (8472/udp).
    Vxlan,
    /// Geneve (6081/udp).
    Geneve,
}

/// How much of kube-proxy Cilium replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxyReplacement {
    /// Fully (`true`; `strict` before Cilium 1.14).
    True,
    /// Partly, next to kube-proxy (`partial`; rejected from Cilium 1.16).
    Partial,
    /// Not at all: kube-proxy handles services (`false`; `disabled` before 1.14).
    False,
}

/// Service load-balancing mode for remote backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// Source NAT (the default of Cilium).
    Snat,
    /// Direct server return: replies go straight from the backend to the client.
    Dsr,
    /// DSR for TCP, SNAT for UDP.
    Hybrid,
}

/// How DSR carries the service address to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DsrDispatch {
    /// IPv4 option / IPv6 extension header (native routing only).
    Opt,
    /// Geneve encapsulation (Cilium ≥ 1.14).
    Geneve,
}

/// Backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Random backend.
    Random,
    /// Maglev consistent hashing.
    Maglev,
}

/// XDP acceleration of the NodePort/LoadBalancer path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acceleration {
    /// No XDP.
    Disabled,
    /// Native XDP on every selected device (fails where a driver lacks it).
    Native,
    /// Native XDP where the driver has it, skip elsewhere (Cilium ≥ 1.15).
    BestEffort,
}

/// Maglev's allowed table sizes (primes; Cilium's documented list).
pub const MAGLEV_PRIMES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// A Maglev table size that Cilium accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MaglevTableSize(u32);

impl MaglevTableSize {
    /// Cilium's default.
    pub const DEFAULT: MaglevTableSize = MaglevTableSize(16381);

    /// Accept only Cilium's primes.
    pub fn new(n: u64) -> Result<Self, String> {
        u32::try_from(n)
            .ok()
            .filter(|n| MAGLEV_PRIMES.contains(n))
            .map(MaglevTableSize)
            .ok_or_else(|| {
                format!(
                    "{n} is not an allowed Maglev table size (one of {})",
                    MAGLEV_PRIMES.map(|p| p.to_string()).join(", ")
                )
            })
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The cluster-wide Maglev hash seed: base64 of 12 bytes, identical on every agent and kept
/// across upgrades. It is not a credential, but it is generated randomly so that backend
/// selection cannot be predicted from public facts.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HashSeed(String);

impl HashSeed {
    /// Validate a seed given by the user.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| format!("\"{s}\" is not base64"))?;
        if bytes.len() != 12 {
            return Err(format!(
                "decodes to {} bytes; Cilium needs exactly 12",
                bytes.len()
            ));
        }
        Ok(HashSeed(s.trim().to_owned()))
    }

    /// A new random seed.
    pub fn generate() -> Self {
        let bytes: [u8; 12] = rand::random();
        HashSeed(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The base64 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HashSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashSeed({})", self.0)
    }
}

/// Native-routing details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NativeRouting {
    /// `ipv4NativeRoutingCIDR`: traffic to it is not masqueraded; covers the pod CIDR.
    pub cidr: Ipv4Net,
    /// `autoDirectNodeRoutes`: install routes to other nodes' pod CIDRs (nodes share an L2).
    pub auto_direct_node_routes: bool,
}

/// Everything kubedrill wants from Cilium, before translation to a chart version's names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CiliumIntent {
    /// Native (with its CIDR) or tunnel (with its protocol).
    pub routing: RoutingMode,
    /// Kube-proxy replacement.
    pub kube_proxy_replacement: KubeProxyReplacement,
    /// Load-balancing mode.
    pub lb_mode: LbMode,
    /// DSR dispatch (used with `dsr` and `hybrid`).
    pub dsr_dispatch: DsrDispatch,
    /// Backend selection.
    pub algorithm: Algorithm,
    /// Maglev table size.
    pub maglev_table_size: MaglevTableSize,
    /// Maglev hash seed.
    pub maglev_hash_seed: HashSeed,
    /// XDP acceleration.
    pub acceleration: Acceleration,
    /// eBPF masquerading (`bpf.masquerade`).
    pub bpf_masquerade: bool,
    /// eBPF host routing (`bpf.hostLegacyRouting: false`).
    pub bpf_host_routing: bool,
    /// Devices Cilium attaches to; empty means Cilium's auto-detection.
    pub devices: Vec<String>,
    /// `nodePort.directRoutingDevice`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_routing_device: Option<String>,
    /// Hubble observability.
    pub hubble: bool,
}

macro_rules! display_via_serde {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => f.write_str(&s),
                    Ok(v) => write!(f, "{v}"),
                    Err(_) => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}
display_via_serde!(
    KubeProxyReplacement,
    TunnelProtocol,
    LbMode,
    DsrDispatch,
    Algorithm,
    Acceleration,
    MaglevTableSize
);

impl RoutingMode {
    /// The native-routing details, when native.
    pub fn native(&self) -> Option<&NativeRouting> {
        match self {
            RoutingMode::Native(n) => Some(n),
            RoutingMode::Tunnel(_) => None,
        }
    }

    /// The tunnel protocol, when tunnelling.
    pub fn tunnel(&self) -> Option<TunnelProtocol> {
        match self {
            RoutingMode::Native(_) => None,
            RoutingMode::Tunnel(p) => Some(*p),
        }
    }
}

impl fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutingMode::Native(n) => write!(f, "native ({})", n.cidr),
            RoutingMode::Tunnel(p) => write!(f, "tunnel ({p})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_12_bytes_of_base64() {
        let s = HashSeed::generate();
        assert_eq!(HashSeed::parse(s.as_str()), Ok(s.clone()));
        assert!(HashSeed::parse("c2hvcnQ=").is_err());
        assert!(HashSeed::parse("***").is_err());
        assert_ne!(HashSeed::generate(), HashSeed::generate());
    }

    #[test]
    fn table_size_must_be_a_listed_prime() {
        assert_eq!(
            MaglevTableSize::new(16381).map(MaglevTableSize::get),
            Ok(16381)
        );
        assert!(MaglevTableSize::new(16383).is_err());
        assert!(MaglevTableSize::new(7).is_err());
        assert!(MaglevTableSize::new(u64::MAX).is_err());
    }
}
