//! The lab end to end with real guests. Run by scripts/lab-test.sh inside a network namespace it
//! creates, with libvirtd started there (ignored by a plain `cargo test`).

use kubedrill::ssh::{
    Command as Remote, Destination, HostKeyMode, HostKeyPolicy, Options, Session,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run scripts/lab-test.sh"))
}

/// The kubedrill binary: a private copy made by scripts/lab-test.sh (so a concurrent build cannot
/// swap it mid-run), else the one cargo built for this test.
fn kd_bin() -> String {
    std::env::var("KUBEDRILL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kubedrill").to_string())
}

fn kd(args: &[&str]) -> Output {
    let t = Instant::now();
    let out = Command::new(kd_bin())
        .args(args)
        .output()
        .expect("run kubedrill");
    eprintln!(
        "$ kubedrill {} ({:.1} s, exit {:?})\n{}{}",
        args.join(" "),
        t.elapsed().as_secs_f64(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn virsh_free_check(uri: &str) -> virt::connect::Connect {
    virt::error::clear_error_callback();
    virt::connect::Connect::open(Some(uri)).expect("libvirt in the test namespace")
}

fn lab_dir() -> PathBuf {
    PathBuf::from(env("KUBEDRILL_STATE_DIR")).join("labs/labtest")
}

async fn session(vm: &str, addr: &str) -> Arc<Session> {
    let dir = lab_dir();
    let policy = HostKeyPolicy::load(&dir.join("known_hosts"), HostKeyMode::Strict).expect("kh");
    let mut o = Options::new(Arc::new(policy));
    o.identities = Vec::new();
    o.agent = None;
    let d = Destination {
        name: vm.into(),
        address: addr.into(),
        port: 22,
        user: "root".into(),
        key: Some(dir.join("id_ed25519")),
        become_user: None,
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match Session::connect(d.clone(), None, Arc::new(o.clone())).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for {vm}: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => panic!("{vm}: {e}"),
        }
    }
}

/// A domain this test defines itself; undefined on drop, also when the test fails (libvirt keeps
/// definitions in /etc/libvirt across runs).
struct OwnDomain<'a> {
    conn: &'a virt::connect::Connect,
    name: &'static str,
}

impl Drop for OwnDomain<'_> {
    fn drop(&mut self) {
        if let Ok(d) = self.conn.lookup_domain_by_name(self.name) {
            let _ = d.destroy();
            let _ = d.undefine();
        }
    }
}

fn qemu_processes_of(lab: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if c.contains("qemu-system") && c.contains(&format!("kd-{lab}-")) {
                found.push(c);
            }
        }
    }
    found
}

