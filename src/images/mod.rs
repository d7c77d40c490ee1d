//! OS images for lab VMs: a [`Catalog`] of vendor cloud images that [`pull`] downloads,
//! verifies and caches, and offline [`build`] recipes (Debian 12 from Debian's package mirror
//! with mmdebstrap). Every cached image lives in an [`ImageCache`] directory with a
//! [`Manifest`] beside its disk.

pub mod build;
pub mod cache;
pub mod catalog;
pub mod checksum;
pub mod progress;
pub mod pull;

pub use build::{BuildOptions, Recipe, build};
pub use cache::{Boot, BuiltFrom, CachedImage, ImageCache, ImageState, Manifest, Ready, Source};
pub use catalog::{BootMode, Catalog, CatalogEntry};
pub use checksum::{Algorithm, Digest};
pub use progress::Progress;
pub use pull::pull;

use std::path::PathBuf;
use thiserror::Error;

/// The on-disk image format version: part of every recipe hash and manifest, so a kubedrill
/// that builds images differently rebuilds rather than reuses an old image.
pub const FORMAT_VERSION: u32 = 1;

/// What can go wrong finding, fetching, building or caching an image.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The name is not in the catalog.
    #[error("unknown image {name:?} (known: {known})")]
    UnknownImage {
        /// The name asked for.
        name: String,
        /// The catalog's names, comma-separated.
        known: String,
    },
    /// A catalog or recipe file that cannot be read as one.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where it came from (file path or "built-in catalog").
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A file-system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("writing", "renaming", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An HTTP request failed (connection, status or body).
    #[error("downloading {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The checksum file does not list the image.
    #[error("checksum file {url} has no SHA-256 or SHA-512 entry for {file_name:?}")]
    ChecksumNotFound {
        /// The checksum file's URL (or path).
        url: String,
        /// The file name looked up.
        file_name: String,
    },
    /// The downloaded file's digest differs from the expected one.
    #[error(
        "checksum mismatch for {url}: expected {algorithm} {expected}, got {got}; the download was deleted"
    )]
    ChecksumMismatch {
        /// The image URL.
        url: String,
        /// The algorithm compared.
        algorithm: Algorithm,
        /// The expected hex digest.
        expected: String,
        /// The digest of what was received.
        got: String,
    },
    /// The catalog entry has no offline recipe.
    #[error(
        "image {name:?} has no build recipe (buildable: {buildable}); use `kubedrill image pull {name}`"
    )]
    NoRecipe {
        /// The name asked for.
        name: String,
        /// Names that can be built.
        buildable: String,
    },
    /// A program the build needs is not installed.
    #[error("{program} not found in PATH (install the Debian package {package})")]
    MissingTool {
        /// The program.
        program: &'static str,
        /// The package providing it.
        package: &'static str,
    },
    /// A build command failed.
    #[error("{command} failed ({status}); log: {}\n{tail}", log.display())]
    Command {
        /// The program.
        command: String,
        /// Its exit status.
        status: String,
        /// The full build log.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// No cache directory could be determined.
    #[error("no cache directory: set KUBEDRILL_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
}

impl ImageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}

/// Whether `name` is safe as a cache directory name: `[a-z0-9._-]`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Now as an RFC 3339 UTC timestamp (`2026-11-22T01:25:43Z`).
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_224_343), "2026-11-21T01:25:43Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn names() {
        assert!(valid_name("debian-12"));
        assert!(valid_name("ubuntu-24.04"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name(".tmp"));
        assert!(!valid_name("Debian"));
        assert!(!valid_name(""));
    }
}
