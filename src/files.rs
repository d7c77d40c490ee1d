//! Files that hold secrets or private state (keys, kubeconfigs, lab state, journals,
//! known_hosts): created with mode 0600 from the first byte, never briefly readable by others.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Write `data` atomically (a temporary file beside it, synced, then renamed), mode 0600.
/// Creates the parent directory.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// Open for appending, creating the file with mode 0600.
pub fn append_private(path: &Path) -> std::io::Result<File> {
    private_options().create(true).append(true).open(path)
}

/// Read a regular file of at most `limit` bytes: a FIFO, a device or an oversized file is an
/// error rather than a hang or unbounded memory.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut data = Vec::with_capacity(meta.len().min(limit) as usize);
    f.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {limit} bytes allowed"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_and_replaced_atomically() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("sub/secret.conf");
        write_private(&p, b"one").expect("write");
        write_private(&p, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!d.path().join("sub/secret.conf.tmp").exists());
        let j = d.path().join("journal");
        append_private(&j)
            .and_then(|mut f| f.write_all(b"x\n"))
            .expect("append");
        append_private(&j)
            .and_then(|mut f| f.write_all(b"y\n"))
            .expect("append");
        assert_eq!(std::fs::read_to_string(&j).expect("read"), "x\ny\n");
        assert_eq!(
            std::fs::metadata(&j).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
}
