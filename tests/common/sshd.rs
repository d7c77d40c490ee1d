//! Local OpenSSH servers for integration tests: an [`SshLab`] starts N `sshd` processes on
//! loopback addresses, each with its own host key and port, and writes the client key, a
//! `known_hosts` file and a Kubespray-style `hosts.yaml` inventory that points at them.
//!
//! Requirements: `/usr/sbin/sshd` (openssh-server), `ssh-keygen`, and running as root (sshd
//! must be root to switch users; the test users need `useradd`). Tests should call
//! [`skip_unless_available`] first: it returns `false` (and prints why) when the host cannot run
//! the lab, unless `KUBEDRILL_REQUIRE_SSHD=1` is set, in which case it panics instead.
//!
//! What a lab is made of (everything under one temporary directory, removed on drop):
//!
//! * `id_ed25519[.pub]`: the client key (ed25519, no passphrase); optionally
//!   `id_ed25519_encrypted[.pub]` protected by [`ENCRYPTED_KEY_PASSPHRASE`] for negative tests.
//!   Both public keys are in `authorized_keys`.
//! * `authorized_keys`: every sshd's `AuthorizedKeysFile` points here, for *every* user, so
//!   root's real `~/.ssh` is never read or written. `StrictModes no` and mode 0644 (and a
//!   0755 lab directory) let non-root users' logins read it too.
//! * `hosts/hN/`: per host `ssh_host_ed25519_key[.pub]`, `sshd_config`, `sshd.pid`, `sshd.log`
//!   (sshd's stderr with `-e`, `LogLevel ERROR`).
//! * `known_hosts`: `[ADDR]:PORT ssh-ed25519 AAAA…` for every host (and the bastion).
//! * `sshlab/hosts.yaml`: the inventory (the cluster label is therefore `sshlab`).
//!
//! Addresses: node `i` (0-based, named `node{i+1}`) listens on `127.0.1.(10+i)` for the first
//! 200 nodes, then `127.0.(2+j/200).(10+j%200)` for `j = i-200`; the bastion on `127.0.254.10`.
//! Linux routes all of 127.0.0.0/8 to `lo`, so no interface set-up is needed. Ports are picked
//! by binding port 0 on the address and releasing it; if sshd then fails to bind (another test
//! took the port in between) the host is retried on a new port.
//!
//! Logins: hosts use the passwd home of the login user; a per-host HOME is not possible with
//! one Unix user database. Tests log in as `root` by default; [`SshLabBuilder::test_users`]
//! creates (once, kept on the system) the users [`SUDO_USER`] (passwordless sudo through a
//! sudoers drop-in that the lab removes on drop) and [`NOSUDO_USER`] (no sudo rule).
//!
//! Processes: every sshd is a child of the test process. On drop (also while unwinding from a
//! panic), [`kill_host`](SshLab::kill_host), restart and key regeneration, the listener is
//! stopped (SIGSTOP, so it cannot fork new connections), its whole process tree (per-connection
//! `sshd: root [priv]` processes, their session children and the commands they run) is read from
//! `/proc/*/stat`, the listener is killed and reaped with `Child::kill`/`wait`, and every
//! descendant still alive with the same start time (no PID reuse) gets SIGKILL by PID. Only
//! processes the lab started, directly or through sshd, are ever signalled.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The OpenSSH server binary (sshd re-executes itself, so the path must be absolute).
pub const SSHD: &str = "/usr/sbin/sshd";
/// Passphrase of the optional encrypted client key.
pub const ENCRYPTED_KEY_PASSPHRASE: &str = "kubedrill-test-passphrase";
/// Non-root test user with `NOPASSWD: ALL` sudo.
pub const SUDO_USER: &str = "kdtest";
/// Non-root test user without any sudo rule.
pub const NOSUDO_USER: &str = "kdnosudo";
/// Address of the bastion (jump host), when there is one.
pub const BASTION_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 254, 10);
/// How long one sshd may take to accept connections (more for big labs, see `start`).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Most nodes a lab supports (address plan limit is far higher; this is a sanity bound).
const MAX_HOSTS: usize = 10_000;

