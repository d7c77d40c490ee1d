//! A change on a node — precondition, "already done" check, files, uploads, script — and how it
//! is made ([`run_change`]) and described ([`HostChange::steps`]) from the same data, so the plan
//! shows what apply runs.

use super::Redactor;
use crate::fleet;
use crate::host::Host;
use crate::phase::{Failure, Outcome, Step, Target};
use crate::render::RenderedFile;
use crate::ssh::{Command, SshError, shell::quote};
use std::path::PathBuf;
use std::time::Duration;

/// A large file to put on a node (skipped when the node already has it with this SHA-256).
#[derive(Debug, Clone)]
pub struct Upload {
    /// Local file.
    pub local: PathBuf,
    /// Path on the node.
    pub remote: String,
    /// Expected SHA-256.
    pub sha256: String,
    /// Mode on the node.
    pub mode: u32,
}

/// What one phase does on one host.
#[derive(Debug, Clone)]
pub struct HostChange {
    /// A script that must succeed before anything is tried, and the error when it does not.
    pub precondition: Option<(String, String)>,
    /// Exits 0 when the phase is already done (the files are compared besides); otherwise
    /// prints why not.
    pub check: String,
    /// Files written (atomically, checksummed) before `apply` runs.
    pub files: Vec<RenderedFile>,
    /// Large files uploaded before `apply` runs.
    pub uploads: Vec<Upload>,
    /// The script that makes the change.
    pub apply: String,
    /// How the script is shown in progress, journal and errors.
    pub apply_label: String,
    /// Time allowed for `apply`.
    pub timeout_secs: u64,
    /// Lines of the script's stderr kept in a failure (0: the last 8).
    pub error_lines: usize,
}

impl HostChange {
    /// What making this change does, as the plan shows it: the precondition and the check
    /// (which skips everything after it), the uploads and files, then the script.
    pub fn steps(&self, target: Target) -> Vec<Step> {
        let mut v = Vec::new();
        if let Some((_, why)) = &self.precondition {
            v.push(Step::check(
                target.clone(),
                format!("precondition (else: {why})"),
            ));
        }
        for u in &self.uploads {
            v.push(Step::Upload {
                target: target.clone(),
                local: u.local.display().to_string(),
                remote: u.remote.clone(),
                sha256: u.sha256.clone(),
            });
        }
        for f in &self.files {
            v.push(Step::Write {
                target: target.clone(),
                file: f.clone(),
            });
        }
        v.push(Step::Run {
            target,
            command: self.apply_label.clone(),
            script: Some(self.apply.clone()),
        });
        v
    }
}

