//! TCP on one held connection (`tcp_mode: persistent`): every probe sends its payload on the same
//! long-lived connection and waits for its echo, back to back, so the probe measures whether an
//! *established* connection survives an upgrade — conntrack, NAT and service-translation state
//! that new connections never exercise — and, when it stalls, for how long (the loss windows, to
//! the probe interval).
//!
//! Echoes come back in order, so the bytes read are matched against a queue of the payloads in
//! flight. A probe that timed out stays in the queue as "abandoned": its echo may still arrive
//! after a stall, and must be consumed to keep the stream aligned. Only a broken connection (the
//! peer's FIN or RST, a socket error, a mismatched echo) ends it: every probe in flight is lost
//! with the reason, the break is counted, and the next probe opens a new connection — a
//! reconnect, which an application would also have had to make.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, Socket};

use crate::engine::{Connections, Driver};
use crate::spec::Probe;

/// Payloads a connection may have in flight before it counts as broken: at 1000 probes/s with a
/// 1 s timeout about 1000 are normal; this many means the peer stopped reading for minutes.
const MAX_QUEUED: usize = 100_000;

struct Pending {
    seq: u64,
    payload: Vec<u8>,
    abandoned: bool,
}

struct Conn {
    sock: Socket,
    connected: bool,
    /// Bytes still to write (payloads queued while connecting or after a short write).
    out: Vec<u8>,
    /// Payloads whose echo has not fully arrived, in send order.
    pending: VecDeque<Pending>,
    /// Echo bytes of the front payload received so far.
    got: usize,
    /// Why the connection failed while sending; ends it at the next [`Driver::ready`] (an
    /// errored socket always polls ready), where the probes in flight can be reported.
    error: Option<String>,
}

/// The persistent TCP driver of one probe.
pub struct Held {
    target: SockAddr,
    addr: SocketAddr,
    conn: Option<Conn>,
    counts: Connections,
}

impl Held {
    /// Checks that a TCP socket can be created for `probe` (in the calling thread's namespace);
    /// connects on the first probe.
    pub fn open(probe: &Probe) -> Result<Held, String> {
        let sa = crate::tcp::checked_target(probe)?;
        Ok(Held {
            target: SockAddr::from(sa),
            addr: sa,
            conn: None,
            counts: Connections::default(),
        })
    }

    /// Ends the connection: every probe still waiting is lost with `reason`.
    fn broken(&mut self, reason: &str, done: &mut dyn FnMut(u64, Result<(), String>)) {
        if let Some(c) = self.conn.take() {
            self.counts.broken += 1;
            for p in c.pending {
                if !p.abandoned {
                    done(p.seq, Err(format!("connection broken: {reason}")));
                }
            }
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        let sock = crate::tcp::stream_socket(self.addr).map_err(|e| format!("socket: {e}"))?;
        let connected = match sock.connect(&self.target) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
            Err(e) => return Err(format!("connect: {e}")),
        };
        self.counts.opened += 1;
        self.conn = Some(Conn {
            sock,
            connected,
            out: Vec::new(),
            pending: VecDeque::new(),
            got: 0,
            error: None,
        });
        Ok(())
    }
}

/// Writes what is queued; `Err` when the socket refuses.
fn flush(c: &mut Conn) -> Result<(), String> {
    while !c.out.is_empty() {
        match c.sock.send(&c.out) {
            Ok(0) => return Err("send: wrote nothing".into()),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("send: {e}")),
        }
    }
    Ok(())
}

/// Reads what arrived and matches it to the queue; `Err` ends the connection.
fn read_echoes(c: &mut Conn, done: &mut dyn FnMut(u64, Result<(), String>)) -> Result<(), String> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match (&c.sock).read(&mut buf) {
            Ok(0) => return Err("closed by peer".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let Some(front) = c.pending.front() else {
                return Err("echo bytes nobody sent".into());
            };
            let want = &front.payload[c.got..];
            let take = want.len().min(rest.len());
            if want[..take] != rest[..take] {
                return Err("echo mismatch".into());
            }
            c.got += take;
            rest = &rest[take..];
            if c.got == front.payload.len() {
                c.got = 0;
                if let Some(p) = c.pending.pop_front()
                    && !p.abandoned
                {
                    done(p.seq, Ok(()));
                }
            }
        }
    }
}

impl Driver for Held {
    fn send(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        if self.conn.is_none() {
            self.connect()?;
        }
        let Some(c) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        if let Some(e) = &c.error {
            return Err(format!("connection broken: {e}"));
        }
        if c.pending.len() >= MAX_QUEUED {
            c.error = Some("the peer stopped reading".into());
            return Err("connection broken: the peer stopped reading".into());
        }
        c.out.extend_from_slice(payload);
        c.pending.push_back(Pending {
            seq,
            payload: payload.to_vec(),
            abandoned: false,
        });
        if c.connected
            && let Err(e) = flush(c)
        {
            c.error = Some(e);
        }
        Ok(())
    }

