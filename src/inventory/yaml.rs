//! Ansible YAML inventories: `all: { hosts: {...}, vars: {...}, children: {...} }`, nested children.

use super::source::{Node, line_of, parse_yaml};
use super::{Format, InventoryError, RawInventory, Var, groups};
use crate::diag::{Diagnostic, Origin};
use serde_saphyr::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

/// Parse a YAML inventory.
pub fn parse(text: &str, file: &Arc<PathBuf>) -> Result<RawInventory, InventoryError> {
    let root = parse_yaml(text, file)?;
    let mut inv = RawInventory::new(Arc::clone(file), Format::Yaml);
    let at = |n: &Spanned<Node>| Origin::at(file, line_of(n));
    match &root.value {
        Node::Null => {}
        Node::Map(entries) => {
            for (k, body) in entries {
                let name = group_name(k, file)?;
                let name = inv.canonical_group(&name, &at(k));
                // Top-level groups other than `all` are children of `all`.
                if name != groups::ALL {
                    inv.add_child(groups::ALL, &name, &at(k));
                }
                parse_group(&mut inv, &name, k, body, file)?;
            }
        }
        other => {
            return Err(InventoryError::Parse {
                origin: at(&root),
                message: format!(
                    "an inventory must be a mapping of groups, found {}",
                    other.kind()
                ),
            });
        }
    }
    Ok(inv)
}

fn group_name(k: &Spanned<Node>, file: &Arc<PathBuf>) -> Result<String, InventoryError> {
    k.value
        .key_string()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| InventoryError::Parse {
            origin: Origin::at(file, line_of(k)),
            message: format!("a group name must be a string, found {}", k.value.kind()),
        })
}

fn parse_group(
    inv: &mut RawInventory,
    name: &str,
    key: &Spanned<Node>,
    body: &Spanned<Node>,
    file: &Arc<PathBuf>,
) -> Result<(), InventoryError> {
    let origin = Origin::at(file, line_of(key));
    let entries = match &body.value {
        // `group:` with no body only references the group; it is defined elsewhere (or nowhere).
        Node::Null => {
            inv.group_mut(name, &origin, false);
            return Ok(());
        }
        Node::Map(entries) => entries,
        other => {
            return Err(InventoryError::Parse {
                origin,
                message: format!(
                    "group `{name}` must be a mapping with hosts/vars/children, found {}",
                    other.kind()
                ),
            });
        }
    };
    inv.group_mut(name, &origin, true);
    for (k, v) in entries {
        let here = Origin::at(file, line_of(k));
        match k.value.key_string().as_deref() {
            Some("hosts") => parse_hosts(inv, name, v, file)?,
            Some("vars") => {
                for (key, var) in mapping_vars(v, file, "vars")? {
                    inv.group_mut(name, &here, true).vars.insert(key, var);
                }
            }
            Some("children") => match &v.value {
                Node::Null => {}
                Node::Map(children) => {
                    for (ck, cbody) in children {
                        let cname = group_name(ck, file)?;
                        let corigin = Origin::at(file, line_of(ck));
                        let cname = inv.canonical_group(&cname, &corigin);
                        inv.add_child(name, &cname, &corigin);
                        parse_group(inv, &cname, ck, cbody, file)?;
                    }
                }
                other => {
                    return Err(InventoryError::Parse {
                        origin: here,
                        message: format!("`children` of `{name}` must be a mapping, found {}", other.kind()),
                    });
                }
            },
            other => inv.diagnostics.push(
                Diagnostic::warning(format!(
                    "group `{name}` has an unexpected key `{}`; only hosts, vars and children are read",
                    other.unwrap_or("?")
                ))
                .at(&here)
                .field(other.unwrap_or("?")),
            ),
        }
    }
    Ok(())
}

fn parse_hosts(
    inv: &mut RawInventory,
    group: &str,
    node: &Spanned<Node>,
    file: &Arc<PathBuf>,
) -> Result<(), InventoryError> {
    let entries = match &node.value {
        Node::Null => return Ok(()),
        Node::Map(entries) => entries,
        other => {
            return Err(InventoryError::Parse {
                origin: Origin::at(file, line_of(node)),
                message: format!(
                    "`hosts` of `{group}` must be a mapping of host names, found {}",
                    other.kind()
                ),
            });
        }
    };
    for (hk, hv) in entries {
        let origin = Origin::at(file, line_of(hk));
        let Some(pattern_text) = hk.value.key_string() else {
            return Err(InventoryError::Parse {
                origin,
                message: format!("a host name must be a string, found {}", hk.value.kind()),
            });
        };
        let names = inv
            .expand_hosts(&pattern_text)
            .map_err(|message| InventoryError::Parse {
                origin: origin.clone(),
                message,
            })?;
        let vars = match &hv.value {
            Node::Null => vec![],
            _ => mapping_vars(hv, file, &format!("host {pattern_text}"))?,
        };
        for host in names {
            inv.add_host(group, &host, &origin)
                .map_err(|message| InventoryError::Parse {
                    origin: origin.clone(),
                    message,
                })?;
            for (k, v) in &vars {
                inv.set_host_var(&host, k.clone(), v.value.clone(), v.origin.clone());
            }
        }
    }
    Ok(())
}

/// Read a mapping of variables, each with the line of its key.
pub fn mapping_vars(
    node: &Spanned<Node>,
    file: &Arc<PathBuf>,
    what: &str,
) -> Result<Vec<(String, Var)>, InventoryError> {
    match &node.value {
        Node::Null => Ok(vec![]),
        Node::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                let origin = Origin::at(file, line_of(k));
                let key = k.value.key_string().ok_or_else(|| InventoryError::Parse {
                    origin: origin.clone(),
                    message: format!(
                        "a variable name in {what} must be a string, found {}",
                        k.value.kind()
                    ),
                })?;
                Ok((
                    key,
                    Var {
                        value: v.value.to_json().into(),
                        origin,
                    },
                ))
            })
            .collect(),
        other => Err(InventoryError::Parse {
            origin: Origin::at(file, line_of(node)),
            message: format!(
                "{what} must be a mapping of variables, found {}",
                other.kind()
            ),
        }),
    }
}
