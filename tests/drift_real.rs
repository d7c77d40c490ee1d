//! Config drift with the real Cilium charts (1.18.11 → 1.19.7, packaged from the Cilium Go module
//! by `scripts/upstream-build.sh --only cilium-chart`) and the real Helm 3: what the target chart
//! changes in `cilium-config` with unchanged values, which of those touch the datapath, and
//! whether the pins kubedrill offers really bring the old settings back when Helm renders again.
//!
//! Needs `bin/helm-v3.17.3` and `charts/cilium-{1.18.11,1.19.7}.tgz` under the upstream output
//! root; skipped loudly without them unless `KUBEDRILL_REQUIRE_CHARTS=1` (set by scripts/test.sh
//! as root, after building them), which makes a missing one a failure.

use crate::common::apiserver;

use apiserver::{helm3_bin, upstream_dir};
use kubedrill::drill::drift::{self, AgentConfig};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const FROM: &str = "1.18.11";
const TO: &str = "1.19.7";

/// Values as `kubedrill apply` sets them for the lab (kube-proxy replacement, native routing,
/// DSR, Maglev): the same on both sides, so every change comes from the chart.
const VALUES: &str = "kubeProxyReplacement: true\nk8sServiceHost: 10.234.0.11\nk8sServicePort: 6443\nroutingMode: native\nipv4NativeRoutingCIDR: 10.233.64.0/18\nautoDirectNodeRoutes: true\nloadBalancer:\n  mode: dsr\n  algorithm: maglev\n  dsrDispatch: opt\nmaglev:\n  tableSize: 16381\nbpf:\n  masquerade: true\nl7Proxy: false\nenvoy:\n  enabled: false\n";

fn chart(v: &str) -> PathBuf {
    upstream_dir().join(format!("charts/cilium-{v}.tgz"))
}

fn available(test: &str) -> Option<PathBuf> {
    let mut missing = Vec::new();
    let helm = helm3_bin().map_err(|e| missing.push(e)).ok();
    for v in [FROM, TO] {
        if !chart(v).is_file() {
            missing.push(format!("no {}", chart(v).display()));
        }
    }
    if missing.is_empty() {
        return helm;
    }
    let why = format!(
        "{}\n  To get them: ./scripts/upstream-build.sh --only helm3,cilium-chart",
        missing.join("\n  ")
    );
    if std::env::var("KUBEDRILL_REQUIRE_CHARTS").as_deref() == Ok("1") {
        panic!("{test}: KUBEDRILL_REQUIRE_CHARTS=1 but\n  {why}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPING {test}:\n  {why}\n  Set KUBEDRILL_REQUIRE_CHARTS=1 to make this a failure. ***\n"
    );
    None
}

fn template(helm: &Path, chart: &Path, values: &[&Path]) -> String {
    let mut c = Command::new(helm);
    c.args(["template", "cilium"])
        .arg(chart)
        .args(["-n", "kube-system"]);
    for v in values {
        c.arg("-f").arg(v);
    }
    let out = c.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm template {}: {}",
        chart.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 manifest")
}

#[test]
fn chart_1_19_changes_the_datapath_and_the_pins_bring_it_back() {
    let Some(helm) = available("chart_1_19_changes_the_datapath_and_the_pins_bring_it_back") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, VALUES).expect("values");
    let before = AgentConfig::from_manifest(FROM, &template(&helm, &chart(FROM), &[&values]))
        .expect("1.18 cilium-config");
    let after = AgentConfig::from_manifest(TO, &template(&helm, &chart(TO), &[&values]))
        .expect("1.19 cilium-config");
    // Both sides render what the values ask.
    for c in [&before, &after] {
        assert_eq!(c.get("kube-proxy-replacement"), Some("true"));
        assert_eq!(c.get("bpf-lb-mode"), Some("dsr"));
        assert_eq!(c.get("bpf-lb-algorithm"), Some("maglev"));
    }

    // The target chart's own template says which value writes which key.
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(chart(TO))
        .arg("-C")
        .arg(dir.path())
        .arg("cilium/templates/cilium-configmap.yaml")
        .status()
        .expect("tar");
    assert!(untar.success());
    let tmpl = std::fs::read_to_string(dir.path().join("cilium/templates/cilium-configmap.yaml"))
        .expect("template");
    let paths = drift::value_paths(&tmpl);
    assert_eq!(
        paths.get("enable-l2-neigh-discovery").map(String::as_str),
        Some("l2NeighDiscovery.enabled")
    );

    let d = drift::diff(&before, &after, &paths);
    eprintln!(
        "cilium-config {FROM} -> {TO}:\n  {}",
        d.lines().join("\n  ")
    );
    let change = |k: &str| {
        d.changes
            .iter()
            .find(|c| c.key == k)
            .unwrap_or_else(|| panic!("no change of {k} in {:#?}", d.lines()))
    };
    // New in 1.19 with unchanged values: path MTU discovery mode, a datapath setting.
    let pmtud = change("packetization-layer-pmtud-mode");
    assert_eq!(pmtud.before, None);
    assert!(pmtud.after.is_some());
    assert!(pmtud.datapath.is_some());
    // Written by 1.18's chart, not by 1.19's (the option left the agent): flagged, no pin.
    let src_range = change("enable-svc-source-range-check");
    assert_eq!(src_range.after, None);
    assert!(src_range.datapath.is_some());
    assert!(src_range.pin.is_none());
    // Changed defaults, not the datapath, each with the value that keeps the 1.18 setting.
    for (key, path) in [
        (
            "policy-default-local-cluster",
            "clustermesh.policyDefaultLocalCluster",
        ),
        ("mesh-auth-enabled", "authentication.enabled"),
    ] {
        let c = change(key);
        assert!(c.datapath.is_none(), "{key}");
        assert_eq!(c.pin.as_ref().map(|p| p.path.as_str()), Some(path), "{key}");
    }
    // The Maglev table the values fix stays; sizing is shown either way.
    assert!(
        d.changes
            .iter()
            .all(|c| c.key != "bpf-lb-maglev-table-size")
    );
    assert!(
        d.sizing
            .iter()
            .any(|(k, b, a)| k == "bpf-lb-maglev-table-size"
                && b.as_deref() == Some("16381")
                && a.as_deref() == Some("16381"))
    );

    // Render 1.19 again with the pins: Helm accepts them (no key written twice) and every pin
    // brings its key back to the 1.18 value.
    let pins = d.pins();
    assert!(
        pins.as_object().is_some_and(|m| !m.is_empty()),
        "no pins: {:#?}",
        d.lines()
    );
    let pins_file = dir.path().join("pins.json");
    std::fs::write(&pins_file, serde_json::to_vec(&pins).expect("json")).expect("pins");
    let pinned = AgentConfig::from_manifest(
        "pinned",
        &template(&helm, &chart(TO), &[&values, &pins_file]),
    )
    .expect("pinned cilium-config");
    let held = d.pins_that_hold(&pinned);
    let pinned_keys: Vec<&str> = d
        .changes
        .iter()
        .filter(|c| c.pin.is_some())
        .map(|c| c.key.as_str())
        .collect();
    assert_eq!(
        held,
        pinned_keys,
        "pins that did not take effect; drift: {:#?}",
        d.lines()
    );
    assert!(held.iter().any(|k| k == "policy-default-local-cluster"));
    // With the pins, only the keys that had none still differ.
    let rest = drift::diff(&before, &pinned, &paths);
    assert!(
        rest.changes.iter().all(|c| c.pin.is_none()),
        "{:#?}",
        rest.lines()
    );
}

