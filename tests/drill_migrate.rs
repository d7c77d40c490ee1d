//! Upgrade drills: upgrade paths (table-driven) and Helm values migration between Cilium chart
//! versions, with golden files for every pair of neighbouring minors 1.11 → 1.20.
//!
//! Inputs are hand-written (`tests/golden/migrate/input-<from>.yaml`: a production
//! kube-proxy-free, native-routing DSR + Maglev cluster in the from-chart's names, plus one key the
//! next chart no longer has). The expected migrated values, diff and notes are goldens:
//! regenerate with `UPDATE_GOLDEN=1 cargo test --test drill_migrate`, then review the diff.

use crate::common;

use common::*;
use kubedrill::drill::Minor;
use kubedrill::drill::chart::{TEMPLATE_ONLY_KEYS, declared_keys};
use kubedrill::drill::migrate::{
    self, ChangeKind, MigrateError, MigrateOptions, Migration, refuse_reuse_values,
};
use kubedrill::drill::path::{self, PathError, Releases, StepKind};
use kubedrill::spec::Version;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};

fn v(s: &str) -> Version {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// The latest patch of each minor 1.11–1.20, oldest first (the bundled charts).
fn chart_versions() -> Vec<Version> {
    path::DEFAULT_LATEST.to_vec()
}

/// Each pair of neighbouring minors.
fn pairs() -> Vec<(Version, Version)> {
    let c = chart_versions();
    c.windows(2).map(|w| (w[0], w[1])).collect()
}

fn input(from: Version) -> Value {
    let path = repo().join(format!("tests/golden/migrate/input-{from}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (inputs are hand-written)", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn declared(version: Version) -> HashSet<String> {
    let path = repo().join(format!("tests/data/cilium-values/{version}/values.yaml"));
    declared_keys(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")))
}

/// Every leaf path (`a.b.c`); lists and scalars are leaves.
fn leaf_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(child, &p, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Leaves of `values` that chart `version`'s values.yaml does not declare.
fn undeclared(values: &Value, version: Version) -> Vec<String> {
    let keys = declared(version);
    let mut leaves = Vec::new();
    leaf_paths(values, "", &mut leaves);
    leaves
        .into_iter()
        .filter(|l| !keys.contains(l) && !TEMPLATE_ONLY_KEYS.contains(&l.as_str()))
        .collect()
}

fn run(from: Version, to: Version) -> Migration {
    migrate::migrate(&input(from), from, to, &MigrateOptions::default())
        .unwrap_or_else(|e| panic!("{from} → {to}: {e}"))
}

fn notes(m: &Migration) -> String {
    let mut out = String::from("# changes\n");
    for c in &m.changes {
        out.push_str(&format!("{c}\n"));
    }
    out.push_str("# warnings\n");
    for w in &m.warnings {
        out.push_str(&format!("{w}\n"));
    }
    out
}

/// True if `path` is `leaf` or one of its parents.
fn covers(path: &str, leaf: &str) -> bool {
    leaf == path || leaf.starts_with(&format!("{path}."))
}

fn removed_paths(m: &Migration) -> Vec<&str> {
    m.changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Removed { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Goldens
// ---------------------------------------------------------------------------------------------

#[test]
fn golden_neighbouring_minors() {
    let mut failures = Vec::new();
    for (from, to) in pairs() {
        let m = run(from, to);
        let base = format!("migrate/{from}-to-{to}");
        let yaml = m.values_yaml().unwrap();
        failures.extend(check_golden(&format!("{base}.values.yaml"), &yaml));
        failures.extend(check_golden(&format!("{base}.diff"), &m.diff()));
        failures.extend(check_golden(&format!("{base}.notes"), &notes(&m)));
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every file in `tests/golden/migrate/` is an input or an expected output of a pair.
#[test]
fn golden_dir_has_nothing_stale() {
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        return;
    }
    let dir = repo().join("tests/golden/migrate");
    let found: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut expected = BTreeSet::new();
    for (from, to) in pairs() {
        expected.insert(format!("input-{from}.yaml"));
        for ext in ["values.yaml", "diff", "notes"] {
            expected.insert(format!("{from}-to-{to}.{ext}"));
        }
    }
    assert_eq!(
        found,
        expected,
        "stale or missing files in {}",
        dir.display()
    );
}

/// The goldens say what they should, independently of blessing.
#[test]
fn production_intent_survives_every_step() {
    for (from, to) in pairs() {
        let m = run(from, to);
        let o = &m.values;
        let ctx = format!("{from} → {to}:\n{}", m.values_yaml().unwrap());
        assert_eq!(o["k8sServiceHost"], json!("10.10.0.11"), "{ctx}");
        assert_eq!(o["k8sServicePort"], json!(6443), "{ctx}");
        assert_eq!(o["ipv4NativeRoutingCIDR"], json!("10.233.64.0/18"), "{ctx}");
        assert!(o.get("nativeRoutingCIDR").is_none(), "{ctx}");
        assert_eq!(o["autoDirectNodeRoutes"], json!(true), "{ctx}");
        assert_eq!(o["loadBalancer"]["mode"], json!("dsr"), "{ctx}");
        assert_eq!(o["loadBalancer"]["algorithm"], json!("maglev"), "{ctx}");
        assert_eq!(
            o["maglev"],
            json!({"hashSeed": "a3ViZWRyaWxsLWxi", "tableSize": 16381}),
            "{ctx}: the Maglev seed must never change across upgrades"
        );
        assert_eq!(
            o["bpf"],
            json!({"hostLegacyRouting": false, "masquerade": true}),
            "{ctx}"
        );
        assert_eq!(o["socketLB"], json!({"hostNamespaceOnly": true}), "{ctx}");
        // Kept when the input has it, else the from-version's minor.
        let first = input(from)
            .get("upgradeCompatibility")
            .cloned()
            .unwrap_or_else(|| json!(Minor::of(from).to_string()));
        assert_eq!(o["upgradeCompatibility"], first, "{ctx}");
        if to.at_least(1, 14) {
            assert_eq!(o["routingMode"], json!("native"), "{ctx}");
            assert_eq!(o["kubeProxyReplacement"], json!(true), "{ctx}");
            assert!(o.get("tunnel").is_none(), "{ctx}");
            assert!(o.get("tunnelProtocol").is_none(), "{ctx}");
        } else {
            assert_eq!(o["tunnel"], json!("disabled"), "{ctx}");
            assert_eq!(o["kubeProxyReplacement"], json!("strict"), "{ctx}");
        }
        // Exactly the one key the next chart lacks is removed, and said so.
        let gone: Vec<String> = undeclared(&input(from), to)
            .into_iter()
            .filter(|k| {
                ![
                    "nativeRoutingCIDR",
                    "bpf.hostRouting",
                    "tunnel",
                    "hostServices.hostNamespaceOnly",
                    "hostServices.protocols",
                ]
                .contains(&k.as_str())
            })
            .collect();
        assert_eq!(gone.len(), 1, "{from}: one removed/unknown key: {gone:?}");
        assert!(
            removed_paths(&m).iter().any(|p| covers(p, &gone[0])),
            "{ctx}"
        );
        assert!(
            m.warnings
                .iter()
                .any(|w| w.path.as_deref().is_some_and(|p| covers(p, &gone[0]))),
            "{ctx}: {:?}",
            m.warnings
        );
        assert!(!m.diff().is_empty(), "{ctx}");
    }
}

#[test]
fn inputs_use_their_own_charts_names() {
    for (from, _) in pairs() {
        let odd = undeclared(&input(from), from);
        // Only 1.19's typo is foreign to its own chart.
        let expected: Vec<&str> = if from == v("1.19.6") {
            vec!["loadBalancer.algorythm"]
        } else {
            vec![]
        };
        assert_eq!(odd, expected, "input-{from}.yaml");
    }
}

#[test]
fn migrated_keys_exist_in_the_target_chart() {
    for (from, to) in pairs() {
        // The check can fail: every unmigrated input has a key the target lacks.
        assert!(
            !undeclared(&input(from), to).is_empty(),
            "input-{from}.yaml should hold a key chart {to} lacks"
        );
        let m = run(from, to);
        assert_eq!(
            undeclared(&m.values, to),
            Vec::<String>::new(),
            "{from} → {to}"
        );
    }
    // And across the whole range at once.
    let from = v("1.11.20");
    for to in chart_versions().into_iter().skip(1) {
        let m = run(from, to);
        assert_eq!(
            undeclared(&m.values, to),
            Vec::<String>::new(),
            "{from} → {to}"
        );
    }
}

#[test]
fn multi_step_equals_the_composition_of_steps() {
    let start = v("1.11.20");
    let end = v("1.20.0");
    let original = input(start);
    let whole = migrate::migrate(&original, start, end, &MigrateOptions::default()).unwrap();

    let mut values = original.clone();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    for (from, to) in pairs() {
        let m = migrate::migrate(&values, from, to, &MigrateOptions::default()).unwrap();
        values = m.values;
        changes.extend(m.changes);
        warnings.extend(m.warnings);
    }
    assert_eq!(whole.values, values);
    assert_eq!(whole.changes, changes);
    assert_eq!(whole.warnings, warnings);
    assert_eq!(whole.diff(), migrate::diff(&original, &values));
    // Changes are made step by step, in order, at the charts of the path.
    let ats: Vec<Version> = whole.changes.iter().map(|c| c.at).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    assert!(ats.iter().all(|a| chart_versions().contains(a)), "{ats:?}");
    assert!(ats.contains(&v("1.12.19")) && ats.contains(&v("1.14.19")));
    assert_eq!(whole.values["routingMode"], json!("native"));
    assert_eq!(whole.values["upgradeCompatibility"], json!("1.11"));
}

#[test]
fn diff_is_sorted_dotted_and_line_oriented() {
    let m = run(v("1.13.18"), v("1.14.19"));
    let d = m.diff();
    let lines: Vec<&str> = d.lines().collect();
    assert!(lines.contains(&"- tunnel: \"disabled\""), "{d}");
    assert!(lines.contains(&"+ routingMode: \"native\""), "{d}");
    assert!(lines.contains(&"- kubeProxyReplacement: \"strict\""), "{d}");
    assert!(lines.contains(&"+ kubeProxyReplacement: true"), "{d}");
    assert!(lines.contains(&"- sockops.enabled: false"), "{d}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("- ") || l.starts_with("+ ")),
        "{d}"
    );
    let paths: Vec<&str> = lines
        .iter()
        .map(|l| l[2..].split(": ").next().unwrap())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "sorted by path");
    // `-` before `+` for one path.
    let k = lines
        .iter()
        .position(|l| l.starts_with("- kubeProxyReplacement"))
        .unwrap();
    assert!(lines[k + 1].starts_with("+ kubeProxyReplacement"), "{d}");
}

#[test]
fn values_file_quotes_upgrade_compatibility_and_round_trips() {
    let m = run(v("1.11.20"), v("1.12.19"));
    let yaml = m.values_yaml().unwrap();
    assert!(
        yaml.contains("upgradeCompatibility: \"1.11\"")
            || yaml.contains("upgradeCompatibility: '1.11'"),
        "a YAML 1.1 reader must see a string, not the number 1.11:\n{yaml}"
    );
    let back: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, m.values);
    // 1.10 is the dangerous one: unquoted it reads as 1.1.
    let opts = MigrateOptions {
        upgrade_compatibility: Some(Minor::new(1, 10)),
        ..MigrateOptions::default()
    };
    let m = migrate::migrate(&input(v("1.11.20")), v("1.11.20"), v("1.12.19"), &opts).unwrap();
    let yaml = m.values_yaml().unwrap();
    let back: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back["upgradeCompatibility"], json!("1.10"), "{yaml}");
}

// ---------------------------------------------------------------------------------------------
// Blocking cases and options
// ---------------------------------------------------------------------------------------------

#[test]
fn native_routing_without_cidr_blocks_at_1_18() {
    let mut values = input(v("1.17.18"));
    values
        .as_object_mut()
        .unwrap()
        .remove("ipv4NativeRoutingCIDR");
    let e = migrate::migrate(
        &values,
        v("1.17.18"),
        v("1.18.12"),
        &MigrateOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, MigrateError::NativeCidrRequired { at } if at == v("1.18.12")),
        "{e}"
    );
    assert!(e.to_string().contains("ipv4NativeRoutingCIDR"), "{e}");
    // 1.17 itself does not need it.
    migrate::migrate(
        &values,
        v("1.16.19"),
        v("1.17.18"),
        &MigrateOptions::default(),
    )
    .unwrap();
    // Given by the caller, it is added.
    let opts = MigrateOptions {
        native_cidr: Some("10.233.0.0/16".parse().unwrap()),
        ..MigrateOptions::default()
    };
    let m = migrate::migrate(&values, v("1.17.18"), v("1.18.12"), &opts).unwrap();
    assert_eq!(m.values["ipv4NativeRoutingCIDR"], json!("10.233.0.0/16"));
    assert!(
        m.diff()
            .contains("+ ipv4NativeRoutingCIDR: \"10.233.0.0/16\"\n")
    );
}

#[test]
fn keep_unknown_keeps_and_warns() {
    let opts = MigrateOptions {
        keep_unknown: true,
        ..MigrateOptions::default()
    };
    let m = migrate::migrate(&input(v("1.19.6")), v("1.19.6"), v("1.20.0"), &opts).unwrap();
    assert_eq!(m.values["loadBalancer"]["algorythm"], json!("random"));
    assert!(removed_paths(&m).is_empty());
    let w = m
        .warnings
        .iter()
        .find(|w| w.path.as_deref() == Some("loadBalancer.algorythm"))
        .expect("a warning");
    assert!(w.message.contains("kept"), "{w}");
}

/// What kubedrill (and Kubespray offline) install with: Cilium's images pinned by tag. Across
/// two steps the tags follow each step; an Envoy tag stays; a pinned digest is a warning.
#[test]
fn pinned_image_tags_follow_the_upgrade() {
    let values = json!({
        "image": {"repository": "mirror.local/cilium/cilium", "tag": "v1.18.12", "useDigest": false},
        "preflight": {"image": {"repository": "mirror.local/cilium/cilium", "tag": "1.18.12", "useDigest": false}},
        "operator": {"image": {"override": "mirror.local/cilium/operator-generic:v1.18.12@sha256:abc"}},
        "envoy": {"image": {"tag": "v1.34.10-1757000000-0123456789abcdef"}},
        "hubble": {"relay": {"image": {"tag": "v1.18.11", "useDigest": false}}},
        "routingMode": "native",
        "ipv4NativeRoutingCIDR": "10.233.64.0/18",
    });
    let m = migrate::migrate(
        &values,
        v("1.18.12"),
        v("1.20.0"),
        &MigrateOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.values["image"]["tag"], json!("v1.20.0"));
    assert_eq!(m.values["preflight"]["image"]["tag"], json!("1.20.0"));
    assert_eq!(
        m.values["operator"]["image"]["override"],
        json!("mirror.local/cilium/operator-generic:v1.20.0@sha256:abc")
    );
    assert_eq!(
        m.values["envoy"]["image"]["tag"],
        json!("v1.34.10-1757000000-0123456789abcdef")
    );
    // Another patch than the one left: not this release's image, left alone.
    assert_eq!(
        m.values["hubble"]["relay"]["image"]["tag"],
        json!("v1.18.11")
    );
    let steps: Vec<String> = m
        .changes
        .iter()
        .filter(|c| matches!(&c.kind, ChangeKind::ValueMapped { path, .. } if path == "image.tag"))
        .map(|c| c.to_string())
        .collect();
    assert_eq!(steps.len(), 2, "one change per step: {steps:?}");
    assert!(
        steps[0].contains("\"v1.18.12\" → \"v1.19.6\""),
        "{}",
        steps[0]
    );
    assert!(
        steps[1].contains("\"v1.19.6\" → \"v1.20.0\""),
        "{}",
        steps[1]
    );
    let digest = m
        .warnings
        .iter()
        .find(|w| w.path.as_deref() == Some("operator.image.override"))
        .expect("a digest warning");
    assert!(digest.message.contains("digest"), "{digest}");
    assert!(m.diff().contains("image.tag"), "{}", m.diff());
}

#[test]
fn reuse_values_only_within_a_minor() {
    assert!(refuse_reuse_values(v("1.16.3"), v("1.16.19")).is_ok());
    let e = refuse_reuse_values(v("1.16.19"), v("1.17.18")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("1.16.19") && msg.contains("1.17.18") && msg.contains("--values"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Upgrade paths
// ---------------------------------------------------------------------------------------------

/// `(from, to, force, steps as "to:kind")` with kinds c(atch-up), m(inor), f(orced).
const PATHS: &[(&str, &str, bool, &[&str])] = &[
    ("1.14.3", "1.14.19", false, &["1.14.19:c"]),
    ("1.14.3", "1.14.10", false, &["1.14.10:c"]),
    ("1.14.19", "1.15.19", false, &["1.15.19:m"]),
    ("1.14.3", "1.15.2", false, &["1.14.19:c", "1.15.2:m"]),
    (
        "1.14.3",
        "1.17.0",
        false,
        &["1.14.19:c", "1.15.19:m", "1.16.19:m", "1.17.0:m"],
    ),
    (
        "1.11.0",
        "1.20.0",
        false,
        &[
            "1.11.20:c",
            "1.12.19:m",
            "1.13.18:m",
            "1.14.19:m",
            "1.15.19:m",
            "1.16.19:m",
            "1.17.18:m",
            "1.18.12:m",
            "1.19.6:m",
            "1.20.0:m",
        ],
    ),
    // Newer than the table's patch: no catch-up.
    ("1.20.3", "1.20.4", false, &["1.20.4:c"]),
    // The target's minor may lie outside the table: it is given exactly.
    ("1.20.0", "1.21.0", false, &["1.21.0:m"]),
    // Forced across 1.21, which the table lacks.
    (
        "1.19.2",
        "1.22.1",
        true,
        &["1.19.6:c", "1.20.0:m", "1.22.1:f"],
    ),
];

fn kind_letter(k: StepKind) -> char {
    match k {
        StepKind::PatchCatchUp => 'c',
        StepKind::MinorUpgrade => 'm',
        StepKind::Forced => 'f',
    }
}

#[test]
fn upgrade_paths() {
    for (from, to, force, want) in PATHS {
        let p = path::plan(v(from), v(to), &Releases::default(), *force)
            .unwrap_or_else(|e| panic!("{from} → {to}: {e}"));
        let got: Vec<String> = p
            .steps()
            .iter()
            .map(|s| format!("{}:{}", s.to(), kind_letter(s.kind())))
            .collect();
        assert_eq!(got, *want, "{from} → {to}");
        // Chained: each step starts where the last ended.
        assert_eq!(p.steps()[0].from(), v(from));
        for w in p.steps().windows(2) {
            assert_eq!(w[0].to(), w[1].from(), "{from} → {to}");
        }
        assert_eq!(p.warnings().is_empty(), !*force, "{from} → {to}");
    }
}

#[test]
fn upgrade_path_errors() {
    let r = Releases::default();
    let err = |from: &str, to: &str, force: bool| {
        path::plan(v(from), v(to), &r, force).expect_err(&format!("{from} → {to} must fail"))
    };
    assert_eq!(
        err("1.16.19", "1.16.19", false),
        PathError::SameVersion(v("1.16.19"))
    );
    assert_eq!(
        err("1.16.19", "1.16.19", true),
        PathError::SameVersion(v("1.16.19"))
    );
    let e = err("1.16.19", "1.15.19", true);
    assert!(matches!(e, PathError::Downgrade { .. }), "{e}");
    assert!(e.to_string().contains("helm rollback"), "{e}");
    assert!(matches!(
        err("1.16.2", "1.16.1", false),
        PathError::Downgrade { .. }
    ));
    assert!(matches!(
        err("1.20.0", "2.0.0", true),
        PathError::MajorChange { .. }
    ));
    // 1.21 is outside the table: the path to 1.22 cannot step through it.
    let e = err("1.20.0", "1.22.0", false);
    assert!(
        matches!(e, PathError::UnknownMinor { minor, .. } if minor == Minor::new(1, 21)),
        "{e}"
    );
    assert!(e.to_string().contains("1.11–1.20"), "{e}");
    // The running minor outside the table: its latest patch is unknown.
    let e = err("1.10.4", "1.11.20", false);
    assert!(
        matches!(e, PathError::UnknownMinor { minor, .. } if minor == Minor::new(1, 10)),
        "{e}"
    );
}

#[test]
fn skipped_minor_refused_unless_forced() {
    // A table without 1.15: the path 1.14 → 1.16 would skip it.
    let r = Releases::new([v("1.14.19"), v("1.16.19"), v("1.17.18")]).unwrap();
    let e = path::plan(v("1.14.5"), v("1.17.18"), &r, false).unwrap_err();
    assert_eq!(
        e,
        PathError::SkippedMinor {
            from: v("1.14.5"),
            to: v("1.17.18"),
            missing: Minor::new(1, 15),
        }
    );
    let msg = e.to_string();
    assert!(msg.contains("skip 1.15") && msg.contains("force"), "{msg}");

    let p = path::plan(v("1.14.5"), v("1.17.18"), &r, true).unwrap();
    let got: Vec<(String, StepKind)> = p
        .steps()
        .iter()
        .map(|s| (s.to().to_string(), s.kind()))
        .collect();
    assert_eq!(
        got,
        [
            ("1.14.19".to_owned(), StepKind::PatchCatchUp),
            ("1.16.19".to_owned(), StepKind::Forced),
            ("1.17.18".to_owned(), StepKind::MinorUpgrade),
        ]
    );
    assert_eq!(p.warnings().len(), 1);
    assert!(
        p.warnings()[0].contains("1.14.19 → 1.16.19 skips Cilium 1.15"),
        "{:?}",
        p.warnings()
    );
}