/// A script that exits 0 when every file has this content and mode, else names the first
/// that differs.
fn files_check(files: &[RenderedFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut s = String::new();
    // Files with secrets are removed after use: they cannot be part of "already done".
    for f in files.iter().filter(|f| !f.sensitive) {
        let hash: String = Sha256::digest(f.content.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let p = quote(&f.path);
        s.push_str(&format!(
            "[ \"$(sha256sum < {p} 2>/dev/null | cut -d' ' -f1)\" = {hash} ] && [ \"$(stat -c %a {p})\" = {:o} ] || {{ echo '{} differs'; exit 1; }}\n",
            f.mode,
            f.path.replace('\'', "")
        ));
    }
    s
}

pub(crate) fn exec_failure(
    host: &str,
    phase: &str,
    command: &str,
    e: &SshError,
    redactor: &Redactor,
) -> Failure {
    let hint: Option<String> = match e {
        SshError::CommandTimeout { .. } => Some(
            "the node may be slow or stuck; re-run to resume (finished phases are skipped)".into(),
        ),
        SshError::ConnectionLost { .. } => Some("the connection dropped; re-run to resume".into()),
        _ => None,
    };
    Failure {
        host: host.into(),
        phase: phase.into(),
        command: command.into(),
        status: None,
        stderr: redactor.apply(&e.to_string()),
        hint,
    }
}

/// One phase on one host: precondition, check, uploads, files, apply, check again.
pub async fn run_change(
    s: &dyn Host,
    phase: &str,
    c: &HostChange,
    redactor: &Redactor,
    p: &fleet::HostProgress,
) -> Result<Outcome, Failure> {
    let host = s.name().to_string();
    let fail = |command: &str, status: Option<u32>, stderr: String, hint: Option<String>| Failure {
        host: host.clone(),
        phase: phase.into(),
        command: command.into(),
        status,
        stderr: redactor.apply(&stderr),
        hint,
    };
    if let Some((script, message)) = &c.precondition {
        p.set("checking precondition");
        let o = s
            .exec(
                &Command::new(script.clone())
                    .privileged()
                    .label("precondition")
                    .idempotent(),
            )
            .await
            .map_err(|e| exec_failure(&host, phase, "precondition", &e, redactor))?;
        if !o.success() {
            return Err(fail("precondition", o.status, message.clone(), None));
        }
    }
    let check = format!("{}{}", files_check(&c.files), c.check);
    let run_check = || async {
        s.exec(
            &Command::new(check.clone())
                .privileged()
                .label(format!("{phase} check"))
                .idempotent(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, "check", &e, redactor))
    };
    p.set("checking");
    if run_check().await?.success() {
        return Ok(Outcome::Unchanged);
    }
    if !c.uploads.is_empty() {
        upload_missing(s, phase, c, redactor, p).await?;
    }
    for f in &c.files {
        p.set(&format!("writing {}", f.path));
        let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        s.exec(
            &Command::new(format!("mkdir -p {}", quote(dir)))
                .privileged()
                .idempotent(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, "mkdir", &e, redactor))?;
        let o = s
            .upload(f.content.as_bytes(), &f.path, f.mode, true)
            .await
            .map_err(|e| exec_failure(&host, phase, &format!("write {}", f.path), &e, redactor))?;
        if !o.success() {
            return Err(fail(
                &format!("write {}", f.path),
                o.status,
                o.stderr_tail(6),
                None,
            ));
        }
    }
    p.set(&c.apply_label);
    let o = s
        .exec(
            &Command::new(c.apply.clone())
                .privileged()
                .label(c.apply_label.clone())
                .timeout(Duration::from_secs(c.timeout_secs))
                // Package managers and kubeadm can be chatty; stdout is only shown on failure.
                .lossy_stdout(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, &c.apply_label, &e, redactor))?;
    if !o.success() {
        let lines = if c.error_lines == 0 { 8 } else { c.error_lines };
        let mut err = o.stderr_tail(lines);
        if err.trim().is_empty() {
            err = o
                .stdout_text()
                .lines()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
        }
        return Err(fail(&c.apply_label, o.status, err, None));
    }
    p.set("verifying");
    let v = run_check().await?;
    if !v.success() {
        return Err(fail(
            &format!("{phase} check after the change"),
            v.status,
            format!(
                "the change ran but the check still fails: {}",
                v.stdout_text().trim()
            ),
            None,
        ));
    }
    Ok(Outcome::Changed)
}

/// Upload the files the node does not have yet (one `sha256sum` round trip to find them).
async fn upload_missing(
    s: &dyn Host,
    phase: &str,
    c: &HostChange,
    redactor: &Redactor,
    p: &fleet::HostProgress,
) -> Result<(), Failure> {
    let host = s.name().to_string();
    let list: Vec<String> = c.uploads.iter().map(|u| quote(&u.remote)).collect();
    let dirs: Vec<String> = c
        .uploads
        .iter()
        .filter_map(|u| u.remote.rsplit_once('/').map(|(d, _)| quote(d)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let o = s
        .exec(
            &Command::new(format!(
                "mkdir -p {} && sha256sum {} 2>/dev/null; true",
                dirs.join(" "),
                list.join(" ")
            ))
            .privileged()
            .idempotent(),
        )
        .await
        .map_err(|e| exec_failure(&host, phase, "sha256sum", &e, redactor))?;
    let have: std::collections::HashMap<String, String> = o
        .stdout_text()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, f)| (f.to_string(), h.to_string()))
        })
        .collect();
    let missing: Vec<&Upload> = c
        .uploads
        .iter()
        .filter(|u| have.get(&u.remote) != Some(&u.sha256))
        .collect();
    for (i, u) in missing.iter().enumerate() {
        p.set(&format!(
            "uploading {}/{} {}",
            i + 1,
            missing.len(),
            u.remote
        ));
        let data = std::fs::read(&u.local).map_err(|e| Failure {
            host: host.clone(),
            phase: phase.into(),
            command: format!("read {}", u.local.display()),
            status: None,
            stderr: e.to_string(),
            hint: None,
        })?;
        let o = s
            .upload(&data, &u.remote, u.mode, true)
            .await
            .map_err(|e| {
                exec_failure(&host, phase, &format!("upload {}", u.remote), &e, redactor)
            })?;
        if !o.success() {
            return Err(Failure {
                host: host.clone(),
                phase: phase.into(),
                command: format!("upload {}", u.remote),
                status: o.status,
                stderr: o.stderr_tail(6),
                hint: None,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_check_compares_hash_and_mode() {
        let f = RenderedFile {
            path: "/etc/x.conf".into(),
            mode: 0o644,
            content: "a\n".into(),
            sensitive: false,
        };
        let s = files_check(&[f]);
        assert!(
            s.contains("87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"),
            "{s}"
        );
        assert!(s.contains("= 644 ]"), "{s}");
    }
}
