//! Node facts and kernel-feature verdicts: every fixture in `tests/data/facts/` parses and is
//! judged; each rule of `src/kernel/` has cases on both sides of its threshold; the gather
//! script runs live on this machine.

use crate::common;

use common::*;
use kubedrill::facts::{
    self, Facts, GATHER_SCRIPT, KconfigSource, KconfigValue, KernelVersion, Offload, QueueSource,
};
use kubedrill::kernel::{
    self, EffectiveSettings, Feature, NodeReport, Status, XdpOutcome, any_requested_blocked,
    blocked, evaluate,
};
use kubedrill::spec::cilium::*;
use kubedrill::spec::{self, ClusterSpec, SpecContext};
use serde_json::json;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The spec of a two-node inventory with these cluster vars.
fn spec_with(vars: &str) -> ClusterSpec {
    let t = basic_inventory(vars);
    let inv = t.load_ok();
    match spec::build(&inv, &SpecContext::default()) {
        Ok((s, _)) => s,
        Err(d) => panic!("spec should build from\n{vars}\ngot:\n{d}"),
    }
}

/// kubedrill's defaults: Cilium 1.19, kube-proxy replacement, BPF masquerade and host routing,
/// native routing, acceleration disabled.
fn default_spec() -> ClusterSpec {
    spec_with("# defaults\n")
}

fn spec_at(cilium: &str) -> ClusterSpec {
    let mut s = default_spec();
    s.cilium = cilium.parse().expect("version");
    s
}

fn fixture_dir() -> PathBuf {
    repo().join("tests/data/facts")
}

fn fixture(name: &str) -> Facts {
    let p = fixture_dir().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    facts::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A healthy modern node: Debian 12, 6.1, full config, virtio_net with 4/2 queues and 2 CPUs.
fn good_facts() -> Facts {
    fixture("debian12-kvm-virtio-1queue.txt").with_queues(2, 4)
}

trait FactsExt {
    fn with_kernel(self, release: &str) -> Facts;
    fn with_queues(self, current: u32, max: u32) -> Facts;
    fn with_kconfig(self, name: &str, v: Option<KconfigValue>) -> Facts;
    fn nic0(&mut self) -> &mut facts::Nic;
}

impl FactsExt for Facts {
    fn with_kernel(mut self, release: &str) -> Facts {
        self.kernel.release = release.to_owned();
        self.kernel.version = KernelVersion::parse_release(release);
        self
    }
    fn with_queues(mut self, current: u32, max: u32) -> Facts {
        let q = &mut self.nic0().queues;
        q.current_combined = Some(current);
        q.max_combined = Some(max);
        q.source = QueueSource::Ethtool;
        self
    }
    fn with_kconfig(mut self, name: &str, v: Option<KconfigValue>) -> Facts {
        match v {
            Some(v) => self.kernel_config.options.insert(name.to_owned(), v),
            None => self.kernel_config.options.remove(name),
        };
        self
    }
    fn nic0(&mut self) -> &mut facts::Nic {
        let name = self.default_route_iface.clone().expect("default route");
        self.nics
            .iter_mut()
            .find(|n| n.name == name)
            .expect("default nic")
    }
}

#[track_caller]
fn status(r: &NodeReport, f: Feature) -> &Status {
    &r.verdict(f)
        .unwrap_or_else(|| panic!("no verdict for {f}"))
        .status
}

#[track_caller]
fn assert_ok(r: &NodeReport, f: Feature) {
    let s = status(r, f);
    assert_eq!(s, &Status::Ok, "{f} on {}: {s}", r.host);
}

#[track_caller]
fn assert_blocked(r: &NodeReport, f: Feature, reason: &str, fix: &str) {
    match status(r, f) {
        Status::Blocked {
            reason: r0,
            fix: f0,
        } => {
            assert!(r0.contains(reason), "{f}: reason {r0:?} lacks {reason:?}");
            assert!(f0.contains(fix), "{f}: fix {f0:?} lacks {fix:?}");
        }
        other => panic!("{f} should be blocked ({reason}), is {other}"),
    }
}

#[track_caller]
fn assert_degraded(r: &NodeReport, f: Feature, reason: &str, fallback: &str) {
    match status(r, f) {
        Status::Degraded {
            reason: r0,
            fallback: f0,
        } => {
            assert!(r0.contains(reason), "{f}: reason {r0:?} lacks {reason:?}");
            assert!(
                f0.contains(fallback),
                "{f}: fallback {f0:?} lacks {fallback:?}"
            );
        }
        other => panic!("{f} should be degraded ({reason}), is {other}"),
    }
}

fn requested(r: &NodeReport, f: Feature) -> bool {
    r.verdict(f).expect("verdict").requested
}

fn entry<'a>(e: &'a EffectiveSettings, key: &str) -> &'a kernel::EffectiveSetting {
    e.get(key)
        .unwrap_or_else(|| panic!("no entry {key}: {:#?}", e.entries))
}

// ---------------------------------------------------------------------------------------------
// Fixtures and the live script
// ---------------------------------------------------------------------------------------------

#[test]
fn every_fixture_parses_and_is_judged() {
    let mut n = 0;
    for e in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("txt") {
            continue;
        }
        let name = p.file_name().and_then(|x| x.to_str()).expect("name");
        let f = fixture(name);
        assert!(f.kernel.version.is_some(), "{name}: no kernel version");
        assert!(f.cpus.is_some_and(|c| c >= 1), "{name}: cpus {:?}", f.cpus);
        assert!(!f.os.id.is_empty(), "{name}: no OS id");
        assert!(
            !f.findings.iter().any(|x| x.contains("truncated")),
            "{name}: {:?}",
            f.findings
        );
        assert!(!f.nics.is_empty(), "{name}: no NICs");
        let mut s = default_spec();
        s.cilium_intent.acceleration = Acceleration::Native;
        let r = evaluate(&s, name, &f);
        assert_eq!(
            r.verdicts.iter().map(|v| v.feature).collect::<Vec<_>>(),
            Feature::ALL.to_vec(),
            "{name}"
        );
        assert!(r.verdicts.iter().all(|v| !v.evidence.is_empty()), "{name}");
        // Facts round-trip through JSON (they are stored between runs).
        let back: Facts =
            serde_json::from_str(&serde_json::to_string(&f).expect("ser")).expect("de");
        assert_eq!(back, f, "{name}");
        n += 1;
    }
    assert!(
        n >= 6,
        "expected the real fixture and 5 hand-written ones, found {n}"
    );
}

