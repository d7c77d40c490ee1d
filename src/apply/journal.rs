//! The apply journal: one JSON line per phase and host outcome, appended as it happens, at
//! `<state>/clusters/<cluster>/journal.jsonl`. It never holds secrets (errors are redacted
//! before they get here). A new apply reads it to say where the previous one stopped.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Run id (start time, unix ms).
    pub run: u64,
    /// When (unix ms).
    pub at_ms: u64,
    /// Phase name, or `apply` for run start/finish lines.
    pub phase: String,
    /// Host, or empty for run lines.
    pub host: String,
    /// `started`, `unchanged`, `changed`, `skipped`, `failed`, `finished`, `stopped`.
    pub outcome: String,
    /// Seconds the step took.
    #[serde(default)]
    pub secs: f64,
    /// What failed (redacted), or a note.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    run: u64,
    /// `apply` or `reset`: the name of the run's start and end entries.
    kind: &'static str,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Where the previous apply stopped, when it did not finish.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    /// The run.
    pub run: u64,
    /// Its last failed entry, if any (else it was interrupted).
    pub failed: Option<Entry>,
    /// The last phase it recorded.
    pub last_phase: String,
}

impl Journal {
    /// Open (create) the journal in `dir` for a new run.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        Journal::open_kind(dir, "apply")
    }

    /// The journal of another kind of run (`reset`: `reset-journal.jsonl`), so that a reset
    /// is never mistaken for an unfinished apply.
    pub fn open_kind(dir: &Path, kind: &'static str) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let file = if kind == "apply" {
            "journal.jsonl".to_string()
        } else {
            format!("{kind}-journal.jsonl")
        };
        Ok(Journal {
            path: dir.join(file),
            run: now_ms(),
            kind,
        })
    }

    /// `apply` or `reset`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This run's id.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Every entry so far (unreadable lines, e.g. a torn last line after a crash, are skipped).
    pub fn entries(&self) -> Vec<Entry> {
        // Bounded: a journal grows by a few lines per phase and run.
        crate::files::read_bounded(&self.path, crate::files::MAX_RECORD_BYTES)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The most recent earlier run, if it did not finish.
    pub fn unfinished(&self) -> Option<Unfinished> {
        let entries = self.entries();
        let last = entries.iter().rev().find(|e| e.run != self.run)?.run;
        let of_run: Vec<&Entry> = entries.iter().filter(|e| e.run == last).collect();
        if of_run
            .iter()
            .any(|e| e.phase == self.kind && e.outcome == "finished")
        {
            return None;
        }
        Some(Unfinished {
            run: last,
            failed: of_run
                .iter()
                .rev()
                .find(|e| e.outcome == "failed")
                .map(|e| (*e).clone()),
            last_phase: of_run
                .iter()
                .rev()
                .find(|e| e.phase != self.kind)
                .map(|e| e.phase.clone())
                .unwrap_or_else(|| "start".into()),
        })
    }

    /// Append one entry (flushed, so an interrupted apply leaves its record).
    pub fn record(&self, phase: &str, host: &str, outcome: &str, secs: f64, detail: &str) {
        let e = Entry {
            run: self.run,
            at_ms: now_ms(),
            phase: phase.into(),
            host: host.into(),
            outcome: outcome.into(),
            secs: (secs * 1000.0).round() / 1000.0,
            detail: detail.into(),
        };
        let Ok(line) = serde_json::to_string(&e) else {
            return;
        };
        // After a crash mid-write the file may end in a torn line: start on a fresh one.
        let torn = std::fs::read(&self.path).is_ok_and(|b| b.last().is_some_and(|c| *c != b'\n'));
        if let Ok(mut f) = crate::files::append_private(&self.path) {
            let _ = writeln!(f, "{}{line}", if torn { "\n" } else { "" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_run_is_found_and_finished_one_is_not() {
        let d = tempfile::tempdir().expect("tmp");
        let mut j = Journal::open(d.path()).expect("open");
        j.run = 1;
        j.record("apply", "", "started", 0.0, "");
        j.record("node/sysctl", "cp1", "changed", 0.2, "");
        j.record("node/swap", "w1", "failed", 0.1, "swapoff: exit 1");
        let mut k = Journal::open(d.path()).expect("open");
        k.run = 2;
        let u = k.unfinished().expect("unfinished");
        assert_eq!(u.run, 1);
        assert_eq!(u.last_phase, "node/swap");
        assert_eq!(u.failed.map(|e| e.host), Some("w1".to_string()));
        k.record("apply", "", "finished", 1.0, "");
        let mut l = Journal::open(d.path()).expect("open");
        l.run = 3;
        assert_eq!(l.unfinished(), None);
        // A torn last line is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(l.path())
            .and_then(|mut f| f.write_all(b"{\"run\":3,\"at"))
            .expect("append");
        assert_eq!(l.entries().len(), 4);
        l.record("node/swap", "cp1", "changed", 0.1, "");
        assert_eq!(
            l.entries().len(),
            5,
            "a record after a torn line is readable"
        );
    }
}
