//! `group_vars/` and `host_vars/` next to the inventory: `<name>.yml`, `<name>.yaml`, `<name>.json`,
//! a bare `<name>`, or a directory `<name>/` whose files are read in name order (recursively).

use super::source::{parse_yaml, read_text};
use super::yaml::mapping_vars;
use super::{InventoryError, RawInventory, Var};
use crate::diag::{Diagnostic, Origin};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const EXTENSIONS: &[&str] = &["yml", "yaml", "json"];

/// Load `group_vars/` and `host_vars/` from `dir` into the inventory.
pub fn load_beside(inv: &mut RawInventory, dir: &Path) -> Result<(), InventoryError> {
    for (name, files) in entries(&dir.join("group_vars"))? {
        let origin = Origin::at(&Arc::new(dir.join("group_vars").join(&name)), None);
        let group = inv.canonical_group(&name, &origin);
        for file in files {
            let vars = read_vars_file(&file)?;
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
            let vars = read_vars_file(&file)?;
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
pub fn read_vars_file(file: &Path) -> Result<Vec<(String, Var)>, InventoryError> {
    let text = read_text(file)?;
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
            collect_files(&entry, &mut files, 0)?;
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

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), InventoryError> {
    if depth > 16 {
        return Ok(());
    }
    for p in sorted_dir(dir)? {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if skip_name(name) {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out, depth + 1)?;
        } else if name
            .rsplit_once('.')
            .is_none_or(|(_, e)| EXTENSIONS.contains(&e))
        {
            out.push(p);
        }
    }
    Ok(())
}