#[test]
fn real_fixture_from_the_dev_machine() {
    let f = fixture("real-firecracker-debian12-virtio-no-ethtool.txt");
    assert_eq!(f.kernel.version, Some(KernelVersion::new(6, 18, 44)));
    assert_eq!(f.os.family, facts::OsFamily::Debian);
    assert!(f.cpus >= Some(1));
    assert!(!f.nics.is_empty() || !f.findings.is_empty());
    let eth0 = f.default_nic().expect("eth0 is the default route");
    assert_eq!(eth0.driver.as_deref(), Some("virtio_net"));
    assert_eq!(eth0.queues.source, QueueSource::Sysfs);
    assert_eq!(eth0.queues.max_combined, None);
    assert!(!f.tools.ethtool);
    assert_eq!(f.kernel_config.source, Some(KconfigSource::ProcConfigGz));
    assert!(f.nic("ifb0").is_some_and(|n| n.virtual_));
    // Without ethtool the virtio queue rule cannot be checked.
    let mut s = default_spec();
    s.cilium_intent.acceleration = Acceleration::Native;
    let r = evaluate(&s, "dev", &f);
    assert_degraded(&r, Feature::XdpNative, "install ethtool", "assumed to work");
}

#[test]
fn gather_script_runs_live_and_parses() {
    let (text, stderr) = run_gather(None);
    assert!(
        stderr.is_empty(),
        "stderr must stay quiet: {}",
        String::from_utf8_lossy(&stderr)
    );
    let f = facts::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(f.kernel.release, release.trim());
    assert!(f.kernel.version.is_some());
    assert!(f.cpus >= Some(1), "{text}");
    assert!(f.mem_total_kib.is_some_and(|m| m > 0));
    assert!(
        !f.findings.iter().any(|x| x.contains("truncated")),
        "{text}"
    );
    assert!(!f.os.id.is_empty(), "{text}");
    // Every interface in sysfs except lo is listed, with its MTU.
    let mut sys: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("sysfs")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    sys.sort();
    let mut got: Vec<String> = f.nics.iter().map(|n| n.name.clone()).collect();
    got.sort();
    assert_eq!(got, sys);
    assert!(f.nics.iter().all(|n| n.mtu.is_some()));
    if f.nics.is_empty() {
        assert!(!f.findings.is_empty());
    }
    if let Some(n) = f.default_nic() {
        assert_ne!(n.queues.source, QueueSource::Unknown);
    }
}

/// Run the gather script with `sh -s`, optionally with extra directories first on `PATH`.
fn run_gather(path_prefix: Option<&std::path::Path>) -> (String, Vec<u8>) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("sh");
    cmd.arg("-s")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    let mut child = cmd.spawn().expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(GATHER_SCRIPT.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "script failed: {:?}", out.status);
    (String::from_utf8(out.stdout).expect("utf-8"), out.stderr)
}

/// A stand-in `ethtool` printing real `ethtool -l`/`-k`/`-i` output shapes.
const FAKE_ETHTOOL: &str = "#!/bin/sh
case \"$1\" in
-l) printf 'Channel parameters for %s:\\nPre-set maximums:\\nRX:\\t\\tn/a\\nTX:\\t\\tn/a\\nOther:\\t\\tn/a\\nCombined:\\t4\\nCurrent hardware settings:\\nRX:\\t\\tn/a\\nTX:\\t\\tn/a\\nOther:\\t\\tn/a\\nCombined:\\t2\\n' \"$2\" ;;
-k) printf 'Features for %s:\\nrx-checksumming: on [fixed]\\ntx-checksumming: on\\n\\ttx-checksum-ipv4: off [fixed]\\ntcp-segmentation-offload: on\\n\\ttx-tcp-segmentation: on\\ngeneric-receive-offload: on\\nlarge-receive-offload: off [fixed]\\nrx-gro-hw: on [fixed]\\n' \"$2\" ;;
-i) printf 'driver: fakedrv\\nversion: 1.0\\n' ;;
*) exit 1 ;;
esac
";

#[test]
fn gather_script_reads_ethtool_output() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("ethtool");
    std::fs::write(&tool, FAKE_ETHTOOL).expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (text, stderr) = run_gather(Some(dir.path()));
    assert!(stderr.is_empty(), "{}", String::from_utf8_lossy(&stderr));
    let f = facts::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(f.tools.ethtool, "{text}");
    let probed: Vec<&facts::Nic> = f
        .nics
        .iter()
        .filter(|n| !n.virtual_ || f.default_route_iface.as_deref() == Some(n.name.as_str()))
        .collect();
    for n in probed {
        assert_eq!(n.queues.source, QueueSource::Ethtool, "{}: {text}", n.name);
        assert_eq!(
            (n.queues.current_combined, n.queues.max_combined),
            (Some(2), Some(4)),
            "{}",
            n.name
        );
        assert_eq!(
            n.offload("rx-gro-hw"),
            Some(Offload {
                on: true,
                fixed: true
            })
        );
        assert_eq!(
            n.offload("tx-checksumming"),
            Some(Offload {
                on: true,
                fixed: false
            })
        );
        assert_eq!(
            n.offload("tx-checksum-ipv4"),
            None,
            "sub-features are skipped"
        );
    }
    // Virtual NICs have no sysfs driver link: ethtool -i names it.
    for n in f.nics.iter().filter(|n| n.virtual_) {
        assert_eq!(n.driver.as_deref(), Some("fakedrv"), "{}", n.name);
    }
}