    fn fds(&self, fds: &mut Vec<libc::pollfd>) {
        if let Some(c) = &self.conn {
            let mut events = libc::POLLIN;
            if !c.connected || !c.out.is_empty() || c.error.is_some() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.sock.as_raw_fd(),
                events,
                revents: 0,
            });
        }
    }

    fn ready(&mut self, fds: &[libc::pollfd], done: &mut dyn FnMut(u64, Result<(), String>)) {
        let Some(pfd) = fds.first() else { return };
        if pfd.revents == 0 {
            return;
        }
        let Some(c) = self.conn.as_mut() else { return };
        let mut result = match c.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if result.is_ok() && !c.connected {
            match c.sock.take_error() {
                Ok(None) if pfd.revents & (libc::POLLOUT | libc::POLLIN) != 0 => c.connected = true,
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => result = Err(format!("connect: {e}")),
            }
        }
        if result.is_ok() && c.connected {
            result = flush(c).and_then(|()| read_echoes(c, done));
        }
        if let Err(e) = result {
            self.broken(&e, done);
        }
    }

    fn abandon(&mut self, seq: u64) {
        if let Some(c) = self.conn.as_mut()
            && let Some(p) = c.pending.iter_mut().find(|p| p.seq == seq)
        {
            p.abandoned = true;
        }
    }

    fn timeout_reason(&self) -> String {
        "timeout (connection held)".to_string()
    }

    fn connections(&self) -> Option<Connections> {
        Some(self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TcpMode;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    fn held(addr: SocketAddr) -> Held {
        let probe = crate::spec::parse_spec(
            &format!(r#"[{{"id":"h","kind":"tcp","target":"{addr}","tcp_mode":"persistent"}}]"#),
            None,
        )
        .expect("spec")
        .remove(0);
        assert_eq!(probe.tcp_mode, TcpMode::Persistent);
        Held::open(&probe).expect("open")
    }

    /// Polls until every probe in `want` has a result (or 5 s pass).
    fn wait(h: &mut Held, want: &[u64]) -> Vec<(u64, Result<(), String>)> {
        let mut got = Vec::new();
        let t0 = Instant::now();
        while want.iter().any(|w| !got.iter().any(|(s, _)| s == w)) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no result for {want:?}: {got:?}"
            );
            let mut fds = Vec::new();
            h.fds(&mut fds);
            crate::engine::ppoll(&mut fds, Duration::from_millis(20));
            h.ready(&fds, &mut |s, r| got.push((s, r)));
        }
        got
    }

    fn echo_server(l: TcpListener, first_conn: impl FnOnce(std::net::TcpStream) + Send + 'static) {
        std::thread::spawn(move || {
            let mut conns = l.incoming().flatten();
            if let Some(s) = conns.next() {
                first_conn(s);
            }
            for s in conns {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut b = [0u8; 4096];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }

    fn echo_all(mut s: std::net::TcpStream) {
        let mut b = [0u8; 4096];
        while let Ok(n) = s.read(&mut b) {
            if n == 0 || s.write_all(&b[..n]).is_err() {
                break;
            }
        }
    }

    #[test]
    fn one_connection_carries_every_probe() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        echo_server(l, echo_all);
        let mut h = held(addr);
        for seq in 0..20 {
            h.send(seq, &crate::payload::make(64, 7, seq))
                .expect("send");
        }
        let got = wait(&mut h, &(0..20).collect::<Vec<_>>());
        assert!(got.iter().all(|(_, r)| r.is_ok()), "{got:?}");
        assert_eq!(
            h.connections(),
            Some(Connections {
                opened: 1,
                broken: 0
            })
        );
    }

    #[test]
    fn a_reset_breaks_it_and_the_next_probe_reconnects() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        // The first connection echoes one payload, then is reset.
        echo_server(l, |mut s| {
            let mut b = [0u8; 64];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
            let sock = socket2::Socket::from(s);
            let _ = sock.set_linger(Some(Duration::ZERO));
            std::thread::sleep(Duration::from_millis(100));
        });
        let mut h = held(addr);
        h.send(0, &crate::payload::make(64, 7, 0)).expect("send");
        assert!(wait(&mut h, &[0])[0].1.is_ok());
        std::thread::sleep(Duration::from_millis(300));
        // The reset is seen by the next probe (or before it); either way that probe is lost.
        let r1 = h.send(1, &crate::payload::make(64, 7, 1));
        let lost = match r1 {
            Err(e) => e,
            Ok(()) => wait(&mut h, &[1])
                .into_iter()
                .find(|(s, _)| *s == 1)
                .and_then(|(_, r)| r.err())
                .expect("probe 1 lost"),
        };
        assert!(lost.starts_with("connection broken"), "{lost}");
        // A new connection for the next probe.
        h.send(2, &crate::payload::make(64, 7, 2)).expect("send");
        assert!(wait(&mut h, &[2])[0].1.is_ok());
        assert_eq!(
            h.connections(),
            Some(Connections {
                opened: 2,
                broken: 1
            })
        );
    }

    #[test]
    fn a_stalled_echo_is_consumed_and_the_connection_goes_on() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        // The first echo comes 300 ms late (a stall), then everything flows.
        echo_server(l, |mut s| {
            let mut b = [0u8; 64];
            if s.read_exact(&mut b).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
                let _ = s.write_all(&b);
            }
            echo_all(s)
        });
        let mut h = held(addr);
        h.send(0, &crate::payload::make(64, 7, 0)).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        // The engine's timeout for probe 0.
        h.abandon(0);
        h.send(1, &crate::payload::make(64, 7, 1)).expect("send");
        let got = wait(&mut h, &[1]);
        assert_eq!(got.len(), 1, "the abandoned probe is not reported: {got:?}");
        assert!(got[0].1.is_ok(), "{got:?}");
        assert_eq!(
            h.connections(),
            Some(Connections {
                opened: 1,
                broken: 0
            })
        );
    }
}