/// The pre-flight as `drill run` installs it: with the upgrade's values file (`envoy.enabled:
/// false`, images by tag from a mirror) the real 1.19 chart renders no Envoy pre-pull and only
/// the mirror's agent image; with the `--set` flags alone it pre-pulls the digest-pinned Envoy
/// image, which an air gap without it never pulls (seen on the lab).
#[test]
fn the_preflight_with_the_upgrades_values_pulls_only_what_the_release_uses() {
    let Some(helm) =
        available("the_preflight_with_the_upgrades_values_pulls_only_what_the_release_uses")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "envoy: {{enabled: false}}\nl7Proxy: false\nimage: {{repository: mirror.local/cilium/cilium, tag: v{TO}, useDigest: false}}\npreflight: {{image: {{repository: mirror.local/cilium/cilium, tag: v{TO}, useDigest: false}}}}\n"
        ),
    )
    .expect("values");
    let render = |with_values: bool| {
        let mut c = Command::new(&helm);
        c.args(["template", "cilium-preflight"]).arg(chart(TO));
        if with_values {
            c.arg("--values").arg(&values);
        }
        c.args([
            "--set",
            "preflight.enabled=true",
            "--set",
            "agent=false",
            "--set",
            "operator.enabled=false",
            "-n",
            "kube-system",
        ]);
        let out = c.output().expect("helm");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let bare = render(false);
    assert!(
        bare.contains("cilium-envoy"),
        "the chart's default pre-pulls Envoy"
    );
    let with = render(true);
    assert!(!with.contains("cilium-envoy"), "{with}");
    let images: Vec<&str> = with
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert!(!images.is_empty());
    assert!(
        images
            .iter()
            .all(|i| i.trim_matches('"') == format!("mirror.local/cilium/cilium:v{TO}")),
        "{images:?}"
    );
}