#[test]
fn fixture_debian12_one_queue_virtio_on_6_1() {
    let f = fixture("debian12-kvm-virtio-1queue.txt");
    let mut s = default_spec();
    s.cilium_intent.acceleration = Acceleration::Native;
    let r = evaluate(&s, "w1", &f);
    assert_ok(&r, Feature::BaselineKernel);
    assert_ok(&r, Feature::KernelConfig);
    assert_ok(&r, Feature::SocketLb);
    assert_ok(&r, Feature::BpfHostRouting);
    // 6.1 ≥ 5.13: virtio_net attaches with locked TX queues instead of refusing.
    assert_degraded(
        &r,
        Feature::XdpNative,
        "enp1s0 (virtio_net) has max 1 combined queue, needs 3",
        "locked TX",
    );
    assert_eq!(r.xdp_devices[0].outcome, XdpOutcome::NativeSlow);
    assert!(!any_requested_blocked(std::slice::from_ref(&r)));
    // The same NIC on a 5.10 kernel is refused.
    let r = evaluate(&s, "w1", &f.with_kernel("5.10.0-32-amd64"));
    assert_blocked(
        &r,
        Feature::XdpNative,
        "Too few free TX rings",
        "<driver name='vhost' queues='4'/>",
    );
}

/// Real facts of the lab's own libvirt guests (captured by tests/lab_e2e.rs): cp1 has the NIC
/// kubedrill defines (queues = 2 × vCPU, offloads off), w1 the libvirt default of one queue.
#[test]
fn fixture_real_lab_guests_queues_decide_native_xdp() {
    let mut s = default_spec();
    s.cilium_intent.acceleration = Acceleration::Native;
    let cp1 = fixture("lab-guest-cp1.txt");
    assert!(
        cp1.kernel.release.starts_with("6.1."),
        "{}",
        cp1.kernel.release
    );
    let nic = cp1.nic("eth0").expect("eth0");
    assert_eq!(nic.driver.as_deref(), Some("virtio_net"));
    let r = evaluate(&s, "cp1", &cp1);
    for f in [
        Feature::BaselineKernel,
        Feature::SocketLb,
        Feature::BpfHostRouting,
        Feature::XdpNative,
    ] {
        assert_ok(&r, f);
    }
    assert_eq!(r.xdp_devices[0].outcome, XdpOutcome::Native);

    let w1 = fixture("lab-guest-w1.txt");
    let r = evaluate(&s, "w1", &w1);
    assert_ok(&r, Feature::SocketLb);
    assert_degraded(
        &r,
        Feature::XdpNative,
        "eth0 (virtio_net) has max 1 combined queue, needs 3",
        "locked TX",
    );
    assert!(!any_requested_blocked(std::slice::from_ref(&r)));
}

/// `cluster/verify` holds what is attached on a running node against `check`'s prediction.
#[test]
fn attached_xdp_is_compared_with_the_prediction() {
    use kubedrill::kernel::xdp::{Attached, compare_attached, expected_attach};
    let s = xdp_spec(Acceleration::BestEffort);
    let mut cp1 = fixture("lab-guest-cp1.txt");
    let r = evaluate(&s, "cp1", &cp1);
    assert_eq!(
        expected_attach(Acceleration::BestEffort, &r.xdp_devices[0]),
        Attached::Native
    );
    // Nothing attached yet: a mismatch, named with the device and the prediction.
    let lines = compare_attached(&r.xdp_devices, Acceleration::BestEffort, &cp1);
    assert_eq!(lines.len(), 1);
    assert!(!lines[0].1, "{lines:?}");
    assert!(
        lines[0]
            .0
            .starts_with("eth0: no XDP program attached; check predicted native XDP"),
        "{lines:?}"
    );
    // The agent attached it in the driver: as predicted.
    cp1.nics.iter_mut().find(|n| n.name == "eth0").unwrap().xdp = Some("xdp".into());
    let lines = compare_attached(&r.xdp_devices, Acceleration::BestEffort, &cp1);
    assert!(lines[0].1, "{lines:?}");
    // Generic mode is not what was asked for.
    cp1.nics.iter_mut().find(|n| n.name == "eth0").unwrap().xdp = Some("xdpgeneric".into());
    assert!(!compare_attached(&r.xdp_devices, Acceleration::BestEffort, &cp1)[0].1);
    // XDP off: any program left on the device is a mismatch.
    assert!(!compare_attached(&r.xdp_devices, Acceleration::Disabled, &cp1)[0].1);
    cp1.nics.iter_mut().find(|n| n.name == "eth0").unwrap().xdp = None;
    assert!(compare_attached(&r.xdp_devices, Acceleration::Disabled, &cp1)[0].1);

    // One queue on a kernel with the locked-TX fallback: still native under best-effort.
    let w1 = fixture("lab-guest-w1.txt");
    let r = evaluate(&s, "w1", &w1);
    assert_eq!(r.xdp_devices[0].outcome, XdpOutcome::NativeSlow);
    assert_eq!(
        expected_attach(Acceleration::BestEffort, &r.xdp_devices[0]),
        Attached::Native
    );
}

#[test]
fn fixture_ubuntu2404_fixed_guest_offloads_block_xdp() {
    let f = fixture("ubuntu2404-kvm-virtio-4q-fixed-guest-offloads.txt");
    assert!(f.swap.is_some_and(|s| s.active()));
    assert!(f.nic("docker0").is_some_and(|n| n.virtual_));
    let mut s = default_spec();
    s.cilium_intent.acceleration = Acceleration::Native;
    let r = evaluate(&s, "w2", &f);
    assert_blocked(
        &r,
        Feature::XdpNative,
        "[fixed]",
        "<host csum='off' gso='off' tso4='off' tso6='off' ecn='off' ufo='off'/>",
    );
    // Queues are fine there: 2 in use + 2 CPUs ≤ 4.
    let reason = status(&r, Feature::XdpNative).reason().expect("reason");
    assert!(!reason.contains("combined queue"), "{reason}");
}

#[test]
fn fixture_rhel86_mlx5_backport_baseline() {
    let f = fixture("rhel86-baremetal-mlx5.txt");
    assert_eq!(f.os.family, facts::OsFamily::Rhel);
    let mut s = spec_at("1.16.19");
    s.cilium_intent.acceleration = Acceleration::Native;
    let r = evaluate(&s, "bm1", &f);
    assert_ok(&r, Feature::BaselineKernel);
    let ev = &r.verdict(Feature::BaselineKernel).expect("v").evidence;
    assert!(ev.contains("RHEL 8.6") && ev.contains("backports"), "{ev}");
    assert_eq!(r.kernel.effective, Some(KernelVersion::new(5, 4, 0)));
    assert_ok(&r, Feature::SocketLb);
    assert_ok(&r, Feature::XdpNative);
    // Host routing needs 5.10: 8.6 counts as 5.4.
    assert_degraded(
        &r,
        Feature::BpfHostRouting,
        "5.10",
        "hostLegacyRouting: true",
    );
    // Cilium 1.18+ wants RHEL 8.10.
    let r = evaluate(&spec_at("1.19.6"), "bm1", &f);
    assert_blocked(
        &r,
        Feature::BaselineKernel,
        "needs kernel 5.10.0",
        "upgrade",
    );
}

