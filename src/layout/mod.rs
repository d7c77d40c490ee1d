//! Where kubedrill keeps things — the one owner of the on-disk layout:
//!
//! ```text
//! <state>/                       state_root(): $KUBEDRILL_STATE_DIR, /var/lib/kubedrill (root),
//!                                $XDG_STATE_HOME/kubedrill, ~/.local/state/kubedrill
//!   clusters/<label>-<hash>/     a cluster's admin.conf, journal.jsonl, reset-journal.jsonl
//!   clusters/lab-<lab>/          the same for a lab's own inventory
//!   labs/<lab>/                  a lab's record, inventory, known_hosts, seed ISOs
//!   drills/<lab>/<run>/          drill run records and reports
//!   locks/                       one flock file per cluster and lab
//! ```
//!
//! and, on nodes, [`remote`]. Commands ask here instead of joining paths themselves.

pub mod cluster;

use std::path::{Path, PathBuf};

/// kubedrill's state directory: `$KUBEDRILL_STATE_DIR`, else `/var/lib/kubedrill` as root (QEMU,
/// running as libvirt-qemu, cannot enter a 0700 `/root`), else `$XDG_STATE_HOME/kubedrill`, else
/// `~/.local/state/kubedrill`.
pub fn state_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KUBEDRILL_STATE_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/kubedrill");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("kubedrill");
    }
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/kubedrill")
}

/// `<root>/labs/`.
pub fn labs_dir(root: &Path) -> PathBuf {
    root.join("labs")
}

/// `<root>/labs/<lab>/`.
pub fn lab_dir(root: &Path, lab: &str) -> PathBuf {
    labs_dir(root).join(lab)
}

/// `<root>/clusters/`.
pub fn clusters_dir(root: &Path) -> PathBuf {
    root.join("clusters")
}

/// `<state>/drills/<lab>/`: where a lab's drill runs go unless `--runs-dir`.
pub fn drill_runs_dir(lab: &str) -> PathBuf {
    state_root().join("drills").join(lab)
}

/// `<state>/locks/`.
pub fn locks_dir() -> PathBuf {
    state_root().join("locks")
}

/// What kubedrill writes on nodes (and nothing else it writes there has another home).
pub mod remote {
    pub use crate::apply::cluster::{ADMIN_CONF, CHART_DIR, MARK_DIR};
    pub use crate::apply::node::{
        BUNDLE_DEBS, BUNDLE_IMAGES, BUNDLE_LIST, IMPORTED_MARKS, MODULES_FILE, SYSCTL_FILE,
    };
    pub use crate::render::cilium::VALUES_PATH as CILIUM_VALUES;
    pub use crate::render::kubeadm::{INIT_CONFIG_PATH, JOIN_CONFIG_PATH};
    pub use crate::ssh::node_lock::NODE_LOCK_DIR;
}
