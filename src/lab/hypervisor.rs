//! libvirt through the `virt` crate: define and start a lab's network and domains, find what
//! belongs to a lab, and remove exactly that. Every call blocks in C: async callers run these in
//! `spawn_blocking`.

use super::state::{LabState, ObjRef};
use super::xml::{self, Instance, NAMESPACE};
use serde::Serialize;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

/// libvirt failures, naming the URI or object.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// The daemon could not be reached.
    #[error(
        "cannot connect to libvirt at {uri}: {message}. Start the daemon (systemd: `systemctl start \
         libvirtd`; without systemd: `virtlogd -d && libvirtd -d`), check that your user may use \
         it (group `libvirt`), or set `hypervisor:` in the lab file"
    )]
    Unreachable {
        /// URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// An operation on an object failed.
    #[error("libvirt {what} `{name}`: {message}")]
    Object {
        /// What was attempted (define domain, start network, …).
        what: &'static str,
        /// Object name.
        name: String,
        /// libvirt's message.
        message: String,
    },
    /// A name kubedrill wants is taken by an object it did not create.
    #[error(
        "libvirt {kind} `{name}` already exists and is not part of this lab (no kubedrill mark, or \
         another lab instance); kubedrill will not touch it. Rename the lab or remove that {kind} yourself"
    )]
    NameTaken {
        /// `domain` or `network`.
        kind: &'static str,
        /// Name.
        name: String,
    },
}

/// An open connection.
pub struct Hypervisor {
    conn: Connect,
    uri: String,
}

/// What teardown did.
#[derive(Debug, Default, Serialize)]
pub struct Teardown {
    /// Objects removed.
    pub removed: Vec<String>,
    /// Objects left alone, with why.
    pub refused: Vec<(String, String)>,
}

/// A domain carrying kubedrill's mark.
#[derive(Debug, Clone, Serialize)]
pub struct MarkedDomain {
    /// libvirt name.
    pub name: String,
    /// The mark.
    pub mark: Instance,
    /// `running`, `shut off`, …
    pub state: String,
}

fn msg(e: virt::error::Error) -> String {
    e.message().to_string()
}

/// Map a libvirt error on object `name` during `what`.
fn object_error(what: &'static str, name: &str) -> impl Fn(virt::error::Error) -> HypervisorError {
    let name = name.to_string();
    move |e| HypervisorError::Object {
        what,
        name: name.clone(),
        message: msg(e),
    }
}

impl Hypervisor {
    /// Connect (libvirt's own error printing is switched off first).
    pub fn open(uri: &str) -> Result<Self, HypervisorError> {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| HypervisorError::Unreachable {
            uri: uri.to_string(),
            message: msg(e),
        })?;
        Ok(Self {
            conn,
            uri: uri.to_string(),
        })
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The connection (for the storage module).
    pub(super) fn conn(&self) -> &Connect {
        &self.conn
    }

    /// What the hypervisor host offers for acceleration, from libvirt's capabilities: the CPU's
    /// `vmx`/`svm` feature, and a `kvm` guest domain type (libvirt lists it only when it can
    /// open `/dev/kvm`). Used for remote hypervisors, whose CPU kubedrill cannot read itself.
    pub fn host_virt(&self) -> super::accel::HostVirt {
        let caps = self.conn.capabilities().unwrap_or_default();
        super::accel::HostVirt {
            cpu_flags: caps.contains("name='vmx'") || caps.contains("name='svm'"),
            dev_kvm: caps.contains("<domain type='kvm'"),
        }
    }

    /// Free memory on the hypervisor, MiB.
    pub fn free_memory_mib(&self) -> Option<u64> {
        self.conn.free_memory().ok().map(|b| b / (1024 * 1024))
    }

    /// Define and start the lab network; refuses a name that is already taken.
    pub fn create_network(&self, name: &str, xml_text: &str) -> Result<(), HypervisorError> {
        if self.conn.lookup_network_by_name(name).is_ok() {
            return Err(HypervisorError::NameTaken {
                kind: "network",
                name: name.to_string(),
            });
        }
        let net = self
            .conn
            .define_network_xml(xml_text)
            .map_err(object_error("define network", name))?;
        net.create().map_err(object_error("start network", name))?;
        let _ = net.set_autostart(false);
        Ok(())
    }

    /// Define and start one domain; refuses a name that is already taken.
    pub fn create_domain(
        &self,
        name: &str,
        xml_text: &str,
        start: bool,
    ) -> Result<(), HypervisorError> {
        if self.conn.lookup_domain_by_name(name).is_ok() {
            return Err(HypervisorError::NameTaken {
                kind: "domain",
                name: name.to_string(),
            });
        }
        let dom = self
            .conn
            .define_domain_xml(xml_text)
            .map_err(object_error("define domain", name))?;
        if start {
            dom.create().map_err(object_error("start domain", name))?;
        }
        Ok(())
    }

