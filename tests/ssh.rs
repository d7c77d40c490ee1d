//! The SSH engine against real `sshd` processes on 127.0.1.x (see tests/common/sshd.rs).

use crate::common;

use common::sshd::{self, SshLab, SudoRule};
use kubedrill::fleet::{self, Connector, Progress};
use kubedrill::ssh::{
    Command, Destination, HostKeyMode, HostKeyPolicy, Options, Session, SshError,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn options(known_hosts: &Path, mode: HostKeyMode) -> Arc<Options> {
    let policy = HostKeyPolicy::load(known_hosts, mode).expect("known_hosts");
    let mut o = Options::new(Arc::new(policy));
    // Only the lab's key: never the developer's agent or ~/.ssh keys.
    o.identities = Vec::new();
    o.agent = None;
    o.connect_timeout = Duration::from_secs(10);
    Arc::new(o)
}

fn dest(lab: &SshLab, i: usize, user: &str) -> Destination {
    lab.destination(i, user)
}

/// Kill every per-connection process of node `i` (its listener stays): open connections drop.
fn drop_connections(lab: &SshLab, i: usize) {
    for (pid, _) in sshd::descendants_of(&[lab.host(i).pid]) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_reports_status_stdout_stderr_and_duration() {
    if !sshd::skip_unless_available("exec") {
        return;
    }
    let lab = SshLab::start(1);
    let opts = options(lab.known_hosts_path(), HostKeyMode::Strict);
    let s = Session::connect(dest(&lab, 0, "root"), None, opts)
        .await
        .expect("connect");
    let out = s
        .exec(&Command::new("echo out; echo 'it failed' >&2; exit 3"))
        .await
        .expect("exec");
    assert_eq!(out.status, Some(3));
    assert_eq!(out.stdout_text(), "out\n");
    assert_eq!(out.stderr_text(), "it failed\n");
    assert!(out.duration > Duration::ZERO);

    // Scripts on stdin, and quoting survives the trip.
    let out = s
        .exec(&Command::script_on_stdin("x='a b'\necho \"$x\" it\\'s\n"))
        .await
        .expect("stdin script");
    assert_eq!(out.stdout_text(), "a b it's\n");

    // One connection, many concurrent channels (more than the per-connection cap).
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.exec(&Command::new(format!("echo {i}"))).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.expect("join").expect("concurrent exec");
        assert_eq!(out.stdout_text(), format!("{i}\n"));
    }
    assert_eq!(s.reconnects(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_is_refused_with_the_methods_tried() {
    if !sshd::skip_unless_available("wrong key") {
        return;
    }
    let lab = SshLab::builder().hosts(1).with_encrypted_key(true).start();
    let other = lab.dir().join("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let opts = options(lab.known_hosts_path(), HostKeyMode::Strict);

    let mut d = dest(&lab, 0, "root");
    d.key = Some(other.clone());
    let err = Session::connect(d, None, opts.clone())
        .await
        .expect_err("must fail");
    match &err {
        SshError::Auth { host, tried, .. } => {
            assert_eq!(host, "node1");
            assert!(tried[0].contains("other_key"), "{tried:?}");
        }
        e => panic!("expected an authentication error, got {e}"),
    }

    // A passphrase-protected key: a clear error pointing at ssh-agent.
    let mut d = dest(&lab, 0, "root");
    d.key = Some(
        lab.encrypted_key_path()
            .expect("encrypted key")
            .to_path_buf(),
    );
    let err = Session::connect(d, None, opts.clone())
        .await
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("passphrase-protected") && msg.contains("ssh-add"),
        "{msg}"
    );

    // A key file that does not exist names the file.
    let mut d = dest(&lab, 0, "root");
    d.key = Some(lab.dir().join("missing"));
    let err = Session::connect(d, None, opts)
        .await
        .expect_err("must fail");
    assert!(matches!(err, SshError::KeyFile { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_host_key_is_refused_in_every_mode() {
    if !sshd::skip_unless_available("changed key") {
        return;
    }
    let mut lab = SshLab::start(1);
    let new_line = lab.regenerate_host_key(0);
    let new_key = russh::keys::parse_public_key_base64(
        new_line.split_whitespace().nth(1).expect("key field"),
    )
    .expect("parse");
    let fp = kubedrill::ssh::known_hosts::fingerprint(&new_key);
    for mode in [
        HostKeyMode::Strict,
        HostKeyMode::AcceptNew,
        HostKeyMode::Off,
    ] {
        let opts = options(lab.known_hosts_path(), mode);
        let err = Session::connect(dest(&lab, 0, "root"), None, opts)
            .await
            .expect_err("a changed key must be refused");
        match &err {
            SshError::HostKeyChanged {
                host,
                fingerprint,
                file,
                line,
            } => {
                assert_eq!(
                    host,
                    &format!("[{}]:{}", lab.host(0).addr, lab.host(0).port)
                );
                assert_eq!(fingerprint, &fp);
                assert_eq!(file, lab.known_hosts_path());
                assert_eq!(*line, 1);
            }
            e => panic!("{mode:?}: expected HostKeyChanged, got {e}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&fp) && msg.contains("known_hosts"), "{msg}");
    }
    // The file was not modified by accept-new.
    let text = std::fs::read_to_string(lab.known_hosts_path()).expect("read");
    assert!(!text.contains(new_line.split_whitespace().nth(1).expect("b64")));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_hosts_strict_refuses_accept_new_records() {
    if !sshd::skip_unless_available("accept-new") {
        return;
    }
    let lab = SshLab::start(2);
    let kh = lab.dir().join("fresh_known_hosts");
    let err = Session::connect(
        dest(&lab, 0, "root"),
        None,
        options(&kh, HostKeyMode::Strict),
    )
    .await
    .expect_err("strict refuses unknown hosts");
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");
    assert!(err.to_string().contains("accept-new"));

    let opts = options(&kh, HostKeyMode::AcceptNew);
    for i in 0..2 {
        Session::connect(dest(&lab, i, "root"), None, opts.clone())
            .await
            .expect("accept-new connects");
    }
    assert_eq!(opts.host_keys.learned(), 2);
    let text = std::fs::read_to_string(&kh).expect("recorded");
    for i in 0..2 {
        assert!(text.contains(&lab.host(i).known_hosts_line()), "{text}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kh).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Now strict accepts them, and a second accept-new run records nothing new.
    Session::connect(
        dest(&lab, 1, "root"),
        None,
        options(&kh, HostKeyMode::Strict),
    )
    .await
    .expect("strict after recording");
    let again = options(&kh, HostKeyMode::AcceptNew);
    Session::connect(dest(&lab, 0, "root"), None, again.clone())
        .await
        .expect("known");
    assert_eq!(again.host_keys.learned(), 0);
    assert_eq!(std::fs::read_to_string(&kh).expect("read"), text);
}

#[tokio::test(flavor = "multi_thread")]
async fn command_timeout_leaves_the_session_usable() {
    if !sshd::skip_unless_available("timeout") {
        return;
    }
    let lab = SshLab::start(1);
    let s = Session::connect(
        dest(&lab, 0, "root"),
        None,
        options(lab.known_hosts_path(), HostKeyMode::Strict),
    )
    .await
    .expect("connect");
    let t = Instant::now();
    let err = s
        .exec(&Command::new("echo started >&2; sleep 30").timeout(Duration::from_millis(800)))
        .await
        .expect_err("timeout");
    assert!(t.elapsed() < Duration::from_secs(10));
    match &err {
        SshError::CommandTimeout {
            host,
            command,
            stderr,
            ..
        } => {
            assert_eq!(host, "node1");
            assert!(command.contains("sleep 30") || command.contains("echo started"));
            assert!(stderr.contains("started"), "{stderr}");
        }
        e => panic!("expected CommandTimeout, got {e}"),
    }
    let out = s
        .exec(&Command::new("echo still here"))
        .await
        .expect("exec");
    assert_eq!(out.stdout_text(), "still here\n");
    // A command whose stdout is progress (`kubeadm upgrade … 2>&1`) says where it was stopped;
    // any other command's stdout (a token, a key) stays out of the error.
    // (The output is computed: the error names the script itself.)
    let script = "echo \"[upgrade/staticpods] waited $((6 * 7)) s\"; sleep 30";
    let err = s
        .exec(
            &Command::new(script)
                .stdout_in_timeout()
                .timeout(Duration::from_millis(800)),
        )
        .await
        .expect_err("timeout");
    assert!(err.to_string().contains("waited 42 s"), "{err}");
    let err = s
        .exec(&Command::new(script).timeout(Duration::from_millis(800)))
        .await
        .expect_err("timeout");
    assert!(
        !err.to_string().contains("Waiting for the kubelet"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_is_checked_and_gets_its_mode() {
    if !sshd::skip_unless_available("upload") {
        return;
    }
    let lab = SshLab::start(1);
    let s = Session::connect(
        dest(&lab, 0, "root"),
        None,
        options(lab.known_hosts_path(), HostKeyMode::Strict),
    )
    .await
    .expect("connect");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let target = lab.dir().join("uploaded.bin");
    let path = target.to_str().expect("utf8 path");
    s.upload(&data, path, 0o640, false).await.expect("upload");
    assert_eq!(std::fs::read(&target).expect("read back"), data);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&target)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    // Re-upload replaces atomically; no temporary file is left behind.
    s.upload(b"v2\n", path, 0o600, false)
        .await
        .expect("upload again");
    assert_eq!(std::fs::read(&target).expect("read"), b"v2\n");
    let leftovers: Vec<_> = std::fs::read_dir(lab.dir())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".kubedrill."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A destination that cannot be written is an Upload error naming the path.
    let bad = lab.dir().join("no/such/dir/file");
    let err = s
        .upload(b"x", bad.to_str().expect("utf8"), 0o600, false)
        .await
        .expect_err("must fail");
    assert!(matches!(err, SshError::Upload { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sudo_for_a_non_root_user() {
    if !sshd::skip_unless_available("sudo") {
        return;
    }
    let lab = SshLab::builder().hosts(1).test_users(true).start();
    let opts = options(lab.known_hosts_path(), HostKeyMode::Strict);

    let mut d = dest(&lab, 0, sshd::SUDO_USER);
    d.become_user = Some("root".into());
    let s = Session::connect(d, None, opts.clone())
        .await
        .expect("kdtest connects");
    let plain = s.exec(&Command::new("id -un")).await.expect("exec");
    assert_eq!(plain.stdout_text().trim(), sshd::SUDO_USER);
    let root = s
        .exec(&Command::new("id -un").privileged())
        .await
        .expect("sudo exec");
    assert_eq!(root.stdout_text().trim(), "root");
    // Privileged upload lands root-owned.
    let target = lab.dir().join("root-owned");
    s.upload(b"secret\n", target.to_str().expect("utf8"), 0o600, true)
        .await
        .expect("privileged upload");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&target).expect("stat").uid(), 0);

    // Without a sudo rule: a clear error at connect time, naming user and host.
    let mut d = dest(&lab, 0, sshd::NOSUDO_USER);
    d.become_user = Some("root".into());
    let err = Session::connect(d, None, opts)
        .await
        .expect_err("no sudo right");
    match &err {
        SshError::Sudo { host, user, .. } => {
            assert_eq!(host, "node1");
            assert_eq!(user, sshd::NOSUDO_USER);
        }
        e => panic!("expected a sudo error, got {e}"),
    }
    assert!(err.to_string().contains("NOPASSWD"), "{err}");
    let _ = SudoRule::None;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_host_does_not_hide_the_others() {
    if !sshd::skip_unless_available("down host") {
        return;
    }
    let mut lab = SshLab::start(3);
    lab.kill_host(1);
    let opts = options(lab.known_hosts_path(), HostKeyMode::Strict);
    let connector = Connector::new(opts, None);
    let inputs: Vec<(String, Destination)> = (0..3)
        .map(|i| (lab.host(i).name.clone(), dest(&lab, i, "root")))
        .collect();
    let results = fleet::run(
        "hostname",
        inputs,
        2,
        &Progress::quiet(),
        |s: &String| s.clone(),
        |d, _p| {
            let c = connector.clone();
            async move {
                let s = c.connect(d).await?;
                let out = s.exec(&Command::new("echo ok")).await?;
                Ok::<_, SshError>(out.stdout_text())
            }
        },
    )
    .await;
    let names: Vec<&str> = results.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(names, ["node1", "node2", "node3"]);
    assert_eq!(results[0].result.as_deref().ok(), Some("ok\n"));
    assert_eq!(results[2].result.as_deref().ok(), Some("ok\n"));
    match &results[1].result {
        Err(SshError::Connect { host, addr, .. }) => {
            assert_eq!(host, "node2");
            assert!(addr.ends_with(&format!(":{}", lab.host(1).port)));
        }
        other => panic!("expected a connect error for node2, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bastion_hop() {
    if !sshd::skip_unless_available("bastion") {
        return;
    }
    let mut lab = SshLab::builder().hosts(2).with_bastion(true).start();
    let b = lab.bastion().expect("bastion");
    let bastion = Destination {
        name: b.name.clone(),
        address: b.addr.to_string(),
        port: b.port,
        user: "root".into(),
        key: Some(lab.key_path().to_path_buf()),
        become_user: None,
    };
    let opts = options(lab.known_hosts_path(), HostKeyMode::Strict);
    let connector = Connector::new(opts.clone(), Some(bastion.clone()));
    for i in 0..2 {
        let s = connector
            .connect(dest(&lab, i, "root"))
            .await
            .expect("via bastion");
        let out = s
            .exec(&Command::new("echo $SSH_CONNECTION"))
            .await
            .expect("exec");
        // sshd on the node sees the connection arriving at its own address and port.
        let fields: Vec<String> = out
            .stdout_text()
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(
            fields.get(2).map(String::as_str),
            Some(lab.host(i).addr.to_string().as_str())
        );
        assert_eq!(fields.get(3), Some(&lab.host(i).port.to_string()));
    }
    // The route really goes through the jump host: without it, connecting fails and says so.
    lab.kill_bastion();
    let connector = Connector::new(opts, Some(bastion));
    let err = connector
        .connect(dest(&lab, 0, "root"))
        .await
        .expect_err("no bastion, no route");
    match &err {
        SshError::Tunnel { host, bastion, .. } => {
            assert_eq!(host, "node1");
            assert_eq!(bastion, "bastion");
        }
        e => panic!("expected a tunnel error, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connection_is_reestablished_once() {
    if !sshd::skip_unless_available("dropped connection") {
        return;
    }
    let lab = SshLab::start(1);
    let s = Session::connect(
        dest(&lab, 0, "root"),
        None,
        options(lab.known_hosts_path(), HostKeyMode::Strict),
    )
    .await
    .expect("connect");
    s.exec(&Command::new("true")).await.expect("first");

    // Between commands: the next command reconnects and runs.
    drop_connections(&lab, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = s
        .exec(&Command::new("echo again"))
        .await
        .expect("after drop");
    assert_eq!(out.stdout_text(), "again\n");
    assert_eq!(s.reconnects(), 1);

    // During a command that is not marked idempotent: reported as lost, not re-run.
    let s2 = s.clone();
    let running = tokio::spawn(async move { s2.exec(&Command::new("sleep 20")).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop_connections(&lab, 0);
    let err = running.await.expect("join").expect_err("lost");
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err}");

    // During an idempotent command: re-run once on a new connection.
    let s3 = s.clone();
    let marker = lab.dir().join("runs");
    let script = format!("echo run >> {}; sleep 2; echo done", marker.display());
    let running = tokio::spawn(async move { s3.exec(&Command::new(script).idempotent()).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop_connections(&lab, 0);
    let out = running.await.expect("join").expect("re-run");
    assert_eq!(out.stdout_text(), "done\n");
    let runs = std::fs::read_to_string(&marker).expect("marker");
    assert_eq!(runs.lines().count(), 2, "ran once, dropped, ran again");
}

/// An ssh-agent this test started (killed by PID on drop).
struct Agent {
    child: std::process::Child,
    sock: std::path::PathBuf,
}

impl Agent {
    fn start(dir: &Path, keys: &[&Path]) -> Agent {
        let sock = dir.join(format!("agent-{}.sock", keys.len()));
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let agent = Agent { child, sock };
        let t = Instant::now();
        while !agent.sock.exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in keys {
            let st = std::process::Command::new("ssh-add")
                .arg("-q")
                .arg(k)
                .env("SSH_AUTH_SOCK", &agent.sock)
                .status()
                .expect("ssh-add");
            assert!(st.success());
        }
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_agent_keys_are_used() {
    if !sshd::skip_unless_available("agent") {
        return;
    }
    let lab = SshLab::start(1);
    let agent = Agent::start(lab.dir(), &[lab.key_path()]);
    let policy = HostKeyPolicy::load(lab.known_hosts_path(), HostKeyMode::Strict).expect("kh");
    let mut o = Options::new(Arc::new(policy));
    o.identities = Vec::new();
    o.agent = Some(agent.sock.clone());
    let mut d = dest(&lab, 0, "root");
    d.key = None;
    let s = Session::connect(d.clone(), None, Arc::new(o.clone()))
        .await
        .expect("agent auth");
    let out = s.exec(&Command::new("echo via-agent")).await.expect("exec");
    assert_eq!(out.stdout_text(), "via-agent\n");

    // An empty agent and no key: the error lists the agent attempt.
    drop(agent);
    let empty = Agent::start(lab.dir(), &[]);
    o.agent = Some(empty.sock.clone());
    let err = Session::connect(d, None, Arc::new(o))
        .await
        .expect_err("no key");
    match err {
        SshError::Auth { tried, .. } => {
            assert!(
                tried.iter().any(|t| t.contains("ssh-agent (0 keys")),
                "{tried:?}"
            )
        }
        e => panic!("expected auth error, got {e}"),
    }
}

/// `ssh -L` without ssh: a local port carried over the session to a TCP service as seen from the
/// host (here an echo server on loopback that only the test started).
#[tokio::test(flavor = "multi_thread")]
async fn local_forward_reaches_a_service_behind_the_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !sshd::skip_unless_available("forward") {
        return;
    }
    let lab = SshLab::start(1);
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("echo listener");
    let echo_port = echo.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let opts = options(lab.known_hosts_path(), HostKeyMode::Strict);
    let s = Session::connect(dest(&lab, 0, "root"), None, opts)
        .await
        .expect("connect");
    let fwd = kubedrill::ssh::forward::forward_local(s.clone(), "127.0.0.1".into(), echo_port)
        .await
        .expect("forward");
    for round in 0..3 {
        let mut c = tokio::net::TcpStream::connect(fwd.local)
            .await
            .expect("connect to the forward");
        let msg = format!("hello {round} through the tunnel");
        c.write_all(msg.as_bytes()).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).await.expect("echo");
        assert_eq!(got, msg.as_bytes());
    }
    let local = fwd.local;
    drop(fwd);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(local).await.is_err(),
        "the forward stops when dropped"
    );
}
