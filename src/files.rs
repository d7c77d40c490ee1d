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
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o
}

/// Write `data` atomically with permission bits `mode`: a fresh temporary file beside `path`
/// (random name, `O_EXCL`, so a planted file or symlink is never followed), synced, then renamed
/// over `path` (a symlink at `path` is replaced, not followed). Creates the parent directory.
/// Every file kubedrill writes goes through here, so a crash never leaves a half-written file.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d
        }
        None => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    // tempfile creates the file 0600 with O_CREAT|O_EXCL under a random name.
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Write `data` atomically, mode 0644: the drop-in for `std::fs::write` for files that hold no
/// secrets (see [`write_atomic`]).
pub fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) -> std::io::Result<()> {
    write_atomic(path.as_ref(), data.as_ref(), 0o644)
}

/// Write `data` atomically, mode 0600 (see [`write_atomic`]).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, 0o600)
}

/// Open for appending, creating the file with mode 0600; a symlink is refused (`O_NOFOLLOW`).
pub fn append_private(path: &Path) -> std::io::Result<File> {
    private_options().create(true).append(true).open(path)
}

/// Errors from [`join_name`].
#[derive(Debug, thiserror::Error)]
#[error("`{name}` cannot name a file: {why}")]
pub struct UnsafeName {
    /// The name as given (control characters escaped).
    pub name: String,
    /// Why it was refused.
    pub why: &'static str,
}

/// `base/name` where `name` comes from input (a host, a lab): it must be one plain path
/// component, so nothing built from input can leave `base` (`..`, `/`, `a/b` are refused).
pub fn join_name(base: &Path, name: &str) -> Result<std::path::PathBuf, UnsafeName> {
    let bad = |why| UnsafeName {
        name: name.escape_debug().to_string(),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("it is a relative directory"));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(bad("it contains a path separator"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("it contains control characters"));
    }
    if name.len() > 255 {
        return Err(bad("it is longer than 255 bytes"));
    }
    Ok(base.join(name))
}

/// The largest record, manifest, catalog or known_hosts file kubedrill reads: each is written
/// by kubedrill or a person, and even a long drill's run record stays far below this.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Read a regular file of at most `limit` bytes: a FIFO, a device or an oversized file is an
/// error rather than a hang or unbounded memory.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait forever for a writer.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or socket is refused)",
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

/// [`read_bounded`] as UTF-8 text; a bad byte is an error naming its line.
pub fn read_text_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    let bytes = read_bounded(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..good].iter().filter(|b| **b == b'\n').count() + 1;
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line {line}: not UTF-8 text"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_from_input_stay_inside_their_base() {
        let base = Path::new("/state/labs");
        assert_eq!(join_name(base, "lab1").expect("plain"), base.join("lab1"));
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/",
            "/etc",
            "a/b",
            "x\u{1b}[2J",
            "a\\b",
        ] {
            assert!(join_name(base, bad).is_err(), "{bad:?} accepted");
        }
        assert!(join_name(base, &"a".repeat(256)).is_err());
    }

    #[test]
    fn writes_replace_a_planted_symlink_instead_of_following_it() {
        let d = tempfile::tempdir().expect("tmp");
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        let p = d.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &p).expect("symlink");
        write_atomic(&p, b"new", 0o644).expect("write");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"keep");
        assert_eq!(std::fs::read(&p).expect("new"), b"new");
        assert!(!std::fs::symlink_metadata(&p).expect("meta").is_symlink());
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // Appending refuses to follow a symlink too.
        let j = d.path().join("journal");
        std::os::unix::fs::symlink(&victim, &j).expect("symlink");
        assert!(append_private(&j).is_err());
    }

    #[test]
    fn reading_refuses_fifos_devices_and_oversized_files() {
        let d = tempfile::tempdir().expect("tmp");
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("c");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&fifo, 10).expect_err("fifo");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(read_bounded(Path::new("/dev/zero"), 10).is_err());
        let big = d.path().join("big");
        std::fs::write(&big, [b'x'; 11]).expect("big");
        assert!(read_bounded(&big, 10).is_err());
        assert_eq!(read_bounded(&big, 11).expect("fits").len(), 11);
        std::fs::write(&big, b"ok\n\xff").expect("bad utf8");
        let e = read_text_bounded(&big, 100).expect_err("utf8");
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn private_files_are_0600_and_replaced_atomically() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("sub/secret.conf");
        write_private(&p, b"one").expect("write");
        write_private(&p, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .expect("dir")
            .collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
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