    /// kubedrill's mark on a domain, if it has one.
    pub fn mark_of(dom: &Domain) -> Option<Instance> {
        let md = dom
            .metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(NAMESPACE), 0)
            .ok()?;
        xml::parse_mark(&md)
    }

    /// Every domain carrying a kubedrill mark (any lab).
    pub fn marked_domains(&self) -> Result<Vec<MarkedDomain>, HypervisorError> {
        let doms = self
            .conn
            .list_all_domains(0)
            .map_err(|e| HypervisorError::Unreachable {
                uri: self.uri.clone(),
                message: msg(e),
            })?;
        let mut out = Vec::new();
        for d in doms {
            if let (Some(mark), Ok(name)) = (Self::mark_of(&d), d.name()) {
                out.push(MarkedDomain {
                    name,
                    mark,
                    state: state_text(&d),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove exactly the objects of this lab instance: domains whose mark matches the
    /// instance (recorded in `state` or found by mark), and the network whose UUID is recorded.
    /// Anything else with a colliding name is left alone and reported.
    pub fn teardown(&self, state: &LabState) -> Teardown {
        let mut t = Teardown::default();
        let mut names: Vec<String> = state.domains.iter().map(|d| d.name.clone()).collect();
        if let Ok(marked) = self.marked_domains() {
            for m in marked {
                if m.mark == state.instance && !names.contains(&m.name) {
                    names.push(m.name);
                }
            }
        }
        for name in names {
            let Ok(dom) = self.conn.lookup_domain_by_name(&name) else {
                continue;
            };
            match Self::mark_of(&dom) {
                Some(m) if m == state.instance => {
                    if dom.is_active().unwrap_or(false) {
                        let _ = dom.destroy();
                    }
                    // Snapshots' metadata goes with the domain (their data lives in the
                    // overlays, which are removed with the lab's directory).
                    let flags = sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                        | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;
                    match dom.undefine_flags(flags) {
                        Ok(()) => t.removed.push(format!("domain {name}")),
                        Err(e) => t.refused.push((format!("domain {name}"), msg(e))),
                    }
                }
                Some(m) => t.refused.push((
                    format!("domain {name}"),
                    format!(
                        "marked for lab `{}` instance {} (created {}), not this one",
                        m.lab, m.id, m.created
                    ),
                )),
                None => t.refused.push((
                    format!("domain {name}"),
                    "not created by kubedrill (no kubedrill metadata)".into(),
                )),
            }
        }
        // Volumes after their domains (a running domain holds them open).
        if let Some(ObjRef { name, uuid }) = &state.pool {
            match self.remove_pool(name, uuid) {
                Ok(Some(what)) => t.removed.push(what),
                Ok(None) => {}
                Err(why) => t.refused.push((format!("storage pool {name}"), why)),
            }
        }
        if let Some(ObjRef { name, uuid }) = &state.network
            && let Ok(net) = self.conn.lookup_network_by_name(name)
        {
            if net.uuid_string().ok().as_deref() == Some(uuid.as_str()) {
                if net.is_active().unwrap_or(false) {
                    let _ = net.destroy();
                }
                match net.undefine() {
                    Ok(()) => t.removed.push(format!("network {name}")),
                    Err(e) => t.refused.push((format!("network {name}"), msg(e))),
                }
            } else {
                t.refused.push((
                    format!("network {name}"),
                    "its UUID is not the one this lab created".into(),
                ));
            }
        }
        t
    }

    /// Domain state by name (`None` when absent).
    pub fn domain_state(&self, name: &str) -> Option<String> {
        self.conn
            .lookup_domain_by_name(name)
            .ok()
            .map(|d| state_text(&d))
    }

    /// Create a snapshot (memory + disk when running) of a domain of this lab.
    pub fn snapshot(&self, name: &str, snap: &str) -> Result<(), HypervisorError> {
        let dom = self.owned(name)?;
        let xml_text = format!(
            "<domainsnapshot><name>{}</name><description>kubedrill</description></domainsnapshot>",
            xml::escape(snap)
        );
        dom.create_snapshot_xml(&xml_text, 0)
            .map_err(|e| HypervisorError::Object {
                what: "snapshot domain",
                name: name.to_string(),
                message: msg(e),
            })?;
        Ok(())
    }

    /// Revert a domain of this lab to a snapshot (running state included when it was saved).
    pub fn revert(&self, name: &str, snap: &str) -> Result<(), HypervisorError> {
        let dom = self.owned(name)?;
        let s = Domain::lookup_snapshot_by_name(&dom, snap, 0).map_err(|e| {
            HypervisorError::Object {
                what: "find snapshot of domain",
                name: format!("{name}/{snap}"),
                message: msg(e),
            }
        })?;
        s.revert(0).map_err(|e| HypervisorError::Object {
            what: "revert domain",
            name: format!("{name}/{snap}"),
            message: msg(e),
        })
    }

    fn owned(&self, name: &str) -> Result<Domain, HypervisorError> {
        let dom = self
            .conn
            .lookup_domain_by_name(name)
            .map_err(|e| HypervisorError::Object {
                what: "find domain",
                name: name.to_string(),
                message: msg(e),
            })?;
        if Self::mark_of(&dom).is_none() {
            return Err(HypervisorError::NameTaken {
                kind: "domain",
                name: name.to_string(),
            });
        }
        Ok(dom)
    }
}

fn state_text(d: &Domain) -> String {
    use virt::domain::DomainState as S;
    use virt::enumutil::Enum;
    match d.state().map(|(s, _)| s) {
        Ok(Enum::Known(S::Running)) => "running",
        Ok(Enum::Known(S::Paused)) => "paused",
        Ok(Enum::Known(S::Shutoff)) => "shut off",
        Ok(Enum::Known(S::Shutdown)) => "shutting down",
        Ok(Enum::Known(S::Crashed)) => "crashed",
        Ok(_) => "other",
        Err(_) => "unknown",
    }
    .to_string()
}
