//! Kubernetes and Cilium versions, and what each implies.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A release version `MAJOR.MINOR.PATCH` (a leading `v` is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// `(major, minor)`, for comparisons by minor release.
    pub fn minor_pair(self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// True if this release's minor is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self.minor_pair() >= (major, minor)
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let parts: Vec<&str> = t.split('.').collect();
        let num = |p: &str| {
            p.parse::<u32>()
                .ok()
                .filter(|_| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        };
        match parts.as_slice() {
            [a, b, c] => match (num(a), num(b), num(c)) {
                (Some(a), Some(b), Some(c)) => Ok(Version::new(a, b, c)),
                _ => Err(format!("\"{s}\" is not a version like 1.31.4")),
            },
            [_, _] => Err(format!(
                "\"{s}\" names a minor release; give the full patch version, e.g. {t}.0"
            )),
            _ => Err(format!("\"{s}\" is not a version like 1.31.4")),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Oldest Kubernetes minor kubedrill renders for (kubeadm config v1beta3 appeared in 1.22).
pub const KUBE_MIN: (u32, u32) = (1, 22);
/// Newest Kubernetes minor kubedrill knows.
pub const KUBE_MAX_KNOWN: (u32, u32) = (1, 36);
/// Oldest Cilium minor with chart facts.
pub const CILIUM_MIN: (u32, u32) = (1, 11);
/// Newest Cilium minor with chart facts.
pub const CILIUM_MAX: (u32, u32) = (1, 20);

/// The kubeadm configuration API a Kubernetes version needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KubeadmApi {
    /// `kubeadm.k8s.io/v1beta3` (1.22–1.30).
    V1beta3,
    /// `kubeadm.k8s.io/v1beta4` (1.31+): `proxy.disabled`, extraArgs as name/value lists.
    V1beta4,
}

impl KubeadmApi {
    /// The API for a Kubernetes version.
    pub fn for_kubernetes(v: Version) -> Self {
        if v.at_least(1, 31) {
            KubeadmApi::V1beta4
        } else {
            KubeadmApi::V1beta3
        }
    }

    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            KubeadmApi::V1beta3 => "kubeadm.k8s.io/v1beta3",
            KubeadmApi::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

/// Baseline kernel for a Cilium minor (from Cilium's system requirements).
pub fn cilium_min_kernel(cilium: Version) -> (u32, u32, u32) {
    match cilium.minor_pair() {
        (1, 11..=12) => (4, 9, 17),
        (1, 13..=15) => (4, 19, 57),
        (1, 16..=17) => (5, 4, 0),
        _ => (5, 10, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_versions() {
        assert_eq!("v1.31.4".parse::<Version>(), Ok(Version::new(1, 31, 4)));
        assert_eq!("1.19.6".parse::<Version>(), Ok(Version::new(1, 19, 6)));
        assert!(
            "1.30"
                .parse::<Version>()
                .unwrap_err()
                .contains("full patch")
        );
        assert!("1.x.3".parse::<Version>().is_err());
        assert!("".parse::<Version>().is_err());
        assert!("1.2.3.4".parse::<Version>().is_err());
    }

    #[test]
    fn kubeadm_api_switches_at_1_31() {
        assert_eq!(
            KubeadmApi::for_kubernetes(Version::new(1, 30, 9)),
            KubeadmApi::V1beta3
        );
        assert_eq!(
            KubeadmApi::for_kubernetes(Version::new(1, 31, 0)),
            KubeadmApi::V1beta4
        );
    }
}
