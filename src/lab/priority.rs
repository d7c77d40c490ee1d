//! The fallback for a CPU weight libvirt cannot give (a libvirtd without a cgroup CPU controller,
//! as on a host without systemd): on a local hypervisor, the QEMU processes of the VMs that must
//! yield run at a lower scheduling priority (`nice`), thread by thread — every vCPU is a thread.

use std::path::Path;

/// The nice value given to the QEMU threads of VMs that yield: a CFS weight of 110 against 1024,
/// so a busy control plane gets about nine tenths of a contended core.
pub const YIELD_NICE: i32 = 10;

/// The QEMU process of a libvirt domain on this machine: its command line names the guest as
/// `-name guest=NAME,…`.
pub fn qemu_pid(domain: &str) -> Option<u32> {
    qemu_pid_in(Path::new("/proc"), domain)
}

fn qemu_pid_in(proc_root: &Path, domain: &str) -> Option<u32> {
    let want = format!("guest={domain}");
    std::fs::read_dir(proc_root).ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .filter_map(|a| std::str::from_utf8(a).ok())
            .any(|a| a == want || a.starts_with(&format!("{want},")))
            .then_some(pid)
    })
}

/// Set the nice value of every thread of `pid`; the number of threads changed.
pub fn renice_threads(pid: u32, nice: i32) -> Result<usize, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("threads of process {pid}: {e}"))?;
    let mut n = 0;
    for t in tasks.flatten() {
        let Some(tid) = t
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::id_t>().ok())
        else {
            continue;
        };
        // SAFETY: setpriority only reads its integer arguments.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            return Err(format!(
                "thread {tid} of process {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// Lower the priority of a local domain's QEMU: the threads changed, or why not.
pub fn yield_domain(domain: &str) -> Result<usize, String> {
    let pid =
        qemu_pid(domain).ok_or_else(|| format!("no QEMU process for {domain} on this machine"))?;
    renice_threads(pid, YIELD_NICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_qemu_by_its_guest_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let add = |pid: &str, args: &[&str]| {
            let d = dir.path().join(pid);
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::write(d.join("cmdline"), args.join("\0") + "\0").expect("cmdline");
        };
        add(
            "10",
            &[
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "guest=kd-lab-cp1,debug-threads=on",
            ],
        );
        add(
            "11",
            &[
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "guest=kd-lab-w1,debug-threads=on",
            ],
        );
        add("12", &["sh", "-c", "echo guest=kd-lab-w1x"]);
        add("self", &["ignored"]);
        assert_eq!(qemu_pid_in(dir.path(), "kd-lab-w1"), Some(11));
        assert_eq!(qemu_pid_in(dir.path(), "kd-lab-cp1"), Some(10));
        assert_eq!(qemu_pid_in(dir.path(), "kd-lab-w"), None);
    }

    #[test]
    fn renices_every_thread_of_a_process() {
        // A child of ours with two threads (sh + sleep is one; use a thread here instead).
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let n = renice_threads(child.id(), 5).expect("renice");
        assert_eq!(n, 1);
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).expect("stat");
        // Field 19 is nice (after the command in parentheses).
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
        let nice: i32 = after
            .split_whitespace()
            .nth(16)
            .and_then(|v| v.parse().ok())
            .expect("nice");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(nice, 5);
        assert!(renice_threads(u32::MAX - 1, 5).is_err());
    }
}
