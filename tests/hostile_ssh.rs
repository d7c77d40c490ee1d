//! Hostile nodes over real SSH (issue 12, classes 2 and 6): local `sshd` peers on 127.0.1.x
//! (tests/common/sshd.rs) that stream endless output, stall, or lie. Each node's commands are
//! replaced with `ForceCommand` scripts, so kubedrill talks to a real OpenSSH server that
//! misbehaves exactly as a compromised node could.
//!
//! What must hold: memory stays bounded whatever a node prints (head and tail kept, the rest
//! counted), parsed output is never used when it was cut, a node that never finishes is
//! stopped by the command timeout, and nothing a node says reaches the terminal raw.

use crate::common;

use common::sshd::{self, SshLab};
use kubedrill::ssh::{
    Command, Destination, HostKeyMode, HostKeyPolicy, Options, Session, SshError,
};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn options(known_hosts: &Path) -> Arc<Options> {
    let policy = HostKeyPolicy::load(known_hosts, HostKeyMode::Strict).expect("known_hosts");
    let mut o = Options::new(Arc::new(policy));
    o.identities = Vec::new();
    o.agent = None;
    Arc::new(o)
}

fn dest(lab: &SshLab, i: usize) -> Destination {
    lab.destination(i, "root")
}

/// Make node `i` answer kubedrill's facts script (sent on stdin of `sh -s`) with `body` (shell
/// code); any other command runs normally.
fn hostile_facts(lab: &mut SshLab, i: usize, body: &str) {
    let path = lab.dir().join(format!("hostile-{}.sh", i + 1));
    let script = format!(
        "#!/bin/sh\n\
         case \"$SSH_ORIGINAL_COMMAND\" in\n\
         *'sh -s'*)\n{body}\n;;\n\
         *) exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\" ;;\n\
         esac\n"
    );
    std::fs::write(&path, script).expect("write hostile script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    lab.set_host_config(i, &format!("ForceCommand {}", path.display()));
}

/// What a `kubedrill` process did: exit code, output, peak RSS in KiB (from `wait4`).
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
    wall: Duration,
}

/// Run `kubedrill ARGS`, measure its peak memory, and kill it (by PID: it is our child) if it
/// outlives `limit`, so a hanging kubedrill fails the test instead of hanging it.
// The child is reaped with `wait4` (which also returns its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn kubedrill(args: &[&str], inventory: &Path, limit: Duration) -> Run {
    let t = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubedrill"))
        .args(args)
        .arg("-i")
        .arg(inventory)
        .env_remove("SSH_AUTH_SOCK")
        .env("TERM", "dumb")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubedrill");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: `pid` is our own child, not yet reaped; the out-pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if t.elapsed() > limit && !killed {
            // SAFETY: signalling our own unreaped child by PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = t.elapsed();
    let stdout = String::from_utf8_lossy(&t_out.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().expect("stderr reader")).into_owned();
    assert!(
        !killed,
        "kubedrill {args:?} still ran after {limit:?}: killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    Run {
        code: libc::WIFEXITED(status).then_some(libc::WEXITSTATUS(status)),
        stdout,
        stderr,
        max_rss_kib: usage.ru_maxrss,
        wall,
    }
}

/// A generous bound that still proves nothing was buffered: far below what the nodes stream.
const RSS_BOUND_KIB: i64 = 160 * 1024;

#[test]
fn check_keeps_memory_bounded_when_nodes_flood_stdout_and_stderr() {
    if !sshd::skip_unless_available("hostile flood") {
        return;
    }
    let mut lab = SshLab::start(2);
    // node1: 400 MB of lines that all look like the facts header, then success.
    hostile_facts(
        &mut lab,
        0,
        "cat >/dev/null; yes 'kubedrill-facts 1' | head -c 400000000; exit 0",
    );
    // node2: valid-looking stdout, 100 MB on stderr, then failure.
    hostile_facts(
        &mut lab,
        1,
        "cat >/dev/null; echo 'kubedrill-facts 1'; \
         yes 'disk on fire' | head -c 100000000 >&2; echo 'last words' >&2; exit 1",
    );
    let r = kubedrill(&["check"], lab.inventory_path(), Duration::from_secs(240));
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(4), "{all}");
    // node1: the cut stdout is refused, naming host, amount and limit.
    assert!(
        r.stdout.contains(
            "node1: `facts script (sh -s)` printed 400000000 bytes on stdout, more than the \
             1.25 MiB (first 1 MiB + last 256 KiB) kept per command"
        ),
        "{all}"
    );
    assert!(r.stdout.contains("the output was not used"), "{all}");
    // node2: its failure shows the end of stderr and says how much was dropped before it.
    assert!(
        r.stdout.contains("node2: facts script exited with Some(1)"),
        "{all}"
    );
    assert!(r.stdout.contains("last words"), "{all}");
    let dropped = 100_000_000 + "last words\n".len() - (128 << 10);
    assert!(
        r.stdout.contains(&format!("[… {dropped} bytes dropped …]")),
        "{all}"
    );
    assert!(
        r.max_rss_kib < RSS_BOUND_KIB,
        "kubedrill check peaked at {} KiB with 500 MB streamed at it",
        r.max_rss_kib
    );
    eprintln!(
        "flood: {:.1} s, peak RSS {} KiB",
        r.wall.as_secs_f64(),
        r.max_rss_kib
    );
}

