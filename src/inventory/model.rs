//! The validated inventory: typed hosts with roles, SSH targets and addresses.

use super::{Format, Var, Vars};
use crate::diag::{Diagnostic, Diagnostics, Origin};
use serde::Serialize;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a Kubernetes node does. A node is always at least one of control plane or worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// A control-plane node; `also_worker` when it is in `kube_node` too (runs workloads).
    ControlPlane {
        /// Also listed in `kube_node`: the control-plane taint is not applied.
        also_worker: bool,
    },
    /// A worker node.
    Worker,
}

impl NodeRole {
    /// True for control-plane nodes.
    pub fn is_control_plane(self) -> bool {
        matches!(self, NodeRole::ControlPlane { .. })
    }

    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            NodeRole::ControlPlane { also_worker: false } => "control-plane",
            NodeRole::ControlPlane { also_worker: true } => "control-plane+worker",
            NodeRole::Worker => "worker",
        }
    }
}

/// How to reach a host over SSH (`ansible_*` variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshTarget {
    /// `ansible_host`, else the inventory name.
    pub address: String,
    /// `ansible_port`, else 22.
    pub port: u16,
    /// `ansible_user`; `None` means the local user name.
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file`.
    pub private_key: Option<PathBuf>,
    /// `ansible_become`: run privileged commands with `sudo -n -u USER`.
    pub become_user: Option<String>,
}

/// A Kubernetes node from the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// Inventory host name (also the Kubernetes node name).
    pub name: String,
    /// Where the host was first declared.
    pub origin: Origin,
    /// Control plane, worker, or both.
    pub role: NodeRole,
    /// In the `etcd` group.
    pub etcd: bool,
    /// `etcd_member_name`, defaulting to Kubespray's `etcdN` by position in the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_member_name: Option<String>,
    /// SSH connection settings.
    pub ssh: SshTarget,
    /// `ip`: the address services bind to and kubelet's node IP.
    pub ip: IpAddr,
    /// `access_ip`: the address other nodes use (defaults to `ip`).
    pub access_ip: IpAddr,
    /// Groups the host belongs to, directly or through children.
    pub groups: Vec<String>,
    /// Effective variables after Ansible's precedence, each with its origin.
    #[serde(skip)]
    pub vars: Vars,
}

/// The SSH jump host from the `bastion` group.
#[derive(Debug, Clone, Serialize)]
pub struct Bastion {
    /// Inventory name.
    pub name: String,
    /// How to reach it.
    pub ssh: SshTarget,
}

/// A validated inventory: at least one control plane, every node typed.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The inventory file.
    pub path: Arc<PathBuf>,
    /// Its format.
    pub format: Format,
    /// Kubernetes nodes in inventory order.
    pub hosts: Vec<Host>,
    /// The jump host, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Bastion>,
    /// Group name → member hosts (effective, including children).
    pub groups: indexmap::IndexMap<String, Vec<String>>,
    /// Warnings found while reading.
    pub warnings: Diagnostics,
    /// Index of the first control plane in `hosts` (there always is one).
    #[serde(skip)]
    pub(crate) first_cp: usize,
}

impl Inventory {
    /// The first control-plane node: where `kubeadm init` runs and cluster variables are read.
    pub fn first_control_plane(&self) -> &Host {
        &self.hosts[self.first_cp]
    }

    /// Control-plane nodes in inventory order.
    pub fn control_planes(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.role.is_control_plane())
    }

    /// Worker-only nodes in inventory order.
    pub fn workers(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.role == NodeRole::Worker)
    }

    /// A short label for the cluster: the name of the directory that holds the inventory.
    pub fn cluster_label(&self) -> String {
        fn name(p: Option<&Path>) -> Option<&str> {
            p.and_then(|p| p.file_name()).and_then(|n| n.to_str())
        }
        let dir = self.path.parent();
        match name(dir) {
            // A lab's own inventory (`labs/<lab>/inventory/hosts.yaml`): the lab's name, so
            // that two labs never share a cluster state directory.
            Some("inventory") => name(dir.and_then(Path::parent)).unwrap_or("inventory"),
            Some(n) => n,
            None => "cluster",
        }
        .to_owned()
    }
}

/// Typed readers for variables; errors name the variable and where it was set.
impl Var {
    fn bad(&self, name: &str, expected: &str) -> Diagnostic {
        Diagnostic::error(format!(
            "expected {expected}, found {}",
            describe(&self.value)
        ))
        .at(&self.origin)
        .field(name)
    }

    /// A boolean, with Ansible's `| bool` spellings (`yes`, `on`, `1`, `true`, any case).
    pub fn bool(&self, name: &str) -> Result<bool, Diagnostic> {
        match &*self.value {
            Value::Bool(b) => Ok(*b),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "yes" | "on" | "1" | "true" | "y" => Ok(true),
                "no" | "off" | "0" | "false" | "n" => Ok(false),
                _ => Err(self.bad(name, "a boolean (true/false)")),
            },
            _ => Err(self.bad(name, "a boolean (true/false)")),
        }
    }

    /// A string; numbers are accepted and written out (Ansible would template them).
    /// A Jinja expression other than a plain `{{ var }}` reference (resolved earlier) is an error.
    pub fn string(&self, name: &str) -> Result<String, Diagnostic> {
        match &*self.value {
            Value::String(s) if s.contains("{{") || s.contains("{%") => Err(Diagnostic::error(
                format!("\"{s}\" is a Jinja expression, which kubedrill does not evaluate"),
            )
            .at(&self.origin)
            .field(name)
            .hint("write the value itself, or a plain reference such as \"{{ ip }}\"")),
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            _ => Err(self.bad(name, "a string")),
        }
    }

    /// A TCP port, 1–65535.
    pub fn port(&self, name: &str) -> Result<u16, Diagnostic> {
        let n = match &*self.value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        n.and_then(|n| u16::try_from(n).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| self.bad(name, "a port number 1-65535"))
    }

    /// An unsigned integer.
    pub fn uint(&self, name: &str) -> Result<u64, Diagnostic> {
        match &*self.value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| self.bad(name, "a non-negative integer"))
    }

    /// An IP address.
    pub fn ip(&self, name: &str) -> Result<IpAddr, Diagnostic> {
        let s = self.string(name)?;
        s.trim()
            .parse::<IpAddr>()
            .map_err(|_| self.bad(name, "an IP address"))
    }
}

/// A short description of a value for error messages (never a whole nested structure).
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 60 => {
            format!("a {}-character string", s.chars().count())
        }
        Value::String(s) => format!("\"{s}\""),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}
