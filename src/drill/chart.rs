//! Which values a Cilium chart version declares, read from its `values.yaml` (the defaults Helm
//! merges user values into). Migration prunes user keys the target chart does not declare, and the
//! tests check every rendered or migrated key against the same reading.
//!
//! The latest patch of every minor 1.11–1.20 is bundled (`tests/data/cilium-values/`, checksums in
//! its README); [`Charts::insert`] adds or replaces a version, e.g. with the output of
//! `helm show values cilium/cilium --version X.Y.Z`.

use super::path::Minor;
use crate::spec::Version;
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

/// Keys the chart's templates read that its values.yaml never declares, not even commented out.
/// `nodePort.directRoutingDevice`: no values.yaml from 1.11 to 1.20 mentions it, but the chart's
/// `templates/cilium-configmap.yaml` reads it (`{{- if hasKey .Values.nodePort
/// "directRoutingDevice" }} direct-routing-device: ...`, checked in cilium/cilium's main branch;
/// the templates of each release are not in tests/data), and the 1.16+ JSON schemas allow
/// unlisted keys under `nodePort`. Anything else rendered must be declared.
pub const TEMPLATE_ONLY_KEYS: &[&str] = &["nodePort.directRoutingDevice"];

/// Maps whose keys are the user's own (Kubernetes objects or label/annotation maps): the chart
/// shows an example child at most, so their children are never pruned.
const FREE_FORM: &[&str] = &[
    "affinity",
    "extraConfig",
    "nodeSelector",
    "podSecurityContext",
    "resources",
    "securityContext",
    "updateStrategy",
];

/// The bundled chart defaults, one per minor (the latest patch of each).
const BUNDLED: &[(Version, &str)] = &[
    (
        Version::new(1, 11, 20),
        include_str!("../../tests/data/cilium-values/1.11.20/values.yaml"),
    ),
    (
        Version::new(1, 12, 19),
        include_str!("../../tests/data/cilium-values/1.12.19/values.yaml"),
    ),
    (
        Version::new(1, 13, 18),
        include_str!("../../tests/data/cilium-values/1.13.18/values.yaml"),
    ),
    (
        Version::new(1, 14, 19),
        include_str!("../../tests/data/cilium-values/1.14.19/values.yaml"),
    ),
    (
        Version::new(1, 15, 19),
        include_str!("../../tests/data/cilium-values/1.15.19/values.yaml"),
    ),
    (
        Version::new(1, 16, 19),
        include_str!("../../tests/data/cilium-values/1.16.19/values.yaml"),
    ),
    (
        Version::new(1, 17, 18),
        include_str!("../../tests/data/cilium-values/1.17.18/values.yaml"),
    ),
    (
        Version::new(1, 18, 12),
        include_str!("../../tests/data/cilium-values/1.18.12/values.yaml"),
    ),
    (
        Version::new(1, 19, 6),
        include_str!("../../tests/data/cilium-values/1.19.6/values.yaml"),
    ),
    (
        Version::new(1, 20, 0),
        include_str!("../../tests/data/cilium-values/1.20.0/values.yaml"),
    ),
];

/// The keys one chart version declares.
#[derive(Debug, Clone, Default)]
pub struct ChartKeys {
    declared: HashSet<String>,
    /// Every proper prefix of a declared path: maps whose children the chart lists.
    parents: HashSet<String>,
    /// Real `key: {}` maps (free-form unless the chart lists children in comments).
    empty_maps: HashSet<String>,
}

impl ChartKeys {
    /// Read a chart's `values.yaml` text.
    pub fn parse(values_yaml: &str) -> Self {
        let Scan {
            declared,
            empty_maps,
        } = scan(values_yaml);
        let mut parents = HashSet::new();
        for path in &declared {
            let mut rest = path.as_str();
            while let Some((head, _)) = rest.rsplit_once('.') {
                parents.insert(head.to_owned());
                rest = head;
            }
        }
        ChartKeys {
            declared,
            parents,
            empty_maps,
        }
    }

    /// True if the chart declares `path` (dotted), commented-out declarations and
    /// [`TEMPLATE_ONLY_KEYS`] included.
    pub fn declares(&self, path: &str) -> bool {
        self.declared.contains(path) || TEMPLATE_ONLY_KEYS.contains(&path)
    }

