//! Upgrade paths between Cilium versions: first the latest patch of the current minor, then one
//! minor at a time (each to its latest patch), ending at the target itself. This is the only path
//! Cilium tests for upgrade and rollback (docs.cilium.io, "Upgrade Guide": "upgrade to the latest
//! patch release of your current minor version first, then one minor version at a time").
//!
//! The latest patch of each minor comes from a [`Releases`] table (default: the bundled chart
//! data). The target's own minor need not be in the table, since the target is given exactly.
//! A minor *between* the two that the table lacks cannot be stepped through: inside the table's
//! range that is a [`PathError::SkippedMinor`], outside it an [`PathError::UnknownMinor`]. With
//! `force`, both become one [`StepKind::Forced`] step across the gap plus a warning.

use crate::spec::Version;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A minor release line, `MAJOR.MINOR` (printed as Helm's `upgradeCompatibility` wants it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl Minor {
    /// A minor from its parts.
    pub const fn new(major: u32, minor: u32) -> Self {
        Minor { major, minor }
    }

    /// The minor a version belongs to.
    pub const fn of(v: Version) -> Self {
        Minor::new(v.major, v.minor)
    }

    /// The next minor of the same major.
    pub const fn next(self) -> Self {
        Minor::new(self.major, self.minor + 1)
    }
}

impl From<Version> for Minor {
    fn from(v: Version) -> Self {
        Minor::of(v)
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Minor {
    type Err = String;
    /// `1.14` or a full version `1.14.3` (its minor); a leading `v` is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        if let Ok(v) = t.parse::<Version>() {
            return Ok(Minor::of(v));
        }
        let num = |p: &str| {
            (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        match t.split_once('.') {
            Some((a, b)) => match (num(a), num(b)) {
                (Some(a), Some(b)) => Ok(Minor::new(a, b)),
                _ => Err(format!("\"{s}\" is not a minor release like 1.14")),
            },
            None => Err(format!("\"{s}\" is not a minor release like 1.14")),
        }
    }
}

/// The latest known patch of each minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Releases {
    latest: BTreeMap<Minor, Version>,
}

/// The latest patches in the bundled chart data (`tests/data/cilium-values/`).
pub const DEFAULT_LATEST: [Version; 10] = [
    Version::new(1, 11, 20),
    Version::new(1, 12, 19),
    Version::new(1, 13, 18),
    Version::new(1, 14, 19),
    Version::new(1, 15, 19),
    Version::new(1, 16, 19),
    Version::new(1, 17, 18),
    Version::new(1, 18, 12),
    Version::new(1, 19, 6),
    Version::new(1, 20, 0),
];

impl Default for Releases {
    fn default() -> Self {
        Releases {
            latest: DEFAULT_LATEST.iter().map(|v| (Minor::of(*v), *v)).collect(),
        }
    }
}

impl Releases {
    /// A table from the latest patch of each minor; two versions of one minor are refused.
    pub fn new(latest: impl IntoIterator<Item = Version>) -> Result<Self, PathError> {
        let mut map = BTreeMap::new();
        for v in latest {
            if let Some(other) = map.insert(Minor::of(v), v) {
                return Err(PathError::DuplicateMinor { a: other, b: v });
            }
        }
        Ok(Releases { latest: map })
    }

    /// The latest patch of a minor, if the table has it.
    pub fn latest(&self, minor: Minor) -> Option<Version> {
        self.latest.get(&minor).copied()
    }

    /// The oldest and newest minor in the table.
    pub fn range(&self) -> Option<(Minor, Minor)> {
        Some((
            *self.latest.keys().next()?,
            *self.latest.keys().next_back()?,
        ))
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Within one minor, to a newer patch.
    PatchCatchUp,
    /// To the next minor.
    MinorUpgrade,
    /// Across more than one minor (only with `force`): untested by Cilium.
    Forced,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepKind::PatchCatchUp => "patch catch-up",
            StepKind::MinorUpgrade => "minor upgrade",
            StepKind::Forced => "forced (skips a minor)",
        })
    }
}

/// One `helm upgrade`: always forward, same major; its kind follows from the two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    from: Version,
    to: Version,
}

impl Step {
    /// A step, if `to` is newer than `from` within the same major.
    fn new(from: Version, to: Version) -> Result<Self, PathError> {
        check_direction(from, to)?;
        Ok(Step { from, to })
    }

    /// The version running before the step.
    pub fn from(&self) -> Version {
        self.from
    }

    /// The version running after the step.
    pub fn to(&self) -> Version {
        self.to
    }

    /// What the step does.
    pub fn kind(&self) -> StepKind {
        match self.to.minor - self.from.minor {
            0 => StepKind::PatchCatchUp,
            1 => StepKind::MinorUpgrade,
            _ => StepKind::Forced,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {} ({})", self.from, self.to, self.kind())
    }
}

/// An upgrade path: steps each starting where the previous one ended (none only in a drill
/// that keeps Cilium where it is and upgrades Kubernetes: [`UpgradePlan::stay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradePlan {
    steps: Vec<Step>,
    warnings: Vec<String>,
}

