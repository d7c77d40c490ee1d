//! `kubedrill-probe serve`: echo responders. TCP echoes every byte it reads back on the same
//! connection (so each line or frame comes back as sent) until the peer closes; UDP sends every
//! datagram back to its sender from the address it was sent to (`IP_PKTINFO` /
//! `IPV6_PKTINFO`, so a wildcard bind on a multi-address host still answers from the right
//! source).

use std::io::{self, Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Most TCP connections served at once; more are closed at accept.
pub const MAX_TCP_CONNECTIONS: usize = 4096;
/// An idle TCP connection is closed after this long.
pub const TCP_IDLE: Duration = Duration::from_secs(30);

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct Counters {
    /// TCP connections accepted.
    pub tcp_connections: AtomicU64,
    /// UDP datagrams echoed.
    pub udp_datagrams: AtomicU64,
    active: AtomicUsize,
}

/// Binds a TCP listener (fails with a clear message).
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("bind TCP {addr}: {e}"))
}

/// Binds a UDP socket and asks for packet info (to answer from the address asked).
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind(addr).map_err(|e| format!("bind UDP {addr}: {e}"))?;
    let fd = s.as_raw_fd();
    let one: libc::c_int = 1;
    let (level, opt) = if addr.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: plain int option.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "UDP {addr}: packet info: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(s)
}

/// Accepts connections forever, one small thread per connection.
pub fn tcp_accept_loop(l: TcpListener, counters: Arc<Counters>) {
    for stream in l.incoming() {
        let Ok(stream) = stream else {
            // EMFILE and friends: back off briefly rather than spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
        if counters.active.fetch_add(1, Ordering::SeqCst) >= MAX_TCP_CONNECTIONS {
            counters.active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let c = counters.clone();
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                echo_tcp(stream);
                c.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            counters.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn echo_tcp(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(TCP_IDLE));
    let _ = s.set_write_timeout(Some(TCP_IDLE));
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Echoes datagrams forever.
pub fn udp_echo_loop(s: UdpSocket, counters: Arc<Counters>) {
    let fd = s.as_raw_fd();
    let mut buf = vec![0u8; 65536];
    // u64 array: cmsg buffers must be aligned for cmsghdr.
    let mut ctrl = [0u64; 32];
    loop {
        // SAFETY: zeroed sockaddr_storage and msghdr are valid; all pointers below point into
        // live buffers of the lengths given.
        let mut from: libc::sockaddr_storage = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&ctrl);
        let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        if n < 0 {
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        let n = n as usize;
        // Keep only the packet-info control message, rewritten for sending.
        let reply_ctrl_len = unsafe { rewrite_pktinfo(&mut msg, size_of_val(&ctrl)) };
        iov.iov_len = n;
        msg.msg_iov = &mut iov;
        msg.msg_controllen = reply_ctrl_len;
        if reply_ctrl_len == 0 {
            msg.msg_control = std::ptr::null_mut();
        }
        msg.msg_flags = 0;
        let mut sent = unsafe { libc::sendmsg(fd, &msg, 0) };
        if sent < 0 && reply_ctrl_len != 0 {
            // Fall back to the kernel's choice of source address.
            msg.msg_control = std::ptr::null_mut();
            msg.msg_controllen = 0;
            sent = unsafe { libc::sendmsg(fd, &msg, 0) };
        }
        if sent >= 0 {
            counters.udp_datagrams.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Finds the received `IP_PKTINFO` / `IPV6_PKTINFO` in `msg`'s control buffer and rewrites it,
/// in place at the buffer's start, into the one control message that makes the reply leave from
/// the address the request was sent to. Returns the control length to send (0: none found).
///
/// # Safety
/// `msg` must be a msghdr just filled by `recvmsg` with a control buffer aligned for cmsghdr
/// and `cap` bytes long.
unsafe fn rewrite_pktinfo(msg: &mut libc::msghdr, cap: usize) -> usize {
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            if level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let reply = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: info.ipi_addr,
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                return write_cmsg(msg, cap, libc::IPPROTO_IP, libc::IP_PKTINFO, reply);
            }
            if level == libc::IPPROTO_IPV6 && ty == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return write_cmsg(msg, cap, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
        0
    }
}

/// Writes one control message holding `data` at the start of `msg`'s control buffer.
///
/// # Safety
/// The control buffer must be aligned for cmsghdr and `cap` bytes long.
unsafe fn write_cmsg<T>(msg: &mut libc::msghdr, cap: usize, level: i32, ty: i32, data: T) -> usize {
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<T>() as u32) as usize;
        if msg.msg_control.is_null() || space > cap {
            return 0;
        }
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(msg);
        if c.is_null() {
            return 0;
        }
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<T>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), data);
        space
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_and_tcp_echo_on_loopback() {
        let counters = Arc::new(Counters::default());
        let u = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let uaddr = u.local_addr().unwrap();
        let c = counters.clone();
        std::thread::spawn(move || udp_echo_loop(u, c));
        let l = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let taddr = l.local_addr().unwrap();
        let c = counters.clone();
        std::thread::spawn(move || tcp_accept_loop(l, c));

        // Wildcard-bound UDP answers from the address asked (127.0.0.2 is loopback too).
        let w = bind_udp("0.0.0.0:0".parse().unwrap()).unwrap();
        let wport = w.local_addr().unwrap().port();
        let c = counters.clone();
        std::thread::spawn(move || udp_echo_loop(w, c));

        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.connect(uaddr).unwrap();
        client.send(b"hello\n").unwrap();
        let mut b = [0u8; 64];
        let n = client.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"hello\n");

        let c2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c2.connect(("127.0.0.2", wport)).unwrap();
        c2.send(b"x").unwrap();
        let n = c2.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"x", "answered from 127.0.0.2 (connected socket)");

        let mut t = TcpStream::connect(taddr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for line in [&b"one\n"[..], b"two\n"] {
            t.write_all(line).unwrap();
            let mut got = vec![0; line.len()];
            t.read_exact(&mut got).unwrap();
            assert_eq!(got, line);
        }
        // The echo thread counts after sending: give it a moment.
        for _ in 0..200 {
            if counters.udp_datagrams.load(Ordering::Relaxed) == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(counters.udp_datagrams.load(Ordering::Relaxed), 2);
        assert_eq!(counters.tcp_connections.load(Ordering::Relaxed), 1);
    }
}
