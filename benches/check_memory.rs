//! Benchmark: peak memory of `kubedrill check` against a node that streams 1.5 GB (target:
//! under 64 MiB), issue 12.
//!
//! A real local `sshd` (tests/common/sshd.rs: 127.0.1.x, root required) answers the facts script
//! with 1.5 GB, once on stdout (parsed output: kubedrill must refuse it, naming the limit) and
//! once on stderr (shown output: head and tail kept). The kubedrill binary of this build runs
//! as a child process; its peak resident set (`ru_maxrss` from `wait4`, the kernel's VmHWM) and
//! wall time are printed. Exits 1 if a run misses the target or does not say what it dropped.
//!
//! Run with `cargo bench --bench check_memory` (as root, openssh-server installed).

#[path = "../tests/common/sshd.rs"]
mod sshd;

use sshd::SshLab;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STREAM_BYTES: u64 = 1_500_000_000;
const TARGET_KIB: i64 = 64 * 1024;

struct Measure {
    code: Option<i32>,
    max_rss_kib: i64,
    wall: Duration,
    stdout: String,
}

/// Run `kubedrill check` on the lab and measure it.
// The child is reaped with `wait4` (which also returns its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_check(lab: &SshLab) -> Measure {
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_kubedrill"))
        .args(["check", "--gather-timeout", "600", "-i"])
        .arg(lab.inventory_path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kubedrill");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped; the out-pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    Measure {
        code: libc::WIFEXITED(status).then_some(libc::WEXITSTATUS(status)),
        max_rss_kib: usage.ru_maxrss,
        wall: t.elapsed(),
        stdout: reader.join().unwrap_or_default(),
    }
}

/// Make node 0 answer the facts script with `body`.
fn hostile(lab: &mut SshLab, body: &str) {
    let path = lab.dir().join("stream.sh");
    let script = format!(
        "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n*'sh -s'*)\n{body}\n;;\n\
         *) exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\" ;;\nesac\n"
    );
    std::fs::write(&path, script).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    lab.set_host_config(0, &format!("ForceCommand {}", path.display()));
}

fn main() {
    if let Err(why) = sshd::available() {
        eprintln!("check_memory: cannot run: {why}");
        std::process::exit(1);
    }
    let mut lab = SshLab::start(1);
    let cases = [
        (
            "stdout (parsed: refused)",
            format!("cat >/dev/null; yes 'kubedrill-facts 1' | head -c {STREAM_BYTES}; exit 0"),
            format!("printed {STREAM_BYTES} bytes on stdout"),
        ),
        (
            "stderr (shown: head+tail)",
            format!(
                "cat >/dev/null; echo 'kubedrill-facts 1'; \
                 yes 'stderr noise' | head -c {STREAM_BYTES} >&2; exit 1"
            ),
            " bytes dropped …]".to_string(),
        ),
    ];
    let mut ok = true;
    println!(
        "kubedrill check against a node streaming {:.1} GB (target: peak RSS < {} MiB)",
        STREAM_BYTES as f64 / 1e9,
        TARGET_KIB / 1024
    );
    for (name, body, expect) in &cases {
        hostile(&mut lab, body);
        let m = run_check(&lab);
        let said = m.stdout.contains(expect.as_str());
        let within = m.max_rss_kib < TARGET_KIB;
        ok &= said && within && m.code == Some(4);
        println!(
            "  {name:<26} peak RSS {:>6.1} MiB  wall {:>6.2} s  {:>6.0} MB/s  exit {:?}  {}{}",
            m.max_rss_kib as f64 / 1024.0,
            m.wall.as_secs_f64(),
            STREAM_BYTES as f64 / 1e6 / m.wall.as_secs_f64(),
            m.code,
            if within { "ok" } else { "OVER TARGET" },
            if said {
                ""
            } else {
                "; output did not say what was dropped"
            }
        );
        if !said || m.code != Some(4) {
            println!("{}", m.stdout);
        }
    }
    if !ok {
        std::process::exit(1);
    }
}