impl UpgradePlan {
    /// No Cilium step: Cilium stays at the version it runs.
    pub fn stay() -> Self {
        UpgradePlan {
            steps: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Warnings (forced steps, a missing catch-up).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

impl fmt::Display for UpgradePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{}. {s}", i + 1)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Why there is no upgrade path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing to do.
    #[error("Cilium {0} is already the target version; nothing to upgrade")]
    SameVersion(Version),
    /// The target is older.
    #[error(
        "Cilium {from} → {to} is a downgrade; roll back with `helm rollback cilium REV` (see `helm history cilium -n kube-system`) instead"
    )]
    Downgrade {
        /// Running version.
        from: Version,
        /// Requested version.
        to: Version,
    },
    /// Major versions differ.
    #[error("Cilium {from} → {to} changes the major version; no upgrade path is known")]
    MajorChange {
        /// Running version.
        from: Version,
        /// Requested version.
        to: Version,
    },
    /// A minor between the two is missing from the table although the table spans it.
    #[error(
        "Cilium {from} → {to} would skip {missing}: the release table has no latest patch for it; upgrade one minor at a time (add {missing} to the table, or pass force to take the untested jump)"
    )]
    SkippedMinor {
        /// Running version.
        from: Version,
        /// Requested version.
        to: Version,
        /// The first minor missing.
        missing: Minor,
    },
    /// A minor the path needs lies outside the table.
    #[error(
        "Cilium {minor} is outside the release table ({known}); its latest patch is unknown, so the path from {from} to {to} cannot go through it (give a table that includes it, or pass force)"
    )]
    UnknownMinor {
        /// Running version.
        from: Version,
        /// Requested version.
        to: Version,
        /// The minor not in the table.
        minor: Minor,
        /// The table's range, e.g. `1.11–1.20`.
        known: String,
    },
    /// A table with two entries for one minor.
    #[error("release table lists two patches of one minor: {a} and {b}")]
    DuplicateMinor {
        /// First.
        a: Version,
        /// Second.
        b: Version,
    },
}

fn check_direction(from: Version, to: Version) -> Result<(), PathError> {
    if from.major != to.major {
        Err(PathError::MajorChange { from, to })
    } else if from == to {
        Err(PathError::SameVersion(from))
    } else if to < from {
        Err(PathError::Downgrade { from, to })
    } else {
        Ok(())
    }
}

/// The ordered upgrade steps from `from` to `to`.
///
/// ```
/// use kubedrill::drill::path::{plan, Releases, StepKind};
/// let p = plan("1.14.3".parse().unwrap(), "1.16.19".parse().unwrap(), &Releases::default(), false).unwrap();
/// let steps: Vec<String> = p.steps().iter().map(|s| s.to().to_string()).collect();
/// assert_eq!(steps, ["1.14.19", "1.15.19", "1.16.19"]);
/// assert_eq!(p.steps()[0].kind(), StepKind::PatchCatchUp);
/// ```
pub fn plan(
    from: Version,
    to: Version,
    releases: &Releases,
    force: bool,
) -> Result<UpgradePlan, PathError> {
    plan_with(
        from,
        to,
        releases,
        PathOptions {
            force,
            catch_up: true,
        },
    )
}

/// How a path may deviate from the one Cilium tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Take one untested jump across minors the table lacks (with a warning).
    pub force: bool,
    /// Upgrade to the latest patch of `from`'s minor first. `false` where only some versions can
    /// be had (an air gap's mirror): the first step leaves from `from` itself, with a warning.
    pub catch_up: bool,
}

/// [`plan`] with [`PathOptions`].
pub fn plan_with(
    from: Version,
    to: Version,
    releases: &Releases,
    o: PathOptions,
) -> Result<UpgradePlan, PathError> {
    let force = o.force;
    check_direction(from, to)?;
    let mut p = UpgradePlan {
        steps: Vec::new(),
        warnings: Vec::new(),
    };
    if Minor::of(from) == Minor::of(to) {
        p.steps.push(Step::new(from, to)?);
        return Ok(p);
    }
    let mut at = if o.catch_up {
        catch_up(from, to, releases, force, &mut p)?
    } else {
        if let Some(latest) = releases.latest(Minor::of(from)).filter(|l| *l > from) {
            p.warnings.push(format!(
                "not catching up to {latest} first (catch_up: false): Cilium tests upgrades from the latest patch of a minor"
            ));
        }
        from
    };
    // Every minor strictly between: its latest patch, or a gap.
    let mut minor = Minor::of(from).next();
    let mut gap_start: Option<Minor> = None;
    while minor < Minor::of(to) {
        match releases.latest(minor) {
            Some(latest) => {
                if let Some(missing) = gap_start.take() {
                    at = forced_step(at, latest, missing, &mut p)?;
                } else {
                    p.steps.push(Step::new(at, latest)?);
                    at = latest;
                }
            }
            None => {
                if gap_start.is_none() {
                    refuse_gap(from, to, minor, releases, force)?;
                    gap_start = Some(minor);
                }
            }
        }
        minor = minor.next();
    }
    match gap_start {
        Some(missing) => {
            forced_step(at, to, missing, &mut p)?;
        }
        None => p.steps.push(Step::new(at, to)?),
    }
    Ok(p)
}

