//! NoCloud seeds: per VM a `cidata` ISO with `user-data` (hostname, root's authorized key, the
//! host key kubedrill generated), `meta-data` and `network-config` (static address).

use super::definition::{Lab, VmSpec};
use super::xml;
use crate::render::{RenderError, Templates};
use russh::keys::ssh_key::{Algorithm, LineEnding, PrivateKey};
use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// Why a key or a seed ISO could not be made; the cause is kept.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Generating or encoding a key.
    #[error("ssh key")]
    Key(#[source] russh::keys::ssh_key::Error),
    /// A file or directory.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// genisoimage ran and failed.
    #[error("genisoimage failed: {0}")]
    Genisoimage(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SeedError {
    let what = what.into();
    move |source| SeedError::Io { what, source }
}

/// An SSH key pair in OpenSSH text form.
pub struct KeyPair {
    /// Private key (OpenSSH PEM-like text). Secret: written 0600, never printed.
    pub private: String,
    /// Public key line without comment (`ssh-ed25519 AAAA…`).
    pub public: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({}, <private redacted>)", self.public)
    }
}

/// A fresh ed25519 key pair.
pub fn ed25519(comment: &str) -> Result<KeyPair, SeedError> {
    let mut key =
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(SeedError::Key)?;
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(SeedError::Key)?
        .to_string();
    let public = key.public_key().to_openssh().map_err(SeedError::Key)?;
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(KeyPair { private, public })
}

/// The three seed files.
#[derive(Debug)]
pub struct Seed {
    /// cloud-config.
    pub user_data: String,
    /// Instance id and host name.
    pub meta_data: String,
    /// Netplan-style v2 network config.
    pub network_config: String,
}

#[derive(Serialize)]
struct UserData<'a> {
    lab: &'a str,
    vm: &'a str,
    authorized_key: &'a str,
    host_key_private: &'a str,
    host_key_public: &'a str,
    marker: String,
}

#[derive(Serialize)]
struct NetworkConfig {
    mac: String,
    address: String,
    gateway: String,
    mtu: u32,
}

/// Render the seed of one VM.
pub fn render(
    t: &Templates,
    lab: &Lab,
    vm: &VmSpec,
    instance: &xml::Instance,
    authorized_key: &str,
    host_key: &KeyPair,
) -> Result<Seed, RenderError> {
    let user_data = t.render(
        "cloud-init/user-data.yaml",
        &UserData {
            lab: &lab.name,
            vm: &vm.name,
            authorized_key,
            host_key_private: &host_key.private,
            host_key_public: &host_key.public,
            marker: format!(
                "lab={}\nvm={}\ninstance={}\ncreated={}\n",
                lab.name, vm.name, instance.id, instance.created
            ),
        },
    )?;
    let network_config = t.render(
        "cloud-init/network-config.yaml",
        &NetworkConfig {
            mac: xml::mac(&lab.name, &vm.name),
            address: format!("{}/{}", vm.address, lab.cidr.prefix_len()),
            gateway: lab.gateway().to_string(),
            mtu: lab.nic.mtu,
        },
    )?;
    let meta_data = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        serde_json::to_string(&format!("{}-{}", instance.id, vm.name)).unwrap_or_default(),
        serde_json::to_string(&vm.name).unwrap_or_default()
    );
    Ok(Seed {
        user_data,
        meta_data,
        network_config,
    })
}

/// Write the seed as a `cidata` ISO 9660 image (Joliet + Rock Ridge) with `genisoimage`, mode 0600
/// (it holds the VM's private host key).
pub fn write_iso(seed: &Seed, iso: &Path) -> Result<(), SeedError> {
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    for (name, text) in [
        ("user-data", &seed.user_data),
        ("meta-data", &seed.meta_data),
        ("network-config", &seed.network_config),
    ] {
        crate::files::write_private(&dir.path().join(name), text.as_bytes())
            .map_err(io(format!("write {name}")))?;
    }
    // genisoimage creates its output world-readable: build it in a 0700 directory beside the
    // destination, make it 0600, and only then rename it into place.
    let parent = iso
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".seed-")
        .tempdir_in(parent)
        .map_err(io(format!("staging directory in {}", parent.display())))?;
    let staged = staging.path().join("seed.iso");
    let out = Command::new("genisoimage")
        .arg("-quiet")
        .arg("-output")
        .arg(&staged)
        .args(["-volid", "cidata", "-joliet", "-rock"])
        .arg(dir.path().join("user-data"))
        .arg(dir.path().join("meta-data"))
        .arg(dir.path().join("network-config"))
        .output()
        .map_err(io("cannot run genisoimage (package genisoimage)"))?;
    if !out.status.success() {
        return Err(SeedError::Genisoimage(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod 0600 the seed"))?;
    }
    std::fs::rename(&staged, iso).map_err(io(format!("rename to {}", iso.display())))?;
    Ok(())
}
