//! Hostile input for the other files kubedrill reads: lab files (with their `drill:` section),
//! drill run records (parsed and rendered into a report), and the image catalog. Each property
//! starts from a real sample and mutates it (a value replaced by an extreme or malformed one,
//! lines dropped, duplicated or cut), or feeds arbitrary text. Nothing may panic; errors are
//! fine. `KUBEDRILL_FUZZ_CASES=N` sets the cases per property (default 256; reports 64).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::path::{Path, PathBuf};

fn cases(default: u32) -> u32 {
    std::env::var("KUBEDRILL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(|n: u32| if default < 256 { n.div_ceil(4) } else { n })
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn sample(p: &str) -> String {
    std::fs::read_to_string(repo(p)).expect("sample")
}

/// Values that have broken parsers before: extremes, wrong types, YAML oddities, escapes.
fn weird_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("18446744073709551615".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("1e309".to_owned()),
        Just(".nan".to_owned()),
        Just("~".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"\\u001b[2J\\u009b\"".to_owned()),
        Just("&a [*a, *a]".to_owned()),
        Just("../../../etc".to_owned()),
        Just("/".to_owned()),
        Just("\"\"".to_owned()),
        Just("0.0.0.0/0".to_owned()),
        Just("255.255.255.255/32".to_owned()),
        Just("99999999999999999999999999999999".to_owned()),
        Just("2147483648".to_owned()),
        Just("4294967296".to_owned()),
        Just("\"2026-13-45T25:61:61Z\"".to_owned()),
        Just("x".repeat(5000)),
        "[a-z0-9.:/ -]{0,12}",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value of the n-th `key: value` line.
    Value(usize, String),
    /// Drop the n-th line.
    Drop(usize),
    /// Duplicate the n-th line.
    Dup(usize),
    /// Cut the text at this fraction (per mille).
    Cut(u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), weird_value()).prop_map(|(n, v)| Mutation::Value(n, v)),
        1 => any::<usize>().prop_map(Mutation::Drop),
        1 => any::<usize>().prop_map(Mutation::Dup),
        1 => (0u16..1000).prop_map(Mutation::Cut),
    ]
}

/// Apply mutations to YAML text line by line.
fn mutate_yaml(text: &str, ms: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in ms {
        if lines.is_empty() {
            break;
        }
        match m {
            Mutation::Value(n, v) => {
                let with_value: Vec<usize> = (0..lines.len())
                    .filter(|i| lines[*i].contains(": "))
                    .collect();
                if let Some(&i) = with_value.get(n % with_value.len().max(1)) {
                    // Replace after the first `: ` (flow mappings get their first value replaced).
                    let (k, rest) = lines[i].split_once(": ").unwrap_or((&lines[i], ""));
                    let tail = if rest.trim_end().ends_with('}') {
                        "}"
                    } else {
                        ""
                    };
                    lines[i] = format!("{k}: {v}{tail}");
                }
            }
            Mutation::Drop(n) => {
                let i = n % lines.len();
                lines.remove(i);
            }
            Mutation::Dup(n) => {
                let i = n % lines.len();
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            Mutation::Cut(pm) => {
                let keep = lines.len() * usize::from(*pm) / 1000;
                lines.truncate(keep);
            }
        }
    }
    lines.join("\n")
}

/// Replace JSON leaves (chosen by index) with hostile values of every type.
fn mutate_json(v: &mut serde_json::Value, picks: &[(usize, u8)]) {
    fn leaves(v: &mut serde_json::Value, out: &mut Vec<*mut serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => m.values_mut().for_each(|x| leaves(x, out)),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| leaves(x, out)),
            other => out.push(other as *mut _),
        }
    }
    for (n, kind) in picks {
        let mut ls = Vec::new();
        leaves(v, &mut ls);
        if ls.is_empty() {
            return;
        }
        let target = ls[n % ls.len()];
        let new = match kind % 12 {
            0 => serde_json::json!(u64::MAX),
            1 => serde_json::json!(i64::MIN),
            2 => serde_json::json!(-1),
            3 => serde_json::json!(1e300),
            4 => serde_json::json!(null),
            5 => serde_json::json!(""),
            6 => serde_json::json!("\u{1b}[2J\u{9b}31m"),
            7 => serde_json::json!([]),
            8 => serde_json::json!({}),
            9 => serde_json::json!("1970-01-01T00:00:00Z"),
            10 => serde_json::json!("9999-12-31T23:59:59.999Z"),
            _ => serde_json::json!(0),
        };
        // SAFETY: `target` points into `v`, which is not otherwise borrowed here, and the list
        // of pointers is rebuilt after every write.
        unsafe { *target = new };
    }
}

