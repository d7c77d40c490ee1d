//! Which Kubernetes minors each Cilium minor is e2e-tested against, so that a drill (or an
//! apply) says so before it starts a pair Cilium never tested.
//!
//! Source: the table in each release's `Documentation/network/kubernetes/compatibility.rst`
//! (1.12: `Documentation/concepts/kubernetes/compatibility.rst`) as shipped in the Cilium Go
//! module `github.com/cilium/cilium` at the patch named per row — the rendered page is
//! <https://docs.cilium.io/en/stable/network/kubernetes/compatibility/>. Its words: "All
//! Kubernetes versions listed are e2e tested and guaranteed to be compatible with Cilium. Older
//! and newer Kubernetes versions, while not listed, will depend on the forward / backward
//! compatibility offered by Kubernetes." kubedrill therefore refuses a Kubernetes older than the
//! oldest tested one (Cilium relies on APIs old servers lack) and warns about a newer one
//! (Kubernetes keeps old APIs served for a while). 1.11's table is not known here: the module
//! proxy does not serve its last patches.

use crate::spec::Version;
use std::fmt;

/// One Cilium minor's tested Kubernetes minors (a contiguous range in every release so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tested {
    /// Cilium minor (1, x).
    pub cilium: (u32, u32),
    /// Oldest tested Kubernetes minor (1, y).
    pub oldest: (u32, u32),
    /// Newest tested Kubernetes minor.
    pub newest: (u32, u32),
    /// The module version the table was read from.
    pub read_from: &'static str,
}

/// Every Cilium minor whose table was read.
pub const TESTED: &[Tested] = &[
    t((1, 12), (1, 16), (1, 24), "v1.12.19"),
    t((1, 13), (1, 16), (1, 26), "v1.13.18"),
    t((1, 14), (1, 19), (1, 27), "v1.14.19"),
    t((1, 15), (1, 26), (1, 29), "v1.15.19"),
    t((1, 16), (1, 27), (1, 30), "v1.16.19"),
    t((1, 17), (1, 29), (1, 32), "v1.17.17"),
    t((1, 18), (1, 30), (1, 33), "v1.18.11"),
    t((1, 19), (1, 32), (1, 35), "v1.19.7"),
    t((1, 20), (1, 33), (1, 36), "v1.20.0"),
];

const fn t(
    cilium: (u32, u32),
    oldest: (u32, u32),
    newest: (u32, u32),
    read_from: &'static str,
) -> Tested {
    Tested {
        cilium,
        oldest,
        newest,
        read_from,
    }
}

/// How a Cilium and a Kubernetes version go together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// Kubernetes is in the Cilium release's tested list.
    Tested(Tested),
    /// Newer than any tested one: depends on Kubernetes' backward compatibility (a warning).
    Newer(Tested),
    /// Older than any tested one (refused).
    Older(Tested),
    /// No table for this Cilium minor (a warning).
    Unknown,
}

impl Compat {
    /// A pair kubedrill refuses.
    pub fn refused(&self) -> bool {
        matches!(self, Compat::Older(_))
    }

    /// Worth a warning (untested, but not refused).
    pub fn warns(&self) -> bool {
        matches!(self, Compat::Newer(_) | Compat::Unknown)
    }
}

/// Look a pair up.
pub fn check(cilium: Version, kubernetes: Version) -> Compat {
    let Some(row) = TESTED
        .iter()
        .find(|r| r.cilium == (cilium.major, cilium.minor))
    else {
        return Compat::Unknown;
    };
    let k = (kubernetes.major, kubernetes.minor);
    if k < row.oldest {
        Compat::Older(*row)
    } else if k > row.newest {
        Compat::Newer(*row)
    } else {
        Compat::Tested(*row)
    }
}

/// A pair with its verdict, for messages.
pub struct Pair {
    /// Cilium.
    pub cilium: Version,
    /// Kubernetes.
    pub kubernetes: Version,
    /// [`check`] of the two.
    pub compat: Compat,
}

impl Pair {
    /// [`check`] a pair.
    pub fn new(cilium: Version, kubernetes: Version) -> Pair {
        Pair {
            cilium,
            kubernetes,
            compat: check(cilium, kubernetes),
        }
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = |r: &Tested| {
            format!(
                "Cilium {}.{} is e2e-tested with Kubernetes {}.{}–{}.{} (its compatibility.rst, module {})",
                r.cilium.0, r.cilium.1, r.oldest.0, r.oldest.1, r.newest.0, r.newest.1, r.read_from
            )
        };
        let (c, k) = (self.cilium, self.kubernetes);
        match &self.compat {
            Compat::Tested(r) => write!(f, "Cilium {c} with Kubernetes {k}: tested ({})", range(r)),
            Compat::Newer(r) => write!(
                f,
                "Cilium {c} with Kubernetes {k}: not tested upstream — {}; a newer Kubernetes depends on its backward compatibility",
                range(r)
            ),
            Compat::Older(r) => write!(
                f,
                "Cilium {c} with Kubernetes {k}: unsupported — {}; an older Kubernetes lacks APIs this Cilium uses",
                range(r)
            ),
            Compat::Unknown => write!(
                f,
                "Cilium {c} with Kubernetes {k}: no compatibility table for Cilium {}.{} in kubedrill",
                c.major, c.minor
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    #[test]
    fn ranges_from_the_release_tables() {
        assert!(matches!(check(v("1.19.7"), v("1.34.4")), Compat::Tested(_)));
        assert!(matches!(check(v("1.19.7"), v("1.32.0")), Compat::Tested(_)));
        assert!(matches!(check(v("1.19.7"), v("1.31.9")), Compat::Older(_)));
        assert!(matches!(check(v("1.18.11"), v("1.34.4")), Compat::Newer(_)));
        assert!(matches!(
            check(v("1.18.11"), v("1.33.7")),
            Compat::Tested(_)
        ));
        assert!(matches!(check(v("1.11.20"), v("1.23.0")), Compat::Unknown));
        assert!(check(v("1.16.19"), v("1.26.0")).refused());
        assert!(check(v("1.18.11"), v("1.34.4")).warns());
        // The table is ordered and every range is non-empty.
        for w in TESTED.windows(2) {
            assert!(w[0].cilium < w[1].cilium);
            assert!(w[0].oldest <= w[1].oldest && w[0].newest <= w[1].newest);
        }
        assert!(TESTED.iter().all(|r| r.oldest <= r.newest));
    }

    #[test]
    fn messages_name_the_range_and_the_source() {
        let p = Pair::new(v("1.18.11"), v("1.34.4"));
        let s = p.to_string();
        assert!(s.contains("not tested upstream"), "{s}");
        assert!(s.contains("1.30–1.33"), "{s}");
        assert!(s.contains("v1.18.11"), "{s}");
        let o = Pair::new(v("1.19.7"), v("1.30.2")).to_string();
        assert!(o.contains("unsupported") && o.contains("1.32–1.35"), "{o}");
    }
}
