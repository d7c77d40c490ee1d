//! Lab XML, ownership and teardown on libvirt's `test:///default` driver (no daemon, no guests).
//! Real guests are exercised by the lab end-to-end test.

use kubedrill::lab::definition;
use kubedrill::lab::hypervisor::{Hypervisor, HypervisorError};
use kubedrill::lab::state::{LabState, ObjRef};
use kubedrill::lab::xml::{self, Boot, Instance, VmFiles};
use kubedrill::render::Templates;
use std::path::Path;

const TEST_URI: &str = "test:///default";

fn lab(name: &str) -> kubedrill::lab::Lab {
    let text = format!(
        "name: {name}\nhypervisor: {TEST_URI}\naccel: tcg\nnetwork:\n  cidr: 10.77.0.0/24\n\
         hosts:\n  - {{name: cp1, role: control-plane}}\n  - {{name: w1, role: worker, queues: 1}}\n"
    );
    definition::parse(Path::new("labs/test.yaml"), &text).expect("valid lab")
}

fn unmarked_domain(name: &str) -> String {
    format!(
        "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type>hvm</type></os></domain>"
    )
}

struct Created {
    state: LabState,
    errors: Vec<HypervisorError>,
}

/// What `lab up` does with libvirt: record, network, then each domain (recording as it goes).
fn create(hv: &Hypervisor, lab: &kubedrill::lab::Lab, dir: &Path) -> Created {
    let t = Templates::load().expect("templates");
    let inst = Instance::new(&lab.name);
    let mut state = LabState {
        instance: inst.clone(),
        uri: TEST_URI.into(),
        definition: lab.path.clone(),
        network: None,
        pool: None,
        domains: Vec::new(),
        dir: dir.to_path_buf(),
        hosts: Vec::new(),
    };
    let mut errors = Vec::new();
    let net_uuid = xml::random_uuid();
    let net_xml = xml::network(&t, lab, &net_uuid, false).expect("network xml");
    match hv.create_network(&xml::network_name(&lab.name), &net_xml) {
        Ok(()) => {
            state.network = Some(ObjRef {
                name: xml::network_name(&lab.name),
                uuid: net_uuid,
            })
        }
        Err(e) => errors.push(e),
    }
    let boot = Boot::Direct {
        kernel: "/images/vmlinuz".into(),
        initrd: "/images/initrd.img".into(),
        cmdline: "root=/dev/vda rw console=ttyS0".into(),
    };
    for vm in &lab.vms {
        let uuid = xml::random_uuid();
        let files = VmFiles::under(dir, &vm.name);
        let dx = xml::domain(&t, lab, vm, &inst, "test", &boot, &files, &uuid).expect("domain xml");
        let name = xml::domain_name(&lab.name, &vm.name);
        match hv.create_domain(&name, &dx, true) {
            Ok(()) => state.domains.push(ObjRef { name, uuid }),
            Err(e) => errors.push(e),
        }
    }
    state.save().expect("save state");
    Created { state, errors }
}

#[test]
fn xml_has_mark_queues_offloads_and_acpi() {
    let l = lab("xmltest");
    let t = Templates::load().expect("templates");
    let inst = Instance::new("xmltest");
    let files = VmFiles::under(Path::new("/var/lib/kd"), "cp1");
    let x = xml::domain(&t, &l, &l.vms[0], &inst, "qemu", &Boot::Disk, &files, "u").expect("xml");
    assert!(x.contains("<domain type='qemu'>"));
    assert!(x.contains("<acpi/>"));
    assert!(x.contains("queues='4'"), "2 vCPU → 4 queues\n{x}");
    assert!(x.contains("<host csum='off' gso='off'"));
    assert!(x.contains(&format!(
        "<kubedrill:instance>{}</kubedrill:instance>",
        inst.id
    )));
    let w = xml::domain(&t, &l, &l.vms[1], &inst, "qemu", &Boot::Disk, &files, "u").expect("xml");
    assert!(w.contains("queues='1'"));
    let n = xml::network(&t, &l, "u", false).expect("net");
    assert!(!n.contains("<forward"), "isolated network\n{n}");
    assert!(
        n.contains("ip='10.77.0.11'") && n.contains("ip='10.77.0.12'"),
        "{n}"
    );
    assert!(
        xml::network(&t, &l, "u", true)
            .expect("nat")
            .contains("<forward mode='nat'/>")
    );
}

