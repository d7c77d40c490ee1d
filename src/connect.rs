//! How kubedrill reaches nodes: host-key settings (command line, inventory variables,
//! `~/.ssh/known_hosts`), the connect timeout, SSH destinations from the inventory, and one
//! function that connects a fleet with progress — shared by every command that talks to nodes.

use crate::diag::Diagnostic;
use crate::fleet::{self, Connector, HostOutcome, Progress};
use crate::inventory::Inventory;
use crate::ssh::{Destination, HostKeyMode, HostKeyPolicy, Options, Session, SshError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Inventory variable naming the known_hosts file (relative to the inventory's directory).
pub const KNOWN_HOSTS_VAR: &str = "kubedrill_known_hosts";
/// Inventory variable choosing the host-key mode (`strict`, `accept-new`, `off`).
pub const HOST_KEY_MODE_VAR: &str = "kubedrill_host_key_checking";

/// Where host keys are checked, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostKeySettings {
    /// The known_hosts file.
    pub file: PathBuf,
    /// Mode.
    pub mode: HostKeyMode,
    /// Where the file setting came from (`--known-hosts`, the inventory variable, or default).
    pub source: String,
}

/// Resolve host-key settings: command line, then inventory variables, then `~/.ssh/known_hosts`
/// in strict mode. The variables are read from the first control plane (set them in `all`).
pub fn host_key_settings(
    inv: &Inventory,
    cli_file: Option<&Path>,
    cli_mode: Option<HostKeyMode>,
) -> Result<HostKeySettings, Diagnostic> {
    let vars = &inv.first_control_plane().vars;
    let inv_dir = inv.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (file, source) = match cli_file {
        Some(f) => (f.to_path_buf(), "--known-hosts".to_string()),
        None => match vars.get(KNOWN_HOSTS_VAR) {
            Some(v) => {
                let s = v.string(KNOWN_HOSTS_VAR)?;
                let p = expand_home(&s);
                let p = if p.is_relative() { inv_dir.join(p) } else { p };
                (p, format!("inventory variable {KNOWN_HOSTS_VAR}"))
            }
            None => {
                let home = std::env::home_dir().ok_or_else(|| {
                    Diagnostic::error("no home directory for ~/.ssh/known_hosts")
                        .hint("pass --known-hosts FILE")
                })?;
                (home.join(".ssh/known_hosts"), "default".to_string())
            }
        },
    };
    let mode = match cli_mode {
        Some(m) => m,
        None => match vars.get(HOST_KEY_MODE_VAR) {
            Some(v) => v
                .string(HOST_KEY_MODE_VAR)?
                .parse()
                .map_err(|e: String| Diagnostic::error(e).at(&v.origin).field(HOST_KEY_MODE_VAR))?,
            None => HostKeyMode::Strict,
        },
    };
    Ok(HostKeySettings { file, mode, source })
}

fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(s),
    }
}

/// SSH destinations for every node and the bastion.
pub fn destinations(inv: &Inventory) -> (Vec<Destination>, Option<Destination>) {
    let hosts = inv
        .hosts
        .iter()
        .map(|h| Destination::from_target(&h.name, &h.ssh))
        .collect();
    let bastion = inv
        .bastion
        .as_ref()
        .map(|b| Destination::from_target(&b.name, &b.ssh));
    (hosts, bastion)
}

/// Everything needed to open sessions: host keys and the connect timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// known_hosts and mode.
    pub host_keys: HostKeySettings,
    /// Connect, handshake and authentication, per host.
    pub connect_timeout: Duration,
}

impl SshSettings {
    /// The session options and a connector through the inventory's bastion, if any.
    pub fn connector(
        &self,
        inv: &Inventory,
    ) -> Result<(Vec<Destination>, Arc<Connector>), SshError> {
        let policy = Arc::new(HostKeyPolicy::load(
            &self.host_keys.file,
            self.host_keys.mode,
        )?);
        let mut o = Options::new(policy);
        o.connect_timeout = self.connect_timeout;
        let (dests, bastion) = destinations(inv);
        Ok((dests, Connector::new(Arc::new(o), bastion)))
    }
}

/// One session per host (the `only` hosts, or all), `concurrency` at a time, with progress;
/// results in inventory order. Errors only when the known_hosts file cannot be used.
pub async fn connect_all(
    inv: &Inventory,
    ssh: &SshSettings,
    only: &[String],
    concurrency: usize,
    progress: &Progress,
) -> Result<Vec<HostOutcome<Arc<Session>, SshError>>, SshError> {
    let (dests, connector) = ssh.connector(inv)?;
    let inputs = dests
        .into_iter()
        .filter(|d| only.is_empty() || only.contains(&d.name))
        .map(|d| (d.name.clone(), d))
        .collect();
    Ok(fleet::run(
        "connecting",
        inputs,
        concurrency,
        progress,
        |_: &Arc<Session>| "connected".into(),
        |dest, _p| {
            let c = connector.clone();
            async move { c.connect(dest).await }
        },
    )
    .await)
}