#[test]
fn fixture_debian9_kernel_4_9() {
    let f = fixture("debian9-kernel49-ixgbe-cgroupv1.txt");
    assert_eq!(f.cgroup, facts::CgroupVersion::V1);
    let r = evaluate(&spec_at("1.13.18"), "old", &f);
    assert_blocked(
        &r,
        Feature::BaselineKernel,
        "needs kernel 4.19.57",
        "upgrade",
    );
    assert_blocked(
        &r,
        Feature::KernelConfig,
        "CONFIG_CGROUP_BPF is not set",
        "CONFIG_CGROUP_BPF",
    );
    assert_blocked(
        &r,
        Feature::SocketLb,
        "kube-proxy replacement cannot work",
        "5.2",
    );
    assert_degraded(&r, Feature::BpfMasquerade, "4.19", "bpf.masquerade: false");
    let reports = [r];
    assert!(any_requested_blocked(&reports));
    let b = blocked(&reports);
    assert!(
        b.iter()
            .any(|b| b.host == "old" && b.feature == Feature::SocketLb)
    );
    assert!(
        !b.iter().any(|b| b.feature == Feature::XdpNative),
        "not requested"
    );
}

#[test]
fn fixture_aws_jumbo_no_kconfig() {
    let f = fixture("ubuntu2204-aws-ena-jumbo9001-no-kconfig.txt");
    assert_eq!(f.kernel_config.source, None);
    assert_eq!(f.kernel.arch, "aarch64");
    let mut s = default_spec();
    s.cilium_intent.acceleration = Acceleration::BestEffort;
    let r = evaluate(&s, "aws", &f);
    assert_degraded(&r, Feature::KernelConfig, "cannot verify", "assumed");
    assert_blocked(&r, Feature::XdpNative, "MTU 9001", "lower the MTU of ens5");
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

#[test]
fn baseline_kernel_per_cilium_minor() {
    // (cilium, kernel release, os id, os version, ok?)
    let cases = [
        ("1.11.20", "4.9.17", "debian", "9", true),
        ("1.12.19", "4.9.16", "debian", "9", false),
        ("1.13.18", "4.19.57", "debian", "10", true),
        ("1.15.19", "4.19.56", "debian", "10", false),
        ("1.15.19", "4.18.0-305.el8.x86_64", "rhel", "8.4", true),
        ("1.16.19", "4.18.0-305.el8.x86_64", "rhel", "8.4", false),
        ("1.16.19", "4.18.0-372.9.1.el8.x86_64", "rocky", "8.6", true),
        ("1.17.18", "4.18.0-372.9.1.el8.x86_64", "", "", true), // minor from the build number
        (
            "1.18.12",
            "4.18.0-513.5.1.el8_9.x86_64",
            "rhel",
            "8.9",
            false,
        ),
        (
            "1.19.6",
            "4.18.0-553.el8_10.x86_64",
            "almalinux",
            "8.10",
            true,
        ),
        ("1.16.19", "5.4.0-216-generic", "ubuntu", "20.04", true),
        ("1.18.12", "5.4.0-216-generic", "ubuntu", "20.04", false),
        ("1.18.12", "5.10.0-35-amd64", "debian", "11", true),
        ("1.20.0", "6.12.48+deb13-amd64", "debian", "13", true),
        // A 4.18 kernel on a non-RHEL distro gets no backport credit.
        ("1.15.19", "4.18.20", "arch", "", false),
    ];
    for (cilium, release, id, ver, ok) in cases {
        let mut f = good_facts().with_kernel(release);
        f.os.id = id.to_owned();
        f.os.version_id = ver.to_owned();
        f.os.id_like = if id.is_empty() && release.contains("el8") {
            "rhel".to_owned()
        } else {
            String::new()
        };
        f.os.family = facts::OsFamily::classify(&f.os.id, &f.os.id_like);
        let r = evaluate(&spec_at(cilium), "n", &f);
        let s = status(&r, Feature::BaselineKernel);
        assert_eq!(
            s == &Status::Ok,
            ok,
            "Cilium {cilium} on {release} ({id} {ver}): {s}"
        );
        if !ok {
            assert!(s.is_blocked(), "{s}");
        }
    }
    // An unparsable release cannot be verified.
    let r = evaluate(&default_spec(), "n", &good_facts().with_kernel("custom"));
    assert_degraded(&r, Feature::BaselineKernel, "cannot verify", "assumed");
}

#[test]
fn kernel_config_rules() {
    let s = default_spec();
    assert_ok(&evaluate(&s, "n", &good_facts()), Feature::KernelConfig);

    // Not set → blocked, naming the option.
    let f = good_facts().with_kconfig("CONFIG_NET_CLS_ACT", Some(KconfigValue::NotSet));
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::KernelConfig,
        "CONFIG_NET_CLS_ACT is not set",
        "CONFIG_NET_CLS_ACT",
    );
    // Absent from a readable config → not set.
    let f = good_facts().with_kconfig("CONFIG_BPF_JIT", None);
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::KernelConfig,
        "CONFIG_BPF_JIT is not set",
        "",
    );
    // =m with the module installed is fine; =m without it is blocked; unknown modules degrade.
    let f = good_facts();
    assert_eq!(
        f.kernel_config.get("CONFIG_NET_CLS_BPF"),
        Some(&KconfigValue::Module)
    );
    let mut f2 = f.clone();
    if let Some(a) = f2.modules.available.as_mut() {
        a.remove("cls_bpf");
    }
    assert_blocked(
        &evaluate(&s, "n", &f2),
        Feature::KernelConfig,
        "module cls_bpf is not installed",
        "",
    );
    let mut f3 = f.clone();
    f3.modules.available = None;
    assert_degraded(
        &evaluate(&s, "n", &f3),
        Feature::KernelConfig,
        "cannot tell whether module cls_bpf",
        "assumed loadable",
    );
    // Other values are not y/m.
    let f = good_facts().with_kconfig("CONFIG_BPF", Some(KconfigValue::Other("\"x\"".into())));
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::KernelConfig,
        "need y or m",
        "",
    );
    // No config at all → cannot verify, not blocked.
    let mut f = good_facts();
    f.kernel_config.source = None;
    f.kernel_config.options.clear();
    let r = evaluate(&s, "n", &f);
    assert_degraded(
        &r,
        Feature::KernelConfig,
        "cannot verify",
        "assumed present",
    );
    assert!(!any_requested_blocked(&[r]));
}