#[test]
fn a_tcg_guest_keeps_its_tsc_a_kvm_guest_its_command_line() {
    // Under TCG a 2-vCPU guest found its TSCs unsynchronised and read the HPET on every
    // clock_gettime (measured 10 µs against 1.9 µs); the lab's guests boot with tsc=reliable.
    let l = lab("tsc");
    let t = Templates::load().expect("templates");
    let inst = Instance::new("tsc");
    let files = VmFiles::under(Path::new("/var/lib/kd"), "cp1");
    let boot = Boot::Direct {
        kernel: "/k".into(),
        initrd: "/i".into(),
        cmdline: "root=/dev/vda rw".into(),
    };
    let tcg = xml::domain(&t, &l, &l.vms[0], &inst, "qemu", &boot, &files, "u").expect("xml");
    assert!(
        tcg.contains("<cmdline>root=/dev/vda rw tsc=reliable</cmdline>"),
        "{tcg}"
    );
    let kvm = xml::domain(&t, &l, &l.vms[0], &inst, "kvm", &boot, &files, "u").expect("xml");
    assert!(kvm.contains("<cmdline>root=/dev/vda rw</cmdline>"), "{kvm}");
}

#[test]
fn hostile_names_are_escaped_in_xml() {
    // A lab name cannot carry markup (validated), but paths can: they are escaped.
    let l = lab("esc");
    let t = Templates::load().expect("templates");
    let inst = Instance::new("esc");
    let files = VmFiles::under(Path::new("/tmp/a'b<c>&d"), "cp1");
    let x = xml::domain(&t, &l, &l.vms[0], &inst, "qemu", &Boot::Disk, &files, "u").expect("xml");
    assert!(x.contains("/tmp/a&apos;b&lt;c&gt;&amp;d/cp1.qcow2"), "{x}");
}

#[test]
fn teardown_removes_only_what_this_lab_created() {
    let hv = Hypervisor::open(TEST_URI).expect("test driver");
    let tmp = tempfile::tempdir().expect("tmp");
    let l = lab("own1");
    // Someone else's domain already has the name kubedrill wants for w1.
    let conn = virt::connect::Connect::open(Some(TEST_URI)).expect("conn");
    let foreign = conn
        .define_domain_xml(&unmarked_domain("kd-own1-w1"))
        .expect("define foreign");
    drop(foreign);

    let c = create(&hv, &l, tmp.path());
    assert_eq!(c.errors.len(), 1, "only w1 collides: {:?}", c.errors);
    assert!(
        matches!(&c.errors[0], HypervisorError::NameTaken { name, .. } if name == "kd-own1-w1")
    );
    assert_eq!(hv.domain_state("kd-own1-cp1").as_deref(), Some("running"));

    // The half-created lab is recorded, so `down` can clean it.
    let state = LabState::load(tmp.path())
        .expect("read")
        .expect("state exists");
    assert_eq!(state, c.state);
    let marked = hv.marked_domains().expect("list");
    assert!(
        marked
            .iter()
            .any(|m| m.name == "kd-own1-cp1" && m.mark == state.instance)
    );
    assert!(!marked.iter().any(|m| m.name == "kd-own1-w1"));

    let td = hv.teardown(&state);
    assert!(
        td.removed.contains(&"domain kd-own1-cp1".to_string()),
        "{td:?}"
    );
    assert!(
        td.removed.contains(&"network kd-own1".to_string()),
        "{td:?}"
    );
    assert!(hv.domain_state("kd-own1-cp1").is_none());
    assert!(conn.lookup_network_by_name("kd-own1").is_err());
    // The foreign domain survived.
    assert!(hv.domain_state("kd-own1-w1").is_some());
    // A second teardown is a no-op.
    let again = hv.teardown(&state);
    assert!(
        again.removed.is_empty() && again.refused.is_empty(),
        "{again:?}"
    );
}

#[test]
fn teardown_refuses_unmarked_or_foreign_objects_even_if_recorded() {
    let hv = Hypervisor::open(TEST_URI).expect("test driver");
    let tmp = tempfile::tempdir().expect("tmp");
    let l = lab("own2");
    let c = create(&hv, &l, tmp.path());
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    // Another instance of a lab with the same name (e.g. created from another checkout).
    let other = Hypervisor::open(TEST_URI).expect("open");
    let tmp2 = tempfile::tempdir().expect("tmp");
    let mut l2 = lab("own2");
    l2.vms.retain(|v| v.name == "cp1");
    l2.vms[0].name = "cp9".into();
    let conn = virt::connect::Connect::open(Some(TEST_URI)).expect("conn");
    conn.define_domain_xml(&unmarked_domain("kd-own2-unmarked"))
        .expect("define");
    let c2 = create(&other, &l2, tmp2.path());
    // Its network name collides with ours: refused, ours untouched.
    assert!(c2.errors.iter().any(|e| matches!(
        e,
        HypervisorError::NameTaken {
            kind: "network",
            ..
        }
    )));

    // A tampered state that lists the other instance's domain and an unmarked one.
    let mut state = c.state.clone();
    state.domains.push(ObjRef {
        name: "kd-own2-cp9".into(),
        uuid: String::new(),
    });
    state.domains.push(ObjRef {
        name: "kd-own2-unmarked".into(),
        uuid: String::new(),
    });
    let td = hv.teardown(&state);
    assert_eq!(td.removed.len(), 3, "cp1, w1 and the network: {td:?}");
    let refused: Vec<&str> = td.refused.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        refused,
        ["domain kd-own2-cp9", "domain kd-own2-unmarked"],
        "{td:?}"
    );
    assert!(td.refused[0].1.contains("instance"));
    assert!(td.refused[1].1.contains("no kubedrill metadata"));
    assert!(hv.domain_state("kd-own2-cp9").is_some());
    assert!(hv.domain_state("kd-own2-unmarked").is_some());
    // The other instance cleans its own.
    let td2 = other.teardown(&c2.state);
    assert_eq!(td2.removed, ["domain kd-own2-cp9"]);
}

