//! Kubespray inventories: Ansible YAML and INI, `group_vars/` and `host_vars/`, Ansible's
//! variable precedence, Kubespray's groups and host variables, and validation.
//!
//! Reading goes in two steps: a parser ([`yaml`] or [`ini`]) fills a [`RawInventory`] with every
//! declaration and where it was made; [`resolve`] applies precedence and turns it into an
//! [`Inventory`] of typed [`Host`]s, or a list of diagnostics naming file, line and field.

pub mod ini;
pub mod model;
pub mod pattern;
pub mod resolve;
pub mod source;
pub mod vars_files;
pub mod yaml;

use crate::diag::{Diagnostic, Diagnostics, Origin};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use model::{Bastion, Host, Inventory, NodeRole, SshTarget};

/// The most distinct hosts one inventory may declare: twice the 5,000 nodes Kubernetes is
/// tested with. More is a mistake or an attack, and would cost memory in every later step.
pub const MAX_HOSTS: usize = 10_000;

/// The most host declarations (one host named in one group, ranges counted per host) in one
/// inventory, so that many small range lines cannot multiply into millions of entries.
pub const MAX_HOST_ENTRIES: usize = 100_000;

/// Errors reading an inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not UTF-8 text.
    #[error("{}:{line}: not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The line of the first bad byte.
        line: u32,
    },
    /// A file could not be parsed.
    #[error("{origin}: {message}")]
    Parse {
        /// Where.
        origin: Origin,
        /// What.
        message: String,
    },
    /// The inventory parsed but is not valid: every error and warning found.
    #[error("inventory is not valid:\n{0}")]
    Invalid(Diagnostics),
}

/// One variable's value and where it was set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Var {
    /// The value as Ansible would see it. Shared: a group variable is inherited by every host
    /// of the group, and copying a large value per host would cost hosts × bytes of memory.
    pub value: Arc<Value>,
    /// Where it was set.
    pub origin: Origin,
}

/// Variables by name, in the order they were set.
pub type Vars = IndexMap<String, Var>;

/// The inventory file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Ansible YAML (`all: hosts/vars/children`).
    Yaml,
    /// Ansible INI (`[group]`, `[group:children]`, `[group:vars]`).
    Ini,
}

/// A group as declared in the inventory, before precedence.
#[derive(Debug, Clone)]
pub struct RawGroup {
    /// Where the group was first declared or referenced.
    pub origin: Origin,
    /// False while the group is only referenced as someone's child.
    pub defined: bool,
    /// Hosts listed directly in the group.
    pub hosts: indexmap::IndexSet<String>,
    /// Child groups, each with where it was named.
    pub children: Vec<(String, Origin)>,
    /// Variables from the inventory file.
    pub vars: Vars,
    /// Variables from `group_vars/`.
    pub file_vars: Vars,
}

/// A host as declared in the inventory, before precedence.
#[derive(Debug, Clone)]
pub struct RawHost {
    /// Where the host was first declared.
    pub origin: Origin,
    /// Variables from the inventory file (host lines or host entries).
    pub vars: Vars,
    /// Variables from `host_vars/`.
    pub file_vars: Vars,
}

/// Every declaration of an inventory, with origins; what the parsers produce.
#[derive(Debug, Clone)]
pub struct RawInventory {
    /// The inventory file.
    pub path: Arc<PathBuf>,
    /// Its format.
    pub format: Format,
    /// Groups by canonical name (legacy Kubespray names are mapped).
    pub groups: IndexMap<String, RawGroup>,
    /// Hosts by name, in order of first appearance.
    pub hosts: IndexMap<String, RawHost>,
    /// Warnings found while parsing.
    pub diagnostics: Diagnostics,
    /// Host declarations so far, against [`MAX_HOST_ENTRIES`].
    pub host_entries: usize,
}

/// Kubespray's group names.
pub mod groups {
    /// The group every host is in.
    pub const ALL: &str = "all";
    /// Hosts in no other group.
    pub const UNGROUPED: &str = "ungrouped";
    /// Control-plane nodes.
    pub const CONTROL_PLANE: &str = "kube_control_plane";
    /// Worker nodes.
    pub const NODE: &str = "kube_node";
    /// etcd members.
    pub const ETCD: &str = "etcd";
    /// Union of control plane and workers.
    pub const K8S_CLUSTER: &str = "k8s_cluster";
    /// SSH jump host.
    pub const BASTION: &str = "bastion";
    /// Calico route reflectors (accepted, unused with Cilium).
    pub const CALICO_RR: &str = "calico_rr";

    /// Map a legacy Kubespray group name to today's, if it is one.
    pub fn modern_name(name: &str) -> Option<&'static str> {
        match name {
            "kube-master" | "kube_master" => Some(CONTROL_PLANE),
            "kube-node" => Some(NODE),
            "k8s-cluster" => Some(K8S_CLUSTER),
            _ => None,
        }
    }
}

impl RawInventory {
    /// An empty inventory for a file.
    pub fn new(path: Arc<PathBuf>, format: Format) -> Self {
        let mut inv = RawInventory {
            path,
            format,
            groups: IndexMap::new(),
            hosts: IndexMap::new(),
            diagnostics: Diagnostics::default(),
            host_entries: 0,
        };
        let origin = Origin::at(&inv.path, None);
        for g in [groups::ALL, groups::UNGROUPED] {
            inv.groups.insert(
                g.to_owned(),
                RawGroup {
                    origin: origin.clone(),
                    defined: true,
                    hosts: Default::default(),
                    children: vec![],
                    vars: Vars::new(),
                    file_vars: Vars::new(),
                },
            );
        }
        inv
    }

