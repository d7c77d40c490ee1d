//! Inventory parsing and validation: the sample inventories, Ansible's variable precedence,
//! `group_vars/`/`host_vars/`, and every error with the file, line and field it names.

use crate::common;

use common::*;
use kubedrill::diag::Severity;
use kubedrill::inventory::{self, Format, InventoryError, NodeRole};
use serde_json::json;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Sample inventories
// ---------------------------------------------------------------------------------------------

#[test]
fn lab_3node_yaml_sample_loads() {
    let dir = repo().join("inventories/lab-3node");
    let inv = inventory::load(&dir).expect("lab-3node loads");
    assert_eq!(inv.format, Format::Yaml);
    assert_eq!(inv.path.as_path(), dir.join("hosts.yaml"));
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["cp1", "w1", "w2"]);

    let cp1 = &inv.hosts[0];
    assert_eq!(cp1.role, NodeRole::ControlPlane { also_worker: false });
    assert!(cp1.etcd);
    assert_eq!(
        cp1.etcd_member_name.as_deref(),
        Some("etcd1"),
        "Kubespray's default etcdN name"
    );
    assert_eq!(inv.first_control_plane().name, "cp1");
    assert_eq!(inv.hosts[1].role, NodeRole::Worker);
    assert_eq!(inv.hosts[2].role, NodeRole::Worker);
    assert!(!inv.hosts[1].etcd);
    assert_eq!(inv.control_planes().count(), 1);
    assert_eq!(inv.workers().count(), 2);
    assert!(inv.bastion.is_none());

    // Addresses and SSH from the inventory file and group_vars/all.yml.
    assert_eq!(cp1.ip.to_string(), "192.168.122.11");
    assert_eq!(cp1.access_ip, cp1.ip);
    assert_eq!(cp1.ssh.address, "192.168.122.11");
    assert_eq!(cp1.ssh.port, 22);
    assert_eq!(cp1.ssh.user.as_deref(), Some("kubedrill"));
    assert_eq!(cp1.ssh.become_user.as_deref(), Some("root"));
    let user = &cp1.vars["ansible_user"];
    assert_eq!(user.origin.file.as_path(), dir.join("group_vars/all.yml"));
    assert_eq!(user.origin.line, Some(2));

    // group_vars/k8s_cluster/ is a directory: every file in it applies.
    for h in &inv.hosts {
        let kv = &h.vars["kube_version"];
        assert_eq!(*kv.value, json!("1.31.4"), "{}", h.name);
        assert_eq!(
            kv.origin.file.as_path(),
            dir.join("group_vars/k8s_cluster/k8s-cluster.yml")
        );
        assert_eq!(kv.origin.line, Some(2));
        let cv = &h.vars["cilium_version"];
        assert_eq!(*cv.value, json!("1.16.19"));
        assert_eq!(
            cv.origin.file.as_path(),
            dir.join("group_vars/k8s_cluster/k8s-net-cilium.yml")
        );
    }
    // Groups: k8s_cluster holds everyone, calico_rr is empty.
    assert_eq!(inv.groups["k8s_cluster"], ["cp1", "w1", "w2"]);
    assert!(inv.groups["calico_rr"].is_empty());
    assert!(inv.warnings.errors().next().is_none());
}

#[test]
fn prod_example_ini_sample_loads() {
    let dir = repo().join("inventories/prod-example");
    let inv = inventory::load(&dir).expect("prod-example loads");
    assert_eq!(inv.format, Format::Ini);

    // Legacy group names: accepted with warnings that name them.
    for legacy in ["kube-master", "kube-node", "k8s-cluster"] {
        let d = find_warning(&inv.warnings, &format!("legacy group name `{legacy}`"));
        assert_eq!(d.field.as_deref(), Some(legacy));
        assert_eq!(
            d.origin.as_ref().unwrap().file.as_path(),
            dir.join("inventory.ini")
        );
    }
    // The `[kube-master]` header is on line 13.
    let d = find(&inv.warnings, "`kube-master`");
    assert_eq!(d.origin.as_ref().unwrap().line, Some(13));

    // node[1:4] expanded; bastion parsed and not a Kubernetes node.
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "master1", "master2", "master3", "node1", "node2", "node3", "node4"
        ]
    );
    assert_eq!(inv.control_planes().count(), 3);
    assert_eq!(inv.workers().count(), 4);
    let bastion = inv.bastion.as_ref().expect("bastion");
    assert_eq!(bastion.name, "bastion");
    assert_eq!(bastion.ssh.address, "203.0.113.10");
    assert_eq!(
        bastion.ssh.user.as_deref(),
        Some("ops"),
        "host var beats [all:vars]"
    );
    assert!(!inv.hosts.iter().any(|h| h.name == "bastion"));

    let m1 = &inv.hosts[0];
    assert!(m1.etcd);
    assert_eq!(m1.etcd_member_name.as_deref(), Some("etcd1"));
    assert_eq!(inv.hosts[2].etcd_member_name.as_deref(), Some("etcd3"));
    assert_eq!(m1.ssh.user.as_deref(), Some("deploy"));
    assert_eq!(m1.ssh.become_user.as_deref(), Some("root"));
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
    assert_eq!(
        m1.ssh.private_key.as_deref(),
        Some(home.join(".ssh/prod_deploy_ed25519").as_path())
    );

    let n3 = inv.hosts.iter().find(|h| h.name == "node3").unwrap();
    assert_eq!(n3.role, NodeRole::Worker);
    assert_eq!(n3.ip.to_string(), "10.20.1.13");
    assert_eq!(n3.ssh.port, 22);
    assert_eq!(n3.etcd_member_name, None);
    // group_vars/k8s_cluster.yml applies to the legacy-named k8s-cluster group.
    assert_eq!(*n3.vars["cilium_version"].value, json!("1.13.18"));
    assert_eq!(
        n3.vars["kube_version"].origin.file.as_path(),
        dir.join("group_vars/k8s_cluster.yml")
    );
}

