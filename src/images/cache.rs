//! The image cache: `$KUBEDRILL_CACHE_DIR`, else `$XDG_CACHE_HOME/kubedrill`, else
//! `~/.cache/kubedrill`. Each image lives in `images/NAME/pull/` (downloaded) or
//! `images/NAME/build/` (built offline) with a `manifest.json` beside its disk. New images are
//! assembled in a `.tmp-*` directory beside and renamed into place whole, so the cache never
//! holds half an image.

use super::checksum::Digest;
use super::{ImageError, valid_name};
use crate::facts::OsFamily;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "KUBEDRILL_CACHE_DIR";

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// Where a cached image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Downloaded with `image pull`.
    Pull,
    /// Built offline with `image build`.
    Build,
}

impl Source {
    fn dir(self) -> &'static str {
        match self {
            Source::Pull => "pull",
            Source::Build => "build",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// How to boot a cached image; paths are relative to the manifest's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Boot {
    /// The disk's own bootloader.
    Disk,
    /// Direct kernel boot.
    Direct {
        /// The kernel file.
        kernel: PathBuf,
        /// The initrd file.
        initrd: PathBuf,
        /// The kernel command line.
        cmdline: String,
    },
}

/// What an image was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BuiltFrom {
    /// A download, verified against `checksum`.
    Url {
        /// The image URL.
        url: String,
        /// The digest it was verified against.
        checksum: Digest,
    },
    /// An offline recipe.
    Recipe {
        /// The recipe's name.
        name: String,
        /// SHA-256 of the recipe text and [`super::FORMAT_VERSION`].
        hash: String,
        /// The package mirror used.
        mirror: String,
    },
}

/// `manifest.json`: what a cached image is and how to boot it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Image name (the catalog's).
    pub name: String,
    /// OS family.
    pub os_family: OsFamily,
    /// Disk format (`qcow2`, or `raw` for a download that is not qcow2).
    pub format: String,
    /// The disk file, relative to the manifest's directory.
    pub disk: PathBuf,
    /// SHA-256 of the disk file.
    pub sha256: String,
    /// Size of the disk file in bytes.
    pub size: u64,
    /// How to boot it.
    pub boot: Boot,
    /// What it was made from.
    pub built_from: BuiltFrom,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// [`super::FORMAT_VERSION`] of the kubedrill that made it.
    pub format_version: u32,
}

/// A cached image's usability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum ImageState {
    /// Manifest and files present, sizes as recorded.
    Ready,
    /// Something is missing or differs; `pull`/`build` will replace it.
    Broken(String),
}

/// A cached image as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct CachedImage {
    /// Image name.
    pub name: String,
    /// Pulled or built.
    pub source: Source,
    /// Its directory.
    pub dir: PathBuf,
    /// The manifest, when readable.
    pub manifest: Option<Manifest>,
    /// Usability.
    #[serde(flatten)]
    pub state: ImageState,
}

/// A ready image: returned by [`super::pull`] and [`super::build`].
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Whether the cache already held it (nothing was downloaded or built).
    pub cached: bool,
}

impl Ready {
    /// Absolute path of the disk.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ImageCache {
    root: PathBuf,
}

