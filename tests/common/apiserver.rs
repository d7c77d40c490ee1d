//! A real Kubernetes API server for integration tests: etcd and kube-apiserver (built from source
//! by `scripts/upstream-build.sh`) on loopback ports, with a CA, serving certificate, client
//! certificates and service-account key made here with the `openssl` CLI.
//!
//! There is no kubelet, controller-manager or scheduler: tests create Nodes, DaemonSets,
//! Deployments and Pods and patch their `status` subresources themselves. What the real server
//! decides is real: validation, defaulting, resourceVersions and generations, watches, delete
//! preconditions, RBAC, server-side apply.
//!
//! Binaries: `KUBEDRILL_KUBE_APISERVER`, `KUBEDRILL_ETCD`, `KUBEDRILL_HELM3`, `KUBEDRILL_HELM4`,
//! or the defaults under `$KUBEDRILL_UPSTREAM_DIR` (`/var/cache/kubedrill/upstream`):
//! `files/dl.k8s.io/release/v1.34.4/bin/linux/amd64/kube-apiserver`, `bin/etcd-v3.6.5/etcd`
//! (else the newest `bin/etcd-v*/etcd`), `bin/helm-v3.17.3`, `bin/helm-v4.1.4`. Tests call
//! [`skip_unless_available`] first: it returns `None` (and prints a loud message) when a binary
//! is missing, unless `KUBEDRILL_REQUIRE_APISERVER=1` is set, in which case it panics saying how
//! to get the binaries (`scripts/test.sh` sets it as root, after building them).
//!
//! Processes: [`ApiServer::start`] runs etcd (client and peer URLs on `127.0.0.1`, free ports,
//! data in the server's temporary directory) and kube-apiserver (`--bind-address=127.0.0.1`),
//! waits for etcd's `/health` and the API server's `/readyz`, and writes a 0600 admin kubeconfig
//! (client certificate with `O=system:masters`). Both children get `PR_SET_PDEATHSIG(SIGKILL)`:
//! the kernel kills them when the thread that started them ends, even if the test process is
//! killed. Dropping an [`ApiServer`] (also while unwinding from a panic) kills both by PID, reaps
//! them and removes the directory. [`shared`] is one server per test binary, started on a thread
//! that lives as long as the test process; as statics are never dropped, an `atexit` handler
//! kills its processes by PID and removes its directory when the test harness exits, whether
//! tests passed or failed. Tests that share it use their own namespaces; tests of names
//! kubedrill fixes in kube-system serialise themselves.

#![allow(dead_code)]

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The Kubernetes release `scripts/upstream-build.sh` builds.
pub const K8S_VERSION: &str = "v1.34.4";
/// The etcd kubeadm v1.34.4 wants (its `DefaultEtcdVersion`, image tag 3.6.5-0).
pub const ETCD_VERSION: &str = "3.6.5";
/// Helm 3 as built (v3.17.3).
pub const HELM3_VERSION: &str = "v3.17.3";
/// Helm 4 as built (v4.1.4).
pub const HELM4_VERSION: &str = "v4.1.4";
/// A DNS name the serving certificate carries besides 127.0.0.1 and localhost; it resolves
/// nowhere, so a client that reaches the server under it must have used a URL override.
pub const SERVING_NAME: &str = "kubedrill-apiserver.test";
/// The service network the API server allocates ClusterIPs from.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// How to get the binaries.
pub const HOW_TO_BUILD: &str = "build them with ./scripts/upstream-build.sh --only kube-apiserver,kubectl,etcd,helm (as root; output in $KUBEDRILL_UPSTREAM_DIR, default /var/cache/kubedrill/upstream), or point KUBEDRILL_KUBE_APISERVER / KUBEDRILL_ETCD / KUBEDRILL_HELM3 / KUBEDRILL_HELM4 at them";

/// How long etcd plus kube-apiserver may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where `scripts/upstream-build.sh` puts its output.
pub fn upstream_dir() -> PathBuf {
    std::env::var_os("KUBEDRILL_UPSTREAM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kubedrill/upstream"))
}

