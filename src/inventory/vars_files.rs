//! `group_vars/` and `host_vars/` next to the inventory: `<name>.yml`, `<name>.yaml`, `<name>.json`,
//! a bare `<name>`, or a directory `<name>/` whose files are read in name order (recursively).

use super::source::{ReadBudget, parse_yaml, read_text};
use super::yaml::mapping_vars;
use super::{InventoryError, RawInventory, Var};
use crate::diag::{Diagnostic, Origin};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const EXTENSIONS: &[&str] = &["yml", "yaml", "json"];

/// Load `group_vars/` and `host_vars/` from `dir` into the inventory.
pub fn load_beside(
    inv: &mut RawInventory,
    dir: &Path,
    budget: &mut ReadBudget,
) -> Result<(), InventoryError> {
    for (name, files) in entries(&dir.join("group_vars"))? {
        let origin = Origin::at(&Arc::new(dir.join("group_vars").join(&name)), None);
        let group = inv.canonical_group(&name, &origin);
        for file in files {
            let vars = read_vars_file(&file, budget)?;
            if let Some(g) = inv.groups.get_mut(&group) {
                g.file_vars.extend(vars);
            } else {
                // Kubespray's sample ships group_vars for groups many inventories lack (calico_rr):
                // Ansible ignores them, and so do we, but a typo deserves a note.
                inv.groups
                    .entry(group.clone())
                    .or_insert_with(|| super::RawGroup {
                        origin: origin.clone(),
                        defined: false,
                        hosts: Default::default(),
                        children: vec![],
                        vars: Default::default(),
                        file_vars: vars.into_iter().collect(),
                    });
            }
        }
    }
    for (name, files) in entries(&dir.join("host_vars"))? {
        for file in files {
            let vars = read_vars_file(&file, budget)?;
            match inv.hosts.get_mut(&name) {
                Some(h) => h.file_vars.extend(vars),
                None => inv.diagnostics.push(
                    Diagnostic::warning(format!(
                        "host_vars for `{name}`, which is not in the inventory"
                    ))
                    .at(&Origin::at(&Arc::new(file.clone()), None))
                    .field(name.clone()),
                ),
            }
        }
    }
    Ok(())
}

/// Read one vars file: a YAML (or JSON) mapping of variables.
pub fn read_vars_file(
    file: &Path,
    budget: &mut ReadBudget,
) -> Result<Vec<(String, Var)>, InventoryError> {
    let text = read_text(file, budget)?;
    let path = Arc::new(file.to_path_buf());
    let node = parse_yaml(&text, &path)?;
    mapping_vars(&node, &path, "a vars file")
}

/// The names in a vars directory, each with its files in load order.
fn entries(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, InventoryError> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for entry in sorted_dir(dir)? {
        let Some(fname) = entry
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        if skip_name(&fname) {
            continue;
        }
        if entry.is_dir() {
            let mut files = Vec::new();
            let mut seen = HashSet::new();
            collect_files(&entry, &mut files, &mut seen, 0)?;
            out.push((fname, files));
        } else {
            let stem = match fname.rsplit_once('.') {
                Some((s, e)) if EXTENSIONS.contains(&e) => s.to_owned(),
                Some(_) => continue,
                None => fname.clone(),
            };
            out.push((stem, vec![entry]));
        }
    }
    Ok(out)
}

fn skip_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".orig")
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>, InventoryError> {
    let io = |source| InventoryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut items: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    items.sort();
    Ok(items)
}

/// How deep `group_vars/<name>/` directories may nest.
pub const MAX_DEPTH: usize = 16;

/// Every file under `dir`, in name order. A directory reached twice (a symlink loop, or two
/// links to one place) is an error naming the path: following it would read the same files
/// again and again.
fn collect_files(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut HashSet<PathBuf>,
    depth: usize,
) -> Result<(), InventoryError> {
    let refuse = |message: String| InventoryError::Parse {
        origin: Origin::at(&Arc::new(dir.to_path_buf()), None),
        message,
    };
    let real = std::fs::canonicalize(dir).map_err(|source| InventoryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !seen.insert(real.clone()) {
        return Err(refuse(format!(
            "directory is reached twice (a symlink loop?): it is {}",
            real.display()
        )));
    }
    if seen.len() > super::source::MAX_FILES || out.len() > super::source::MAX_FILES {
        return Err(refuse(format!(
            "more than {} vars files and directories",
            super::source::MAX_FILES
        )));
    }
    for p in sorted_dir(dir)? {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if skip_name(name) {
            continue;
        }
        if p.is_dir() {
            if depth >= MAX_DEPTH {
                return Err(refuse(format!(
                    "vars directories nest more than {MAX_DEPTH} levels deep"
                )));
            }
            collect_files(&p, out, seen, depth + 1)?;
        } else if name
            .rsplit_once('.')
            .is_none_or(|(_, e)| EXTENSIONS.contains(&e))
        {
            out.push(p);
        }
    }
    Ok(())
}