fn lab_parse(text: &str) {
    // Relative `mirrors:` paths resolve against the labs/ directory, as for real lab files.
    let _ = kubedrill::lab::definition::parse(&repo("labs/fuzz.yaml"), text);
}

fn record_parse_and_render(text: &str) {
    if let Ok(rec) = kubedrill::report::parse(text, Path::new("/fuzz/run.json")) {
        let _ = kubedrill::report::render(&rec);
    }
}

fn catalog_parse(text: &str) {
    let _ = kubedrill::images::catalog::Catalog::parse(text, "fuzz catalog");
}

const LABS: &[&str] = &[
    "labs/lab-3node.yaml",
    "labs/quickstart.yaml",
    "tests/data/labs/labtest.yaml",
    "tests/data/labs/cluster-e2e.yaml",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn lab_files_never_panic(which in 0..LABS.len(), ms in prop::collection::vec(mutation(), 1..6)) {
        lab_parse(&mutate_yaml(&sample(LABS[which]), &ms));
    }

    #[test]
    fn arbitrary_lab_text_never_panics(text in any::<String>()) {
        lab_parse(&text);
    }

    #[test]
    fn catalogs_never_panic(ms in prop::collection::vec(mutation(), 1..6)) {
        catalog_parse(&mutate_yaml(&sample("images/catalog.yaml"), &ms));
    }

    #[test]
    fn arbitrary_catalog_text_never_panics(text in any::<String>()) {
        catalog_parse(&text);
    }

    #[test]
    fn arbitrary_record_text_never_panics(text in any::<String>()) {
        record_parse_and_render(&text);
    }
}

proptest! {
    // Rendering a report costs tens of milliseconds: fewer cases.
    #![proptest_config(config(64))]

    #[test]
    fn run_records_never_panic(which in 1..3usize, picks in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let text = sample(&format!("tests/data/drill/run-{which}.json"));
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("sample json");
        mutate_json(&mut v, &picks);
        record_parse_and_render(&v.to_string());
    }
}

/// The mutators reach past parsing: some mutated samples still load, so the properties test
/// the validation and rendering behind the parsers, not only their error paths.
#[test]
fn mutated_samples_still_load_sometimes() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut labs_ok, mut records_ok) = (0, 0);
    for _ in 0..200 {
        let ms = prop::collection::vec(mutation(), 1..3)
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        let text = mutate_yaml(&sample("labs/quickstart.yaml"), &ms);
        if kubedrill::lab::definition::parse(&repo("labs/fuzz.yaml"), &text).is_ok() {
            labs_ok += 1;
        }
        let picks = prop::collection::vec((any::<usize>(), any::<u8>()), 1..2)
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        let mut v: serde_json::Value =
            serde_json::from_str(&sample("tests/data/drill/run-1.json")).expect("json");
        mutate_json(&mut v, &picks);
        if let Ok(rec) = kubedrill::report::parse(&v.to_string(), Path::new("/f/run.json"))
            && kubedrill::report::render(&rec).is_ok()
        {
            records_ok += 1;
        }
    }
    assert!(labs_ok > 10, "only {labs_ok} of 200 mutated labs loaded");
    assert!(
        records_ok > 10,
        "only {records_ok} of 200 mutated records rendered"
    );
}