/// Whether this machine can run an [`SshLab`]: sshd and ssh-keygen exist and we are root.
pub fn available() -> Result<(), String> {
    if !Path::new(SSHD).exists() {
        return Err(format!("{SSHD} is not installed (package openssh-server)"));
    }
    if Command::new("ssh-keygen")
        .arg("-?")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Err("ssh-keygen is not installed (package openssh-client)".into());
    }
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err("the sshd lab must run as root (effective uid is not 0)".into());
    }
    Ok(())
}

/// `true` if the lab can run. Otherwise prints why and returns `false` so the test can return
/// early, or panics when `KUBEDRILL_REQUIRE_SSHD=1` (CI on a prepared machine).
pub fn skip_unless_available(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var("KUBEDRILL_REQUIRE_SSHD").as_deref() == Ok("1") => {
            panic!("{test}: KUBEDRILL_REQUIRE_SSHD=1 but {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// The loopback address of node `i` (0-based).
pub fn node_addr(i: usize) -> Ipv4Addr {
    assert!(i < MAX_HOSTS, "at most {MAX_HOSTS} hosts");
    if i < 200 {
        Ipv4Addr::new(127, 0, 1, (10 + i) as u8)
    } else {
        let j = i - 200;
        Ipv4Addr::new(127, 0, (2 + j / 200) as u8, (10 + j % 200) as u8)
    }
}

/// One running (or killed) sshd.
#[derive(Debug)]
pub struct SshHost {
    /// Inventory name: `node1`… or `bastion`.
    pub name: String,
    /// Loopback address sshd listens on.
    pub addr: Ipv4Addr,
    /// Port sshd listens on.
    pub port: u16,
    /// PID of the listening sshd (the last one started; 0 before the first start).
    pub pid: u32,
    /// The host public key as in a `.pub` file, without comment: `ssh-ed25519 AAAA…`.
    pub host_pubkey_line: String,
    /// sshd's stderr (appended across restarts).
    pub log_path: PathBuf,
    /// The host's directory (`hosts/hN` or `hosts/bastion`).
    pub dir: PathBuf,
    /// Its `sshd_config`.
    pub config_path: PathBuf,
    host_key: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
    spawned_at: Instant,
    /// Lines appended to this host's `sshd_config` (see [`SshLab::set_host_config`]).
    extra_config: String,
}

impl SshHost {
    /// The `known_hosts` line for the current host key (`[addr]:port key`).
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}", self.addr, self.port, self.host_pubkey_line)
    }

    /// `addr:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.port))
    }

    /// True while the listener process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn write_config(&self, cfg: &ConfigCommon) {
        let mut s = String::new();
        let _ = writeln!(s, "# sshd for kubedrill tests: {}", self.name);
        let _ = writeln!(s, "ListenAddress {}:{}", self.addr, self.port);
        let _ = writeln!(s, "HostKey {}", self.host_key.display());
        let _ = writeln!(s, "PidFile {}", self.pid_file.display());
        let _ = writeln!(s, "AuthorizedKeysFile {}", cfg.authorized_keys.display());
        s.push_str(SSHD_CONFIG_COMMON);
        s.push_str(&self.extra_config);
        if cfg.per_source_penalties {
            // OpenSSH ≥ 9.8 penalises sources that fail auth: negative tests would then slow
            // down or lock out every later test from 127.0.0.0/8.
            s.push_str("PerSourcePenalties no\n");
        }
        fs::write(&self.config_path, s).expect("write sshd_config");
    }

    fn spawn(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        self.pid = child.id();
        self.child = Some(child);
        self.spawned_at = Instant::now();
    }

    /// Ready when sshd wrote its PID file (done after it listens) and the port accepts TCP.
    fn probe(&mut self) -> Probe {
        let Some(child) = self.child.as_mut() else {
            return Probe::Exited("not started".into());
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                return Probe::Exited(format!("sshd exited with {status}"));
            }
            Ok(None) => {}
            Err(e) => return Probe::Exited(format!("cannot wait for sshd: {e}")),
        }
        let pid_ok = fs::read_to_string(&self.pid_file)
            .map(|s| s.trim() == self.pid.to_string())
            .unwrap_or(false);
        if pid_ok
            && TcpStream::connect_timeout(&self.socket_addr(), Duration::from_millis(500)).is_ok()
        {
            Probe::Ready
        } else {
            Probe::Pending
        }
    }

    fn read_host_pubkey(&mut self) {
        let pubkey =
            fs::read_to_string(self.host_key.with_extension("pub")).expect("read host public key");
        self.host_pubkey_line = pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
    }
}

