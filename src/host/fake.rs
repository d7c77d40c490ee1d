//! A scripted node for tests of phase runners. It keeps what was run and written, answers a
//! phase's "already done?" check by whether that phase's change ran on it, and fails where a
//! test says — so interrupted runs, resumes and re-runs are exercised without VMs.
//!
//! The protocol it understands is [`crate::apply::run_change`]'s: a check is labelled
//! `<phase> check` and fails until a change ran after it; commands answered from
//! [`FakeHost::reply`] return that text; everything else succeeds.

use super::Host;
use crate::ssh::{Command, Output, SshError};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// What the fake was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A command: its label (or first line) and whole script.
    Exec {
        /// As messages show it.
        label: String,
        /// The script.
        script: String,
    },
    /// A file written.
    Upload {
        /// Path.
        path: String,
        /// Mode.
        mode: u32,
        /// Content.
        data: Vec<u8>,
    },
}

/// How a scripted failure fails.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The command exits with this status and stderr.
    Exit(u32, String),
    /// The connection drops.
    Drop,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    done: BTreeSet<String>,
    pending: Option<String>,
    files: BTreeMap<String, Vec<u8>>,
    replies: Vec<(String, String)>,
    faults: Vec<(String, Fault)>,
}

/// A node that exists only in memory.
#[derive(Debug)]
pub struct FakeHost {
    name: String,
    state: Mutex<State>,
}

/// A finished command's output (for scripted hosts in tests, too).
pub fn output(status: u32, stdout: &str, stderr: &str) -> Output {
    Output {
        status: Some(status),
        signal: None,
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
        stdout_dropped: 0,
        stderr_dropped: 0,
        stdout_gap: 0,
        stderr_gap: 0,
        duration: Duration::ZERO,
    }
}

impl FakeHost {
    /// A fresh node: nothing done on it.
    pub fn new(name: &str) -> FakeHost {
        FakeHost {
            name: name.into(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding it has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commands whose label starts with `label` print `stdout` and succeed.
    pub fn reply(&self, label: &str, stdout: &str) {
        self.state().replies.push((label.into(), stdout.into()));
    }

    /// Commands whose label starts with `label` fail so (until [`FakeHost::heal`]).
    pub fn fail(&self, label: &str, fault: Fault) {
        self.state().faults.push((label.into(), fault));
    }

    /// No more scripted failures.
    pub fn heal(&self) {
        self.state().faults.clear();
    }

    /// Mark a phase as done on this node (its check passes).
    pub fn mark_done(&self, phase: &str) {
        self.state().done.insert(phase.into());
    }

    /// Phases whose change ran here.
    pub fn done(&self) -> BTreeSet<String> {
        self.state().done.clone()
    }

    /// Everything asked so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The files written, by path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.state().files.clone()
    }

    /// The scripted failure for a command labelled so, if any.
    fn fault(&self, st: &State, label: &str) -> Option<Result<Output, SshError>> {
        let (_, f) = st
            .faults
            .iter()
            .find(|(l, _)| label.starts_with(l.as_str()))?;
        Some(match f {
            Fault::Exit(code, stderr) => Ok(output(*code, "", stderr)),
            Fault::Drop => Err(SshError::ConnectionLost {
                host: self.name.clone(),
                command: label.to_string(),
            }),
        })
    }

    /// Forget the calls (keep what is done).
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }
}

#[async_trait]
impl Host for FakeHost {
    fn name(&self) -> &str {
        &self.name
    }

    async fn exec(&self, cmd: &Command) -> Result<Output, SshError> {
        let label = cmd.label_text();
        let mut st = self.state();
        st.calls.push(Call::Exec {
            label: label.clone(),
            script: cmd.script().to_string(),
        });
        if let Some(r) = self.fault(&st, &label) {
            return r;
        }
        if let Some((_, out)) = st
            .replies
            .iter()
            .find(|(l, _)| label.starts_with(l.as_str()))
        {
            return Ok(output(0, &out.clone(), ""));
        }
        if let Some(phase) = label.strip_suffix(" check") {
            if st.done.contains(phase) {
                st.pending = None;
                return Ok(output(0, "", ""));
            }
            st.pending = Some(phase.to_string());
            return Ok(output(
                1,
                &format!("{phase} not done on {}\n", self.name),
                "",
            ));
        }
        // Checks before uploads, and directories: nothing to report.
        let one_line_mkdir = cmd.script().starts_with("mkdir -p ") && !cmd.script().contains('\n');
        if one_line_mkdir || label == "precondition" {
            return Ok(output(0, "", ""));
        }
        if let Some(p) = st.pending.take() {
            st.done.insert(p);
        }
        Ok(output(0, "", ""))
    }

    async fn upload(
        &self,
        data: &[u8],
        path: &str,
        mode: u32,
        _privileged: bool,
    ) -> Result<Output, SshError> {
        let mut st = self.state();
        st.calls.push(Call::Upload {
            path: path.into(),
            mode,
            data: data.to_vec(),
        });
        let label = format!("write {path}");
        if let Some(r) = self.fault(&st, &label) {
            return r;
        }
        st.files.insert(path.into(), data.to_vec());
        Ok(output(0, "", ""))
    }
}
