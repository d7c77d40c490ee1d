//! Entering a network namespace with `setns(2)`. It applies to the calling thread only: each
//! probe thread calls it before creating its sockets; `serve` calls it on the main thread before
//! binding and starting threads (new threads inherit the creator's namespaces).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Moves the calling thread into the network namespace at `path` (`/proc/PID/ns/net` of a pod's
/// pause container, `/run/netns/NAME`, …).
pub fn enter(path: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("netns {}: {e}", path.display()))?;
    // SAFETY: f is an open descriptor; CLONE_NEWNET makes the kernel check it is a net ns.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) => " (not a network namespace)",
            Some(libc::EPERM) => " (needs root / CAP_SYS_ADMIN)",
            _ => "",
        };
        return Err(format!("setns {}: {e}{hint}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_clear() {
        let e = enter(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(
            e.starts_with("netns /nonexistent/netns: No such file"),
            "{e}"
        );
        // A file that is not a namespace.
        let e = std::thread::spawn(|| enter(Path::new("/proc/self/status")))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(e.contains("setns /proc/self/status"), "{e}");
    }

    #[test]
    fn own_namespace_can_be_reentered() {
        // Entering the namespace we are in is a no-op that works as root; skip otherwise.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: not root");
            return;
        }
        let r = std::thread::spawn(|| enter(Path::new("/proc/self/ns/net")))
            .join()
            .unwrap();
        assert_eq!(r, Ok(()));
    }
}