// ---------------------------------------------------------------------------------------------
// Precedence
// ---------------------------------------------------------------------------------------------

/// all < parent group < child group < host, in the inventory file (YAML). Each variable is set at
/// one more level than the one before, so every step of the order is checked.
#[test]
fn precedence_by_group_depth_yaml() {
    let hosts = "\
all:
  vars:
    a: all
    b: all
    c: all
    d: all
  hosts:
    cp1:
      ip: 10.0.0.1
      d: host
  children:
    k8s_cluster:
      vars:
        b: parent
        c: parent
        d: parent
      children:
        kube_control_plane:
          vars:
            c: child
            d: child
          hosts:
            cp1:
        kube_node:
          hosts:
            cp1:
";
    let t = TempInv::new("prec", &[("hosts.yaml", hosts)]);
    let inv = t.load_ok();
    let v = &inv.hosts[0].vars;
    assert_eq!(*v["a"].value, json!("all"));
    assert_eq!(*v["b"].value, json!("parent"));
    assert_eq!(*v["c"].value, json!("child"));
    assert_eq!(*v["d"].value, json!("host"));
    assert_eq!(v["c"].origin.line, Some(line_of(hosts, "c: child")));
    assert_eq!(v["d"].origin.line, Some(line_of(hosts, "d: host")));
}

/// The same order with INI sections (child group declared before its parent, so the order
/// comes from depth, not from the file).
#[test]
fn precedence_by_group_depth_ini() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1 d=host

[kube_node]
cp1

[kube_control_plane:vars]
c=child
d=child

[k8s_cluster:children]
kube_control_plane
kube_node

[k8s_cluster:vars]
b=parent
c=parent
d=parent

[all:vars]
a=all
b=all
c=all
d=all
";
    let t = TempInv::new("prec", &[("inventory.ini", ini)]);
    let inv = t.load_ok();
    let v = &inv.hosts[0].vars;
    assert_eq!(*v["a"].value, json!("all"));
    assert_eq!(*v["b"].value, json!("parent"));
    assert_eq!(*v["c"].value, json!("child"));
    assert_eq!(*v["d"].value, json!("host"));
    assert_eq!(v["b"].origin.line, Some(line_of(ini, "b=parent")));
}

/// Depth decides, not the group names: here the parent's name sorts before `all` and the child's
/// before the parent's, so an order by name alone would give the opposite result.
#[test]
fn precedence_depth_beats_group_name_order() {
    let hosts = "\
all:
  vars:
    b: all
    c: all
  children:
    kube_control_plane:
      hosts:
        cp1:
          ip: 10.0.0.1
    aaa_parent:
      vars:
        b: parent
        c: parent
      children:
        aa_child:
          vars:
            c: child
          hosts:
            cp1:
";
    let t = TempInv::new("prec", &[("hosts.yaml", hosts)]);
    let v = &t.load_ok().hosts[0].vars;
    assert_eq!(*v["b"].value, json!("parent"));
    assert_eq!(*v["c"].value, json!("child"));

    let ini = "\
[aa_child]
cp1 ip=10.0.0.1
[kube_control_plane]
cp1
[aaa_parent:children]
aa_child
[aa_child:vars]
c=child
[aaa_parent:vars]
b=parent
c=parent
[all:vars]
b=all
c=all
";
    let t = TempInv::new("prec", &[("inventory.ini", ini)]);
    let v = &t.load_ok().hosts[0].vars;
    assert_eq!(*v["b"].value, json!("parent"));
    assert_eq!(*v["c"].value, json!("child"));
}

