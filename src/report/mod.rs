//! Drill reports. A drill writes its measurements to `RUN_DIR/run.json` (a [`RunRecord`],
//! schema 1); [`write`] renders `report.html` (self-contained, inline SVG timeline) and
//! `summary.md` next to it, and [`compare`] puts several runs of one drill side by side.
//!
//! ```no_run
//! # fn main() -> Result<(), kubedrill::report::ReportError> {
//! let w = kubedrill::report::write(std::path::Path::new("runs/2026-11-20T0900"))?;
//! println!("{}", w.html.display());
//! # Ok(()) }
//! ```

pub mod analysis;
pub mod compare;
pub mod html;
pub mod leak;
pub mod markdown;
pub mod record;
pub mod svg;
pub mod tables;
pub mod time;

pub use compare::{Compared, compare};
pub use record::RunRecord;

use crate::render::{RenderError, Templates};
use analysis::Analysis;
use record::Outcome;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The run record's file name in a run directory.
pub const RUN_FILE: &str = "run.json";
/// The HTML report's file name.
pub const REPORT_HTML: &str = "report.html";
/// The Markdown summary's file name.
pub const SUMMARY_MD: &str = "summary.md";

/// Errors reading a run record or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The record could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The record is not valid JSON, or does not have the record's shape.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The record has a schema version this kubedrill does not read.
    #[error(
        "{}: run record schema {found}, but this kubedrill reads schema {}",
        path.display(),
        record::SCHEMA_VERSION
    )]
    Schema {
        /// The file.
        path: PathBuf,
        /// The `schema` value found.
        found: String,
    },
    /// The record parsed, but is inconsistent.
    #[error("{}: not a consistent run record:\n  {}", path.display(), problems.join("\n  "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `path.in.record: problem` lines.
        problems: Vec<String>,
    },
    /// A report file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A template failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// `compare` was given no runs.
    #[error("no runs to compare")]
    NoRuns,
    /// `compare` was given runs of different drills.
    #[error(
        "runs of different drills cannot be compared: {} is drill `{first_drill}`, {} is drill `{other_drill}`",
        first.display(),
        other.display()
    )]
    MixedDrills {
        /// The first run's record.
        first: PathBuf,
        /// Its drill.
        first_drill: String,
        /// The run that differs.
        other: PathBuf,
        /// Its drill.
        other_drill: String,
    },
}

/// What [`write`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The record read.
    pub record: PathBuf,
    /// `RUN_DIR/report.html`.
    pub html: PathBuf,
    /// `RUN_DIR/summary.md`.
    pub markdown: PathBuf,
    /// The run's verdict.
    pub verdict: Outcome,
    /// Nodes whose agent this report flags as leaking.
    pub leaking_nodes: Vec<String>,
}

/// Read and check a run record.
pub fn load(path: &Path) -> Result<RunRecord, ReportError> {
    let text = crate::files::read_text_bounded(path, crate::files::MAX_RECORD_BYTES).map_err(
        |source| ReportError::Read {
            path: path.to_path_buf(),
            source,
        },
    )?;
    parse(&text, path)
}

/// Parse and check a run record; `path` is only used in errors.
pub fn parse(text: &str, path: &Path) -> Result<RunRecord, ReportError> {
    // The schema first, so that a future record fails on its version and not on a field.
    #[derive(Deserialize)]
    struct Head {
        schema: Option<serde_json::Value>,
    }
    if let Ok(Head {
        schema: Some(found),
    }) = serde_json::from_str::<Head>(text)
        && found.as_u64() != Some(record::SCHEMA_VERSION)
    {
        return Err(ReportError::Schema {
            path: path.to_path_buf(),
            found: found.to_string(),
        });
    }
    let rec: RunRecord = serde_json::from_str(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let full = e.to_string();
        let suffix = format!(" at line {line} column {column}");
        ReportError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
        }
    })?;
    let problems = rec.problems();
    if !problems.is_empty() {
        return Err(ReportError::Invalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(rec)
}

/// The two report documents of a run, as strings.
pub fn render(rec: &RunRecord) -> Result<(String, String), ReportError> {
    let a = Analysis::of(rec);
    let templates = Templates::load()?;
    Ok((
        html::render(rec, &a, &templates)?,
        markdown::render(rec, &a),
    ))
}

/// Read `run_dir/run.json` and write `run_dir/report.html` and `run_dir/summary.md` (each
/// replaced atomically).
pub fn write(run_dir: &Path) -> Result<Written, ReportError> {
    let rec = load(&run_dir.join(RUN_FILE))?;
    let a = Analysis::of(&rec);
    write_loaded(run_dir, &rec, &a, &Templates::load()?)
}

pub(crate) fn write_loaded(
    run_dir: &Path,
    rec: &RunRecord,
    a: &Analysis,
    templates: &Templates,
) -> Result<Written, ReportError> {
    let html_text = html::render(rec, a, templates)?;
    let md_text = markdown::render(rec, a);
    let html = run_dir.join(REPORT_HTML);
    let markdown = run_dir.join(SUMMARY_MD);
    write_file(&html, &html_text)?;
    write_file(&markdown, &md_text)?;
    Ok(Written {
        record: run_dir.join(RUN_FILE),
        html,
        markdown,
        verdict: rec.verdict.outcome,
        leaking_nodes: a.leaking_nodes().into_iter().map(str::to_owned).collect(),
    })
}

/// Write a file through a temporary file in the same directory and a rename.
pub(crate) fn write_file(path: &Path, content: &str) -> Result<(), ReportError> {
    // A report is meant to be read by others: 0644.
    crate::files::write_atomic(path, content.as_bytes(), 0o644).map_err(|source| {
        ReportError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}
