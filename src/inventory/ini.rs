//! Ansible INI inventories: `[group]` host lines with `key=value` vars, `[group:children]`,
//! `[group:vars]`, `#` and `;` comments.
//!
//! As in Ansible, values on host lines are read as Python literals (`2222` is a number, `True`
//! a boolean, `'x'` a string) while values in `:vars` sections stay strings; kubedrill's typed
//! readers accept `true`/`yes`/`1` strings for booleans and numeric strings for numbers.

use super::{Format, InventoryError, RawInventory, groups};
use crate::diag::Origin;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

enum Section {
    Hosts(String),
    Children(String),
    Vars(String),
}

/// Parse an INI inventory.
pub fn parse(text: &str, file: &Arc<PathBuf>) -> Result<RawInventory, InventoryError> {
    let mut inv = RawInventory::new(Arc::clone(file), Format::Ini);
    let mut section = Section::Hosts(groups::UNGROUPED.to_owned());
    for (idx, raw_line) in text.lines().enumerate() {
        let line_no = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let origin = Origin::at(file, Some(line_no));
        let err = |message: String| InventoryError::Parse {
            origin: origin.clone(),
            message,
        };
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let header = strip_comment(line).trim();
            let inner = header
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .ok_or_else(|| err(format!("section header `{header}` must end with `]`")))?;
            let (name, kind) = match inner.split_once(':') {
                Some((n, k)) => (n.trim(), Some(k.trim())),
                None => (inner.trim(), None),
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(err(format!("`[{inner}]` is not a valid group name")));
            }
            let name = inv.canonical_group(name, &origin);
            section = match kind {
                None => {
                    inv.group_mut(&name, &origin, true);
                    Section::Hosts(name)
                }
                Some("children") => {
                    inv.group_mut(&name, &origin, true);
                    Section::Children(name)
                }
                Some("vars") => Section::Vars(name),
                Some(other) => {
                    return Err(err(format!(
                        "section `[{inner}]`: `:{other}` is not a section kind (use :children or :vars)"
                    )));
                }
            };
            continue;
        }
        match &section {
            Section::Hosts(group) => {
                let tokens = split_tokens(line).map_err(&err)?;
                let Some((host_pattern, rest)) = tokens.split_first() else {
                    continue;
                };
                let hosts = inv.expand_hosts(host_pattern).map_err(&err)?;
                let mut vars = Vec::new();
                for tok in rest {
                    let (k, v) = tok.split_once('=').ok_or_else(|| {
                        err(format!(
                            "host `{host_pattern}`: `{tok}` is not key=value (one host per line, variables after it)"
                        ))
                    })?;
                    if k.is_empty() {
                        return Err(err(format!(
                            "host `{host_pattern}`: `{tok}` has no variable name"
                        )));
                    }
                    vars.push((k.to_owned(), python_literal(v)));
                }
                let group = group.clone();
                for host in hosts {
                    inv.add_host(&group, &host, &origin).map_err(&err)?;
                    for (k, v) in &vars {
                        inv.set_host_var(&host, k.clone(), v.clone(), origin.clone());
                    }
                }
            }
            Section::Children(parent) => {
                let child = strip_comment(line).trim();
                if child.contains(char::is_whitespace) {
                    return Err(err(format!(
                        "`{child}`: one child group name per line in [{parent}:children]"
                    )));
                }
                let parent = parent.clone();
                let child = inv.canonical_group(child, &origin);
                if child == groups::ALL {
                    return Err(err("`all` cannot be a child group".to_owned()));
                }
                inv.add_child(&parent, &child, &origin);
            }
            Section::Vars(group) => {
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| err(format!("`{line}` in [{group}:vars] is not key=value")))?;
                let k = k.trim();
                if k.is_empty() || k.contains(char::is_whitespace) {
                    return Err(err(format!("`{k}` is not a variable name")));
                }
                let value = Value::String(unquote(strip_comment(v).trim()).to_owned());
                let group = group.clone();
                inv.group_mut(&group, &origin, false).vars.insert(
                    k.to_owned(),
                    super::Var {
                        value: value.into(),
                        origin: origin.clone(),
                    },
                );
            }
        }
    }
    Ok(inv)
}

/// Drop a trailing ` # comment` or ` ; comment` (outside quotes).
fn strip_comment(s: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#' | ';') if prev_space => return &s[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    s
}

/// Split a host line into shell-like tokens: whitespace separates, quotes group, `#`/`;` after
/// whitespace starts a comment.
fn split_tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some(_) => {
                if c == '\\'
                    && let Some(n) = chars.next()
                {
                    cur.push(c);
                    cur.push(n);
                    continue;
                }
                cur.push(c);
            }
            None if c.is_whitespace() => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            None if (c == '#' || c == ';') && !in_token => break,
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                cur.push(c);
                in_token = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in `{line}`"));
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

/// Remove one level of matching quotes.
fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// Read a host-line value as Ansible does (`ast.literal_eval`, falling back to the string).
fn python_literal(v: &str) -> Value {
    let unq = unquote(v);
    if unq.len() != v.len() {
        // Quoted: a string, with backslash escapes of the quote kept simple.
        return Value::String(unq.replace("\\\"", "\"").replace("\\'", "'"));
    }
    match v {
        "True" => return Value::Bool(true),
        "False" => return Value::Bool(false),
        "None" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        // Python rejects leading zeros in ints ("0755" stays a string for Ansible).
        if !(v.len() > 1 && v.trim_start_matches(['-', '+']).starts_with('0')) {
            return Value::from(i);
        }
    }
    if (v.contains('.') || v.contains('e') || v.contains('E'))
        && let Ok(f) = v.parse::<f64>()
        && f.is_finite()
        && v.chars().all(|c| c.is_ascii_digit() || ".eE+-".contains(c))
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    if ((v.starts_with('[') && v.ends_with(']')) || (v.starts_with('{') && v.ends_with('}')))
        && let Ok(j) = serde_json::from_str::<Value>(&v.replace('\'', "\""))
    {
        return j;
    }
    Value::String(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_literals() {
        let t = split_tokens(r#"cp1 ansible_host=10.0.0.1 note="a b # c" x=1 # trailing"#).unwrap();
        assert_eq!(
            t,
            ["cp1", "ansible_host=10.0.0.1", r#"note="a b # c""#, "x=1"]
        );
        assert_eq!(python_literal("2222"), Value::from(2222));
        assert_eq!(python_literal("0755"), Value::from("0755"));
        assert_eq!(python_literal("True"), Value::Bool(true));
        assert_eq!(python_literal("'22'"), Value::from("22"));
        assert_eq!(python_literal("10.0.0.1"), Value::from("10.0.0.1"));
        assert_eq!(python_literal("1.5"), Value::from(1.5));
        assert_eq!(python_literal("['a','b']"), serde_json::json!(["a", "b"]));
        assert!(split_tokens("h x='unclosed").is_err());
    }

    #[test]
    fn comments_outside_quotes_only() {
        assert_eq!(strip_comment("a=1 # c"), "a=1 ");
        assert_eq!(strip_comment("a='#x'"), "a='#x'");
        assert_eq!(strip_comment("a=b#c"), "a=b#c");
    }
}