#[test]
fn tunnels_add_their_kernel_config() {
    let f = good_facts()
        .with_kconfig("CONFIG_VXLAN", Some(KconfigValue::NotSet))
        .with_kconfig("CONFIG_GENEVE", None);
    // Native routing (opt DSR): neither is needed.
    assert_ok(&evaluate(&default_spec(), "n", &f), Feature::KernelConfig);
    let mut s = default_spec();
    s.cilium_intent.routing = RoutingMode::Tunnel(TunnelProtocol::Vxlan);
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::KernelConfig,
        "CONFIG_VXLAN is not set",
        "built with CONFIG_VXLAN (=y",
    );
    s.cilium_intent.routing = RoutingMode::Tunnel(TunnelProtocol::Geneve);
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::KernelConfig,
        "CONFIG_GENEVE is not set",
        "built with CONFIG_GENEVE (=y",
    );
    // FIB rules too.
    let f2 = good_facts().with_kconfig("CONFIG_FIB_RULES", Some(KconfigValue::NotSet));
    assert_blocked(
        &evaluate(&s, "n", &f2),
        Feature::KernelConfig,
        "CONFIG_FIB_RULES",
        "",
    );
    // Geneve DSR dispatch needs Geneve under native routing.
    let mut s = default_spec();
    s.cilium_intent.dsr_dispatch = DsrDispatch::Geneve;
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::KernelConfig,
        "CONFIG_GENEVE",
        "",
    );
}

#[test]
fn socket_lb_thresholds() {
    let cases = [
        ("4.19.56", false),
        ("4.19.57", true),
        ("4.20.17", false),
        ("5.0.21", false),
        ("5.1.15", false),
        ("5.1.16", true),
        ("5.2.0", true),
        ("6.1.0-27-amd64", true),
        ("4.14.330", false),
    ];
    for (rel, ok) in cases {
        let v = KernelVersion::parse_release(rel).expect("version");
        assert_eq!(kernel::has_socket_lb(v), ok, "{rel}");
        let r = evaluate(&spec_at("1.13.18"), "n", &good_facts().with_kernel(rel));
        if ok {
            assert_ok(&r, Feature::SocketLb);
        } else {
            assert_blocked(
                &r,
                Feature::SocketLb,
                "socket-LB needs kernel",
                "kube_proxy_remove: false",
            );
        }
        assert!(requested(&r, Feature::SocketLb), "KPR is on by default");
    }
    // Without kube-proxy replacement it is informational: not requested, not counted.
    let mut s = spec_at("1.13.18");
    s.cilium_intent.kube_proxy_replacement = KubeProxyReplacement::False;
    let r = evaluate(&s, "n", &good_facts().with_kernel("4.14.330"));
    assert!(!requested(&r, Feature::SocketLb));
    assert!(status(&r, Feature::SocketLb).is_blocked());
    assert!(!blocked(&[r]).iter().any(|b| b.feature == Feature::SocketLb));
}

#[test]
fn bpf_host_routing_and_masquerade() {
    let s = default_spec();
    let r = evaluate(&s, "n", &good_facts().with_kernel("5.4.0-216-generic"));
    assert_degraded(
        &r,
        Feature::BpfHostRouting,
        "needs kernel 5.10.0, node runs 5.4.0",
        "`bpf.hostLegacyRouting: true`",
    );
    assert_ok(&r, Feature::BpfMasquerade);
    assert!(requested(&r, Feature::BpfHostRouting) && requested(&r, Feature::BpfMasquerade));
    let r = evaluate(&s, "n", &good_facts().with_kernel("5.10.0"));
    assert_ok(&r, Feature::BpfHostRouting);

    let r = evaluate(
        &spec_at("1.12.19"),
        "n",
        &good_facts().with_kernel("4.14.330"),
    );
    assert_degraded(
        &r,
        Feature::BpfMasquerade,
        "needs kernel 4.19.0",
        "iptables masquerading",
    );
    let r = evaluate(
        &spec_at("1.12.19"),
        "n",
        &good_facts().with_kernel("4.19.0"),
    );
    assert_ok(&r, Feature::BpfMasquerade);

    // Both need kube-proxy replacement.
    let mut s = default_spec();
    s.cilium_intent.kube_proxy_replacement = KubeProxyReplacement::False;
    let r = evaluate(&s, "n", &good_facts());
    assert_degraded(
        &r,
        Feature::BpfMasquerade,
        "needs kube-proxy replacement",
        "bpf.masquerade: false",
    );
    assert_degraded(
        &r,
        Feature::BpfHostRouting,
        "kube-proxy replacement and BPF masquerade",
        "hostLegacyRouting",
    );
    // Not requested when off.
    let mut s = default_spec();
    s.cilium_intent.bpf_host_routing = false;
    s.cilium_intent.bpf_masquerade = false;
    let r = evaluate(&s, "n", &good_facts());
    assert!(!requested(&r, Feature::BpfHostRouting) && !requested(&r, Feature::BpfMasquerade));
}

