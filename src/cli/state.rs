//! State kept beside the inventory between runs, following Kubespray's `credentials/` directory.

use anyhow::Context;
use kubedrill::inventory::Inventory;
use kubedrill::spec::cilium::HashSeed;
use kubedrill::spec::{ClusterSpec, Source, SpecContext};
use std::io::Write;
use std::path::PathBuf;

/// `credentials/kubedrill-maglev-hash-seed` beside the inventory file.
pub fn seed_path(inv_path: &std::path::Path) -> PathBuf {
    inv_path
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join("credentials")
        .join("kubedrill-maglev-hash-seed")
}

/// Read saved state for the spec; a corrupt seed file is an error naming the file.
pub fn context(inv: &Inventory) -> anyhow::Result<SpecContext> {
    let path = seed_path(&inv.path);
    let stored_hash_seed = match std::fs::read_to_string(&path) {
        Ok(text) => Some((
            HashSeed::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            path,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(SpecContext { stored_hash_seed })
}

/// Save a freshly generated Maglev seed (mode 0600) so every later run uses the same one.
pub fn save_generated_seed(spec: &ClusterSpec, inv: &Inventory) -> anyhow::Result<Option<PathBuf>> {
    let generated = spec
        .provenance
        .iter()
        .any(|p| p.setting == "maglev_hash_seed" && p.source == Source::Generated);
    if !generated {
        return Ok(None);
    }
    let path = seed_path(&inv.path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_0600()
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", spec.cilium_intent.maglev_hash_seed.as_str())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path))
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}