enum Probe {
    Ready,
    Pending,
    Exited(String),
}

struct ConfigCommon {
    authorized_keys: PathBuf,
    per_source_penalties: bool,
}

/// The settings every lab sshd shares (after ListenAddress, HostKey, PidFile, AuthorizedKeysFile).
///
/// `SetEnv SHLVL=1`: Debian's bash sources `~/.bashrc` for `ssh host CMD` when SHLVL < 2, and a
/// heavy root `.bashrc` (a build box running `pyenv init`: ~90 ms CPU per login) would slow every
/// login; with it set, bash skips the file, as on a node with a plain root account.
const SSHD_CONFIG_COMMON: &str = "\
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
MaxStartups 1000:30:1000
MaxSessions 20
LoginGraceTime 30
LogLevel ERROR
Subsystem sftp internal-sftp
ClientAliveInterval 0
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
SetEnv SHLVL=1
";

/// Options for [`SshLab`]; see [`SshLab::builder`].
#[derive(Debug, Clone)]
pub struct SshLabBuilder {
    hosts: usize,
    user: String,
    bastion: bool,
    encrypted_key: bool,
    test_users: bool,
}

impl SshLabBuilder {
    /// Number of Kubernetes nodes (default 1). The first is the control plane and etcd.
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// `ansible_user` written to the inventory (default `root`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    /// Also start a jump host and list it in the inventory's `bastion` group.
    pub fn with_bastion(mut self, yes: bool) -> Self {
        self.bastion = yes;
        self
    }

    /// Also generate a passphrase-protected client key (authorized like the plain one).
    pub fn with_encrypted_key(mut self, yes: bool) -> Self {
        self.encrypted_key = yes;
        self
    }

    /// Create [`SUDO_USER`] and [`NOSUDO_USER`] (see [`ensure_test_user`]).
    pub fn test_users(mut self, yes: bool) -> Self {
        self.test_users = yes;
        self
    }