#[test]
fn bandwidth_manager_only_when_asked() {
    let r = evaluate(&default_spec(), "n", &good_facts());
    assert!(!requested(&r, Feature::BandwidthManager));
    assert_ok(&r, Feature::BandwidthManager);

    let s = spec_with("cilium_extra_values:\n  bandwidthManager:\n    enabled: true\n");
    assert!(kernel::bandwidth_manager_requested(&s));
    let r = evaluate(&s, "n", &good_facts());
    assert!(requested(&r, Feature::BandwidthManager));
    assert_ok(&r, Feature::BandwidthManager);
    let r = evaluate(&s, "n", &good_facts().with_kernel("5.0.21"));
    assert_degraded(
        &r,
        Feature::BandwidthManager,
        "needs kernel 5.1.0",
        "bandwidth manager off",
    );
    let f = good_facts().with_kconfig("CONFIG_NET_SCH_FQ", Some(KconfigValue::NotSet));
    let r = evaluate(&s, "n", &f);
    assert_degraded(
        &r,
        Feature::BandwidthManager,
        "CONFIG_NET_SCH_FQ is not set",
        "off",
    );
    let e = kernel::effective(&s, &[r]);
    let bw = entry(&e, "bandwidthManager.enabled");
    assert_eq!(
        (bw.requested.as_str(), bw.effective.as_str()),
        ("true", "false")
    );
    assert!(
        bw.reason
            .as_deref()
            .is_some_and(|x| x.contains("node n: CONFIG_NET_SCH_FQ"))
    );

    // 1.11's chart has a plain boolean.
    let mut s = spec_at("1.11.20");
    s.cilium_extra_values
        .insert("bandwidthManager".into(), json!(true));
    assert!(kernel::bandwidth_manager_requested(&s));
    let e = kernel::effective(&s, &[evaluate(&s, "n", &good_facts())]);
    assert_eq!(entry(&e, "bandwidthManager").effective, "true");
    let mut s = default_spec();
    s.cilium_extra_values
        .insert("bandwidthManager".into(), json!({"enabled": false}));
    assert!(!kernel::bandwidth_manager_requested(&s));
    assert!(
        kernel::effective(&s, &[])
            .get("bandwidthManager.enabled")
            .is_none()
    );
}

fn xdp_spec(acc: Acceleration) -> ClusterSpec {
    let mut s = default_spec();
    s.cilium_intent.acceleration = acc;
    s
}

#[test]
fn xdp_requested_only_with_acceleration() {
    let r = evaluate(&default_spec(), "n", &good_facts());
    assert!(!requested(&r, Feature::XdpNative));
    // Still judged, for information.
    assert_ok(&r, Feature::XdpNative);
    for acc in [Acceleration::Native, Acceleration::BestEffort] {
        assert!(requested(
            &evaluate(&xdp_spec(acc), "n", &good_facts()),
            Feature::XdpNative
        ));
    }
}

#[test]
fn xdp_virtio_queue_rule() {
    let s = xdp_spec(Acceleration::Native);
    // (kernel, current, max, cpus, expected: ok / slow / blocked, text)
    let cases: &[(&str, u32, u32, u32, &str, &str)] = &[
        ("6.1.0", 2, 4, 2, "ok", ""),
        ("6.1.0", 1, 8, 4, "ok", ""),
        (
            "5.10.0",
            1,
            1,
            1,
            "blocked",
            "<driver name='vhost' queues='2'/>",
        ),
        ("5.10.0", 2, 2, 2, "blocked", "queues='4'"),
        // max ≥ 2N but too many in use: lower the current count in the guest.
        (
            "5.10.0",
            4,
            4,
            2,
            "blocked",
            "`ethtool -L enp1s0 combined 2`",
        ),
        ("6.1.0", 1, 1, 2, "slow", "max 1 combined queue, needs 3"),
        ("5.13.0", 2, 3, 2, "slow", "max 3 combined queues, needs 4"),
    ];
    for &(rel, cur, max, cpus, want, text) in cases {
        let mut f = good_facts().with_kernel(rel).with_queues(cur, max);
        f.cpus = Some(cpus);
        let r = evaluate(&s, "n", &f);
        match want {
            "ok" => assert_ok(&r, Feature::XdpNative),
            "slow" => assert_degraded(&r, Feature::XdpNative, text, "locked TX"),
            _ => assert_blocked(&r, Feature::XdpNative, "combined queue", text),
        }
    }
    // Re-checked after the install: XDP attached with its own TX queues, which virtio_net
    // counts in the current combined channels (the lab's cp1: 2 of max 4 before, 4 after). The
    // prediction stays what it was before the attach; attached on a NIC that had too few, the
    // count did not grow (the kernel fell back), and it is still the shared queues.
    let mut f = good_facts().with_queues(4, 4);
    f.cpus = Some(2);
    f.nic0().xdp = Some("xdpdrv".to_owned());
    assert_ok(&evaluate(&s, "n", &f), Feature::XdpNative);
    let mut f = good_facts().with_queues(4, 4);
    f.cpus = Some(2);
    assert_degraded(
        &evaluate(&s, "n", &f),
        Feature::XdpNative,
        "needs 6",
        "locked TX",
    );
    let mut f = good_facts().with_kernel("6.1.0").with_queues(1, 2);
    f.cpus = Some(2);
    f.nic0().xdp = Some("xdpdrv".to_owned());
    assert_degraded(
        &evaluate(&s, "n", &f),
        Feature::XdpNative,
        "max 2 combined queues, needs 3",
        "locked TX",
    );
    // No ethtool: sysfs counts only, max unknown → cannot verify.
    let mut f = good_facts();
    let q = &mut f.nic0().queues;
    q.max_combined = None;
    q.current_combined = None;
    q.source = QueueSource::Sysfs;
    assert_degraded(
        &evaluate(&s, "n", &f),
        Feature::XdpNative,
        "cannot verify queue pairs",
        "assumed to work",
    );
    let mut f = good_facts();
    f.cpus = None;
    assert_degraded(
        &evaluate(&s, "n", &f),
        Feature::XdpNative,
        "CPU count unknown",
        "",
    );
}

