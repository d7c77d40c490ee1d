//! OpenSSH `known_hosts` files: parse once, match hosts, record new keys.
//!
//! Supported: plain and comma-separated host lists, `[host]:port` for non-22 ports, hashed
//! `|1|salt|hash` entries, `*`/`?` wildcards and `!` negation, and `@revoked` markers (a revoked
//! key is always refused). `@cert-authority` lines are skipped: kubedrill does not accept host
//! certificates. Malformed lines are skipped and reported, never fatal (OpenSSH does the same).

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey, parse_public_key_base64};
use sha1::Sha1;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A parsed `known_hosts` file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Lines that could not be parsed (line number, reason).
    pub skipped: Vec<(usize, String)>,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    marker: Marker,
    patterns: Vec<Pattern>,
    key: PublicKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
}

#[derive(Debug, Clone)]
enum Pattern {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    Glob { negated: bool, glob: String },
}

/// What a file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The key is recorded for this host (line).
    Known { line: usize },
    /// The host has no key of this algorithm on record.
    Unknown,
    /// The host is recorded with a different key of the same algorithm.
    Changed { line: usize },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
}

/// The name OpenSSH records a host under: `host`, or `[host]:port` when the port is not 22.
pub fn host_port_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:…` fingerprint, as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl KnownHosts {
    /// Read a file; a missing file is an empty set (so `accept-new` can create it).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = match crate::files::read_text_bounded(path, crate::files::MAX_RECORD_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        Ok(Self::parse(path, &text))
    }

    /// Parse file contents (the path is kept for messages and for appending).
    pub fn parse(path: &Path, text: &str) -> Self {
        let mut kh = KnownHosts {
            path: path.to_path_buf(),
            ..Default::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut fields = l.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let marker = match first {
                "@revoked" => Marker::Revoked,
                "@cert-authority" => continue,
                m if m.starts_with('@') => {
                    kh.skipped.push((line, format!("unknown marker {m}")));
                    continue;
                }
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields.next().unwrap_or_default();
            }
            let (Some(_alg), Some(b64)) = (fields.next(), fields.next()) else {
                kh.skipped
                    .push((line, "expected: hosts key-type base64-key".into()));
                continue;
            };
            let key = match parse_public_key_base64(b64) {
                Ok(k) => k,
                Err(e) => {
                    kh.skipped.push((line, format!("unreadable key: {e}")));
                    continue;
                }
            };
            let patterns = first.split(',').filter_map(parse_pattern).collect();
            kh.entries.push(Entry {
                line,
                marker,
                patterns,
                key,
            });
        }
        kh
    }

    /// The file this set was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Look up `key` for `host:port` (OpenSSH's rules: a matching revoked key wins, then an
    /// exact match, then a different key of the same algorithm means "changed").
    pub fn lookup(&self, host: &str, port: u16, key: &PublicKey) -> Lookup {
        let name = host_port_name(host, port);
        let mut changed = None;
        let mut known = None;
        for e in self
            .entries
            .iter()
            .filter(|e| host_matches(&e.patterns, &name))
        {
            let same = e.key.key_data() == key.key_data();
            match e.marker {
                Marker::Revoked if same => return Lookup::Revoked { line: e.line },
                Marker::Revoked => {}
                Marker::None if same => known = known.or(Some(e.line)),
                Marker::None if e.key.algorithm() == key.algorithm() => {
                    changed = changed.or(Some(e.line))
                }
                Marker::None => {}
            }
        }
        match (known, changed) {
            (Some(line), _) => Lookup::Known { line },
            (None, Some(line)) => Lookup::Changed { line },
            (None, None) => Lookup::Unknown,
        }
    }

    /// Append `host:port key` to the file (creating it 0600 and its directory) and remember it.
    pub fn learn(&mut self, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let name = host_port_name(host, port);
        let openssh = key
            .to_openssh()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // Drop the comment: known_hosts lines are `name type base64`.
        let mut parts = openssh.split_whitespace();
        let (Some(alg), Some(b64)) = (parts.next(), parts.next()) else {
            return Err(std::io::Error::other("cannot encode host key"));
        };
        let existing = std::fs::read(&self.path).unwrap_or_default();
        let mut f = crate::files::append_private(&self.path)?;
        let sep = if existing.is_empty() || existing.ends_with(b"\n") {
            ""
        } else {
            "\n"
        };
        writeln!(f, "{sep}{name} {alg} {b64}")?;
        let line = String::from_utf8_lossy(&existing).lines().count() + 1;
        self.entries.push(Entry {
            line,
            marker: Marker::None,
            patterns: vec![Pattern::Glob {
                negated: false,
                glob: name,
            }],
            key: key.clone(),
        });
        Ok(())
    }
}

fn parse_pattern(p: &str) -> Option<Pattern> {
    if let Some(rest) = p.strip_prefix("|1|") {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (salt, hash) = rest.split_once('|')?;
        return Some(Pattern::Hashed {
            salt: b64.decode(salt).ok()?,
            hash: b64.decode(hash).ok()?,
        });
    }
    let (negated, glob) = match p.strip_prefix('!') {
        Some(g) => (true, g),
        None => (false, p),
    };
    Some(Pattern::Glob {
        negated,
        glob: glob.to_ascii_lowercase(),
    })
}

/// OpenSSH's rule: any negated match excludes the host; otherwise any positive match includes.
fn host_matches(patterns: &[Pattern], name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let mut positive = false;
    for p in patterns {
        match p {
            Pattern::Hashed { salt, hash } => {
                if let Ok(mac) = Hmac::<Sha1>::new_from_slice(salt)
                    && mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok()
                {
                    positive = true;
                }
            }
            Pattern::Glob { negated, glob } => {
                if glob_match(glob.as_bytes(), lower.as_bytes()) {
                    if *negated {
                        return false;
                    }
                    positive = true;
                }
            }
        }
    }
    positive
}

/// `*` and `?` wildcards, iterative (no recursion on hostile patterns).
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICuKpu8OjQVfil9ZCy98Y3Lg7cXIUg/lgHvl1aVGSxB0";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBAu4qaFv0mYKucio40MOxXQSkNlVPTVNXuR6UkC2wYR";

    fn key(b64: &str) -> PublicKey {
        parse_public_key_base64(b64).expect("test key")
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*.example.com", b"a.example.com"));
        assert!(glob_match(b"10.0.0.?", b"10.0.0.7"));
        assert!(!glob_match(b"10.0.0.?", b"10.0.0.17"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a*b*c", b"aXbY"));
    }

    #[test]
    fn lookups() {
        let text = format!(
            "# comment\n\
             [10.0.0.1]:2222,node1 ssh-ed25519 {K1}\n\
             garbage\n\
             *.lab,!bad.lab ssh-ed25519 {K1}\n\
             @revoked * ssh-ed25519 {K2}\n\
             @cert-authority *.x ssh-ed25519 {K1}\n"
        );
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert_eq!(kh.skipped.len(), 1);
        assert_eq!(
            kh.lookup("10.0.0.1", 2222, &key(K1)),
            Lookup::Known { line: 2 }
        );
        assert_eq!(kh.lookup("10.0.0.1", 22, &key(K1)), Lookup::Unknown);
        assert_eq!(
            kh.lookup("node1", 22, &key(K2)),
            Lookup::Revoked { line: 5 }
        );
        assert_eq!(kh.lookup("w1.lab", 22, &key(K1)), Lookup::Known { line: 4 });
        assert_eq!(kh.lookup("bad.lab", 22, &key(K1)), Lookup::Unknown);
    }

    #[test]
    fn changed_key() {
        let text = format!("[127.0.1.10]:2200 ssh-ed25519 {K1}\n");
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        // K2 is revoked nowhere here: a different ed25519 key is a changed key.
        assert_eq!(
            kh.lookup("127.0.1.10", 2200, &key(K2)),
            Lookup::Changed { line: 1 }
        );
    }

    #[test]
    fn hashed_entry() {
        // `ssh-keygen -H` style entry for "[127.0.0.1]:2022", computed here.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = [7u8; 20];
        let mac = Hmac::<Sha1>::new_from_slice(&salt)
            .expect("hmac")
            .chain_update(b"[127.0.0.1]:2022")
            .finalize()
            .into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {K1}\n",
            b64.encode(salt),
            b64.encode(mac)
        );
        let kh = KnownHosts::parse(Path::new("kh"), &line);
        assert_eq!(
            kh.lookup("127.0.0.1", 2022, &key(K1)),
            Lookup::Known { line: 1 }
        );
        assert_eq!(kh.lookup("127.0.0.2", 2022, &key(K1)), Lookup::Unknown);
    }

    #[test]
    fn learn_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/known_hosts");
        let mut kh = KnownHosts::load(&p).expect("load");
        kh.learn("127.0.1.5", 2022, &key(K1)).expect("learn");
        let again = KnownHosts::load(&p).expect("reload");
        assert_eq!(
            again.lookup("127.0.1.5", 2022, &key(K1)),
            Lookup::Known { line: 1 }
        );
        assert!(matches!(
            kh.lookup("127.0.1.5", 2022, &key(K1)),
            Lookup::Known { .. }
        ));
    }
}
