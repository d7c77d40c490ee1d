//! Digests and vendor checksum files: coreutils `HASH  name` (`sha256sum`/`sha512sum` output,
//! with or without the `*` binary marker) and BSD `SHA256 (name) = HASH` (Fedora, Rocky),
//! SHA-256 or SHA-512, anywhere among other lines (PGP armour, comments).

use super::ImageError;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;

/// A hash algorithm vendors publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// SHA-256 (64 hex digits).
    Sha256,
    /// SHA-512 (128 hex digits).
    Sha512,
}

impl Algorithm {
    fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        })
    }
}

/// An expected or computed digest: algorithm plus lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Lowercase hex.
    pub hex: String,
}

impl Digest {
    /// A digest from hex text; the length says the algorithm. `None` unless 64 or 128 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let algorithm = Algorithm::from_hex_len(hex.len())?;
        hex.bytes().all(|b| b.is_ascii_hexdigit()).then(|| Digest {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// Find `file_name`'s digest in a checksum file's text. `origin` (the file's URL) is named in
/// the error when it is missing. SHA-512 is preferred when both are listed.
pub fn find(text: &str, file_name: &str, origin: &str) -> Result<Digest, ImageError> {
    let mut found: Option<Digest> = None;
    for line in text.lines() {
        let Some((name, digest)) = parse_line(line.trim()) else {
            continue;
        };
        if name != file_name {
            continue;
        }
        let better = match &found {
            None => true,
            Some(d) => d.algorithm == Algorithm::Sha256 && digest.algorithm == Algorithm::Sha512,
        };
        if better {
            found = Some(digest);
        }
    }
    found.ok_or_else(|| ImageError::ChecksumNotFound {
        url: origin.to_owned(),
        file_name: file_name.to_owned(),
    })
}

/// One line of either format → (file name, digest).
fn parse_line(line: &str) -> Option<(&str, Digest)> {
    // BSD: `SHA256 (name) = hex`.
    for (tag, algorithm) in [
        ("SHA256 (", Algorithm::Sha256),
        ("SHA512 (", Algorithm::Sha512),
    ] {
        if let Some(rest) = line.strip_prefix(tag) {
            let (name, hex) = rest.rsplit_once(") = ")?;
            let d = Digest::from_hex(hex.trim())?;
            return (d.algorithm == algorithm).then_some((strip_dot_slash(name), d));
        }
    }
    // GNU: `hex  name` or `hex *name`.
    let (hex, rest) = line.split_once(char::is_whitespace)?;
    let d = Digest::from_hex(hex)?;
    let name = rest.trim_start();
    let name = name.strip_prefix('*').unwrap_or(name);
    (!name.is_empty()).then_some((strip_dot_slash(name), d))
}

fn strip_dot_slash(name: &str) -> &str {
    name.strip_prefix("./").unwrap_or(name)
}

/// SHA-256 (always) and SHA-512 (when asked) of a stream, fed as it is read.
pub struct Hasher {
    sha256: Sha256,
    sha512: Option<Sha512>,
}

impl Hasher {
    /// A hasher; `with_sha512` also computes SHA-512.
    pub fn new(with_sha512: bool) -> Self {
        Hasher {
            sha256: Sha256::new(),
            sha512: with_sha512.then(Sha512::new),
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
    }

    /// The SHA-256 hex, and the SHA-512 hex when it was computed.
    pub fn finish(self) -> (String, Option<String>) {
        (
            hex(&self.sha256.finalize()),
            self.sha512.map(|h| hex(&h.finalize())),
        )
    }
}

/// The SHA-256 hex of a file.
pub fn sha256_file(path: &std::path::Path) -> Result<String, ImageError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(ImageError::io("reading", path))?;
    let mut h = Hasher::new(false);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(ImageError::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish().0)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