#[test]
fn xdp_virtio_offloads() {
    let s = xdp_spec(Acceleration::Native);
    // Changeable guest offloads: the driver turns them off itself.
    let r = evaluate(&s, "n", &good_facts());
    assert_ok(&r, Feature::XdpNative);
    let ev = &r.verdict(Feature::XdpNative).expect("v").evidence;
    assert!(
        ev.contains("changeable") && ev.contains("rx-gro-hw"),
        "{ev}"
    );
    // [fixed] and on: refused.
    let mut f = good_facts();
    f.nic0().offloads.insert(
        "rx-gro-hw".into(),
        Offload {
            on: true,
            fixed: true,
        },
    );
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::XdpNative,
        "control-offloads",
        "<guest csum='off' tso4='off' tso6='off' ecn='off' ufo='off'/>",
    );
    // Old kernels report guest TSO as LRO.
    let mut f = good_facts();
    f.nic0().offloads.remove("rx-gro-hw");
    f.nic0().offloads.insert(
        "large-receive-offload".into(),
        Offload {
            on: true,
            fixed: true,
        },
    );
    assert_blocked(
        &evaluate(&s, "n", &f),
        Feature::XdpNative,
        "large-receive-offload",
        "host csum='off'",
    );
    // [fixed] but off: nothing to refuse.
    let mut f = good_facts();
    for o in ["rx-gro-hw", "rx-checksumming", "large-receive-offload"] {
        f.nic0().offloads.insert(
            o.into(),
            Offload {
                on: false,
                fixed: true,
            },
        );
    }
    assert_ok(&evaluate(&s, "n", &f), Feature::XdpNative);
    // Host-side (TX) offloads do not matter.
    let mut f = good_facts();
    f.nic0().offloads.insert(
        "tcp-segmentation-offload".into(),
        Offload {
            on: true,
            fixed: true,
        },
    );
    assert_ok(&evaluate(&s, "n", &f), Feature::XdpNative);
    // Unknown offloads (no ethtool -k).
    let mut f = good_facts();
    f.nic0().offloads.clear();
    assert_degraded(
        &evaluate(&s, "n", &f),
        Feature::XdpNative,
        "guest offloads unknown",
        "",
    );
}

#[test]
fn xdp_mtu_limit() {
    let s = xdp_spec(Acceleration::Native);
    for (mtu, ok) in [(1500, true), (3498, true), (3499, false), (9000, false)] {
        let mut f = good_facts();
        f.nic0().mtu = Some(mtu);
        let r = evaluate(&s, "n", &f);
        if ok {
            assert_ok(&r, Feature::XdpNative);
        } else {
            assert_blocked(
                &r,
                Feature::XdpNative,
                &format!("MTU {mtu} is above 3498"),
                "lower the MTU",
            );
        }
    }
    // Best-effort does not save a refusing device.
    let mut f = good_facts();
    f.nic0().mtu = Some(9000);
    assert_blocked(
        &evaluate(&xdp_spec(Acceleration::BestEffort), "n", &f),
        Feature::XdpNative,
        "MTU 9000",
        "",
    );
}

#[test]
fn xdp_drivers() {
    let cases = [
        ("mlx5_core", "4.9.0", true),
        ("mlx5_core", "4.8.17", false),
        ("ena", "5.4.0", false),
        ("ena", "5.6.0", true),
        ("hv_netvsc", "5.15.0-1050-azure", true),
        ("ice", "5.4.0", false),
        ("i40e", "4.13.0", true),
        ("igb", "6.1.0", false),
        ("e1000", "6.1.0", false),
    ];
    for (driver, rel, ok) in cases {
        let mut f = good_facts().with_kernel(rel);
        f.nic0().driver = Some(driver.to_owned());
        let r = evaluate(&xdp_spec(Acceleration::Native), "n", &f);
        if ok {
            assert_ok(&r, Feature::XdpNative);
        } else {
            assert_blocked(&r, Feature::XdpNative, driver, "best-effort");
            // Best-effort skips the device instead.
            let r = evaluate(&xdp_spec(Acceleration::BestEffort), "n", &f);
            assert_degraded(&r, Feature::XdpNative, driver, "skips the device");
            assert_eq!(r.xdp_devices[0].outcome, XdpOutcome::Unsupported);
        }
    }
    let mut f = good_facts();
    f.nic0().driver = None;
    assert_blocked(
        &evaluate(&xdp_spec(Acceleration::Native), "n", &f),
        Feature::XdpNative,
        "driver unknown",
        "",
    );
}

#[test]
fn xdp_device_selection() {
    let f = fixture("rhel86-baremetal-mlx5.txt");
    let mut s = spec_at("1.16.19");
    s.cilium_intent.acceleration = Acceleration::Native;
    // Default: the default-route NIC only.
    let r = evaluate(&s, "bm", &f);
    assert_eq!(
        r.xdp_devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["ens1f0np0"]
    );
    assert_ok(&r, Feature::XdpNative);
    // Wildcard: both mlx5 ports.
    s.cilium_intent.devices = vec!["ens1f+".into()];
    let r = evaluate(&s, "bm", &f);
    assert_eq!(r.xdp_devices.len(), 2);
    assert_ok(&r, Feature::XdpNative);
    // Adding the igb NIC blocks native.
    s.cilium_intent.devices = vec!["ens1f+".into(), "eno1".into()];
    let r = evaluate(&s, "bm", &f);
    assert_blocked(
        &r,
        Feature::XdpNative,
        "eno1 (igb): driver has no native XDP",
        "",
    );
    // Nothing matches.
    s.cilium_intent.devices = vec!["eth+".into()];
    let r = evaluate(&s, "bm", &f);
    assert_blocked(
        &r,
        Feature::XdpNative,
        "no NIC matches devices eth+",
        "kubedrill_cilium_devices",
    );
    assert!(kernel::xdp::matches_device("eth+", "eth10"));
    assert!(!kernel::xdp::matches_device("eth0", "eth01"));
}

// ---------------------------------------------------------------------------------------------
// Effective settings across nodes
// ---------------------------------------------------------------------------------------------

#[test]
fn effective_unchanged_entries() {
    let s = default_spec();
    let reports = [
        evaluate(&s, "a", &good_facts()),
        evaluate(&s, "b", &good_facts()),
    ];
    let e = kernel::effective(&s, &reports);
    for (key, val) in [
        ("kubeProxyReplacement", "true"),
        ("bpf.masquerade", "true"),
        ("bpf.hostLegacyRouting", "false"),
        ("loadBalancer.acceleration", "disabled"),
    ] {
        let x = entry(&e, key);
        assert_eq!(
            (x.requested.as_str(), x.effective.as_str()),
            (val, val),
            "{key}"
        );
        assert_eq!(x.reason, None, "{key}");
    }
    assert_eq!(e.changed().count(), 0);
    assert!(!any_requested_blocked(&reports));
    // 1.11 names: strict and bpf.hostRouting.
    let s = spec_at("1.11.20");
    let e = kernel::effective(&s, &[evaluate(&s, "a", &good_facts())]);
    assert_eq!(entry(&e, "kubeProxyReplacement").requested, "strict");
    assert_eq!(entry(&e, "bpf.hostRouting").effective, "false");
}

