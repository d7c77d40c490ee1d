//! What a lab created, recorded locally before and after each libvirt call, so that `lab down`
//! can remove exactly that — also after a half-finished `lab up`.

use super::xml::Instance;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A libvirt object by name and UUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjRef {
    /// libvirt name.
    pub name: String,
    /// UUID kubedrill gave it.
    pub uuid: String,
}

/// The record of one lab instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Lab, creation time, instance id (the mark on every domain).
    pub instance: Instance,
    /// Hypervisor URI.
    pub uri: String,
    /// The lab definition file.
    pub definition: PathBuf,
    /// The lab network, once defined.
    pub network: Option<ObjRef>,
    /// The lab's storage pool (base image, overlays, seeds), once defined.
    #[serde(default)]
    pub pool: Option<ObjRef>,
    /// Domains, as they are defined.
    pub domains: Vec<ObjRef>,
    /// Directory of overlays, seeds and console logs (kubedrill's own).
    pub dir: PathBuf,
    /// Every VM's name and address, for the SSH wait after a reset.
    #[serde(default)]
    pub hosts: Vec<VmHost>,
}

/// A lab VM as SSH reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHost {
    /// Host name (as in the lab's inventory).
    pub name: String,
    /// Address on the lab network.
    pub address: String,
}

pub use crate::layout::{lab_dir, state_root};

impl LabState {
    fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Load the state of a lab, if it exists.
    pub fn load(dir: &Path) -> std::io::Result<Option<LabState>> {
        match crate::files::read_bounded(&Self::file(dir), crate::files::MAX_RECORD_BYTES) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", Self::file(dir).display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write atomically (temp file + rename), mode 0600.
    pub fn save(&self) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::files::write_private(&Self::file(&self.dir), &data)
    }
}