#[test]
fn check_stops_endless_and_stalled_nodes_at_the_timeout() {
    if !sshd::skip_unless_available("hostile endless") {
        return;
    }
    let mut lab = SshLab::start(2);
    // node1 streams forever; node2 never reads its stdin, never prints, never closes.
    hostile_facts(&mut lab, 0, "cat >/dev/null; exec yes 'kubedrill-facts 1'");
    hostile_facts(&mut lab, 1, "exec sleep 30");
    let r = kubedrill(
        &["check", "--gather-timeout", "3"],
        lab.inventory_path(),
        Duration::from_secs(60),
    );
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(4), "{all}");
    assert!(r.wall < Duration::from_secs(30), "{:?}\n{all}", r.wall);
    for n in ["node1", "node2"] {
        assert!(
            r.stdout
                .contains(&format!("{n}: `facts script (sh -s)` timed out after 3s")),
            "{all}"
        );
    }
    // The streaming node's message says how much arrived and was dropped.
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("node1: `facts script"))
        .unwrap_or_default();
    assert!(
        line.contains("bytes of output received, [… ") && line.contains(" bytes dropped …]"),
        "{line}"
    );
    assert!(r.max_rss_kib < RSS_BOUND_KIB, "peak {} KiB", r.max_rss_kib);
}

/// Text with a screen clear, a window-title change, a bare CSI (C1) and a bidi override.
const EVIL: &str = "\\033[2J\\033]0;pwned\\007\\302\\2331m\\342\\200\\256";

