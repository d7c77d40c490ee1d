//! Public-key authentication: the inventory's key file, then ssh-agent, then `~/.ssh` defaults.

use super::{Client, SshError};
use russh::client::{AuthResult, Handle};
use russh::keys::{self, PrivateKeyWithHashAlg, agent::client::AgentClient};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default identity files, in OpenSSH's order.
pub fn default_identities() -> Vec<PathBuf> {
    let Some(home) = std::env::home_dir() else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .collect()
}

/// Authenticate `user`; on failure the error lists every method tried and why it failed.
pub(super) async fn authenticate(
    handle: &mut Handle<Client>,
    host: &str,
    user: &str,
    explicit_key: Option<&Path>,
    defaults: &[PathBuf],
    agent_socket: Option<&Path>,
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    let mut encrypted: Option<PathBuf> = None;

    if let Some(path) = explicit_key {
        match try_file(handle, user, path, &mut tried, &mut encrypted).await? {
            FileAttempt::Accepted => return Ok(()),
            FileAttempt::Tried => {}
            FileAttempt::Missing => {
                return Err(SshError::KeyFile {
                    host: host.to_string(),
                    path: path.to_path_buf(),
                    reason: "file not found (ansible_ssh_private_key_file)".into(),
                });
            }
            FileAttempt::Bad(reason) => {
                return Err(SshError::KeyFile {
                    host: host.to_string(),
                    path: path.to_path_buf(),
                    reason,
                });
            }
        }
    }

    if let Some(sock) = agent_socket {
        match AgentClient::connect_uds(sock).await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                let n = ids.len();
                for id in ids {
                    let keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                        continue;
                    };
                    let hash = handle.best_supported_rsa_hash().await?.flatten();
                    let res = handle
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await;
                    if matches!(res, Ok(AuthResult::Success)) {
                        return Ok(());
                    }
                }
                tried.push(format!("ssh-agent ({n} keys, none accepted)"));
            }
            Err(e) => tried.push(format!(
                "ssh-agent at {} (unreachable: {e})",
                sock.display()
            )),
        }
    }

    for path in defaults {
        if Some(path.as_path()) == explicit_key || !path.exists() {
            continue;
        }
        match try_file(handle, user, path, &mut tried, &mut encrypted).await? {
            FileAttempt::Accepted => return Ok(()),
            FileAttempt::Tried | FileAttempt::Missing => {}
            FileAttempt::Bad(r) => tried.push(format!("key {} ({r})", path.display())),
        }
    }

    if tried.is_empty() {
        tried.push("no key: set ansible_ssh_private_key_file, start ssh-agent, or create ~/.ssh/id_ed25519".into());
    }
    Err(SshError::Auth {
        host: host.to_string(),
        user: user.to_string(),
        tried,
        hint: encrypted.map(|p| {
            format!(
                "{} is passphrase-protected: load it into ssh-agent (`ssh-add {}`) and set SSH_AUTH_SOCK",
                p.display(),
                p.display()
            )
        }),
    })
}

enum FileAttempt {
    Accepted,
    /// Rejected or passphrase-protected (recorded in `tried`).
    Tried,
    Missing,
    Bad(String),
}

/// Try one key file, recording the outcome in `tried` (and `encrypted` for a protected key).
async fn try_file(
    handle: &mut Handle<Client>,
    user: &str,
    path: &Path,
    tried: &mut Vec<String>,
    encrypted: &mut Option<PathBuf>,
) -> Result<FileAttempt, SshError> {
    match load_key(path) {
        Ok(key) => {
            if try_key(handle, user, key).await? {
                return Ok(FileAttempt::Accepted);
            }
            tried.push(format!("key {} (rejected by server)", path.display()));
            Ok(FileAttempt::Tried)
        }
        Err(KeyLoad::Encrypted) => {
            tried.push(format!("key {} (passphrase-protected)", path.display()));
            encrypted.get_or_insert_with(|| path.to_path_buf());
            Ok(FileAttempt::Tried)
        }
        Err(KeyLoad::Missing) => Ok(FileAttempt::Missing),
        Err(KeyLoad::Bad(r)) => Ok(FileAttempt::Bad(r)),
    }
}

enum KeyLoad {
    Missing,
    Encrypted,
    Bad(String),
}

fn load_key(path: &Path) -> Result<keys::PrivateKey, KeyLoad> {
    match keys::load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(keys::Error::KeyIsEncrypted) => Err(KeyLoad::Encrypted),
        Err(keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(KeyLoad::Missing)
        }
        Err(e) => Err(KeyLoad::Bad(format!("unreadable private key: {e}"))),
    }
}

async fn try_key(
    handle: &mut Handle<Client>,
    user: &str,
    key: keys::PrivateKey,
) -> Result<bool, SshError> {
    let hash = handle.best_supported_rsa_hash().await?.flatten();
    let res = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await?;
    Ok(matches!(res, AuthResult::Success))
}
