//! The Markdown summary (`summary.md`): verdict, longest interruption per probe kind, totals,
//! restarts, leak flags, versions and the values diff. Text from the record is escaped so that
//! it cannot break a table or inject markup.

use super::analysis::Analysis;
use super::record::{Outcome, RunRecord};
use super::tables::{self, Table};
use std::fmt::Write as _;

/// Render the summary.
pub fn render(r: &RunRecord, a: &Analysis) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Drill {}: {}\n",
        escape(&r.drill.name),
        verdict_word(r.verdict.outcome)
    );
    let _ = writeln!(
        s,
        "Run `{}` on lab {}, Cilium {} → {}, {} – {} ({}).\n",
        code_safe(&r.drill.run_id),
        escape(&r.lab),
        escape(&r.cilium.from),
        escape(&r.cilium.to),
        r.started,
        r.ended,
        a.duration
    );
    s.push_str("## Verdict\n\n");
    let _ = writeln!(s, "**{}**\n", verdict_word(r.verdict.outcome));
    for reason in &r.verdict.reasons {
        let _ = writeln!(s, "- {}", escape(reason));
    }
    let leaking = a.leaking_nodes();
    if !leaking.is_empty() {
        let _ = writeln!(
            s,
            "- leak flagged by this report: {}",
            leaking
                .iter()
                .map(|n| escape(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !r.verdict.reasons.is_empty() || !leaking.is_empty() {
        s.push('\n');
    }
    for t in tables::sections(r, a) {
        table(&mut s, &t);
    }
    s.push_str("## Values diff\n\n");
    if r.values_diff.is_empty() {
        s.push_str("The Helm values did not change.\n");
    } else {
        let fence = fence_for(&r.values_diff);
        let _ = writeln!(s, "{fence}diff");
        for l in &r.values_diff {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(s, "{fence}");
    }
    s
}

/// `PASS` / `FAIL`.
pub fn verdict_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
    }
}

/// Append one section: title, note, then the table or its empty text.
pub fn table(s: &mut String, t: &Table) {
    let _ = writeln!(s, "## {}\n", escape(&t.title));
    if let Some(n) = &t.note {
        let _ = writeln!(s, "{}\n", escape(n));
    }
    if t.rows.is_empty() {
        let _ = writeln!(s, "{}\n", escape(&t.empty));
        return;
    }
    let _ = writeln!(
        s,
        "| {} |",
        t.headers
            .iter()
            .map(|h| escape(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|{}", "---|".repeat(t.headers.len()));
    for r in &t.rows {
        let _ = writeln!(
            s,
            "| {} |",
            r.cells
                .iter()
                .map(|c| escape(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    s.push('\n');
}

/// Escape text for a Markdown paragraph or table cell: backslash-escape the characters that
/// start markup or end a cell, HTML-escape `<`, `>` and `&`, and fold line breaks into spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text inside a code span: backticks and line breaks are replaced (a code span cannot escape).
fn code_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '`' => '\'',
            '\n' | '\r' | '|' => ' ',
            c => c,
        })
        .collect()
}

/// A backtick fence longer than any backtick run in the lines (at least three).
fn fence_for(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .flat_map(|l| l.split(|c| c != '`').map(str::len))
        .max()
        .unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_cells() {
        assert_eq!(
            escape("<script>a|b</script> *x* [l](u) `c`"),
            "&lt;script&gt;a\\|b&lt;/script&gt; \\*x\\* \\[l\\](u) \\`c\\`"
        );
        assert_eq!(escape("a\nb"), "a b");
    }

    #[test]
    fn fence_outgrows_backticks_in_the_diff() {
        assert_eq!(fence_for(&["+a: b".into()]), "```");
        assert_eq!(fence_for(&["+x: ```y````".into()]), "`````");
    }
}