    /// True if the user's children of the declared map `path` are checked key by key: the chart
    /// lists children for it, and it is neither an empty map (`key: {}`) nor a free-form map
    /// (labels, annotations, selectors, Kubernetes objects).
    pub fn checks_children(&self, path: &str) -> bool {
        let last = path.rsplit('.').next().unwrap_or(path);
        let free_form = FREE_FORM.contains(&last)
            || last.ends_with("Annotations")
            || last.ends_with("Labels")
            || last == "annotations"
            || last == "labels";
        self.parents.contains(path) && !self.empty_maps.contains(path) && !free_form
    }

    /// Number of declared paths.
    pub fn len(&self) -> usize {
        self.declared.len()
    }

    /// True if nothing is declared (not a chart's values.yaml).
    pub fn is_empty(&self) -> bool {
        self.declared.is_empty()
    }
}

/// Chart key sets by minor: the version each came from and its keys.
#[derive(Debug, Clone, Default)]
pub struct Charts {
    by_minor: BTreeMap<Minor, (Version, ChartKeys)>,
}

impl Charts {
    /// No charts.
    pub fn new() -> Self {
        Charts::default()
    }

    /// The bundled charts (latest patch of 1.11–1.20), read once.
    pub fn bundled() -> &'static Charts {
        static BUNDLE: OnceLock<Charts> = OnceLock::new();
        BUNDLE.get_or_init(|| {
            let mut c = Charts::new();
            for (v, text) in BUNDLED {
                c.insert(*v, text);
            }
            c
        })
    }

    /// Add a chart version's `values.yaml`, replacing the one held for its minor.
    pub fn insert(&mut self, version: Version, values_yaml: &str) {
        self.by_minor
            .insert(Minor::of(version), (version, ChartKeys::parse(values_yaml)));
    }

    /// The chart held for a minor: its version and keys.
    pub fn for_minor(&self, minor: Minor) -> Option<(Version, &ChartKeys)> {
        self.by_minor.get(&minor).map(|(v, k)| (*v, k))
    }

    /// The versions held, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = Version> + '_ {
        self.by_minor.values().map(|(v, _)| *v)
    }
}

/// Every key path declared in a chart's values.yaml, as [`ChartKeys::declares`] reads it (without
/// [`TEMPLATE_ONLY_KEYS`]).
pub fn declared_keys(values_yaml: &str) -> HashSet<String> {
    scan(values_yaml).declared
}

struct Scan {
    declared: HashSet<String>,
    empty_maps: HashSet<String>,
}

/// A key at the start of `body` (`key:` followed by a space or the end); returns the key and
/// the rest of the line after the colon.
fn key_of(body: &str) -> Option<(&str, &str)> {
    let end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_-./".contains(c)))
        .unwrap_or(body.len());
    if end == 0 {
        return None;
    }
    let rest = body[end..].trim_start_matches(' ');
    let rest = rest.strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with(' ')).then(|| (&body[..end], rest.trim()))
}

