//! Temporary probe (will be deleted).
use kubedrill::inventory::{ini, resolve, yaml};
use std::path::PathBuf;
use std::sync::Arc;

#[test]
fn probe_time() {
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "ini range noip",
            "[kube_control_plane]\nn[01:99999]\n".into(),
            true,
        ),
        (
            "ini range ip",
            "[kube_control_plane]\nn[01:99999] ip=10.0.0.1\n".into(),
            true,
        ),
        ("ini range ungrouped", "n[01:99999]\n".into(), true),
        (
            "yaml range",
            "all:\n  hosts:\n    n[01:99999]:\n".into(),
            false,
        ),
        (
            "yaml range cp",
            "all:\n  children:\n    kube_control_plane:\n      hosts:\n        n[01:99999]:\n"
                .into(),
            false,
        ),
    ];
    for (label, text, ini_format) in cases {
        let t = std::time::Instant::now();
        let file = Arc::new(PathBuf::from("/x/hosts.yaml"));
        let r = if ini_format {
            ini::parse(&text, &file)
        } else {
            yaml::parse(&text, &file)
        };
        let t1 = t.elapsed();
        let ok = r.is_ok();
        if let Ok(raw) = r {
            let _ = resolve::resolve(raw);
        }
        eprintln!("{label}: parse {t1:?} ok={ok} total {:?}", t.elapsed());
    }
}
