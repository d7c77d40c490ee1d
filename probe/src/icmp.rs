//! ICMP / ICMPv6 echo probes over an unprivileged ping socket (`SOCK_DGRAM`, allowed when the
//! caller's group is in `net.ipv4.ping_group_range` of the probe's namespace) or a raw socket
//! (root / `CAP_NET_RAW`). Replies are matched by sequence number and the exact payload (which
//! carries the probe's random token), and on raw sockets also by identifier.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::engine::Driver;
use crate::payload;
use crate::spec::{IcmpSocket, Probe};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// `ICMP_FILTER` socket option of raw IPv4 ICMP sockets (level `SOL_RAW`).
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` socket option (level `IPPROTO_ICMPV6`).
const ICMP6_FILTER: libc::c_int = 1;

/// The ICMP driver of one probe.
pub struct Icmp {
    sock: Socket,
    target: SockAddr,
    connected: bool,
    v6: bool,
    raw: bool,
    ident: u16,
    token: u64,
    len: usize,
    pkt: Vec<u8>,
    buf: Vec<u8>,
    last_err: Option<String>,
}

impl Icmp {
    /// Opens the socket for `probe` (in the calling thread's network namespace) and connects it
    /// to the target, so only the target's replies arrive. `ident` is used on raw sockets; ping
    /// sockets get theirs from the kernel. If the target is unreachable right now (no route),
    /// connecting is retried at every send, and those probes are lost with the reason.
    pub fn open(probe: &Probe, token: u64, ident: u16) -> Result<Icmp, String> {
        let ip = probe.target.ip();
        let v6 = ip.is_ipv6();
        let sock = match probe.icmp_socket {
            IcmpSocket::Ping => open_socket(v6, false).map_err(|e| ping_error(v6, &e))?,
            IcmpSocket::Raw => open_socket(v6, true).map_err(|e| raw_error(&e))?,
            IcmpSocket::Auto => match open_socket(v6, false) {
                Ok(s) => s,
                Err(ping) => open_socket(v6, true).map_err(|raw| {
                    format!(
                        "no ICMP socket: {}; {}",
                        ping_error(v6, &ping),
                        raw_error(&raw)
                    )
                })?,
            },
        };
        let (sock, raw) = sock;
        let target = SockAddr::from(SocketAddr::new(ip, 0));
        let connected = sock.connect(&target).is_ok();
        let len = usize::from(probe.payload_bytes);
        Ok(Icmp {
            sock,
            target,
            connected,
            v6,
            raw,
            ident,
            token,
            len,
            pkt: vec![0; 8 + len],
            buf: vec![0; 65536],
            last_err: None,
        })
    }

    /// `"ping"` or `"raw"`.
    pub fn socket_kind(&self) -> &'static str {
        if self.raw { "raw" } else { "ping" }
    }
}

fn open_socket(v6: bool, raw: bool) -> io::Result<(Socket, bool)> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let ty = if raw { Type::RAW } else { Type::DGRAM };
    let sock = Socket::new(domain, ty.nonblocking().cloexec(), Some(proto))?;
    if raw {
        set_reply_filter(&sock, v6)?;
    }
    Ok((sock, raw))
}

fn ping_error(v6: bool, e: &io::Error) -> String {
    let family = if v6 { "ICMPv6" } else { "ICMP" };
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "{family} ping socket not allowed ({e}): this group is outside net.ipv4.ping_group_range \
             of the namespace"
        ),
        _ => format!("{family} ping socket: {e}"),
    }
}

fn raw_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("raw socket not allowed ({e}): needs root or CAP_NET_RAW")
        }
        _ => format!("raw socket: {e}"),
    }
}

/// Lets only echo replies through to a raw socket (every raw ICMP socket otherwise sees every
/// ICMP message of the namespace).
fn set_reply_filter(sock: &Socket, v6: bool) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    // SAFETY: the option values are plain integers of the size given.
    let rc = unsafe {
        if v6 {
            // Bit set = blocked. Block all, pass echo replies.
            let mut f = [u32::MAX; 8];
            let t = usize::from(ECHO_REPLY_V6);
            f[t >> 5] &= !(1u32 << (t & 31));
            libc::setsockopt(
                fd,
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                f.as_ptr().cast(),
                std::mem::size_of_val(&f) as libc::socklen_t,
            )
        } else {
            let mask: u32 = !(1u32 << ECHO_REPLY_V4);
            libc::setsockopt(
                fd,
                libc::SOL_RAW,
                ICMP_FILTER,
                (&mask as *const u32).cast(),
                4,
            )
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an echo request into `pkt` (8-byte header + payload).
pub fn build_request(pkt: &mut [u8], v6: bool, ident: u16, seq: u64, payload: &[u8]) {
    pkt[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    pkt[1] = 0;
    pkt[2..4].copy_from_slice(&[0, 0]);
    pkt[4..6].copy_from_slice(&ident.to_be_bytes());
    pkt[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
    pkt[8..8 + payload.len()].copy_from_slice(payload);
    if !v6 {
        // ICMPv6 checksums cover a pseudo-header: the kernel fills them in.
        let c = checksum(&pkt[..8 + payload.len()]);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

/// If `data` (as read from the socket: with the IPv4 header on raw IPv4 sockets) is an echo
/// reply to one of this probe's requests, its sequence number.
pub fn parse_reply(
    data: &[u8],
    v6: bool,
    raw: bool,
    ident: u16,
    len: usize,
    token: u64,
) -> Option<u64> {
    let icmp = if raw && !v6 {
        let first = *data.first()?;
        if first >> 4 != 4 {
            return None;
        }
        data.get(usize::from(first & 0x0f) * 4..)?
    } else {
        data
    };
    if icmp.len() < 8 {
        return None;
    }
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp[0] != want || icmp[1] != 0 {
        return None;
    }
    if raw && u16::from_be_bytes([icmp[4], icmp[5]]) != ident {
        return None;
    }
    let seq16 = u16::from_be_bytes([icmp[6], icmp[7]]);
    let seq = payload::parse(&icmp[8..], len, token)?;
    (seq as u16 == seq16).then_some(seq)
}

impl Driver for Icmp {
    fn send(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        if !self.connected {
            self.sock
                .connect(&self.target)
                .map_err(|e| format!("connect: {e}"))?;
            self.connected = true;
        }
        build_request(&mut self.pkt, self.v6, self.ident, seq, payload);
        send_all(&self.sock, &self.pkt)
    }

    fn fds(&self, fds: &mut Vec<libc::pollfd>) {
        fds.push(poll_in(&self.sock));
    }

    fn ready(&mut self, fds: &[libc::pollfd], done: &mut dyn FnMut(u64, Result<(), String>)) {
        if fds.first().is_none_or(|f| f.revents == 0) {
            return;
        }
        for _ in 0..1024 {
            match recv(&self.sock, &mut self.buf) {
                Ok(n) => {
                    let data = &self.buf[..n];
                    if let Some(seq) =
                        parse_reply(data, self.v6, self.raw, self.ident, self.len, self.token)
                    {
                        self.last_err = None;
                        done(seq, Ok(()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A pending socket error (e.g. an ICMP error for an earlier packet): not tied
                // to one probe; remembered for the timeout reason.
                Err(e) => self.last_err = Some(e.to_string()),
            }
        }
    }

    fn abandon(&mut self, _: u64) {}

    fn timeout_reason(&self) -> String {
        match &self.last_err {
            Some(e) => format!("timeout (socket error: {e})"),
            None => "timeout".to_string(),
        }
    }
}

/// `send(2)` of a whole datagram; a short write is an error.
pub(crate) fn send_all(sock: &Socket, data: &[u8]) -> Result<(), String> {
    match sock.send(data) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(n) => Err(format!("send: short write ({n} of {})", data.len())),
        Err(e) => Err(format!("send: {e}")),
    }
}

/// The `poll(2)` entry waiting for a socket to become readable.
pub(crate) fn poll_in(sock: &Socket) -> libc::pollfd {
    libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `recv(2)` into a plain byte buffer.
pub(crate) fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() writable bytes.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A raw-socket identifier for probe number `index` of this process: distinct for every probe
/// of the process (an odd multiplier is a bijection modulo 2^16). Other processes' probes may
/// share it; their payload tokens differ, so their replies never count.
pub fn ident_for(index: usize) -> u16 {
    let pid = std::process::id() as u16;
    pid.wrapping_add((index as u16).wrapping_mul(0x9e37))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_known_vectors() {
        // RFC 1071 example.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0xff]), !0xff00);
        // A packet with its checksum filled in sums to zero.
        let p = payload::make(56, 9, 3);
        let mut pkt = vec![0; 64];
        build_request(&mut pkt, false, 0x1234, 3, &p);
        assert_eq!(checksum(&pkt), 0);
    }

    fn reply_of(req: &[u8], v6: bool) -> Vec<u8> {
        let mut r = req.to_vec();
        r[0] = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
        r
    }

    #[test]
    fn replies_match_by_ident_seq_and_payload() {
        let token = 0xabcdef;
        let p = payload::make(64, token, 70000);
        let mut pkt = vec![0; 72];
        build_request(&mut pkt, false, 7, 70000, &p);
        let reply = reply_of(&pkt, false);
        // Ping socket: no IP header, ident not checked.
        assert_eq!(
            parse_reply(&reply, false, false, 99, 64, token),
            Some(70000)
        );
        // Raw IPv4: 20-byte IP header first, ident checked.
        let mut ip = vec![0x45u8];
        ip.extend_from_slice(&[0; 19]);
        ip.extend_from_slice(&reply);
        assert_eq!(parse_reply(&ip, false, true, 7, 64, token), Some(70000));
        assert_eq!(parse_reply(&ip, false, true, 8, 64, token), None, "ident");
        // IP options (IHL 6).
        let mut ipo = vec![0x46u8];
        ipo.extend_from_slice(&[0; 23]);
        ipo.extend_from_slice(&reply);
        assert_eq!(parse_reply(&ipo, false, true, 7, 64, token), Some(70000));
        // Not a reply, other token, wrong seq16, truncated, garbage.
        assert_eq!(parse_reply(&pkt, false, false, 7, 64, token), None);
        assert_eq!(parse_reply(&reply, false, false, 7, 64, token + 1), None);
        let mut bad = reply.clone();
        bad[7] ^= 1;
        assert_eq!(parse_reply(&bad, false, false, 7, 64, token), None);
        assert_eq!(parse_reply(&reply[..40], false, false, 7, 64, token), None);
        assert_eq!(parse_reply(&[], false, true, 7, 64, token), None);
        assert_eq!(parse_reply(&[0x4f], false, true, 7, 64, token), None);
        // ICMPv6.
        let mut pkt6 = vec![0; 72];
        build_request(&mut pkt6, true, 7, 5, &payload::make(64, token, 5));
        assert_eq!(pkt6[0], ECHO_REQUEST_V6);
        let r6 = reply_of(&pkt6, true);
        assert_eq!(parse_reply(&r6, true, true, 7, 64, token), Some(5));
        assert_eq!(parse_reply(&r6, false, false, 7, 64, token), None);
    }

    #[test]
    fn idents_differ_per_probe() {
        let all: std::collections::HashSet<u16> = (0..256).map(ident_for).collect();
        assert_eq!(all.len(), 256);
    }
}