    /// Start every sshd and write the files. Panics (with sshd's log) when one does not start.
    pub fn start(self) -> SshLab {
        assert!(self.hosts >= 1, "a lab needs at least one host");
        assert!(self.hosts <= MAX_HOSTS, "at most {MAX_HOSTS} hosts");
        let t0 = Instant::now();
        let tmp = tempfile::Builder::new()
            .prefix("kubedrill-sshlab-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        // Non-root logins read authorized_keys as themselves: the directory must be traversable.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod lab dir");
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd (privilege separation dir)");

        let mut lab = SshLab {
            servers: Vec::new(),
            nodes: self.hosts,
            user: self.user.clone(),
            key: dir.join("id_ed25519"),
            encrypted_key: self.encrypted_key.then(|| dir.join("id_ed25519_encrypted")),
            known_hosts: dir.join("known_hosts"),
            inventory: dir.join("sshlab").join("hosts.yaml"),
            authorized_keys: dir.join("authorized_keys"),
            startup: Duration::ZERO,
            test_users: Vec::new(),
            tmp,
        };

        if self.test_users {
            lab.test_users
                .push(ensure_test_user(SUDO_USER, SudoRule::NoPassword));
            lab.test_users
                .push(ensure_test_user(NOSUDO_USER, SudoRule::None));
        }

        // Keys: the client key(s) and every host key, generated concurrently.
        let mut keygen: Vec<(PathBuf, &str)> = vec![(lab.key.clone(), "")];
        if let Some(k) = &lab.encrypted_key {
            keygen.push((k.clone(), ENCRYPTED_KEY_PASSPHRASE));
        }
        let hosts_dir = dir.join("hosts");
        let mut names: Vec<(String, Ipv4Addr)> = (0..self.hosts)
            .map(|i| (format!("node{}", i + 1), node_addr(i)))
            .collect();
        if self.bastion {
            names.push(("bastion".to_owned(), BASTION_ADDR));
        }
        for (i, (name, addr)) in names.into_iter().enumerate() {
            let hdir = if name == "bastion" {
                hosts_dir.join("bastion")
            } else {
                hosts_dir.join(format!("h{}", i + 1))
            };
            fs::create_dir_all(&hdir).expect("mkdir host dir");
            let host_key = hdir.join("ssh_host_ed25519_key");
            keygen.push((host_key.clone(), ""));
            lab.servers.push(SshHost {
                name,
                addr,
                port: 0,
                pid: 0,
                host_pubkey_line: String::new(),
                log_path: hdir.join("sshd.log"),
                config_path: hdir.join("sshd_config"),
                pid_file: hdir.join("sshd.pid"),
                dir: hdir,
                host_key,
                child: None,
                spawned_at: Instant::now(),
                extra_config: String::new(),
            });
        }
        ssh_keygen_all(&keygen);

        let mut ak = fs::read_to_string(lab.key.with_extension("pub")).expect("client pub key");
        if let Some(k) = &lab.encrypted_key {
            ak.push_str(&fs::read_to_string(pub_path(k)).expect("encrypted pub key"));
        }
        fs::write(&lab.authorized_keys, ak).expect("write authorized_keys");
        fs::set_permissions(&lab.authorized_keys, fs::Permissions::from_mode(0o644))
            .expect("chmod authorized_keys");

        let common = ConfigCommon {
            authorized_keys: lab.authorized_keys.clone(),
            per_source_penalties: supports_per_source_penalties(),
        };
        for s in &mut lab.servers {
            s.read_host_pubkey();
            s.port = free_port(s.addr);
            s.write_config(&common);
            s.spawn();
        }
        let timeout = START_TIMEOUT.max(Duration::from_millis(50) * lab.servers.len() as u32);
        let all: Vec<usize> = (0..lab.servers.len()).collect();
        lab.wait_ready(&all, true, timeout, &common);

        lab.write_known_hosts();
        lab.write_inventory();
        lab.startup = t0.elapsed();
        lab
    }
}

/// A set of local sshd hosts plus the client key, `known_hosts` and inventory pointing at them.
/// Dropping it kills every sshd (and their per-connection processes) and removes the files.
pub struct SshLab {
    /// Nodes first (`node1`…), then the bastion if any.
    servers: Vec<SshHost>,
    nodes: usize,
    user: String,
    key: PathBuf,
    encrypted_key: Option<PathBuf>,
    known_hosts: PathBuf,
    inventory: PathBuf,
    authorized_keys: PathBuf,
    startup: Duration,
    test_users: Vec<TestUser>,
    // Last: removed after the servers are dead.
    tmp: TempDir,
}

impl SshLab {
    /// `n` nodes, logging in as root, no bastion.
    pub fn start(n: usize) -> SshLab {
        SshLab::builder().hosts(n).start()
    }

    /// Options: hosts, user, bastion, encrypted key, test users.
    pub fn builder() -> SshLabBuilder {
        SshLabBuilder {
            hosts: 1,
            user: "root".to_owned(),
            bastion: false,
            encrypted_key: false,
            test_users: false,
        }
    }

    /// The lab's temporary directory.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `sshlab/hosts.yaml`.
    pub fn inventory_path(&self) -> &Path {
        &self.inventory
    }

    /// The directory holding the inventory (put `group_vars/` here).
    pub fn inventory_dir(&self) -> &Path {
        self.inventory.parent().expect("inventory dir")
    }

    /// The `known_hosts` file.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// The client private key (no passphrase).
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// How kubedrill reaches node `i` as `user`, with the lab's key.
    pub fn destination(&self, i: usize, user: &str) -> kubedrill::ssh::Destination {
        let h = self.host(i);
        kubedrill::ssh::Destination {
            name: h.name.clone(),
            address: h.addr.to_string(),
            port: h.port,
            user: user.to_string(),
            key: Some(self.key_path().to_path_buf()),
            become_user: None,
        }
    }

    /// The passphrase-protected client key, if the lab was built with one.
    pub fn encrypted_key_path(&self) -> Option<&Path> {
        self.encrypted_key.as_deref()
    }