    /// The canonical name of a group, warning once per place a legacy name is used.
    pub fn canonical_group(&mut self, name: &str, origin: &Origin) -> String {
        match groups::modern_name(name) {
            Some(modern) => {
                self.diagnostics.push(
                    Diagnostic::warning(format!(
                        "legacy group name `{name}` is read as `{modern}`"
                    ))
                    .at(origin)
                    .field(name)
                    .hint(format!("rename the group to `{modern}` (Kubespray ≥ 2.16)")),
                );
                modern.to_owned()
            }
            None => name.to_owned(),
        }
    }

    /// The group with this canonical name, created (as defined or merely referenced) if new.
    pub fn group_mut(&mut self, name: &str, origin: &Origin, define: bool) -> &mut RawGroup {
        let g = self
            .groups
            .entry(name.to_owned())
            .or_insert_with(|| RawGroup {
                origin: origin.clone(),
                defined: false,
                hosts: Default::default(),
                children: vec![],
                vars: Vars::new(),
                file_vars: Vars::new(),
            });
        if define && !g.defined {
            g.defined = true;
            g.origin = origin.clone();
        }
        g
    }

    /// Expand a host pattern within what is left of the inventory's limits.
    pub fn expand_hosts(&mut self, pattern: &str) -> Result<Vec<String>, String> {
        let left = MAX_HOST_ENTRIES.saturating_sub(self.host_entries);
        let names = pattern::expand_at_most(pattern, left.min(pattern::MAX_EXPANSION))
            .map_err(|e| {
                if left < pattern::MAX_EXPANSION {
                    format!("{e}: the inventory already declares {} hosts in groups, and {MAX_HOST_ENTRIES} is the limit", self.host_entries)
                } else {
                    e
                }
            })?;
        self.host_entries += names.len();
        Ok(names)
    }

    /// Declare a host in a group; more than [`MAX_HOSTS`] distinct hosts is an error.
    pub fn add_host(&mut self, group: &str, host: &str, origin: &Origin) -> Result<(), String> {
        if self.hosts.len() >= MAX_HOSTS && !self.hosts.contains_key(host) {
            return Err(format!(
                "more than {MAX_HOSTS} hosts: kubedrill accepts at most {MAX_HOSTS} per inventory"
            ));
        }
        self.hosts
            .entry(host.to_owned())
            .or_insert_with(|| RawHost {
                origin: origin.clone(),
                vars: Vars::new(),
                file_vars: Vars::new(),
            });
        let g = self.group_mut(group, origin, true);
        // A set: declaration order kept, membership checked in O(1) (ranges can be 10k hosts).
        g.hosts.insert(host.to_owned());
        Ok(())
    }

    /// Set a host variable from the inventory file.
    pub fn set_host_var(
        &mut self,
        host: &str,
        key: String,
        value: impl Into<Arc<Value>>,
        origin: Origin,
    ) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.vars.insert(
                key,
                Var {
                    value: value.into(),
                    origin,
                },
            );
        }
    }

    /// Declare `child` as a child group of `parent`.
    pub fn add_child(&mut self, parent: &str, child: &str, origin: &Origin) {
        self.group_mut(child, origin, false);
        let p = self.group_mut(parent, origin, true);
        if !p.children.iter().any(|(c, _)| c == child) {
            p.children.push((child.to_owned(), origin.clone()));
        }
    }
}

/// File names Ansible users give an inventory inside a directory, in the order they are tried.
pub const INVENTORY_FILE_NAMES: &[&str] = &[
    "hosts.yaml",
    "hosts.yml",
    "inventory.yaml",
    "inventory.yml",
    "inventory.ini",
    "hosts.ini",
    "hosts",
    "inventory",
];

/// Find the inventory file: the path itself, or a known file name inside a directory.
pub fn locate(path: &Path) -> Result<PathBuf, InventoryError> {
    if path.is_dir() {
        for name in INVENTORY_FILE_NAMES {
            let candidate = path.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        return Err(InventoryError::Parse {
            origin: Origin::at(&Arc::new(path.to_path_buf()), None),
            message: format!(
                "directory holds no inventory file (looked for {})",
                INVENTORY_FILE_NAMES.join(", ")
            ),
        });
    }
    Ok(path.to_path_buf())
}

/// Guess the format from the name, then from the content.
pub fn detect_format(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml" | "json") => return Format::Yaml,
        Some("ini" | "cfg") => return Format::Ini,
        _ => {}
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
    match first {
        Some(l) if l.starts_with('[') => Format::Ini,
        Some(l) if l.starts_with("---") || l.ends_with(':') || l.starts_with('{') => Format::Yaml,
        _ => Format::Ini,
    }
}

/// Parse the inventory file and the `group_vars/` and `host_vars/` beside it, without validating.
pub fn load_raw(path: &Path) -> Result<RawInventory, InventoryError> {
    let file = locate(path)?;
    let mut budget = source::ReadBudget::default();
    let text = source::read_text(&file, &mut budget)?;
    let file = Arc::new(file);
    let mut raw = match detect_format(&file, &text) {
        Format::Yaml => yaml::parse(&text, &file)?,
        Format::Ini => ini::parse(&text, &file)?,
    };
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    vars_files::load_beside(&mut raw, &dir, &mut budget)?;
    Ok(raw)
}

/// Read and validate an inventory.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let raw = load_raw(path)?;
    resolve::resolve(raw)
}