/// Every key path declared in a chart's values.yaml (and the real `key: {}` maps among them), found by indentation, counting commented-out
/// keys (`# key:` / `#key:`) as declared, as the data README asks. Not a YAML parser: block
/// scalars are skipped, list items are ignored.
///
/// One layout needs care: from chart 1.16 the commented children of an empty map are written at
/// the map's own indentation (`maglev: {}` then `# tableSize:` at column 0), while the same
/// layout also puts unrelated commented top-level keys after an empty map (`tmpVolume: {}`,
/// `# emptyDir:` ... then `# devices:`). So a commented run after `key: {}` that starts no deeper
/// than the map is read both ways: as the map's children (shifted in) and as written.
fn scan(text: &str) -> Scan {
    struct Entry {
        indent: usize,
        key: String,
        comment: bool,
    }
    /// The parent chain: walking down the stack, each ancestor is less indented than the last.
    fn path_at(stack: &[Entry], indent: usize, key: &str) -> String {
        let mut limit = indent;
        let mut path: Vec<&str> = Vec::new();
        for e in stack.iter().rev() {
            if e.indent < limit {
                path.push(&e.key);
                limit = e.indent;
            }
        }
        path.reverse();
        path.push(key);
        path.join(".")
    }
    let mut stack: Vec<Entry> = Vec::new();
    let mut out = HashSet::new();
    let mut empty_maps = HashSet::new();
    let mut block_scalar: Option<usize> = None;
    // After a real `key: {}` line: its stack index, and once the first commented key is seen, how
    // far the commented run is shifted in to become its children.
    let mut empty_map: Option<(usize, Option<usize>)> = None;
    for raw in text.lines() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        let col = raw.len() - trimmed.len();
        if let Some(ind) = block_scalar {
            if col > ind {
                continue;
            }
            block_scalar = None;
        }
        let (raw_indent, body, comment) = match trimmed.strip_prefix('#') {
            Some(rest) => {
                let after = rest.trim_start_matches(' ');
                let spaces = rest.len() - after.len();
                (col + spaces.saturating_sub(1), after, true)
            }
            None => (col, trimmed, false),
        };
        if !comment {
            empty_map = None;
        }
        let Some((key, rest)) = key_of(body) else {
            continue;
        };
        let mut indent = raw_indent;
        if comment {
            if let Some((i, shift)) = &mut empty_map {
                let map_indent = stack.get(*i).map_or(0, |e| e.indent);
                let delta = *shift.get_or_insert(if raw_indent <= map_indent {
                    map_indent + 2 - raw_indent
                } else {
                    0
                });
                if delta > 0 {
                    out.insert(path_at(&stack, raw_indent, key));
                    indent = raw_indent + delta;
                }
            }
            // A commented key replaces earlier commented siblings; it never closes real keys
            // (a comment at column 0 inside a nested block is common).
            while stack
                .last()
                .is_some_and(|e| e.comment && e.indent >= indent)
            {
                stack.pop();
            }
        } else {
            // Real content ends every commented block: a real key is never a commented key's child.
            stack.retain(|e| !e.comment);
            while stack.last().is_some_and(|e| e.indent >= indent) {
                stack.pop();
            }
        }
        let path = path_at(&stack, indent, key);
        out.insert(path.clone());
        stack.push(Entry {
            indent,
            key: key.to_owned(),
            comment,
        });
        if !comment {
            let rest = rest.split(" #").next().unwrap_or("").trim();
            if rest == "{}" {
                empty_maps.insert(path);
                empty_map = Some((stack.len() - 1, None));
            }
            if rest.starts_with('|') || rest.starts_with('>') {
                block_scalar = Some(col);
            }
        }
    }
    Scan {
        declared: out,
        empty_maps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled(minor: u32) -> &'static ChartKeys {
        Charts::bundled()
            .for_minor(Minor::new(1, minor))
            .map(|(_, k)| k)
            .expect("bundled chart")
    }

    #[test]
    fn bundles_every_minor_from_1_11_to_1_20() {
        let versions: Vec<String> = Charts::bundled()
            .versions()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            versions,
            [
                "1.11.20", "1.12.19", "1.13.18", "1.14.19", "1.15.19", "1.16.19", "1.17.18",
                "1.18.12", "1.19.6", "1.20.0"
            ]
        );
        for m in 11..=20 {
            assert!(bundled(m).len() > 500, "1.{m} has its keys");
        }
    }

    #[test]
    fn upgrade_compatibility_is_declared_in_every_chart() {
        // Commented out (`# upgradeCompatibility: '1.8'`) in 1.11–1.15, a real key from 1.16.
        for m in 11..=20 {
            assert!(bundled(m).declares("upgradeCompatibility"), "1.{m}");
        }
    }

    #[test]
    fn children_checks() {
        let k = bundled(16);
        assert!(k.checks_children("loadBalancer"));
        assert!(k.checks_children("bpf"));
        assert!(!k.checks_children("nodeSelector"), "free-form");
        assert!(!k.checks_children("podAnnotations"), "free-form");
        assert!(!k.checks_children("extraConfig"), "`{{}}` map");
        assert!(!k.checks_children("k8sServiceHost"), "a scalar");
        assert!(
            k.declares("nodePort.directRoutingDevice"),
            "template-only key"
        );
    }
}