fn executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `env` if set, else `default`; an error naming both when it is not an executable file.
fn locate(what: &str, env: &str, default: Option<PathBuf>) -> Result<PathBuf, String> {
    let (path, from) = match std::env::var_os(env) {
        Some(p) => (PathBuf::from(p), format!("from ${env}")),
        None => match default {
            Some(p) => (p, format!("default; ${env} is not set")),
            None => {
                return Err(format!(
                    "{what}: none under {} (${env} is not set)",
                    upstream_dir().display()
                ));
            }
        },
    };
    // A directory (`bin/helm-v3.17.3/`) holding the binary counts too.
    let path = if path.is_dir() { path.join(what) } else { path };
    if executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "{what}: no executable file at {} ({from})",
            path.display()
        ))
    }
}

/// kube-apiserver.
pub fn kube_apiserver_bin() -> Result<PathBuf, String> {
    let d = upstream_dir()
        .join("files/dl.k8s.io/release")
        .join(K8S_VERSION)
        .join("bin/linux/amd64/kube-apiserver");
    locate("kube-apiserver", "KUBEDRILL_KUBE_APISERVER", Some(d))
}

/// etcd: `bin/etcd-v3.6.5/etcd` (the version kubeadm v1.34.4 wants), else the newest
/// `bin/etcd-v*/etcd`.
pub fn etcd_bin() -> Result<PathBuf, String> {
    let bin = upstream_dir().join("bin");
    let wanted = bin.join(format!("etcd-v{ETCD_VERSION}/etcd"));
    let newest = fs::read_dir(&bin)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix("etcd-v")?;
            let key: Vec<u32> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            Some((key, e.path().join("etcd")))
        })
        .max()
        .map(|(_, p)| p);
    let default = if executable(&wanted) {
        Some(wanted)
    } else {
        newest
    };
    locate("etcd", "KUBEDRILL_ETCD", default)
}

/// Helm 3 (v3.17.3).
pub fn helm3_bin() -> Result<PathBuf, String> {
    let d = upstream_dir().join(format!("bin/helm-{HELM3_VERSION}"));
    locate("helm", "KUBEDRILL_HELM3", Some(d))
}

/// Helm 4 (v4.1.4).
pub fn helm4_bin() -> Result<PathBuf, String> {
    let d = upstream_dir().join(format!("bin/helm-{HELM4_VERSION}"));
    locate("helm", "KUBEDRILL_HELM4", Some(d))
}

/// What a test needs besides the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Also {
    Helm3,
    Helm4,
}

/// The shared server, or `None` after printing why the test is skipped; panics instead when
/// `KUBEDRILL_REQUIRE_APISERVER=1`, or when the binaries exist but the server does not start.
pub fn skip_unless_available(test: &str, also: &[Also]) -> Option<&'static ApiServer> {
    let mut missing: Vec<String> = Vec::new();
    for r in [kube_apiserver_bin(), etcd_bin()] {
        if let Err(e) = r {
            missing.push(e);
        }
    }
    for a in also {
        let r = match a {
            Also::Helm3 => helm3_bin(),
            Also::Helm4 => helm4_bin(),
        };
        if let Err(e) = r {
            missing.push(format!("{a:?}: {e}"));
        }
    }
    if !missing.is_empty() {
        let why = format!("{}\n  To get them: {HOW_TO_BUILD}.", missing.join("\n  "));
        if std::env::var("KUBEDRILL_REQUIRE_APISERVER").as_deref() == Ok("1") {
            panic!("{test}: KUBEDRILL_REQUIRE_APISERVER=1 but\n  {why}");
        }
        // Straight to fd 2, past the test harness's output capture: a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPING {test}:\n  {why}\n  Set KUBEDRILL_REQUIRE_APISERVER=1 to make this a failure. ***\n"
        );
        return None;
    }
    match shared() {
        Ok(s) => Some(s),
        Err(e) => panic!("{test}: the test API server did not start: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl (package openssl) could not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A P-256 key `NAME.key` in `dir`.
fn ec_key(dir: &Path, name: &str) -> Result<(), String> {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    )
}

/// `NAME.crt` for `NAME.key`, signed by `ca.crt`/`ca.key`, with `subject` and the extensions in
/// `ext` (an OpenSSL extension file body).
fn issue(dir: &Path, name: &str, subject: &str, ext: &str) -> Result<(), String> {
    ec_key(dir, name)?;
    fs::write(dir.join(format!("{name}.ext")), ext).map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    )
}

