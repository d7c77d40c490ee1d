//! Diagnostics: errors and warnings that point at a file, a line and a field.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Text from outside kubedrill (host names, inventory values, what nodes print) made safe for a
/// terminal: control characters become visible escapes, so a node or an inventory cannot move
/// the cursor, clear the screen, retitle the window or hide text in what kubedrill prints.
///
/// Escaped: C0 controls (`\x1b` for ESC, `\r`, …) except `\n` and `\t`, DEL (`\x7f`), C1
/// controls U+0080–U+009F (`\u{9b}`: a lone CSI starts an escape sequence on many terminals),
/// and the Unicode bidirectional overrides and isolates (`\u{202e}`), which reorder what is
/// shown. `\n` and `\t` stay because error texts and journal excerpts are multi-line; use
/// [`escape_terminal_line`] where one line is expected. Plain text is returned as is.
pub fn escape_terminal(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// Like [`escape_terminal`], and `\n` and `\t` are escaped as well: for table cells,
/// progress lines and other places where text must stay on one line.
pub fn escape_terminal_line(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// A `Display` wrapper that prints its text through [`escape_terminal`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_terminal(self.0))
    }
}

fn needs_escape(c: char, multi_line: bool) -> bool {
    match c {
        '\n' | '\t' => !multi_line,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        // Bidi embeddings/overrides (LRE…RLO) and isolates (LRI…PDI).
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn escape_with(s: &str, multi_line: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| needs_escape(c, multi_line)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !needs_escape(c, multi_line) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// Pretty JSON that is also safe on a terminal. serde_json escapes C0 controls but writes DEL,
/// C1 controls (U+0080–U+009F) and bidi overrides raw; here they become `\uXXXX` as well. The
/// document means exactly the same to any JSON reader.
pub fn json_pretty(v: &impl Serialize) -> serde_json::Result<String> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        TerminalSafeJson(serde_json::ser::PrettyFormatter::new()),
    );
    v.serialize(&mut ser)?;
    // serde_json writes only UTF-8 (input is `str`, escapes are ASCII).
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A [`serde_json::ser::PrettyFormatter`] whose strings escape what [`escape_terminal`] does.
struct TerminalSafeJson<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for TerminalSafeJson<'_> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            // C0 never reaches here: serde_json escapes it before calling this.
            if needs_escape(c, true) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Where a value or declaration came from: a file and, where the format has one, a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The file the value was read from.
    pub file: Arc<PathBuf>,
    /// 1-based line, when the format gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Origin {
    /// An origin at a given line of a file.
    pub fn at(file: &Arc<PathBuf>, line: Option<u32>) -> Self {
        Origin {
            file: Arc::clone(file),
            line: line.filter(|l| *l > 0),
        }
    }

    /// An origin with no file: a built-in default or a derived value.
    pub fn builtin(what: &str) -> Self {
        Origin {
            file: Arc::new(PathBuf::from(format!("<{what}>"))),
            line: None,
        }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // File names come from the command line and from include lists in inventories.
        let file = self.file.display().to_string();
        let file = escape_terminal_line(&file);
        match self.line {
            Some(line) => write!(f, "{file}:{line}"),
            None => write!(f, "{file}"),
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Work cannot go on.
    Error,
    /// Work can go on, but the user should know.
    Warning,
}

/// One finding about the input, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File and line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The field (variable, group or host) the finding is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A new error.
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            origin: None,
            field: None,
            message: message.into(),
            hint: None,
        }
    }

    /// A new warning.
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    /// Attach where the finding is.
    pub fn at(mut self, origin: &Origin) -> Self {
        self.origin = Some(origin.clone());
        self
    }

    /// Attach where the finding is, if known.
    pub fn at_opt(mut self, origin: Option<&Origin>) -> Self {
        self.origin = origin.cloned();
        self
    }

    /// Name the field the finding is about.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Say how to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: ")?;
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        // Messages and fields quote inventory values and names: escaped for the terminal.
        if let Some(field) = &self.field {
            write!(f, "`{}`: ", escape_terminal_line(field))?;
        }
        write!(f, "{}", Escaped(&self.message))?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {})", Escaped(h))?;
        }
        Ok(())
    }
}

/// A list of findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Add a finding.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// True if any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Append all findings of another list.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// True when there is no finding.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "node1: kernel 6.1.0-28-amd64 · ok\n\tnext line, ünïcödé";
        assert!(matches!(escape_terminal(s), Cow::Borrowed(_)));
        assert_eq!(escape_terminal(s), s);
    }

    #[test]
    fn controls_become_visible() {
        assert_eq!(escape_terminal("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape_terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(
            escape_terminal("x\u{7f}\u{0}\u{7}\r"),
            "x\\x7f\\x00\\x07\\r"
        );
        assert_eq!(
            escape_terminal("\u{85}\u{9f}\u{a0}"),
            "\\u{85}\\u{9f}\u{a0}"
        );
        assert_eq!(escape_terminal("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape_terminal("l1\nl2\tx"), "l1\nl2\tx");
        assert_eq!(escape_terminal_line("l1\nl2\tx"), "l1\\nl2\\tx");
        assert_eq!(
            Escaped("\x1b]0;title\x07").to_string(),
            "\\x1b]0;title\\x07"
        );
        let out = escape_terminal("\x1b\u{9b}\u{80}\x7f");
        assert!(!out.chars().any(|c| c.is_control()), "{out}");
    }

    #[test]
    fn json_escapes_c1_and_bidi_and_means_the_same() {
        let v = serde_json::json!({"release": "6.1\u{1b}[2J\u{9b}1m\u{7f}\u{202e}x", "n": [1, 2]});
        let text = json_pretty(&v).expect("json");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
        assert!(!text.contains('\u{202e}'), "{text}");
        assert!(
            text.contains(r#""6.1\u001b[2J\u009b1m\u007f\u202ex""#),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, v);
        // Plain documents look exactly as serde_json's pretty printer writes them.
        let plain = serde_json::json!({"a": [1, {"b": "c"}], "d": {}, "e": []});
        assert_eq!(
            json_pretty(&plain).expect("json"),
            serde_json::to_string_pretty(&plain).expect("json")
        );
    }

    #[test]
    fn diagnostics_escape_what_they_quote() {
        let d = Diagnostic::error("host `a\x1b[2J` is not valid")
            .field("x\u{9b}y")
            .hint("rename \x1b]0;t\x07");
        let text = d.to_string();
        assert!(!text.chars().any(|c| c.is_control()), "{text}");
        assert!(text.contains("a\\x1b[2J"), "{text}");
        assert!(text.contains("`x\\u{9b}y`"), "{text}");
    }
}

/// An error with every cause under it, `outer: cause: cause` — what `{:#}` prints for an
/// `anyhow::Error`, for the places that print a library error themselves.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        // Some errors repeat their cause in their own message; say it once.
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod chain_tests {
    #[test]
    fn chain_keeps_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("seed")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(super::chain(&e), "seed: disk full");
        #[derive(Debug, thiserror::Error)]
        #[error("seed: disk full")]
        struct Repeats(#[source] std::io::Error);
        assert_eq!(
            super::chain(&Repeats(std::io::Error::other("disk full"))),
            "seed: disk full"
        );
    }
}
