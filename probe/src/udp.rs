//! UDP echo probes: one connected UDP socket per probe (a fixed 5-tuple, i.e. one long-lived
//! flow through conntrack / service translation), one datagram per probe, echoed by
//! `kubedrill-probe serve --udp`. A reply counts only if it comes from the target address (the
//! socket is connected: a reply from a backend's own address after a reverse-NAT failure is
//! dropped by the kernel, so it shows up as loss) and is byte-for-byte the payload.

use std::io;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::engine::Driver;
use crate::icmp::{poll_in, recv, send_all};
use crate::payload;
use crate::spec::{Probe, Target};

/// The UDP driver of one probe.
pub struct Udp {
    sock: Socket,
    target: SockAddr,
    connected: bool,
    token: u64,
    len: usize,
    buf: Vec<u8>,
    last_err: Option<String>,
}

impl Udp {
    /// Opens and connects the probe's socket (in the calling thread's network namespace). If the
    /// target is unreachable right now (no route), connecting is retried at every send, and
    /// those probes are lost with the reason.
    pub fn open(probe: &Probe, token: u64) -> Result<Udp, String> {
        let Target::Sock(sa) = probe.target else {
            return Err("udp probe without a port".to_string());
        };
        let sock = Socket::new(
            Domain::for_address(sa),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )
        .map_err(|e| format!("UDP socket: {e}"))?;
        let target = SockAddr::from(sa);
        let connected = sock.connect(&target).is_ok();
        Ok(Udp {
            sock,
            target,
            connected,
            token,
            len: usize::from(probe.payload_bytes),
            buf: vec![0; 65536],
            last_err: None,
        })
    }
}

impl Driver for Udp {
    fn send(&mut self, _seq: u64, payload: &[u8]) -> Result<(), String> {
        if !self.connected {
            self.sock
                .connect(&self.target)
                .map_err(|e| format!("connect: {e}"))?;
            self.connected = true;
        }
        send_all(&self.sock, payload)
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
                    if let Some(seq) = payload::parse(&self.buf[..n], self.len, self.token) {
                        self.last_err = None;
                        done(seq, Ok(()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors (port unreachable → ECONNREFUSED, host unreachable…) surface here,
                // not tied to one probe: remembered for the timeout reason.
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