    /// The `authorized_keys` file every sshd reads (for every user).
    pub fn authorized_keys_path(&self) -> &Path {
        &self.authorized_keys
    }

    /// `ansible_user` of the inventory.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Number of nodes (without the bastion).
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// Node `i` (0-based; named `node{i+1}`).
    pub fn host(&self, i: usize) -> &SshHost {
        assert!(i < self.nodes, "no node {i}: the lab has {}", self.nodes);
        &self.servers[i]
    }

    /// Every node.
    pub fn hosts(&self) -> &[SshHost] {
        &self.servers[..self.nodes]
    }

    /// The jump host, if the lab has one.
    pub fn bastion(&self) -> Option<&SshHost> {
        self.servers.get(self.nodes)
    }

    /// Wall time [`SshLabBuilder::start`] took (keys, configs, every sshd ready, files).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// SIGKILL node `i`'s sshd and its connections; its port then refuses connections.
    pub fn kill_host(&mut self, i: usize) {
        assert!(i < self.nodes);
        stop_servers(&mut [&mut self.servers[i]]);
    }

    /// Kill the bastion (panics if there is none).
    pub fn kill_bastion(&mut self) {
        assert!(self.servers.len() > self.nodes, "the lab has no bastion");
        let i = self.nodes;
        stop_servers(&mut [&mut self.servers[i]]);
    }

    /// (Re)start node `i` on the same address, port and host key.
    pub fn restart_host(&mut self, i: usize) {
        assert!(i < self.nodes);
        self.restart_server(i);
    }

    /// Append `lines` to node `i`'s `sshd_config` (replacing earlier extra lines) and restart
    /// it. Used to make a hostile node, e.g. `ForceCommand /path/script` so every command runs
    /// a script that streams, stalls or lies (sshd passes the requested command to it in
    /// `SSH_ORIGINAL_COMMAND`).
    pub fn set_host_config(&mut self, i: usize, lines: &str) {
        assert!(i < self.nodes);
        let mut text = lines.to_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        self.servers[i].extra_config = text;
        self.restart_server(i);
    }

    /// (Re)start the bastion.
    pub fn restart_bastion(&mut self) {
        assert!(self.servers.len() > self.nodes, "the lab has no bastion");
        self.restart_server(self.nodes);
    }

    /// Give node `i` a new host key and restart it. `known_hosts` is *not* updated, so clients
    /// see a changed key; call [`write_known_hosts`](Self::write_known_hosts) to accept it.
    /// Returns the new `ssh-ed25519 AAAA…` line.
    pub fn regenerate_host_key(&mut self, i: usize) -> String {
        assert!(i < self.nodes);
        let s = &mut self.servers[i];
        stop_servers(&mut [&mut *s]);
        let _ = fs::remove_file(&s.host_key);
        let _ = fs::remove_file(s.host_key.with_extension("pub"));
        ssh_keygen_all(&[(s.host_key.clone(), "")]);
        s.read_host_pubkey();
        self.restart_server(i);
        self.servers[i].host_pubkey_line.clone()
    }

    /// Rewrite `known_hosts` from the current host keys.
    pub fn write_known_hosts(&self) {
        let mut s = String::new();
        for h in &self.servers {
            s.push_str(&h.known_hosts_line());
            s.push('\n');
        }
        fs::write(&self.known_hosts, s).expect("write known_hosts");
    }

    /// Rewrite `sshlab/hosts.yaml` from the current hosts and ports.
    pub fn write_inventory(&self) {
        fs::create_dir_all(self.inventory_dir()).expect("mkdir inventory dir");
        fs::write(&self.inventory, self.inventory_yaml()).expect("write inventory");
    }