/// A CA (`ca.crt`, `ca.key`) in `dir`, named `cn`.
fn make_ca(dir: &Path, cn: &str) -> Result<(), String> {
    ec_key(dir, "ca")?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "2",
            "-sha256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out",
            "ca.crt",
        ],
    )
}

const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";

fn pem_base64(path: &Path) -> String {
    use base64::Engine;
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A kubeconfig for a client certificate pair.
pub struct KubeconfigSpec<'a> {
    /// `server:`.
    pub server: &'a str,
    /// The CA certificate file.
    pub ca: &'a Path,
    /// The client certificate and key files.
    pub cert: &'a Path,
    pub key: &'a Path,
    /// `tls-server-name:`, if any.
    pub tls_server_name: Option<&'a str>,
    /// The user's name in the file.
    pub user: &'a str,
}

/// kubeadm's admin.conf shape, written with mode 0600.
pub fn write_kubeconfig(path: &Path, k: &KubeconfigSpec<'_>) {
    let tsn = k
        .tls_server_name
        .map(|n| format!("    tls-server-name: {n}\n"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
{tsn}  name: kubedrill-test
contexts:
- context:
    cluster: kubedrill-test
    user: {user}
  name: {user}@kubedrill-test
current-context: {user}@kubedrill-test
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = pem_base64(k.ca),
        server = k.server,
        user = k.user,
        cert = pem_base64(k.cert),
        key = pem_base64(k.key),
    );
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("write kubeconfig");
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound and released; the caller retries if it is taken again).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A child process, killed by PID and reaped on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Proc, String> {
        let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // The kernel kills the child when the thread that started it ends (the test's thread,
        // or the shared server's keeper thread, which lives as long as the test process).
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("{name} ({}) could not start: {e}", bin.display()))?;
        Ok(Proc { name, child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(why)` once the process has exited.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(format!("{} exited ({st})", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e}", self.name)),
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL by PID (only this child, which we started) and reap it.
    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Startup timings.
#[derive(Debug, Clone, Copy)]
pub struct StartTimes {
    /// Certificates and keys made.
    pub certs: Duration,
    /// From spawning etcd to its `/health` answering `true`.
    pub etcd: Duration,
    /// From spawning kube-apiserver to `/readyz` answering `ok`.
    pub apiserver: Duration,
}

/// etcd plus kube-apiserver.
pub struct ApiServer {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    /// The 0600 admin kubeconfig (`O=system:masters`).
    pub kubeconfig: PathBuf,
    /// PKI: `ca.crt`, `ca.key`, `apiserver.crt`, `admin.crt`…
    pub pki: PathBuf,
    pub times: StartTimes,
    /// etcd's and kube-apiserver's PIDs.
    pub pids: (u32, u32),
    // Field order: the processes die before the directory goes.
    apiserver: Proc,
    etcd: Proc,
    dir: TempDir,
}

impl ApiServer {
    /// Start etcd and kube-apiserver; see the module documentation. Both get SIGKILL from the
    /// kernel if the calling thread ends first.
    pub fn start() -> Result<ApiServer, String> {
        let apiserver_bin = kube_apiserver_bin()?;
        let etcd_bin = etcd_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("kubedrill-apiserver-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let t0 = Instant::now();
        let pki = dir.path().join("pki");
        fs::create_dir_all(&pki).map_err(|e| e.to_string())?;
        make_ca(&pki, "kubedrill-test-ca")?;
        issue(
            &pki,
            "apiserver",
            "/CN=kube-apiserver",
            &format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{SERVING_NAME},DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.96.0.1\n"
            ),
        )?;
        issue(
            &pki,
            "admin",
            "/O=system:masters/CN=kubernetes-admin",
            CLIENT_EXT,
        )?;
        ec_key(&pki, "sa")?;
        openssl(
            &pki,
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        )?;
        let certs = t0.elapsed();

        let mut last_err = String::new();
        // A port taken between picking and binding: retry with new ones.
        for _attempt in 0..3 {
            match Self::spawn_both(&apiserver_bin, &etcd_bin, dir.path(), &pki) {
                Ok((etcd, apiserver, port, etcd_time, api_time)) => {
                    let kubeconfig = dir.path().join("admin.conf");
                    let url = format!("https://127.0.0.1:{port}");
                    write_kubeconfig(
                        &kubeconfig,
                        &KubeconfigSpec {
                            server: &url,
                            ca: &pki.join("ca.crt"),
                            cert: &pki.join("admin.crt"),
                            key: &pki.join("admin.key"),
                            tls_server_name: None,
                            user: "kubernetes-admin",
                        },
                    );
                    let pids = (etcd.pid(), apiserver.pid());
                    return Ok(ApiServer {
                        url,
                        port,
                        kubeconfig,
                        pki,
                        times: StartTimes {
                            certs,
                            etcd: etcd_time,
                            apiserver: api_time,
                        },
                        pids,
                        apiserver,
                        etcd,
                        dir,
                    });
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    #[allow(clippy::type_complexity)]
    fn spawn_both(
        apiserver_bin: &Path,
        etcd_bin: &Path,
        dir: &Path,
        pki: &Path,
    ) -> Result<(Proc, Proc, u16, Duration, Duration), String> {
        let (client, peer, secure) = (free_port(), free_port(), free_port());
        let data = dir.join(format!("etcd-{client}"));
        let s = |x: &str| x.to_owned();
        let etcd_args = vec![
            s("--name=kubedrill-test"),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=kubedrill-test=http://127.0.0.1:{peer}"),
            s("--initial-cluster-state=new"),
            // A test server's data need not survive a power loss.
            s("--unsafe-no-fsync"),
            s("--log-level=warn"),
        ];
        let t = Instant::now();
        let mut etcd = Proc::spawn(
            "etcd",
            etcd_bin,
            &etcd_args,
            dir.join(format!("etcd-{client}.log")),
        )?;
        let deadline = t + START_TIMEOUT;
        loop {
            if etcd_healthy(client) {
                break;
            }
            if let Some(why) = etcd.exited() {
                return Err(format!("{why}; its log:\n{}", etcd.log_tail(20)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not healthy within {}s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    etcd.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let etcd_time = t.elapsed();

        let p = |f: &str| pki.join(f).display().to_string();
        let api_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{client}"),
            s("--bind-address=127.0.0.1"),
            s("--advertise-address=127.0.0.1"),
            format!("--secure-port={secure}"),
            // Endpoints may not be loopback addresses; nothing here routes to the service anyway.
            s("--endpoint-reconciler-type=none"),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            s("--authorization-mode=RBAC,Node"),
            s("--enable-admission-plugins=NodeRestriction"),
            s("--allow-privileged=true"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            s("--v=0"),
        ];
        let t = Instant::now();
        let mut api = Proc::spawn(
            "kube-apiserver",
            apiserver_bin,
            &api_args,
            dir.join(format!("apiserver-{secure}.log")),
        )?;
        let deadline = t + START_TIMEOUT;
        let ready = readyz_probe(pki, secure);
        loop {
            if let Ok(true) = ready() {
                break;
            }
            if let Some(why) = api.exited() {
                return Err(format!("{why}; its log:\n{}", api.log_tail(30)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver not ready within {}s (last: {:?}); its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    ready(),
                    api.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((etcd, api, secure, etcd_time, t.elapsed()))
    }

    /// A kube client from the admin kubeconfig, through kubedrill's own kubeconfig loader. Make
    /// one per test: a client belongs to the runtime it was made in.
    pub async fn client(&self) -> kube::Client {
        kubedrill::k8s::client_from_kubeconfig(
            &self.kubeconfig,
            &kubedrill::k8s::ClientOptions::default(),
        )
        .await
        .expect("client from the admin kubeconfig")
    }

    /// A client certificate `NAME.crt`/`NAME.key` signed by the cluster CA for `subject`
    /// (`/O=group/CN=user`), and a kubeconfig `NAME.conf` using it.
    pub fn user_kubeconfig(&self, name: &str, subject: &str) -> PathBuf {
        static LOCK: Mutex<()> = Mutex::new(());
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        issue(&self.pki, name, subject, CLIENT_EXT).expect("client certificate");
        let path = self.pki.join(format!("{name}.conf"));
        write_kubeconfig(
            &path,
            &KubeconfigSpec {
                server: &self.url,
                ca: &self.pki.join("ca.crt"),
                cert: &self.pki.join(format!("{name}.crt")),
                key: &self.pki.join(format!("{name}.key")),
                tls_server_name: None,
                user: name,
            },
        );
        path
    }

    /// The server's directory (logs, PKI, kubeconfigs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of kube-apiserver's log, for failure messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        self.apiserver.log_tail(lines)
    }
}

/// GET /health on etcd's client port: `{"health":"true",...}`.
fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains("\"health\":\"true\"")
}

/// A closure that asks `/readyz` with the admin certificate: `Ok(true)` on `ok`. Each call runs
/// on a thread of its own with its own runtime, so the server can be started from sync code and
/// from inside a test's runtime alike.
fn readyz_probe(pki: &Path, port: u16) -> impl Fn() -> Result<bool, String> {
    let kubeconfig = pki.join(format!("readyz-{port}.conf"));
    write_kubeconfig(
        &kubeconfig,
        &KubeconfigSpec {
            server: &format!("https://127.0.0.1:{port}"),
            ca: &pki.join("ca.crt"),
            cert: &pki.join("admin.crt"),
            key: &pki.join("admin.key"),
            tls_server_name: None,
            user: "kubernetes-admin",
        },
    );
    move || {
        let kubeconfig = kubeconfig.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = kubedrill::k8s::client_from_kubeconfig(
                    &kubeconfig,
                    &kubedrill::k8s::ClientOptions {
                        connect_timeout: Some(Duration::from_secs(2)),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                let r = tokio::time::timeout(Duration::from_secs(5), client.request_text(req))
                    .await
                    .map_err(|_| "no answer within 5s".to_owned())?;
                match r {
                    Ok(t) => Ok(t.trim() == "ok"),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the /readyz probe panicked".to_owned()))
    }
}

// ---------------------------------------------------------------------------------------------
// One server per test binary
// ---------------------------------------------------------------------------------------------

static SHARED: OnceLock<Result<&'static ApiServer, String>> = OnceLock::new();
/// The shared server's processes and directory, for the exit handler.
static SHARED_CLEANUP: Mutex<Option<(u32, u32, PathBuf)>> = Mutex::new(None);

extern "C" fn kill_shared_at_exit() {
    let Ok(mut g) = SHARED_CLEANUP.try_lock() else {
        return;
    };
    if let Some((etcd, api, dir)) = g.take() {
        // Our own children, by PID: kill, reap (they are ours, so waitpid is ours to call).
        for pid in [api, etcd] {
            // SAFETY: plain syscalls on PIDs of children this process started and has not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
            }
        }
        let _ = fs::remove_dir_all(dir);
    }
}

/// The test binary's shared server, started on first use (on a thread that lives as long as
/// the process, so that `PR_SET_PDEATHSIG` only fires when the test binary dies).
pub fn shared() -> Result<&'static ApiServer, String> {
    SHARED
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("kubedrill-apiserver-keeper".into())
                .spawn(move || {
                    let r = ApiServer::start().map(|s| &*Box::leak(Box::new(s)));
                    if let Ok(s) = &r {
                        *SHARED_CLEANUP.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((s.pids.0, s.pids.1, s.dir().to_owned()));
                        // SAFETY: registering a plain extern "C" function.
                        unsafe {
                            libc::atexit(kill_shared_at_exit);
                        }
                        eprintln!(
                            "test API server {} ready: certificates {} ms, etcd {} ms, kube-apiserver {} ms (pids {} and {}, dir {})",
                            s.url,
                            s.times.certs.as_millis(),
                            s.times.etcd.as_millis(),
                            s.times.apiserver.as_millis(),
                            s.pids.0,
                            s.pids.1,
                            s.dir().display()
                        );
                    }
                    let _ = tx.send(r);
                    // Keep this thread (the children's parent for PR_SET_PDEATHSIG) alive.
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawn keeper thread");
            rx.recv()
                .unwrap_or_else(|_| Err("the keeper thread died".into()))
        })
        .clone()
}

/// A fresh namespace name: `kd-PREFIX-N`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("kd-{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}