/// Sibling groups (same depth): by `ansible_group_priority`, then by name; the later one wins.
#[test]
fn precedence_of_sibling_groups_yaml() {
    let hosts = |priority: &str| {
        format!(
            "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1:\n          ip: 10.0.0.1\n    zeta:\n      vars:\n        x: zeta\n      hosts:\n        cp1:\n    alpha:\n      vars:\n        x: alpha\n{priority}      hosts:\n        cp1:\n"
        )
    };
    let t = TempInv::new("prec", &[("hosts.yaml", &hosts(""))]);
    assert_eq!(
        *t.load_ok().hosts[0].vars["x"].value,
        json!("zeta"),
        "same priority: by name"
    );
    let t = TempInv::new(
        "prec",
        &[("hosts.yaml", &hosts("        ansible_group_priority: 10\n"))],
    );
    assert_eq!(
        *t.load_ok().hosts[0].vars["x"].value,
        json!("alpha"),
        "higher priority wins"
    );
}

/// The same in INI, where `:vars` values are strings (Ansible converts this one with `int()`).
#[test]
fn precedence_of_sibling_groups_ini() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1
[zeta]
cp1
[alpha]
cp1
[zeta:vars]
x=zeta
[alpha:vars]
x=alpha
";
    let t = TempInv::new("prec", &[("inventory.ini", ini)]);
    assert_eq!(
        *t.load_ok().hosts[0].vars["x"].value,
        json!("zeta"),
        "same priority: by name"
    );
    let t = TempInv::new(
        "prec",
        &[(
            "inventory.ini",
            &format!("{ini}ansible_group_priority=10\n"),
        )],
    );
    assert_eq!(
        *t.load_ok().hosts[0].vars["x"].value,
        json!("alpha"),
        "higher priority wins"
    );
}

/// inventory-file group vars < group_vars/all < group_vars/<group> < inventory host vars <
/// host_vars/<host>.
#[test]
fn precedence_by_source() {
    let hosts = "\
all:
  children:
    kube_control_plane:
      vars:
        e: inv-group
        f: inv-group
        g: inv-group
        h: inv-group
        i: inv-group
      hosts:
        cp1:
          ip: 10.0.0.1
          h: inv-host
          i: inv-host
";
    let t = TempInv::new(
        "prec",
        &[
            ("hosts.yaml", hosts),
            // group_vars/all beats the inventory file's vars of a deeper group.
            (
                "group_vars/all.yml",
                "f: gv-all\ng: gv-all\nh: gv-all\ni: gv-all\n",
            ),
            (
                "group_vars/kube_control_plane.yml",
                "g: gv-group\nh: gv-group\ni: gv-group\n",
            ),
            ("host_vars/cp1.yml", "# host file\ni: hv-file\n"),
        ],
    );
    let inv = t.load_ok();
    let v = &inv.hosts[0].vars;
    assert_eq!(*v["e"].value, json!("inv-group"));
    assert_eq!(*v["f"].value, json!("gv-all"));
    assert_eq!(*v["g"].value, json!("gv-group"));
    assert_eq!(*v["h"].value, json!("inv-host"));
    assert_eq!(*v["i"].value, json!("hv-file"));
    assert_eq!(v["f"].origin.file.as_path(), t.path("group_vars/all.yml"));
    assert_eq!(
        v["g"].origin.file.as_path(),
        t.path("group_vars/kube_control_plane.yml")
    );
    assert_eq!(v["h"].origin.file.as_path(), t.path("hosts.yaml"));
    assert_eq!(v["h"].origin.line, Some(line_of(hosts, "h: inv-host")));
    assert_eq!(v["i"].origin.file.as_path(), t.path("host_vars/cp1.yml"));
    assert_eq!(v["i"].origin.line, Some(2));
}

/// group_vars/<group>/ files are read in name order: later files win.
#[test]
fn group_vars_directory_and_file_and_host_vars() {
    let t = TempInv::new(
        "gv",
        &[
            ("hosts.yaml", BASIC_HOSTS),
            (
                "group_vars/all.yml",
                "ansible_user: alice\nfrom_all_file: 1\n",
            ),
            (
                "group_vars/k8s_cluster/10-first.yml",
                "layered: first\nonly_first: yes\n",
            ),
            ("group_vars/k8s_cluster/20-second.yaml", "layered: second\n"),
            ("group_vars/k8s_cluster/notes.txt", "not: read\n"),
            ("group_vars/kube_node.json", "{\"worker_flag\": true}\n"),
            (
                "host_vars/w1.yml",
                "ansible_port: 2222\nansible_user: bob\n",
            ),
        ],
    );
    let inv = t.load_ok();
    let cp1 = &inv.hosts[0];
    let w1 = &inv.hosts[1];
    assert_eq!(*cp1.vars["from_all_file"].value, json!(1));
    assert_eq!(*cp1.vars["layered"].value, json!("second"));
    assert_eq!(
        cp1.vars["layered"].origin.file.as_path(),
        t.path("group_vars/k8s_cluster/20-second.yaml")
    );
    // PyYAML reads `yes` as a boolean, as Ansible would.
    assert_eq!(*cp1.vars["only_first"].value, json!(true));
    assert!(
        !cp1.vars.contains_key("not"),
        "a .txt file is not a vars file"
    );
    assert!(!cp1.vars.contains_key("worker_flag"));
    assert_eq!(*w1.vars["worker_flag"].value, json!(true));
    assert_eq!(cp1.ssh.user.as_deref(), Some("alice"));
    assert_eq!(w1.ssh.user.as_deref(), Some("bob"));
    assert_eq!(w1.ssh.port, 2222);
    assert_eq!(cp1.ssh.port, 22);
}