/// The catch-up step to the latest patch of `from`'s minor, if any; returns where it ends.
fn catch_up(
    from: Version,
    to: Version,
    releases: &Releases,
    force: bool,
    p: &mut UpgradePlan,
) -> Result<Version, PathError> {
    match releases.latest(Minor::of(from)) {
        Some(latest) if latest > from => {
            p.steps.push(Step::new(from, latest)?);
            Ok(latest)
        }
        Some(_) => Ok(from),
        None if force => {
            p.warnings.push(format!(
                "the latest patch of {} is not in the release table; upgrading from {from} without catching up first",
                Minor::of(from)
            ));
            Ok(from)
        }
        None => Err(PathError::UnknownMinor {
            from,
            to,
            minor: Minor::of(from),
            known: known_range(releases),
        }),
    }
}

/// The error for a missing minor, unless forced.
fn refuse_gap(
    from: Version,
    to: Version,
    missing: Minor,
    releases: &Releases,
    force: bool,
) -> Result<(), PathError> {
    if force {
        return Ok(());
    }
    let inside = releases
        .range()
        .is_some_and(|(lo, hi)| lo < missing && missing < hi);
    Err(if inside {
        PathError::SkippedMinor { from, to, missing }
    } else {
        PathError::UnknownMinor {
            from,
            to,
            minor: missing,
            known: known_range(releases),
        }
    })
}

/// A forced step from `at` to `next` across the gap starting at `missing`, with its warning.
fn forced_step(
    at: Version,
    next: Version,
    missing: Minor,
    p: &mut UpgradePlan,
) -> Result<Version, PathError> {
    let last_missing = Minor::new(next.major, next.minor.saturating_sub(1));
    let skipped = if last_missing == missing {
        missing.to_string()
    } else {
        format!("{missing}–{last_missing}")
    };
    p.warnings.push(format!(
        "forced: {at} → {next} skips Cilium {skipped}; Cilium tests upgrades and rollbacks only one minor at a time"
    ));
    p.steps.push(Step::new(at, next)?);
    Ok(next)
}

fn known_range(releases: &Releases) -> String {
    match releases.range() {
        Some((lo, hi)) => format!("{lo}–{hi}"),
        None => "empty".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("test version")
    }

    #[test]
    fn minor_parses_and_prints_like_upgrade_compatibility() {
        assert_eq!("1.14".parse::<Minor>(), Ok(Minor::new(1, 14)));
        assert_eq!("v1.14.3".parse::<Minor>(), Ok(Minor::new(1, 14)));
        assert_eq!(Minor::new(1, 9).to_string(), "1.9");
        assert!("1".parse::<Minor>().is_err());
        assert!("1.x".parse::<Minor>().is_err());
        assert!("1.".parse::<Minor>().is_err());
    }

    #[test]
    fn step_kind_follows_from_versions() {
        let s = Step::new(v("1.14.1"), v("1.14.19")).unwrap();
        assert_eq!(s.kind(), StepKind::PatchCatchUp);
        assert_eq!(
            Step::new(v("1.14.19"), v("1.15.0")).unwrap().kind(),
            StepKind::MinorUpgrade
        );
        assert_eq!(
            Step::new(v("1.14.19"), v("1.16.0")).unwrap().kind(),
            StepKind::Forced
        );
        assert!(Step::new(v("1.15.0"), v("1.14.19")).is_err());
        assert!(Step::new(v("1.15.0"), v("1.15.0")).is_err());
        assert!(Step::new(v("1.15.0"), v("2.0.0")).is_err());
    }

    #[test]
    fn duplicate_minor_in_table_is_refused() {
        let e = Releases::new([v("1.14.2"), v("1.14.19")]).unwrap_err();
        assert!(e.to_string().contains("1.14.2 and 1.14.19"), "{e}");
    }

    #[test]
    fn display_lists_steps_and_warnings() {
        let r = Releases::new([v("1.14.19"), v("1.16.19")]).unwrap();
        let p = plan(v("1.14.19"), v("1.16.19"), &r, true).unwrap();
        let text = p.to_string();
        assert!(
            text.starts_with("1. 1.14.19 → 1.16.19 (forced (skips a minor))\nwarning: forced:"),
            "{text}"
        );
    }
}
