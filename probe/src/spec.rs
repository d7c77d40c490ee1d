//! The probe spec: what `kubedrill-probe run --spec FILE|-` reads, and its validation.
//!
//! A spec is a JSON array of probes, or an object `{"probes": [...]}`. Every field but `id`,
//! `kind` and `target` has a default. Unknown fields are errors (a typo must not silently fall
//! back to a default). Targets are addresses only: the static binary does no name resolution.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default probe rate, probes per second.
pub const DEFAULT_RATE_PER_S: u32 = 20;
/// Allowed probe rates, probes per second.
pub const RATE_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;
/// Allowed timeouts, milliseconds.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 10..=60_000;
/// Default payload size, bytes.
pub const DEFAULT_PAYLOAD_BYTES: u16 = 64;
/// Allowed payload sizes, bytes (the smallest holds the probe's own header, see `payload`).
pub const PAYLOAD_RANGE: std::ops::RangeInclusive<u16> = 40..=1400;
/// Most probes one process runs (one thread each).
pub const MAX_PROBES: usize = 256;
/// Longest probe id.
pub const MAX_ID_LEN: usize = 64;

/// What a probe sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// ICMP (or ICMPv6) echo request / reply.
    Icmp,
    /// TCP: see [`TcpMode`].
    Tcp,
    /// One UDP datagram echoed back by `kubedrill-probe serve --udp`.
    Udp,
}

impl Kind {
    /// The kind's name as it appears in specs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Icmp => "icmp",
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
        }
    }

    /// Default timeout. ICMP/UDP: 500 ms, far above any in-cluster RTT, so only real loss (or a
    /// half-second stall) counts. TCP: 1000 ms, the kernel's initial SYN retransmission timeout:
    /// a SYN lost inside an outage is retransmitted only after the probe has already failed, so a
    /// retransmission cannot hide the outage's end (see docs/probe-agent.md, on precision).
    pub fn default_timeout_ms(self) -> u32 {
        match self {
            Kind::Icmp | Kind::Udp => 500,
            Kind::Tcp => 1000,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a TCP probe uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TcpMode {
    /// A new connection per probe: connect, send the payload, read the whole echo, then close
    /// with a reset (no TIME_WAIT on the prober). Exercises service translation, NAT, DSR and
    /// conntrack for a new flow every probe.
    #[default]
    ConnectEcho,
    /// One long-lived connection for all probes, payloads echoed back to back: whether an
    /// established connection survives, and how long it stalls (see `held`).
    Persistent,
}

/// Which ICMP socket an ICMP probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IcmpSocket {
    /// An unprivileged ping socket if `net.ipv4.ping_group_range` allows it, else a raw socket.
    #[default]
    Auto,
    /// Only a ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`).
    Ping,
    /// Only a raw socket (needs root or `CAP_NET_RAW`).
    Raw,
}

/// One probe as written in the spec (defaults not yet applied).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Name used in every event of this probe; unique within the spec.
    pub id: String,
    /// What to send.
    pub kind: Kind,
    /// `IP` for ICMP, `IP:PORT` (`[IPv6]:PORT`) for TCP and UDP.
    pub target: String,
    /// Probes per second.
    pub rate_per_s: Option<u32>,
    /// How long a probe may take before it counts as lost.
    pub timeout_ms: Option<u32>,
    /// TCP only.
    pub tcp_mode: Option<TcpMode>,
    /// ICMP only.
    pub icmp_socket: Option<IcmpSocket>,
    /// Bytes of payload per probe.
    pub payload_bytes: Option<u16>,
    /// Network namespace to enter for this probe (overrides `--netns`).
    pub netns: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSpec {
    List(Vec<RawProbe>),
    Object(RawSpecObject),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecObject {
    probes: Vec<RawProbe>,
}

/// Where a probe sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// ICMP target.
    Ip(IpAddr),
    /// TCP or UDP target.
    Sock(SocketAddr),
}

impl Target {
    /// The target's IP address.
    pub fn ip(&self) -> IpAddr {
        match self {
            Target::Ip(ip) => *ip,
            Target::Sock(sa) => sa.ip(),
        }
    }
}

/// A validated probe with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Unique name.
    pub id: String,
    /// What to send.
    pub kind: Kind,
    /// Where to send, parsed.
    pub target: Target,
    /// The target as written in the spec (echoed in events).
    pub target_text: String,
    /// Probes per second, within [`RATE_RANGE`].
    pub rate_per_s: u32,
    /// Timeout in milliseconds, within [`TIMEOUT_RANGE_MS`].
    pub timeout_ms: u32,
    /// TCP connection mode.
    pub tcp_mode: TcpMode,
    /// ICMP socket choice.
    pub icmp_socket: IcmpSocket,
    /// Payload size in bytes, within [`PAYLOAD_RANGE`].
    pub payload_bytes: u16,
    /// Network namespace to enter, if any (the per-probe one, else `--netns`).
    pub netns: Option<PathBuf>,
}