#[test]
fn host_vars_for_unknown_host_is_a_warning() {
    let t = TempInv::new(
        "hv",
        &[
            ("hosts.yaml", BASIC_HOSTS),
            ("host_vars/ghost.yml", "x: 1\n"),
        ],
    );
    let inv = t.load_ok();
    let d = find_warning(&inv.warnings, "not in the inventory");
    assert_eq!(d.field.as_deref(), Some("ghost"));
    assert_eq!(
        d.origin.as_ref().unwrap().file.as_path(),
        t.path("host_vars/ghost.yml")
    );
}

#[test]
fn host_range_with_padding_and_step() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1

[kube_node]
w[01:05:2] ansible_user=x
";
    let t = TempInv::new("range", &[("inventory.ini", ini)]);
    let err = t.load_invalid();
    // Three workers, none with an ip: each is reported, proving the range expanded.
    for h in ["w01", "w03", "w05"] {
        let d = find(&err, &format!("host `{h}` has no IP address"));
        assert_eq!(d.origin.as_ref().unwrap().line, Some(5));
    }
    assert!(!mentions(&err, "w02"));
}

// ---------------------------------------------------------------------------------------------
// Validation errors: file, line, field
// ---------------------------------------------------------------------------------------------

#[test]
fn no_control_plane_host() {
    let hosts = "\
all:
  children:
    kube_control_plane:
      hosts: {}
    kube_node:
      hosts:
        w1:
          ip: 10.0.0.2
";
    let t = TempInv::new("nocp", &[("hosts.yaml", hosts)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "no control-plane host");
    assert_at(d, &t.path("hosts.yaml"), Some(3), "kube_control_plane");
}

#[test]
fn no_control_plane_group_at_all_names_the_file() {
    let t = TempInv::new(
        "nocp",
        &[("inventory.ini", "[kube_node]\nw1 ip=10.0.0.2\n")],
    );
    let diags = t.load_invalid();
    let d = find_error(&diags, "no control-plane host");
    assert_at(d, &t.path("inventory.ini"), None, "kube_control_plane");
}

#[test]
fn host_in_no_kubernetes_group() {
    let hosts = "\
all:
  hosts:
    stray:
      ip: 10.0.0.9
  children:
    kube_control_plane:
      hosts:
        cp1:
          ip: 10.0.0.1
";
    let t = TempInv::new("stray", &[("hosts.yaml", hosts)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "host `stray` is in no Kubernetes group");
    assert_at(d, &t.path("hosts.yaml"), Some(3), "stray");
}

#[test]
fn etcd_only_host_is_an_error() {
    let ini = "[kube_control_plane]\ncp1 ip=10.0.0.1\n[etcd]\ncp1\ne1 ip=10.0.0.5\n";
    let t = TempInv::new("etcdonly", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "host `e1` is only in `etcd`");
    assert_at(d, &t.path("inventory.ini"), Some(5), "e1");
}

#[test]
fn duplicate_ip() {
    let hosts = "\
all:
  children:
    kube_control_plane:
      hosts:
        cp1:
          ip: 10.0.0.1
    kube_node:
      hosts:
        w1:
          ip: 10.0.0.2
        w2:
          ansible_host: w2.example
          ip: 10.0.0.2
";
    let t = TempInv::new("dupip", &[("hosts.yaml", hosts)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "have the same ip 10.0.0.2");
    assert!(
        d.message.contains("`w1`") && d.message.contains("`w2`"),
        "{d}"
    );
    assert_at(d, &t.path("hosts.yaml"), Some(13), "ip");
}

#[test]
fn even_etcd_members_is_a_warning_only() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1
cp2 ip=10.0.0.2

[etcd]
cp1
cp2
";
    let t = TempInv::new("etcd2", &[("inventory.ini", ini)]);
    let inv = t.load_ok();
    let d = find_warning(&inv.warnings, "2 etcd members");
    assert_at(d, &t.path("inventory.ini"), Some(5), "etcd");
    assert_eq!(inv.hosts[1].etcd_member_name.as_deref(), Some("etcd2"));
}

#[test]
fn bad_ansible_port_yaml() {
    for (value, shown) in [("\"22x\"", "\"22x\""), ("70000", "70000"), ("0", "0")] {
        let hosts = format!(
            "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1:\n          ip: 10.0.0.1\n          ansible_port: {value}\n"
        );
        let t = TempInv::new("port", &[("hosts.yaml", &hosts)]);
        let diags = t.load_invalid();
        let d = find_error(&diags, "a port number 1-65535");
        assert!(d.message.contains(shown), "{d}");
        assert_at(d, &t.path("hosts.yaml"), Some(7), "ansible_port");
    }
}

#[test]
fn bad_ansible_port_ini_host_line_and_vars_section() {
    // On a host line.
    let ini =
        "[kube_control_plane]\ncp1 ip=10.0.0.1\n\n[kube_node]\nw1 ip=10.0.0.2 ansible_port=70000\n";
    let t = TempInv::new("port", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "a port number 1-65535");
    assert!(d.message.contains("70000"), "{d}");
    assert_at(d, &t.path("inventory.ini"), Some(5), "ansible_port");

    // In a :vars section (values stay strings there).
    let ini =
        "[kube_control_plane]\ncp1 ip=10.0.0.1\n\n[all:vars]\nansible_user=x\nansible_port=22x\n";
    let t = TempInv::new("port", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "a port number 1-65535");
    assert!(d.message.contains("\"22x\""), "{d}");
    assert_at(d, &t.path("inventory.ini"), Some(6), "ansible_port");
}

#[test]
fn bad_port_in_group_vars_file_names_that_file() {
    let t = TempInv::new(
        "port",
        &[
            ("hosts.yaml", BASIC_HOSTS),
            (
                "group_vars/all/ssh.yml",
                "# ssh\n\nansible_ssh_port: 99999\n",
            ),
        ],
    );
    let diags = t.load_invalid();
    let d = find_error(&diags, "a port number 1-65535");
    assert_at(
        d,
        &t.path("group_vars/all/ssh.yml"),
        Some(3),
        "ansible_ssh_port",
    );
}

#[test]
fn unknown_child_group_yaml() {
    let hosts = "\
all:
  children:
    kube_control_plane:
      hosts:
        cp1:
          ip: 10.0.0.1
    k8s_cluster:
      children:
        kube_control_plane:
        kube_nodes:
";
    let t = TempInv::new("child", &[("hosts.yaml", hosts)]);
    let diags = t.load_invalid();
    let d = find_error(
        &diags,
        "names `kube_nodes` as a child, but no group `kube_nodes` is defined",
    );
    assert_at(d, &t.path("hosts.yaml"), Some(10), "kube_nodes");
}

#[test]
fn unknown_child_group_ini() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1

[k8s_cluster:children]
kube_control_plane
kube_nodes
";
    let t = TempInv::new("child", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "names `kube_nodes` as a child");
    assert!(d.message.contains("group `k8s_cluster`"), "{d}");
    assert_at(d, &t.path("inventory.ini"), Some(6), "kube_nodes");
}

#[test]
fn empty_child_group_defined_elsewhere_is_fine() {
    // `[calico_rr]` with no hosts is a defined group: naming it as a child is not an error.
    let ini = "[kube_control_plane]\ncp1 ip=10.0.0.1\n[calico_rr]\n[k8s_cluster:children]\nkube_control_plane\ncalico_rr\n";
    let t = TempInv::new("child", &[("inventory.ini", ini)]);
    t.load_ok();
}

#[test]
fn cycle_in_children_ini() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1

[a:children]
b

[b:children]
a
";
    let t = TempInv::new("cycle", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "groups form a cycle");
    assert!(d.message.contains("a → b → a"), "{d}");
    assert_at(d, &t.path("inventory.ini"), Some(8), "a");
}

