//! What a phase would do, step by step: the dry run `plan` and `apply --dry-run` print.

use crate::render::RenderedFile;
use serde::Serialize;

/// Where a step happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "on", content = "hosts")]
pub enum Target {
    /// On the machine running kubedrill.
    Local,
    /// On these hosts.
    Hosts(Vec<String>),
}

/// One thing a phase does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Step {
    /// Write a file.
    Write {
        /// Where.
        target: Target,
        /// What.
        file: RenderedFile,
    },
    /// Copy a large local file (a package, a binary, a chart) unless the node has it already.
    Upload {
        /// Where.
        target: Target,
        /// The local file.
        local: String,
        /// Path on the node.
        remote: String,
        /// Its SHA-256 (the node's copy is compared with it).
        sha256: String,
    },
    /// Run a command.
    Run {
        /// Where.
        target: Target,
        /// The command line as shown (secrets only ever as file paths).
        command: String,
        /// The whole script when it is more than the line shown.
        #[serde(skip_serializing_if = "Option::is_none")]
        script: Option<String>,
    },
    /// Check or wait for something (no change).
    Check {
        /// Where.
        target: Target,
        /// What is checked.
        what: String,
    },
}

impl Step {
    /// A command shown as it is.
    pub fn run(target: Target, command: impl Into<String>) -> Step {
        Step::Run {
            target,
            command: command.into(),
            script: None,
        }
    }

    /// A check.
    pub fn check(target: Target, what: impl Into<String>) -> Step {
        Step::Check {
            target,
            what: what.into(),
        }
    }
}

/// The hosts of an iterator as a target.
pub fn hosts<'a>(it: impl Iterator<Item = &'a crate::inventory::Host>) -> Target {
    Target::Hosts(it.map(|h| h.name.clone()).collect())
}