#[test]
fn snapshot_and_revert_only_marked_domains() {
    let hv = Hypervisor::open(TEST_URI).expect("test driver");
    let tmp = tempfile::tempdir().expect("tmp");
    let l = lab("snap1");
    let c = create(&hv, &l, tmp.path());
    assert!(c.errors.is_empty());
    hv.snapshot("kd-snap1-cp1", "clean").expect("snapshot");
    hv.revert("kd-snap1-cp1", "clean").expect("revert");
    assert!(hv.revert("kd-snap1-cp1", "missing").is_err());
    let conn = virt::connect::Connect::open(Some(TEST_URI)).expect("conn");
    conn.define_domain_xml(&unmarked_domain("kd-snap1-foreign"))
        .expect("define");
    assert!(matches!(
        hv.snapshot("kd-snap1-foreign", "x"),
        Err(HypervisorError::NameTaken { .. })
    ));
    let td = hv.teardown(&c.state);
    assert_eq!(td.refused.len(), 0, "{td:?}");
}

#[test]
fn unreachable_hypervisor_names_the_uri() {
    let e = match Hypervisor::open("qemu+unix:///system?socket=/nonexistent/libvirt-sock") {
        Err(e) => e,
        Ok(_) => panic!("must fail"),
    };
    let m = e.to_string();
    assert!(
        m.contains("qemu+unix:///system?socket=/nonexistent/libvirt-sock"),
        "{m}"
    );
    assert!(m.contains("libvirtd"), "{m}");
}

#[test]
fn shipped_lab_definitions_load() {
    let q = definition::load(Path::new("labs/quickstart.yaml")).expect("quickstart");
    assert_eq!(q.vms.len(), 2);
    assert!(q.memory_mib() <= 4096);
    assert!(q.vms.iter().all(|v| v.queues == 2 * v.size.vcpus));
    let m = definition::load(Path::new("labs/lab-3node.yaml")).expect("lab-3node");
    let names: Vec<&str> = m.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["cp1", "w1", "w2"]);
    assert_eq!(m.vms[0].size.memory_mib, 2560);
    assert_eq!(m.vms[2].address.to_string(), "192.168.151.13");
}

#[test]
fn lab_show_cli() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubedrill"))
        .args(["lab", "show", "labs/quickstart.yaml", "--output", "json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["lab"]["vms"].as_array().map(Vec::len), Some(2));
    let dt = doc["accel"]["domain_type"].as_str().expect("domain type");
    assert!(dt == "kvm" || dt == "qemu");

    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nhosts:\n  - {name: cp1, role: control-plane}\nnic:\n  queues: many\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubedrill"))
        .args(["lab", "show"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5") && err.contains("queues"),
        "{err}"
    );
}

/// The lab's storage pool: created under its recorded UUID, overlays on a backing volume,
/// removed only with that UUID (a pool with the same name but another UUID is refused).
#[test]
fn storage_pool_is_owned_by_uuid() {
    use kubedrill::lab::storage;
    let hv = Hypervisor::open(TEST_URI).expect("test driver");
    let name = "kd-pooltest";
    let uuid = kubedrill::lab::xml::random_uuid();
    hv.create_pool(name, &uuid, &format!("{}/pooltest", storage::POOL_ROOT))
        .expect("create pool");
    // A second lab cannot take the name.
    let again = hv.create_pool(name, &kubedrill::lab::xml::random_uuid(), "/tmp/x");
    assert!(
        matches!(again, Err(HypervisorError::NameTaken { .. })),
        "{again:?}"
    );
    let base = hv
        .create_overlay(name, "base.qcow2", "/var/lib/libvirt/images/none.qcow2", 1)
        .expect("a volume");
    let overlay = hv
        .create_overlay(name, "cp1.qcow2", &base, 8)
        .expect("overlay");
    assert!(overlay.ends_with("/cp1.qcow2"), "{overlay}");
    // Not our UUID: refused, nothing removed.
    let other = kubedrill::lab::xml::random_uuid();
    assert!(hv.remove_pool(name, &other).is_err());
    let removed = hv.remove_pool(name, &uuid).expect("removed");
    assert!(removed.is_some_and(|r| r.contains("kd-pooltest")));
    assert_eq!(hv.remove_pool(name, &uuid).expect("gone"), None);
}