/// (QEMU command name with the domain, VmRSS in KiB) of every QEMU process of the lab.
fn qemu_rss_kib(lab: &str) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let c = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let Some(guest) = c
            .split_whitespace()
            .find(|w| w.starts_with(&format!("guest=kd-{lab}-")))
        else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
        {
            found.push((guest.split(',').next().unwrap_or(guest).to_string(), kib));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow: real TCG guests; run by scripts/lab-test.sh"]
async fn lab_up_check_snapshot_reset_down() {
    let lab_file = env("KUBEDRILL_LAB_FILE");
    let uri = env("KUBEDRILL_LAB_URI");
    let conn = virsh_free_check(&uri);

    // 1. A foreign domain holds a name the lab wants: `up` stops there, `down` leaves it alone.
    let foreign = "<domain type='qemu'><name>kd-labtest-w1</name><memory unit='MiB'>64</memory>\
                   <os><type arch='x86_64'>hvm</type></os><features><acpi/></features></domain>";
    conn.define_domain_xml(foreign)
        .expect("define foreign domain");
    let own = OwnDomain {
        conn: &conn,
        name: "kd-labtest-w1",
    };
    let out = kd(&["lab", "up", &lab_file, "--isolated", "--ssh-timeout", "30"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kd-labtest-w1") && err.contains("not part of this lab"),
        "{err}"
    );
    let out = kd(&["lab", "down", "labtest"]);
    assert!(out.status.success());
    assert!(
        conn.lookup_domain_by_name("kd-labtest-w1").is_ok(),
        "foreign domain survived"
    );
    assert!(conn.lookup_domain_by_name("kd-labtest-cp1").is_err());
    drop(own);

    // 1b. Not enough memory: refused before anything is created.
    let big = std::fs::read_to_string(&lab_file)
        .expect("lab file")
        .replace("memory_mib: 1536", "memory_mib: 1000000");
    let big_file = Path::new(&lab_file).with_file_name("labtest-huge.yaml");
    std::fs::write(&big_file, big).expect("write huge lab");
    let out = kd(&["lab", "up", big_file.to_str().expect("utf8"), "--isolated"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enough memory") && err.contains("Nothing was created"),
        "{err}"
    );
    assert!(!lab_dir().exists(), "no state recorded for a refused lab");
    assert!(conn.lookup_network_by_name("kd-labtest").is_err());

    // 2. The real lab.
    let t = Instant::now();
    let out = kd(&["lab", "up", &lab_file, "--isolated", "--ssh-timeout", "900"]);
    assert!(out.status.success(), "lab up failed");
    eprintln!(
        "MEASURE lab up (2 VMs, SSH-ready): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let inv = lab_dir().join("inventory/hosts.yaml");
    assert!(inv.exists());
    for (cmd, rss_kib) in qemu_rss_kib("labtest") {
        eprintln!("MEASURE host RSS of {cmd}: {} MiB", rss_kib / 1024);
    }

    // 3. check on the generated inventory: real guest kernels and NICs.
    let facts_dir = lab_dir().join("facts");
    let out = kd(&[
        "check",
        "-i",
        inv.to_str().expect("utf8"),
        "--output",
        "json",
        "--save-facts",
        facts_dir.to_str().expect("utf8"),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check json");
    let xdp = |host: &str| -> serde_json::Value {
        let h = doc["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .find(|h| h["host"] == host)
            .cloned()
            .expect("host");
        assert_eq!(h["status"], "checked", "{h:#}");
        h["report"]["verdicts"]
            .as_array()
            .expect("verdicts")
            .iter()
            .find(|v| v["feature"] == "xdp-native")
            .cloned()
            .expect("xdp verdict")
    };
    // `status` is the tagged Status: {"status": "ok"} or {"status": "degraded", "reason": …}.
    let cp1 = xdp("cp1");
    assert_eq!(
        cp1["status"]["status"], "ok",
        "4 queues on 2 vCPUs: {cp1:#}"
    );
    let w1 = xdp("w1");
    assert_ne!(w1["status"]["status"], "ok", "1 queue: {w1:#}");
    let text = w1.to_string();
    assert!(
        text.contains("queue"),
        "the verdict explains the queues: {text}"
    );
    // Raw gather output of the real guests, kept as fixtures for tests/kernel.rs when asked.
    if let Ok(keep) = std::env::var("KUBEDRILL_KEEP_FACTS") {
        std::fs::create_dir_all(&keep).expect("fixture dir");
        for (vm, addr) in [("cp1", "10.231.0.11"), ("w1", "10.231.0.12")] {
            let s = session(vm, addr).await;
            let o = s
                .exec(&Remote::script_on_stdin(kubedrill::facts::GATHER_SCRIPT))
                .await
                .expect("gather");
            let f = Path::new(&keep).join(format!("lab-guest-{vm}.txt"));
            std::fs::write(&f, o.stdout_text()).expect("write fixture");
            s.close().await;
        }
    }

    // 4. Snapshot the fresh lab.
    let out = kd(&["lab", "snapshot", "labtest", "clean"]);
    assert!(out.status.success());

    // 5. apply: every node phase from the offline bundle, for real.
    let bundle = env("KUBEDRILL_BUNDLE");
    let inv_s = inv.to_str().expect("utf8");
    let apply = |extra: &[&str]| -> (Output, serde_json::Value) {
        let mut args = vec![
            "apply", "-i", inv_s, "--bundle", &bundle, "--output", "json",
        ];
        args.extend_from_slice(extra);
        let out = kd(&args);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, doc)
    };
    let outcomes = |doc: &serde_json::Value, phase: &str| -> Vec<String> {
        doc["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["phase"] == phase)
            .flat_map(|p| p["hosts"].as_array().cloned().unwrap_or_default())
            .map(|h| {
                format!(
                    "{}:{}",
                    h["host"].as_str().unwrap_or(""),
                    h["outcome"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let node_phases = [
        "node/packages",
        "node/containerd",
        "node/kernel-modules",
        "node/sysctl",
        "node/swap",
    ];
    let t = Instant::now();
    let (out, doc) = apply(&["--only", "node"]);
    assert!(out.status.success(), "apply --only node: {doc:#}");
    eprintln!(
        "MEASURE apply node phases (2 VMs, fresh): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    for p in [
        "node/packages",
        "node/containerd",
        "node/kernel-modules",
        "node/sysctl",
    ] {
        assert_eq!(
            outcomes(&doc, p),
            ["cp1:changed", "w1:changed"],
            "{p}: {doc:#}"
        );
    }
    // The guests really are prepared.
    for (vm, addr) in [("cp1", "10.231.0.11"), ("w1", "10.231.0.12")] {
        let s = session(vm, addr).await;
        let o = s
            .exec(&Remote::new(
                "systemctl is-active containerd && ctr version >/dev/null && echo ctr-ok; \
                 grep -c SystemdCgroup /etc/containerd/config.toml; \
                 [ -d /sys/module/br_netfilter ] && echo brnf; sysctl -n net.ipv4.ip_forward; \
                 swapon --show --noheadings | wc -l; dpkg-query -W -f='${Version}\\n' runc; \
                 ctr -n k8s.io images ls -q",
            ))
            .await
            .expect("inspect node");
        let text = o.stdout_text();
        assert!(
            text.starts_with("active\nctr-ok\n1\nbrnf\n1\n0\n"),
            "{vm}: {text}"
        );
        // The bundle's image tarball was imported into containerd's k8s.io namespace.
        assert!(
            text.contains("registry.k8s.io/kubedrill/test:1"),
            "{vm}: {text}"
        );
        s.close().await;
    }
    // A re-run changes nothing.
    let t = Instant::now();
    let (out, doc) = apply(&["--only", "node"]);
    assert!(out.status.success());
    eprintln!(
        "MEASURE apply node phases (2 VMs, re-run, unchanged): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for p in node_phases {
        assert_eq!(
            outcomes(&doc, p),
            ["cp1:unchanged", "w1:unchanged"],
            "{p}: {doc:#}"
        );
    }
    // kubeadm/init without kubeadm anywhere: the clear "no package source" error, not a hang.
    let t = Instant::now();
    let (out, doc) = apply(&[]);
    assert_eq!(out.status.code(), Some(2), "{doc:#}");
    assert!(t.elapsed() < Duration::from_secs(120));
    let f = &doc["failures"][0];
    assert_eq!(f["phase"], "kubeadm/init", "{doc:#}");
    assert_eq!(f["host"], "cp1");
    assert!(
        f["stderr"]
            .as_str()
            .unwrap_or("")
            .contains("no package source for kubeadm"),
        "{f:#}"
    );
    for p in node_phases {
        assert_eq!(outcomes(&doc, p), ["cp1:unchanged", "w1:unchanged"], "{p}");
    }

    // 5b. reset removes Cilium/CNI leftovers (planted here: a cilium_ link, a CNI config, a
    //     CILIUM_ iptables chain) and leaves the prepared node otherwise alone.
    let s = session("cp1", "10.231.0.11").await;
    let o = s
        .exec(&Remote::new(
            "set -e; ip link add cilium_test type dummy; mkdir -p /etc/cni/net.d; \
             echo '{}' > /etc/cni/net.d/05-cilium.conflist; iptables -N CILIUM_TEST",
        ))
        .await
        .expect("plant leftovers");
    assert!(o.success(), "{}", o.stderr_text());
    let out = kd(&["reset", "-i", inv_s, "--yes"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("cp1: removed") && said.contains("link cilium_test"),
        "{said}"
    );
    let o = s
        .exec(&Remote::new(
            "ip link show cilium_test 2>/dev/null | wc -l; ls /etc/cni/net.d | wc -l; \
             iptables-save | grep -c CILIUM_TEST; systemctl is-active containerd",
        ))
        .await
        .expect("after reset");
    assert_eq!(o.stdout_text(), "0\n0\n0\nactive\n");
    s.close().await;

    // 6. An apply killed mid-way resumes: back to the clean snapshot, start, kill it once the
    //    journal shows node/packages finished on a host, run again.
    let out = kd(&["lab", "reset", "labtest", "clean"]);
    assert!(out.status.success());
    let journal = PathBuf::from(env("KUBEDRILL_STATE_DIR")).join("clusters");
    let journal_text = || -> String {
        std::fs::read_dir(&journal)
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| std::fs::read_to_string(d.path().join("journal.jsonl")).unwrap_or_default())
            .collect()
    };
    let before = journal_text().lines().count();
    let mut child = Command::new(kd_bin())
        .args(["apply", "-i", inv_s, "--bundle", &bundle, "--only", "node"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start apply");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let j = journal_text();
        if j.lines()
            .skip(before)
            .any(|l| l.contains("\"node/packages\"") && l.contains("\"changed\""))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "apply never got through node/packages"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "apply ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().expect("kill apply");
    let _ = child.wait();
    let (out, doc) = apply(&["--only", "node"]);
    assert!(out.status.success(), "resumed apply: {doc:#}");
    assert!(doc["resumed_from"].is_u64(), "{doc:#}");
    let all: Vec<String> = node_phases.iter().flat_map(|p| outcomes(&doc, p)).collect();
    assert!(
        all.iter().any(|o| o.ends_with(":unchanged")),
        "something was already done: {all:?}"
    );
    assert!(
        all.iter().any(|o| o.ends_with(":changed")),
        "something was left to do: {all:?}"
    );
    let (out, doc) = apply(&["--only", "node"]);
    assert!(out.status.success());
    for p in node_phases {
        assert_eq!(
            outcomes(&doc, p),
            ["cp1:unchanged", "w1:unchanged"],
            "{p} after resume"
        );
    }

    // 6b. The probe agent between pod-like network namespaces on the two VMs: a "pod" netns on
    //     each (veth to the host, pinned neighbours), routes between the VMs (apply turned on
    //     forwarding), echo server in w1's pod, probers in cp1's pod. Injected on w1: the pod's
    //     link down for a measured time, then (second run) cp1's route removed for a measured time.
    probe_between_pods().await;

    // 7. Change a file, reset: the change is gone (and so is everything apply did).
    let s = session("cp1", "10.231.0.11").await;
    let o = s
        .exec(&Remote::new(
            "echo changed > /root/drill-marker && sync && cat /root/drill-marker",
        ))
        .await
        .expect("write marker");
    assert_eq!(o.stdout_text(), "changed\n");
    drop(s);
    let t = Instant::now();
    let out = kd(&["lab", "reset", "labtest", "clean"]);
    assert!(out.status.success());
    eprintln!(
        "MEASURE lab reset (2 VMs, SSH-ready, clocks set): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("clocks set on cp1, w1"), "{said}");
    let s = session("cp1", "10.231.0.11").await;
    // The revert restored the snapshot's clock; reset set it back to now.
    let o = s.exec(&Remote::new("date +%s")).await.expect("guest clock");
    let guest: i64 = o.stdout_text().trim().parse().expect("date +%s");
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (guest - host).abs() <= 5,
        "guest clock {guest}, host {host}"
    );
    let o = s
        .exec(&Remote::new(
            "test -e /root/drill-marker && echo present || echo gone; command -v containerd || echo no-containerd",
        ))
        .await
        .expect("check marker");
    assert_eq!(o.stdout_text(), "gone\nno-containerd\n");
    s.close().await;

    // 8. Down: nothing of the lab remains.
    let out = kd(&["lab", "down", "labtest"]);
    assert!(out.status.success());
    let doms = conn.list_all_domains(0).expect("list");
    let names: Vec<String> = doms.iter().filter_map(|d| d.name().ok()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("kd-labtest")),
        "{names:?}"
    );
    assert!(conn.lookup_network_by_name("kd-labtest").is_err());
    assert!(conn.lookup_storage_pool_by_name("kd-labtest").is_err());
    assert!(
        !Path::new(kubedrill::lab::storage::POOL_ROOT)
            .join("labtest")
            .exists(),
        "the pool's directory (overlays, seeds, base) removed"
    );
    assert!(!lab_dir().exists(), "state removed");

    // 9. A remote hypervisor: the same daemon reached as qemu+ssh://root@127.0.0.1:2222/system
    //    (an sshd in the namespace; libvirt's own ssh transport). Base image, kernel, seeds and
    //    overlay go up through libvirt's storage API; the VM boots and answers SSH; down removes
    //    everything.
    remote_hypervisor(&conn).await;

    assert!(qemu_processes_of("labtest").is_empty());
}

/// Pod-like network namespaces on both VMs and the probe agent across them; the measured loss
/// windows must match the injected outages.
async fn probe_between_pods() {
    use kubedrill::drill::probes::{self, ProbeSpec};
    let agent = std::fs::read(env("KUBEDRILL_PROBE_BIN")).expect("static probe agent");
    let cp1 = session("cp1", "10.231.0.11").await;
    let w1 = session("w1", "10.231.0.12").await;
    let pod = |s: Arc<Session>,
               pod_net: &'static str,
               me: &'static str,
               peer_vm: &'static str,
               peer_net: &'static str| async move {
        let script = format!(
            "set -e; ip netns add pod; ip link add vpod type veth peer name eth0 netns pod; \
             ip addr add {pod_net}.1/24 dev vpod; ip link set vpod up; \
             ip -n pod addr add {me}/24 dev eth0; ip -n pod link set eth0 up; ip -n pod link set lo up; \
             ip -n pod route add default via {pod_net}.1; \
             ip neigh replace {me} lladdr $(ip -n pod -br link show eth0 | awk '{{print $3}}') dev vpod nud permanent; \
             ip -n pod neigh replace {pod_net}.1 lladdr $(ip -br link show vpod | awk '{{print $3}}') dev eth0 nud permanent; \
             ip route add {peer_net}.0/24 via {peer_vm}; sysctl -qw net.ipv4.conf.all.rp_filter=0"
        );
        let o = s.exec(&Remote::new(script)).await.expect("pod netns");
        assert!(o.success(), "{}", o.stderr_text());
    };
    pod(
        cp1.clone(),
        "10.244.1",
        "10.244.1.2",
        "10.231.0.12",
        "10.244.2",
    )
    .await;
    pod(
        w1.clone(),
        "10.244.2",
        "10.244.2.2",
        "10.231.0.11",
        "10.244.1",
    )
    .await;
    for s in [&cp1, &w1] {
        probes::install(s.as_ref(), &agent)
            .await
            .expect("install agent");
    }
    let spec = |rate: u32| -> Vec<ProbeSpec> {
        [
            ("icmp", "10.244.2.2"),
            ("tcp", "10.244.2.2:7001"),
            ("udp", "10.244.2.2:7002"),
        ]
        .into_iter()
        .map(|(k, t)| ProbeSpec {
            id: format!("pod-{k}"),
            kind: k.into(),
            target: t.into(),
            rate_per_s: rate,
            timeout_ms: None,
            netns: Some("/run/netns/pod".into()),
            tcp_mode: None,
        })
        .collect()
    };
    // (where the outage is made, the command that makes it, the one that ends it)
    let cases: [(&Arc<Session>, &str, &str, &str); 2] = [
        // An admin-down link loses even permanent neighbour entries, and a re-learnt one waits
        // for ARP's 1 s retransmit timer (packets queue meanwhile): re-pin both at link-up so the
        // outage ends when the link does (the README's probe section explains the effect).
        (
            &w1,
            "link down",
            "ip link set vpod down",
            "ip link set vpod up; \
             ip neigh replace 10.244.2.2 lladdr $(ip -n pod -br link show eth0 | awk '{print $3}') dev vpod nud permanent; \
             ip -n pod neigh replace 10.244.2.1 lladdr $(ip -br link show vpod | awk '{print $3}') dev eth0 nud permanent",
        ),
        (
            &cp1,
            "route removed",
            "ip route del 10.244.2.0/24",
            "ip route add 10.244.2.0/24 via 10.231.0.12",
        ),
    ];
    let rate = 50;
    let interval_ms = 1000 / rate as i64;
    for (at, what, down, up) in cases {
        let server = {
            let w1 = w1.clone();
            tokio::spawn(async move {
                probes::serve(
                    w1.as_ref(),
                    Some("/run/netns/pod"),
                    "10.244.2.2:7001",
                    "10.244.2.2:7002",
                    Duration::from_secs(16),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let prober = {
            let cp1 = cp1.clone();
            let specs = spec(rate);
            tokio::spawn(
                async move { probes::run(cp1.as_ref(), &specs, Duration::from_secs(10)).await },
            )
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        // The outage, timed on the node that makes it: ~1500 ms between the two commands. It
        // began somewhere in the down command and ended somewhere in the up command: the
        // shortest possible outage is (up started − down returned), the longest (up returned −
        // down started).
        let o = at
            .exec(&Remote::new(format!(
                "a0=$(date +%s%3N); {down}; a1=$(date +%s%3N); sleep 1.5; b0=$(date +%s%3N); {up}; b1=$(date +%s%3N); \
                 echo $((b0 - a1)) $((b1 - a0))"
            )))
            .await
            .expect("inject");
        assert!(o.success(), "{}", o.stderr_text());
        let text = o.stdout_text();
        let (lo, hi) = text
            .trim()
            .split_once(' ')
            .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)))
            .expect("two durations");
        let run = prober.await.expect("join").expect("probe run");
        server.await.expect("join").expect("serve");
        eprintln!(
            "MEASURE probe {what}: injected {lo}-{hi} ms, windows {:?}",
            run.losses
                .iter()
                .map(|l| (l.kind.clone(), l.duration_ms))
                .collect::<Vec<_>>()
        );
        for kind in ["icmp", "tcp", "udp"] {
            let w: Vec<_> = run.losses.iter().filter(|l| l.kind == kind).collect();
            assert_eq!(w.len(), 1, "{what}: one {kind} window: {:?}", run.losses);
            let d = w[0].duration_ms as i64;
            // A window runs from the first lost probe's send to the first answered one's: within
            // one probe interval of the outage (plus 20 ms for TCG's timer jitter). A TCP probe
            // (connect, send, read the echo) needs two round trips through two emulated guests,
            // so one sent just before the outage can still fail in it: 40 ms more for tcp.
            let slack = interval_ms + if kind == "tcp" { 60 } else { 20 };
            assert!(
                d >= lo - slack && d <= hi + slack,
                "{what}: {kind} window {d} ms vs injected {lo}-{hi} ms"
            );
        }
        assert!(
            run.summaries.iter().all(|s| s.sent > 400),
            "{:?}",
            run.summaries
        );
    }
    cp1.close().await;
    w1.close().await;
}

async fn remote_hypervisor(conn: &virt::connect::Connect) {
    let remote_home = env("KUBEDRILL_REMOTE_HOME");
    let lab_file = env("KUBEDRILL_REMOTE_LAB_FILE");
    let run = |args: &[&str]| -> Output {
        let t = Instant::now();
        let out = Command::new(kd_bin())
            .args(args)
            .env("HOME", &remote_home)
            .output()
            .expect("run kubedrill");
        eprintln!(
            "$ kubedrill {} ({:.1} s, exit {:?})\n{}{}",
            args.join(" "),
            t.elapsed().as_secs_f64(),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let t = Instant::now();
    let out = run(&["lab", "up", &lab_file, "--isolated", "--ssh-timeout", "600"]);
    assert!(out.status.success(), "remote lab up");
    eprintln!(
        "MEASURE lab up over qemu+ssh (1 VM, SSH-ready): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let pool = conn
        .lookup_storage_pool_by_name("kd-labremote")
        .expect("the lab's pool exists on the hypervisor");
    let vols = pool.list_volumes().expect("volumes");
    for v in [
        "base.qcow2",
        "vmlinuz",
        "initrd.img",
        "r1.qcow2",
        "r1-seed.iso",
    ] {
        assert!(vols.iter().any(|x| x == v), "{v} in {vols:?}");
    }
    drop(pool);
    let dir = PathBuf::from(env("KUBEDRILL_STATE_DIR")).join("labs/labremote");
    let policy = HostKeyPolicy::load(&dir.join("known_hosts"), HostKeyMode::Strict).expect("kh");
    let mut o = Options::new(Arc::new(policy));
    o.identities = Vec::new();
    o.agent = None;
    let d = Destination {
        name: "r1".into(),
        address: "10.232.0.11".into(),
        port: 22,
        user: "root".into(),
        key: Some(dir.join("id_ed25519")),
        become_user: None,
    };
    let s = Session::connect(d, None, Arc::new(o))
        .await
        .expect("ssh r1");
    let o = s.exec(&Remote::new("hostname")).await.expect("hostname");
    assert_eq!(o.stdout_text(), "r1\n");
    s.close().await;
    let out = run(&["lab", "down", "labremote"]);
    assert!(out.status.success());
    assert!(conn.lookup_storage_pool_by_name("kd-labremote").is_err());
    assert!(conn.lookup_domain_by_name("kd-labremote-r1").is_err());
    assert!(qemu_processes_of("labremote").is_empty());
}