    /// The inventory text: Kubespray's groups, `ansible_*` connection variables, `ip`, and
    /// `kubedrill_known_hosts` in `all.vars`.
    pub fn inventory_yaml(&self) -> String {
        let q = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("quote");
        let key = q(&self.key);
        let user = serde_json::to_string(&self.user).expect("quote");
        let mut y = String::new();
        let _ = writeln!(
            y,
            "# Generated by tests/common/sshd.rs: {} local sshd hosts.",
            self.nodes
        );
        y.push_str("all:\n  vars:\n");
        let _ = writeln!(y, "    kubedrill_known_hosts: {}", q(&self.known_hosts));
        y.push_str("  hosts:\n");
        let conn = |y: &mut String, h: &SshHost, indent: &str| {
            let _ = writeln!(y, "{indent}ansible_host: {}", h.addr);
            let _ = writeln!(y, "{indent}ansible_port: {}", h.port);
            let _ = writeln!(y, "{indent}ansible_user: {user}");
            let _ = writeln!(y, "{indent}ansible_ssh_private_key_file: {key}");
        };
        for h in self.hosts() {
            let _ = writeln!(y, "    {}:", h.name);
            conn(&mut y, h, "      ");
            let _ = writeln!(y, "      ip: {}", h.addr);
        }
        y.push_str("  children:\n");
        let group = |y: &mut String, name: &str, members: &[&SshHost]| {
            let _ = writeln!(y, "    {name}:\n      hosts:");
            for h in members {
                let _ = writeln!(y, "        {}:", h.name);
            }
        };
        let nodes = self.hosts();
        group(&mut y, "kube_control_plane", &[&nodes[0]]);
        let workers: Vec<&SshHost> = if nodes.len() == 1 {
            vec![&nodes[0]]
        } else {
            nodes[1..].iter().collect()
        };
        group(&mut y, "kube_node", &workers);
        group(&mut y, "etcd", &[&nodes[0]]);
        y.push_str(
            "    k8s_cluster:\n      children:\n        kube_control_plane:\n        kube_node:\n",
        );
        if let Some(b) = self.bastion() {
            let _ = writeln!(y, "    bastion:\n      hosts:\n        {}:", b.name);
            conn(&mut y, b, "          ");
        }
        y
    }