#[test]
fn effective_acceleration_across_nodes() {
    let mlx = fixture("rhel86-baremetal-mlx5.txt");
    let mut igb = mlx.clone();
    igb.default_route_iface = Some("eno1".into());
    for (cilium, want) in [("1.19.6", "best-effort"), ("1.14.19", "disabled")] {
        let mut s = spec_at(cilium);
        s.cilium_intent.acceleration = Acceleration::Native;
        let reports = [evaluate(&s, "w1", &mlx), evaluate(&s, "w2", &igb)];
        let e = kernel::effective(&s, &reports);
        let acc = entry(&e, "loadBalancer.acceleration");
        assert_eq!(acc.requested, "native");
        assert_eq!(acc.effective, want, "Cilium {cilium}");
        let reason = acc.reason.as_deref().expect("reason");
        assert!(reason.contains("node w2: eno1 (igb)"), "{reason}");
        assert!(any_requested_blocked(&reports));
    }
    // A refusing device disables acceleration even when others could run it.
    let mut s = default_spec();
    s.cilium_intent.acceleration = Acceleration::Native;
    let one_queue = fixture("debian12-kvm-virtio-1queue.txt").with_kernel("5.10.0-32-amd64");
    let reports = [
        evaluate(&s, "w1", &good_facts()),
        evaluate(&s, "w2", &one_queue),
    ];
    let acc = entry(
        &kernel::effective(&s, &reports),
        "loadBalancer.acceleration",
    )
    .clone();
    assert_eq!(acc.effective, "disabled");
    assert!(
        acc.reason.as_deref().is_some_and(
            |r| r.contains("node w2: enp1s0 (virtio_net) has max 1 combined queue, needs 3")
        ),
        "{acc:?}"
    );
    // Nobody can: disabled.
    let mut s = default_spec();
    s.cilium_intent.acceleration = Acceleration::Native;
    let mut none = good_facts();
    none.nic0().driver = Some("igb".into());
    let acc = entry(
        &kernel::effective(&s, &[evaluate(&s, "w1", &none)]),
        "loadBalancer.acceleration",
    )
    .clone();
    assert_eq!(acc.effective, "disabled");
    // Slow but working: unchanged, with a reason.
    let slow = fixture("debian12-kvm-virtio-1queue.txt");
    let acc = entry(
        &kernel::effective(&s, &[evaluate(&s, "w1", &slow)]),
        "loadBalancer.acceleration",
    )
    .clone();
    assert_eq!(acc.effective, "native");
    assert!(acc.reason.is_some_and(|r| r.contains("locked")));
}

#[test]
fn effective_kpr_masquerade_host_routing() {
    // Cilium 1.12's baseline (4.9.17) admits 4.14, which lacks socket-LB.
    let s = spec_at("1.12.19");
    let old = good_facts().with_kernel("4.14.330");
    let reports = [evaluate(&s, "cp1", &good_facts()), evaluate(&s, "w1", &old)];
    let e = kernel::effective(&s, &reports);
    let kpr = entry(&e, "kubeProxyReplacement");
    assert_eq!(kpr.requested, "strict");
    assert!(kpr.effective.starts_with("cannot be enabled"), "{kpr:?}");
    assert!(
        kpr.reason
            .as_deref()
            .is_some_and(|r| r.contains("node w1: socket-LB needs kernel"))
    );
    let m = entry(&e, "bpf.masquerade");
    assert_eq!(
        (m.requested.as_str(), m.effective.as_str()),
        ("true", "false")
    );
    let h = entry(&e, "bpf.hostLegacyRouting");
    assert_eq!(
        (h.requested.as_str(), h.effective.as_str()),
        ("false", "true")
    );
    let b = blocked(&reports);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(
        (b[0].host.as_str(), b[0].feature),
        ("w1", Feature::SocketLb)
    );

    // Host routing degraded on one 5.4 node only.
    let s = spec_at("1.17.18");
    let reports = [
        evaluate(&s, "a", &good_facts()),
        evaluate(&s, "b", &good_facts().with_kernel("5.4.0-216-generic")),
    ];
    let e = kernel::effective(&s, &reports);
    let h = entry(&e, "bpf.hostLegacyRouting");
    assert_eq!(h.effective, "true");
    assert!(
        h.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("node b: BPF host routing needs kernel 5.10.0")),
        "{h:?}"
    );
    assert_eq!(entry(&e, "bpf.masquerade").effective, "true");
    assert_eq!(entry(&e, "kubeProxyReplacement").effective, "true");
    assert!(!any_requested_blocked(&reports));
    // Serializable for `check --json`.
    let v = serde_json::to_value(&reports[1]).expect("json");
    assert_eq!(v["verdicts"][3]["feature"], "bpf-host-routing");
    assert_eq!(v["verdicts"][3]["status"]["status"], "degraded");
}

#[test]
fn unverified_is_not_a_fallback() {
    // No kernel version anywhere: everything "cannot verify", nothing turned off.
    let s = spec_with("cilium_extra_values:\n  bandwidthManager:\n    enabled: true\n");
    let r = evaluate(&s, "n", &good_facts().with_kernel("custom"));
    for f in [
        Feature::BpfMasquerade,
        Feature::BpfHostRouting,
        Feature::BandwidthManager,
    ] {
        let st = status(&r, f);
        assert!(st.is_unverified() && !st.is_fallback(), "{f}: {st}");
    }
    let e = kernel::effective(&s, &[r]);
    assert_eq!(e.changed().count(), 0, "{:#?}", e.entries);
    // A real fallback is not "unverified".
    let r = evaluate(&s, "n", &good_facts().with_kernel("5.4.0"));
    let st = status(&r, Feature::BpfHostRouting);
    assert!(st.is_fallback() && !st.is_unverified(), "{st}");
}
