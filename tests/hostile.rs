//! Hostile input, one test per class of issue #12 that lives in local files: names that try to
//! steer paths, inputs that try to cost unbounded work, numbers that try to wrap, secrets that
//! must not be printed, and files planted where kubedrill writes. Every test runs the real
//! binary on real files; a child that does not finish within its deadline fails the test (it is
//! killed, so a regression shows up as a failure, not a hang).
//!
//! The SSH classes (a node that streams, stalls or lies; terminal escapes) are in
//! `tests/ssh_hostile.rs`, the locks in `tests/locks.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run kubedrill with a deadline and its own state directory; kill it if it overruns.
fn kubedrill_in(state: &Path, args: &[&str], deadline: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubedrill"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("KUBEDRILL_STATE_DIR", state)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubedrill");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "kubedrill {args:?} did not finish within {deadline:?} (killed)\n{}",
                text(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn all(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

const SHORT: Duration = Duration::from_secs(60);

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Class 1: host names steer file paths. Names that are not RFC 1123 are refused with
/// file:line and field, and nothing is written outside `--render-dir`.
#[test]
fn host_names_cannot_steer_paths() {
    let d = tempfile::tempdir().expect("tmp");
    let state = d.path().join("state");
    for (name, quoted) in [
        ("../../x", "../../x"),
        ("/", "/"),
        ("Node1", "Node1"),
        ("a_b", "a_b"),
    ] {
        let inv_dir = d.path().join("inv");
        std::fs::create_dir_all(&inv_dir).expect("dir");
        let inv = inv_dir.join("hosts.ini");
        std::fs::write(
            &inv,
            format!("[kube_control_plane]\ncp1 ansible_host=10.0.0.1\n{name} ansible_host=10.0.0.2\n[kube_node]\ncp1\n"),
        )
        .expect("inv");
        let render = d.path().join("render");
        let o = kubedrill_in(
            &state,
            &[
                "plan",
                "-i",
                inv.to_str().expect("utf8"),
                "--render-dir",
                render.to_str().expect("utf8"),
            ],
            SHORT,
        );
        assert_eq!(o.status.code(), Some(1), "{name}: {}", all(&o));
        let err = all(&o);
        assert!(
            err.contains(&format!("{}:3", inv.display())),
            "{name}: {err}"
        );
        assert!(
            err.contains(&format!("host `{quoted}` is not a valid node name")),
            "{name}: {err}"
        );
        assert!(!render.exists(), "{name}: nothing may be rendered");
        assert!(!d.path().join("x").exists());
    }
}

/// Class 1: `lab down` takes a lab name, never a path; it deletes only a directory whose own
/// record says it is that lab.
#[test]
fn lab_down_cannot_delete_outside_the_state_directory() {
    let d = tempfile::tempdir().expect("tmp");
    let state = d.path().join("state");
    let victim = d.path().join("somewhere");
    std::fs::create_dir_all(&victim).expect("victim");
    std::fs::write(victim.join("state.json"), "{}").expect("state");
    std::fs::create_dir_all(state.join("labs")).expect("labs");
    let rel = "../../somewhere";
    let o = kubedrill_in(&state, &["lab", "down", rel], SHORT);
    assert_ne!(o.status.code(), Some(0), "{}", all(&o));
    assert!(all(&o).contains("is neither a lab name"), "{}", all(&o));
    assert!(
        victim.join("state.json").exists(),
        "the victim must survive"
    );

    // A record under the right name that says it belongs to another lab is not trusted either.
    let forged = state.join("labs/lab1");
    std::fs::create_dir_all(&forged).expect("forged");
    std::fs::write(
        forged.join("state.json"),
        r#"{"instance":{"lab":"other","created":"2026-01-01T00:00:00Z","id":"00"},"uri":"test:///default","definition":"x","network":null,"domains":[],"dir":"/"}"#,
    )
    .expect("state");
    let o = kubedrill_in(&state, &["lab", "down", "lab1"], SHORT);
    assert_ne!(o.status.code(), Some(0), "{}", all(&o));
    assert!(all(&o).contains("records lab `other`"), "{}", all(&o));
    assert!(forged.join("state.json").exists());
}

/// Class 2: small input that would expand into unbounded work: many range lines whose sum is
/// millions of hosts, a symlink loop in `group_vars/`, and files that never end.
#[test]
fn inventories_are_bounded_in_hosts_files_and_bytes() {
    let d = tempfile::tempdir().expect("tmp");
    let state = d.path().join("state");
    // ~3.5 KB of range lines: 60 × 99,999 hosts before the fix.
    let inv = d.path().join("ranges.ini");
    let mut t = String::from("[kube_control_plane]\ncp1 ansible_host=10.0.0.1\n[kube_node]\n");
    for i in 0..60 {
        t.push_str(&format!("w{i:02}-[00000:99998].example.org\n"));
    }
    std::fs::write(&inv, &t).expect("inv");
    assert!(t.len() < 4096);
    let o = kubedrill_in(
        &state,
        &["inventory", "check", "-i", inv.to_str().expect("utf8")],
        SHORT,
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    assert!(all(&o).contains("more than 10000 hosts"), "{}", all(&o));

    // Many lines each under the per-pattern limit, naming the same hosts in many groups.
    let mut t = String::from("[kube_control_plane]\ncp1 ansible_host=10.0.0.1\n");
    for g in 0..12 {
        t.push_str(&format!("[g{g}]\nn[0000:9990]\n"));
    }
    std::fs::write(&inv, &t).expect("inv");
    let o = kubedrill_in(
        &state,
        &["inventory", "check", "-i", inv.to_str().expect("utf8")],
        SHORT,
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    assert!(all(&o).contains("100000 is the limit"), "{}", all(&o));

    // A symlink loop in group_vars/.
    let dir = d.path().join("loop");
    let gv = dir.join("group_vars/all");
    std::fs::create_dir_all(&gv).expect("gv");
    std::fs::write(gv.join("main.yml"), "kube_version: v1.34.4\n").expect("vars");
    std::os::unix::fs::symlink("..", gv.join("up")).expect("symlink");
    std::os::unix::fs::symlink(".", gv.join("self")).expect("symlink");
    std::fs::write(
        dir.join("hosts.ini"),
        "[kube_control_plane]\ncp1 ansible_host=10.0.0.1\n[kube_node]\ncp1\n",
    )
    .expect("inv");
    let o = kubedrill_in(
        &state,
        &["inventory", "check", "-i", dir.to_str().expect("utf8")],
        SHORT,
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    assert!(
        all(&o).contains("reached twice (a symlink loop?)"),
        "{}",
        all(&o)
    );
}

/// Class 2: a device or a FIFO where a file is expected is refused at once, for every kind of
/// file kubedrill reads: inventory, group_vars, lab file, run record, image catalog.
#[test]
fn devices_and_fifos_are_refused_not_read() {
    let d = tempfile::tempdir().expect("tmp");
    let state = d.path().join("state");
    let fifo = d.path().join("fifo.yaml");
    mkfifo(&fifo);
    let fifo_s = fifo.to_str().expect("utf8");
    let run_dir = d.path().join("run");
    std::fs::create_dir_all(&run_dir).expect("run");
    mkfifo(&run_dir.join("run.json"));
    let gv_dir = d.path().join("gv");
    std::fs::create_dir_all(gv_dir.join("group_vars")).expect("gv");
    std::fs::write(
        gv_dir.join("hosts.ini"),
        "[kube_control_plane]\ncp1 ansible_host=10.0.0.1\n[kube_node]\ncp1\n",
    )
    .expect("inv");
    std::os::unix::fs::symlink("/dev/zero", gv_dir.join("group_vars/all.yml")).expect("link");
    let cases: Vec<Vec<&str>> = vec![
        vec!["inventory", "check", "-i", "/dev/zero"],
        vec!["inventory", "check", "-i", fifo_s],
        vec!["inventory", "check", "-i", gv_dir.to_str().expect("utf8")],
        vec!["lab", "show", "/dev/zero"],
        vec!["lab", "show", fifo_s],
        vec!["drill", "report", run_dir.to_str().expect("utf8")],
        vec!["image", "ls", "--catalog", fifo_s],
        vec!["image", "ls", "--catalog", "/dev/zero"],
    ];
    for args in cases {
        let o = kubedrill_in(&state, &args, SHORT);
        assert_ne!(o.status.code(), Some(0), "{args:?}: {}", all(&o));
        assert!(
            all(&o).contains("not a regular file"),
            "{args:?}: {}",
            all(&o)
        );
    }
}

/// Class 3: numbers at the edge are range-checked, never a panic or a silent wrap.
#[test]
fn oversized_numbers_are_clear_errors() {
    let d = tempfile::tempdir().expect("tmp");
    let state = d.path().join("state");
    for args in [
        vec![
            "check",
            "-i",
            "inventories/lab-3node",
            "--connect-timeout",
            "18446744073709551615",
        ],
        vec![
            "check",
            "-i",
            "inventories/lab-3node",
            "--connect-timeout",
            "0",
        ],
        vec![
            "apply",
            "-i",
            "inventories/lab-3node",
            "--connect-timeout",
            "18446744073709551000",
        ],
        vec![
            "lab",
            "up",
            "labs/quickstart.yaml",
            "--ssh-timeout",
            "18446744073709551615",
        ],
    ] {
        let o = kubedrill_in(&state, &args, SHORT);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", all(&o));
        let e = text(&o.stderr);
        assert!(
            e.contains("not in") && !e.contains("panicked"),
            "{args:?}: {e}"
        );
    }
    let lab = d.path().join("big.yaml");
    std::fs::write(
        &lab,
        "name: big\nhosts:\n  - {name: cp1, role: control-plane, size: {memory_mib: 18446744073709551615}}\n  - {name: w1, role: worker, size: {memory_mib: 18446744073709551615}}\n",
    )
    .expect("lab");
    let o = kubedrill_in(&state, &["lab", "show", lab.to_str().expect("utf8")], SHORT);
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let e = all(&o);
    assert!(e.contains("out of range") && !e.contains("panicked"), "{e}");
}

/// Class 4: passwords and secret-shaped values are never printed, in text or JSON; the
/// unused password is named as present; the rendered values file is 0600.
#[test]
fn secrets_are_redacted_and_values_files_private() {
    let d = tempfile::tempdir().expect("tmp");
    let state = d.path().join("state");
    let dir = d.path().join("inv");
    std::fs::create_dir_all(dir.join("group_vars/k8s_cluster")).expect("gv");
    std::fs::write(
        dir.join("hosts.ini"),
        "[all:vars]\nansible_become_password=S3cretBecome\n[kube_control_plane]\ncp1 ansible_host=10.0.0.1 ansible_password=S3cretPass ansible_ssh_pass=S3cretSsh\n[kube_node]\ncp1\n",
    )
    .expect("inv");
    std::fs::write(
        dir.join("group_vars/k8s_cluster/cilium.yml"),
        "cilium_extra_values:\n  encryption:\n    ipsec:\n      keys: \"3+ rfc4106(gcm(aes)) S3cretIpsec 128\"\n  etcd:\n    password: S3cretEtcd\n  bpf:\n    mapDynamicSizeRatio: 0.0025\n",
    )
    .expect("vars");
    let inv = dir.to_str().expect("utf8");
    for args in [
        vec!["inventory", "show", "-i", inv],
        vec!["inventory", "show", "-i", inv, "--host", "cp1"],
        vec!["inventory", "show", "-i", inv, "--output", "json"],
        vec![
            "inventory",
            "show",
            "-i",
            inv,
            "--host",
            "cp1",
            "--output",
            "json",
        ],
        vec!["inventory", "check", "-i", inv],
        vec!["plan", "-i", inv],
        vec!["plan", "-i", inv, "--output", "json"],
    ] {
        let o = kubedrill_in(&state, &args, SHORT);
        let out = all(&o);
        assert!(o.status.success(), "{args:?}: {out}");
        assert!(!out.contains("S3cret"), "{args:?} printed a secret:\n{out}");
        if args[1] == "show" || args[1] == "check" {
            assert!(
                out.contains("`ansible_password` is set, but kubedrill never uses passwords"),
                "{args:?}: {out}"
            );
            assert!(
                out.contains("`ansible_become_password` is set"),
                "{args:?}: {out}"
            );
        }
    }
    let o = kubedrill_in(
        &state,
        &["inventory", "show", "-i", inv, "--output", "json"],
        SHORT,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v["spec"]["cilium_extra_values"]["bpf"]["mapDynamicSizeRatio"], 0.0025,
        "non-secret values stay visible"
    );
    let render = d.path().join("render");
    let o = kubedrill_in(
        &state,
        &[
            "plan",
            "-i",
            inv,
            "--render-dir",
            render.to_str().expect("utf8"),
        ],
        SHORT,
    );
    assert!(o.status.success(), "{}", all(&o));
    let values = render.join("cp1/etc/kubernetes/kubedrill/cilium-values.yaml");
    let mode = std::fs::metadata(&values)
        .expect("values")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "{}", values.display());
}

/// Class 7: a file planted where kubedrill writes (a symlink to a victim) is replaced, never
/// followed, and no temporary file is left beside it.
#[test]
fn planted_symlinks_are_replaced_not_followed() {
    let d = tempfile::tempdir().expect("tmp");
    let state = d.path().join("state");
    let victim = d.path().join("victim");
    std::fs::write(&victim, "precious").expect("victim");
    let render = d.path().join("render");
    let target = render.join("cp1/etc/kubernetes/kubedrill");
    std::fs::create_dir_all(&target).expect("dir");
    std::os::unix::fs::symlink(&victim, target.join("cilium-values.yaml")).expect("link");
    std::os::unix::fs::symlink(&victim, target.join("cilium-values.yaml.tmp")).expect("link");
    let o = kubedrill_in(
        &state,
        &[
            "plan",
            "-i",
            "inventories/lab-3node",
            "--render-dir",
            render.to_str().expect("utf8"),
        ],
        SHORT,
    );
    assert!(o.status.success(), "{}", all(&o));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
    let values = target.join("cilium-values.yaml");
    assert!(
        !std::fs::symlink_metadata(&values)
            .expect("meta")
            .is_symlink()
    );
    let stray: Vec<_> = std::fs::read_dir(&target)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

/// Class 2: a large group variable is shared by every host of the group, not copied per host.
/// (Before, 60 MiB of `group_vars/all` on 10,000 hosts needed 600 GB; `cargo bench --bench
/// limits` measures the largest accepted inventory.)
#[test]
fn group_variables_are_shared_not_copied_per_host() {
    let d = tempfile::tempdir().expect("tmp");
    let mut t = String::from("[kube_control_plane]\ncp1 ansible_host=10.0.0.1\n[kube_node]\n");
    for i in 0..50 {
        t.push_str(&format!("w{i} ansible_host=10.0.1.{i}\n"));
    }
    std::fs::write(d.path().join("hosts.ini"), t).expect("inv");
    std::fs::create_dir_all(d.path().join("group_vars")).expect("gv");
    std::fs::write(
        d.path().join("group_vars/all.yml"),
        format!("bulk: \"{}\"\n", "x".repeat(1 << 20)),
    )
    .expect("vars");
    let inv = kubedrill::inventory::load(d.path()).expect("load");
    let first = &inv.hosts[0].vars["bulk"].value;
    assert!(
        inv.hosts
            .iter()
            .all(|h| std::sync::Arc::ptr_eq(&h.vars["bulk"].value, first)),
        "every host must share the one parsed value"
    );
}