#[test]
fn check_escapes_what_lying_nodes_say() {
    if !sshd::skip_unless_available("hostile liar") {
        return;
    }
    let mut lab = SshLab::start(2);
    // node1 runs the real facts script, with a `uname -r` and `nproc` that lie.
    let bin = lab.dir().join("liar-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let write_exe = |name: &str, text: String| {
        let p = bin.join(name);
        std::fs::write(&p, text).expect("write fake tool");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    write_exe(
        "uname",
        format!(
            "#!/bin/sh\nif [ \"$1\" = -r ]; then printf '6.8.0-{EVIL}evil\\n'; else exec /usr/bin/uname \"$@\"; fi\n"
        ),
    );
    write_exe(
        "nproc",
        "#!/bin/sh\necho 99999999999999999999999999\n".to_string(),
    );
    hostile_facts(
        &mut lab,
        0,
        &format!(
            "PATH={}:$PATH; export PATH; exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"",
            bin.display()
        ),
    );
    // node2 answers with garbage full of escape sequences, and an error on stderr.
    hostile_facts(
        &mut lab,
        1,
        &format!(
            "cat >/dev/null; printf 'garbage{EVIL}\\n'; printf 'kubedrill-facts 999{EVIL}\\n'; exit 0"
        ),
    );

    let raw = |s: &str| {
        s.chars()
            .filter(|c| (c.is_control() && *c != '\n' && *c != '\t') || *c == '\u{202e}')
            .map(|c| format!("{:?}", c))
            .collect::<Vec<_>>()
    };
    let r = kubedrill(&["check"], lab.inventory_path(), Duration::from_secs(120));
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(4), "{all}");
    assert!(
        raw(&r.stdout).is_empty(),
        "raw controls on stdout: {:?}\n{all}",
        raw(&r.stdout)
    );
    assert!(
        raw(&r.stderr).is_empty(),
        "raw controls on stderr: {:?}\n{all}",
        raw(&r.stderr)
    );
    // The lying release is shown, visibly escaped, in the table and the progress line.
    let shown = "6.8.0-\\x1b[2J\\x1b]0;pwned\\x07\\u{9b}1m\\u{202e}evil";
    assert!(r.stdout.contains(shown), "{all}");
    assert!(
        r.stderr.contains(&format!("node1: ok kernel {shown}")),
        "{all}"
    );
    // Garbage is reported, not parsed.
    assert!(r.stdout.contains("node2: facts format"), "{all}");

    // JSON keeps the exact text (serde escapes it) and the absurd number is a finding.
    let r = kubedrill(
        &["check", "--output", "json"],
        lab.inventory_path(),
        Duration::from_secs(120),
    );
    assert!(raw(&r.stdout).is_empty(), "{:?}", raw(&r.stdout));
    let doc: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("json: {e}\n{}\n{}", r.stdout, r.stderr));
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "checked", "{h:#}");
    assert_eq!(
        h["facts"]["kernel"]["release"],
        "6.8.0-\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}1m\u{202e}evil"
    );
    assert_eq!(h["facts"]["kernel"]["version"]["major"], 6);
    assert!(h["facts"]["cpus"].is_null(), "{h:#}");
    let findings = h["facts"]["findings"].to_string();
    assert!(findings.contains("cpus: unreadable number"), "{findings}");
    assert_eq!(doc["hosts"][1]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_keeps_head_and_tail_and_refuses_cut_stdout() {
    if !sshd::skip_unless_available("exec flood") {
        return;
    }
    let lab = SshLab::start(1);
    let s = Session::connect(dest(&lab, 0), None, options(lab.known_hosts_path()))
        .await
        .expect("connect");
    // 20 MB of numbered lines; the first and last survive.
    let script = "seq 1 3000000 | head -c 20000000; echo; echo THE-END";
    let out = s
        .exec(&Command::new(script).lossy_stdout())
        .await
        .expect("lossy exec");
    assert!(out.success());
    let kept = (1usize << 20) + (256 << 10);
    assert_eq!(out.stdout.len(), kept);
    let received = 20_000_000 + 1 + "THE-END\n".len() as u64;
    assert_eq!(out.stdout_dropped, received - kept as u64);
    let text = out.stdout_text();
    assert!(text.starts_with("1\n2\n3\n"), "{}", &text[..20]);
    assert!(text.ends_with("\nTHE-END\n"));
    assert!(text.contains(&format!("\n[… {} bytes dropped …]\n", out.stdout_dropped)));

    // Parsed stdout (the default): an error naming host, amount and limit, never a cut text.
    match s.exec(&Command::new(script)).await {
        Err(SshError::OutputTruncated {
            host,
            received: r,
            dropped,
            ..
        }) => {
            assert_eq!(host, "node1");
            assert_eq!(r, received);
            assert_eq!(dropped, received - kept as u64);
        }
        other => panic!("expected OutputTruncated, got {other:?}"),
    }

    // A stderr flood is kept head-and-tail, and failure messages say what was dropped.
    let out = s
        .exec(&Command::new(
            "yes 'noise' | head -c 4999998 >&2; echo 'real error' >&2; echo ok; exit 2",
        ))
        .await
        .expect("stderr flood");
    assert_eq!(out.status, Some(2));
    assert_eq!(out.stdout_text(), "ok\n");
    assert_eq!(out.stderr.len(), 128 << 10);
    assert!(out.stderr_dropped > 4_000_000);
    let tail = out.stderr_tail(2);
    assert!(tail.starts_with("[… "), "{tail}");
    assert!(tail.ends_with("noise\nreal error"), "{tail}");
    // The session is still good.
    let out = s.exec(&Command::new("echo fine")).await.expect("exec");
    assert_eq!(out.stdout_text(), "fine\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_commands_hit_the_timeout() {
    if !sshd::skip_unless_available("exec stall") {
        return;
    }
    let lab = SshLab::start(1);
    let s = Session::connect(dest(&lab, 0), None, options(lab.known_hosts_path()))
        .await
        .expect("connect");
    let limit = Duration::from_secs(2);
    // An outer bound, so that a regression fails the test instead of hanging it.
    let bounded = |cmd: Command| {
        let s = s.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), s.exec(&cmd))
                .await
                .expect("exec hung past its own timeout")
        }
    };
    let expect_timeout = |r: Result<kubedrill::ssh::Output, SshError>, what: &str| match r {
        Err(SshError::CommandTimeout { host, after, .. }) => {
            assert_eq!(host, "node1", "{what}");
            assert_eq!(after, limit, "{what}");
        }
        other => panic!("{what}: expected CommandTimeout, got {other:?}"),
    };

    // A command that never reads its stdin: 16 MiB cannot pass the SSH window. Before the
    // deadline covered sending stdin, this waited forever.
    let t = Instant::now();
    let r = bounded(
        Command::new("exec sleep 20")
            .stdin(vec![b'x'; 16 << 20])
            .timeout(limit),
    )
    .await;
    expect_timeout(r, "stdin never read");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A command that reports its exit status but leaves the channel open (a background child
    // holds stdout): the channel never closes.
    let t = Instant::now();
    let r = bounded(Command::new("sleep 8 & echo started; exit 0").timeout(limit)).await;
    expect_timeout(r, "never closes");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // An endless stream: stopped at the limit, the message says how much was dropped.
    let r = bounded(Command::new("exec yes 'spam'").timeout(limit)).await;
    match &r {
        Err(e @ SshError::CommandTimeout { .. }) => {
            let m = e.to_string();
            assert!(m.contains("bytes of output received, [… "), "{m}");
        }
        other => panic!("endless: expected CommandTimeout, got {other:?}"),
    }

    let out = s.exec(&Command::new("echo alive")).await.expect("exec");
    assert_eq!(out.stdout_text(), "alive\n");
}
