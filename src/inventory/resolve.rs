//! From declarations to a validated [`Inventory`]: group tree, Ansible's variable precedence,
//! Kubespray's host-variable fallbacks, and the inventory-level rules.

use super::model::{Bastion, Host, Inventory, NodeRole, SshTarget};
use super::{InventoryError, RawInventory, Var, Vars, groups};
use crate::diag::{Diagnostic, Diagnostics, Origin};
use indexmap::{IndexMap, IndexSet};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Deepest group nesting accepted (real inventories use 3 or 4 levels).
pub const MAX_GROUP_DEPTH: usize = 64;

/// Validate a raw inventory and type its hosts.
pub fn resolve(mut raw: RawInventory) -> Result<Inventory, InventoryError> {
    let mut diags = std::mem::take(&mut raw.diagnostics);
    check_children(&raw, &mut diags);
    if let Some(cycle) = find_cycle(&raw) {
        diags.push(cycle);
    }
    if diags.has_errors() {
        return Err(InventoryError::Invalid(diags));
    }
    attach_orphans_and_derive(&mut raw);
    let depth = depths(&raw);
    if let Some((g, d)) = depth
        .iter()
        .max_by_key(|(_, d)| **d)
        .filter(|(_, d)| **d > MAX_GROUP_DEPTH)
    {
        let origin = raw.groups.get(g).map(|x| x.origin.clone());
        diags.push(
            Diagnostic::error(format!(
                "group `{g}` is nested {d} levels deep; kubedrill accepts at most {MAX_GROUP_DEPTH}"
            ))
            .at_opt(origin.as_ref())
            .field(g.clone()),
        );
        return Err(InventoryError::Invalid(diags));
    }
    let members = memberships(&raw);

    // Groups of each host, sorted as Ansible sorts them for precedence: depth, priority, name.
    let priority = |g: &str| -> i64 {
        raw.groups
            .get(g)
            .and_then(|g| {
                g.vars
                    .get("ansible_group_priority")
                    .or(g.file_vars.get("ansible_group_priority"))
            })
            // Ansible applies int(): INI `:vars` values and quoted YAML values are strings.
            .and_then(|v| {
                v.value
                    .as_i64()
                    .or_else(|| v.value.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .unwrap_or(1)
    };
    let mut host_groups: HashMap<&str, Vec<&str>> = HashMap::new();
    for (g, hosts) in &members {
        for h in hosts {
            host_groups.entry(h.as_str()).or_default().push(g.as_str());
        }
    }
    for gs in host_groups.values_mut() {
        gs.sort_by(|a, b| {
            (depth.get(*a).copied().unwrap_or(0), priority(a), *a).cmp(&(
                depth.get(*b).copied().unwrap_or(0),
                priority(b),
                *b,
            ))
        });
    }

    let in_group = |g: &str, h: &str| members.get(g).is_some_and(|m| m.contains(h));
    let etcd_order: Vec<&String> = members
        .get(groups::ETCD)
        .map(|m| m.iter().collect())
        .unwrap_or_default();

    let mut hosts = Vec::new();
    let mut bastion = None;
    // One warning per place a password is set, however many hosts inherit it.
    let mut passwords: IndexMap<String, Diagnostic> = IndexMap::new();
    for (name, rh) in &raw.hosts {
        // The name becomes the Kubernetes node name and part of local paths (render dirs, saved
        // facts): anything but an RFC 1123 name is refused before it can steer either.
        if let Err(why) = node_name(name) {
            diags.push(
                Diagnostic::error(format!(
                    "host `{}` is not a valid node name: {why}",
                    name.escape_debug()
                ))
                .at(&rh.origin)
                .field(name.escape_debug().to_string())
                .hint("use lowercase letters, digits, `-` and `.` (an RFC 1123 name, as Kubernetes requires for nodes); put the address in `ansible_host`"),
            );
            continue;
        }
        let gs = host_groups.get(name.as_str()).cloned().unwrap_or_default();
        let vars = effective_vars(&raw, name, &gs);
        for pw in crate::secrets::PASSWORD_VARS {
            if let Some(v) = vars.get(*pw) {
                passwords.entry(v.origin.to_string()).or_insert_with(|| {
                    Diagnostic::warning(format!(
                        "`{pw}` is set, but kubedrill never uses passwords: it logs in with SSH keys (ansible_ssh_private_key_file, ssh-agent, ~/.ssh) and needs passwordless sudo for become. The value is ignored and never shown"
                    ))
                    .at(&v.origin)
                    .field(*pw)
                    .hint("remove it, or keep it in Ansible Vault for Kubespray; kubedrill does not read it")
                });
            }
        }
        let cp = in_group(groups::CONTROL_PLANE, name);
        let node = in_group(groups::NODE, name);
        if in_group(groups::BASTION, name) {
            if cp || node {
                diags.push(
                    Diagnostic::error(format!(
                        "host `{name}` is both the bastion and a Kubernetes node"
                    ))
                    .at(&rh.origin)
                    .field(name.clone()),
                );
            }
            match ssh_target(name, &vars, &mut diags) {
                Some(ssh) if bastion.is_none() => {
                    bastion = Some(Bastion {
                        name: name.clone(),
                        ssh,
                    })
                }
                Some(_) => diags.push(
                    Diagnostic::error("more than one host in the `bastion` group")
                        .at(&rh.origin)
                        .field(name.clone())
                        .hint("kubedrill uses one jump host for the whole inventory"),
                ),
                None => {}
            }
            continue;
        }
        let role = match (cp, node) {
            (true, also_worker) => NodeRole::ControlPlane { also_worker },
            (false, true) => NodeRole::Worker,
            (false, false) => {
                let why = if in_group(groups::ETCD, name) {
                    "is only in `etcd`; kubedrill runs etcd stacked on the control planes (kubeadm's local etcd)"
                } else {
                    "is in no Kubernetes group"
                };
                diags.push(
                    Diagnostic::error(format!("host `{name}` {why}"))
                        .at(&rh.origin)
                        .field(name.clone())
                        .hint("add it to `kube_control_plane` or `kube_node`, or remove it"),
                );
                continue;
            }
        };
        let Some(ssh) = ssh_target(name, &vars, &mut diags) else {
            continue;
        };
        let Some(ip) = node_ip(name, &vars, &ssh, &rh.origin, &mut diags) else {
            continue;
        };
        let access_ip = match vars.get("access_ip") {
            Some(v) => match v.ip("access_ip") {
                Ok(ip) => ip,
                Err(d) => {
                    diags.push(d);
                    ip
                }
            },
            None => ip,
        };
        let etcd = in_group(groups::ETCD, name);
        let etcd_member_name = match vars.get("etcd_member_name") {
            Some(v) => v.string("etcd_member_name").map_err(|d| diags.push(d)).ok(),
            None if etcd => etcd_order
                .iter()
                .position(|h| *h == name)
                .map(|i| format!("etcd{}", i + 1)),
            None => None,
        };
        hosts.push(Host {
            name: name.clone(),
            origin: rh.origin.clone(),
            role,
            etcd,
            etcd_member_name,
            ssh,
            ip,
            access_ip,
            groups: gs.iter().map(|g| (*g).to_owned()).collect(),
            vars,
        });
    }

    for (_, d) in passwords {
        diags.push(d);
    }
    check_hosts(&hosts, &members, &raw, &mut diags);
    if diags.has_errors() {
        return Err(InventoryError::Invalid(diags));
    }
    let Some(first_cp) = hosts.iter().position(|h| h.role.is_control_plane()) else {
        // check_hosts reports this; keep the type's promise regardless.
        return Err(InventoryError::Invalid(diags));
    };
    let groups = members
        .into_iter()
        .map(|(g, m)| (g, m.into_iter().collect()))
        .collect();
    Ok(Inventory {
        path: raw.path,
        format: raw.format,
        hosts,
        bastion,
        groups,
        warnings: diags,
        first_cp,
    })
}

/// Every child must be a group that is defined somewhere.
fn check_children(raw: &RawInventory, diags: &mut Diagnostics) {
    for (parent, g) in &raw.groups {
        for (child, origin) in &g.children {
            let defined = raw
                .groups
                .get(child)
                .is_some_and(|c| c.defined || !c.hosts.is_empty());
            if !defined {
                diags.push(
                    Diagnostic::error(format!("group `{parent}` names `{child}` as a child, but no group `{child}` is defined"))
                        .at(origin)
                        .field(child.clone())
                        .hint(format!("define `{child}` (an empty group is fine) or fix the name")),
                );
            }
        }
    }
}

/// A cycle in `children`, reported at the edge that closes it.
fn find_cycle(raw: &RawInventory) -> Option<Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    // Iterative DFS: (group, next child index), with the path for the message.
    for start in raw.groups.keys() {
        if marks.contains_key(start.as_str()) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start, Mark::Visiting);
        while let Some((g, i)) = stack.last().copied() {
            let children = raw.groups.get(g).map(|g| &g.children[..]).unwrap_or(&[]);
            if let Some((child, origin)) = children.get(i) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match marks.get(child.as_str()) {
                    Some(Mark::Visiting) => {
                        let from = stack
                            .iter()
                            .position(|(n, _)| *n == child.as_str())
                            .unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                        path.push(child);
                        return Some(
                            Diagnostic::error(format!("groups form a cycle: {}", path.join(" → ")))
                                .at(origin)
                                .field(child.clone())
                                .hint("a group cannot be its own descendant"),
                        );
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(child, Mark::Visiting);
                        stack.push((child, 0));
                    }
                }
            } else {
                marks.insert(g, Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

/// Groups without a parent are children of `all`; `k8s_cluster` is the union of the control
/// plane and the nodes (and `calico_rr`) even when the inventory does not declare it.
fn attach_orphans_and_derive(raw: &mut RawInventory) {
    let origin = Origin::at(&raw.path, None);
    let derived = Origin::builtin("derived: k8s_cluster = kube_control_plane + kube_node");
    for sub in [groups::CONTROL_PLANE, groups::NODE, groups::CALICO_RR] {
        if raw.groups.contains_key(sub) {
            raw.add_child(groups::K8S_CLUSTER, sub, &derived);
        }
    }
    let mut has_parent: IndexSet<String> = IndexSet::new();
    for g in raw.groups.values() {
        for (c, _) in &g.children {
            has_parent.insert(c.clone());
        }
    }
    let orphans: Vec<String> = raw
        .groups
        .keys()
        .filter(|g| g.as_str() != groups::ALL && !has_parent.contains(g.as_str()))
        .cloned()
        .collect();
    for g in orphans {
        raw.add_child(groups::ALL, &g, &origin);
    }
}

/// Depth of each group: the longest path from `all`. The graph is acyclic (checked before), so
/// one pass in topological order (Kahn's algorithm) is linear in groups + edges.
fn depths(raw: &RawInventory) -> HashMap<String, usize> {
    let mut indegree: HashMap<&str, usize> = raw.groups.keys().map(|g| (g.as_str(), 0)).collect();
    for g in raw.groups.values() {
        for (c, _) in &g.children {
            *indegree.entry(c.as_str()).or_insert(0) += 1;
        }
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(g, _)| *g)
        .collect();
    let mut depth: HashMap<String, usize> = HashMap::new();
    depth.insert(groups::ALL.to_owned(), 0);
    while let Some(p) = ready.pop() {
        let pd = depth.get(p).copied();
        let Some(g) = raw.groups.get(p) else { continue };
        for (c, _) in &g.children {
            if let Some(pd) = pd {
                let e = depth.entry(c.clone()).or_insert(0);
                *e = (*e).max(pd + 1);
            }
            if let Some(n) = indegree.get_mut(c.as_str()) {
                *n -= 1;
                if *n == 0 {
                    ready.push(c.as_str());
                }
            }
        }
    }
    depth
}

/// Hosts of each group, including those of its descendants, in inventory order.
fn memberships(raw: &RawInventory) -> IndexMap<String, IndexSet<String>> {
    fn collect(
        raw: &RawInventory,
        g: &str,
        memo: &mut HashMap<String, IndexSet<String>>,
    ) -> IndexSet<String> {
        if let Some(m) = memo.get(g) {
            return m.clone();
        }
        let mut set = IndexSet::new();
        if let Some(group) = raw.groups.get(g) {
            set.extend(group.hosts.iter().cloned());
            for (c, _) in &group.children {
                set.extend(collect(raw, c, memo));
            }
        }
        memo.insert(g.to_owned(), set.clone());
        set
    }
    let mut memo = HashMap::new();
    let mut out = IndexMap::new();
    for g in raw.groups.keys() {
        let mut set = collect(raw, g, &mut memo);
        if g == groups::ALL {
            set.extend(raw.hosts.keys().cloned());
        }
        // Inventory order, not discovery order.
        set.sort_by_cached_key(|h| raw.hosts.get_index_of(h).unwrap_or(usize::MAX));
        out.insert(g.clone(), set);
    }
    out
}

/// Ansible's precedence: inventory-file group vars by group order, then `group_vars/all`, then
/// `group_vars/<group>` by group order, then inventory-file host vars, then `host_vars/<host>`.
/// Plain `{{ var }}` references are then resolved against the result.
fn effective_vars(raw: &RawInventory, host: &str, gs: &[&str]) -> Vars {
    let mut vars = Vars::new();
    let mut put = |src: &Vars| {
        for (k, v) in src {
            vars.insert(k.clone(), v.clone());
        }
    };
    for g in gs {
        if let Some(group) = raw.groups.get(*g) {
            put(&group.vars);
        }
    }
    for g in gs {
        if let Some(group) = raw.groups.get(*g) {
            put(&group.file_vars);
        }
    }
    if let Some(h) = raw.hosts.get(host) {
        put(&h.vars);
        put(&h.file_vars);
    }
    vars.insert(
        "inventory_hostname".to_owned(),
        Var {
            value: Value::String(host.to_owned()).into(),
            origin: Origin::builtin("inventory host name"),
        },
    );
    resolve_references(&mut vars);
    vars
}

/// Replace values that are exactly `{{ name }}` by the named variable's value (a few levels deep).
fn resolve_references(vars: &mut Vars) {
    for _ in 0..8 {
        let mut changed = false;
        let keys: Vec<String> = vars.keys().cloned().collect();
        for k in keys {
            let Some(target) = vars.get(&k).and_then(|v| plain_reference(&v.value)) else {
                continue;
            };
            if target == k {
                continue;
            }
            if let Some(value) = vars.get(&target).map(|v| v.value.clone())
                && let Some(v) = vars.get_mut(&k)
            {
                v.value = value;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

fn plain_reference(v: &Value) -> Option<String> {
    let s = v.as_str()?.trim();
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| inner.to_owned())
}

/// The first of several variable names that is set.
fn first<'a>(vars: &'a Vars, names: &[&'static str]) -> Option<(&'static str, &'a Var)> {
    names.iter().find_map(|n| vars.get(*n).map(|v| (*n, v)))
}

fn ssh_target(name: &str, vars: &Vars, diags: &mut Diagnostics) -> Option<SshTarget> {
    let mut ok = true;
    let mut take = |r: Result<String, Diagnostic>| {
        r.map_err(|d| {
            diags.push(d);
            ok = false
        })
        .ok()
    };
    let address = match first(vars, &["ansible_host", "ansible_ssh_host"]) {
        Some((n, v)) => take(v.string(n)),
        None => Some(name.to_owned()),
    };
    let user =
        first(vars, &["ansible_user", "ansible_ssh_user"]).and_then(|(n, v)| take(v.string(n)));
    let private_key = first(
        vars,
        &["ansible_ssh_private_key_file", "ansible_private_key_file"],
    )
    .and_then(|(n, v)| take(v.string(n)))
    .map(|p| expand_home(&p));
    let port = match first(vars, &["ansible_port", "ansible_ssh_port"]) {
        Some((n, v)) => v
            .port(n)
            .map_err(|d| {
                diags.push(d);
                ok = false
            })
            .ok(),
        None => Some(22),
    };
    let become_user = match vars.get("ansible_become").map(|v| v.bool("ansible_become")) {
        Some(Ok(true)) => Some(
            vars.get("ansible_become_user")
                .map(|v| v.string("ansible_become_user"))
                .transpose()
                .map_err(|d| {
                    diags.push(d);
                    ok = false
                })
                .ok()
                .flatten()
                .unwrap_or_else(|| "root".to_owned()),
        ),
        Some(Ok(false)) | None => None,
        Some(Err(d)) => {
            diags.push(d);
            ok = false;
            None
        }
    };
    if let Some(m) = vars.get("ansible_become_method")
        && m.value.as_str().is_some_and(|s| s != "sudo")
    {
        diags.push(
            Diagnostic::warning(
                "only `sudo` is supported as become method; kubedrill will use sudo",
            )
            .at(&m.origin)
            .field("ansible_become_method"),
        );
    }
    match (ok, address) {
        (true, Some(address)) => Some(SshTarget {
            address,
            port: port.unwrap_or(22),
            user,
            private_key,
            become_user,
        }),
        _ => None,
    }
}

/// Kubespray's fallback for `ip`: `ip`, else `ansible_host` when it is an address, else the host
/// name when it is one (facts-based discovery is not done at this stage).
fn node_ip(
    name: &str,
    vars: &Vars,
    ssh: &SshTarget,
    origin: &Origin,
    diags: &mut Diagnostics,
) -> Option<IpAddr> {
    if let Some(v) = vars.get("ip") {
        return v.ip("ip").map_err(|d| diags.push(d)).ok();
    }
    if let Ok(ip) = ssh.address.parse::<IpAddr>() {
        return Some(ip);
    }
    diags.push(
        Diagnostic::error(format!(
            "host `{name}` has no IP address: `ip` is not set and `ansible_host` (\"{}\") is not an address",
            ssh.address
        ))
        .at(origin)
        .field("ip")
        .hint("set `ip` to the node's address on the cluster network"),
    );
    None
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// Check a host name is an RFC 1123 subdomain, as Kubernetes requires of node names: at most
/// 253 characters, dot-separated labels of 1–63 lowercase letters, digits and `-`, each
/// starting and ending with a letter or digit.
pub fn node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err(format!("it is {} characters long; at most 253", name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (`..`, or a leading or trailing `.`)".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(if c.is_ascii_uppercase() {
                format!("`{c}` is uppercase; node names are lowercase")
            } else {
                format!("`{}` is not allowed", c.escape_debug())
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
}

/// Inventory-wide rules: a control plane exists, addresses are unique, etcd has a quorum-friendly size.
fn check_hosts(
    hosts: &[Host],
    members: &IndexMap<String, IndexSet<String>>,
    raw: &RawInventory,
    diags: &mut Diagnostics,
) {
    if !hosts.iter().any(|h| h.role.is_control_plane()) {
        let origin = raw
            .groups
            .get(groups::CONTROL_PLANE)
            .map(|g| g.origin.clone())
            .unwrap_or_else(|| Origin::at(&raw.path, None));
        diags.push(
            Diagnostic::error(
                "no control-plane host: group `kube_control_plane` is missing or empty",
            )
            .at(&origin)
            .field(groups::CONTROL_PLANE)
            .hint("list at least one host under `kube_control_plane` (legacy: `kube-master`)"),
        );
    }
    let mut seen: HashMap<IpAddr, &Host> = HashMap::new();
    for h in hosts {
        if let Some(other) = seen.insert(h.ip, h) {
            let origin = h
                .vars
                .get("ip")
                .map(|v| v.origin.clone())
                .unwrap_or_else(|| h.origin.clone());
            diags.push(
                Diagnostic::error(format!(
                    "hosts `{}` and `{}` have the same ip {}",
                    other.name, h.name, h.ip
                ))
                .at(&origin)
                .field("ip")
                .hint("every node needs its own address"),
            );
        }
    }
    let etcd = members.get(groups::ETCD).map(IndexSet::len).unwrap_or(0);
    if etcd > 0 && etcd.is_multiple_of(2) {
        let origin = raw.groups.get(groups::ETCD).map(|g| g.origin.clone());
        diags.push(
            Diagnostic::warning(format!(
                "{etcd} etcd members: an even count tolerates no more failures than {} members",
                etcd - 1
            ))
            .at_opt(origin.as_ref())
            .field(groups::ETCD)
            .hint("use an odd number of etcd members (1, 3, 5)"),
        );
    }
}
