//! Probe payloads: one text line per probe, the same bytes for ICMP, UDP and TCP.
//!
//! `KDP1 <token: 16 hex> <seq: 16 hex> ....\n`, padded with `.` to the probe's payload size.
//! The token is random per probe (per process run), so replies meant for another prober (a raw
//! ICMP socket sees every echo reply of its host) or left over from an earlier run never count.
//! A reply counts only if it is byte-for-byte the payload that was sent.

/// Bytes of the header (`KDP1 `, token, space, seq, space); payloads are at least this + 1.
pub const HEADER_LEN: usize = 5 + 16 + 1 + 16 + 1;

/// Writes the payload of probe `seq` into `buf` (its length is the payload size, at least
/// [`HEADER_LEN`] + 1).
pub fn fill(buf: &mut [u8], token: u64, seq: u64) {
    debug_assert!(buf.len() > HEADER_LEN);
    let head = format!("KDP1 {token:016x} {seq:016x} ");
    let n = head.len().min(buf.len());
    buf[..n].copy_from_slice(&head.as_bytes()[..n]);
    for b in &mut buf[n..] {
        *b = b'.';
    }
    if let Some(last) = buf.last_mut() {
        *last = b'\n';
    }
}

/// The payload of probe `seq` as a new vector of `len` bytes.
pub fn make(len: usize, token: u64, seq: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    fill(&mut v, token, seq);
    v
}

/// If `reply` is exactly the payload (of size `len`, with `token`) of some probe, its seq.
pub fn parse(reply: &[u8], len: usize, token: u64) -> Option<u64> {
    if reply.len() != len || len <= HEADER_LEN || !reply.starts_with(b"KDP1 ") {
        return None;
    }
    let hex = |b: &[u8]| -> Option<u64> {
        let s = std::str::from_utf8(b).ok()?;
        u64::from_str_radix(s, 16).ok()
    };
    if hex(&reply[5..21])? != token || reply[21] != b' ' {
        return None;
    }
    let seq = hex(&reply[22..38])?;
    // Cheap full check without allocating: padding and the final newline.
    let body_ok = reply[38] == b' '
        && reply[HEADER_LEN..len - 1].iter().all(|&b| b == b'.')
        && reply[len - 1] == b'\n';
    body_ok.then_some(seq)
}

/// A random 64-bit token from the kernel (`getrandom(2)`), falling back to time and pid.
pub fn random_token() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid writable buffer of b.len() bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let p = make(64, 0xdead_beef, 42);
        assert_eq!(p.len(), 64);
        assert!(p.starts_with(b"KDP1 00000000deadbeef 000000000000002a ."));
        assert_eq!(*p.last().unwrap(), b'\n');
        assert_eq!(parse(&p, 64, 0xdead_beef), Some(42));
        assert_eq!(parse(&p, 64, 0xdead_beee), None, "other token");
        assert_eq!(parse(&p[..63], 64, 0xdead_beef), None, "truncated");
        let mut q = p.clone();
        q[50] = b'x';
        assert_eq!(parse(&q, 64, 0xdead_beef), None, "corrupted");
        let small = make(HEADER_LEN + 1, 7, u64::MAX);
        assert_eq!(parse(&small, HEADER_LEN + 1, 7), Some(u64::MAX));
        assert_eq!(parse(b"", 0, 7), None);
        assert_eq!(parse(&[0xff; 64], 64, 7), None);
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
    }
}