impl ImageCache {
    /// The cache at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        ImageCache { root: root.into() }
    }

    /// The cache from the environment (see the module docs).
    pub fn from_env() -> Result<Self, ImageError> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(p) = var(CACHE_ENV) {
            return Ok(Self::at(p));
        }
        // As root, a system path: QEMU (running as libvirt-qemu) cannot enter a 0700 /root.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return Ok(Self::at(PathBuf::from("/var/cache/kubedrill")));
        }
        if let Some(p) = var("XDG_CACHE_HOME") {
            return Ok(Self::at(p.join("kubedrill")));
        }
        var("HOME")
            .map(|h| Self::at(h.join(".cache").join("kubedrill")))
            .ok_or(ImageError::NoCacheDir)
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding image `name` from `source`.
    pub fn image_dir(&self, name: &str, source: Source) -> PathBuf {
        self.root.join("images").join(name).join(source.dir())
    }

    /// The cached image `name` from `source`, when its directory exists.
    pub fn get(&self, name: &str, source: Source) -> Option<CachedImage> {
        let dir = self.image_dir(name, source);
        dir.is_dir().then(|| inspect(name, source, dir))
    }

    /// Every cached image, by name then source.
    pub fn list(&self) -> Result<Vec<CachedImage>, ImageError> {
        let images = self.root.join("images");
        let rd = match std::fs::read_dir(&images) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io("listing", &images)(e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        Ok(names
            .iter()
            .flat_map(|n| [Source::Pull, Source::Build].map(|s| self.get(n, s)))
            .flatten()
            .collect())
    }

    /// A fresh staging directory beside the image's final directory (removed when dropped).
    pub(crate) fn staging(&self, name: &str) -> Result<tempfile::TempDir, ImageError> {
        let parent = self.root.join("images").join(name);
        std::fs::create_dir_all(&parent).map_err(ImageError::io("creating", &parent))?;
        remove_stale(&parent);
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&parent)
            .map_err(ImageError::io("creating a staging directory in", &parent))
    }

    /// Move a finished image directory into place as `name`/`source`, replacing any old one.
    pub(crate) fn commit(
        &self,
        ready: &Path,
        name: &str,
        source: Source,
    ) -> Result<PathBuf, ImageError> {
        let dest = self.image_dir(name, source);
        if dest.exists() {
            // Move the old one aside (into a fresh temporary directory, removed when dropped)
            // so that the rename below is atomic.
            let parent = self.root.join("images").join(name);
            let aside = tempfile::Builder::new()
                .prefix(".old-")
                .tempdir_in(&parent)
                .map_err(ImageError::io("creating a directory in", &parent))?;
            std::fs::rename(&dest, aside.path().join(source.dir()))
                .map_err(ImageError::io("moving aside", &dest))?;
        }
        std::fs::rename(ready, &dest).map_err(ImageError::io("renaming into", &dest))?;
        Ok(dest)
    }
}

/// Staging directories older than this are leftovers of a killed pull or build.
const STALE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Remove `.tmp-*` and `.old-*` leftovers in `dir` older than [`STALE`] (best effort).
fn remove_stale(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if (name.starts_with(".tmp-") || name.starts_with(".old-")) && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn inspect(name: &str, source: Source, dir: PathBuf) -> CachedImage {
    let (manifest, state) = match read_manifest(&dir) {
        Ok(m) => {
            let state = check_files(&dir, &m);
            (Some(m), state)
        }
        Err(e) => (None, ImageState::Broken(e)),
    };
    CachedImage {
        name: name.to_owned(),
        source,
        dir,
        manifest,
        state,
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let text = crate::files::read_text_bounded(&path, crate::files::MAX_RECORD_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn check_files(dir: &Path, m: &Manifest) -> ImageState {
    let disk = dir.join(&m.disk);
    match std::fs::metadata(&disk) {
        Ok(md) if md.len() == m.size => {}
        Ok(md) => {
            return ImageState::Broken(format!(
                "{} is {} bytes, the manifest says {}",
                disk.display(),
                md.len(),
                m.size
            ));
        }
        Err(e) => return ImageState::Broken(format!("{}: {e}", disk.display())),
    }
    if let Boot::Direct { kernel, initrd, .. } = &m.boot {
        for f in [kernel, initrd] {
            if !dir.join(f).is_file() {
                return ImageState::Broken(format!("{} is missing", dir.join(f).display()));
            }
        }
    }
    ImageState::Ready
}

/// Write `manifest.json` into `dir`.
pub(crate) fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), ImageError> {
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(m).map_err(|e| ImageError::Io {
        action: "serialising",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::files::write(&path, text + "\n").map_err(ImageError::io("writing", &path))
}
