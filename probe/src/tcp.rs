//! TCP connect-echo probes: every probe is a new connection (non-blocking connect, send the
//! payload, read the whole echo, close with a reset so the prober keeps no TIME_WAIT). A probe
//! succeeds only if the full echo arrives within the timeout; its RTT covers the handshake too.
//! New connections are what break first when service translation, NAT, DSR or conntrack state
//! go wrong during an upgrade.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::engine::Driver;
use crate::spec::{Probe, Target};

enum State {
    Connecting,
    Reading { got: usize },
}

struct Conn {
    sock: Socket,
    state: State,
    payload: Vec<u8>,
    buf: Vec<u8>,
}

/// The TCP driver of one probe.
pub struct Tcp {
    target: SockAddr,
    addr: SocketAddr,
    conns: BTreeMap<u64, Conn>,
}

impl Tcp {
    /// Checks that a TCP socket can be created for `probe` (in the calling thread's namespace).
    pub fn open(probe: &Probe) -> Result<Tcp, String> {
        let sa = checked_target(probe)?;
        Ok(Tcp {
            target: SockAddr::from(sa),
            addr: sa,
            conns: BTreeMap::new(),
        })
    }

    /// Connections in flight.
    pub fn in_flight(&self) -> usize {
        self.conns.len()
    }
}

/// The probe's `IP:PORT`, once a TCP socket for it could be made (in the calling thread's
/// namespace): shared by the connect-echo and the held-connection drivers.
pub(crate) fn checked_target(probe: &Probe) -> Result<SocketAddr, String> {
    let Target::Sock(sa) = probe.target else {
        return Err("tcp probe without a port".to_string());
    };
    stream_socket(sa).map_err(|e| format!("TCP socket: {e}"))?;
    Ok(sa)
}

/// A non-blocking TCP socket without Nagle's delay.
pub(crate) fn stream_socket(sa: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(sa),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_tcp_nodelay(true)?;
    Ok(s)
}

/// A connect-echo socket: closed with RST, so no TIME_WAIT on the prober however high the rate.
fn new_socket(sa: SocketAddr) -> io::Result<Socket> {
    let s = stream_socket(sa)?;
    s.set_linger(Some(Duration::ZERO))?;
    Ok(s)
}

/// Sends the payload on a connected socket; `Err` on a short write or an error.
fn write_payload(c: &mut Conn) -> Result<(), String> {
    match c.sock.send(&c.payload) {
        Ok(n) if n == c.payload.len() => {
            c.state = State::Reading { got: 0 };
            Ok(())
        }
        Ok(n) => Err(format!("send: short write ({n} of {})", c.payload.len())),
        Err(e) => Err(format!("send: {e}")),
    }
}

impl Driver for Tcp {
    fn send(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        let sock = new_socket(self.addr).map_err(|e| format!("socket: {e}"))?;
        let mut c = Conn {
            sock,
            state: State::Connecting,
            payload: payload.to_vec(),
            buf: vec![0; payload.len()],
        };
        match c.sock.connect(&self.target) {
            Ok(()) => write_payload(&mut c)?,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(format!("connect: {e}")),
        }
        self.conns.insert(seq, c);
        Ok(())
    }

    fn fds(&self, fds: &mut Vec<libc::pollfd>) {
        for c in self.conns.values() {
            fds.push(libc::pollfd {
                fd: c.sock.as_raw_fd(),
                events: match c.state {
                    State::Connecting => libc::POLLOUT,
                    State::Reading { .. } => libc::POLLIN,
                },
                revents: 0,
            });
        }
    }

    fn ready(&mut self, fds: &[libc::pollfd], done: &mut dyn FnMut(u64, Result<(), String>)) {
        let mut finished: Vec<(u64, Result<(), String>)> = Vec::new();
        for ((seq, c), pfd) in self.conns.iter_mut().zip(fds) {
            if pfd.revents == 0 {
                continue;
            }
            if let State::Connecting = c.state {
                match c.sock.take_error() {
                    Ok(Some(e)) => {
                        finished.push((*seq, Err(format!("connect: {e}"))));
                        continue;
                    }
                    Err(e) => {
                        finished.push((*seq, Err(format!("connect: {e}"))));
                        continue;
                    }
                    Ok(None) => {}
                }
                if let Err(e) = write_payload(c) {
                    finished.push((*seq, Err(e)));
                    continue;
                }
                // The echo may already be there on a fast path; otherwise wait for POLLIN.
            }
            if let State::Reading { got } = &mut c.state {
                loop {
                    match (&c.sock).read(&mut c.buf[*got..]) {
                        Ok(0) => {
                            finished.push((
                                *seq,
                                Err(format!(
                                    "closed by peer after {} of {} echo bytes",
                                    got,
                                    c.payload.len()
                                )),
                            ));
                            break;
                        }
                        Ok(n) => {
                            *got += n;
                            if *got == c.payload.len() {
                                let r = if c.buf == c.payload {
                                    Ok(())
                                } else {
                                    Err("echo mismatch".to_string())
                                };
                                finished.push((*seq, r));
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            finished.push((*seq, Err(format!("read: {e}"))));
                            break;
                        }
                    }
                }
            }
        }
        for (seq, r) in finished {
            self.conns.remove(&seq);
            done(seq, r);
        }
    }

    fn abandon(&mut self, seq: u64) {
        self.conns.remove(&seq);
    }

    fn timeout_reason(&self) -> String {
        "timeout".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_on_loopback_is_a_connect_error() {
        // Bind then drop a listener to find a port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let sa: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut t = Tcp {
            target: SockAddr::from(sa),
            addr: sa,
            conns: BTreeMap::new(),
        };
        let p = crate::payload::make(64, 1, 0);
        let mut result = None;
        match t.send(0, &p) {
            Err(e) => result = Some(Err(e)),
            Ok(()) => {
                for _ in 0..100 {
                    let mut fds = Vec::new();
                    t.fds(&mut fds);
                    crate::engine::ppoll(&mut fds, Duration::from_millis(10));
                    t.ready(&fds, &mut |_, r| result = Some(r));
                    if result.is_some() {
                        break;
                    }
                }
            }
        }
        let e = result.expect("resolved").unwrap_err();
        assert!(e.starts_with("connect: Connection refused"), "{e}");
        assert_eq!(t.in_flight(), 0);
    }
}
