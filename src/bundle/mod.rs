//! Offline bundles: everything `kubedrill apply` installs on nodes that cannot reach package
//! repositories or registries, in one directory with a checksummed manifest.
//!
//! ```text
//! BUNDLE/
//!   bundle.json          manifest: every file with its SHA-256, and what was asked for
//!   debs/*.deb           packages and all their dependencies, plus an apt `Packages` index
//!   bin/helm             binaries (checksum-verified when fetched)
//!   bin/kubeadm …        kubelet, kubeadm, kubectl and crictl as release binaries, when the
//!                        bundle was built from a files repository (Kubespray's `files_repo`)
//!   charts/cilium-X.tgz  the Cilium chart
//!   images/*.tar         optional image tarballs (`ctr -n k8s.io images import`)
//! ```
//!
//! On a node, `debs/` becomes a local apt repository (`deb [trusted=yes] file:… ./`: trusted
//! because every file was verified against the manifest before and after the upload), so apt
//! resolves dependencies against what is already installed and installs only what is missing.

pub mod build;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Manifest file name inside a bundle.
pub const MANIFEST: &str = "bundle.json";
/// Manifest format version.
pub const SCHEMA: u32 = 1;

/// Packages kubedrill expects in a bundle for a complete node (besides their dependencies).
pub const KUBERNETES_PACKAGES: &[&str] = &["kubelet", "kubeadm", "kubectl"];
/// The release binaries a bundle built from a files repository carries instead of packages.
pub const KUBERNETES_BINARIES: &[&str] = &["kubelet", "kubeadm", "kubectl", "crictl"];
/// Node packages every apply needs from some source (the container runtime and its tools).
pub const NODE_PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "conntrack",
    "socat",
    "ethtool",
    "iptables",
];

/// Package format of a bundle's packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `.deb` (Debian, Ubuntu).
    Deb,
    /// `.rpm` (RHEL, Rocky, Alma, Fedora).
    Rpm,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path relative to the bundle root.
    pub file: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it came from (URL or `apt-get download`).
    pub source: String,
}

/// A package file in `debs/` (or `rpms/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// The file.
    #[serde(flatten)]
    pub artifact: Artifact,
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`SCHEMA`]).
    pub schema: u32,
    /// When it was built (RFC 3339, UTC).
    pub created: String,
    /// Package family.
    pub family: Family,
    /// Distribution release the packages were resolved for (e.g. `bookworm`).
    pub release: String,
    /// Packages asked for (installed on every node); the rest are their dependencies.
    pub requested: Vec<String>,
    /// Every package file, dependencies included.
    pub packages: Vec<Package>,
    /// Binaries (`bin/helm`).
    #[serde(default)]
    pub binaries: Vec<Artifact>,
    /// Helm charts (`charts/cilium-X.Y.Z.tgz`).
    #[serde(default)]
    pub charts: Vec<Artifact>,
    /// Container image tarballs.
    #[serde(default)]
    pub images: Vec<Artifact>,
    /// The Kubernetes version of `bin/kubelet`, `bin/kubeadm` and `bin/kubectl`, when the
    /// bundle carries them as binaries rather than packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_binaries: Option<String>,
}

