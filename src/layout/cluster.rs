//! Where a cluster's local state lives (journal, `admin.conf`): one directory per inventory.
//!
//! `<state>/clusters/<label>-<hash>`, where the label is the name of the inventory's directory
//! (kept so that a person can tell the directories apart) and the hash is the first 12 hex digits
//! of the SHA-256 of the canonical inventory file path: two inventories in directories of the
//! same name (`a/inventory/hosts.yaml`, `b/inventory/hosts.yaml`) never share a kubeconfig or a
//! journal, so a drill never picks up another cluster's `admin.conf` and `reset` never deletes
//! it. A lab's own inventory (`<state>/labs/<lab>/inventory/hosts.yaml`) is tied to its lab
//! instead: `<state>/clusters/lab-<lab>`.
//!
//! Earlier versions kept every cluster in `<state>/clusters/<label>`. Such a directory is never
//! used or migrated, because nothing in it says which inventory it belonged to; when it holds an
//! `admin.conf`, [`ClusterState::legacy_note`] says so, naming both directories.

use crate::inventory::Inventory;
use sha2::{Digest, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// File in a cluster's state directory naming the inventory it belongs to.
pub const OWNER_FILE: &str = "inventory-path";

/// One cluster's place in the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    /// The readable label (the inventory's directory, or the lab's name).
    pub label: String,
    /// The directory's name under `<state>/clusters/`; also names the cluster's lock file.
    pub id: String,
    /// `<state>/clusters/<id>`.
    pub dir: PathBuf,
    /// The lab whose own inventory this is.
    pub lab: Option<String>,
    /// The inventory file, canonicalised (absolute when it cannot be).
    pub inventory: PathBuf,
    /// The directory earlier versions used for this label.
    legacy_dir: PathBuf,
}

impl ClusterState {
    /// The state of the inventory's cluster, under kubedrill's state directory.
    pub fn of(inv: &Inventory) -> ClusterState {
        Self::under(&super::state_root(), &inv.path, &inv.cluster_label())
    }

    /// The state of the cluster of the inventory file `inventory` (label `label`) under `root`.
    pub fn under(root: &Path, inventory: &Path, label: &str) -> ClusterState {
        let inventory = canonical(inventory);
        let clusters = super::clusters_dir(root);
        let lab = lab_of(root, &inventory);
        let id = match &lab {
            Some(lab) => format!("lab-{}", crate::lock::file_safe(lab)),
            None => {
                let digest = Sha256::digest(inventory.as_os_str().as_bytes());
                let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
                format!("{}-{hash}", crate::lock::file_safe(label))
            }
        };
        ClusterState {
            label: label.to_owned(),
            dir: clusters.join(&id),
            legacy_dir: clusters.join(label),
            id,
            lab,
            inventory,
        }
    }

    /// `<dir>/admin.conf`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }

    /// An `admin.conf` an earlier version left for this label, when this cluster has none yet:
    /// it may belong to this cluster or to another with the same label, so it is not used.
    pub fn legacy_kubeconfig(&self) -> Option<PathBuf> {
        let old = self.legacy_dir.join("admin.conf");
        (self.legacy_dir != self.dir && old.is_file() && !self.kubeconfig().exists()).then_some(old)
    }

    /// What to tell the user about [`Self::legacy_kubeconfig`].
    pub fn legacy_note(&self) -> Option<String> {
        let old = self.legacy_kubeconfig()?;
        Some(format!(
            "note: {} was written by an earlier kubedrill, which kept every cluster whose inventory directory is named `{}` in {}; it is not used (it may be another cluster's). This inventory's state is now {}: if that kubeconfig belongs to this cluster, move the directory's files there (mv {}/* {}/)",
            old.display(),
            self.label,
            self.legacy_dir.display(),
            self.dir.display(),
            self.legacy_dir.display(),
            self.dir.display()
        ))
    }

    /// Create the directory (0700) and record which inventory it belongs to, for people reading
    /// `<state>/clusters/`.
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let owner = self.dir.join(OWNER_FILE);
        let text = format!("{}\n", self.inventory.display());
        if std::fs::read_to_string(&owner).ok().as_deref() != Some(text.as_str()) {
            crate::files::write_private(&owner, text.as_bytes())?;
        }
        Ok(())
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The lab whose own inventory `inventory` is: `<root>/labs/<lab>/inventory/<file>`.
fn lab_of(root: &Path, inventory: &Path) -> Option<String> {
    let dir = inventory.parent()?;
    if dir.file_name()? != "inventory" {
        return None;
    }
    let lab_dir = dir.parent()?;
    let labs = canonical(&super::labs_dir(root));
    if lab_dir.parent()? != labs {
        return None;
    }
    lab_dir.file_name()?.to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_directory_name_different_state() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let a = t.path().join("a/prod");
        let b = t.path().join("b/prod");
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("hosts.yaml"), "all: {}\n").unwrap();
        }
        let sa = ClusterState::under(&root, &a.join("hosts.yaml"), "prod");
        let sb = ClusterState::under(&root, &b.join("hosts.yaml"), "prod");
        assert_ne!(sa.dir, sb.dir);
        assert!(sa.id.starts_with("prod-") && sa.id.len() == "prod-".len() + 12);
        assert_eq!(sa.dir.parent(), Some(root.join("clusters").as_path()));
        // The same file by another spelling is the same cluster.
        let again = ClusterState::under(&root, &a.join("../prod/./hosts.yaml"), "prod");
        assert_eq!(again.dir, sa.dir);
        assert_eq!(sa.lab, None);
    }

    #[test]
    fn a_labs_inventory_is_tied_to_the_lab() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let inv = root.join("labs/quickstart/inventory");
        std::fs::create_dir_all(&inv).unwrap();
        std::fs::write(inv.join("hosts.yaml"), "all: {}\n").unwrap();
        let s = ClusterState::under(&root, &inv.join("hosts.yaml"), "quickstart");
        assert_eq!(s.lab.as_deref(), Some("quickstart"));
        assert_eq!(s.dir, root.join("clusters/lab-quickstart"));
        // Elsewhere, `x/quickstart/inventory/hosts.yaml` is no lab's.
        let other = t.path().join("x/quickstart/inventory");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("hosts.yaml"), "all: {}\n").unwrap();
        let o = ClusterState::under(&root, &other.join("hosts.yaml"), "quickstart");
        assert_eq!(o.lab, None);
        assert_ne!(o.dir, s.dir);
    }

    #[test]
    fn an_old_shared_kubeconfig_is_named_not_used() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let d = t.path().join("prod");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("hosts.yaml"), "all: {}\n").unwrap();
        let s = ClusterState::under(&root, &d.join("hosts.yaml"), "prod");
        assert_eq!(s.legacy_note(), None);
        std::fs::create_dir_all(root.join("clusters/prod")).unwrap();
        std::fs::write(root.join("clusters/prod/admin.conf"), "x").unwrap();
        let note = s.legacy_note().expect("a note");
        assert!(
            note.contains("clusters/prod/admin.conf") && note.contains(&s.id),
            "{note}"
        );
        assert_eq!(s.kubeconfig().parent(), Some(s.dir.as_path()));
        s.prepare().unwrap();
        assert!(
            std::fs::read_to_string(s.dir.join(OWNER_FILE))
                .unwrap()
                .contains("prod/hosts.yaml")
        );
        std::fs::write(s.kubeconfig(), "y").unwrap();
        assert_eq!(
            s.legacy_note(),
            None,
            "once this cluster has its own, no note"
        );
    }
}