    /// The system `ssh` client's options for this lab: batch mode, strict host key checking
    /// against the lab's `known_hosts`, the lab key, no user config.
    pub fn ssh_options(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            "-i".into(),
            self.key.display().to_string(),
        ]
    }

    /// `ssh … -p PORT USER@ADDR` for node `i`; append the remote command with `.arg(…)`.
    pub fn ssh(&self, i: usize, user: &str) -> Command {
        self.ssh_to(self.host(i), user)
    }

    /// Like [`ssh`](Self::ssh), through the bastion (`ProxyCommand ssh … -W %h:%p`).
    pub fn ssh_via_bastion(&self, i: usize, user: &str) -> Command {
        let b = self.bastion().expect("the lab has no bastion");
        let proxy = format!(
            "ssh {} -W %h:%p -p {} {}@{}",
            self.ssh_options().join(" "),
            b.port,
            self.user,
            b.addr
        );
        let mut c = self.ssh(i, user);
        c.arg("-o").arg(format!("ProxyCommand={proxy}"));
        c
    }

    fn ssh_to(&self, h: &SshHost, user: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.ssh_options())
            .arg("-p")
            .arg(h.port.to_string())
            .arg(format!("{user}@{}", h.addr))
            .stdin(Stdio::null());
        c
    }

    fn common(&self) -> ConfigCommon {
        ConfigCommon {
            authorized_keys: self.authorized_keys.clone(),
            per_source_penalties: supports_per_source_penalties(),
        }
    }

    fn restart_server(&mut self, idx: usize) {
        stop_servers(&mut [&mut self.servers[idx]]);
        let common = self.common();
        self.servers[idx].write_config(&common);
        self.servers[idx].spawn();
        self.wait_ready(&[idx], false, START_TIMEOUT, &common);
    }

    /// Wait until the servers `idx` accept connections. A server that exits because its port
    /// was taken gets a new port (`new_port`) or is retried on the same one; any other exit or
    /// the timeout panics with the server's log.
    fn wait_ready(
        &mut self,
        idx: &[usize],
        new_port: bool,
        timeout: Duration,
        common: &ConfigCommon,
    ) {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<usize> = idx.to_vec();
        let mut attempts: HashMap<usize, u32> = HashMap::new();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for &i in &pending {
                let s = &mut self.servers[i];
                match s.probe() {
                    Probe::Ready => {}
                    Probe::Pending => still.push(i),
                    Probe::Exited(why) => {
                        let log = s.log();
                        let n = attempts.entry(i).or_insert(0);
                        *n += 1;
                        let bind = log.contains("Address already in use")
                            || log.contains("Cannot bind any address");
                        if bind && *n < 20 && Instant::now() < deadline {
                            if new_port {
                                s.port = free_port(s.addr);
                                s.write_config(common);
                            } else {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            s.spawn();
                            still.push(i);
                        } else {
                            panic!(
                                "sshd for {} on {}:{} did not start ({why}); config {}; log:\n{log}",
                                s.name,
                                s.addr,
                                s.port,
                                s.config_path.display()
                            );
                        }
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let s = &self.servers[pending[0]];
                panic!(
                    "{} sshd(s) not accepting connections after {timeout:?}, e.g. {} on {}:{}; log:\n{}",
                    pending.len(),
                    s.name,
                    s.addr,
                    s.port,
                    s.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for SshLab {
    fn drop(&mut self) {
        let mut all: Vec<&mut SshHost> = self.servers.iter_mut().collect();
        stop_servers(&mut all);
        // test_users (sudoers drop-ins) and then the temporary directory drop after this.
    }
}

/// Stop sshd listeners and everything they forked; see the module documentation.
fn stop_servers(servers: &mut [&mut SshHost]) {
    let roots: Vec<u32> = servers
        .iter_mut()
        .filter_map(|s| s.is_running().then_some(s.pid))
        .collect();
    if roots.is_empty() {
        for s in servers.iter_mut() {
            if let Some(mut c) = s.child.take() {
                let _ = c.wait();
            }
        }
        return;
    }
    // A stopped listener cannot fork a child we would miss.
    signal("STOP", &roots);
    let descendants = descendants_of(&roots);
    for s in servers.iter_mut() {
        if let Some(mut c) = s.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let alive: Vec<u32> = descendants
        .iter()
        .filter(|(pid, start)| proc_stat(*pid).is_some_and(|st| st.starttime == *start))
        .map(|(pid, _)| *pid)
        .collect();
    signal("KILL", &alive);
    // They are reparented to init, which reaps them; wait until they are gone (or zombies).
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && alive
            .iter()
            .any(|p| proc_stat(*p).is_some_and(|st| st.state != 'Z'))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Send a signal by PID with `kill(1)` (std has no kill for PIDs that are not our children).
fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The fields of `/proc/PID/stat` the lab uses.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// State letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Parent PID.
    pub ppid: u32,
    /// Start time in clock ticks after boot (identifies the process across PID reuse).
    pub starttime: u64,
}

/// Parse `/proc/PID/stat`; `None` if the process does not exist.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        starttime: f.get(19)?.parse().ok()?,
    })
}

/// True if the process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|st| st.state != 'Z')
}

/// Every descendant of `roots` (not the roots), with start times, from one `/proc` scan.
pub fn descendants_of(roots: &[u32]) -> Vec<(u32, u64)> {
    let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(st) = proc_stat(pid) {
                children
                    .entry(st.ppid)
                    .or_default()
                    .push((pid, st.starttime));
            }
        }
    }
    let mut out = Vec::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(p) = stack.pop() {
        for &(c, start) in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push((c, start));
            stack.push(c);
        }
    }
    out
}

/// Pick a port that is free on `addr` right now.
fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind {addr}:0 to pick a port: {e}"))
}

fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Run `ssh-keygen -q -t ed25519 -N PASS -f PATH` for every key, a few at a time.
fn ssh_keygen_all(keys: &[(PathBuf, &str)]) {
    for chunk in keys.chunks(32) {
        let children: Vec<(PathBuf, io::Result<Child>)> = chunk
            .iter()
            .map(|(path, pass)| {
                let c = Command::new("ssh-keygen")
                    .args([
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        pass,
                        "-C",
                        "kubedrill-test",
                        "-f",
                    ])
                    .arg(path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn();
                (path.clone(), c)
            })
            .collect();
        for (path, c) in children {
            let out = c
                .and_then(Child::wait_with_output)
                .unwrap_or_else(|e| panic!("ssh-keygen for {}: {e}", path.display()));
            assert!(
                out.status.success(),
                "ssh-keygen for {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Whether this sshd knows `PerSourcePenalties` (OpenSSH ≥ 9.8), probed once with `sshd -t`.
fn supports_per_source_penalties() -> bool {
    static CACHE: Mutex<Option<bool>> = Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    *c.get_or_insert_with(|| {
        let Ok(dir) = tempfile::tempdir() else {
            return false;
        };
        let key = dir.path().join("k");
        ssh_keygen_all(&[(key.clone(), "")]);
        let cfg = dir.path().join("c");
        let text = format!(
            "HostKey {}\nUsePAM no\nPerSourcePenalties no\n",
            key.display()
        );
        fs::write(&cfg, text).is_ok()
            && Command::new(SSHD)
                .arg("-t")
                .arg("-f")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// Sudo rights for a test user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SudoRule {
    /// `USER ALL=(ALL) NOPASSWD: ALL`.
    NoPassword,
    /// No sudoers entry: `sudo -n` fails.
    None,
}

/// A non-root Unix user for tests. The user and its home stay on the system (created once,
/// reused by later runs); the sudoers drop-in this guard wrote is removed when it drops.
#[derive(Debug)]
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// Home directory from the passwd database.
    pub home: PathBuf,
    sudoers: Option<PathBuf>,
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(p) = self.sudoers.take() {
            let _ = fs::remove_file(p);
        }
    }
}

static USER_LOCK: Mutex<()> = Mutex::new(());
static SUDOERS_SEQ: AtomicUsize = AtomicUsize::new(0);

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Create the Unix user `name` if absent (`useradd -m -s /bin/sh`), make sure sshd accepts it
/// without PAM (password field `*`: no password, not locked), and give it `sudo` rights. With
/// [`SudoRule::NoPassword`] a drop-in `/etc/sudoers.d/kubedrill-test-NAME-PID-SEQ` (mode 0440,
/// checked with `visudo -cf`) is written and removed when the returned guard drops; drop-ins
/// left by test processes that no longer run are removed first.
pub fn ensure_test_user(name: &str, sudo: SudoRule) -> TestUser {
    assert!(
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'),
        "bad user name {name:?}"
    );
    let _guard = USER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    remove_stale_sudoers();
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", name]));
    }
    // useradd leaves the password locked ("!"), and sshd without PAM refuses locked accounts.
    run(Command::new("usermod").args(["-p", "*", name]));
    let passwd = run(Command::new("getent").args(["passwd", name]));
    let home = String::from_utf8_lossy(&passwd.stdout)
        .trim()
        .split(':')
        .nth(5)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no home for {name}"));
    let sudoers = match sudo {
        SudoRule::None => None,
        SudoRule::NoPassword => {
            let seq = SUDOERS_SEQ.fetch_add(1, Ordering::Relaxed);
            // sudo ignores drop-in names containing '.', so the staging file is inert.
            let path = PathBuf::from(format!(
                "/etc/sudoers.d/kubedrill-test-{name}-{}-{seq}",
                std::process::id()
            ));
            let staging = path.with_extension("tmp");
            fs::write(&staging, format!("{name} ALL=(ALL) NOPASSWD: ALL\n"))
                .expect("write sudoers drop-in");
            fs::set_permissions(&staging, fs::Permissions::from_mode(0o440))
                .expect("chmod sudoers drop-in");
            let check = Command::new("visudo").arg("-cf").arg(&staging).output();
            if !check.as_ref().is_ok_and(|o| o.status.success()) {
                let _ = fs::remove_file(&staging);
                panic!("visudo rejects the drop-in for {name}: {check:?}");
            }
            fs::rename(&staging, &path).expect("install sudoers drop-in");
            Some(path)
        }
    };
    TestUser {
        name: name.to_owned(),
        home,
        sudoers,
    }
}

/// Remove `kubedrill-test-*-PID-*` drop-ins whose test process is gone.
fn remove_stale_sudoers() {
    let Ok(rd) = fs::read_dir("/etc/sudoers.d") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("kubedrill-test-") else {
            continue;
        };
        let rest = rest.trim_end_matches(".tmp");
        let mut parts = rest.rsplit('-');
        let _seq = parts.next();
        if let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok())
            && !pid_alive(pid)
        {
            let _ = fs::remove_file(e.path());
        }
    }
}
