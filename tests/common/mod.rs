//! Helpers shared by the integration tests: temporary inventories and diagnostic lookups.
#![allow(dead_code)]

pub mod apiserver;
pub mod fake_api;
pub mod kube_mock;

use kubedrill::diag::{Diagnostic, Diagnostics, Severity};
use kubedrill::inventory::{self, Inventory, InventoryError};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A temporary inventory directory. The inventory files live in `<tmp>/<label>/` so that the
/// cluster label (the directory name) is stable across runs.
pub struct TempInv {
    _tmp: TempDir,
    pub dir: PathBuf,
}

impl TempInv {
    /// Write `files` (relative path, content) under a fresh directory named `label`.
    pub fn new(label: &str, files: &[(&str, &str)]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("kubedrill-test-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().join(label);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let inv = TempInv { _tmp: tmp, dir };
        for (rel, content) in files {
            inv.write(rel, content.as_bytes());
        }
        inv
    }

    /// Write one file (creating parent directories).
    pub fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        p
    }

    /// The absolute path of a file in the inventory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Load the inventory (the directory; `locate` finds the file).
    pub fn load(&self) -> Result<Inventory, InventoryError> {
        inventory::load(&self.dir)
    }

    /// Load, expecting success.
    pub fn load_ok(&self) -> Inventory {
        match self.load() {
            Ok(inv) => inv,
            Err(e) => panic!("inventory in {} should load, got: {e}", self.dir.display()),
        }
    }

    /// Load, expecting `InventoryError::Invalid`; return the diagnostics.
    pub fn load_invalid(&self) -> Diagnostics {
        match self.load() {
            Err(InventoryError::Invalid(d)) => d,
            Err(other) => panic!("expected InventoryError::Invalid, got another error: {other:?}"),
            Ok(inv) => panic!(
                "expected InventoryError::Invalid, but the inventory loaded: {:?}",
                inv.hosts.iter().map(|h| &h.name).collect::<Vec<_>>()
            ),
        }
    }
}

/// The diagnostic whose message contains `needle`; panics with every diagnostic if none does.
pub fn find<'a>(diags: &'a Diagnostics, needle: &str) -> &'a Diagnostic {
    diags
        .0
        .iter()
        .find(|d| d.message.contains(needle))
        .unwrap_or_else(|| panic!("no diagnostic mentions {needle:?}; got:\n{diags}"))
}

/// Like [`find`], also checking the severity.
pub fn find_error<'a>(diags: &'a Diagnostics, needle: &str) -> &'a Diagnostic {
    let d = find(diags, needle);
    assert_eq!(d.severity, Severity::Error, "expected an error, got {d}");
    d
}

/// Like [`find`], also checking the severity.
pub fn find_warning<'a>(diags: &'a Diagnostics, needle: &str) -> &'a Diagnostic {
    let d = find(diags, needle);
    assert_eq!(d.severity, Severity::Warning, "expected a warning, got {d}");
    d
}

/// True if some diagnostic's message contains `needle`.
pub fn mentions(diags: &Diagnostics, needle: &str) -> bool {
    diags.0.iter().any(|d| d.message.contains(needle))
}

/// Assert a diagnostic points at `file` line `line` and names `field`.
#[track_caller]
pub fn assert_at(d: &Diagnostic, file: &Path, line: Option<u32>, field: &str) {
    let origin = d
        .origin
        .as_ref()
        .unwrap_or_else(|| panic!("diagnostic has no origin: {d}"));
    assert_eq!(origin.file.as_path(), file, "wrong file in {d}");
    assert_eq!(origin.line, line, "wrong line in {d}");
    assert_eq!(d.field.as_deref(), Some(field), "wrong field in {d}");
}

/// The 1-based line of the first line of `text` containing `needle`.
#[track_caller]
pub fn line_of(text: &str, needle: &str) -> u32 {
    let idx = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is not in the text"));
    u32::try_from(idx + 1).unwrap()
}

/// Repository root (for the sample inventories and test data).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubedrill binary under test, run from the repository, never with the developer's SSH
/// agent (only the inventory's key counts).
pub fn kubedrill_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kubedrill"));
    c.current_dir(repo()).env_remove("SSH_AUTH_SOCK");
    c
}

/// Run the kubedrill binary with `args` and wait for it.
pub fn kubedrill(args: &[&str]) -> std::process::Output {
    kubedrill_command()
        .args(args)
        .output()
        .expect("run kubedrill")
}

/// Bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A two-node YAML inventory (cp1 control plane + etcd, w1 worker) on 10.0.0.0/24, with
/// `cluster_vars` written to `group_vars/k8s_cluster.yml`.
pub fn basic_inventory(cluster_vars: &str) -> TempInv {
    TempInv::new(
        "basic",
        &[
            ("hosts.yaml", BASIC_HOSTS),
            ("group_vars/k8s_cluster.yml", cluster_vars),
        ],
    )
}

/// The hosts file of [`basic_inventory`].
pub const BASIC_HOSTS: &str = "\
all:
  hosts:
    cp1:
      ansible_host: 10.0.0.1
      ip: 10.0.0.1
    w1:
      ansible_host: 10.0.0.2
      ip: 10.0.0.2
  children:
    kube_control_plane:
      hosts:
        cp1:
    kube_node:
      hosts:
        w1:
    etcd:
      hosts:
        cp1:
    k8s_cluster:
      children:
        kube_control_plane:
        kube_node:
";
pub mod chromium;
pub mod sshd;

/// Compare with a golden file under `tests/golden/`, or write it when `UPDATE_GOLDEN=1`. Returns a message on mismatch.
pub fn check_golden(rel: &str, actual: &str) -> Option<String> {
    let path = repo().join("tests/golden").join(rel);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "{}: cannot read golden file ({e}); run the test with UPDATE_GOLDEN=1 and review it",
                path.display()
            ));
        }
    };
    (expected != actual).then(|| {
        format!(
            "{}: output differs from the golden file\n{}",
            path.display(),
            line_diff(&expected, actual)
        )
    })
}

/// A compact diff: the common prefix and suffix are skipped, the middle is shown as -/+ lines.
pub fn line_diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let prefix = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let suffix = e[prefix..]
        .iter()
        .rev()
        .zip(a[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = format!("@@ line {} (- golden, + actual) @@\n", prefix + 1);
    for l in &e[prefix..e.len() - suffix] {
        out.push_str(&format!("-{l}\n"));
    }
    for l in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("+{l}\n"));
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(trailing newline differs)\n");
    }
    out.push_str("If the change is intended, run the test with UPDATE_GOLDEN=1 and commit the new goldens.\n");
    out
}