#[test]
fn cycle_in_children_yaml() {
    let hosts = "\
all:
  children:
    kube_control_plane:
      hosts:
        cp1:
          ip: 10.0.0.1
    a:
      children:
        b:
          children:
            a:
";
    let t = TempInv::new("cycle", &[("hosts.yaml", hosts)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "groups form a cycle");
    assert!(d.message.contains("a → b → a"), "{d}");
    assert_at(d, &t.path("hosts.yaml"), Some(11), "a");
}

#[test]
fn missing_path_is_io_error() {
    let t = TempInv::new("missing", &[]);
    let path = t.path("nope.yaml");
    match inventory::load(&path) {
        Err(InventoryError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn directory_without_inventory_is_a_parse_error_naming_it() {
    let t = TempInv::new("empty", &[("README", "nothing here")]);
    match t.load() {
        Err(InventoryError::Parse { origin, message }) => {
            assert_eq!(origin.file.as_path(), t.dir);
            assert!(message.contains("no inventory file"), "{message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn non_utf8_inventory_names_line() {
    let t = TempInv::new("bytes", &[]);
    let p = t.write(
        "hosts.yaml",
        b"all:\n  hosts:\n    cp\xff1:\n      ip: 10.0.0.1\n",
    );
    match t.load() {
        Err(InventoryError::NotUtf8 { path, line }) => {
            assert_eq!(path, p);
            assert_eq!(line, 3);
        }
        other => panic!("expected NotUtf8, got {other:?}"),
    }
}

#[test]
fn non_utf8_vars_file_names_that_file_and_line() {
    let t = TempInv::new("bytes", &[("hosts.yaml", BASIC_HOSTS)]);
    let p = t.write("group_vars/all.yml", b"a: 1\nb: 2\n\nc: \xc3\x28\n");
    match t.load() {
        Err(InventoryError::NotUtf8 { path, line }) => {
            assert_eq!(path, p);
            assert_eq!(line, 4);
        }
        other => panic!("expected NotUtf8, got {other:?}"),
    }
}

#[test]
fn invalid_yaml_is_parse_error_with_line() {
    let text = "all:\n  hosts:\n    cp1:\n      ip: [10.0.0.1\n    w1: {}\n";
    let t = TempInv::new("badyaml", &[("hosts.yaml", text)]);
    match t.load() {
        Err(InventoryError::Parse { origin, message }) => {
            assert_eq!(origin.file.as_path(), t.path("hosts.yaml"));
            let line = origin
                .line
                .unwrap_or_else(|| panic!("no line in parse error: {message}"));
            assert!((4..=6).contains(&line), "line {line}: {message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn invalid_yaml_in_group_vars_names_that_file() {
    let t = TempInv::new(
        "badyaml",
        &[
            ("hosts.yaml", BASIC_HOSTS),
            ("group_vars/k8s_cluster.yml", "a: 1\nb: : :\n  - x\n"),
        ],
    );
    match t.load() {
        Err(InventoryError::Parse { origin, message }) => {
            assert_eq!(
                origin.file.as_path(),
                t.path("group_vars/k8s_cluster.yml"),
                "{message}"
            );
            assert!(origin.line.is_some(), "{message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn yaml_inventory_must_be_a_mapping() {
    let t = TempInv::new("list", &[("hosts.yaml", "- cp1\n- w1\n")]);
    match t.load() {
        Err(InventoryError::Parse { origin, message }) => {
            assert_eq!(origin.file.as_path(), t.path("hosts.yaml"));
            assert!(message.contains("mapping of groups"), "{message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn duplicate_yaml_key_is_parse_error_with_line() {
    let text = "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1:\n          ip: 10.0.0.1\n          ip: 10.0.0.2\n";
    let t = TempInv::new("dupkey", &[("hosts.yaml", text)]);
    match t.load() {
        Err(InventoryError::Parse { origin, message }) => {
            assert_eq!(origin.file.as_path(), t.path("hosts.yaml"));
            assert_eq!(origin.line, Some(7), "{message}");
            assert!(message.to_lowercase().contains("duplicate"), "{message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn ini_bad_section_header() {
    let ini = "[kube_control_plane]\ncp1 ip=10.0.0.1\n\n[kube_node\nw1\n";
    let t = TempInv::new("hdr", &[("inventory.ini", ini)]);
    match t.load() {
        Err(InventoryError::Parse { origin, message }) => {
            assert_eq!(origin.file.as_path(), t.path("inventory.ini"));
            assert_eq!(origin.line, Some(4));
            assert!(message.contains("must end with `]`"), "{message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
    for (bad, needle) in [
        ("[kube node]", "not a valid group name"),
        ("[]", "not a valid group name"),
        ("[g:hosts]", "not a section kind"),
    ] {
        let ini = format!("[kube_control_plane]\ncp1 ip=10.0.0.1\n{bad}\n");
        let t = TempInv::new("hdr", &[("inventory.ini", &ini)]);
        match t.load() {
            Err(InventoryError::Parse { origin, message }) => {
                assert_eq!(origin.line, Some(3), "{bad}: {message}");
                assert!(message.contains(needle), "{bad}: {message}");
            }
            other => panic!("{bad}: expected Parse, got {other:?}"),
        }
    }
}

#[test]
fn ini_host_line_errors_name_the_line() {
    for (line, needle) in [
        ("w1 ip=10.0.0.2 oops", "is not key=value"),
        ("w1 note='unclosed", "unclosed quote"),
        ("w[3:1]", "runs backwards"),
        ("w1 =x", "has no variable name"),
    ] {
        let ini = format!("[kube_control_plane]\ncp1 ip=10.0.0.1\n[kube_node]\n{line}\n");
        let t = TempInv::new("hostline", &[("inventory.ini", &ini)]);
        match t.load() {
            Err(InventoryError::Parse { origin, message }) => {
                assert_eq!(origin.line, Some(4), "{line}: {message}");
                assert!(message.contains(needle), "{line}: {message}");
            }
            other => panic!("{line}: expected Parse, got {other:?}"),
        }
    }
}

#[test]
fn host_without_ip_or_address() {
    let t = TempInv::new(
        "noip",
        &[(
            "inventory.ini",
            "[kube_control_plane]\ncp1 ansible_host=cp1.example\n",
        )],
    );
    let diags = t.load_invalid();
    let d = find_error(&diags, "has no IP address");
    assert_at(d, &t.path("inventory.ini"), Some(2), "ip");
}

#[test]
fn ip_falls_back_to_ansible_host_then_name() {
    let ini = "[kube_control_plane]\ncp1 ansible_host=10.0.0.1\n10.0.0.2\n";
    let t = TempInv::new("fallback", &[("inventory.ini", ini)]);
    let inv = t.load_ok();
    assert_eq!(inv.hosts[0].ip.to_string(), "10.0.0.1");
    assert_eq!(inv.hosts[1].ip.to_string(), "10.0.0.2");
    assert_eq!(inv.hosts[1].ssh.address, "10.0.0.2");
}

#[test]
fn bad_ip_and_access_ip_name_the_variable() {
    let hosts = "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1:\n          ip: 10.0.0.300\n        cp2:\n          ip: 10.0.0.2\n          access_ip: nope\n";
    let t = TempInv::new("badip", &[("hosts.yaml", hosts)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "expected an IP address, found \"10.0.0.300\"");
    assert_at(d, &t.path("hosts.yaml"), Some(6), "ip");
    let d = find_error(&diags, "expected an IP address, found \"nope\"");
    assert_at(d, &t.path("hosts.yaml"), Some(9), "access_ip");
}

#[test]
fn bastion_that_is_also_a_node_is_an_error() {
    let ini = "[kube_control_plane]\ncp1 ip=10.0.0.1\n[bastion]\ncp1\n";
    let t = TempInv::new("bastion", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "both the bastion and a Kubernetes node");
    assert_eq!(d.field.as_deref(), Some("cp1"));
}

#[test]
fn two_bastions_is_an_error() {
    let ini = "[kube_control_plane]\ncp1 ip=10.0.0.1\n[bastion]\nb1 ansible_host=1.2.3.4\nb2 ansible_host=1.2.3.5\n";
    let t = TempInv::new("bastion", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "more than one host in the `bastion` group");
    assert_at(d, &t.path("inventory.ini"), Some(5), "b2");
}

#[test]
fn errors_are_collected_not_first_only() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1 ansible_port=0
[kube_node]
w1 ip=10.0.0.1
w2 ip=bad
";
    let t = TempInv::new("many", &[("inventory.ini", ini)]);
    let diags = t.load_invalid();
    assert!(diags.errors().count() >= 2, "{diags}");
    find_error(&diags, "a port number");
    find_error(&diags, "an IP address");
}

#[test]
fn become_user_and_jinja_reference() {
    let hosts = "\
all:
  vars:
    ansible_become: yes
    ansible_become_user: admin
    ansible_become_method: su
  children:
    kube_control_plane:
      hosts:
        cp1:
          node_addr: 10.0.0.1
          ip: \"{{ node_addr }}\"
          ansible_host: \"{{ ip }}\"
";
    let t = TempInv::new("jinja", &[("hosts.yaml", hosts)]);
    let inv = t.load_ok();
    let h = &inv.hosts[0];
    assert_eq!(h.ip.to_string(), "10.0.0.1");
    assert_eq!(h.ssh.address, "10.0.0.1");
    assert_eq!(h.ssh.become_user.as_deref(), Some("admin"));
    let d = find_warning(&inv.warnings, "only `sudo` is supported");
    assert_at(d, &t.path("hosts.yaml"), Some(5), "ansible_become_method");

    // A real Jinja expression is refused, pointing at it.
    let hosts = "all:\n  children:\n    kube_control_plane:\n      hosts:\n        cp1:\n          ip: \"{{ '10.0.0.1' | trim }}\"\n";
    let t = TempInv::new("jinja", &[("hosts.yaml", hosts)]);
    let diags = t.load_invalid();
    let d = find_error(&diags, "Jinja expression");
    assert_at(d, &t.path("hosts.yaml"), Some(6), "ip");
}

#[test]
fn legacy_names_in_yaml_and_group_vars_are_mapped() {
    let hosts = "\
all:
  children:
    kube-master:
      hosts:
        cp1:
          ip: 10.0.0.1
    kube-node:
      hosts:
        w1:
          ip: 10.0.0.2
";
    let t = TempInv::new(
        "legacy",
        &[
            ("hosts.yaml", hosts),
            ("group_vars/kube-node.yml", "only_workers: 1\n"),
        ],
    );
    let inv = t.load_ok();
    assert_eq!(
        inv.hosts[0].role,
        NodeRole::ControlPlane { also_worker: false }
    );
    assert_eq!(inv.hosts[1].role, NodeRole::Worker);
    assert_eq!(*inv.hosts[1].vars["only_workers"].value, json!(1));
    assert!(!inv.hosts[0].vars.contains_key("only_workers"));
    let d = find_warning(&inv.warnings, "legacy group name `kube-master`");
    assert_eq!(d.origin.as_ref().unwrap().line, Some(3));
    find_warning(&inv.warnings, "legacy group name `kube-node`");
    // k8s_cluster is derived even though the inventory does not declare it.
    assert_eq!(inv.groups["k8s_cluster"], ["cp1", "w1"]);
}

#[test]
fn control_plane_also_worker() {
    let ini = "[kube_control_plane]\ncp1 ip=10.0.0.1\n[kube_node]\ncp1\nw1 ip=10.0.0.2\n";
    let t = TempInv::new("cpw", &[("inventory.ini", ini)]);
    let inv = t.load_ok();
    assert_eq!(
        inv.hosts[0].role,
        NodeRole::ControlPlane { also_worker: true }
    );
    assert_eq!(
        inv.workers().count(),
        1,
        "a control plane that also works is not listed as a worker"
    );
}

#[test]
fn ini_values_python_literals_on_host_lines_strings_in_vars() {
    let ini = "\
[kube_control_plane]
cp1 ip=10.0.0.1 n=2222 b=True s='2222' z=0755 l=['a','b']

[kube_control_plane:vars]
gn=2222
gq=\"quoted value\"  # comment
";
    let t = TempInv::new("lit", &[("inventory.ini", ini)]);
    let inv = t.load_ok();
    let v = &inv.hosts[0].vars;
    assert_eq!(*v["n"].value, json!(2222));
    assert_eq!(*v["b"].value, json!(true));
    assert_eq!(*v["s"].value, json!("2222"));
    assert_eq!(*v["z"].value, json!("0755"));
    assert_eq!(*v["l"].value, json!(["a", "b"]));
    assert_eq!(*v["gn"].value, json!("2222"));
    assert_eq!(*v["gq"].value, json!("quoted value"));
}

#[test]
fn warnings_do_not_block_and_severity_is_warning() {
    let inv = inventory::load(&repo().join("inventories/prod-example")).unwrap();
    assert!(
        inv.warnings
            .0
            .iter()
            .all(|d| d.severity == Severity::Warning),
        "{}",
        inv.warnings
    );
}

/// PyYAML (Ansible) reads plain `yes`/`no`/`on`/`off` as booleans, but a quoted scalar is always
/// a string: quoting is how users keep `"NO"` (Norway) or `"off"` as text.
#[test]
#[ignore = "bug: source::Node::to_json turns every string spelled yes/no/on/off/true/false into a boolean, quoted or not (Node does not keep the scalar style)"]
fn yaml11_booleans_only_when_plain() {
    let hosts = "\
all:
  vars:
    plain_yes: yes
    plain_off: Off
    plain_y: y
    quoted_no: \"no\"
    single_quoted_yes: 'yes'
    country: \"NO\"
  children:
    kube_control_plane:
      hosts:
        cp1:
          ip: 10.0.0.1
";
    let t = TempInv::new("bools", &[("hosts.yaml", hosts)]);
    let inv = t.load_ok();
    let v = &inv.hosts[0].vars;
    assert_eq!(*v["plain_yes"].value, json!(true));
    assert_eq!(*v["plain_off"].value, json!(false));
    assert_eq!(
        *v["plain_y"].value,
        json!("y"),
        "PyYAML does not read y/n as booleans"
    );
    assert_eq!(*v["quoted_no"].value, json!("no"));
    assert_eq!(*v["single_quoted_yes"].value, json!("yes"));
    assert_eq!(*v["country"].value, json!("NO"));
}

#[test]
fn cluster_label_is_the_inventory_directory_or_the_labs_name() {
    let hosts = "all:\n  hosts:\n    cp1: {ansible_host: 10.0.0.1}\n  children:\n    kube_control_plane: {hosts: {cp1: {}}}\n    kube_node: {hosts: {cp1: {}}}\n    etcd: {hosts: {cp1: {}}}\n";
    let d = tempfile::tempdir().unwrap();
    for (dir, want) in [
        ("prod-eu", "prod-eu"),
        ("labs/quickstart/inventory", "quickstart"),
    ] {
        let p = d.path().join(dir);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("hosts.yaml"), hosts).unwrap();
        let inv = inventory::load(&p).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(inv.cluster_label(), want);
    }
}