impl Probe {
    /// Time between two probes' send times.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(self.rate_per_s))
    }

    /// [`Probe::interval`] in whole milliseconds, rounded up (for events).
    pub fn interval_ms(&self) -> u64 {
        1000u64.div_ceil(u64::from(self.rate_per_s))
    }

    /// The probe timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }

    /// Most probes in flight at once (each TCP one holds a socket).
    pub fn max_in_flight(&self) -> u64 {
        (u64::from(self.rate_per_s) * u64::from(self.timeout_ms)).div_ceil(1000) + 1
    }
}

/// Everything wrong with a spec, one message per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub Vec<String>);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Parses and validates a spec document; `default_netns` is `--netns`.
pub fn parse_spec(text: &str, default_netns: Option<&PathBuf>) -> Result<Vec<Probe>, SpecError> {
    let raw: RawSpec = serde_json::from_str(text).map_err(|e| {
        SpecError(vec![format!(
            "spec: not a valid probe list: {e} (expected a JSON array of probes or {{\"probes\": [...]}})"
        )])
    })?;
    let list = match raw {
        RawSpec::List(l) => l,
        RawSpec::Object(o) => o.probes,
    };
    validate(list, default_netns)
}

/// Validates probes as parsed, applying defaults; reports every problem, not just the first.
pub fn validate(
    list: Vec<RawProbe>,
    default_netns: Option<&PathBuf>,
) -> Result<Vec<Probe>, SpecError> {
    let mut errors = Vec::new();
    if list.is_empty() {
        errors.push("spec: no probes".to_string());
    }
    if list.len() > MAX_PROBES {
        errors.push(format!(
            "spec: {} probes, at most {MAX_PROBES} per process",
            list.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let at = if p.id.is_empty() {
            format!("probes[{i}]")
        } else {
            format!("probes[{i}] ({:?})", p.id)
        };
        let before = errors.len();
        if p.id.is_empty() {
            errors.push(format!("{at}: id: must not be empty"));
        } else if p.id.len() > MAX_ID_LEN {
            errors.push(format!("{at}: id: longer than {MAX_ID_LEN} bytes"));
        } else if p.id.chars().any(|c| c.is_control()) {
            errors.push(format!("{at}: id: contains control characters"));
        } else if !seen.insert(p.id.clone()) {
            errors.push(format!("{at}: id: duplicate"));
        }
        let target = match parse_target(p.kind, &p.target) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(format!("{at}: target: {e}"));
                None
            }
        };
        let rate_per_s = p.rate_per_s.unwrap_or(DEFAULT_RATE_PER_S);
        if !RATE_RANGE.contains(&rate_per_s) {
            errors.push(format!(
                "{at}: rate_per_s: {rate_per_s} is outside {}..={}",
                RATE_RANGE.start(),
                RATE_RANGE.end()
            ));
        }
        let timeout_ms = p.timeout_ms.unwrap_or(p.kind.default_timeout_ms());
        if !TIMEOUT_RANGE_MS.contains(&timeout_ms) {
            errors.push(format!(
                "{at}: timeout_ms: {timeout_ms} is outside {}..={}",
                TIMEOUT_RANGE_MS.start(),
                TIMEOUT_RANGE_MS.end()
            ));
        }
        if p.tcp_mode.is_some() && p.kind != Kind::Tcp {
            errors.push(format!("{at}: tcp_mode: only for kind tcp"));
        }
        if p.icmp_socket.is_some() && p.kind != Kind::Icmp {
            errors.push(format!("{at}: icmp_socket: only for kind icmp"));
        }
        let payload_bytes = p.payload_bytes.unwrap_or(DEFAULT_PAYLOAD_BYTES);
        if !PAYLOAD_RANGE.contains(&payload_bytes) {
            errors.push(format!(
                "{at}: payload_bytes: {payload_bytes} is outside {}..={}",
                PAYLOAD_RANGE.start(),
                PAYLOAD_RANGE.end()
            ));
        }
        if let Some(ns) = &p.netns
            && ns.as_os_str().is_empty()
        {
            errors.push(format!("{at}: netns: must not be empty"));
        }
        if errors.len() > before {
            continue;
        }
        let Some(target) = target else { continue };
        out.push(Probe {
            id: p.id,
            kind: p.kind,
            target,
            target_text: p.target,
            rate_per_s,
            timeout_ms,
            tcp_mode: p.tcp_mode.unwrap_or_default(),
            icmp_socket: p.icmp_socket.unwrap_or_default(),
            payload_bytes,
            netns: p.netns.or_else(|| default_netns.cloned()),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SpecError(errors))
    }
}

/// Parses a target for a kind: `IP` for ICMP, `IP:PORT` for TCP/UDP. Addresses only.
pub fn parse_target(kind: Kind, text: &str) -> Result<Target, String> {
    match kind {
        Kind::Icmp => {
            let ip: IpAddr = text.parse().map_err(|_| {
                if text.parse::<SocketAddr>().is_ok() {
                    format!("{text:?}: ICMP takes an address without a port")
                } else {
                    format!("{text:?}: not an IP address (addresses only, no host names)")
                }
            })?;
            check_ip(ip, text)?;
            Ok(Target::Ip(ip))
        }
        Kind::Tcp | Kind::Udp => {
            let sa: SocketAddr = text.parse().map_err(|_| {
                if text.parse::<IpAddr>().is_ok() {
                    format!("{text:?}: {kind} needs IP:PORT ([IPv6]:PORT)")
                } else {
                    format!(
                        "{text:?}: not IP:PORT ([IPv6]:PORT for IPv6; addresses only, no host names)"
                    )
                }
            })?;
            check_ip(sa.ip(), text)?;
            if sa.port() == 0 {
                return Err(format!("{text:?}: port 0"));
            }
            Ok(Target::Sock(sa))
        }
    }
}

fn check_ip(ip: IpAddr, text: &str) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!("{text:?}: not a unicast address"));
    }
    if let IpAddr::V4(v4) = ip
        && v4.is_broadcast()
    {
        return Err(format!("{text:?}: not a unicast address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Probe>, SpecError> {
        parse_spec(s, None)
    }

    fn errs(s: &str) -> Vec<String> {
        parse(s).unwrap_err().0
    }

    #[test]
    fn defaults_apply_per_kind() {
        let p = parse(
            r#"[{"id":"a","kind":"icmp","target":"10.0.0.1"},
                {"id":"b","kind":"tcp","target":"10.0.0.1:80"},
                {"id":"c","kind":"udp","target":"[fd00::1]:53"}]"#,
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].rate_per_s, 20);
        assert_eq!(p[0].timeout_ms, 500);
        assert_eq!(p[0].target, Target::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(p[1].timeout_ms, 1000);
        assert_eq!(p[1].tcp_mode, TcpMode::ConnectEcho);
        assert_eq!(p[2].timeout_ms, 500);
        assert_eq!(p[2].target, Target::Sock("[fd00::1]:53".parse().unwrap()));
        assert_eq!(p[0].interval(), Duration::from_millis(50));
        assert_eq!(p[0].payload_bytes, DEFAULT_PAYLOAD_BYTES);
        assert_eq!(p[0].icmp_socket, IcmpSocket::Auto);
    }

    #[test]
    fn object_form_and_netns_precedence() {
        let def = PathBuf::from("/run/netns/x");
        let p = parse_spec(
            r#"{"probes":[{"id":"a","kind":"icmp","target":"::1"},
                          {"id":"b","kind":"icmp","target":"::1","netns":"/proc/1/ns/net"}]}"#,
            Some(&def),
        )
        .unwrap();
        assert_eq!(p[0].netns.as_deref(), Some(def.as_path()));
        assert_eq!(
            p[1].netns.as_deref(),
            Some(std::path::Path::new("/proc/1/ns/net"))
        );
    }

    #[test]
    fn rate_bounds() {
        let ok = |r: u32| {
            parse(&format!(
                r#"[{{"id":"a","kind":"icmp","target":"10.0.0.1","rate_per_s":{r}}}]"#
            ))
        };
        assert!(ok(1).is_ok());
        assert!(ok(1000).is_ok());
        assert!(ok(0).unwrap_err().0[0].contains("rate_per_s: 0 is outside 1..=1000"));
        assert!(ok(1001).is_err());
        assert_eq!(ok(1000).unwrap()[0].interval(), Duration::from_millis(1));
        assert_eq!(ok(3).unwrap()[0].interval_ms(), 334);
    }

    #[test]
    fn every_problem_is_reported() {
        let e = errs(
            r#"[{"id":"","kind":"tcp","target":"example.com:80","rate_per_s":0,"timeout_ms":5},
                {"id":"x","kind":"icmp","target":"10.0.0.1:80","tcp_mode":"connect-echo"},
                {"id":"x","kind":"udp","target":"10.0.0.1","payload_bytes":2}]"#,
        );
        let all = e.join("\n");
        for want in [
            "probes[0]: id: must not be empty",
            "probes[0]: target: \"example.com:80\": not IP:PORT",
            "no host names",
            "rate_per_s: 0",
            "timeout_ms: 5 is outside",
            "probes[1] (\"x\"): target: \"10.0.0.1:80\": ICMP takes an address without a port",
            "probes[1] (\"x\"): tcp_mode: only for kind tcp",
            "probes[2] (\"x\"): id: duplicate",
            "probes[2] (\"x\"): target: \"10.0.0.1\": udp needs IP:PORT",
            "payload_bytes: 2 is outside",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn structural_errors() {
        assert!(errs("")[0].starts_with("spec: not a valid probe list"));
        assert!(errs("[]")[0].contains("no probes"));
        assert!(errs(r#"{"probes":[]}"#)[0].contains("no probes"));
        assert!(errs(r#"[{"id":"a","kind":"sctp","target":"1.2.3.4:1"}]"#)[0].contains("spec:"));
        // Unknown field: a typo must not fall back to a default.
        assert!(
            errs(r#"[{"id":"a","kind":"icmp","target":"1.2.3.4","rate":5}]"#)[0].contains("spec:")
        );
        assert!(
            errs(r#"[{"id":"a","kind":"icmp","target":"1.2.3.4","rate_per_s":-1}]"#)[0]
                .contains("spec:")
        );
        assert!(errs(r#"{"probes":[],"extra":1}"#)[0].contains("spec:"));
        let many: Vec<String> = (0..=MAX_PROBES)
            .map(|i| format!(r#"{{"id":"p{i}","kind":"icmp","target":"10.0.0.1"}}"#))
            .collect();
        assert!(errs(&format!("[{}]", many.join(",")))[0].contains("at most 256"));
    }

    #[test]
    fn targets() {
        assert!(parse_target(Kind::Icmp, "0.0.0.0").is_err());
        assert!(parse_target(Kind::Icmp, "255.255.255.255").is_err());
        assert!(parse_target(Kind::Icmp, "224.0.0.1").is_err());
        assert!(parse_target(Kind::Tcp, "10.0.0.1:0").is_err());
        assert!(parse_target(Kind::Tcp, "::1:80").is_err());
        assert!(parse_target(Kind::Tcp, "[::1]:80").is_ok());
        assert!(parse_target(Kind::Udp, "localhost:53").is_err());
        assert!(parse_target(Kind::Icmp, "fe80::1").is_ok());
    }
}
