//! Reading inventory files: text with UTF-8 checks, and YAML into a tree that keeps line numbers.

use super::InventoryError;
use crate::diag::Origin;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files larger than this are refused: an inventory is text a person wrote.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The most bytes read for one inventory: its file plus every `group_vars/`/`host_vars/` file.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// The most files read for one inventory (`group_vars/` and `host_vars/` included).
pub const MAX_FILES: usize = 10_000;

/// What one inventory load has read so far, so a tree of many files stays bounded in total.
#[derive(Debug, Default)]
pub struct ReadBudget {
    bytes: u64,
    files: usize,
}

/// Read a whole file as UTF-8 text within the budget; errors name the file (and the line of a
/// bad byte). A FIFO, device or socket is refused rather than read forever.
pub fn read_text(path: &Path, budget: &mut ReadBudget) -> Result<String, InventoryError> {
    let refuse = |message: String| InventoryError::Parse {
        origin: Origin::at(&Arc::new(path.to_path_buf()), None),
        message,
    };
    if budget.files >= MAX_FILES {
        return Err(refuse(format!(
            "more than {MAX_FILES} inventory and vars files; kubedrill reads at most {MAX_FILES}"
        )));
    }
    let left = MAX_TOTAL_BYTES.saturating_sub(budget.bytes);
    let limit = MAX_FILE_BYTES.min(left);
    let bytes = crate::files::read_bounded(path, limit).map_err(|source| match source.kind() {
        std::io::ErrorKind::InvalidData if limit < MAX_FILE_BYTES => refuse(format!(
            "the inventory's files exceed {MAX_TOTAL_BYTES} bytes in total"
        )),
        std::io::ErrorKind::InvalidData => refuse(format!(
            "file is more than the {MAX_FILE_BYTES} bytes accepted"
        )),
        std::io::ErrorKind::InvalidInput => refuse(source.to_string()),
        _ => InventoryError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    budget.files += 1;
    budget.bytes += bytes.len() as u64;
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..good].iter().filter(|b| **b == b'\n').count() + 1;
        InventoryError::NotUtf8 {
            path: path.to_path_buf(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
        }
    })
}

/// Stack for the YAML parsing thread.
const PARSE_STACK_BYTES: usize = 256 * 1024 * 1024;

/// A YAML node with its line, as parsed by serde-saphyr.
#[derive(Debug, Clone)]
pub enum Node {
    /// `~`, `null` or empty.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer beyond i64.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string (YAML 1.2 core schema: `yes` stays a string here; see [`Node::to_json`]).
    Str(String),
    /// A sequence.
    Seq(Vec<Spanned<Node>>),
    /// A mapping, in document order.
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::UInt(v), Node::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(x) = a.next_element()? {
            items.push(x);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(kv) = a.next_entry()? {
            items.push(kv);
        }
        Ok(Node::Map(items))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// The 1-based line of a spanned node, if known.
pub fn line_of<T>(n: &Spanned<T>) -> Option<u32> {
    u32::try_from(n.referenced.line()).ok().filter(|l| *l > 0)
}

/// Parse YAML text into a node tree, the way Ansible's inventory and vars files are read.
///
/// Options: YAML 1.2 booleans at parse time (so a key `y` or `n` stays a string; PyYAML's
/// `yes`/`no`/`on`/`off` become booleans later, in [`Node::to_json`]); leading-zero numbers such
/// as `0755` stay strings; duplicate keys are errors with a line; `<<` merges are honoured;
/// nesting is bounded by serde-saphyr's recursion limit, so hostile input is an error, not a crash.
pub fn parse_yaml(text: &str, file: &Arc<PathBuf>) -> Result<Spanned<Node>, InventoryError> {
    // An empty file is an empty document (Ansible treats it as no variables).
    let text = if text.trim().is_empty() { "~" } else { text };
    // serde-saphyr bounds nesting (256 levels), but each level costs several deserializer frames:
    // parse on a thread with a generous stack so the bound, not the stack, is what stops hostile input.
    let parsed = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || {
                let options = serde_saphyr::options! {
                    strict_booleans: true,
                    leading_zero_numbers_as_strings: true,
                };
                serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options)
            })
            .map(|h| h.join())
    });
    let parsed = match parsed {
        Ok(Ok(result)) => result,
        _ => {
            return Err(InventoryError::Parse {
                origin: Origin::at(file, None),
                message: "the YAML parser could not run on this input".to_owned(),
            });
        }
    };
    parsed.map_err(|e| {
        let line = e
            .location()
            .and_then(|l| u32::try_from(l.line()).ok())
            .filter(|l| *l > 0);
        let message = e.to_string();
        // serde-saphyr's message repeats the location and a snippet; keep the first line.
        let first = message.lines().next().unwrap_or("invalid YAML").to_owned();
        InventoryError::Parse {
            origin: Origin::at(file, line),
            message: first.trim_start_matches("error: ").to_owned(),
        }
    })
}

impl Node {
    /// The node as a map key (Ansible keys are strings; numbers and booleans are stringified).
    pub fn key_string(&self) -> Option<String> {
        match self {
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            Node::UInt(u) => Some(u.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Bool(b) => Some(b.to_string()),
            Node::Null | Node::Seq(_) | Node::Map(_) => None,
        }
    }

    /// A short name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::UInt(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }

    /// Convert to a JSON value the way Ansible (PyYAML, YAML 1.1) would see it: plain
    /// `yes`/`no`/`on`/`off` in any of PyYAML's spellings become booleans.
    pub fn to_json(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Node::Str(s) => match yaml11_bool(s) {
                Some(b) => Value::Bool(b),
                None => Value::String(s.clone()),
            },
            Node::Seq(items) => Value::Array(items.iter().map(|n| n.value.to_json()).collect()),
            Node::Map(items) => Value::Object(
                items
                    .iter()
                    .filter_map(|(k, v)| Some((k.value.key_string()?, v.value.to_json())))
                    .collect(),
            ),
        }
    }
}

/// PyYAML's YAML 1.1 booleans (what Ansible reads): yes/no/on/off/true/false in lower, Title or UPPER case.
pub fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => Some(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}