/// Bundle errors, naming the bundle and file.
#[derive(Debug, Error)]
pub enum BundleError {
    /// Not a bundle.
    #[error("{dir}: no {MANIFEST} (build one with `kubedrill bundle build`)")]
    NoManifest {
        /// Bundle directory.
        dir: PathBuf,
    },
    /// Manifest unreadable.
    #[error("{file}: {message}")]
    Manifest {
        /// Manifest path.
        file: PathBuf,
        /// What is wrong (with line and column for JSON errors).
        message: String,
    },
    /// A file is missing or does not match the manifest.
    #[error("{dir}: `{file}` {problem}; the bundle is damaged: rebuild or re-copy it")]
    Damaged {
        /// Bundle directory.
        dir: PathBuf,
        /// File.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// Building failed.
    #[error("bundle build: {step}: {message}")]
    Build {
        /// Step.
        step: String,
        /// What happened.
        message: String,
    },
}

/// An opened, verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Bundle {
    /// Open a bundle and verify every file against the manifest (size and SHA-256).
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let file = dir.join(MANIFEST);
        let text = match crate::files::read_text_bounded(&file, crate::files::MAX_RECORD_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::NoManifest {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(BundleError::Manifest {
                    file,
                    message: e.to_string(),
                });
            }
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| BundleError::Manifest {
                file: file.clone(),
                message: format!("line {}, column {}: {e}", e.line(), e.column()),
            })?;
        if manifest.schema != SCHEMA {
            return Err(BundleError::Manifest {
                file,
                message: format!(
                    "schema {} is not the {SCHEMA} this kubedrill reads",
                    manifest.schema
                ),
            });
        }
        let b = Bundle {
            dir: dir.to_path_buf(),
            manifest,
        };
        for a in b.artifacts() {
            b.verify(a)?;
        }
        Ok(b)
    }

    /// Every file the manifest lists.
    pub fn artifacts(&self) -> impl Iterator<Item = &Artifact> {
        let m = &self.manifest;
        m.packages
            .iter()
            .map(|p| &p.artifact)
            .chain(&m.binaries)
            .chain(&m.charts)
            .chain(&m.images)
    }

    fn verify(&self, a: &Artifact) -> Result<(), BundleError> {
        let damaged = |problem: String| BundleError::Damaged {
            dir: self.dir.clone(),
            file: a.file.clone(),
            problem,
        };
        if a.file.contains("..") || a.file.starts_with('/') {
            return Err(damaged("is outside the bundle".into()));
        }
        let (size, sha) = hash_file(&self.dir.join(&a.file)).map_err(|e| damaged(e.to_string()))?;
        if size != a.size || sha != a.sha256 {
            return Err(damaged(format!(
                "has SHA-256 {sha} ({size} bytes), the manifest says {} ({} bytes)",
                a.sha256, a.size
            )));
        }
        Ok(())
    }

    /// The requested packages with their exact versions.
    pub fn requested(&self) -> Vec<&Package> {
        self.manifest
            .requested
            .iter()
            .filter_map(|r| self.manifest.packages.iter().find(|p| &p.name == r))
            .collect()
    }

    /// True if the bundle carries kubelet, kubeadm and kubectl (as packages or binaries).
    pub fn has_kubernetes(&self) -> bool {
        KUBERNETES_PACKAGES
            .iter()
            .all(|k| self.manifest.requested.iter().any(|r| r == k))
            || self.kubernetes_binaries().is_some()
    }

    /// The Kubernetes version and the release binaries (`kubelet`, `kubeadm`, `kubectl`,
    /// `crictl`), when the bundle carries them all as binaries.
    pub fn kubernetes_binaries(&self) -> Option<(&str, Vec<&Artifact>)> {
        let v = self.manifest.kubernetes_binaries.as_deref()?;
        let bins: Option<Vec<&Artifact>> =
            KUBERNETES_BINARIES.iter().map(|n| self.binary(n)).collect();
        bins.map(|b| (v, b))
    }

    /// The Kubernetes version the bundle installs, if it carries Kubernetes at all.
    pub fn kubernetes_version(&self) -> Option<String> {
        if let Some((v, _)) = self.kubernetes_binaries() {
            return Some(v.to_string());
        }
        self.requested()
            .iter()
            .find(|p| p.name == "kubeadm")
            .map(|p| {
                p.version
                    .split('-')
                    .next()
                    .unwrap_or(&p.version)
                    .to_string()
            })
    }

    /// A binary by name (`helm`).
    pub fn binary(&self, name: &str) -> Option<&Artifact> {
        self.manifest
            .binaries
            .iter()
            .find(|b| Path::new(&b.file).file_name().is_some_and(|f| f == name))
    }

    /// The Cilium chart of a version.
    pub fn chart(&self, version: &str) -> Option<&Artifact> {
        let want = format!("cilium-{version}.tgz");
        self.manifest
            .charts
            .iter()
            .find(|c| Path::new(&c.file).file_name().is_some_and(|f| *f == *want))
    }
}

/// Size and SHA-256 (hex) of a file, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex(&h.finalize())))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
